// The run table: filters, sorting and paging over the JSON blob in #report-data.
// Every value is set with textContent (never innerHTML): run output stays text.
"use strict";
(function () {
  const PAGE_SIZE = 100;
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const runs = data.runs;
  const state = { page: 0, sortKey: null, sortDir: 1, filters: {}, text: "" };
  const $ = (id) => document.getElementById(id);
  const el = (tag, text, cls) => {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  };
  const columns = [
    { key: "id", label: "run", get: (r) => r.id },
    { key: "job", label: "job", get: (r) => r.job },
    { key: "fw", label: "framework", get: (r) => r.fw },
    ...data.matrix.map((name, i) => ({ key: "m" + i, label: name, get: (r) => r.m[i] })),
    ...data.recorded.map((name, i) => ({ key: "r" + i, label: name, get: (r) => r.rec[i] })),
    { key: "st", label: "status", get: (r) => r.st },
    { key: "att", label: "attempts", get: (r) => r.att },
    { key: "dur", label: "duration (s)", get: (r) => r.dur },
    { key: "exit", label: "exit", get: (r) => r.exit },
    { key: "err", label: "error", get: (r) => r.err },
    { key: "links", label: "logs and artifacts", get: () => null, nosort: true },
  ];

  function lower(run) {
    if (run._text === undefined) {
      run._text = [run.id, run.job, run.fw, run.st, run.err || "", run.tail || "",
        run.note || "", ...run.m, ...run.rec].join("\n").toLowerCase();
    }
    return run._text;
  }

  function matches(run) {
    for (const [key, value] of Object.entries(state.filters)) {
      if (value === "") continue;
      const got = key.startsWith("m") ? run.m[Number(key.slice(1))] : run[key];
      if (String(got) !== value) return false;
    }
    return state.text === "" || lower(run).includes(state.text);
  }

  function compare(a, b) {
    if (a === b) return 0;
    if (a === null || a === undefined) return 1;
    if (b === null || b === undefined) return -1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), undefined, { numeric: true });
  }

  function selected() {
    const chosen = runs.filter(matches);
    if (state.sortKey !== null) {
      const column = columns.find((c) => c.key === state.sortKey);
      chosen.sort((x, y) => state.sortDir * compare(column.get(x), column.get(y)));
    }
    return chosen;
  }

  function link(href, text) {
    const a = el("a", text);
    a.setAttribute("href", href);
    return a;
  }

  function linksCell(run) {
    const td = el("td", null, "links");
    if (run.dir === null) {
      td.appendChild(el("span", "no logs", "dim"));
      return td;
    }
    for (const name of ["console.log", "stdout.log", "stderr.log"]) {
      td.appendChild(link(run.dir + "/" + name, name.replace(".log", "")));
    }
    for (const name of run.art) {
      const path = name.split("/").map(encodeURIComponent).join("/");
      td.appendChild(link(run.dir + "/" + path, name));
    }
    if (run.nart > run.art.length) {
      td.appendChild(el("span", "+" + (run.nart - run.art.length) + " more", "dim"));
    }
    td.appendChild(link(run.dir + "/", "dir"));
    return td;
  }

  function row(run) {
    const tr = el("tr");
    tr.dataset.run = run.id;
    for (const column of columns) {
      if (column.key === "links") {
        tr.appendChild(linksCell(run));
        continue;
      }
      const value = column.get(run);
      if (column.key === "st") {
        const td = el("td");
        td.appendChild(el("span", value, "st st-" + value));
        tr.appendChild(td);
      } else if (column.key === "err") {
        const td = el("td", value, "err");
        if (run.note) td.appendChild(el("div", run.note, "dim"));
        if (run.tail) {
          const details = el("details");
          details.open = true;  // shown inline; a click folds it
          details.appendChild(el("summary", "stderr (tail)"));
          details.appendChild(el("pre", run.tail, "tail"));
          td.appendChild(details);
        }
        tr.appendChild(td);
      } else if (column.key === "dur") {
        tr.appendChild(el("td", value === null ? "" : value.toFixed(1)));
      } else {
        tr.appendChild(el("td", value));
      }
    }
    return tr;
  }

  function render() {
    const chosen = selected();
    const pages = Math.max(1, Math.ceil(chosen.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    const start = state.page * PAGE_SIZE;
    const body = $("run-body");
    const fragment = document.createDocumentFragment();
    for (const run of chosen.slice(start, start + PAGE_SIZE)) fragment.appendChild(row(run));
    body.replaceChildren(fragment);
    const end = Math.min(start + PAGE_SIZE, chosen.length);
    $("shown").textContent = chosen.length === 0
      ? "no run matches (" + runs.length + " runs)"
      : "showing " + (start + 1) + "–" + end + " of " + chosen.length + " matching runs (" +
        runs.length + " in the batch)";
    $("page").textContent = "page " + (state.page + 1) + " of " + pages;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
    document.body.dataset.ready = "true";
  }

  function header() {
    const head = $("run-head");
    for (const column of columns) {
      const th = el("th", column.label);
      if (!column.nosort) {
        th.addEventListener("click", () => {
          state.sortDir = state.sortKey === column.key ? -state.sortDir : 1;
          state.sortKey = column.key;
          for (const other of head.children) other.className = "";
          th.className = state.sortDir === 1 ? "sorted-asc" : "sorted-desc";
          render();
        });
      }
      head.appendChild(th);
    }
  }

  function fillSelect(select, values) {
    for (const value of values) select.appendChild(el("option", value)).value = value;
    select.addEventListener("change", () => {
      state.filters[select.dataset.key] = select.value;
      state.page = 0;
      render();
    });
  }

  function distinct(get) {
    return [...new Set(runs.map(get))].sort((a, b) => compare(a, b));
  }

  function filters() {
    const present = new Set(runs.map((r) => r.st));
    fillSelect($("f-status"), data.statuses.filter((s) => present.has(s)));
    fillSelect($("f-job"), distinct((r) => r.job));
    fillSelect($("f-fw"), distinct((r) => r.fw));
    data.matrix.forEach((name, i) => {
      const label = el("label", name + " ");
      const select = el("select");
      select.dataset.key = "m" + i;
      select.id = "f-m" + i;
      select.appendChild(el("option", "all")).value = "";
      fillSelect(select, distinct((r) => r.m[i]));
      label.appendChild(select);
      $("f-matrix").appendChild(label);
    });
    let pending = null;
    $("f-text").addEventListener("input", (event) => {
      clearTimeout(pending);  // one render per pause in typing, not per key
      pending = setTimeout(() => {
        state.text = event.target.value.trim().toLowerCase();
        state.page = 0;
        render();
      }, 120);
    });
    $("prev").addEventListener("click", () => { state.page -= 1; render(); });
    $("next").addEventListener("click", () => { state.page += 1; render(); });
  }

  header();
  filters();
  render();
})();
