// The samplers side by side: the autoencoder's code samplers and one card per generator run, a
// count to draw (16, 64, 256), and each grid as a PNG or a .npy file (GET /api/sample.png|.npy). A
// generator that solves an ODE also gets a steps slider and the strip of one digit's way from noise.
// Every grid's digits are drawn at the same whole multiple of 28 px for a count, so the panels
// compare side by side; the scores the sampler's run recorded stand beside its grid.
import { $, api, clearError, showError, state, tile } from "./ui.js";
import { url } from "./state.js";

const DOWNLOADS = [["png", "PNG"], ["npy", ".npy"]];

export function setupSamplers() {
  const box = $("samplers");
  const counts = $("sample-count");
  for (const n of state.info.limits.sample_counts || [16]) {
    const o = document.createElement("option"); o.value = String(n); o.textContent = String(n); counts.appendChild(o);
  }
  const n = url.get("n");
  counts.value = [...counts.options].some((o) => o.value === n) ? n : "16";
  state.seed = url.int("seed", 0, 2 ** 31 - 1) ?? 0;
  counts.addEventListener("change", () => { url.set("n", counts.value); newBatch(); });
  for (const [name, s] of Object.entries(state.info.samplers)) {
    const div = document.createElement("div"); div.className = "sampler"; div.id = `sampler-${name}`;
    const h = document.createElement("h3"); h.textContent = s.label || name;
    const grid = document.createElement("div"); grid.className = "grid";
    div.append(h);
    if (s.score && s.available) div.append(scoreLine(s.score));
    if (s.conditional && s.available) {  // a conditional generator: pick the digit, or see every digit from the same noise
      const pick = document.createElement("select"); pick.className = "digit-pick"; pick.id = `digit-${name}`;
      pick.setAttribute("aria-label", `${name}: which digit to draw`);
      const options = [["", "mixed digits"], ...[...Array(10).keys()].map((d) => [String(d), `digit ${d}`]),
                       ["rows", "every digit, same noise (style kept, class changed)"]];
      for (const [value, text] of options) { const o = document.createElement("option"); o.value = value; o.textContent = text; pick.appendChild(o); }
      const linked = url.get(`${name}.digit`);
      if (linked !== null && options.some(([v]) => v === linked)) pick.value = linked;
      pick.addEventListener("change", () => { url.set(`${name}.digit`, pick.value); drawOne(name); });
      div.append(pick);
    }
    if (s.steps && s.available) {  // an ODE solver: how many network evaluations per digit
      const label = document.createElement("label"); label.className = "steps";
      const slider = document.createElement("input"); slider.type = "range"; slider.id = `steps-${name}`;
      slider.min = "1"; slider.max = String(s.steps.max);
      slider.value = String(url.int(`${name}.steps`, 1, s.steps.max) ?? s.steps.default);
      slider.setAttribute("aria-label", `${name}: solver steps per digit`);
      const shown = document.createElement("span"); shown.id = `steps-shown-${name}`;
      const say = () => { shown.textContent = `${slider.value} step${slider.value === "1" ? "" : "s"}`; };
      say();
      slider.addEventListener("input", say);
      slider.addEventListener("change", () => { url.set(`${name}.steps`, slider.value); drawOne(name); });
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
  $("new-batch").addEventListener("click", () => { state.seed += 1; url.set("seed", state.seed); newBatch(); });
  if (state.info.panels.samplers.available) newBatch();
}

// The scores the run recorded for this sampler (its summary.json), with the direction of each.
function scoreLine(score) {
  const p = document.createElement("p"); p.className = "score";
  const both = [["precision", score.precision], ["recall", score.recall]].filter(([, v]) => v != null);
  const pr = both.length ? `; ${both.map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ")} (higher is better)` : "";
  const n = score.n_samples != null ? ` on ${score.n_samples.toLocaleString("en")} samples` : "";
  const steps = score.steps != null ? ` at ${score.steps} steps` : "";
  p.textContent = `Recorded${n}${steps}: FID-MNIST ${score.fid_mnist.toFixed(1)} (lower is better)${pr}.`;
  p.title = `from ${score.where}`;
  const where = document.createElement("span"); where.className = "muted"; where.textContent = ` (${score.where})`;
  p.appendChild(where);
  return p;
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

// Columns and the tile's side in CSS px for n digits: whole multiples of the digits' 28 px, the same
// for every panel (a phone's narrower card shrinks all of them alike).
function columns(n) { return n <= 16 ? 4 : n <= 64 ? 8 : 16; }
function tileSide(n) { return n <= 16 ? 56 : 28; }

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
    const cols = out.rows ? out.n : columns(out.n), size = out.rows ? 28 : tileSide(out.n);
    grid.style.setProperty("--cols", String(cols));
    grid.style.setProperty("--tile", `${size}px`);
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
