// facelab ui: plain JS over the JSON API in facelab/ui/app.py. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { page: "faceset", status: null, selected: new Set(), faces: [], facesVersion: 0, extraction: null,
  train: { folder: null, loaded: null, previewMtime: null, options: [] },
  merge: { model: null, frames: [], index: 0, settings: null, options: [], version: 0 } };

// ------------------------------------------------------------------ helpers
function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body) };
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({ error: `${res.status} ${res.statusText}` }));
  if (!res.ok) {
    showError(data.error || `${res.status} ${res.statusText}`);
    throw new Error(data.error);
  }
  return data;
}

function typing(e) {
  return ["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName) && e.target.type !== "checkbox"
    && e.target.type !== "range";
}

function optionInput(o, value, onChange) {
  const label = document.createElement("label");
  label.title = o.help;
  const name = document.createElement("span");
  name.textContent = o.name + (o.locked ? " (fixed)" : "");
  let input;
  if (o.choices) {
    input = document.createElement("select");
    for (const c of o.choices) input.add(new Option(c, c));
    input.value = value;
  } else if (o.type === "bool") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = !!value;
  } else if (o.type === "str") {
    input = document.createElement("input");
    input.type = "text";
    input.value = value;
  } else {
    input = document.createElement("input");
    input.type = "number";
    input.step = o.type === "int" ? "1" : "any";
    if (o.range) { input.min = o.range[0]; input.max = o.range[1]; }
    input.value = value;
  }
  input.name = o.name;
  input.disabled = !!o.locked;
  input.addEventListener("change", () => onChange && onChange(o, readInput(o, input), input));
  const hint = document.createElement("small");
  hint.textContent = `${o.allowed}: ${o.help}`;
  label.append(name, input, hint);
  return label;
}

function readInput(o, input) {
  // Values go to the server as JSON of the option's type; it checks them and names the range.
  if (o.type === "bool") return input.checked;
  if ((o.type === "int" || o.type === "float") && input.value.trim() !== "") return Number(input.value);
  return input.value;
}

// ------------------------------------------------------------------ pages
function showPage(page) {
  state.page = page;
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== page;
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.page === page);
  if (page === "faceset") loadFaces();
  if (page === "merge") loadMerge();
  if (page === "xseg") loadXseg().catch(() => {});  // xseg.js
  if (page === "live") loadLive().catch(() => {});  // live.js
}

async function refreshStatus() {
  try {
    const s = await api("/api/status");
    const first = !state.status;
    state.status = s;
    $("workspace").textContent = s.workspace;
    if (first) {
      for (const m of s.sort_methods) $("fs-sort").add(new Option(m, m));
      // The extraction controls come from the same option specs as the CLI's flags.
      state.extractOptions = s.extract_options;
      $("fs-options").replaceChildren(...s.extract_options.map((o) => {
        const label = optionInput(o, o.default);
        label.querySelector("[name]").id = "fs-" + o.name.replace(/_/g, "-");
        label.querySelector("small").remove();
        return label;
      }));
      for (const k of s.model_kinds) $("tr-kind").add(new Option(k, k));
      $("tr-kind").value = "saehd";
    }
    $("tr-names").replaceChildren(...s.models.filter((m) => m.kind === $("tr-kind").value)
      .map((m) => new Option(m.name)));
    const current = $("mg-model").value;
    $("mg-model").replaceChildren(...s.models.filter((m) => m.class !== "XSeg")
      .map((m) => new Option(`${m.name} (${m.class})`, m.folder)));
    if (current) $("mg-model").value = current;
    $("mg-merged").textContent = `${s.merged} merged frames` + (s.result ? ", result.mp4 made" : "");
    $("mg-merged").dataset.merged = s.merged;
    $("mg-merged").dataset.result = s.result ? "1" : "0";
    $("mg-report").hidden = !s.report;
    renderJobs(s.jobs);
    if ($("error").textContent.startsWith("the workspace folder")) showError("");
  } catch (e) { /* shown in the banner */ }
}

