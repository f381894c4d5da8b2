// The latent map of the test set: hover for a digit, click (or tap) to pick a point; with the
// keyboard, arrows move a cursor over the map (the digit under it is shown) and Enter picks there.
// The pick follows a change of map: a test digit is shown at its place on the new map, a point of the
// plane is picked again where it was on the screen (on a map without an inverse: the nearest digit).
import { $, COLORS, api, arrowStep, clearError, drawDigit, latest, showError, state, testDigit, TOUCH } from "./ui.js";
import { round, url } from "./state.js";

let hooks = {};
const cursor = { p: null, shown: false };  // the keyboard cursor, in canvas pixels

export async function setupMap(h) {
  hooks = h;
  const select = $("map-select");
  for (const [name, m] of Object.entries(state.info.maps)) {
    const opt = document.createElement("option");
    opt.value = name; opt.textContent = m.available ? `${m.axis} (${name})` : `${name}: unavailable`;
    opt.disabled = !m.available;
    select.appendChild(opt);
  }
  const linked = url.get("map");
  const first = Object.entries(state.info.maps).find(([name, m]) => m.available && name === linked)
    || Object.entries(state.info.maps).find(([, m]) => m.available);
  const legend = $("legend");
  COLORS.forEach((c, d) => { const s = document.createElement("span"); s.style.setProperty("--c", c); s.textContent = d; legend.appendChild(s); });
  for (const [cls, text] of [["yours", "the digit above (test, drawn or uploaded)"], ["picked", "picked point"], ["cursor keys", "keyboard cursor"]]) {
    const s = document.createElement("span"); s.className = `marker ${cls}`; s.textContent = text; legend.appendChild(s);
  }
  select.addEventListener("change", () => latest(async () => { await loadMap(select.value); await repick(); }, "map-error")());
  const canvas = $("map");
  canvas.setAttribute("aria-label", `latent map: ${TOUCH ? "tap a point to pick it" : "hover over a point to see its digit, click to pick it"}, or use the arrow keys to move a cursor and Enter to pick`);
  canvas.addEventListener("mousemove", (e) => { if (!TOUCH) hoverMap(...canvasXY(e)); });
  canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  canvas.addEventListener("click", (e) => { const [px, py] = canvasXY(e); pick(px, py); });
  canvas.addEventListener("focus", () => { if (!cursor.p) cursor.p = [canvas.width / 2, canvas.height / 2]; cursor.shown = true; drawMap(); });
  canvas.addEventListener("blur", () => { cursor.shown = false; $("tooltip").hidden = true; drawMap(); });
  canvas.addEventListener("keydown", (e) => {
    const step = arrowStep(e, 8, 40);
    if (step) {
      e.preventDefault();
      cursor.p = [Math.min(canvas.width, Math.max(0, cursor.p[0] + step[0])), Math.min(canvas.height, Math.max(0, cursor.p[1] + step[1]))];
      drawMap();
      const r = canvas.getBoundingClientRect();
      hoverMap(cursor.p[0], cursor.p[1], cursor.p[0] * r.width / canvas.width, cursor.p[1] * r.height / canvas.height);
    } else if (e.key === "Enter" || e.key === " ") {
      e.preventDefault(); pick(cursor.p[0], cursor.p[1]);
    } else if (e.key === "Escape") { $("tooltip").hidden = true; }
  });
  $("pick-to-sliders").addEventListener("click", () => hooks.toSliders(state.picked.code, state.picked.what));
  $("pick-to-a").addEventListener("click", () => hooks.toEnd("a", state.picked, state.picked.what));
  $("pick-to-b").addEventListener("click", () => hooks.toEnd("b", state.picked, state.picked.what));
  if (!first) return;
  select.value = first[0];
  await loadMap(first[0]);
  // The pick the page opens with: the address's point, else the test digit the page shows.
  const point = url.numbers("pick", 2);
  if (point) { const [px, py] = toPixel(state.map, point[0], point[1]); await pick(px, py); }
  else if (state.drawn && state.drawn.index != null) await pickTest(state.drawn.index, state.drawn.what);
}

// Test digit `index` as the pick, at its own place on the current map.
export async function pickTest(index, what) {
  const m = state.map, item = await testDigit(index);
  const desc = what || `test digit #${item.index} (a ${item.label})`;
  state.picked = { code: item.code, image: item.image, map: m.name, point: [m.x[index], m.y[index]], kind: "test", index, what: desc };
  url.set("pick", `${round(m.x[index])},${round(m.y[index])}`);
  drawDigit($("pick"), item.image);
  $("pick-caption").textContent = `${desc}, at its place on the ${m.axis} map`;
  $("pick").dataset.kind = "test";
  enablePick();
  drawMap();
}

