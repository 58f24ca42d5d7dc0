// The framestream console: one EventSource on v1/console/events (snapshots of every source and
// stage about once a second, label and status changes as they happen), forms that call the API.
// A `token` in the page's own URL goes with every request (Authorization: Bearer on fetch,
// ?token= where a header cannot be set: the EventSource and the thumbnail images).

const token = new URLSearchParams(location.search).get("token");
const THUMBNAIL_EVERY_MS = 1000;
const TIMELINE_MAX = 200;
const RECONNECT_MS = 3000;
const DASH = "\u2013";

const $ = (selector) => document.querySelector(selector);

function withToken(url) {
  if (!token) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}

async function api(method, path, body) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!response.ok) {
    let reason = `${response.status} ${response.statusText}`;
    try { reason = (await response.json()).error || reason; } catch { /* not JSON */ }
    throw new Error(reason);
  }
  return response.status === 204 ? null : response.json();
}

function say(text, kind = "info") {
  const box = $("#message");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = !text;
}

function show(value, digits) {
  if (value === null || value === undefined || value === "") return DASH;
  if (typeof value === "number" && digits !== undefined) return value.toFixed(digits);
  return String(value);
}

function cell(row, field, text, cls) {
  let td = row.querySelector(`td[data-field="${field}"]`);
  if (!td) {
    td = document.createElement("td");
    td.dataset.field = field;
    if (cls) td.className = cls;
    row.appendChild(td);
  }
  if (td.textContent !== text) td.textContent = text;
  return td;
}

// -- sources ---------------------------------------------------------------------------------

const thumbnails = new Map(); // source id -> {img, loading, lastMs, frames}

function thumbnailCell(row, source) {
  let td = row.querySelector('td[data-field="thumb"]');
  if (!td) {
    td = document.createElement("td");
    td.dataset.field = "thumb";
    const img = document.createElement("img");
    img.className = "thumb none";
    img.alt = `latest frame of ${source.id}`;
    const state = { img, loading: false, lastMs: 0, frames: null };
    img.addEventListener("load", () => { state.loading = false; img.classList.remove("none"); });
    img.addEventListener("error", () => { state.loading = false; img.classList.add("none"); });
    thumbnails.set(source.id, state);
    td.appendChild(img);
    row.appendChild(td);
  }
  const state = thumbnails.get(source.id);
  const frames = source.frames ?? source.next_seq;
  const now = Date.now();
  // at most once a second, one request at a time, and only while new frames arrive
  if (!state.loading && now - state.lastMs >= THUMBNAIL_EVERY_MS && frames !== state.frames) {
    state.loading = true;
    state.lastMs = now;
    state.frames = frames;
    state.img.src = withToken(`v1/sources/${encodeURIComponent(source.id)}/thumbnail?t=${now}`);
  }
}

function removeButton(row, source) {
  let td = row.querySelector('td[data-field="actions"]');
  if (td) return;
  td = document.createElement("td");
  td.dataset.field = "actions";
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Remove";
  button.className = "remove";
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api("DELETE", `v1/sources/${encodeURIComponent(source.id)}`);
      say(`source ${source.id} removed: its ingest replica stops it`);
    } catch (e) {
      say(`removing ${source.id} failed: ${e.message}`, "error");
      button.disabled = false;
    }
  });
  td.appendChild(button);
  row.appendChild(td);
}

function statusText(source) {
  if (!source.status) return DASH;
  return source.reason ? `${source.status}: ${source.reason}` : source.status;
}

function renderSources(sources) {
  const body = $("#sources tbody");
  const seen = new Set();
  for (const source of sources) {
    seen.add(source.id);
    let row = body.querySelector(`tr[data-source="${CSS.escape(source.id)}"]`);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.source = source.id;
      body.appendChild(row);
    }
    thumbnailCell(row, source);
    if (!row.querySelector('td[data-field="id"]')) {
      const id = Object.assign(document.createElement("td"), { className: "id" });
      id.dataset.field = "id";
      id.append(source.id, Object.assign(document.createElement("small"), { textContent: source.uri ?? "" }));
      row.appendChild(id);
    }
    cell(row, "status", statusText(source)).className = source.status ? `status-${source.status}` : "";
    cell(row, "frames", show(source.frames ?? source.next_seq), "num");
    cell(row, "fps", show(source.fps, 1), "num");
    cell(row, "dropped", show(source.dropped), "num");
    cell(row, "reconnects", show(source.reconnects), "num");
    cell(row, "age", source.last_frame_age_s == null ? DASH : `${source.last_frame_age_s.toFixed(1)} s ago`, "num");
    cell(row, "label", show(source.label)).dataset.seq = source.result_seq ?? "";
    cell(row, "score", show(source.score, 3), "num");
    removeButton(row, source);
  }
  for (const row of [...body.querySelectorAll("tr[data-source]")]) {
    if (!seen.has(row.dataset.source)) {
      thumbnails.delete(row.dataset.source);
      row.remove();
    }
  }
  $("#no-sources").hidden = sources.length > 0;
}

