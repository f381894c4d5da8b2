// The samplers side by side: the autoencoder's code samplers and one card per generator run, a
// count to draw (16, 64, 256), and each grid as a PNG or a .npy file (GET /api/sample.png|.npy). A
// generator that solves an ODE also gets a steps slider and the strip of one digit's way from noise.
import { $, api, clearError, showError, state, tile } from "./ui.js";

const DOWNLOADS = [["png", "PNG"], ["npy", ".npy"]];

export function setupSamplers() {
  const box = $("samplers");
  const counts = $("sample-count");
  for (const n of state.info.limits.sample_counts || [16]) {
    const o = document.createElement("option"); o.value = String(n); o.textContent = String(n); counts.appendChild(o);
  }
  counts.value = "16";
  counts.addEventListener("change", () => newBatch());
  for (const [name, s] of Object.entries(state.info.samplers)) {
    const div = document.createElement("div"); div.className = "sampler"; div.id = `sampler-${name}`;
    const h = document.createElement("h3"); h.textContent = s.label || name;
    const grid = document.createElement("div"); grid.className = "grid";
    div.append(h);
    if (s.conditional && s.available) {  // a conditional generator: pick the digit, or see every digit from the same noise
      const pick = document.createElement("select"); pick.className = "digit-pick"; pick.id = `digit-${name}`;
      pick.setAttribute("aria-label", `${name}: which digit to draw`);
      const options = [["", "mixed digits"], ...[...Array(10).keys()].map((d) => [String(d), `digit ${d}`]),
                       ["rows", "every digit, same noise (style kept, class changed)"]];
      for (const [value, text] of options) { const o = document.createElement("option"); o.value = value; o.textContent = text; pick.appendChild(o); }
      pick.addEventListener("change", () => drawOne(name));
      div.append(pick);
    }
    if (s.steps && s.available) {  // an ODE solver: how many network evaluations per digit
      const label = document.createElement("label"); label.className = "steps";
      const slider = document.createElement("input"); slider.type = "range"; slider.id = `steps-${name}`;
      slider.min = "1"; slider.max = String(s.steps.max); slider.value = String(s.steps.default);
      slider.setAttribute("aria-label", `${name}: solver steps per digit`);
      const shown = document.createElement("span"); shown.id = `steps-shown-${name}`; shown.textContent = `${slider.value} steps`;
      slider.addEventListener("input", () => { shown.textContent = `${slider.value} step${slider.value === "1" ? "" : "s"}`; });
      slider.addEventListener("change", () => drawOne(name));
      label.append("steps ", slider, " ", shown);
      div.append(label);
    }
    div.append(grid);
    if (s.trajectory && s.available) {  // the first digit's way from noise, one frame per step
      const cap = document.createElement("p"); cap.className = "strip-caption";
      cap.textContent = "from noise (left) to digit (right), one frame per solver step:";
      const strip = document.createElement("div"); strip.className = "strip"; strip.id = `path-${name}`;
      div.append(cap, strip);
    }
    if (s.available) {
      const links = document.createElement("div"); links.className = "downloads";
      links.append("download: ");
      for (const [kind, text] of DOWNLOADS) {
        const a = document.createElement("a"); a.id = `${kind}-${name}`; a.textContent = text; a.download = "";
        a.setAttribute("aria-label", `download the ${name} grid as ${text}`);
        links.append(a, " ");
      }
      const err = document.createElement("p"); err.className = "error"; err.id = `error-${name}`; err.hidden = true;
      err.setAttribute("role", "alert"); err.dataset.where = `the ${name} sampler`;
      div.append(links, err);
    } else { const p = document.createElement("p"); p.className = "unavailable-reason"; p.textContent = `Unavailable: ${s.reason}`; div.appendChild(p); }
    box.appendChild(div);
  }
  $("new-batch").addEventListener("click", () => { state.seed += 1; newBatch(); });
  if (state.info.panels.samplers.available) newBatch();
}

// The request of sampler `name` as it stands: {sampler, n, seed, digit?, every_digit?}.
function request(name) {
  const pick = document.getElementById(`digit-${name}`);
  const n = Number($("sample-count").value);
  const body = { sampler: name, n, seed: state.seed };
  if (pick && pick.value === "rows") { body.every_digit = true; body.n = Math.min(8, n); }
  else if (pick && pick.value !== "") body.digit = Number(pick.value);
  const steps = document.getElementById(`steps-${name}`);
  if (steps) body.steps = Number(steps.value);
  return body;
}

function columns(n) { return n <= 16 ? 4 : n <= 64 ? 8 : 16; }

async function drawOne(name) {
  const body = request(name);
  const query = new URLSearchParams(Object.entries(body).map(([k, v]) => [k, v === true ? "1" : String(v)]));
  for (const [kind] of DOWNLOADS) $(`${kind}-${name}`).href = `/api/sample.${kind}?${query}`;
  const err = $(`error-${name}`);
  try {
    const out = await api("/api/sample", body);
    const grid = document.querySelector(`#sampler-${name} .grid`);
    grid.textContent = "";
    grid.classList.toggle("rows", Boolean(out.rows));
    const cols = out.rows ? out.n : columns(out.n), size = out.rows ? 30 : cols <= 4 ? 58 : cols <= 8 ? 40 : 28;
    grid.style.setProperty("--cols", String(cols));
    grid.style.setProperty("--w", `${cols * size}px`);
    if (out.rows) out.rows.forEach((row, d) => row.forEach((img, i) => grid.appendChild(tile(img, `digit ${d}, noise ${i + 1}`))));
    else out.images.forEach((img, i) => grid.appendChild(tile(img, `${name} sample ${i + 1}`)));
    grid.dataset.count = String(grid.children.length);
    const strip = document.getElementById(`path-${name}`);
    if (strip) {
      const { sampler, seed, digit, steps } = body;
      const path = await api("/api/trajectory", digit === undefined ? { sampler, seed, steps } : { sampler, seed, digit, steps });
      strip.textContent = "";
      path.images.forEach((img, i) => strip.appendChild(tile(img, i === 0 ? "noise" : `after step ${i}`)));
      strip.dataset.count = String(strip.children.length);
    }
    clearError(err);
  } catch (e) { showError(err, e); }
}

async function newBatch() {
  $("batch-seed").textContent = `seed ${state.seed}`;
  const names = Object.entries(state.info.samplers).filter(([, s]) => s.available).map(([name]) => name);
  await Promise.all(names.map(drawOne));
}
