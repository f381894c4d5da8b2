// The drawing pad and the upload: what is analysed is always the current source (a test digit, the
// pad, or the uploaded file until the pad is drawn on), so a change of the noise sigma re-analyses
// that source. The page opens on a test digit (showTestDigit): the digit itself, exactly, with its
// code, reconstruction, prediction and denoising; the first stroke on the pad replaces it.
import { $, api, arrowStep, clearCanvas, clearError, count, drawDigit, showError, state, latest, testDigit, TOUCH } from "./ui.js";
import { url } from "./state.js";

const source = { kind: null, file: null, index: null, generation: 0 };  // kind: null | "test" | "pad" | "upload"
let hooks = {};

export function setupPad(h) {
  hooks = h;
  const pad = $("pad"), ctx = pad.getContext("2d");
  clearCanvas(pad);
  pad.setAttribute("aria-label", `drawing pad: draw a digit with ${TOUCH ? "a finger" : "the mouse"}, or with the keyboard (arrows move the pen, Enter puts it down or lifts it)`);
  let drawing = false, last = null, dirty = false;
  const pos = (e) => { const r = pad.getBoundingClientRect(); return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height]; };
  const send = latest(analyzePad, "draw-error");
  // A test digit on the pad is replaced by the first stroke, not drawn over.
  const fresh = () => { if (source.kind === "test") { clearAll(); } };
  const dot = (p) => { ctx.fillStyle = "#fff"; ctx.beginPath(); ctx.arc(p[0], p[1], 9, 0, 2 * Math.PI); ctx.fill(); };
  const line = (a, b) => {
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 18; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
  };
  pad.addEventListener("pointerdown", (e) => {
    fresh();
    drawing = true; last = pos(e);
    try { pad.setPointerCapture(e.pointerId); } catch (err) { /* a synthetic pointer has nothing to capture */ }
    dot(last); dirty = true; source.kind = "pad";
  });
  pad.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    const p = pos(e);
    line(last, p);
    last = p; dirty = true;
    send();  // live while drawing; at most one request in flight
  });
  const end = () => { if (drawing) { drawing = false; if (dirty) send(); } };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);

  // The keyboard: a cursor the arrows move (Shift: faster); Enter or Space puts the pen down (a dot)
  // or lifts it (the drawing is analysed); Escape lifts it too; Delete clears the pad.
  const cursor = { p: [pad.width / 2, pad.height / 2], down: false };
  const mark = $("pad-cursor");
  const place = () => {
    mark.style.left = `${(100 * cursor.p[0]) / pad.width}%`;
    mark.style.top = `${(100 * cursor.p[1]) / pad.height}%`;
    mark.classList.toggle("down", cursor.down);
  };
  pad.addEventListener("focus", () => { place(); mark.hidden = false; });
  pad.addEventListener("blur", () => { mark.hidden = true; if (cursor.down) { cursor.down = false; send(); } });
  pad.addEventListener("keydown", (e) => {
    const step = arrowStep(e, 10, 40);
    if (step) {
      e.preventDefault();
      const p = [Math.min(pad.width - 1, Math.max(0, cursor.p[0] + step[0])), Math.min(pad.height - 1, Math.max(0, cursor.p[1] + step[1]))];
      if (cursor.down) { line(cursor.p, p); source.kind = "pad"; send(); }
      cursor.p = p; place();
    } else if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      cursor.down = !cursor.down;
      if (cursor.down) { fresh(); dot(cursor.p); source.kind = "pad"; } else send();
      place();
    } else if (e.key === "Escape" && cursor.down) {
      cursor.down = false; place(); send();
    } else if (e.key === "Delete" || e.key === "Backspace") {
      e.preventDefault(); clearAll();
    }
  });

  $("clear").addEventListener("click", () => { clearAll(); dirty = false; });
  $("sigma").addEventListener("change", () => {
    url.set("sigma", $("sigma").value);
    if (source.kind === "pad") send();
    else if (source.kind === "upload") latest(() => analyzeBlob(source.file), "draw-error")();
    else if (source.kind === "test") latest(() => showTestDigit(source.index), "draw-error")();
  });
  $("next-digit").addEventListener("click", () => {
    const n = state.info.n_test, i = source.index === null ? state.info.start_index : source.index + 1;
    latest(() => showTestDigit(i % n), "draw-error")();
  });
  // A real button opens the file dialog (Tab reaches it, Enter or Space presses it).
  $("upload-button").addEventListener("click", () => $("upload").click());
  $("upload").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    // The upload is the source from now on: answers to the pad's earlier requests are stale (a late one
    // would show the old drawing over the upload), and a pad request still queued is not sent.
    const previous = { kind: source.kind, file: source.file };
    source.kind = "upload"; source.file = file; source.generation += 1;
    try {
      await analyzeBlob(file, true);
      clearError("draw-error");
    } catch (err) {
      Object.assign(source, previous);
      showError("draw-error", `upload refused: ${err.message}`);
    }
    e.target.value = "";
  });
  $("draw-to-sliders").addEventListener("click", () => hooks.toSliders(state.drawn.code, state.drawn.what));
  $("draw-to-a").addEventListener("click", () => hooks.toEnd("a", state.drawn, state.drawn.what));
  $("draw-to-b").addEventListener("click", () => hooks.toEnd("b", state.drawn, state.drawn.what));
}

