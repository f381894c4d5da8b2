// mnistlab explorer page: plain JS modules over the JSON API of `mnistlab serve`. No libraries, no
// network. This module lays the page out from /api/info and holds the sliders and the interpolation;
// pad.js (drawing, upload), map.js (the latent map), samplers.js (samples and downloads), ui.js (shared).
import { $, api, clearError, count, drawDigit, latest, setStatus, showError, state, testDigit, tile, TOUCH } from "./ui.js";
import { setupPad } from "./pad.js";
import { drawMap, setupMap } from "./map.js";
import { setupSamplers } from "./samplers.js";

function markPanel(id, panel) {
  const card = $(id), note = card.querySelector(".unavailable-reason");
  const off = panel && !panel.available;
  card.classList.toggle("off", off);
  note.hidden = !off;
  note.textContent = off ? `Unavailable: ${panel.reason}` : "";
  // An unavailable panel's controls leave the tab order too (it is dimmed and ignores the pointer).
  for (const el of card.querySelectorAll("button, select, input, canvas[tabindex], a[href]")) if (off) el.setAttribute("tabindex", "-1");
}

async function start() {
  let info;
  try { info = await api("/api/info"); } catch (e) { setStatus(`cannot load /api/info: ${e.message}`); return; }
  state.info = info;
  document.body.classList.toggle("touch", TOUCH);
  $("run").textContent = `run: ${info.run}` + (info.latent_dim ? ` · ${info.latent_dim}-d latent · ${info.n_test} test digits` : "");
  if (info.report) {
    const link = $("report-link");
    link.textContent = `Open the run's report (${info.report})`;
    link.hidden = false;
  }
  const p = info.panels;
  markPanel("panel-draw", p.draw);
  markPanel("panel-map", p.map);
  markPanel("panel-sliders", p.sliders);
  markPanel("panel-samplers", p.samplers);
  markPanel("panel-interpolate", p.interpolate);
  const notes = [];
  for (const [name, panel] of Object.entries(p)) if (!panel.available) notes.push(`${name}: ${panel.reason}`);
  for (const [name, m] of Object.entries(info.maps)) if (!m.available) notes.push(`${name} map: ${m.reason}`);
  const ul = $("unavailable");
  for (const n of notes) { const li = document.createElement("li"); li.textContent = n; ul.appendChild(li); }
  ul.hidden = notes.length === 0;
  if (info.probe_accuracy != null) $("probe-note").textContent = `linear probe, test accuracy ${(100 * info.probe_accuracy).toFixed(1)}%`;
  else if (!p.classify.available) $("probe-note").textContent = p.classify.reason;
  if (!p.denoise.available) $("denoised-caption").textContent = `denoiser unavailable: ${p.denoise.reason}`;
  else $("denoised-caption").textContent = `denoised (DAE trained at σ=${info.dae_sigma})`;
  $("pad-help").textContent = `${TOUCH ? "Draw with a finger" : "Draw with the mouse"}, or Tab to the pad: arrows move the pen, Enter puts it down or lifts it, Delete clears.`;
  $("map-help").textContent = `${TOUCH ? "Tap a point" : "Hover or click a point"}, or Tab to the map: arrows move a cursor, Enter picks there.`;
  $("pick-caption").textContent = TOUCH ? "tap the map" : "click the map";
  const hooks = { toSliders: loadSliders, toEnd: setEnd, redrawMap: drawMap };
  setupPad(hooks);
  setupSamplers();
  if (p.map.available) {
    try { await setupMap(hooks); } catch (e) { showError("map-error", e); }
  }
  if (p.sliders.available) setupSliders();
  setupInterpolation();
  document.body.dataset.ready = "1";
}

// ------------------------------------------------------------------ sliders

let sliderInputs = [];
const decodeSliders = latest(async () => {
  const code = sliderInputs.map((s) => Number(s.value));
  const out = await api("/api/decode", { code });
  drawDigit($("slider-digit"), out.image);
  count($("slider-digit"), "updates");
}, "slider-error");

function setupSliders() {
  const info = state.info, box = $("sliders");
  sliderInputs = [];
  for (let j = 0; j < info.latent_dim; j++) {
    const lo = info.code_low[j], hi = info.code_high[j];
    const label = document.createElement("label"); label.textContent = `z${j}`; label.htmlFor = `z${j}`;
    const s = document.createElement("input");
    s.type = "range"; s.id = `z${j}`; s.min = lo; s.max = hi; s.step = (hi - lo) / 200; s.value = (lo + hi) / 2;
    const v = document.createElement("span"); v.textContent = Number(s.value).toFixed(2);
    s.addEventListener("input", () => { v.textContent = Number(s.value).toFixed(2); decodeSliders(); });
    s.valueLabel = v;
    box.append(label, s, v);
    sliderInputs.push(s);
  }
  $("slider-random").addEventListener("click", async () => {
    try {
      const item = await testDigit(Math.floor(Math.random() * info.n_test));
      loadSliders(item.code, `test digit #${item.index} (a ${item.label})`);
    } catch (e) { showError("slider-error", e); }
  });
  decodeSliders();
}

function loadSliders(code, what) {
  sliderInputs.forEach((s, j) => { s.value = code[j]; s.valueLabel.textContent = Number(s.value).toFixed(2); });
  $("slider-source").textContent = `Started from: ${what}.`;
  decodeSliders();
  $("panel-sliders").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

// ------------------------------------------------------------------ interpolation

function setEnd(which, item, what) {
  state.ends[which] = { code: item.code };
  drawDigit($(`end-${which}`), item.image);
  $(`end-${which}-caption`).textContent = `${which.toUpperCase()}: ${what}`;
}

function setupInterpolation() {
  $("random-ends").addEventListener("click", async () => {
    const n = state.info.n_test;
    try {
      for (const which of ["a", "b"]) {
        const item = await testDigit(Math.floor(Math.random() * n));
        setEnd(which, item, `test digit #${item.index} (a ${item.label})`);
      }
    } catch (e) { showError("interp-error", e); return; }
    interpolate();
  });
  $("interpolate").addEventListener("click", interpolate);
  $("steps").addEventListener("change", () => { if (state.ends.a && state.ends.b) interpolate(); });
}

async function interpolate() {
  const { a, b } = state.ends;
  if (!a || !b) { showError("interp-error", "set both ends A and B first"); return; }
  try {
    const out = await api("/api/interpolate", { a, b, steps: Number($("steps").value) });
    const strip = $("strip");
    strip.textContent = "";
    out.images.forEach((img, k) => strip.appendChild(tile(img, `step ${k}`)));
    clearError("interp-error");
  } catch (e) { showError("interp-error", e); }
}

window.addEventListener("DOMContentLoaded", () => { start().catch((e) => setStatus(e.message)); });