// -- stages ----------------------------------------------------------------------------------

function renderStages(stages) {
  const body = $("#stages tbody");
  const seen = new Set();
  for (const stage of stages) {
    seen.add(stage.stage);
    let row = body.querySelector(`tr[data-stage="${CSS.escape(stage.stage)}"]`);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.stage = stage.stage;
      body.appendChild(row);
    }
    cell(row, "stage", stage.stage, "id");
    cell(row, "replicas", show(stage.replicas), "num");
    cell(row, "fps", show(stage.fps, 1), "num");
    cell(row, "lag", show(stage.lag), "num");
    cell(row, "dead_letters", show(stage.dead_letters), "num");
  }
  for (const row of [...body.querySelectorAll("tr[data-stage]")]) {
    if (!seen.has(row.dataset.stage)) row.remove();
  }
}

// -- models ----------------------------------------------------------------------------------
// GET v1/models every few seconds and after each change; the buttons call the admin routes
// (activate, rollback, shadow, promote). A change shows in the table once Infer follows it.

const MODELS_EVERY_MS = 5000;
const models = { reading: false };

function rates(perVersion) {
  const entries = Object.entries(perVersion ?? {});
  if (!entries.length) return DASH;
  return entries.map(([v, r]) => (entries.length > 1 ? `v${v}: ${r.toFixed(1)}` : r.toFixed(1))).join(", ");
}

function agreementText(agreement) {
  if (!agreement) return DASH;
  if (!agreement.frames) return "no frames compared yet";
  const share = `${(100 * agreement.top1_agreement).toFixed(1)}% of ${agreement.frames} frames`;
  const top = agreement.disagreements[0];
  const worst = top ? `; most often ${top.active} \u2192 ${top.shadow} (${top.frames})` : "";
  const cost = agreement.shadow_infer_ms == null ? "" : `; ${agreement.shadow_infer_ms.toFixed(2)} ms/frame`;
  return share + worst + cost;
}

async function changeModel(name, action, body) {
  try {
    const now = await api("POST", `v1/models/${encodeURIComponent(name)}/${action}`, body);
    const shadow = now.shadow == null ? "" : `, shadow version ${now.shadow}`;
    say(`${name}: version ${now.active} serves${shadow} (Infer follows within seconds)`);
  } catch (e) {
    say(`${action} ${name} failed: ${e.message}`, "error");
  }
  readModels();
}

function modelControls(row, model) {
  let td = row.querySelector('td[data-field="actions"]');
  if (!td) {
    td = document.createElement("td");
    td.dataset.field = "actions";
    const pick = Object.assign(document.createElement("select"), { className: "version" });
    td.appendChild(pick);
    const version = () => Number(pick.value);
    const buttons = [
      ["Activate", "activate", () => ({ version: version() })],
      ["Shadow", "shadow", () => ({ version: version() })],
      ["Stop shadow", "shadow", () => ({ version: null })],
      ["Promote", "promote", () => undefined],
      ["Rollback", "rollback", () => undefined],
    ];
    for (const [text, action, body] of buttons) {
      const button = Object.assign(document.createElement("button"), { type: "button", textContent: text });
      button.className = text.toLowerCase().replace(" ", "-");
      button.addEventListener("click", async () => {
        button.disabled = true;
        try { await changeModel(model.name, action, body()); } finally { button.disabled = false; }
      });
      td.appendChild(button);
    }
    row.appendChild(td);
  }
  const pick = td.querySelector("select.version");
  const wanted = (model.versions ?? []).map(String);
  if ([...pick.options].map((o) => o.value).join() !== wanted.join()) {
    pick.replaceChildren(...wanted.map((v) => Object.assign(document.createElement("option"), { value: v, textContent: `v${v}` })));
  }
}

