// The page's state in its address (the part after #), so that a reload restores the view and a shared
// link opens the same one: run, panel, digit (the test index shown), map, pick (a point of the map),
// z (the sliders), sigma, n and seed (the samplers), a, b and steps (the interpolation), and per
// sampler NAME.digit / NAME.steps. Written with history.replaceState: no history entry per change.

const params = new URLSearchParams(location.hash.slice(1));

export const url = {
  get(key) { return params.get(key); },
  // A whole number in lo..hi, or null when the address has none (or a bad one: it is ignored).
  int(key, lo, hi) {
    const v = params.get(key);
    if (v === null || !/^[0-9]{1,10}$/.test(v)) return null;
    const n = Number(v);
    return n >= lo && n <= hi ? n : null;
  },
  // Finite numbers separated by commas, exactly `count` of them, or null.
  numbers(key, count) {
    const v = params.get(key);
    if (v === null) return null;
    const out = v.split(",").map(Number);
    return out.length === count && out.every(Number.isFinite) ? out : null;
  },
  set(key, value) {
    if (value === null || value === undefined || value === "") params.delete(key);
    else params.set(key, String(value));
    // Commas (in z and pick) are left as they are: the address stays readable.
    const text = [...params].map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v).replace(/%2C/g, ",")}`).join("&");
    history.replaceState(null, "", text ? `#${text}` : location.pathname + location.search);
  },
};

export const round = (v, digits = 4) => Number(Number(v).toFixed(digits));

// A link pasted into the same tab changes only the hash: read it as a fresh start.
window.addEventListener("hashchange", () => location.reload());
