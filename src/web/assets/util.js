// Small helpers shared by every view: building DOM, formatting figures the
// same way everywhere, and throttling work so updates never pile up.

/** The element with this id (views look their parts up once, at start). */
export const byId = (id) => document.getElementById(id);

/**
 * Build an element: h('div', {class: 'x', onclick: f, dataset: {a: 1}}, child, ...).
 * Strings become text nodes, never HTML, so names from the network are safe.
 */
export function h(tag, props, ...children) {
  const el = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.setAttribute('class', v);
    else if (k === 'text') el.textContent = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** An inline icon from the sprite in index.html. */
export function icon(name) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  const use = document.createElementNS('http://www.w3.org/2000/svg', 'use');
  use.setAttribute('href', `#i-${name}`);
  svg.append(use);
  svg.setAttribute('aria-hidden', 'true');
  return svg;
}

/** Set text only when it differs: a DOM write costs more than a compare. */
export function setText(el, text) {
  const s = String(text);
  if (el.textContent !== s) el.textContent = s;
}

/** Set an attribute only when it differs. */
export function setAttr(el, name, value) {
  const s = String(value);
  if (el.getAttribute(name) !== s) el.setAttribute(name, s);
}

// Formatters are made once: making an Intl formatter per call costs more
// than the rest of a row's update.
const intFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const clockFmt = new Intl.DateTimeFormat([], { hour12: false, hour: '2-digit', minute: '2-digit', second: '2-digit' });
const hmFmt = new Intl.DateTimeFormat([], { hour12: false, hour: '2-digit', minute: '2-digit' });
const dayFmt = new Intl.DateTimeFormat([], { day: 'numeric', month: 'short' });

export const fmt = {
  int: (n) => (n == null ? '–' : intFmt.format(n)),
  pct: (x) => (x == null || !isFinite(x) ? '–' : `${Math.round(x * 100)}%`),
  pct1: (x) => (x == null || !isFinite(x) ? '–' : `${(x * 100).toFixed(x < 0.1 ? 1 : 0)}%`),

  /** Bytes in powers of 1024, 3 significant figures: 1.46 GB, 512 MB. */
  bytes(n) {
    if (n == null || !isFinite(n)) return '–';
    const units = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];
    let i = 0;
    let v = n;
    while (v >= 1000 && i < units.length - 1) { v /= 1024; i += 1; }
    return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(v >= 10 ? 1 : 2)} ${units[i]}`;
  },

  /** A span of seconds the way people say it: 45s, 12m, 2h 05m, 3d 4h. */
  duration(secs) {
    if (secs == null || !isFinite(secs)) return '–';
    const s = Math.max(0, Math.round(secs));
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
    const hr = Math.floor(m / 60);
    if (hr < 48) return `${hr}h ${String(m % 60).padStart(2, '0')}m`;
    return `${Math.floor(hr / 24)}d ${hr % 24}h`;
  },

  /** A render time: 840 ms below a second, else as a duration. */
  ms: (ms) => (ms == null || !isFinite(ms) ? '–' : ms < 1000 ? `${Math.round(ms)} ms` : fmt.duration(ms / 1000)),

  /** How long ago, compactly: now, 12s, 4m, 3h, 2d. */
  ago(ms) {
    if (ms == null || !isFinite(ms)) return '–';
    const s = Math.floor(ms / 1000);
    if (s < 5) return 'now';
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m`;
    if (s < 172800) return `${Math.floor(s / 3600)}h`;
    return `${Math.floor(s / 86400)}d`;
  },

  /** Wall-clock time of day, 24 h: 14:02:09. */
  clock: (ms) => clockFmt.format(ms),

  /** Date and time, short: today 14:02, or 12 Mar 14:02. */
  when(ms) {
    const time = hmFmt.format(ms);
    if (ms >= startOfToday()) return `today ${time}`;
    return `${dayFmt.format(ms)} ${time}`;
  },
};

/** The short form of an id, as the CLI prints it. */
export const shortId = (id) => (id || '').slice(0, 12);

/**
 * Wrap `fn` so it runs at most once per `ms`, always with the latest
 * arguments, and always once more after a burst (trailing edge).
 */
export function throttle(fn, ms) {
  let last = -Infinity;
  let timer = 0;
  let args = null;
  const run = () => {
    timer = 0;
    last = performance.now();
    const a = args;
    args = null;
    fn(...a);
  };
  const t = (...a) => {
    args = a;
    if (timer) return;
    const wait = Math.max(0, last + ms - performance.now());
    timer = setTimeout(run, wait);
  };
  t.cancel = () => { clearTimeout(timer); timer = 0; args = null; };
  return t;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Midnight today, local time, in ms since the epoch. */
export function startOfToday() {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

/**
 * Record a timing for perf.mjs (which sets `window.__rsPerf` before the page
 * loads). Off otherwise: a wall screen runs for weeks, and the browser keeps
 * every measure it is given.
 */
export function measure(name, start, detail) {
  if (globalThis.__rsPerf) performance.measure(name, { start, detail });
}
