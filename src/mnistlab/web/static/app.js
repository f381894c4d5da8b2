// mnistlab explorer page: plain JS over the JSON API of `mnistlab serve`. No libraries, no network.
"use strict";

const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const $ = (id) => document.getElementById(id);
const state = { info: null, drawn: null, picked: null, ends: { a: null, b: null }, map: null, seed: 0 };

// ------------------------------------------------------------------ helpers

function setStatus(text) { $("status").textContent = text || ""; }

async function api(path, body, raw) {
  const opts = body === undefined ? {} : {
    method: "POST",
    body: raw ? body : JSON.stringify(body),
    headers: { "Content-Type": raw ? "image/png" : "application/json" },
  };
  const res = await fetch(path, opts);
  let data = null;
  try { data = await res.json(); } catch (e) { data = { error: `HTTP ${res.status}` }; }
  if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
  return data;
}

// Draw a 28x28 uint8 array (rows) on a 28x28 canvas; CSS scales it up pixelated.
function drawDigit(canvas, rows) {
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(28, 28);
  for (let r = 0; r < 28; r++) for (let c = 0; c < 28; c++) {
    const v = rows[r][c], i = (r * 28 + c) * 4;
    img.data[i] = img.data[i + 1] = img.data[i + 2] = v; img.data[i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

function tile(rows, title) {
  const c = document.createElement("canvas");
  c.width = c.height = 28; c.className = "digit tile";
  if (title) c.title = title;
  drawDigit(c, rows);
  return c;
}

function clearCanvas(canvas) { const ctx = canvas.getContext("2d"); ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); }

// Run `fn` at most once at a time; a call while it runs is remembered and run after (latest wins).
function latest(fn) {
  let running = false, pending = null;
  return async function run(...args) {
    if (running) { pending = args; return; }
    running = true;
    try { await fn(...args); } catch (e) { setStatus(e.message); }
    running = false;
    if (pending) { const a = pending; pending = null; run(...a); }
  };
}

function markPanel(id, panel) {
  const card = $(id), note = card.querySelector(".unavailable-reason");
  const off = panel && !panel.available;
  card.classList.toggle("off", off);
  note.hidden = !off;
  note.textContent = off ? `Unavailable: ${panel.reason}` : "";
}

// ------------------------------------------------------------------ start

async function start() {
  let info;
  try { info = await api("/api/info"); } catch (e) { setStatus(`cannot load /api/info: ${e.message}`); return; }
  state.info = info;
  $("run").textContent = `run: ${info.run}` + (info.latent_dim ? ` · ${info.latent_dim}-d latent · ${info.n_test} test digits` : "");
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
  setupPad();
  setupSamplers();
  if (p.map.available) await setupMap();
  if (p.sliders.available) setupSliders();
  setupInterpolation();
  document.body.dataset.ready = "1";
}

// ------------------------------------------------------------------ drawing pad

function setupPad() {
  const pad = $("pad"), ctx = pad.getContext("2d");
  clearCanvas(pad);
  let drawing = false, last = null, dirty = false;
  const pos = (e) => { const r = pad.getBoundingClientRect(); return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height]; };
  const send = latest(analyzePad);
  pad.addEventListener("pointerdown", (e) => {
    drawing = true; last = pos(e);
    try { pad.setPointerCapture(e.pointerId); } catch (err) { /* a synthetic pointer has nothing to capture */ }
    ctx.fillStyle = "#fff"; ctx.beginPath(); ctx.arc(last[0], last[1], 9, 0, 2 * Math.PI); ctx.fill();
    dirty = true;
  });
  pad.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    const p = pos(e);
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 18; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(last[0], last[1]); ctx.lineTo(p[0], p[1]); ctx.stroke();
    last = p; dirty = true;
    send();  // live while drawing; at most one request in flight
  });
  const end = () => { if (drawing) { drawing = false; if (dirty) send(); } };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", () => { clearCanvas(pad); dirty = false; });
  $("sigma").addEventListener("change", () => { if (dirty) send(); else if (state.lastUpload) analyzeBlob(state.lastUpload); });
  $("upload").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    state.lastUpload = file;
    try { await analyzeBlob(file); } catch (err) { setStatus(`upload refused: ${err.message}`); }
    e.target.value = "";
  });
  $("draw-to-sliders").addEventListener("click", () => loadSliders(state.drawn.code, "drawn digit"));
  $("draw-to-a").addEventListener("click", () => setEnd("a", state.drawn, "drawn digit"));
  $("draw-to-b").addEventListener("click", () => setEnd("b", state.drawn, "drawn digit"));
}

