// page-job.js: one job (/jobs/ID): facts, scale and cancel, loss / workers / throughput charts, a federated
// job's rounds, events and log.
'use strict';
(() => {
  const { CLOCK_INCRS, COLORS, DASH, ENDED, align, api, axis, badge, card, clearError, cssToken, dots, el,
    emptyRow, fmtBytes, fmtClock, fmtDate, fmtDuration, fmtInt, fmtNum, fmtTimeOfDay, fmtUsd, fmtWorkerTime, line, link,
    liveChart, optional, poller, progressBar, reportError, setReady, showError, stepLine, table, toEpoch,
    workerBounds } = window.Dash;

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
    const boxes = { loss: chartBox('loss-chart'), workers: chartBox('workers-chart'), throughput: chartBox('throughput-chart'),
      rounds: chartBox('rounds-chart') };
    const roundsNote = el('p', { id: 'rounds-note', class: 'muted' });
    const roundsCard = card('Federated rounds: clients asked, reported, dropped, late', boxes.rounds, roundsNote);
    roundsCard.id = 'rounds-card';
    roundsCard.hidden = true;   // shown once a federated job has a round
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
      roundsCard,
      el('div', { class: 'grid two' }, card('Events', eventsWrap), card('Log', log)));

    const charts = { loss: liveChart(boxes.loss), workers: liveChart(boxes.workers), throughput: liveChart(boxes.throughput),
      rounds: liveChart(boxes.rounds) };
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
      // scheduler's target, and 0 once the job has ended: then the last group size the events tell.
      const last = lastEventWorkers();
      const workers = active() ? st.workers ?? j.workers ?? 0 : last ?? DASH;
      workersNow.textContent = workers;
      document.body.dataset.workers = workers;
      const [lo, hi] = workerBounds(j);
      workersRange.textContent = active() ? workerRange(lo, hi, j.requested_workers, workers)
        : last == null ? '' : 'at the end';
      const total = st.total_steps;
      // An ended job whose run folder is gone has a bare status (step 0 of 0): its events tell the last step.
      const lastStep = !active() && !total ? lastEvent((e) => e.step != null) : null;
      facts.step.textContent = lastStep ? fmtInt(lastStep.step) : st.step == null ? DASH
        : `${fmtInt(st.step)}${total ? ' / ' + fmtInt(total) : ''}` + (st.epoch != null ? ` (epoch ${st.epoch})` : '');
      const rate = samplesPerSecond();
      facts.sps.textContent = rate == null ? DASH : rate >= 100 ? fmtInt(rate) : fmtNum(+rate.toFixed(1));
      facts.eta.textContent = active() ? fmtDuration(etaSeconds(rate)) : DASH;
      facts.progress.replaceChildren(progressBar(j.progress));
      facts.owner.textContent = j.owner || DASH;
      facts.submitted.textContent = fmtDate(j.submitted_at);
      facts.started.textContent = fmtDate(j.started_at);
      facts.finished.textContent = fmtDate(j.finished_at);
      // Without prices (the server's --cpu-hour-price) there is no cost to show: the usage alone.
      const usage = fmtWorkerTime(j.worker_seconds || 0);
      facts.cost.textContent = j.cost_usd == null ? usage : `${fmtUsd(j.cost_usd)} · ${usage}`;
      facts.cost.title = j.cost_usd == null ? 'no price set: the server prices CPU-hours with --cpu-hour-price' : '';
      const text = j.message || st.message;
      message.hidden = !text;
      message.textContent = text || '';
      if (lo != null) scaleInput.min = lo;
      if (hi != null) scaleInput.max = hi;
      // An ended job cannot be scaled: its box keeps the group's last size (the job row says 0).
      if (!active()) scaleInput.value = last ?? '';
      else if (!S.scaleDirty && document.activeElement !== scaleInput) scaleInput.value = j.requested_workers ?? j.workers;
      scaleInput.disabled = scaleButton.disabled = !active();
      cancelButton.disabled = !active() || j.cancel_requested;
    }

    // "(1–3)", "(1–3, requested 2)" while the group is not at the request; nothing when the bounds are one number.
    function workerRange(lo, hi, requested, workers) {
      const parts = [lo === hi && lo != null ? null : `${lo ?? '?'}–${hi ?? '?'}`,
        requested != null && requested !== workers ? `requested ${requested}` : null].filter(Boolean);
      return parts.length ? `(${parts.join(', ')})` : '';
    }

    // Samples/s: the driver's latest reading, else the last one recorded as a metric. A driver has
    // no reading of its own for its first second (after a start, a resume or a restart of the
    // server), and the job row and the status are read apart: the page uses whichever it has.
    function samplesPerSecond() {
      const own = S.status && S.status.samples_per_s;
      if (own) return +own;
      const recorded = S.metrics.samples_per_s;
      return recorded && recorded.length ? +recorded[recorded.length - 1].value : null;
    }

    // Seconds left: the server's estimate, else the steps left (from the status) at `rate`.
    function etaSeconds(rate) {
      if (S.job.eta_s != null) return S.job.eta_s;
      const st = S.status || {};
      if (!rate || !st.total_steps || !st.batch_size || st.step == null) return null;
      return (Math.max(0, st.total_steps - st.step) * st.batch_size) / rate;
    }

    // The last event for which `test` holds, or null.
    function lastEvent(test) {
      for (let i = S.events.length - 1; i >= 0; i--) if (test(S.events[i])) return S.events[i];
      return null;
    }

    // The workers of the last event that has them, or null.
    function lastEventWorkers() {
      const ev = lastEvent((e) => e.workers != null);
      return ev ? ev.workers : null;
    }

    // Where the charts start (x = 0): when training began (the start event, once the workers are
    // up), else the first event or metric. The wait before it (queue, Ray and worker start-up) is
    // left out, so that a short job's curves fill the charts instead of their right edge.
    function timeOrigin() {
      const start = S.events.find((e) => e.kind === 'start');
      if (start) return start.t;
      const candidates = [S.events[0] && S.events[0].t, ...Object.values(S.metrics).map((pts) => pts[0] && pts[0].t)]
        .filter((t) => t != null);
      return candidates.length ? Math.min(...candidates)
        : toEpoch(S.job.started_at) || toEpoch(S.job.submitted_at) || Date.now() / 1000;
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

    // A federated job's rounds (its federated_* series, by round): clients asked / reported /
    // dropped / late, the validation accuracy (or R²) on the right, and the bytes and privacy spent.
    const ROUND_SERIES = ['asked', 'reported', 'dropped', 'late'];
    function roundsChart() {
      const reported = S.metrics.federated_clients_reported;
      if (!reported || !reported.length) return;
      roundsCard.hidden = false;
      const rounds = reported.map((p) => p.epoch);
      const byRound = (name) => {
        const seen = new Map((S.metrics[name] || []).map((p) => [p.epoch, p.value]));
        return rounds.map((r) => (seen.has(r) ? seen.get(r) : null));
      };
      const names = ROUND_SERIES.filter((n) => S.metrics[`federated_clients_${n}`]);
      const score = ['val_accuracy', 'val_r2'].find((n) => S.metrics[n]);
      const series = [{ label: 'round' }, ...names.map((n, i) => line(n, i, { scale: 'clients' })),
        ...(score ? [line(score, names.length, { scale: 'y2', dash: [5, 3] })] : [])];
      const axes = [axis({ label: 'round', incrs: [1, 2, 5, 10, 20, 50, 100] }),
        axis({ scale: 'clients', label: 'clients', size: 50, incrs: [1, 2, 5, 10, 20, 50, 100] }),
        ...(score ? [axis({ scale: 'y2', side: 1, grid: { show: false }, size: 60 })] : [])];
      const data = [rounds, ...names.map((n) => byRound(`federated_clients_${n}`)), ...(score ? [byRound(score)] : [])];
      charts.rounds.set({ series, axes, scales: { x: { time: false } },
        cursor: { drag: { x: false, y: false } } }, data, names.join('|') + (score || ''));
      const last = (name) => { const pts = S.metrics[name]; return pts && pts.length ? pts[pts.length - 1].value : null; };
      const bytes = last('federated_update_bytes'), epsilon = last('federated_epsilon');
      roundsNote.textContent = [`${rounds.length} round(s)`,
        bytes != null ? `updates: ${fmtBytes(bytes)} in the last round` : '',
        epsilon != null ? `privacy spent: ε ${epsilon.toFixed(2)}` : ''].filter(Boolean).join(' · ');
      document.body.dataset.roundsReported = byRound('federated_clients_reported').join(',');
    }

    function renderCharts() {
      S.t0 = timeOrigin();
      const lastMetric = Math.max(0, ...Object.values(S.metrics).map((p) => (p.length ? p[p.length - 1].t : 0)));
      const lastEvent = S.events.length ? S.events[S.events.length - 1].t : 0;
      const end = active() ? Math.max(Date.now() / 1000, lastEvent, lastMetric)
        : toEpoch(S.job.finished_at) || Math.max(lastEvent, lastMetric);
      S.xMax = Math.max(end, lastEvent, lastMetric) - S.t0;
      // The charts' time span in epoch seconds (tests read it).
      document.body.dataset.chartFrom = S.t0.toFixed(3);
      document.body.dataset.chartTo = (S.t0 + Math.max(1, S.xMax)).toFixed(3);
      workersChart(S.job.status === 'queued' ? null : end);
      lossChart();
      throughputChart();
      roundsChart();
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

  Object.assign(window.Dash.pages, { job: pageJob });
})();
