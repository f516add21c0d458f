// facelab ui, XSeg page: draw include/exclude polygons on aligned faces (saved in each face's
// metadata through /api/xseg), see the applied mask, get the least certain faces proposed, train.
"use strict";

const xs = { side: "dst", faces: [], filter: "all", index: 0, name: null, size: 512, polygons: [], open: -1,
  selected: -1, mode: "include", undo: [], redo: [], zoom: 1, dirty: false, drag: null, image: null,
  mask: null, previous: null, folder: null, previewMtime: null };
const POINT_PX = 7;  // how close (screen pixels) a click must be to grab a point

function xsVisible() {
  return xs.faces.filter((f) => xs.filter === "all" || (xs.filter === "labelled") === (f.polygons > 0));
}

async function loadXseg() {
  xs.side = $("xs-side").value;
  xs.filter = $("xs-filter").value;
  const data = await api(`/api/xseg/${xs.side}`);
  xs.faces = data.faces;
  $("xs-model").replaceChildren(...data.models.map((m) => new Option(m, m)));
  const visible = xsVisible();
  const keep = visible.findIndex((f) => f.name === xs.name);
  xs.index = keep >= 0 ? keep : Math.min(xs.index, Math.max(0, visible.length - 1));
  renderStrip();
  if (visible.length) await openFace(xs.index); else { xs.name = null; drawXseg(); }
  $("xs-count").textContent = `${xs.faces.filter((f) => f.polygons).length} of ${xs.faces.length} labelled`;
}

function renderStrip() {
  const side = xs.side;
  $("xs-strip").replaceChildren(...xsVisible().map((f, i) => {
    const img = document.createElement("img");
    img.loading = "lazy";
    img.src = `/api/faces/${side}/${encodeURIComponent(f.name)}`;
    img.title = f.name;
    img.dataset.name = f.name;
    img.classList.toggle("labelled", f.polygons > 0);
    img.classList.toggle("current", i === xs.index);
    img.addEventListener("click", () => goToFace(i).catch(() => {}));
    return img;
  }));
}

async function openFace(index) {
  const visible = xsVisible();
  const face = visible[index];
  if (!face) return;
  if (xs.name && xs.name !== face.name) xs.previous = JSON.parse(JSON.stringify(xs.polygons));
  const data = await api(`/api/xseg/${xs.side}/${encodeURIComponent(face.name)}`);
  Object.assign(xs, { index, name: face.name, size: data.size, polygons: data.polygons, open: -1, selected: -1,
    undo: [], redo: [], dirty: false, mask: null });
  const img = new Image();
  img.onload = () => { xs.image = img; drawXseg(); };
  img.src = `/api/faces/${xs.side}/${encodeURIComponent(face.name)}?v=${Date.now()}`;
  if (data.masked) {
    const m = new Image();
    m.onload = () => { xs.mask = m; drawXseg(); };
    m.src = `/api/xseg/${xs.side}/${encodeURIComponent(face.name)}/mask?v=${Date.now()}`;
  }
  $("xs-name").textContent = `${face.name} (${index + 1} / ${visible.length})`;
  for (const el of $("xs-strip").children) el.classList.toggle("current", el.dataset.name === face.name);
  drawXseg();
}

async function goToFace(index) {
  if (xs.dirty) await saveXseg();
  const visible = xsVisible();
  if (index < 0 || index >= visible.length) return;
  await openFace(index);
}

async function saveXseg() {
  if (!xs.name) return;
  finishPolygon();
  const data = await api(`/api/xseg/${xs.side}/${encodeURIComponent(xs.name)}`, { polygons: xs.polygons });
  xs.polygons = data.polygons;
  xs.dirty = false;
  const face = xs.faces.find((f) => f.name === xs.name);
  if (face) face.polygons = data.polygons.length;
  const notes = [];
  if (data.dropped) notes.push(`${data.dropped} polygons with fewer than 3 points dropped`);
  if (data.clipped) notes.push(`${data.clipped} points clipped to the image`);
  $("xs-saved").textContent = `saved ${xs.name}` + (notes.length ? ` (warning: ${notes.join(", ")})` : "");
  for (const el of $("xs-strip").children) {
    if (el.dataset.name === xs.name) el.classList.toggle("labelled", data.polygons.length > 0);
  }
  drawXseg();
}

// ------------------------------------------------------------------ editing, with undo and redo
function change(fn) {
  xs.undo.push(JSON.stringify([xs.polygons, xs.open]));
  xs.redo = [];
  fn();
  xs.dirty = true;
  drawXseg();
}

function undoRedo(from, to) {
  if (!from.length) return;
  to.push(JSON.stringify([xs.polygons, xs.open]));
  [xs.polygons, xs.open] = JSON.parse(from.pop());
  xs.selected = Math.min(xs.selected, xs.polygons.length - 1);
  xs.dirty = true;
  drawXseg();
}

