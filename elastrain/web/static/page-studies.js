// page-studies.js: the studies list (/studies) and one study (/studies/NAME): history, parallel coordinates, trials.
'use strict';
(() => {
  const { COLORS, api, axis, badge, card, dots, el, emptyRow, fmtDuration, fmtInt, fmtNum, fmtPairs, jobLink,
    link, liveChart, poller, setReady, stepLine, table, timeCell, toEpoch } = window.Dash;

  const studyHref = (name) => `/studies/${encodeURIComponent(name)}`;

  async function pageStudies(root) {
    const tbody = el('tbody');
    root.append(el('div', { class: 'page-head' }, el('h1', {}, 'Studies')),
      el('div', { class: 'table-wrap' }, table('studies', ['Name', 'Direction', '#Trials', '#Best value', 'Best params'], tbody)));
    const studies = await api('/studies');
    tbody.replaceChildren(...(studies.length ? studies.map((s) => el('tr', { dataset: { study: s.name } },
      el('td', {}, link(studyHref(s.name), s.name)), el('td', {}, s.direction),
      el('td', { class: 'num' }, fmtInt(s.n_trials)), el('td', { class: 'num' }, fmtNum(s.best_value)),
      el('td', { class: 'params' }, fmtPairs(s.best_params)))) : [emptyRow(5, 'No studies yet.')]));
    setReady('studies');
  }

  // Parallel coordinates of the complete trials: one axis per param plus the objective.
  function drawParallel(canvas, trials, direction) {
    const done = trials.filter((t) => t.state === 'COMPLETE' && typeof t.value === 'number');
    const names = [...new Set(done.flatMap((t) => Object.keys(t.params || {})))].sort();
    const makeAxis = (name, get) => {
      const vals = done.map(get).filter((v) => v != null);
      if (vals.every((v) => typeof v === 'number')) {
        const lo = Math.min(...vals), hi = Math.max(...vals);
        const log = lo > 0 && hi / lo >= 100;
        const f = log ? Math.log10 : (v) => v;
        const span = f(hi) - f(lo) || 1;
        const pos = (v) => (hi === lo ? 0.5 : (f(v) - f(lo)) / span);
        const distinct = [...new Set(vals)];
        return { name: log ? name + ' (log)' : name, get, pos,
          ticks: (distinct.length <= 5 ? distinct : [lo, hi]).map((v) => [pos(v), fmtNum(v)]) };
      }
      const cats = [...new Set(vals.map(String))].sort();
      const pos = (v) => (cats.length === 1 ? 0.5 : cats.indexOf(String(v)) / (cats.length - 1));
      return { name, get, pos, ticks: cats.map((c) => [pos(c), c]) };
    };
    const axes = [...names.map((n) => makeAxis(n, (t) => t.params[n])), makeAxis('objective', (t) => t.value)];

    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(300, canvas.parentElement.clientWidth), height = 320;
    canvas.width = width * dpr;
    canvas.height = height * dpr;
    canvas.style.width = width + 'px';
    canvas.style.height = height + 'px';
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = '12px system-ui, sans-serif';
    if (!done.length) {
      ctx.fillStyle = '#8b95a3';
      ctx.fillText('No complete trials yet.', 16, 24);
      return;
    }
    const left = 60, right = 60, top = 30, bottom = 24;
    const x = (i) => left + (axes.length === 1 ? 0.5 : i / (axes.length - 1)) * (width - left - right);
    const y = (p) => top + (1 - p) * (height - top - bottom);

    // Colour: best trials dark blue, worst light yellow; the best are drawn last (on top).
    const objective = axes[axes.length - 1];
    const goodness = (t) => (direction === 'maximize' ? objective.pos(t.value) : 1 - objective.pos(t.value));
    const colour = (g) => `hsl(${50 + 170 * g}, ${70 + 10 * g}%, ${60 - 30 * g}%)`;
    ctx.lineWidth = 1.5;
    ctx.globalAlpha = 0.8;
    for (const t of [...done].sort((a, b) => goodness(a) - goodness(b))) {
      ctx.strokeStyle = colour(goodness(t));
      ctx.beginPath();
      let pen = false;
      axes.forEach((a, i) => {
        const v = a.get(t);
        if (v == null) { pen = false; return; }
        ctx[pen ? 'lineTo' : 'moveTo'](x(i), y(a.pos(v)));
        pen = true;
      });
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
    axes.forEach((a, i) => {
      ctx.strokeStyle = '#5f6b7a';
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(x(i), y(0));
      ctx.lineTo(x(i), y(1));
      ctx.stroke();
      ctx.fillStyle = '#1f2933';
      ctx.textAlign = 'center';
      ctx.fillText(a.name, x(i), top - 12);
      ctx.fillStyle = '#5f6b7a';
      ctx.textAlign = 'right';
      ctx.strokeStyle = '#fff';
      ctx.lineWidth = 3;
      for (const [p, label] of a.ticks) {
        const text = label.length > 14 ? label.slice(0, 13) + '…' : label;
        ctx.strokeText(text, x(i) - 4, y(p) + 4);
        ctx.fillText(text, x(i) - 4, y(p) + 4);
      }
    });
  }

  function pageStudy(root, name) {
    const tbody = el('tbody');
    const meta = el('span', { class: 'muted' });
    const historyBox = el('div', { id: 'history-chart', class: 'chart' });
    const canvas = el('canvas');
    const parallelBox = el('div', { id: 'parallel-chart', class: 'chart' }, canvas);
    root.append(
      el('div', { class: 'page-head' },
        el('div', {}, el('div', { class: 'crumb' }, link('/studies', 'Studies'), ' / ', name), el('h1', {}, name)), meta),
      el('div', { class: 'grid two' }, card('Optimization history', historyBox), card('Parallel coordinates', parallelBox)),
      card('Trials', el('div', { class: 'table-wrap' },
        table('trials', ['##', 'State', '#Value', 'Params', 'Job', 'Started', '#Duration'], tbody))));
    const history = liveChart(historyBox, 320);
    let study = null;
    new ResizeObserver(() => { if (study) drawParallel(canvas, study.trials || [], study.direction); }).observe(parallelBox);

    function render() {
      const trials = [...(study.trials || [])].sort((a, b) => a.number - b.number);
      const counts = {};
      trials.forEach((t) => { counts[t.state] = (counts[t.state] || 0) + 1; });
      meta.textContent = `${study.direction} · ${trials.length} trials · `
        + Object.entries(counts).map(([k, n]) => `${n} ${k.toLowerCase()}`).join(', ');
      tbody.replaceChildren(...(trials.length ? trials.map((t) => {
        const dur = t.datetime_complete && t.datetime_start ? toEpoch(t.datetime_complete) - toEpoch(t.datetime_start) : null;
        return el('tr', { dataset: { trial: t.number } },
          el('td', { class: 'num' }, t.number), el('td', {}, badge(t.state)), el('td', { class: 'num' }, fmtNum(t.value)),
          el('td', { class: 'params' }, fmtPairs(t.params)), el('td', { class: 'mono' }, jobLink(t.job_id)),
          timeCell(t.datetime_start), el('td', { class: 'num' }, fmtDuration(dur)));
      }) : [emptyRow(7, 'No trials yet.')]));

      const scored = trials.filter((t) => t.state === 'COMPLETE' && typeof t.value === 'number');
      const better = study.direction === 'maximize' ? Math.max : Math.min;
      let best = null;
      const bests = scored.map((t) => (best = best == null ? t.value : better(best, t.value)));
      history.set({
        series: [{ label: 'trial' }, dots('value', COLORS[0]),
          stepLine(`best (${study.direction})`, COLORS[1], { width: 2 })],
        axes: [axis({ label: 'trial', incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500] }), axis({ size: 60, label: 'objective' })],
        scales: { x: { time: false } },
      }, [scored.map((t) => t.number), scored.map((t) => t.value), bests]);
      drawParallel(canvas, trials, study.direction);
    }

    poller(async () => {
      study = await api(studyHref(name));
      render();
      setReady('study');
    }, 5000);
  }

  Object.assign(window.Dash.pages, { studies: pageStudies, study: pageStudy });
})();
