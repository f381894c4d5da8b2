// The drawing pad and the upload: what is analysed is always the current source (the pad, or the
// uploaded file until the pad is drawn on), so a change of the noise sigma re-analyses that source.
import { $, api, arrowStep, clearCanvas, clearError, count, drawDigit, showError, state, latest, TOUCH } from "./ui.js";

const source = { kind: null, file: null, generation: 0 };  // kind: null | "pad" | "upload"
let hooks = {};

export function setupPad(h) {
  hooks = h;
  const pad = $("pad"), ctx = pad.getContext("2d");
  clearCanvas(pad);
  pad.setAttribute("aria-label", `drawing pad: draw a digit with ${TOUCH ? "a finger" : "the mouse"}, or with the keyboard (arrows move the pen, Enter puts it down or lifts it)`);
  let drawing = false, last = null, dirty = false;
  const pos = (e) => { const r = pad.getBoundingClientRect(); return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height]; };
  const send = latest(analyzePad, "draw-error");
  const dot = (p) => { ctx.fillStyle = "#fff"; ctx.beginPath(); ctx.arc(p[0], p[1], 9, 0, 2 * Math.PI); ctx.fill(); };
  const line = (a, b) => {
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 18; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
  };
  pad.addEventListener("pointerdown", (e) => {
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
      if (cursor.down) { dot(cursor.p); source.kind = "pad"; } else send();
      place();
    } else if (e.key === "Escape" && cursor.down) {
      cursor.down = false; place(); send();
    } else if (e.key === "Delete" || e.key === "Backspace") {
      e.preventDefault(); clearAll();
    }
  });

  $("clear").addEventListener("click", () => { clearAll(); dirty = false; });
  $("sigma").addEventListener("change", () => {
    if (source.kind === "pad") send();
    else if (source.kind === "upload") latest(() => analyzeBlob(source.file), "draw-error")();
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
  clearCanvas($("pad"));
  for (const id of ["seen", "recon", "noisy", "denoised"]) clearCanvas($(id));
  $("prediction").textContent = "–";
  delete $("prediction").dataset.digit;
  $("probs").textContent = "";
  state.drawn = null;
  for (const id of ["draw-to-sliders", "draw-to-a", "draw-to-b"]) $(id).disabled = true;
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
  showProbs(out);
  if (out.code) {
    state.drawn = { code: out.code, image: out.input, positions: out.positions, what: uploaded ? "uploaded digit" : "drawn digit" };
    for (const id of ["draw-to-sliders", "draw-to-a", "draw-to-b"]) $(id).disabled = false;
    hooks.redrawMap();
  }
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
