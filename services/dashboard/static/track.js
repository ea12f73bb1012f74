/* One song's chart: weekly history, the forecast from the anchor week, and its 80% interval band. */
"use strict";

(() => {
  const box = document.getElementById("chart");
  const source = document.getElementById("track-data");
  if (!box || !source || typeof uPlot === "undefined") return;
  const data = JSON.parse(source.textContent);
  const WEEK = 7 * 24 * 3600;
  let plot = null;

  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  function anchorValue() {
    if (data.current !== null && data.current !== undefined) return data.current;
    const last = data.history[data.history.length - 1];
    return last ? last[1] : null;
  }

  /* Aligned columns for uPlot: x, history, forecast, lower, upper. */
  function columns() {
    const rows = new Map();
    const at = (t) => {
      if (!rows.has(t)) rows.set(t, [t, null, null, null, null]);
      return rows.get(t);
    };
    for (const [t, v] of data.history) at(t)[1] = v;
    const start = anchorValue();
    if (data.anchor !== null && data.forecasts.length && start !== null) {
      const row = at(data.anchor);
      row[2] = start; row[3] = start; row[4] = start;
    }
    for (const f of data.forecasts) {
      const row = at(f.t);
      row[2] = f.value;
      row[3] = f.lower === null ? f.value : f.lower;
      row[4] = f.upper === null ? f.value : f.upper;
    }
    const sorted = Array.from(rows.values()).sort((a, b) => a[0] - b[0]);
    return [0, 1, 2, 3, 4].map((i) => sorted.map((r) => r[i]));
  }

  function draw() {
    const accent = css("--accent") || "#1db954";
    const band = css("--band") || "rgba(29,185,84,0.16)";
    const muted = css("--muted") || "#5f6b7a";
    const grid = css("--line") || "#e3e7ec";
    const fmt = (u, ticks) => ticks.map((v) => songpop.fmtValue(v, data.signal));
    const axis = { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
    const opts = {
      width: Math.max(box.clientWidth, 280),
      height: box.clientWidth < 500 ? 260 : 340,
      scales: { x: { time: true } },
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      axes: [axis, Object.assign({ values: fmt, size: 56 }, axis)],
      series: [
        {},
        { label: "history", stroke: accent, width: 2, spanGaps: false, points: { show: data.history.length <= 16 } },
        { label: "forecast", stroke: accent, width: 2, dash: [6, 5], spanGaps: true, points: { show: true, size: 7 } },
        { label: "80% low", stroke: band, width: 1, spanGaps: true, points: { show: false } },
        { label: "80% high", stroke: band, width: 1, spanGaps: true, points: { show: false } },
      ],
      bands: [{ series: [4, 3], fill: band }],
    };
    if (plot) plot.destroy();
    plot = new uPlot(opts, columns(), box);
    window.songpopChart = plot;
    box.dataset.points = String(data.history.length + data.forecasts.length);
  }

  function updateCards(row) {
    document.getElementById("now").textContent = songpop.fmtValue(row.current, row.signal);
    for (const [h, fc] of [[26, row.f26], [52, row.f52]]) {
      const card = document.querySelector('.card[data-horizon="' + h + '"]');
      if (!card) continue;
      card.querySelector(".fc-value").textContent = fc ? songpop.fmtValue(fc.value, row.signal) : "\u2014";
      const iv = songpop.fmtInterval(fc, row.signal);
      card.querySelector(".fc-interval").textContent = iv ? "80%: " + iv : "no interval";
      card.querySelector(".fc-pchart").textContent =
        fc && fc.p_chart !== null && fc.p_chart !== undefined ? Math.round(fc.p_chart * 100) + "% chance still charting" : "";
    }
  }

  function apply(row) {
    const anchor = Date.parse(row.week + "T00:00:00Z") / 1000;
    data.anchor = anchor;
    data.current = row.current;
    data.forecasts = [[26, row.f26], [52, row.f52]]
      .filter(([, fc]) => fc)
      .map(([h, fc]) => ({ h, t: anchor + h * WEEK, value: fc.value, lower: fc.lower, upper: fc.upper }));
    updateCards(row);
    draw();
  }

  songpop.onPredictions((message) => {
    for (const row of message.rows) {
      if (row.track_id === data.track_id && row.signal === data.signal && row.region === data.region) apply(row);
    }
  });

  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(() => plot && plot.setSize({ width: Math.max(box.clientWidth, 280), height: plot.height }), 150);
  });

  // Colours come from the theme: redraw when the system switches between light and dark.
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => plot && draw());

  if (data.history.length || data.forecasts.length) draw();
})();