function analyzePad() {
  return new Promise((resolve, reject) => $("pad").toBlob((blob) => analyzeBlob(blob).then(resolve, reject), "image/png"));
}

async function analyzeBlob(blob) {
  const sigma = $("sigma").value;
  const out = await api(`/api/analyze?sigma=${sigma}&seed=0`, blob, true);
  setStatus("");
  document.body.dataset.analyses = String(Number(document.body.dataset.analyses || 0) + 1);
  drawDigit($("seen"), out.input);
  if (out.reconstruction) drawDigit($("recon"), out.reconstruction);
  if (out.denoised) { drawDigit($("noisy"), out.noisy); drawDigit($("denoised"), out.denoised); }
  showProbs(out);
  if (out.code) {
    state.drawn = { code: out.code, image: out.input, positions: out.positions };
    for (const id of ["draw-to-sliders", "draw-to-a", "draw-to-b"]) $(id).disabled = false;
    drawMap();
  }
}

function showProbs(out) {
  const bars = $("probs");
  bars.textContent = "";
  if (!out.probs) { $("prediction").textContent = "–"; return; }
  $("prediction").textContent = String(out.digit);
  $("prediction").dataset.digit = String(out.digit);
  out.probs.forEach((p, d) => {
    const label = document.createElement("span"); label.textContent = d;
    const bar = document.createElement("div"); bar.className = "bar" + (d === out.digit ? " top" : "");
    const fill = document.createElement("div"); fill.style.width = `${(100 * p).toFixed(1)}%`; bar.appendChild(fill);
    const value = document.createElement("span"); value.textContent = `${(100 * p).toFixed(1)}%`;
    bars.append(label, bar, value);
  });
}

// ------------------------------------------------------------------ latent map

async function setupMap() {
  const select = $("map-select");
  for (const [name, m] of Object.entries(state.info.maps)) {
    const opt = document.createElement("option");
    opt.value = name; opt.textContent = m.available ? `${m.axis} (${name})` : `${name}: unavailable`;
    opt.disabled = !m.available;
    select.appendChild(opt);
  }
  const first = Object.entries(state.info.maps).find(([, m]) => m.available);
  const legend = $("legend");
  COLORS.forEach((c, d) => { const s = document.createElement("span"); s.style.setProperty("--c", c); s.textContent = d; legend.appendChild(s); });
  select.addEventListener("change", () => loadMap(select.value));
  const canvas = $("map");
  canvas.addEventListener("mousemove", hoverMap);
  canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  canvas.addEventListener("click", clickMap);
  $("pick-to-sliders").addEventListener("click", () => loadSliders(state.picked.code, state.picked.what));
  $("pick-to-a").addEventListener("click", () => setEnd("a", state.picked, state.picked.what));
  $("pick-to-b").addEventListener("click", () => setEnd("b", state.picked, state.picked.what));
  if (first) { select.value = first[0]; await loadMap(first[0]); }
}

async function loadMap(name) {
  const data = await api(`/api/map/${encodeURIComponent(name)}`);
  const pad = 0.05;
  const bounds = (v) => { let lo = Infinity, hi = -Infinity; for (const a of v) { if (a < lo) lo = a; if (a > hi) hi = a; } const s = (hi - lo) || 1; return [lo - pad * s, hi + pad * s]; };
  data.bx = bounds(data.x); data.by = bounds(data.y);
  state.map = data;
  $("map-note").textContent = data.decodable
    ? "hover: the test digit under the cursor; click: decode that point of the plane"
    : "hover: the test digit under the cursor; click: the nearest test digit (t-SNE has no inverse); your drawing is placed at its 5 nearest test codes";
  drawMap();
}