// Test digit `index` as the current source: shown on the pad and, exactly as the test set holds it
// (no resizing), as the model sees it, with its reconstruction, prediction and denoising.
export async function showTestDigit(index) {
  const p = state.info.panels;
  const item = await testDigit(index);
  source.kind = "test"; source.index = item.index; source.file = null; source.generation += 1;
  const generation = source.generation;
  const sigma = Number($("sigma").value);
  const [recon, probs, noise] = await Promise.all([
    p.reconstruct.available ? api("/api/decode", { code: item.code }) : null,
    p.classify.available ? api("/api/classify", { code: item.code }) : null,
    p.denoise.available ? api("/api/denoise", { image: item.image, sigma, seed: 0 }) : null,
  ]);
  if (generation !== source.generation) return item;  // replaced meanwhile
  showOnPad(item.image);
  drawDigit($("seen"), item.image);
  for (const id of ["recon", "noisy", "denoised"]) clearCanvas($(id));
  if (recon) drawDigit($("recon"), recon.image);
  if (noise) { drawDigit($("noisy"), noise.noisy); drawDigit($("denoised"), noise.denoised); }
  showProbs(probs || {});
  const what = `test digit #${item.index} (a ${item.label})`;
  $("pad-source").textContent = `Showing ${what}. Draw to replace it, upload a photo, or take the next one.`;
  state.drawn = { code: item.code, image: item.image, index: item.index, what };
  enableUse(true);
  url.set("digit", item.index);
  count(document.body, "analyses");
  hooks.redrawMap();
  return item;
}

// The buttons that pass the current digit on, each only where its panel can take it.
function enableUse(on) {
  const p = state.info.panels;
  $("draw-to-sliders").disabled = !(on && p.sliders.available);
  $("draw-to-a").disabled = $("draw-to-b").disabled = !(on && p.interpolate.available);
}

function analyzePad() {
  if (source.kind !== "pad") return Promise.resolve();  // queued before an upload replaced the drawing
  // The generation is taken now, not in toBlob's (asynchronous) callback: an upload that lands in
  // between makes this drawing's answer stale.
  const generation = source.generation;
  return new Promise((resolve, reject) => $("pad").toBlob((blob) => analyzeBlob(blob, false, generation).then(resolve, reject), "image/png"));
}

// Clear: the pad, what was computed from it, and the drawing's place on the map.
function clearAll() {
  source.kind = null; source.file = null; source.generation += 1;
  $("pad-source").textContent = "";
  clearCanvas($("pad"));
  for (const id of ["seen", "recon", "noisy", "denoised"]) clearCanvas($(id));
  $("prediction").textContent = "–";
  delete $("prediction").dataset.digit;
  $("probs").textContent = "";
  state.drawn = null;
  enableUse(false);
  clearError("draw-error");
  hooks.redrawMap();
}

async function analyzeBlob(blob, uploaded, generation = source.generation) {
  const sigma = $("sigma").value;
  const out = await api(`/api/analyze?sigma=${sigma}&seed=0`, blob, true);
  if (generation !== source.generation) return;  // cleared meanwhile: the answer is stale
  count(document.body, "analyses");
  drawDigit($("seen"), out.input);
  if (uploaded) showOnPad(out.input);
  for (const id of ["recon", "noisy", "denoised"]) clearCanvas($(id));
  if (out.reconstruction) drawDigit($("recon"), out.reconstruction);
  if (out.denoised) { drawDigit($("noisy"), out.noisy); drawDigit($("denoised"), out.denoised); }
  if (!out.code && state.info.panels.classify.available) {
    // A classifier without a decoder: /api/analyze stops at the missing reconstruction, so the digit
    // as the model sees it is classified on its own.
    const c = await api("/api/classify", { image: out.input });
    if (generation !== source.generation) return;
    Object.assign(out, c);
  }
  showProbs(out);
  $("pad-source").textContent = uploaded ? "Showing your upload, as the model sees it: draw on it, or clear the pad." : "";
  state.drawn = null;
  if (out.code) state.drawn = { code: out.code, image: out.input, positions: out.positions, what: uploaded ? "uploaded digit" : "drawn digit" };
  enableUse(Boolean(out.code));
  hooks.redrawMap();
}

// The uploaded digit, as the model sees it, smoothly scaled onto the pad: drawing continues on it.
function showOnPad(rows) {
  const small = document.createElement("canvas");
  small.width = small.height = 28;
  drawDigit(small, rows);
  const pad = $("pad"), ctx = pad.getContext("2d");
  clearCanvas(pad);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(small, 0, 0, pad.width, pad.height);
}

function showProbs(out) {
  const bars = $("probs");
  bars.textContent = "";
  if (!out.probs) { $("prediction").textContent = "–"; delete $("prediction").dataset.digit; return; }
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
