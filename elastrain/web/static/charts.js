// charts.js: uPlot helpers shared by the pages (colours, axes, series, live charts, data alignment).
'use strict';
(() => {
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

  Object.assign(window.Dash, { COLORS, CLOCK_INCRS, stepped, axis, stepLine, line, dots, liveChart, align, alignHeld });
})();