function toPixel(m, x, y) {
  const c = $("map");
  return [(x - m.bx[0]) / (m.bx[1] - m.bx[0]) * c.width, (1 - (y - m.by[0]) / (m.by[1] - m.by[0])) * c.height];
}

function toData(m, px, py) {
  const c = $("map");
  return [m.bx[0] + px / c.width * (m.bx[1] - m.bx[0]), m.by[0] + (1 - py / c.height) * (m.by[1] - m.by[0])];
}

function drawMap() {
  const m = state.map, c = $("map");
  if (!m) return;
  const ctx = c.getContext("2d");
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height);
  const r = m.x.length > 3000 ? 1.4 : 2.4;
  for (let i = 0; i < m.x.length; i++) {
    const [px, py] = toPixel(m, m.x[i], m.y[i]);
    ctx.fillStyle = COLORS[m.labels[i] % 10];
    ctx.fillRect(px - r, py - r, 2 * r, 2 * r);
  }
  const mark = (pt, color) => {
    const [px, py] = toPixel(m, pt[0], pt[1]);
    ctx.lineWidth = 3; ctx.strokeStyle = "#000"; ctx.fillStyle = color;
    ctx.beginPath(); ctx.arc(px, py, 8, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
  };
  if (state.picked && state.picked.map === m.name) mark(state.picked.point, "#fff");
  if (state.drawn && state.drawn.positions && state.drawn.positions[m.name]) mark(state.drawn.positions[m.name], "#facc15");
}

function nearestPoint(m, px, py, maxDist) {
  let best = -1, bestD = maxDist * maxDist;
  for (let i = 0; i < m.x.length; i++) {
    const [qx, qy] = toPixel(m, m.x[i], m.y[i]);
    const d = (qx - px) ** 2 + (qy - py) ** 2;
    if (d < bestD) { bestD = d; best = i; }
  }
  return best;
}

const testCache = new Map();
async function testDigit(i) {
  if (!testCache.has(i)) testCache.set(i, await api(`/api/test/${i}`));
  return testCache.get(i);
}

function canvasXY(e) {
  const c = $("map"), r = c.getBoundingClientRect();
  return [(e.clientX - r.left) * c.width / r.width, (e.clientY - r.top) * c.height / r.height, e.clientX - r.left, e.clientY - r.top];
}

const hoverMap = latest(async (e) => {
  const m = state.map;
  if (!m) return;
  const [px, py, cssX, cssY] = canvasXY(e);
  const i = nearestPoint(m, px, py, 10);
  const tip = $("tooltip");
  if (i < 0) { tip.hidden = true; return; }
  const item = await testDigit(i);
  drawDigit($("tip-digit"), item.image);
  $("tip-label").textContent = `test #${i}: ${item.label}`;
  tip.style.left = `${cssX + 14}px`; tip.style.top = `${cssY + 14}px`;
  tip.hidden = false;
});

async function clickMap(e) {
  const m = state.map;
  if (!m) return;
  const [px, py] = canvasXY(e);
  const [x, y] = toData(m, px, py);
  try {
    const out = await api(`/api/map/${encodeURIComponent(m.name)}/click`, { x, y });
    const what = out.kind === "decoded" ? `decoded ${m.axis} point (${x.toFixed(2)}, ${y.toFixed(2)})` : `nearest test digit #${out.index} (a ${out.label})`;
    const point = out.kind === "decoded" ? [x, y] : [m.x[out.index], m.y[out.index]];
    state.picked = { code: out.code, image: out.image, map: m.name, point, what };
    drawDigit($("pick"), out.image);
    $("pick-caption").textContent = what;
    $("pick").dataset.kind = out.kind;
    for (const id of ["pick-to-sliders", "pick-to-a", "pick-to-b"]) $(id).disabled = false;
    drawMap();
    setStatus("");
  } catch (err) { setStatus(err.message); }
}

// ------------------------------------------------------------------ sliders