function renderJobs(jobs) {
  const list = $("jobs-list");
  if (!jobs.length) { list.textContent = "none yet"; return; }
  list.replaceChildren(...jobs.map((j) => {
    const div = document.createElement("div");
    div.className = "job";
    div.dataset.command = j.command;
    div.dataset.running = j.running ? "1" : "0";
    const head = document.createElement("div");
    const status = j.running ? "running" : j.exit_code === 0 ? "done"
    : j.exit_code === null ? "ended" : `failed (exit ${j.exit_code})`;  // null: an earlier server's job
    head.innerHTML = `<b></b> <span></span>`;
    head.children[0].textContent = `${j.command} ${j.args.slice(0, 4).join(" ")}`;
    head.children[1].textContent = `${status}, ${Math.round(j.seconds)} s`;
    div.append(head);
    if (j.running && j.percent !== null) {
      const bar = document.createElement("progress");
      bar.max = 100; bar.value = j.percent;
      div.append(bar);
    }
    if (j.error) {
      const err = document.createElement("div");
      err.className = "err";
      err.textContent = j.error;
      div.append(err);
    }
    const pre = document.createElement("pre");
    pre.textContent = j.last.slice(-4).join("\n");
    div.append(pre);
    return div;
  }));
  const finished = jobs.filter((j) => !j.running).map((j) => j.id).join();
  if (state.finishedJobs !== undefined && finished !== state.finishedJobs && state.page === "faceset") loadFaces();
  state.finishedJobs = finished;
}

// ------------------------------------------------------------------ faceset
async function loadFaces() {
  const side = $("fs-side").value;
  const data = await api(`/api/faces/${side}`);
  state.faces = data.faces;
  state.selected.clear();
  state.facesVersion += 1;
  const debug = $("fs-debug").checked ? 1 : 0;
  $("fs-grid").replaceChildren(...data.faces.map((name) => {
    const fig = document.createElement("figure");
    fig.dataset.name = name;
    const img = document.createElement("img");
    img.loading = "lazy";
    img.src = `/api/faces/${side}/${encodeURIComponent(name)}?debug=${debug}&v=${state.facesVersion}`;
    const cap = document.createElement("figcaption");
    cap.textContent = name;
    fig.append(img, cap);
    fig.addEventListener("click", () => {
      if (state.selected.has(name)) state.selected.delete(name); else state.selected.add(name);
      fig.classList.toggle("selected", state.selected.has(name));
      $("fs-selected").textContent = state.selected.size;
    });
    return fig;
  }));
  $("fs-selected").textContent = 0;
  $("fs-count").textContent = `${data.faces.length} faces, ${data.trash} in the trash`;
  $("fs-undo").disabled = !data.undo;
  showExtraction(data.extraction);
}

// An extraction continues with the settings it began with; other settings mean starting again.
function showExtraction(earlier) {
  state.extraction = earlier;
  const again = $("fs-overwrite").checked;
  for (const o of state.extractOptions || []) {
    const input = $("fs-" + o.name.replace(/_/g, "-"));
    if (earlier && !again) input.value = earlier[o.name];
    input.disabled = Boolean(earlier) && !again;
  }
  $("fs-overwrite").disabled = !earlier && !state.faces.length;
  $("fs-extraction").textContent = !earlier ? "no extraction yet"
    : again ? "replaces every aligned face" : "continues the earlier extraction with its settings";
}

async function extractFaces() {
  const side = $("fs-side").value;
  const again = $("fs-overwrite").checked;
  if (again && !confirm(`Delete the ${state.faces.length} aligned ${side} faces and extract again?`)) return;
  const body = { overwrite: again };
  for (const o of state.extractOptions) body[o.name] = readInput(o, $("fs-" + o.name.replace(/_/g, "-")));
  await api(`/api/faces/${side}/extract`, body);
  $("fs-overwrite").checked = false;
  showExtraction(state.extraction);
  refreshStatus();
}

async function deleteFaces() {
  if (!state.selected.size) { showError("select faces first (click them)"); return; }
  await api(`/api/faces/${$("fs-side").value}/delete`, { names: [...state.selected] });
  showError("");
  loadFaces();
}

// ------------------------------------------------------------------ training
async function loadOptions() {
  const kind = $("tr-kind").value;
  const name = $("tr-name").value.trim();
  const data = await api(`/api/train/options?model=${kind}&name=${encodeURIComponent(name)}`);
  state.train.options = data.options;
  state.train.folder = data.exists ? data.folder : null;
  const form = $("tr-form");
  form.replaceChildren(...data.options.map((o) => optionInput(o, o.value)));
  if (!data.options.length) form.textContent = `${kind} has fixed settings.`;
  $("tr-state").textContent = data.exists ? "resuming: fixed options are locked" : "a new model";
  return data;
}

