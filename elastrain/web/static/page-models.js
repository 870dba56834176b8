// page-models.js: the model registry (/models): versions per model, with metrics, lineage and optimize reports.
'use strict';
(() => {
  const { DASH, api, badge, el, emptyRow, flatten, fmtBytes, fmtFixed, fmtNum, jobLink, setReady, table,
    timeCell } = window.Dash;

  const MODEL_METRICS = ['accuracy', 'f1', 'mse', 'r2'];

  // The first of accuracy / f1 / mse / r2 present in each form (val_f1_macro counts as f1).
  function modelMetrics(metrics) {
    const m = metrics || {};
    const numeric = Object.keys(m).filter((k) => typeof m[k] === 'number');
    let keys = MODEL_METRICS.map((w) => numeric.find((k) => k === w)
      || numeric.find((k) => new RegExp(`^((val|test)_)?${w}(_|$)`).test(k))).filter(Boolean);
    if (!keys.length) keys = numeric.slice(0, 4);
    if (!keys.length) return el('span', { class: 'muted' }, DASH);
    return el('span', { class: 'chips' }, keys.map((k) => el('span', { class: 'metric' },
      el('span', { class: 'muted' }, k + ' '), fmtFixed(m[k], 4))));
  }

  function modelRows(m) {
    const lineage = [m.job_id ? el('span', {}, 'job ', jobLink(m.job_id)) : null,
      m.parent_version != null ? el('span', {}, `from v${m.parent_version}`) : null,
      m.spec_hash ? el('span', { class: 'mono', title: m.spec_hash }, 'spec ' + String(m.spec_hash).slice(0, 8)) : null,
      m.data_fingerprint ? el('span', { class: 'mono', title: m.data_fingerprint }, 'data ' + String(m.data_fingerprint).slice(0, 8)) : null,
    ].filter(Boolean);
    const rows = [el('tr', { dataset: { model: m.name, version: m.version } },
      el('td', { class: 'version', title: m.url || '' }, `v${m.version}`),
      el('td', {}, (m.aliases || []).length ? el('span', { class: 'chips' }, m.aliases.map((a) => badge(a, 'alias'))) : DASH),
      el('td', {}, modelMetrics(m.metrics)),
      el('td', { class: 'num' }, fmtBytes(m.size_bytes)),
      el('td', { class: 'lineage' }, lineage.length ? el('span', { class: 'chips' }, lineage) : DASH),
      timeCell(m.created_at))];
    if (m.report && typeof m.report === 'object') {
      rows.push(el('tr', { class: 'report' }, el('td'), el('td', { colspan: 5 },
        el('span', { class: 'muted' }, 'Optimize report: '),
        el('span', { class: 'chips' }, flatten(m.report).slice(0, 24).map(([k, v]) =>
          el('span', { class: 'kv' }, el('span', { class: 'muted' }, k + ' '), fmtNum(v)))))));
    }
    return rows;
  }

  async function pageModels(root) {
    const tbody = el('tbody');
    root.append(el('div', { class: 'page-head' }, el('h1', {}, 'Models')),
      el('div', { class: 'table-wrap' }, table('models', ['Version', 'Aliases', 'Metrics', '#Size', 'Lineage', 'Created'], tbody)));
    const models = await api('/models');
    const groups = new Map();
    for (const m of models) (groups.get(m.name) || groups.set(m.name, []).get(m.name)).push(m);
    const rows = [];
    for (const name of [...groups.keys()].sort()) {
      const versions = groups.get(name).sort((a, b) => b.version - a.version);
      rows.push(el('tr', { class: 'group', dataset: { group: name } }, el('td', { colspan: 6 },
        el('strong', {}, name), el('span', { class: 'muted' },
          ` · ${versions.length} version${versions.length === 1 ? '' : 's'} · owner ${versions[0].owner || DASH}`))));
      versions.forEach((m) => rows.push(...modelRows(m)));
    }
    tbody.replaceChildren(...(rows.length ? rows : [emptyRow(6, 'No models registered yet.')]));
    setReady('models');
  }

  Object.assign(window.Dash.pages, { models: pageModels });
})();