function finishPolygon() {
  if (xs.open < 0) return;
  const p = xs.polygons[xs.open];
  if (p && p.points.length < 3) xs.polygons.splice(xs.open, 1);  // a polygon needs 3 points
  xs.open = -1;
  drawXseg();
}

function setMode(mode) {
  finishPolygon();
  xs.mode = mode;
  $("xs-mode").textContent = mode;
  $("xs-mode").className = mode;
}

function scale() { return $("xs-canvas").width / xs.size; }

function facePoint(e) {
  const r = $("xs-canvas").getBoundingClientRect();
  const k = $("xs-canvas").width / r.width;
  return [(e.clientX - r.left) * k / scale(), (e.clientY - r.top) * k / scale()];
}

function nearestPoint(pt) {
  const limit = POINT_PX * ($("xs-canvas").width / $("xs-canvas").getBoundingClientRect().width) / scale();
  let best = null;
  xs.polygons.forEach((p, i) => p.points.forEach((q, j) => {
    const d = Math.hypot(q[0] - pt[0], q[1] - pt[1]);
    if (d <= limit && (!best || d < best.d)) best = { i, j, d };
  }));
  return best;
}

function onDown(e) {
  if (!xs.name) return;
  e.preventDefault();
  const pt = facePoint(e);
  const hit = nearestPoint(pt);
  if (hit && (e.shiftKey || e.ctrlKey || e.button === 2)) {  // delete that point
    change(() => {
      xs.polygons[hit.i].points.splice(hit.j, 1);
      if (!xs.polygons[hit.i].points.length) xs.polygons.splice(hit.i, 1);
    });
    return;
  }
  if (hit && hit.i !== xs.open) {  // move a point of a finished polygon
    xs.undo.push(JSON.stringify([xs.polygons, xs.open]));
    xs.redo = [];
    xs.drag = hit;
    xs.selected = hit.i;
    drawXseg();
    return;
  }
  change(() => {
    if (xs.open < 0) {
      xs.polygons.push({ type: xs.mode, points: [] });
      xs.open = xs.polygons.length - 1;
    }
    xs.polygons[xs.open].points.push(pt.map((v) => Math.round(v * 100) / 100));
    xs.selected = xs.open;
  });
}

function onMove(e) {
  if (!xs.drag) return;
  const pt = facePoint(e);
  xs.polygons[xs.drag.i].points[xs.drag.j] = pt.map((v) => Math.round(v * 100) / 100);
  xs.dirty = true;
  drawXseg();
}

function drawXseg() {
  const c = $("xs-canvas");
  const side = Math.round(512 * xs.zoom);
  if (c.width !== side) { c.width = side; c.height = side; }
  const g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (xs.image) g.drawImage(xs.image, 0, 0, c.width, c.height);
  if (xs.mask && $("xs-overlay").checked) {
    g.save();
    g.globalAlpha = 0.45;
    g.globalCompositeOperation = "multiply";
    g.drawImage(xs.mask, 0, 0, c.width, c.height);
    g.restore();
  }
  const k = scale();
  xs.polygons.forEach((p, i) => {
    const colour = p.type === "include" ? "#2ecc40" : "#ff4136";
    g.beginPath();
    p.points.forEach(([x, y], j) => (j ? g.lineTo(x * k, y * k) : g.moveTo(x * k, y * k)));
    if (i !== xs.open) g.closePath();
    g.lineWidth = i === xs.selected ? 3 : 2;
    g.strokeStyle = colour;
    g.stroke();
    if (i !== xs.open && p.points.length >= 3) {
      g.fillStyle = p.type === "include" ? "rgba(46,204,64,0.15)" : "rgba(255,65,54,0.25)";
      g.fill("evenodd");
    }
    g.fillStyle = colour;
    for (const [x, y] of p.points) g.fillRect(x * k - 3, y * k - 3, 6, 6);
  });
  $("xs-dirty").textContent = xs.dirty ? "unsaved" : "";
  $("xs-polys").textContent = `${xs.polygons.length} polygons`;
}

function deleteSelected() {
  if (xs.selected < 0 || xs.selected >= xs.polygons.length) return;
  change(() => {
    xs.polygons.splice(xs.selected, 1);
    if (xs.open === xs.selected) xs.open = -1; else if (xs.open > xs.selected) xs.open -= 1;
    xs.selected = -1;
  });
}

function copyPrevious() {
  if (!xs.previous) { showError("no previous face's polygons to copy yet"); return; }
  change(() => { xs.polygons = JSON.parse(JSON.stringify(xs.previous)); xs.open = -1; });
}

function setZoom(z) {
  xs.zoom = Math.max(1, Math.min(4, z));
  $("xs-zoom").value = xs.zoom;
  drawXseg();
}