async function startTraining() {
  const data = await loadOptionsIfNeeded();
  const options = {};
  for (const o of state.train.options) {
    const input = $("tr-form").elements[o.name];
    if (!input || input.disabled) continue;
    const value = readInput(o, input);
    if (String(value) !== String(o.value)) options[o.name] = value;
  }
  for (const el of $("tr-form").elements) el.classList.remove("bad");
  try {
    await api("/api/train/start", { model: $("tr-kind").value, name: $("tr-name").value.trim(), options });
  } catch (e) {
    const named = /^(?:--opt )?(\w+)/.exec(String(e.message));
    const bad = named && named[1] in options ? named[1] : null;
    if (bad) $("tr-form").elements[bad].classList.add("bad");
    return;
  }
  showError("");
  state.train.folder = data.folder;
  state.train.loaded = null;  // the model exists now: its fixed options lock on the next load
  state.train.previewMtime = null;
  refreshStatus();
}

async function loadOptionsIfNeeded() {
  const key = `${$("tr-kind").value}/${$("tr-name").value.trim()}`;
  if (state.train.loaded?.key !== key) state.train.loaded = { key, data: await loadOptions() };
  return state.train.loaded.data;
}

async function trainerKey(key) {
  if (!state.train.folder) { showError("start or choose a model first"); return; }
  await api("/api/train/command", { folder: state.train.folder, key });
}

async function pollTraining() {
  const folder = state.train.folder;
  if (!folder || state.page !== "training") return;
  const res = await fetch(`/api/train/${folder}/live`).catch(() => null);
  if (!res || !res.ok) { $("tr-state").textContent = "waiting for the first save..."; return; }
  const live = await res.json();
  $("tr-iter").textContent = live.iteration;
  $("tr-iter").dataset.value = live.iteration;
  $("tr-ms").textContent = live.ms_per_iter ?? "-";
  $("tr-saved").textContent = live.saved_iteration ?? "-";
  $("tr-saved").dataset.value = live.saved_iteration ?? "";
  const left = live.target_iter ? live.target_iter - live.iteration : null;
  $("tr-eta").textContent = left > 0 && live.ms_per_iter ? formatSeconds(left * live.ms_per_iter / 1000) : "-";
  $("tr-state").textContent = live.training ? "training" : "not training";
  drawChart(live.points || []);
  if (live.preview_mtime && live.preview_mtime !== state.train.previewMtime) {
    state.train.previewMtime = live.preview_mtime;
    $("tr-preview").src = `/api/train/${folder}/preview?t=${live.preview_mtime}`;
    $("tr-preview").dataset.mtime = live.preview_mtime;
  }
}

function formatSeconds(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : m ? `${m} min ${Math.round(s % 60)} s` : `${Math.round(s)} s`;
}

