'use strict';
(() => {
  // ---------------------------------------------------------------- DOM helpers
  const $ = (sel, root = document) => root.querySelector(sel);

  // Builds an element; strings among the children become text nodes, never HTML.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value == null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'style') Object.assign(node.style, value);
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? '' : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child != null && child !== false) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const cssToken = (s) => String(s || '').toLowerCase().replace(/[^a-z0-9_-]/g, '');
  const badge = (text, kind = text) => el('span', { class: `badge b-${cssToken(kind)}` }, text ?? '—');
  const link = (href, text) => el('a', { href }, text);
  const jobLink = (id) => (id ? link(`/jobs/${encodeURIComponent(id)}`, id) : '—');
  const card = (title, ...body) => el('section', { class: 'card' }, title ? el('h3', {}, title) : null, ...body);
  // Header names starting with "#" are numeric columns (right-aligned); the "#" is not shown.
  const table = (id, headers, ...bodies) => el('table', { id, class: 'table' }, el('thead', {}, el('tr', {},
    headers.map((h) => (h[0] === '#' ? el('th', { class: 'num' }, h.slice(1)) : el('th', {}, h))))), ...bodies);
  const emptyRow = (cols, text) => el('tr', { class: 'empty' }, el('td', { colspan: cols }, text));
  // Marks the first full render (tests and the benchmark wait for it), with its time since navigation.
  function setReady(name) {
    const data = document.body.dataset;
    if (data.ready) return;
    data.readyMs = performance.now().toFixed(1);
    data.ready = name;
  }

  // ---------------------------------------------------------------- formatting
  const DASH = '—';
  const numberFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });
  const fmtInt = (n) => (n == null || !Number.isFinite(+n) ? DASH : numberFormat.format(Math.round(n)));
  const fmtFixed = (x, d = 2) => (x == null || !Number.isFinite(+x) ? DASH : (+x).toFixed(d));
  const fmtUsd = (x) => (x == null || !Number.isFinite(+x) ? DASH
    : '$' + (+x).toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 }));
  const pad2 = (n) => String(n).padStart(2, '0');

  // Compact number for free-form values (metrics, params, report entries).
  function fmtNum(x) {
    if (typeof x !== 'number') return x == null ? DASH : String(x);
    if (!Number.isFinite(x)) return String(x);
    if (Number.isInteger(x)) return numberFormat.format(x);
    const a = Math.abs(x);
    return a >= 1e6 || a < 1e-3 ? x.toExponential(2) : String(+x.toPrecision(4));
  }

  function fmtDuration(s) {
    if (s == null || !Number.isFinite(+s)) return DASH;
    s = Math.max(0, Math.round(s));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} m ${pad2(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${pad2(Math.floor(s / 60) % 60)} m`;
    return `${Math.floor(s / 86400)} d ${pad2(Math.floor(s / 3600) % 24)} h`;
  }

  // Axis label for seconds since start: "45s", "3:20", "1:02:03".
  function fmtClock(s) {
    s = Math.round(Math.max(0, s));
    const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
    return s < 60 ? s + 's' : h ? `${h}:${pad2(m)}:${pad2(s % 60)}` : `${m}:${pad2(s % 60)}`;
  }

  function fmtBytes(n) {
    if (n == null || !Number.isFinite(+n)) return DASH;
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    for (n = +n; n >= 1000 && i < units.length - 1; i++) n /= 1000;
    return `${i ? n.toFixed(n < 10 ? 1 : 0) : n} ${units[i]}`;
  }

  // ISO string (naive ones are taken as UTC) or epoch seconds -> epoch seconds.
  function toEpoch(t) {
    if (t == null || t === '') return null;
    if (typeof t === 'number') return t;
    const iso = /[zZ]|[+-]\d\d:?\d\d$/.test(t) ? t : t + 'Z';
    const ms = Date.parse(iso);
    return Number.isNaN(ms) ? null : ms / 1000;
  }

  // Local "YYYY-MM-DD HH:MM:SS"; fmtTimeOfDay is its time part.
  function fmtDate(t) {
    const s = toEpoch(t);
    if (s == null) return DASH;
    const d = new Date(s * 1000);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} `
      + `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }
  const fmtTimeOfDay = (t) => fmtDate(t).slice(11);

  function fmtRelative(t) {
    const s = toEpoch(t);
    if (s == null) return DASH;
    const diff = Date.now() / 1000 - s;
    const a = Math.abs(diff);
    const text = a < 10 ? 'just now' : a < 60 ? `${Math.round(a)} s` : a < 3600 ? `${Math.round(a / 60)} min`
      : a < 86400 ? `${Math.round(a / 3600)} h` : a < 30 * 86400 ? `${Math.round(a / 86400)} d` : null;
    if (text == null) return fmtDate(t).slice(0, 10);
    return a < 10 ? text : diff >= 0 ? `${text} ago` : `in ${text}`;
  }

  const timeCell = (t) => el('td', { title: fmtDate(t), class: 'nowrap' }, fmtRelative(t));

  // "a=1, b=x" for params / metrics objects.
  const fmtPairs = (obj) => Object.entries(obj || {}).map(([k, v]) => `${k}=${fmtNum(v)}`).join(', ') || DASH;

  // ---------------------------------------------------------------- errors and the API
  let csrf = '';
  let sessionReady = Promise.resolve();   // settles once /ui/session answered (and csrf is known)
  let leaving = false;
  let bannerSource = null;

  class ApiError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  function errorLine(body, res) {
    const d = body && body.detail;
    let text;
    if (typeof d === 'string') text = d;
    else if (d && typeof d.message === 'string') {
      text = d.field && !d.message.includes(d.field) ? `${d.field}: ${d.message}` : d.message;
    } else if (Array.isArray(d) && d.length) {
      text = d.map((e) => {
        const loc = Array.isArray(e.loc) ? e.loc.filter((p) => p !== 'body' && p !== 'query').join('.') : '';
        return loc ? `${loc}: ${e.msg}` : String(e.msg || e);
      }).join('; ');
    } else text = `HTTP ${res.status} ${res.statusText || ''}`.trim();
    return text.replace(/\s+/g, ' ').slice(0, 300);
  }

  function toLogin() {
    leaving = true;
    location.href = '/login?next=' + encodeURIComponent(location.pathname + location.search);
  }

  async function request(path, { method = 'GET', body } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (method !== 'GET') {
      await sessionReady;
      headers['X-CSRF-Token'] = csrf;
    }
    let res;
    try {
      res = await fetch(path, { method, headers, credentials: 'same-origin',
        body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiError('Cannot reach the server', 0);
    }
    if (res.status === 401) { toLogin(); throw new ApiError('Session expired', 401); }
    if (res.status === 204) return null;
    const data = await res.json().catch(() => null);
    if (!res.ok) throw new ApiError(errorLine(data, res), res.status);
    return data;
  }

  const api = (path, opts) => request('/api/v1' + path, opts);
  // For auxiliary calls whose failure should not blank the page (401 still redirects).
  const optional = (promise) => promise.catch((e) => { if (e.status === 401) throw e; return null; });

  function showError(message, source = 'action') {
    if (leaving) return;
    $('#error-text').textContent = message;
    $('#error-banner').hidden = false;
    bannerSource = source;
  }

  function clearError(source) {
    if (source && bannerSource !== source) return;
    $('#error-banner').hidden = true;
    $('#error-text').textContent = '';
    bannerSource = null;
  }

  function reportError(e, source) {
    if (!(e instanceof ApiError)) console.error(e);
    if (e.status !== 401) showError(e.message || String(e), source);
  }

  // Runs `fn` now and again `interval` ms (a number, or a function; null stops) after each run
  // ends; returns a function that triggers a run now (never two at once).
  function poller(fn, interval) {
    let timer = 0, busy = false, again = false;
    async function tick() {
      clearTimeout(timer);
      if (busy) { again = true; return; }
      busy = true;
      try { await fn(); clearError('poll'); } catch (e) { reportError(e, 'poll'); }
      busy = false;
      if (again) { again = false; tick(); return; }
      const wait = typeof interval === 'function' ? interval() : interval;
      if (!leaving && wait != null) timer = setTimeout(tick, wait);
    }
    tick();
    return tick;
  }

  // ---------------------------------------------------------------- charts
  const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777'];
  const CLOCK_INCRS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  const stepped = () => uPlot.paths.stepped({ align: 1 });
  const axis = (extra) => ({ stroke: '#5f6b7a', grid: { stroke: '#edf0f4' }, ticks: { stroke: '#dfe3ea' }, ...extra });
  const stepLine = (label, stroke, extra) => ({ label, stroke, width: 1.75, paths: stepped(), points: { show: false }, ...extra });
  const line = (label, i, extra) => ({ label, stroke: COLORS[i % COLORS.length], width: 1.75, spanGaps: true, ...extra });
  const dots = (label, color) => ({ label, stroke: color, fill: color, paths: () => null,
    points: { show: true, space: 0, size: 9, fill: color, stroke: '#fff', width: 1 } });

  // A uPlot chart in `container` that follows the container's width. `set(opts, data, key)`
  // updates the data in place, and builds the chart anew only when `key` (the series layout) changes.
  function liveChart(container, height = 240) {
    let u = null, key = null;
    const width = () => Math.max(240, Math.floor(container.clientWidth));
    const observer = new ResizeObserver(() => { if (u && u.width !== width()) u.setSize({ width: width(), height }); });
    observer.observe(container);
    return {
      set(opts, data, newKey = '') {
        container.classList.toggle('no-data', !data[0].length);
        if (u && newKey === key) { u.setData(data); return; }
        if (u) u.destroy();
        key = newKey;
        u = new uPlot({ width: width(), height, ...opts }, data, container);
      },
      destroy() { observer.disconnect(); if (u) u.destroy(); u = null; },
    };
  }

  // [[xs, ys], ...] -> uPlot's aligned [x, y1, y2, ...] with null where a series has no point.
  function align(seriesList) {
    const xs = [...new Set(seriesList.flatMap((s) => s[0]))].sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    return [xs, ...seriesList.map(([sx, sy]) => {
      const out = new Array(xs.length).fill(null);
      sx.forEach((x, i) => { out[index.get(x)] = sy[i]; });
      return out;
    })];
  }

  // Like align, for step series: each holds its last value between its first and last point.
  function alignHeld(seriesList) {
    const data = align(seriesList);
    data.slice(1).forEach((ys, k) => {
      const sx = seriesList[k][0];
      if (!sx.length) return;
      let last = null;
      data[0].forEach((x, i) => {
        if (ys[i] != null) last = ys[i];
        else if (x >= sx[0] && x <= sx[sx.length - 1]) ys[i] = last;
      });
    });
    return data;
  }

  // ---------------------------------------------------------------- page: jobs
  const JOB_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
  const ENDED = new Set(['succeeded', 'failed', 'cancelled']);
  const PAGE_SIZE = 50;
  const SORTS = ['seq', '-seq', 'name', '-name', 'status', '-status'];

  // min and max workers; from the spec when the job does not carry them.
  function workerBounds(j) {
    const spec = (j.spec && j.spec.resources && j.spec.resources.workers) || {};
    return [j.min_workers ?? spec.min, j.max_workers ?? spec.max];
  }

  function workersText(j) {
    const [lo, hi] = workerBounds(j);
    const range = `(${lo ?? '?'}–${hi ?? '?'})`;
    const target = j.requested_workers != null && j.requested_workers !== j.workers && !ENDED.has(j.status)
      ? ` → ${j.requested_workers}` : '';
    return `${j.workers ?? 0}${target} ${range}`;
  }

  function progressBar(p) {
    if (p == null) return el('span', { class: 'muted' }, DASH);
    const pct = Math.max(0, Math.min(1, p)) * 100;
    return el('div', { class: 'progress', title: `${pct.toFixed(1)} %` },
      el('div', { class: 'progress-track' }, el('div', { class: 'progress-bar', style: { width: pct + '%' } })),
      el('span', { class: 'progress-text' }, `${Math.floor(pct)} %`));
  }

  // The status alone (tests read it), and a second badge while a cancel is pending.
  const statusBadges = (j) => [badge(j.status), j.cancel_requested && !ENDED.has(j.status) ? badge('cancelling') : null];

  function jobRow(j) {
    return el('tr', { dataset: { jobId: j.job_id } },
      el('td', { class: 'mono' }, jobLink(j.job_id)),
      el('td', {}, j.name || DASH),
      el('td', {}, j.owner || DASH),
      el('td', { class: 'nowrap' }, statusBadges(j)),
      el('td', { class: 'nowrap' }, workersText(j)),
      el('td', {}, progressBar(j.progress)),
      el('td', { class: 'num' }, ENDED.has(j.status) ? DASH : fmtDuration(j.eta_s)),
      el('td', { class: 'num' }, fmtFixed((j.worker_seconds || 0) / 3600)),
      el('td', { class: 'num' }, fmtUsd(j.cost_usd)),
      timeCell(j.submitted_at));
  }

  function pageJobs(root) {
    const params = new URLSearchParams(location.search);
    const state = {
      status: JOB_STATUSES.includes(params.get('status')) ? params.get('status') : '',
      q: params.get('q') || '',
      sort: SORTS.includes(params.get('sort')) ? params.get('sort') : 'seq',
      offset: Math.max(0, parseInt(params.get('offset'), 10) || 0),
    };
    const columns = [['ID', 'seq'], ['Name', 'name'], ['Owner'], ['Status', 'status'], ['Workers'],
      ['Progress'], ['ETA'], ['Worker-h'], ['Cost'], ['Submitted']];

    const statusSelect = el('select', { id: 'status-filter', 'aria-label': 'Status' },
      el('option', { value: '' }, 'All statuses'), JOB_STATUSES.map((s) => el('option', { value: s }, s)));
    statusSelect.value = state.status;
    const search = el('input', { id: 'search', type: 'search', placeholder: 'Search id or name…', value: state.q });
    const numeric = new Set(['ETA', 'Worker-h', 'Cost']);
    const headRow = el('tr', {}, columns.map(([label, key]) => el('th', key
      ? { class: 'sortable', dataset: { sort: key }, tabindex: 0, title: 'Sort' } : { class: numeric.has(label) ? 'num' : null }, label)));
    const tbody = el('tbody');
    const prev = el('button', { id: 'prev', type: 'button', class: 'btn' }, '‹ Prev');
    const next = el('button', { id: 'next', type: 'button', class: 'btn' }, 'Next ›');
    const info = el('span', { id: 'page-info', class: 'muted' });

    root.append(
      el('div', { class: 'page-head' }, el('h1', {}, 'Jobs'),
        el('div', { class: 'toolbar' }, search, statusSelect)),
      el('div', { class: 'table-wrap' }, el('table', { id: 'jobs', class: 'table' }, el('thead', {}, headRow), tbody)),
      el('div', { class: 'pager' }, prev, info, next));

    const filters = () => new URLSearchParams(Object.entries({ status: state.status, q: state.q }).filter(([, v]) => v));
    const queryKey = () => `${filters()}&sort=${state.sort}&limit=${PAGE_SIZE}&offset=${state.offset}`;

    function syncHeaders() {
      for (const th of headRow.querySelectorAll('th[data-sort]')) {
        const key = th.dataset.sort;
        th.dataset.dir = state.sort === key ? 'asc' : state.sort === '-' + key ? 'desc' : '';
      }
    }

    function syncUrl() {
      const q = filters();
      if (state.sort !== 'seq') q.set('sort', state.sort);
      if (state.offset) q.set('offset', state.offset);
      history.replaceState(null, '', location.pathname + (q.toString() ? '?' + q : ''));
    }

    // Rows are kept per job and only changed cells replaced, so a link stays put while polls run.
    function render(data) {
      const jobs = data.jobs || [];
      const old = new Map([...tbody.querySelectorAll('tr[data-job-id]')].map((tr) => [tr.dataset.jobId, tr]));
      const rows = jobs.map((j) => {
        const fresh = jobRow(j), tr = old.get(j.job_id);
        if (!tr) return fresh;
        [...fresh.children].forEach((td, i) => { if (tr.children[i].outerHTML !== td.outerHTML) tr.children[i].replaceWith(td); });
        return tr;
      });
      tbody.replaceChildren(...(rows.length ? rows : [emptyRow(columns.length, 'No jobs match.')]));
      const total = data.total || 0;
      const first = total ? state.offset + 1 : 0;
      info.textContent = `${fmtInt(first)}–${fmtInt(state.offset + jobs.length)} of ${fmtInt(total)}`;
      prev.disabled = state.offset <= 0;
      next.disabled = state.offset + PAGE_SIZE >= total;
    }

    async function load() {
      const key = queryKey();
      const data = await api('/jobs?' + key);
      if (key !== queryKey()) return;   // the filter changed meanwhile; the next run renders it
      if (data.total > 0 && state.offset >= data.total) {   // the page emptied: go to the last one
        state.offset = Math.floor((data.total - 1) / PAGE_SIZE) * PAGE_SIZE;
        syncUrl();
        return load();
      }
      render(data);
      setReady('jobs');
    }

    const refresh = poller(load, 2000);
    const changed = (resetPage = true) => {
      if (resetPage) state.offset = 0;
      syncUrl();
      syncHeaders();
      refresh();
    };
    let debounce = 0;
    search.addEventListener('input', () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => { state.q = search.value.trim(); changed(); }, 300);
    });
    statusSelect.addEventListener('change', () => { state.status = statusSelect.value; changed(); });
    const sortBy = (th) => {
      const key = th.dataset.sort;
      state.sort = state.sort === key ? '-' + key : key;
      changed();
    };
    headRow.addEventListener('click', (e) => { const th = e.target.closest('th[data-sort]'); if (th) sortBy(th); });
    headRow.addEventListener('keydown', (e) => {
      const th = e.target.closest('th[data-sort]');
      if (th && (e.key === 'Enter' || e.key === ' ')) { e.preventDefault(); sortBy(th); }
    });
    prev.addEventListener('click', () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); changed(false); });
    next.addEventListener('click', () => { state.offset += PAGE_SIZE; changed(false); });
    syncHeaders();
  }

  // ---------------------------------------------------------------- page: one job
  const MARKERS = [
    { label: 'resize', color: '#9333ea', kinds: ['scale_out', 'scale_in', 'resized'] },
    { label: 'worker lost', color: '#dc2626', kinds: ['worker_lost', 'kill', 'killed', 'worker_killed', 'preempted'] },
    { label: 'recovered', color: '#16a34a', kinds: ['recovered', 'resume'] },
    { label: 'checkpoint', color: '#8b95a3', kinds: ['checkpoint'] },
  ];
  // Appends `items` (points with a `t`) to `list` without spreading (lists can be long);
  // returns the largest t seen, starting from `since`.
  function extend(list, items, since) {
    for (const item of items) {
      list.push(item);
      if (item.t > since) since = item.t;
    }
    return since;
  }
  // x (seconds since t0) of metric points. Points are written in batches that share one t;
  // a batch is spread evenly over the time since the previous batch (the first: since `from`).
  function spreadTimes(points, t0, from = t0) {
    const xs = new Array(points.length);
    let prev = from;
    for (let i = 0; i < points.length;) {
      const t = points[i].t;
      let j = i;
      while (j < points.length && points[j].t === t) j++;
      const from = Math.min(prev, t);
      for (let k = i; k < j; k++) xs[k] = from - t0 + ((t - from) * (k - i + 1)) / (j - i);
      prev = t;
      i = j;
    }
    return xs;
  }
  const isLossChartMetric = (name) => name === 'train_loss' || name === 'loss' || name.startsWith('val_');
  const LOG_LIMIT = 400000;

  function fact(label, valueNode) {
    return el('div', { class: 'fact' }, el('div', { class: 'fact-label' }, label), el('div', { class: 'fact-value' }, valueNode));
  }

  function eventRow(ev, t0) {
    const d = ev.detail;
    const detail = d == null ? '' : typeof d !== 'object' ? String(d)
      : Object.entries(d).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : fmtNum(v)}`).join(', ');
    return el('tr', { dataset: { kind: ev.kind } },
      el('td', { class: 'nowrap', title: fmtDate(ev.t) }, fmtTimeOfDay(ev.t),
        el('span', { class: 'muted' }, ` +${fmtClock(ev.t - t0)}`)),
      el('td', {}, badge(ev.kind, 'ev-' + ev.kind)),
      el('td', { class: 'num' }, fmtInt(ev.step)),
      el('td', { class: 'num' }, ev.workers ?? DASH),
      el('td', { class: 'num' }, ev.duration_s == null ? DASH : `${fmtNum(+(+ev.duration_s).toFixed(2))} s`),
      el('td', { class: 'detail', title: detail }, detail));
  }

  function pageJob(root, id) {
    const path = `/jobs/${encodeURIComponent(id)}`;
    const S = { job: null, status: null, metrics: {}, events: [], mSince: 0, eSince: 0, logOffset: 0,
      t0: null, xMax: 1, rendered: false, scaleDirty: false, spsReadings: [] };

    const title = el('h1', {}, id);
    const jobStatus = el('span', { id: 'job-status', class: 'badge' });
    const cancelling = badge('cancelling');
    const workersNow = el('span', { id: 'job-workers' });
    const workersRange = el('span', { class: 'muted' });
    const facts = {
      step: el('span'), sps: el('span'), eta: el('span'), progress: el('span'), owner: el('span'),
      submitted: el('span'), started: el('span'), finished: el('span'), cost: el('span'),
    };
    const message = el('p', { class: 'job-message', hidden: true });
    const scaleInput = el('input', { id: 'scale-input', type: 'number', step: 1, 'aria-label': 'Workers' });
    const scaleButton = el('button', { id: 'scale-button', type: 'button', class: 'btn primary' }, 'Scale');
    const cancelButton = el('button', { id: 'cancel-button', type: 'button', class: 'btn danger' }, 'Cancel job');
    const chartBox = (domId) => el('div', { id: domId, class: 'chart' });
    const boxes = { loss: chartBox('loss-chart'), workers: chartBox('workers-chart'), throughput: chartBox('throughput-chart') };
    const eventsBody = el('tbody');
    const eventsWrap = el('div', { class: 'table-wrap scroll' },
      table('events', ['Time', 'Kind', '#Step', '#Workers', '#Duration', 'Detail'], eventsBody));
    const log = el('pre', { id: 'log', class: 'log' });

    root.append(
      el('div', { class: 'page-head' },
        el('div', {}, el('div', { class: 'crumb' }, link('/', 'Jobs'), ' / ', el('span', { class: 'mono' }, id)), title),
        el('div', { class: 'toolbar' }, cancelling, jobStatus)),
      el('section', { class: 'card facts' },
        fact('Workers', [workersNow, ' ', workersRange]), fact('Step', facts.step), fact('Samples/s', facts.sps),
        fact('ETA', facts.eta), fact('Progress', facts.progress), fact('Owner', facts.owner),
        fact('Submitted', facts.submitted), fact('Started', facts.started), fact('Finished', facts.finished),
        fact('Cost', facts.cost), message,
        el('div', { class: 'actions' }, el('label', { for: 'scale-input' }, 'Workers'), scaleInput, scaleButton, cancelButton)),
      el('div', { class: 'grid charts' },
        card('Loss', boxes.loss), card('Workers', boxes.workers), card('Throughput (samples/s)', boxes.throughput)),
      el('div', { class: 'grid two' }, card('Events', eventsWrap), card('Log', log)));

    const charts = { loss: liveChart(boxes.loss), workers: liveChart(boxes.workers), throughput: liveChart(boxes.throughput) };
    const xScale = { time: false, range: () => [0, Math.max(1, S.xMax)] };
    const xAxis = axis({ incrs: CLOCK_INCRS, space: 70, values: (u, splits) => splits.map(fmtClock) });
    const cursor = { sync: { key: 'job:' + id }, drag: { x: false, y: false } };
    const active = () => !S.job || !ENDED.has(S.job.status);

    function renderHeader() {
      const j = S.job, st = S.status || {};
      title.textContent = j.name ? `${j.name}` : j.job_id;
      jobStatus.textContent = j.status;
      jobStatus.className = `badge b-${cssToken(j.status)}`;
      cancelling.hidden = !(j.cancel_requested && active());
      // While running, the group's own report (status) is the truth; the job row holds the
      // scheduler's target, and 0 once the job has ended.
      const workers = (active() ? st.workers ?? j.workers : j.workers) ?? 0;
      workersNow.textContent = workers;
      document.body.dataset.workers = workers;
      const [lo, hi] = workerBounds(j);
      workersRange.textContent = `(${lo ?? '?'}–${hi ?? '?'}`
        + (j.requested_workers != null && j.requested_workers !== workers && active() ? `, requested ${j.requested_workers})` : ')');
      const total = st.total_steps;
      facts.step.textContent = st.step == null ? DASH : `${fmtInt(st.step)}${total ? ' / ' + fmtInt(total) : ''}`
        + (st.epoch != null ? ` (epoch ${st.epoch})` : '');
      facts.sps.textContent = st.samples_per_s == null ? DASH : fmtNum(+(+st.samples_per_s).toFixed(1));
      facts.eta.textContent = active() ? fmtDuration(j.eta_s) : DASH;
      facts.progress.replaceChildren(progressBar(j.progress));
      facts.owner.textContent = j.owner || DASH;
      facts.submitted.textContent = fmtDate(j.submitted_at);
      facts.started.textContent = fmtDate(j.started_at);
      facts.finished.textContent = fmtDate(j.finished_at);
      facts.cost.textContent = `${fmtUsd(j.cost_usd)} · ${fmtFixed((j.worker_seconds || 0) / 3600)} worker-h`;
      const text = j.message || st.message;
      message.hidden = !text;
      message.textContent = text || '';
      if (lo != null) scaleInput.min = lo;
      if (hi != null) scaleInput.max = hi;
      if (!S.scaleDirty && document.activeElement !== scaleInput) scaleInput.value = j.requested_workers ?? j.workers;
      scaleInput.disabled = scaleButton.disabled = !active();
      cancelButton.disabled = !active() || j.cancel_requested;
    }

    function timeOrigin() {
      const candidates = [toEpoch(S.job.started_at), S.events[0] && S.events[0].t,
        ...Object.values(S.metrics).map((pts) => pts[0] && pts[0].t)].filter((t) => t != null);
      return candidates.length ? Math.min(...candidates) : toEpoch(S.job.submitted_at) || Date.now() / 1000;
    }

    // When training began: the start event (after the workers came up), else t0.
    function trainingFrom() {
      const start = S.events.find((e) => e.kind === 'start');
      return start ? start.t : S.t0;
    }

    function lossChart() {
      const names = Object.keys(S.metrics).filter(isLossChartMetric).sort();
      const right = names.some((n) => !/loss/.test(n));
      const series = [{ label: 'time', value: (u, v) => (v == null ? DASH : fmtClock(v)) },
        ...names.map((n, i) => line(n, i, /loss/.test(n) ? { scale: 'loss' }
          : { scale: 'y2', dash: [5, 3], show: /accuracy$/.test(n) || !names.some((m) => /accuracy$/.test(m)) }))];
      const axes = [xAxis, axis({ scale: 'loss', label: 'loss', size: 60 })];
      if (right) axes.push(axis({ scale: 'y2', side: 1, grid: { show: false }, size: 60 }));
      const data = align(names.map((n) => [spreadTimes(S.metrics[n], S.t0, trainingFrom()), S.metrics[n].map((p) => p.value)]));
      charts.loss.set({ series, axes, cursor, scales: { x: xScale } }, data, names.join('|'));
      const counted = names.includes('train_loss') ? ['train_loss'] : names;
      document.body.dataset.lossPoints = counted.reduce((n, name) => n + S.metrics[name].length, 0);
    }

    function workersChart(end) {
      const xs = [], ws = [], marks = MARKERS.map(() => []);
      let w = null;
      for (const ev of S.events) {
        if (ev.workers != null) w = ev.workers;
        if (w == null) continue;
        xs.push(ev.t - S.t0);
        ws.push(w);
        MARKERS.forEach((m, k) => marks[k].push(m.kinds.includes(ev.kind) ? w : null));
      }
      if (w != null && end != null && end - S.t0 > xs[xs.length - 1]) {
        xs.push(end - S.t0);
        ws.push(w);
        marks.forEach((m) => m.push(null));
      }
      const series = [{ label: 'time', value: (u, v) => (v == null ? DASH : fmtClock(v)) },
        stepLine('workers', COLORS[0], { width: 2, fill: 'rgba(37,99,235,.08)' }),
        ...MARKERS.map((m) => dots(m.label, m.color))];
      const opts = { series, cursor, scales: { x: xScale, y: { range: (u, lo, hi) => [0, Math.max(1, (hi || 0) + 1)] } },
        axes: [xAxis, axis({ label: 'workers', size: 50, incrs: [1, 2, 5, 10, 20, 50, 100] })] };
      charts.workers.set(opts, [xs, ws, ...marks]);
      document.body.dataset.workerSteps = ws.filter((v, i) => i === 0 || v !== ws[i - 1]).join(',');
    }

    // samples_per_s metric points, or else the readings of the status polls.
    function throughputChart() {
      const pts = S.metrics.samples_per_s || S.spsReadings;
      const series = [{ label: 'time', value: (u, v) => (v == null ? DASH : fmtClock(v)) }, line('samples/s', 2)];
      charts.throughput.set({ series, cursor, scales: { x: xScale }, axes: [xAxis, axis({ size: 60 })] },
        [spreadTimes(pts, S.t0, trainingFrom()), pts.map((p) => p.value)]);
    }

    function renderCharts() {
      S.t0 = timeOrigin();
      const lastMetric = Math.max(0, ...Object.values(S.metrics).map((p) => (p.length ? p[p.length - 1].t : 0)));
      const lastEvent = S.events.length ? S.events[S.events.length - 1].t : 0;
      const end = active() ? Math.max(Date.now() / 1000, lastEvent, lastMetric)
        : toEpoch(S.job.finished_at) || Math.max(lastEvent, lastMetric);
      S.xMax = Math.max(end, lastEvent, lastMetric) - S.t0;
      workersChart(S.job.status === 'queued' ? null : end);
      lossChart();
      throughputChart();
    }

    function addEvents(events) {
      if (!events || !events.length) return;
      const wasEmpty = !S.events.length;
      S.eSince = extend(S.events, events, S.eSince);
      const t0 = wasEmpty ? timeOrigin() : S.t0;
      if (wasEmpty) eventsBody.replaceChildren();
      const follow = eventsWrap.scrollTop + eventsWrap.clientHeight >= eventsWrap.scrollHeight - 24;
      eventsBody.append(...events.map((e) => eventRow(e, t0)));
      if (follow) eventsWrap.scrollTop = eventsWrap.scrollHeight;
      document.body.dataset.events = S.events.length;
      // How long the newest event took to reach the page (the benchmark reads it).
      document.body.dataset.eventLagMs = Math.round(Date.now() - events[events.length - 1].t * 1000);
    }

    function addMetrics(metrics) {
      for (const [name, points] of Object.entries(metrics || {})) {
        if (!Array.isArray(points) || !points.length) continue;
        S.mSince = extend(S.metrics[name] = S.metrics[name] || [], points, S.mSince);
      }
    }

    function addReading(status) {
      if (!status || status.samples_per_s == null || !active()) return;
      const t = status.updated || Date.now() / 1000;
      const last = S.spsReadings[S.spsReadings.length - 1];
      if (!last || t > last.t) S.spsReadings.push({ t, value: status.samples_per_s });
    }

    function addLog(chunk) {
      if (!chunk) return;
      if (typeof chunk.offset === 'number') S.logOffset = chunk.offset;
      if (!chunk.text) return;
      const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 24;
      let text = log.textContent + chunk.text;
      if (text.length > LOG_LIMIT) text = '…\n' + text.slice(text.length - LOG_LIMIT);
      log.textContent = text;
      if (follow) log.scrollTop = log.scrollHeight;
    }

    async function tick() {
      const [job, status, metrics, events, logs] = await Promise.all([
        api(path).catch((e) => { S.gone = e.status === 404; throw e; }),
        optional(api(`${path}/status`)),
        optional(api(`${path}/metrics?since=${S.mSince}`)),
        optional(api(`${path}/events?since=${S.eSince}`)),
        optional(api(`${path}/logs?offset=${S.logOffset}`)),
      ]);
      S.job = job;
      S.status = status;
      addReading(status);
      addMetrics(metrics);
      addEvents(events);
      addLog(logs);
      renderHeader();
      renderCharts();
      if (!S.rendered) {
        S.rendered = true;
        if (!S.events.length) eventsBody.append(emptyRow(6, 'No events yet.'));
        document.body.dataset.events = S.events.length;
        document.title = `${job.name || id} · elastrain`;
        setReady('job');
      }
    }

    const refresh = poller(tick, () => (S.gone ? null : active() ? 500 : 5000));

    async function act(question, call) {
      if (!window.confirm(question)) return;
      scaleButton.disabled = cancelButton.disabled = true;
      try {
        S.job = await call();
        clearError('action');
      } catch (e) {
        reportError(e, 'action');
      }
      if (S.job) renderHeader();
      refresh();
    }

    scaleInput.addEventListener('input', () => { S.scaleDirty = true; });
    scaleButton.addEventListener('click', () => {
      const n = Number(scaleInput.value);
      if (scaleInput.value === '' || !Number.isInteger(n)) { showError('Enter a whole number of workers'); return; }
      act(`Scale job ${id} to ${n} worker${n === 1 ? '' : 's'}?`, async () => {
        const job = await api(`${path}/scale`, { method: 'POST', body: { workers: n } });
        S.scaleDirty = false;
        return job;
      });
    });
    cancelButton.addEventListener('click', () => act(`Cancel job ${id}?`,
      () => api(`${path}/cancel`, { method: 'POST' })));
  }

  // ---------------------------------------------------------------- page: cluster
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

  // ---------------------------------------------------------------- page: models
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

  // Nested objects to dotted keys: {a: 1, b: {c: 2}} -> [["a", 1], ["b.c", 2]].
  function flatten(obj, prefix = '') {
    return Object.entries(obj || {}).flatMap(([k, v]) => (v && typeof v === 'object' && !Array.isArray(v)
      ? flatten(v, prefix + k + '.') : [[prefix + k, Array.isArray(v) ? v.map(fmtNum).join(', ') : v]]));
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

  // ---------------------------------------------------------------- pages: studies
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

  // ---------------------------------------------------------------- page: simulations
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

  // ---------------------------------------------------------------- shell and routing
  const ROUTES = [
    [/^\/(?:jobs\/?)?$/, pageJobs, 'jobs'],
    [/^\/jobs\/([^/]+)\/?$/, pageJob, 'jobs'],
    [/^\/cluster\/?$/, pageCluster, 'cluster'],
    [/^\/models\/?$/, pageModels, 'models'],
    [/^\/studies\/?$/, pageStudies, 'studies'],
    [/^\/studies\/([^/]+)\/?$/, pageStudy, 'studies'],
    [/^\/simulations\/?$/, pageSimulations, 'simulations'],
  ];

  async function logout() {
    try {
      await request('/ui/logout', { method: 'POST' });
    } catch (e) {
      reportError(e);   // a 401 is on its way to /login already
      return;
    }
    leaving = true;
    location.href = '/login';
  }

  async function main() {
    $('#logout').addEventListener('click', logout);
    $('#error-close').addEventListener('click', () => clearError());
    const app = $('#app');
    // The page's first requests go out alongside the session's; a 401 on any sends to /login.
    sessionReady = request('/ui/session').then((session) => {
      csrf = session.csrf || '';
      $('#user-name').textContent = session.user + (session.admin ? ' (admin)' : '');
    }, (e) => reportError(e));

    for (const [pattern, page, section] of ROUTES) {
      const match = location.pathname.match(pattern);
      if (!match) continue;
      for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.section === section);
      const args = match.slice(1).map(decodeURIComponent);
      try {
        await page(app, ...args);
      } catch (e) {
        reportError(e);
      }
      return;
    }
    app.append(el('div', { class: 'page-head' }, el('h1', {}, 'Not found')),
      el('p', {}, 'No page here. ', link('/', 'Back to the jobs.')));
  }

  main();
})();