function renderModels(list) {
  const body = $("#models tbody");
  const seen = new Set();
  for (const model of list) {
    seen.add(model.name);
    let row = body.querySelector(`tr[data-model="${CSS.escape(model.name)}"]`);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.model = model.name;
      body.appendChild(row);
    }
    cell(row, "name", model.name, "id");
    cell(row, "versions", model.error ?? (model.versions ?? []).join(", "));
    cell(row, "active", show(model.active), "num");
    cell(row, "shadow", show(model.shadow), "num");
    cell(row, "classes", show(model.classes), "num");
    cell(row, "fps", rates(model.frames_per_s), "num");
    cell(row, "agreement", agreementText(model.agreement));
    modelControls(row, model);
  }
  for (const row of [...body.querySelectorAll("tr[data-model]")]) {
    if (!seen.has(row.dataset.model)) row.remove();
  }
  $("#no-models").hidden = list.length > 0;
}

async function readModels() {
  if (models.reading) return;
  models.reading = true;
  try {
    renderModels((await api("GET", "v1/models")).models);
  } catch (e) {
    say(`reading the models failed: ${e.message}`, "error");
  } finally {
    models.reading = false;
  }
}

// -- sinks -----------------------------------------------------------------------------------

function lastError(sink) {
  if (!sink.last_error) return DASH;
  const when = sink.last_error_ms ? new Date(sink.last_error_ms).toLocaleTimeString() : "";
  return when ? `${when}: ${sink.last_error}` : sink.last_error;
}

function renderSinks(sinks) {
  const body = $("#sinks tbody");
  const seen = new Set();
  for (const sink of sinks) {
    seen.add(sink.name);
    let row = body.querySelector(`tr[data-sink="${CSS.escape(sink.name)}"]`);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.sink = sink.name;
      body.appendChild(row);
    }
    cell(row, "name", sink.name, "id");
    cell(row, "kind", sink.kind);
    cell(row, "delivered", show(sink.delivered), "num");
    cell(row, "retries", show(sink.retries), "num");
    cell(row, "backlog", show(sink.backlog), "num");
    cell(row, "dead_letters", show(sink.dead_letters), "num");
    cell(row, "last_error", lastError(sink), "error");
  }
  for (const row of [...body.querySelectorAll("tr[data-sink]")]) {
    if (!seen.has(row.dataset.sink)) row.remove();
  }
  $("#no-sinks").hidden = sinks.length > 0;
}

// -- dead letters ---------------------------------------------------------------------------
// Read again when the snapshot's dead-letter counts change and after a retry; nothing else polls.

const DEAD_LETTERS_SHOWN = 50;
const deadLetters = { counted: null, reading: null, again: false, fetchedMs: 0 };

function deadLetterButton(td, text, cls, action) {
  const button = Object.assign(document.createElement("button"), { type: "button", textContent: text, className: cls });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try { await action(); } finally { button.disabled = false; }
  });
  td.appendChild(button);
}

async function showDeadLetter(id) {
  const detail = $("#dead-letter-detail");
  try {
    detail.textContent = JSON.stringify(await api("GET", `v1/dead-letters/${encodeURIComponent(id)}`), null, 2);
    detail.dataset.id = id;
    detail.hidden = false;
  } catch (e) {
    say(`showing dead letter ${id} failed: ${e.message}`, "error");
  }
}

async function retryDeadLetter(id) {
  try {
    const outcome = await api("POST", `v1/dead-letters/${encodeURIComponent(id)}/retry`);
    say(`dead letter ${id} retried: back on ${outcome.stream} as ${outcome.new_id}`);
    if ($("#dead-letter-detail").dataset.id === id) $("#dead-letter-detail").hidden = true;
  } catch (e) {
    say(`retrying dead letter ${id} failed: ${e.message}`, "error");
  }
  readDeadLetters();
}

function deadLetterAge(letter) {
  return `${Math.round(letter.age_s + (Date.now() - deadLetters.fetchedMs) / 1000)} s ago`;
}

