// mnistlab explorer page: plain JS modules over the JSON API of `mnistlab serve`. No libraries, no
// network. This module lays the page out from /api/info, opens it on a test digit with every panel
// filled, and holds the sliders and the interpolation; pad.js (test digits, drawing, upload), map.js
// (the latent map), samplers.js (samples and downloads), state.js (the view in the address), ui.js
// (shared).
import { $, api, clearError, count, drawDigit, latest, setStatus, showError, state, testDigit, tile, TOUCH } from "./ui.js";
import { setupPad, showTestDigit } from "./pad.js";
import { drawMap, setupMap } from "./map.js";
import { setupSamplers } from "./samplers.js";
import { round, url } from "./state.js";

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
  $("run").textContent = `run: ${info.run}` + (info.latent_dim ? ` · ${info.latent_dim}-d code · ${info.n_test} test digits` : "");
  if (info.smoke) { $("smoke").textContent = info.smoke.text; $("smoke").hidden = false; }
  const linked = url.get("run");
  if (linked && linked !== info.run_name) setStatus(`this link was made for run ${linked}; this server serves ${info.run_name}`);
  url.set("run", info.run_name);
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
  if (info.probe_accuracy != null) $("probe-note").textContent = `${info.predictor}, test accuracy ${(100 * info.probe_accuracy).toFixed(1)}%`;
  else if (!p.classify.available) $("probe-note").textContent = p.classify.reason;
  if (!p.reconstruct.available) $("recon-caption").textContent = info.latent_dim ? "no reconstruction: this run has no decoder" : "no reconstruction";
  if (!p.denoise.available) $("denoised-caption").textContent = `denoiser unavailable: ${p.denoise.reason}`;
  else $("denoised-caption").textContent = `denoised (DAE trained at σ=${info.dae_sigma})`;
  // The keyboard's part of each help line is hidden where there is no keyboard (style.css, .keys).
  help("pad-help", TOUCH ? "Draw with a finger." : "Draw with the mouse.", " Or Tab to the pad: arrows move the pen, Enter puts it down or lifts it, Delete clears.");
  help("map-help", TOUCH ? "Tap a point of the map to pick it." : "Hover over a point to see its digit; click to pick it.", " Or Tab to the map: arrows move a cursor, Enter picks there.");
  const sigma = url.get("sigma");
  if (sigma !== null && [...$("sigma").options].some((o) => o.value === sigma)) $("sigma").value = sigma;
  const hooks = { toSliders: loadSliders, toEnd: setEnd, redrawMap: drawMap };
  setupPad(hooks);
  setupSamplers();
  if (p.sliders.available) setupSliders();
  setupInterpolation();
  trackPanel();
  // What the page opens on: the address's test digit, else the run's first one, in every panel.
  if (p.draw.available) {
    const index = url.int("digit", 0, info.n_test - 1) ?? info.start_index;
    try {
      const item = await showTestDigit(index);
      if (p.sliders.available) {
        const z = url.numbers("z", info.latent_dim);
        loadSliders(z || item.code, z ? "the code in the page's address" : `test digit #${item.index} (a ${item.label})`, true);
        if (z) keepSliders();
      }
      if (p.interpolate.available) await openEnds(item.index);
    } catch (e) { showError("draw-error", e); }
  }
  if (p.map.available) {
    try { await setupMap(hooks); } catch (e) { showError("map-error", e); }
  }
  const panel = url.get("panel");
  if (panel && $(`panel-${panel}`)) $(`panel-${panel}`).scrollIntoView({ block: "start" });
  document.body.dataset.ready = "1";
}

function help(id, text, keys) {
  const el = $(id), span = document.createElement("span");
  span.className = "keys"; span.textContent = keys;
  el.textContent = text; el.appendChild(span);
}

// The panel last used goes in the address, and a link opens scrolled to it.
function trackPanel() {
  for (const card of document.querySelectorAll("main > section.card")) {
    card.addEventListener("focusin", () => url.set("panel", card.id.replace("panel-", "")));
    card.addEventListener("pointerdown", () => url.set("panel", card.id.replace("panel-", "")));
  }
}

// ------------------------------------------------------------------ sliders

let sliderInputs = [];
// The code the sliders were set to, decoded as it is until a slider moves (a slider's value snaps to
// its step, so reading the sliders back would decode a slightly different code).
let exactCode = null;
const sliderCode = () => exactCode || sliderInputs.map((s) => Number(s.value));
const decodeSliders = latest(async () => {
  const code = sliderCode();
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
    s.addEventListener("input", () => { exactCode = null; v.textContent = Number(s.value).toFixed(2); keepSliders(); decodeSliders(); });
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
}

// The sliders' values in the address, unless they are the code of the digit the page opens on.
function keepSliders() { url.set("z", sliderCode().map((v) => round(v)).join(",")); }

// The sliders set to `code`, decoded; `opening`: the page's own start (no scrolling, nothing kept).
function loadSliders(code, what, opening = false) {
  // A slider clamps a value past its range; a code from a drawing or a link may lie there.
  exactCode = code.map(Number);
  sliderInputs.forEach((s, j) => { s.value = code[j]; s.valueLabel.textContent = exactCode[j].toFixed(2); });
  $("slider-source").textContent = what ? `Started from: ${what}.` : "";
  decodeSliders();
  if (opening) return;
  keepSliders();
  $("panel-sliders").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

// ------------------------------------------------------------------ interpolation

// An end of the interpolation; a test digit's index goes in the address (a drawing cannot).
function setEnd(which, item, what) {
  state.ends[which] = { code: item.code };
  drawDigit($(`end-${which}`), item.image);
  $(`end-${which}-caption`).textContent = `${which.toUpperCase()}: ${what}`;
  url.set(which, item.index ?? null);
}

// The ends the page opens with: the address's test digits, else the digit shown and the next one.
async function openEnds(index) {
  const n = state.info.n_test;
  const steps = url.int("steps", 2, state.info.limits.max_steps);
  if (steps !== null) $("steps").value = String(steps);
  for (const [which, fallback] of [["a", index], ["b", (index + 1) % n]]) {
    const item = await testDigit(url.int(which, 0, n - 1) ?? fallback);
    setEnd(which, item, `test digit #${item.index} (a ${item.label})`);
  }
  await interpolate();
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
    const steps = Number($("steps").value);
    const out = await api("/api/interpolate", { a, b, steps });
    url.set("steps", steps);
    const strip = $("strip");
    strip.textContent = "";
    out.images.forEach((img, k) => strip.appendChild(tile(img, `step ${k}`)));
    clearError("interp-error");
  } catch (e) { showError("interp-error", e); }
}

window.addEventListener("DOMContentLoaded", () => { start().catch((e) => setStatus(e.message)); });
