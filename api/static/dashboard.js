// livelab dashboard: talks to this server's /v1 API with the key the user signed in with.
// Plain JavaScript, no build step; plotly.js (window.Plotly) draws the chart.
"use strict";

(() => {
  const KEY_STORE = "livelab.key";  // sessionStorage: gone when the tab closes
  // The ranges offered, with the bucket each is drawn in (72 to 365 buckets).
  const RANGES = { "6h": [6 * 3600e3, "5m"], "24h": [86400e3, "15m"], "7d": [7 * 86400e3, "1h"],
                   "30d": [30 * 86400e3, "6h"], "1y": [365 * 86400e3, "1d"] };
  // The API's bucket sizes (a month counted as 30 days, as the API counts it).
  const BUCKETS = [["1m", 60e3], ["5m", 300e3], ["15m", 900e3], ["1h", 3600e3],
                   ["6h", 21600e3], ["1d", 86400e3], ["1w", 604800e3], ["1mo", 2592000e3]];
  const MAX_POINTS = 400;  // buckets per series on the chart, for a custom range
  const MAX_PLOTTED = 8;   // series on the chart at once
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
                  "#8c564b", "#e377c2"];
  const params = new URLSearchParams(location.search);
  const REFRESH_MS = 1000 * Math.max(1, Number(params.get("refresh")) || 10);
  const $ = (id) => document.getElementById(id);

  const state = {
    key: sessionStorage.getItem(KEY_STORE),
    labs: [], lab: null, zone: browserZone(),
    series: [], latest: new Map(), chosen: new Set(), rejections: [],
    timer: null, chart: null,
  };

  // ---------------------------------------------------------------------------------------
  // Pure helpers (also used by the browser tests through window.livelab)

  function browserZone() {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  }

  /** The smallest API bucket that keeps a custom range of `ms` ms within MAX_POINTS. */
  function bucketFor(ms) {
    for (const [name, len] of BUCKETS) if (ms / len <= MAX_POINTS) return name;
    return "1mo";
  }

  const formatters = new Map();
  /** "YYYY-MM-DD HH:MM:SS", the wall time of `date` in `zone`. */
  function wallTime(date, zone) {
    let f = formatters.get(zone);
    if (!f) {
      f = new Intl.DateTimeFormat("sv-SE", { timeZone: zone, year: "numeric", month: "2-digit",
        day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
      formatters.set(zone, f);
    }
    return f.format(date);
  }

  /** The instant whose wall time in `zone` is `text` ("YYYY-MM-DDTHH:MM", datetime-local). */
  function instantOfWallTime(text, zone) {
    const m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d))?/.exec(text);
    if (!m) return null;
    const asUtc = Date.UTC(+m[1], m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0));
    const offset = (t) => Date.parse(wallTime(new Date(t), zone).replace(" ", "T") + "Z") - t;
    let t = asUtc - offset(asUtc);
    t = asUtc - offset(t);  // once more, for a wall time near a DST change
    return new Date(t);
  }

  function age(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 90) return `${s} s`;
    if (s < 90 * 60) return `${Math.round(s / 60)} min`;
    if (s < 36 * 3600) return `${Math.round(s / 3600)} h`;
    return `${Math.round(s / 86400)} d`;
  }

  function csvText(header, rows) {
    const cell = (v) => {
      const text = v === null || v === undefined ? "" : String(v);
      return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
    };
    return [header, ...rows].map((r) => r.map(cell).join(",")).join("\n") + "\n";
  }

  const seriesKey = (device, sensor) => `${device}\u0000${sensor}`;

  // ---------------------------------------------------------------------------------------
  // The API

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  async function api(path, query = {}) {
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(query)) {
      for (const v of [].concat(value)) url.searchParams.append(name, v);
    }
    let resp;
    try {
      resp = await fetch(url, { headers: { Authorization: `Bearer ${state.key}` } });
    } catch (exc) {
      throw new ApiError(0, `the server did not answer (${exc.message})`);
    }
    if (!resp.ok) {
      let detail = `${resp.status} ${resp.statusText}`;
      try { detail = (await resp.json()).detail || detail; } catch { /* not JSON */ }
      throw new ApiError(resp.status, detail);
    }
    return resp;
  }
  const apiJson = async (path, query) => (await (await api(path, query)).json()).data;
  const labPath = (what) => `/v1/labs/${encodeURIComponent(state.lab)}/${what}`;

  function showError(el, message) {
    el.textContent = message;
    el.hidden = !message;
  }

  // ---------------------------------------------------------------------------------------
  // Sign-in

  async function signIn(key) {
    state.key = key;
    let labs;
    try {
      labs = await apiJson("/v1/labs");
    } catch (exc) {
      signOut();
      const why = exc.status === 401
        ? `Sign-in failed: ${exc.message}. Check the key and try again.`
        : `Sign-in failed: ${exc.message}`;
      showError($("sign-in-error"), why);
      $("key").focus();
      return;
    }
    sessionStorage.setItem(KEY_STORE, key);
    showError($("sign-in-error"), "");
    state.labs = labs;
    $("sign-in").hidden = true;
    $("board").hidden = false;
    $("whoami").hidden = false;
    $("whoami-text").textContent = `Key ${key.slice(0, 12)}… sees ${labs.length} `
      + (labs.length === 1 ? "lab" : "labs");
    const select = $("lab");
    select.replaceChildren(...labs.map((l) => new Option(
      `${l.lab} (${l.device_count} devices, ${l.reading_count} readings)`, l.lab)));
    if (!labs.length) {
      showError($("board-error"), "This key sees no labs yet.");
      return;
    }
    await chooseLab(labs[0].lab);
  }

  function signOut() {
    sessionStorage.removeItem(KEY_STORE);
    clearInterval(state.timer);
    Object.assign(state, { key: null, lab: null, series: [], chosen: new Set(), timer: null });
    $("board").hidden = true;
    $("whoami").hidden = true;
    $("sign-in").hidden = false;
    $("key").value = "";
  }

  // ---------------------------------------------------------------------------------------
  // A lab: series table, chart, rejections; the latest values refresh on a timer.

  async function chooseLab(lab) {
    state.lab = lab;
    $("lab").value = lab;
    state.chosen = new Set();
    clearInterval(state.timer);
    await refresh();
    // Plot the first sensor's series (of up to MAX_PLOTTED devices) to begin with.
    const first = state.series[0];
    if (first) {
      for (const s of state.series.filter((s) => s.sensor === first.sensor).slice(0, MAX_PLOTTED)) {
        state.chosen.add(seriesKey(s.device, s.sensor));
      }
    }
    renderSeries();
    await drawChart();
    state.timer = setInterval(refresh, REFRESH_MS);
  }

  async function refresh() {
    const lab = state.lab;
    try {
      const [series, latest, rejections] = await Promise.all([
        apiJson(labPath("sensors")), apiJson(labPath("latest")),
        apiJson(labPath("rejections"), { limit: 50 })]);
      if (lab !== state.lab) return;  // the user moved on meanwhile
      state.series = series;
      state.latest = new Map(latest.map((r) => [seriesKey(r.device, r.sensor), r]));
      state.rejections = rejections;
      showError($("board-error"), "");
      $("status").textContent = `Updated ${wallTime(new Date(), state.zone).slice(11)}`;
    } catch (exc) {
      if (exc.status === 401) { signOut(); showError($("sign-in-error"), exc.message); return; }
      showError($("board-error"), `Could not refresh: ${exc.message}`);
      return;
    }
    renderSeries();
    renderRejections();
  }

  function silentAfterMs() {
    return Math.max(1, Number($("silent-minutes").value) || 15) * 60e3;
  }

  function renderSeries() {
    const now = Date.now();
    const limit = silentAfterMs();
    // A device is silent when its newest reading, over all its series, is older than the limit.
    const lastByDevice = new Map();
    for (const s of state.series) {
      const t = s.last_reading ? Date.parse(s.last_reading) : -Infinity;
      lastByDevice.set(s.device, Math.max(lastByDevice.get(s.device) ?? -Infinity, t));
    }
    const silent = [...lastByDevice].filter(([, t]) => now - t > limit).map(([d]) => d);
    $("silent-summary").textContent = silent.length
      ? `${silent.length} of ${lastByDevice.size} devices silent for more than `
        + `${age(limit)}: ${silent.join(", ")}`
      : `All ${lastByDevice.size} devices reported within ${age(limit)}.`;
    const rows = state.series.map((s) => {
      const key = seriesKey(s.device, s.sensor);
      const last = state.latest.get(key);
      const tr = document.createElement("tr");
      const isSilent = silent.includes(s.device);
      tr.className = isSilent ? "silent" : "";
      tr.dataset.device = s.device;
      tr.dataset.sensor = s.sensor;
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = state.chosen.has(key);
      box.setAttribute("aria-label", `Plot ${s.device} ${s.sensor}`);
      box.addEventListener("change", () => {
        if (box.checked) state.chosen.add(key); else state.chosen.delete(key);
        drawChart();
      });
      const lastTime = last ? new Date(last.time) : null;
      const cells = [
        box, s.device, s.sensor, s.unit ?? "",
        last ? String(last.value) : "",
        lastTime ? wallTime(lastTime, state.zone) : "",
        lastTime ? age(now - lastTime) : "",
        String(s.reading_count),
      ];
      for (const [i, c] of cells.entries()) {
        const td = document.createElement("td");
        if (i === 4 || i === 7) td.className = "num";
        td.append(c);
        tr.append(td);
      }
      const badge = document.createElement("span");
      badge.className = `badge ${isSilent ? "silent" : "ok"}`;
      badge.textContent = isSilent ? "silent" : "reporting";
      const td = document.createElement("td");
      td.append(badge);
      tr.append(td);
      return tr;
    });
    $("series").tBodies[0].replaceChildren(...rows);
  }

  function renderRejections() {
    const rows = state.rejections.map((r) => {
      const tr = document.createElement("tr");
      for (const c of [wallTime(new Date(r.received_at), state.zone), r.device ?? "", r.topic,
                       r.reason, String(r.count ?? 1), String(r.rejected_count)]) {
        const td = document.createElement("td");
        td.textContent = c;
        tr.append(td);
      }
      return tr;
    });
    if (!rows.length) {
      const td = document.createElement("td");
      td.colSpan = 5;
      td.textContent = "No rejected messages.";
      rows.push(document.createElement("tr"));
      rows[0].append(td);
    }
    $("rejections").tBodies[0].replaceChildren(...rows);
  }

  // ---------------------------------------------------------------------------------------
  // The chart

  /** [start, end, bucket] of the chosen range, or null when a custom range is incomplete. */
  function chosenRange() {
    const value = document.querySelector("input[name=range]:checked").value;
    if (value !== "custom") {
      const [span, bucket] = RANGES[value];
      const end = new Date(Math.ceil(Date.now() / 60e3) * 60e3);  // the next full minute
      return [new Date(end - span), end, bucket];
    }
    const start = instantOfWallTime($("custom-start").value, state.zone);
    const end = instantOfWallTime($("custom-end").value, state.zone);
    return start && end && end > start ? [start, end, bucketFor(end - start)] : null;
  }

  function aggregateQuery(device, sensor, start, end, bucket) {
    return { start: start.toISOString(), end: end.toISOString(), bucket, tz: state.zone,
             stats: "avg,min,max,count", device, sensor, fill: "null" };
  }

  async function drawChart() {
    const range = chosenRange();
    const chosen = state.series.filter((s) => state.chosen.has(seriesKey(s.device, s.sensor)))
      .slice(0, MAX_PLOTTED);
    const links = $("chart-csv");
    links.replaceChildren();
    if (!range) {
      $("chart-summary").textContent = "Give a start and an end (in the chosen time zone).";
      return;
    }
    const [start, end, bucket] = range;
    if (!chosen.length) {
      $("chart-summary").textContent = "Tick a series in the table to plot it.";
      Plotly.purge($("chart"));
      return;
    }
    const drawing = Symbol("drawing");
    state.drawing = drawing;
    let answers;
    try {
      answers = await Promise.all(chosen.map((s) => apiJson(labPath("aggregates"),
        aggregateQuery(s.device, s.sensor, start, end, bucket))));
    } catch (exc) {
      showError($("board-error"), `Could not load the chart: ${exc.message}`);
      return;
    }
    if (state.drawing !== drawing) return;  // a newer drawing started meanwhile
    const traces = [];
    chosen.forEach((s, i) => {
      const rows = answers[i];
      const x = rows.map((r) => wallTime(new Date(r.bucket), state.zone));
      const color = COLORS[i % COLORS.length];
      const name = `${s.device} ${s.sensor}`;
      const group = seriesKey(s.device, s.sensor);
      traces.push(
        { name: `${name} min`, x, y: rows.map((r) => r.min), type: "scatter", mode: "lines",
          line: { width: 0, color }, legendgroup: group, showlegend: false, hoverinfo: "skip" },
        { name: `${name} min–max`, x, y: rows.map((r) => r.max), type: "scatter", mode: "lines",
          line: { width: 0, color }, fill: "tonexty", fillcolor: `${color}33`,
          legendgroup: group, showlegend: false, hoverinfo: "skip" },
        { name: `${name} avg`, x, y: rows.map((r) => r.avg), type: "scatter", mode: "lines",
          line: { width: 2, color }, legendgroup: group,
          hovertemplate: "%{x}<br>avg %{y}<extra>" + name + "</extra>" });
      const query = new URLSearchParams();
      for (const [k, v] of Object.entries(aggregateQuery(s.device, s.sensor, start, end,
        bucket))) query.append(k, v);
      query.set("format", "csv");
      const a = document.createElement("a");
      a.href = `${labPath("aggregates")}?${query}`;
      a.textContent = `CSV: ${name}`;
      a.download = `${state.lab}-${s.device}-${s.sensor}.csv`.replace(/[^\w.-]+/g, "_");
      a.addEventListener("click", (ev) => { ev.preventDefault(); downloadApiCsv(a); });
      links.append(a);
    });
    const units = [...new Set(chosen.map((s) => s.unit ?? ""))];
    const layout = {
      margin: { t: 10, r: 10, b: 40, l: 60 },
      xaxis: { type: "date", title: { text: `time (${state.zone})` } },
      yaxis: { title: { text: units.length === 1 ? units[0] : "" } },
      legend: { orientation: "h", y: -0.18 },
      hovermode: "x unified",
    };
    await Plotly.react($("chart"), traces, layout, { displaylogo: false, responsive: true });
    state.chart = { bucket, start: start.toISOString(), end: end.toISOString() };
    $("chart-summary").textContent = `${chosen.map((s) => `${s.device} ${s.sensor}`).join(", ")}`
      + `: average with min–max band per ${bucket}, from ${wallTime(start, state.zone)} to `
      + `${wallTime(end, state.zone)} (${state.zone}).`;
  }

  async function downloadApiCsv(a) {
    try {
      const blob = await (await api(a.getAttribute("href"))).blob();
      saveBlob(blob, a.download);
    } catch (exc) {
      showError($("board-error"), `Could not download the CSV: ${exc.message}`);
    }
  }

  function saveBlob(blob, name) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10e3);
  }

  function localCsv(name, header, rows) {
    saveBlob(new Blob([csvText(header, rows)], { type: "text/csv" }), name);
  }

  // ---------------------------------------------------------------------------------------
  // Wiring

  function fillZones() {
    const zones = Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : [];
    const browser = browserZone();
    const select = $("zone");
    select.replaceChildren(new Option(`Browser (${browser})`, browser),
      ...["UTC", ...zones.filter((z) => z !== "UTC")].map((z) => new Option(z, z)));
    const wanted = params.get("tz");
    if (wanted && [...select.options].some((o) => o.value === wanted)) select.value = wanted;
    state.zone = select.value;
  }

  function wire() {
    $("sign-in-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      signIn($("key").value.trim());
    });
    $("sign-out").addEventListener("click", signOut);
    $("lab").addEventListener("change", () => chooseLab($("lab").value));
    $("zone").addEventListener("change", () => {
      state.zone = $("zone").value;
      renderSeries();
      renderRejections();
      drawChart();
    });
    $("silent-minutes").addEventListener("change", renderSeries);
    $("controls").addEventListener("submit", (ev) => ev.preventDefault());
    $("range-form").addEventListener("change", (ev) => {
      const custom = document.querySelector("input[name=range]:checked").value === "custom";
      $("custom-range").hidden = !custom;
      if (custom && ev.target.name === "range") {
        const [start, end] = [new Date(Date.now() - 86400e3), new Date()];
        $("custom-start").value ||= wallTime(start, state.zone).slice(0, 16).replace(" ", "T");
        $("custom-end").value ||= wallTime(end, state.zone).slice(0, 16).replace(" ", "T");
      }
      if (!custom || ev.target.name === "range") drawChart();
    });
    $("range-form").addEventListener("submit", (ev) => { ev.preventDefault(); drawChart(); });
    $("series-csv").addEventListener("click", (ev) => {
      ev.preventDefault();
      localCsv(`${state.lab}-series.csv`,
        ["device", "sensor", "unit", "last_value", "last_reading", "reading_count"],
        state.series.map((s) => {
          const last = state.latest.get(seriesKey(s.device, s.sensor));
          return [s.device, s.sensor, s.unit, last?.value, s.last_reading, s.reading_count];
        }));
    });
    $("rejections-csv").addEventListener("click", (ev) => {
      ev.preventDefault();
      localCsv(`${state.lab}-rejections.csv`,
        ["received_at", "last_received_at", "device", "topic", "reason", "count",
         "rejected_count", "payload_size"],
        state.rejections.map((r) => [r.received_at, r.last_received_at, r.device, r.topic,
                                     r.reason, r.count, r.rejected_count, r.payload_size]));
    });
  }

  window.livelab = { state, bucketFor, wallTime, instantOfWallTime, csvText, drawChart };

  fillZones();
  wire();
  if (state.key) signIn(state.key);
})();
