// page-jobs.js: the jobs list (/), with the job helpers the job page shares (ENDED, workerBounds, progressBar).
'use strict';
(() => {
  const { DASH, api, badge, el, emptyRow, fmtDuration, fmtFixed, fmtInt, fmtUsd, jobLink, link, poller,
    setReady, table, timeCell } = window.Dash;

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
    const now = ENDED.has(j.status) ? DASH : (j.workers ?? 0);   // an ended job holds no workers
    return `${now}${target} ${range}`;
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

  Object.assign(window.Dash, { ENDED, workerBounds, progressBar });

  Object.assign(window.Dash.pages, { jobs: pageJobs });
})();