function renderDeadLetters(listing) {
  const body = $("#dead-letters tbody");
  const rows = [];
  for (const letter of [...listing.dead_letters].reverse()) { // newest first
    let row = body.querySelector(`tr[data-id="${CSS.escape(letter.id)}"]`);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.id = letter.id;
      const actions = document.createElement("td");
      actions.dataset.field = "actions";
      deadLetterButton(actions, "Show", "show", () => showDeadLetter(letter.id));
      if (letter.retryable) deadLetterButton(actions, "Retry", "retry", () => retryDeadLetter(letter.id));
      for (const field of ["id", "stage", "reason", "source", "seq", "age"]) cell(row, field, "", field === "seq" || field === "age" ? "num" : "");
      row.appendChild(actions);
    }
    row.letter = letter;
    for (const field of ["id", "stage", "reason", "source", "seq"]) cell(row, field, show(letter[field]));
    cell(row, "age", deadLetterAge(letter));
    rows.push(row);
  }
  body.replaceChildren(...rows);
  $("#dead-letters-total").textContent = listing.total > rows.length ? `(newest ${rows.length} of ${listing.total})` : "";
  $("#no-dead-letters").hidden = rows.length > 0;
  $("#dead-letters").dataset.total = listing.total;
}

async function readDeadLetters() {
  if (deadLetters.reading) { deadLetters.again = true; return; } // one request at a time
  deadLetters.reading = api("GET", `v1/dead-letters?limit=${DEAD_LETTERS_SHOWN}`);
  try {
    const listing = await deadLetters.reading;
    deadLetters.fetchedMs = Date.now();
    renderDeadLetters(listing);
  } catch (e) {
    say(`reading the dead letters failed: ${e.message}`, "error");
  } finally {
    deadLetters.reading = null;
  }
  if (deadLetters.again) { deadLetters.again = false; readDeadLetters(); }
}

function noteDeadLetterCounts(stages) {
  const counted = stages.map((s) => `${s.stage}=${s.dead_letters ?? 0}`).join(",");
  if (counted !== deadLetters.counted) {
    deadLetters.counted = counted;
    readDeadLetters();
  }
  for (const row of $("#dead-letters tbody").children) cell(row, "age", deadLetterAge(row.letter));
}

// -- timeline --------------------------------------------------------------------------------

function describe(event) {
  const kind = event.kind || event.type;
  if (kind === "label_change" && event.labels) {  // a multi-label model: the set of labels on
    return `${event.source}: ${event.labels.length ? event.labels.join(", ") : DASH}`;
  }
  if (kind === "label_change") return `${event.source}: ${event.previous ?? DASH} \u2192 ${event.label}`;
  const why = event.reason ? ` (${event.reason})` : "";
  return `${event.source}: ${event.status ?? kind}${why}`;
}

function addToTimeline(event) {
  const list = $("#timeline");
  const item = document.createElement("li");
  item.dataset.kind = event.kind || event.type || "";
  item.dataset.source = event.source ?? "";
  const when = event.result_ms ?? event.ts_ms ?? Date.now();
  const time = document.createElement("time");
  time.dateTime = new Date(when).toISOString();
  time.textContent = new Date(when).toLocaleTimeString();
  item.append(time, describe(event));
  list.prepend(item);
  while (list.children.length > TIMELINE_MAX) list.lastChild.remove();
}

// -- segments --------------------------------------------------------------------------------
// One band per source: its segments (runs of one smoothed label) over the last SEGMENT_WINDOW_MS
// of capture time (less while there is less to show, at least MIN_WINDOW_MS), coloured by label. The open segment comes with every snapshot (it grows as
// frames arrive); the closed ones are read from v1/sources/{id}/segments when the open segment
// changes (a segment closed), from where the page read up to last time.

const SEGMENT_WINDOW_MS = 5 * 60 * 1000;
const MIN_WINDOW_MS = 30 * 1000;
const SEGMENTS_PAGE = 1000;
const BAND_WIDTH = 1000; // viewBox units of a band
const segmentState = new Map(); // source id -> {closed, open, afterSeq, openFirst, reading, again}