let sliderInputs = [];
const decodeSliders = latest(async () => {
  const code = sliderInputs.map((s) => Number(s.value));
  const out = await api("/api/decode", { code });
  drawDigit($("slider-digit"), out.image);
  const c = $("slider-digit");
  c.dataset.updates = String(Number(c.dataset.updates || 0) + 1);
});

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
    const item = await testDigit(Math.floor(Math.random() * info.n_test));
    loadSliders(item.code, `test digit #${item.index} (a ${item.label})`);
  });
  decodeSliders();
}

function loadSliders(code, what) {
  sliderInputs.forEach((s, j) => { s.value = code[j]; s.valueLabel.textContent = Number(s.value).toFixed(2); });
  $("slider-source").textContent = `Started from: ${what}.`;
  decodeSliders();
  $("panel-sliders").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

// ------------------------------------------------------------------ samplers

function setupSamplers() {
  const box = $("samplers");
  for (const [name, s] of Object.entries(state.info.samplers)) {
    const div = document.createElement("div"); div.className = "sampler"; div.id = `sampler-${name}`;
    const h = document.createElement("h3"); h.textContent = s.label || name;
    const grid = document.createElement("div"); grid.className = "grid";
    div.append(h);
    if (s.conditional) {  // a conditional generator: pick the digit, or see every digit from the same noise
      const pick = document.createElement("select"); pick.className = "digit-pick"; pick.id = `digit-${name}`;
      pick.setAttribute("aria-label", `${name}: which digit to draw`);
      const options = [["", "mixed digits"], ...[...Array(10).keys()].map((d) => [String(d), `digit ${d}`]),
                       ["rows", "every digit, same noise (style kept, class changed)"]];
      for (const [value, text] of options) { const o = document.createElement("option"); o.value = value; o.textContent = text; pick.appendChild(o); }
      pick.addEventListener("change", () => newBatch());
      div.append(pick);
    }
    div.append(grid);
    if (!s.available) { const p = document.createElement("p"); p.className = "unavailable-reason"; p.textContent = `Unavailable: ${s.reason}`; div.appendChild(p); }
    box.appendChild(div);
  }
  $("new-batch").addEventListener("click", () => { state.seed += 1; newBatch(); });
  if (state.info.panels.samplers.available) newBatch();
}

async function newBatch() {
  $("batch-seed").textContent = `seed ${state.seed}`;
  const jobs = Object.entries(state.info.samplers).filter(([, s]) => s.available).map(async ([name]) => {
    const pick = document.getElementById(`digit-${name}`);
    const body = { sampler: name, n: 16, seed: state.seed };
    if (pick && pick.value === "rows") { body.every_digit = true; body.n = 8; }
    else if (pick && pick.value !== "") body.digit = Number(pick.value);
    const out = await api("/api/sample", body);
    const grid = document.querySelector(`#sampler-${name} .grid`);
    grid.textContent = "";
    grid.classList.toggle("rows", Boolean(out.rows));
    if (out.rows) out.rows.forEach((row, d) => row.forEach((img, i) => grid.appendChild(tile(img, `digit ${d}, noise ${i + 1}`))));
    else out.images.forEach((img) => grid.appendChild(tile(img)));
  });
  try { await Promise.all(jobs); } catch (e) { setStatus(e.message); }
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
    for (const which of ["a", "b"]) {
      const item = await testDigit(Math.floor(Math.random() * n));
      setEnd(which, item, `test digit #${item.index} (a ${item.label})`);
    }
    interpolate();
  });
  $("interpolate").addEventListener("click", interpolate);
}

async function interpolate() {
  const { a, b } = state.ends;
  if (!a || !b) { setStatus("set both ends A and B first"); return; }
  try {
    const out = await api("/api/interpolate", { a, b, steps: Number($("steps").value) });
    const strip = $("strip");
    strip.textContent = "";
    out.images.forEach((img, k) => strip.appendChild(tile(img, `step ${k}`)));
    setStatus("");
  } catch (e) { setStatus(e.message); }
}

window.addEventListener("DOMContentLoaded", () => { start().catch((e) => setStatus(e.message)); });
