// Shared pieces of the explorer page: the state, the API call, errors shown beside their control,
// drawing 28x28 digits. No libraries, no network beyond this server.

export const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
export const $ = (id) => document.getElementById(id);
export const state = { info: null, drawn: null, picked: null, ends: { a: null, b: null }, map: null, seed: 0 };
// A phone or tablet: no hover, so the page says "tap" and never "hover".
export const TOUCH = window.matchMedia("(hover: none), (pointer: coarse)").matches;

// ------------------------------------------------------------------ errors

// An error is shown beside the control that caused it (an element with class "error" and
// role="alert" in that panel) and summed up in the header line; both go when that control succeeds.
export function showError(target, err) {
  const el = typeof target === "string" ? $(target) : target;
  const message = err instanceof Error ? err.message : String(err);
  el.textContent = message;
  el.hidden = false;
  const status = $("status");
  status.textContent = `${message} (${el.dataset.where || "see the panel"})`;
  status.dataset.from = el.id;
}

export function clearError(target) {
  const el = typeof target === "string" ? $(target) : target;
  if (el.hidden && !el.textContent) return;
  el.hidden = true;
  el.textContent = "";
  const status = $("status");
  if (status.dataset.from === el.id) { status.textContent = ""; delete status.dataset.from; }
}

export function setStatus(text) { $("status").textContent = text || ""; delete $("status").dataset.from; }

// ------------------------------------------------------------------ the API

export async function api(path, body, raw) {
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

// Run `fn` at most once at a time; a call while it runs is remembered and run after (latest wins).
// Its errors go beside `errorTarget`; a success clears them.
export function latest(fn, errorTarget) {
  let running = false, pending = null;
  return async function run(...args) {
    if (running) { pending = args; return; }
    running = true;
    try {
      await fn(...args);
      if (errorTarget) clearError(errorTarget);
    } catch (e) {
      if (errorTarget) showError(errorTarget, e); else setStatus(e.message);
    }
    running = false;
    if (pending) { const a = pending; pending = null; run(...a); }
  };
}

// ------------------------------------------------------------------ digits

// Draw a 28x28 uint8 array (rows) on a 28x28 canvas; CSS scales it up pixelated.
export function drawDigit(canvas, rows) {
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(28, 28);
  for (let r = 0; r < 28; r++) for (let c = 0; c < 28; c++) {
    const v = rows[r][c], i = (r * 28 + c) * 4;
    img.data[i] = img.data[i + 1] = img.data[i + 2] = v; img.data[i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

export function tile(rows, title) {
  const c = document.createElement("canvas");
  c.width = c.height = 28; c.className = "digit tile";
  if (title) { c.title = title; c.setAttribute("aria-label", title); }
  drawDigit(c, rows);
  return c;
}

export function clearCanvas(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height);
}

export function count(el, key) { el.dataset[key] = String(Number(el.dataset[key] || 0) + 1); }

// Arrow keys as a step (dx, dy), Shift for a bigger one; null for other keys.
export function arrowStep(e, small, big) {
  const s = e.shiftKey ? big : small;
  return { ArrowLeft: [-s, 0], ArrowRight: [s, 0], ArrowUp: [0, -s], ArrowDown: [0, s] }[e.key] || null;
}

const testCache = new Map();
export async function testDigit(i) {
  if (!testCache.has(i)) testCache.set(i, await api(`/api/test/${i}`));
  return testCache.get(i);
}
