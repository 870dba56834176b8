// page-simulations.js: a simulation summary.json opened in the browser (/simulations): summary, config, charts.
'use strict';
(() => {
  const { DASH, alignHeld, axis, card, clearError, el, flatten, fmtFixed, fmtInt, fmtNum, fmtUsd, line,
    liveChart, setReady, showError, stepped, table } = window.Dash;

  const hours = (s) => (s == null ? null : s / 3600);

  function jctCdf(policies) {
    const names = Object.keys(policies);
    const curves = names.map((n) => {
      const jobs = policies[n].jobs || [];
      const jcts = jobs.map((j) => j.jct_s).filter((v) => v != null).map(hours).sort((a, b) => a - b);
      return { jcts, total: jobs.length || 1 };
    });
    const xs = [...new Set([0, ...curves.flatMap((c) => c.jcts)])].sort((a, b) => a - b);
    const ys = curves.map(({ jcts, total }) => {
      let i = 0;
      return xs.map((x) => { while (i < jcts.length && jcts[i] <= x) i++; return i / total; });
    });
    return { names, data: [xs, ...ys] };
  }

  // Cumulative cost per timeline row; per-round costs (a series that goes down) are summed.
  function cumulativeCost(timeline) {
    const raw = timeline.map((r) => +(r.cost_usd ?? r.cost ?? 0));
    const monotone = raw.every((v, i) => i === 0 || v >= raw[i - 1]);
    let sum = 0;
    return monotone ? raw : raw.map((v) => (sum += v));
  }

  function renderSimulation(out, summary, charts) {
    const policies = summary.policies;
    const names = Object.keys(policies);
    const configRows = flatten(summary.config || {});
    const tbody = el('tbody', {}, names.map((n) => {
      const p = policies[n];
      return el('tr', { dataset: { policy: n } }, el('td', {}, el('strong', {}, n)),
        ...['mean_jct_s', 'median_jct_s', 'p99_jct_s', 'makespan_s'].map((k) => el('td', { class: 'num' }, fmtFixed(hours(p[k])))),
        el('td', { class: 'num' }, fmtUsd(p.cost_usd)), el('td', { class: 'num' }, fmtInt(p.unfinished)));
    }));
    const withTimeline = names.filter((n) => Array.isArray(policies[n].timeline) && policies[n].timeline.length);
    const boxes = {
      jct: el('div', { id: 'jct-chart', class: 'chart' }),
      allocation: el('div', { id: 'allocation-chart', class: 'chart' }),
      cost: el('div', { id: 'cost-chart', class: 'chart' }),
    };
    out.replaceChildren(
      el('div', { class: 'grid two' },
        card('Summary', el('div', { class: 'table-wrap' }, table('sim-summary',
          ['Policy', '#Mean JCT (h)', '#Median JCT (h)', '#p99 JCT (h)', '#Makespan (h)', '#Cost', '#Unfinished'], tbody))),
        card('Configuration', el('dl', { id: 'sim-config', class: 'kv-list' },
          configRows.map(([k, v]) => [el('dt', {}, k), el('dd', {}, v == null ? DASH : fmtNum(v))])))),
      el('div', { class: 'grid charts' }, card('Job completion time CDF', boxes.jct),
        withTimeline.length ? [card('GPUs in use', boxes.allocation), card('Cumulative cost (USD)', boxes.cost)] : null));

    const cdf = jctCdf(policies);
    const policyLines = (list, extra) => [{ label: 'hours' }, ...list.map((n, i) => line(n, i, extra))];
    const hoursAxis = axis({ label: 'hours' });
    const jct = liveChart(boxes.jct, 280);
    jct.set({ series: policyLines(cdf.names, { paths: stepped(), points: { show: false } }), axes: [hoursAxis, axis({ label: 'fraction finished', size: 50 })],
      scales: { x: { time: false }, y: { range: [0, 1] } } }, cdf.data);
    charts.push(jct);
    if (!withTimeline.length) return;
    const timeX = (n) => policies[n].timeline.map((r) => hours(r.t));
    const allocation = liveChart(boxes.allocation, 280);
    allocation.set({ series: policyLines(withTimeline, { paths: stepped(), points: { show: false } }), axes: [hoursAxis, axis({ label: 'GPUs', size: 50 })],
      scales: { x: { time: false } } },
    alignHeld(withTimeline.map((n) => [timeX(n), policies[n].timeline.map((r) => r.gpus_used)])));
    const cost = liveChart(boxes.cost, 280);
    cost.set({ series: policyLines(withTimeline), axes: [hoursAxis, axis({ label: 'USD', size: 60 })], scales: { x: { time: false } } },
      alignHeld(withTimeline.map((n) => [timeX(n), cumulativeCost(policies[n].timeline)])));
    charts.push(allocation, cost);
  }

  function pageSimulations(root) {
    const input = el('input', { id: 'summary-file', type: 'file', accept: '.json,application/json' });
    const fileName = el('span', { class: 'muted' }, 'No file loaded.');
    const drop = el('label', { class: 'dropzone', for: 'summary-file' },
      el('strong', {}, 'Open a summary.json'), ' written by ', el('code', {}, 'elastrain simulate'),
      el('span', { class: 'muted' }, ' — choose a file or drop it anywhere on this page. It stays in your browser.'));
    const out = el('div', { id: 'sim-results' });
    root.append(el('div', { class: 'page-head' }, el('h1', {}, 'Simulations')),
      card(null, drop, el('div', { class: 'file-row' }, input, fileName)), out);
    let charts = [];

    async function load(file) {
      if (!file) return;
      try {
        const summary = JSON.parse(await file.text());
        if (!summary || typeof summary.policies !== 'object' || !Object.keys(summary.policies).length) {
          throw new Error('no "policies" in it');
        }
        charts.forEach((c) => c.destroy());
        charts = [];
        renderSimulation(out, summary, charts);
        fileName.textContent = file.name;
        clearError();
      } catch (e) {
        showError(`${file.name} is not a simulation summary: ${e.message}`);
      }
    }

    input.addEventListener('change', () => load(input.files[0]));
    document.addEventListener('dragover', (e) => { e.preventDefault(); document.body.classList.add('dragging'); });
    document.addEventListener('dragleave', (e) => { if (!e.relatedTarget) document.body.classList.remove('dragging'); });
    document.addEventListener('drop', (e) => {
      e.preventDefault();
      document.body.classList.remove('dragging');
      load(e.dataTransfer.files[0]);
    });
    setReady('simulations');
  }

  Object.assign(window.Dash.pages, { simulations: pageSimulations });
})();
