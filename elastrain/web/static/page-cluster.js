// page-cluster.js: the cluster (/cluster): CPUs, utilization, cost, pools, CPUs over time, scheduler decisions.
'use strict';
(() => {
  const { COLORS, DASH, api, axis, badge, card, el, emptyRow, fmtDate, fmtInt, fmtTimeOfDay, fmtUsd, jobLink,
    liveChart, poller, setReady, stepLine, table } = window.Dash;

  function pageCluster(root) {
    const stat = (label, domId) => {
      const value = el('div', { id: domId, class: 'stat-value' }, DASH);
      const sub = el('div', { class: 'stat-sub muted' });
      return { node: el('section', { class: 'card stat' }, el('div', { class: 'stat-label' }, label), value, sub), value, sub };
    };
    const cpus = stat('CPUs in use', 'cpus'), util = stat('Utilization', 'utilization'), cost = stat('Cost per hour', 'cost-per-hour');
    const poolsBody = el('tbody'), decisionsBody = el('tbody');
    const box = el('div', { id: 'utilization-chart', class: 'chart' });
    root.append(
      el('div', { class: 'page-head' }, el('h1', {}, 'Cluster')),
      el('div', { class: 'grid stats' }, cpus.node, util.node, cost.node),
      el('div', { class: 'grid two' },
        card('Pools', el('div', { class: 'table-wrap' }, table('pools', ['Pool', 'Type', '#Nodes', '#CPUs', '#Price/h'], poolsBody))),
        card('CPUs over time', box)),
      card('Scheduler decisions (latest 50)', el('div', { class: 'table-wrap' },
        table('decisions', ['Time', 'Workers per job', 'Nodes', '#CPUs'], decisionsBody))));
    const chart = liveChart(box, 260);

    const chips = (obj, linkJobs) => {
      const entries = Object.entries(obj || {});
      if (!entries.length) return el('span', { class: 'muted' }, DASH);
      return el('span', { class: 'chips' }, entries.map(([k, n]) =>
        el('span', { class: 'chip' }, linkJobs ? jobLink(k) : k, `: ${n}`)));
    };

    function render(c) {
      const total = c.cpus_total || 0, used = c.cpus_used || 0;
      cpus.value.textContent = `${fmtInt(used)} / ${fmtInt(total)}`;
      util.value.textContent = total ? `${(100 * used / total).toFixed(1)} %` : DASH;
      const nodes = (c.pools || []).reduce((a, p) => a + (p.nodes || 0), 0);
      cost.value.textContent = fmtUsd(c.cost_per_hour);
      cost.sub.textContent = `${fmtInt(nodes)} node${nodes === 1 ? '' : 's'} in ${(c.pools || []).length} pool(s)`;
      poolsBody.replaceChildren(...((c.pools || []).length ? c.pools.map((p) => el('tr', { dataset: { pool: p.name } },
        el('td', {}, p.name), el('td', {}, badge(p.spot ? 'spot' : 'on-demand')), el('td', { class: 'num' }, fmtInt(p.nodes)),
        el('td', { class: 'num' }, fmtInt(p.cpus)), el('td', { class: 'num' }, fmtUsd(p.price_per_hour))))
        : [emptyRow(5, 'No pools.')]));
      const decisions = c.decisions || [];
      // Decisions are recorded on change: hold the last one until now.
      const held = decisions.length ? [...decisions, { ...decisions[decisions.length - 1], t: Date.now() / 1000 }] : [];
      chart.set({
        series: [{}, stepLine('CPUs used', COLORS[0], { fill: 'rgba(37,99,235,.1)', width: 2 }),
          stepLine('CPUs total', '#5f6b7a', { dash: [6, 4] })],
        axes: [axis({ space: 80 }), axis({ size: 50 })],
        scales: { y: { range: (u, lo, hi) => [0, Math.max(1, hi || 0)] } },
      }, [held.map((d) => d.t), held.map((d) => d.cpus_used), held.map((d) => d.cpus_total)]);
      const latest = decisions.slice(-50).reverse();
      decisionsBody.replaceChildren(...(latest.length ? latest.map((d) => el('tr', {},
        el('td', { class: 'nowrap', title: fmtDate(d.t) }, fmtTimeOfDay(d.t)), el('td', {}, chips(d.workers, true)), el('td', {}, chips(d.nodes, false)),
        el('td', { class: 'num nowrap' }, `${fmtInt(d.cpus_used)} / ${fmtInt(d.cpus_total)}`)))
        : [emptyRow(4, 'No decisions yet.')]));
    }

    poller(async () => { render(await api('/cluster')); setReady('cluster'); }, 2000);
  }

  Object.assign(window.Dash.pages, { cluster: pageCluster });
})();