function drawChart(points) {
  const canvas = $("tr-chart");
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#111";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const range = Number($("tr-range").value);
  const last = points.length ? points[points.length - 1][0] : 0;
  const shown = range ? points.filter((p) => p[0] > last - range) : points;
  canvas.dataset.points = shown.length;
  if (shown.length < 2) return;
  const top = Math.max(...shown.flatMap((p) => p.slice(1))) || 1;
  const x0 = shown[0][0], span = Math.max(1, last - x0);
  ctx.font = "11px sans-serif";
  ctx.fillStyle = "#888";
  ctx.fillText(`${top.toFixed(3)}`, 4, 12);
  ctx.fillText(`iteration ${x0} - ${last}   src blue, dst yellow`, 4, canvas.height - 4);
  ["#3d8bff", "#ffd400"].forEach((colour, k) => {
    ctx.strokeStyle = colour;
    ctx.beginPath();
    shown.forEach((p, i) => {
      const x = ((p[0] - x0) / span) * (canvas.width - 8) + 4;
      const y = (1 - p[k + 1] / top) * (canvas.height - 24) + 8;
      if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
  });
}

// ------------------------------------------------------------------ merge
async function loadMerge() {
  const model = $("mg-model").value;
  let info;
  try { info = await api(`/api/merge/info${model ? `?model=${encodeURIComponent(model)}` : ""}`); } catch (e) {
    $("mg-status").textContent = "no model to merge with yet";
    return;
  }
  showError("");
  const m = state.merge;
  m.model = info.model;
  m.frames = info.frames;
  m.options = info.options;
  m.index = Math.min(m.index, info.frames.length - 1);
  $("mg-model").value = info.model;
  $("mg-scrub").max = info.frames.length - 1;
  $("mg-count").textContent = info.frames.length;
  await goToFrame(m.index, false);
}

async function goToFrame(index, carry) {
  const m = state.merge;
  index = Math.max(0, Math.min(index, m.frames.length - 1));
  m.index = index;
  $("mg-scrub").value = index;
  $("mg-frame").textContent = m.frames[index];
  if (carry && m.settings) {
    await saveFrame("frame");
  } else {
    const data = await api(`/api/merge/settings?model=${encodeURIComponent(m.model)}&frame=${m.frames[index]}`);
    m.settings = data.settings;
  }
  buildMergeForm();
  renderFrame();
}

function buildMergeForm() {
  const m = state.merge;
  $("mg-form").replaceChildren(...m.options.map((o) => optionInput(o, m.settings[o.name], (opt, value) => {
    m.settings[opt.name] = opt.type === "int" || opt.type === "float" ? Number(value) : value;
    changed();
  })));
}

let saveTimer = null;
function changed() {
  buildMergeForm();
  renderFrame();
  clearTimeout(saveTimer);
  saveTimer = setTimeout(() => saveFrame("frame"), 300);
}

async function saveFrame(scope) {
  const m = state.merge;
  clearTimeout(saveTimer);
  const data = await api("/api/merge/settings", { model: m.model, frame: m.frames[m.index], settings: m.settings,
    scope });
  m.settings = data.settings;
  return data;
}

function renderFrame() {
  const m = state.merge;
  if (!m.frames.length) return;
  m.version += 1;
  const version = m.version;
  const frame = m.frames[m.index];
  const original = $("mg-original").checked;
  const img = $("mg-image");
  const params = new URLSearchParams({ model: m.model, frame, v: version });
  if (original) params.set("original", "1"); else params.set("settings", JSON.stringify(m.settings));
  $("mg-status").textContent = "rendering...";
  img.onload = () => {
    if (version !== m.version) return;
    img.dataset.version = version;
    img.dataset.frame = frame;
    img.dataset.original = original ? "1" : "0";
    $("mg-status").textContent = original ? "original frame" : "merged at the settings on the right";
  };
  img.src = `/api/merge/render?${params}`;
}

function cycle(name) {
  const m = state.merge;
  const o = m.options.find((x) => x.name === name);
  const i = o.choices.indexOf(m.settings[name]);
  m.settings[name] = o.choices[(i + 1) % o.choices.length];
  changed();
}

function step(name, delta) {
  const m = state.merge;
  const o = m.options.find((x) => x.name === name);
  m.settings[name] = Math.max(o.range[0], Math.min(o.range[1], m.settings[name] + delta));
  changed();
}

const BLEND_KEYS = { "1": "original", "2": "overlay", "3": "hist-match", "4": "seamless",
  "5": "seamless-hist-match", "6": "raw-rgb", "`": "raw-predict" };

async function mergeKey(e) {
  const m = state.merge;
  if (!m.frames.length && e.key !== "Tab") return false;
  // Shift+/ and Shift+. arrive as "?" and ">" from a keyboard, as "/" and "." with shiftKey from some drivers.
  const k = e.shiftKey && e.key === "/" ? "?" : e.shiftKey && e.key === "." ? ">" : e.key;
  if (k === "w") step("erode", 5);
  else if (k === "s") step("erode", -5);
  else if (k === "e") step("blur", 5);
  else if (k === "d") step("blur", -5);
  else if (k === "c") cycle("color_transfer");
  else if (k === "x") cycle("mask_mode");
  else if (k in BLEND_KEYS) { m.settings.mode = BLEND_KEYS[k]; changed(); }
  else if (k === ",") { await saveFrame("frame"); await goToFrame(m.index - 1, false); }
  else if (k === ".") { await saveFrame("frame"); await goToFrame(m.index + 1, false); }
  else if (k === "/") { await saveFrame("frame"); await goToFrame(m.index + 1, true); }
  else if (k === "?") {
    const saved = await saveFrame("following");
    $("mg-note").textContent = `frame ${saved.frame}'s settings now apply to every following frame (to ${saved.last})`;
  }
  else if (k === ">") await mergeAll();
  else if (k === "Tab") $("mg-help").hidden = !$("mg-help").hidden;
  else return false;
  return true;
}

async function mergeAll() {
  const m = state.merge;
  if (m.frames.length) await saveFrame("frame");
  const model = m.model || $("mg-model").value;
  try {
    await api("/api/merge/all", { model });
  } catch (e) {  // frames merged with another model are replaced only when confirmed
    if (!/confirm to replace/.test(String(e.message)) || !confirm(`${e.message}?`)) return;
    await api("/api/merge/all", { model, overwrite: true });
    showError("");
  }
  $("mg-note").textContent = "merging every frame not merged yet at its settings (see Jobs)";
  refreshStatus();
}

async function makeVideo() {
  const overwrite = Boolean(state.status && state.status.result);
  if (overwrite && !confirm("result.mp4 exists already. Replace it?")) return;
  await api("/api/video", { overwrite });
  $("mg-note").textContent = "making result.mp4 (see Jobs)";
  refreshStatus();
}

async function makeReport() {
  await api("/api/eval", {});
  $("mg-note").textContent = "measuring result.mp4 into report/ (see Jobs)";
  refreshStatus();
}

// ------------------------------------------------------------------ wiring
document.addEventListener("keydown", async (e) => {
  if (typing(e)) return;
  if (state.page === "merge") {
    if (e.key === "Tab") e.preventDefault();
    try { if (await mergeKey(e)) e.preventDefault(); } catch (err) { /* shown in the banner */ }
  } else if (state.page === "xseg") {
    if (xsegKey(e)) e.preventDefault();  // xseg.js
  } else if (state.page === "training") {
    const key = { s: "s", b: "b", p: "p", Enter: "enter" }[e.key];
    if (key) { e.preventDefault(); trainerKey(key).catch(() => {}); }
  }
});

for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => showPage(b.dataset.page));
for (const b of document.querySelectorAll(".tr-key")) {
  b.addEventListener("click", () => trainerKey(b.dataset.key).catch(() => {}));
}
$("fs-side").addEventListener("change", loadFaces);
$("fs-debug").addEventListener("change", loadFaces);
$("fs-delete").addEventListener("click", () => deleteFaces().catch(() => {}));
$("fs-undo").addEventListener("click", async () => {
  await api(`/api/faces/${$("fs-side").value}/undo`, {}).catch(() => {});
  loadFaces();
});
$("fs-sort-go").addEventListener("click", () => api(`/api/faces/${$("fs-side").value}/sort`,
  { by: $("fs-sort").value }).then(refreshStatus).catch(() => {}));
$("fs-extract").addEventListener("click", () => extractFaces().catch(() => {}));
$("fs-overwrite").addEventListener("change", () => showExtraction(state.extraction));
$("tr-load").addEventListener("click", () => { state.train.loaded = null; loadOptionsIfNeeded().catch(() => {}); });
$("tr-kind").addEventListener("change", () => { state.train.loaded = null; refreshStatus(); });
$("tr-name").addEventListener("change", () => { state.train.loaded = null; });
$("tr-start").addEventListener("click", () => startTraining().catch(() => {}));
$("tr-range").addEventListener("change", pollTraining);
$("mg-model").addEventListener("change", () => { state.merge.index = 0; loadMerge(); });
$("mg-scrub").addEventListener("input", () => goToFrame(Number($("mg-scrub").value), false).catch(() => {}));
$("mg-prev").addEventListener("click", () => mergeKey({ key: "," }));
$("mg-next").addEventListener("click", () => mergeKey({ key: "." }));
$("mg-original").addEventListener("change", renderFrame);
$("mg-all").addEventListener("click", () => mergeAll().catch(() => {}));
$("mg-video").addEventListener("click", () => makeVideo().catch(() => {}));
$("mg-eval").addEventListener("click", () => makeReport().catch(() => {}));

refreshStatus().then(() => showPage(location.hash.slice(1) || "faceset"));
setInterval(refreshStatus, 2000);
setInterval(pollTraining, 1000);
