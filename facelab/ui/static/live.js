// The live page: the picture of a running `facelab live --output browser` (MJPEG), its figures, and
// the controls, which the swapper takes from the next frame on. Uses app.js's helpers.
"use strict";

const live = { built: false };

function liveStats(s) {
  const t = s.stats;
  return `${s.input} with ${s.model}: capture ${t.capture_fps.toFixed(1)} fps, output ${t.output_fps.toFixed(1)} fps, `
    + `latency ${t.latency_ms.toFixed(0)} ms, model ${t.model_ms.toFixed(0)} ms; ${t.processed} frames swapped, `
    + `${t.dropped} dropped` + (t.schedule ? ` (schedule ${t.schedule})` : "") + (s.running ? "" : "; ended");
}

async function loadLive() {
  const s = await api("/api/live/status");
  if (!s.controls) {
    $("lv-stats").textContent = "No live session runs in this server: start one with "
      + "`facelab live --input 0 --output browser` (a camera, a stream URL or a video file).";
    return;
  }
  if (!live.built) {
    const send = (o, value) => api("/api/live/settings", { [o.name]: value }).catch(() => {});
    $("lv-form").replaceChildren(...s.controls.filter((o) => o.name !== "morph" || s.amp).map((o) => {
      const label = optionInput(o, s.settings[o.name], send);
      const input = label.querySelector("[name]");
      if (o.name === "morph") {  // a slider: morph is what one plays with live
        input.type = "range";
        input.step = "0.01";
        input.addEventListener("input", () => send(o, Number(input.value)));
      }
      return label;
    }));
    $("lv-image").src = "/api/live/stream";
    live.built = true;
  }
  $("lv-stats").textContent = liveStats(s);
  $("lv-stats").dataset.applied = JSON.stringify(s.applied);
}

setInterval(() => { if (state.page === "live") loadLive().catch(() => {}); }, 1000);
