// The report's charts, drawn by Observable Plot (inlined before this script, with d3) from the
// JSON blob in #report-data: per job, a result field's mean in each matrix cell with its 95%
// interval; the attempts on a timeline, one lane per slot of a node; the runs' durations as a
// histogram. Plot sets every label and tip with textContent: batch data never becomes markup.
// Marks carry a class (cell-mean, cell-interval, attempt, duration) that the tests count.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  // The status bar's colours (report.css), so a status reads the same everywhere.
  const COLOURS = {
    pending: "#c4c7cc", running: "#4285f4", succeeded: "#34a853", failed: "#d93025",
    timed_out: "#f29900", error: "#a142f4", cancelled: "#9aa0a6",
  };
  const LANE_PIXELS = 16;  // a lane's height, until there are too many lanes for the page
  const TIMELINE_PIXELS = 480;  // ... then all of them share this height
  const LANE_LABELS = 40;  // more lanes than this: every k-th is named
  const LABEL_CHARS = 48;  // a cell's name on the axis; the tip has all of it
  const $ = (id) => document.getElementById(id);
  const el = (tag, text, cls) => {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  };

  function most(values) {  // Math.max(...values) overflows the stack past ~100,000 values
    let top = -Infinity;
    for (const v of values) if (v > top) top = v;
    return top;
  }

  // The charts' width, read once before any is drawn: reading an element's width after a
  // chart went in would lay the page out again (10,000 rects) for each chart.
  let chartWidth = 960;

  function statusColour(values) {
    const present = new Set(values);
    const domain = data.statuses.filter((s) => present.has(s));
    return { domain, range: domain.map((s) => COLOURS[s] || "#667085"), legend: true };
  }

  // Seconds in the unit that keeps an axis's numbers short.
  function timeUnit(seconds) {
    if (seconds <= 180) return { name: "s", per: 1 };
    if (seconds <= 3 * 3600) return { name: "min", per: 60 };
    return { name: "h", per: 3600 };
  }

  function shorten(text) {
    return text.length > LABEL_CHARS ? text.slice(0, LABEL_CHARS - 1) + "\u2026" : text;
  }

  // One chart's failure leaves the others and the run table standing; the console says why.
  function safely(box, draw) {
    try {
      draw();
    } catch (error) {
      box.replaceChildren(el("p", "chart not drawn: " + error.message, "err"));
      console.error(error);
    }
  }

  // -- per job, a field's mean per matrix cell ---------------------------------------------

  function byJob(cells) {
    const jobs = new Map();
    for (const cell of cells) {
      if (!jobs.has(cell.job)) jobs.set(cell.job, { fields: [], cells: [] });
      const job = jobs.get(cell.job);
      if (!job.fields.includes(cell.field)) job.fields.push(cell.field);
      job.cells.push(cell);
    }
    return jobs;
  }

  function cellPlot(rows, field, pixels) {
    const longest = most(rows.map((r) => shorten(r.cell).length));
    const rates = rows.every((r) => r.method === "wilson");  // proportions: the whole 0..1
    const bounded = rows.filter((r) => r.lo !== null && r.hi !== null);
    return Plot.plot({
      width: pixels,
      height: 40 + 24 * rows.length,
      marginLeft: Math.min(340, Math.max(60, 12 + 6.5 * longest)),
      x: { label: field + " (mean, 95% interval)", domain: rates ? [0, 1] : undefined,
        grid: true, nice: !rates },
      y: { domain: rows.map((r) => r.cell), label: null, tickFormat: shorten },
      marks: [
        Plot.ruleY(bounded, { y: "cell", x1: "lo", x2: "hi", stroke: "#667085",
          strokeWidth: 2, className: "cell-interval" }),
        Plot.dot(rows, { x: "mean", y: "cell", r: 4, fill: "#1d2330", className: "cell-mean",
          channels: { n: "n", low: "lo", high: "hi", interval: "method" }, tip: true }),
      ],
    });
  }

  function cellCharts(box) {
    const jobs = byJob(Array.isArray(data.cells) ? data.cells : []);
    for (const [name, job] of jobs) {
      const part = el("div", null, "cell-chart");
      part.dataset.job = name;
      const title = el("h3", name + " ");
      const select = el("select");
      select.setAttribute("aria-label", "result field of " + name);
      for (const field of job.fields) select.appendChild(el("option", field)).value = field;
      const label = el("label", "field ", "dim");
      label.appendChild(select);
      title.appendChild(label);
      const figure = el("div", null, "chart");
      part.append(title, figure);
      box.appendChild(part);
      const draw = () => safely(figure, () => {
        const rows = job.cells.filter((c) => c.field === select.value);
        figure.replaceChildren(cellPlot(rows, select.value, chartWidth));
      });
      select.addEventListener("change", draw);
      draw();
    }
  }

  // -- attempts over time ------------------------------------------------------------------

  function timeline(box) {
    const attempts = Array.isArray(data.attempts) ? data.attempts : [];
    if (attempts.length === 0) {
      box.replaceChildren(el("p", "no attempt has started", "dim"));
      return;
    }
    let last = 0;
    for (const a of attempts) last = Math.max(last, a.t0, a.t1 === null ? 0 : a.t1);
    const unit = timeUnit(last);
    const lanes = [...new Set(attempts.map((a) => a.lane))].sort(
      (a, b) => a.localeCompare(b, undefined, { numeric: true }));
    const every = Math.ceil(lanes.length / LANE_LABELS);
    const tall = Math.min(TIMELINE_PIXELS, LANE_PIXELS * lanes.length);
    box.replaceChildren(Plot.plot({
      width: chartWidth,
      height: 50 + tall,
      marginLeft: 12 + 6.5 * most(lanes.map((l) => l.length)),
      x: { label: "from the batch's start (" + unit.name + ")", grid: true },
      y: { domain: lanes, label: null, padding: lanes.length > LANE_LABELS ? 0 : 0.15,
        ticks: lanes.filter((_, i) => i % every === 0) },
      color: statusColour(attempts.map((a) => a.st)),
      marks: [
        Plot.barX(attempts, {
          x1: (a) => a.t0 / unit.per,
          x2: (a) => (a.t1 === null ? last : a.t1) / unit.per,  // running: until the latest
          y: "lane", fill: "st", className: "attempt",
          channels: { run: "run", attempt: "n" }, tip: true,
        }),
      ],
    }));
  }

  // -- durations ---------------------------------------------------------------------------

  function durations(box) {
    const runs = data.runs.filter((r) => typeof r.dur === "number");
    if (runs.length === 0) {
      box.replaceChildren(el("p", "no run has a duration", "dim"));
      return;
    }
    const unit = timeUnit(most(runs.map((r) => r.dur)));
    box.replaceChildren(Plot.plot({
      width: chartWidth,
      height: 240,
      x: { label: "duration (" + unit.name + ")" },
      y: { label: "runs", grid: true },
      color: statusColour(runs.map((r) => r.st)),
      marks: [
        Plot.rectY(runs, Plot.binX({ y: "count" },
          { x: (r) => r.dur / unit.per, fill: "st", className: "duration", tip: true })),
        Plot.ruleY([0]),
      ],
    }));
  }

  function drawAll() {
    chartWidth = Math.max(480, Math.min(960, $("charts").clientWidth || 960));
    safely($("cell-charts"), () => cellCharts($("cell-charts")));
    safely($("timeline"), () => timeline($("timeline")));
    safely($("durations"), () => durations($("durations")));
    document.body.dataset.charts = "drawn";
  }

  // After the page's first frame: the run table shows at once, the charts a moment later
  // (10,000 attempts are 10,000 rects to lay out).
  requestAnimationFrame(() => setTimeout(drawAll, 0));
})();