function labelColour(label) {
  let hash = 0;
  for (const ch of String(label)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${hash % 360}, 62%, ${45 + (hash >> 9) % 20}%)`;
}

async function readSegments(id) {
  const state = segmentState.get(id);
  if (!state) return;
  if (state.reading) { state.again = true; return; }
  state.reading = true;
  try {
    for (;;) {
      const page = await api("GET", `v1/sources/${encodeURIComponent(id)}/segments?after_seq=${state.afterSeq}&limit=${SEGMENTS_PAGE}`);
      state.closed.push(...page.segments);
      state.afterSeq = page.next_after_seq;
      if (page.segments.length < SEGMENTS_PAGE) break;
    }
  } catch (e) {
    if (!String(e.message).includes("no source")) say(`reading the segments of ${id} failed: ${e.message}`, "error");
  } finally {
    state.reading = false;
  }
  if (state.again) { state.again = false; readSegments(id); }
  renderSegments();
}

function noteSegments(sources) {
  const seen = new Set();
  for (const source of sources) {
    seen.add(source.id);
    let state = segmentState.get(source.id);
    if (!state) {
      state = { closed: [], open: null, afterSeq: -1, openFirst: undefined, reading: false, again: false };
      segmentState.set(source.id, state);
    }
    state.open = source.segment ?? null;
    const first = state.open ? state.open.first_seq : null;
    if (first !== state.openFirst) { // a segment closed (or the first opened): read what closed
      state.openFirst = first;
      readSegments(source.id);
    }
  }
  for (const id of [...segmentState.keys()]) if (!seen.has(id)) segmentState.delete(id);
  renderSegments();
}

function svgElement(name, attributes) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

function segmentTitle(segment) {
  const when = (ms) => (ms == null ? DASH : new Date(ms).toLocaleTimeString());
  const state = segment.open ? "open" : `closed by ${segment.closed_by}`;
  return `${segment.label}: ${when(segment.start_ms)} ${DASH} ${when(segment.end_ms)}, seq ${segment.first_seq}${DASH}${segment.last_seq}, ` +
    `${segment.frames} frames, mean score ${show(segment.score, 3)} (${state})`;
}

function renderSegments() {
  const all = [...segmentState.values()].flatMap((s) => [...s.closed, ...(s.open ? [s.open] : [])]);
  const newest = Math.max(...all.map((s) => s.end_ms ?? -Infinity));
  const oldest = Math.min(...all.map((s) => s.start_ms ?? Infinity));
  const span = Math.min(SEGMENT_WINDOW_MS, Math.max(MIN_WINDOW_MS, newest - oldest));
  const bands = $("#bands");
  const legend = new Set();
  const rows = [];
  for (const [id, state] of [...segmentState.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    if (Number.isFinite(newest)) { // forget what scrolled out of the window
      state.closed = state.closed.filter((s) => s.end_ms == null || s.end_ms >= newest - SEGMENT_WINDOW_MS);
    }
    let row = bands.querySelector(`.band-row[data-source="${CSS.escape(id)}"]`);
    if (!row) {
      row = Object.assign(document.createElement("div"), { className: "band-row" });
      row.dataset.source = id;
      row.append(Object.assign(document.createElement("span"), { className: "band-name", textContent: id, title: id }),
        svgElement("svg", { class: "band", viewBox: `0 0 ${BAND_WIDTH} 20`, preserveAspectRatio: "none" }));
    }
    const svg = row.querySelector("svg");
    const shown = [...state.closed, ...(state.open ? [state.open] : [])].filter((s) => s.start_ms != null && s.end_ms != null);
    const rects = shown.map((segment, i) => {
      const next = shown[i + 1];
      // up to where the next segment starts when it follows on (no gap of one frame between them)
      const end = next && next.first_seq === segment.last_seq + 1 ? next.start_ms : segment.end_ms;
      const x0 = Math.max(0, (segment.start_ms - (newest - span)) / span * BAND_WIDTH);
      const x1 = Math.max(x0, (end - (newest - span)) / span * BAND_WIDTH);
      legend.add(segment.label);
      const rect = svgElement("rect", {
        class: "segment", x: x0.toFixed(2), y: 0, width: Math.max(x1 - x0, 1).toFixed(2), height: 20,
        fill: labelColour(segment.label), "data-label": segment.label, "data-id": segment.id,
        "data-first-seq": segment.first_seq, "data-last-seq": segment.last_seq,
        "data-frames": segment.frames, "data-open": String(Boolean(segment.open)),
      });
      rect.append(Object.assign(svgElement("title", {}), { textContent: segmentTitle(segment) }));
      return rect;
    });
    svg.replaceChildren(...rects);
    rows.push(row);
  }
  bands.replaceChildren(...rows);
  $("#band-newest").textContent = Number.isFinite(newest) ? new Date(newest).toLocaleTimeString() : "";
  $("#band-span").textContent = Number.isFinite(span) ? `\u2212${span >= 60000 ? `${(span / 60000).toFixed(1)} min` : `${Math.round(span / 1000)} s`}` : "";
  $("#segment-legend").replaceChildren(...[...legend].sort().map((label) => {
    const item = document.createElement("li");
    item.dataset.label = label;
    const swatch = document.createElement("i");
    swatch.style.background = labelColour(label);
    item.append(swatch, label);
    return item;
  }));
  $("#no-segments").hidden = all.length > 0;
}

// -- charts: frames/s out and p99 latency of the last minutes, one point per snapshot ----------

const CHART_WINDOW_MS = 5 * 60 * 1000;
const chartHistory = []; // {t, fps, p99}: one per snapshot

function drawChart(svg, points) {
  const line = svg.querySelector("polyline");
  const [width, height] = [300, 60];
  const top = Math.max(1e-9, ...points.map((p) => p.v)) * 1.1;
  const now = Date.now();
  const span = Math.min(CHART_WINDOW_MS, Math.max(MIN_WINDOW_MS, now - (chartHistory.length ? chartHistory[0].t : now)));
  line.setAttribute("points", points.map((p) =>
    `${((p.t - (now - span)) / span * width).toFixed(1)},${(height - p.v / top * height).toFixed(1)}`).join(" "));
  line.dataset.points = points.length;
}

function noteCharts(snapshot) {
  const now = Date.now();
  const out = snapshot.stages.find((s) => s.stage === "postprocess");
  chartHistory.push({ t: now, fps: out ? out.fps : null, p99: snapshot.latency_p99_ms });
  while (chartHistory.length && chartHistory[0].t < now - CHART_WINDOW_MS) chartHistory.shift();
  const fps = chartHistory.filter((h) => h.fps != null).map((h) => ({ t: h.t, v: h.fps }));
  const p99 = chartHistory.filter((h) => h.p99 != null).map((h) => ({ t: h.t, v: h.p99 }));
  drawChart($("#fps-chart"), fps);
  drawChart($("#p99-chart"), p99);
  $("#fps-now").textContent = fps.length ? `${fps[fps.length - 1].v.toFixed(1)}` : DASH;
  $("#p99-now").textContent = p99.length ? `${p99[p99.length - 1].v.toFixed(0)} ms` : DASH;
}

// -- the feed --------------------------------------------------------------------------------

function connect() {
  const feed = new EventSource(withToken("v1/console/events"));
  const state = $("#connection");
  feed.addEventListener("open", () => { state.textContent = "live"; state.dataset.state = "live"; });
  feed.addEventListener("error", (e) => {
    // EventSource reconnects by itself after a stream ends; the next "timeline" event replaces
    // the list. After an error status (503: Redis away) it gives up, so we open a new one.
    state.textContent = "reconnecting";
    state.dataset.state = "down";
    if (e.data) say(`live feed: ${JSON.parse(e.data).error}`, "error");
    if (feed.readyState === EventSource.CLOSED) setTimeout(connect, RECONNECT_MS);
  });
  feed.addEventListener("timeline", (e) => {
    $("#timeline").replaceChildren();
    for (const event of JSON.parse(e.data).events) addToTimeline(event);
  });
  feed.addEventListener("snapshot", (e) => {
    const snapshot = JSON.parse(e.data);
    $("#model").textContent = `model ${snapshot.model}`;
    renderSources(snapshot.sources);
    renderStages(snapshot.stages);
    renderSinks(snapshot.sinks ?? []);
    noteDeadLetterCounts(snapshot.stages);
    noteSegments(snapshot.sources);
    noteCharts(snapshot);
  });
  for (const kind of ["label_change", "source_status"]) {
    feed.addEventListener(kind, (e) => addToTimeline(JSON.parse(e.data)));
  }
}

function formSource(form) {
  const data = new FormData(form);
  const body = { uri: data.get("uri").trim(), loop: data.has("loop"), realtime: data.has("realtime") };
  if (data.get("id")) body.id = data.get("id").trim();
  if (data.get("target_fps")) body.target_fps = Number(data.get("target_fps"));
  if (data.get("live")) body.live = data.get("live") === "true";
  return body;
}

$("#add-source").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.currentTarget;
  try {
    const added = await api("POST", "v1/sources", formSource(form));
    say(`source ${added.id} added: an ingest replica starts it`);
    form.reset();
  } catch (err) {
    say(`adding the source failed: ${err.message}`, "error");
  }
});

if (token) {
  for (const link of [$("#docs-link"), $("#openapi-link")]) link.href = withToken(link.getAttribute("href"));
}
connect();
readModels();
setInterval(readModels, MODELS_EVERY_MS);