// After a change of map: the same test digit, or the same place on the screen picked again.
async function repick() {
  const p = state.picked;
  if (!p) return;
  if (p.kind === "decoded") await pick(p.px, p.py);
  else await pickTest(p.index);
}

function enablePick() {
  const panels = state.info.panels;
  $("pick-to-sliders").disabled = !panels.sliders.available;
  $("pick-to-a").disabled = $("pick-to-b").disabled = !panels.interpolate.available;
}

async function loadMap(name) {
  const data = await api(`/api/map/${encodeURIComponent(name)}`);
  const pad = 0.05;
  const bounds = (v) => { let lo = Infinity, hi = -Infinity; for (const a of v) { if (a < lo) lo = a; if (a > hi) hi = a; } const s = (hi - lo) || 1; return [lo - pad * s, hi + pad * s]; };
  data.bx = bounds(data.x); data.by = bounds(data.y);
  state.map = data;
  url.set("map", name);
  // One word per action: on a touch screen a tap picks (there is no hover), with a mouse hovering
  // shows the digit nearby and a click picks.
  const why = ["pca", "latent"].includes(data.name) ? "this run has no decoder" : `${data.axis} has no inverse`;
  const picks = data.decodable
    ? "decodes that point of the plane"
    : `shows the nearest test digit (${why}, so points between digits are not decoded)`;
  $("map-note").textContent = TOUCH ? `A tap ${picks}.` : `Hover: the test digit nearby. A click ${picks}.`;
  if (!state.picked) $("pick-caption").textContent = `${TOUCH ? "tap" : "click"} the map: it ${picks}`;
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

export function drawMap() {
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
  const drawn = state.drawn;
  if (drawn && drawn.index != null) mark([m.x[drawn.index], m.y[drawn.index]], "#facc15");
  else if (drawn && drawn.positions && drawn.positions[m.name]) mark(drawn.positions[m.name], "#facc15");
  if (cursor.shown && cursor.p) {  // a crosshair, as in the legend
    const [px, py] = cursor.p;
    ctx.lineWidth = 2; ctx.strokeStyle = "#111";
    ctx.beginPath(); ctx.moveTo(px - 12, py); ctx.lineTo(px + 12, py); ctx.moveTo(px, py - 12); ctx.lineTo(px, py + 12); ctx.stroke();
  }
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

function canvasXY(e) {
  const c = $("map"), r = c.getBoundingClientRect();
  return [(e.clientX - r.left) * c.width / r.width, (e.clientY - r.top) * c.height / r.height, e.clientX - r.left, e.clientY - r.top];
}

// The test digit near canvas point (px, py), in a tooltip beside CSS point (cssX, cssY), kept
// inside the map's box (so it never widens the page on a phone).
const hoverMap = latest(async (px, py, cssX, cssY) => {
  const m = state.map;
  if (!m) return;
  const i = nearestPoint(m, px, py, 12);
  const tip = $("tooltip");
  if (i < 0) { tip.hidden = true; return; }
  const item = await testDigit(i);
  drawDigit($("tip-digit"), item.image);
  $("tip-label").textContent = `test #${i}: ${item.label}`;
  tip.hidden = false;
  const box = $("map").getBoundingClientRect();
  const left = cssX + 14 + tip.offsetWidth > box.width ? cssX - 14 - tip.offsetWidth : cssX + 14;
  const top = cssY + 14 + tip.offsetHeight > box.height ? cssY - 14 - tip.offsetHeight : cssY + 14;
  tip.style.left = `${Math.max(0, left)}px`; tip.style.top = `${Math.max(0, top)}px`;
}, "map-error");

// Pick canvas point (px, py) of the current map: decoded where the map has an inverse, else the
// nearest test digit; the caption says which.
async function pick(px, py) {
  const m = state.map;
  if (!m) return;
  const [x, y] = toData(m, px, py);
  try {
    const out = await api(`/api/map/${encodeURIComponent(m.name)}/click`, { x, y });
    const what = out.kind === "decoded"
      ? `decoded ${m.axis} point (${x.toFixed(2)}, ${y.toFixed(2)})`
      : `test digit #${out.index} (a ${out.label}), the nearest to the point picked on the ${m.axis} map`;
    const point = out.kind === "decoded" ? [x, y] : [m.x[out.index], m.y[out.index]];
    state.picked = { code: out.code, image: out.image, map: m.name, point, px, py, kind: out.kind, index: out.index, what };
    drawDigit($("pick"), out.image);
    $("pick-caption").textContent = what;
    $("pick").dataset.kind = out.kind;
    enablePick();
    url.set("pick", `${round(x)},${round(y)}`);
    drawMap();
    clearError("map-error");
  } catch (err) { showError("map-error", err); }
}
