// core.js: the window.Dash namespace: DOM helpers, formatting, the API layer (fetch, session, CSRF, error banner, polling), nav.
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

  // Worker time in the unit that reads best: "45 worker-s", "12.5 worker-min", "3.2 worker-h".
  function fmtWorkerTime(s) {
    if (s == null || !Number.isFinite(+s)) return DASH;
    s = Math.max(0, +s);
    if (s < 90) return `${Math.round(s)} worker-s`;
    if (s < 90 * 60) return `${fmtNum(+(s / 60).toFixed(1))} worker-min`;
    return `${fmtNum(+(s / 3600).toFixed(1))} worker-h`;
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

  // Nested objects to dotted keys: {a: 1, b: {c: 2}} -> [["a", 1], ["b.c", 2]].
  function flatten(obj, prefix = '') {
    return Object.entries(obj || {}).flatMap(([k, v]) => (v && typeof v === 'object' && !Array.isArray(v)
      ? flatten(v, prefix + k + '.') : [[prefix + k, Array.isArray(v) ? v.map(fmtNum).join(', ') : v]]));
  }

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

  // ---------------------------------------------------------------- shell and nav
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

  // Wires the top bar and the banner, and asks for the session (user name, CSRF token).
  function startShell() {
    $('#logout').addEventListener('click', logout);
    $('#error-close').addEventListener('click', () => clearError());
    // The page's first requests go out alongside the session's; a 401 on any sends to /login.
    sessionReady = request('/ui/session').then((session) => {
      csrf = session.csrf || '';
      $('#user-name').textContent = session.user + (session.admin ? ' (admin)' : '');
    }, (e) => reportError(e));
  }

  // Marks the nav link of `section` as the current one.
  function setNav(section) {
    for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.section === section);
  }

  // The one global: every file adds to it; the page files add their page to `pages`.
  window.Dash = {
    pages: {},
    $, el, cssToken, badge, link, jobLink, card, table, emptyRow, setReady, DASH, fmtInt, fmtFixed, fmtUsd,
    fmtNum, fmtDuration, fmtWorkerTime, fmtClock, fmtBytes, toEpoch, fmtDate, fmtTimeOfDay, fmtRelative, timeCell, fmtPairs,
    flatten, ApiError, request, api, optional, showError, clearError, reportError, poller, startShell, setNav,
  };
})();