// ------------------------------------------------------------------ proposals and training
async function proposeFaces() {
  const model = $("xs-model").value;
  if (!model) { showError("train an XSeg model first: the proposals come from its predictions"); return; }
  $("xs-proposals").textContent = "scoring the unlabelled faces...";
  const data = await api(`/api/xseg/${xs.side}/propose?model=${encodeURIComponent(model)}`);
  $("xs-proposals").replaceChildren(...data.faces.map((f) => {
    const b = document.createElement("button");
    b.textContent = `${f.name} (${f.doubt})`;
    b.addEventListener("click", async () => {
      $("xs-filter").value = "all";
      xs.filter = "all";
      renderStrip();
      await goToFace(xs.faces.findIndex((x) => x.name === f.name));
    });
    return b;
  }));
  if (!data.faces.length) $("xs-proposals").textContent = "no unlabelled faces left";
}

async function trainXseg() {
  if (xs.dirty) await saveXseg();
  const name = $("xs-train-name").value.trim() || "xseg";
  const options = { resolution: Number($("xs-train-res").value), target_iter: Number($("xs-train-iter").value) };
  await api("/api/train/start", { model: "xseg", name, options, save_every_min: 25 });
  xs.folder = `${name}_XSeg`;
  xs.previewMtime = null;
  refreshStatus();
}

async function pollXsegTraining() {
  if (state.page !== "xseg" || !xs.folder) return;
  try {
    const live = await (await fetch(`/api/train/${xs.folder}/live`)).json();
    if (live.iteration === undefined) return;
    $("xs-train-state").textContent = `iteration ${live.iteration}` + (live.training ? ", training" : "");
    if (live.preview_mtime && live.preview_mtime !== xs.previewMtime) {
      xs.previewMtime = live.preview_mtime;
      $("xs-preview").src = `/api/train/${xs.folder}/preview?v=${live.preview_mtime}`;
      $("xs-preview").hidden = false;
      const models = (await api(`/api/xseg/${xs.side}`)).models;  // the new model can propose faces now
      $("xs-model").replaceChildren(...models.map((m) => new Option(m, m)));
      $("xs-model").value = xs.folder;
    }
  } catch (e) { /* not started yet */ }
}

function xsegKey(e) {
  // Synchronous, so the page can stop the browser's own use of the key.
  const k = e.key.toLowerCase();
  if ((e.ctrlKey || e.metaKey) && k === "z") {
    if (e.shiftKey) undoRedo(xs.redo, xs.undo); else undoRedo(xs.undo, xs.redo);
    return true;
  }
  if ((e.ctrlKey || e.metaKey) && k === "y") { undoRedo(xs.redo, xs.undo); return true; }
  if (e.ctrlKey || e.metaKey || e.altKey) return false;
  const actions = {
    q: () => setMode("include"), w: () => setMode("exclude"), enter: finishPolygon, escape: finishPolygon,
    delete: deleteSelected, backspace: deleteSelected, c: copyPrevious, s: () => saveXseg(),
    a: () => goToFace(xs.index - 1), d: () => goToFace(xs.index + 1),
    arrowleft: () => goToFace(xs.index - 1), arrowright: () => goToFace(xs.index + 1),
    "+": () => setZoom(xs.zoom + 0.5), "=": () => setZoom(xs.zoom + 0.5), "-": () => setZoom(xs.zoom - 0.5),
    m: () => { $("xs-overlay").checked = !$("xs-overlay").checked; drawXseg(); },
  };
  if (!actions[k]) return false;
  Promise.resolve(actions[k]()).catch(() => {});  // errors are shown in the banner
  return true;
}

$("xs-canvas").addEventListener("mousedown", onDown);
$("xs-canvas").addEventListener("contextmenu", (e) => e.preventDefault());
window.addEventListener("mousemove", onMove);
window.addEventListener("mouseup", () => { if (xs.drag) { xs.drag = null; drawXseg(); } });
$("xs-side").addEventListener("change", () => { xs.name = null; xs.index = 0; loadXseg().catch(() => {}); });
$("xs-filter").addEventListener("change", () => {
  xs.filter = $("xs-filter").value;
  xs.index = 0;
  loadXseg().catch(() => {});
});
$("xs-include").addEventListener("click", () => setMode("include"));
$("xs-exclude").addEventListener("click", () => setMode("exclude"));
$("xs-finish").addEventListener("click", finishPolygon);
$("xs-undo").addEventListener("click", () => undoRedo(xs.undo, xs.redo));
$("xs-redo").addEventListener("click", () => undoRedo(xs.redo, xs.undo));
$("xs-delete").addEventListener("click", deleteSelected);
$("xs-copy").addEventListener("click", copyPrevious);
$("xs-save").addEventListener("click", () => saveXseg().catch(() => {}));
$("xs-prev").addEventListener("click", () => goToFace(xs.index - 1).catch(() => {}));
$("xs-next").addEventListener("click", () => goToFace(xs.index + 1).catch(() => {}));
$("xs-zoom").addEventListener("input", () => setZoom(Number($("xs-zoom").value)));
$("xs-overlay").addEventListener("change", drawXseg);
$("xs-propose").addEventListener("click", () => proposeFaces().catch(() => {}));
$("xs-train").addEventListener("click", () => trainXseg().catch(() => {}));
setInterval(pollXsegTraining, 1000);
