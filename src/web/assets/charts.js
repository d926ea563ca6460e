// Small hand-drawn graphics: sparklines of a node's last ten minutes, and
// the segmented progress bar of a job.
//
// A sparkline is one SVG with two paths (a faint area, a line) in a fixed
// 100 x 26 box stretched to its cell. Samples are averaged into 60 buckets
// of 10 s first, so a redraw costs the same however often nodes report,
// and a gap in the samples (a node offline) stays a gap in the line.

import { h } from './util.js';

export const WINDOW_MS = 10 * 60 * 1000;
const BUCKETS = 60;
const W = 100;
const H = 26;

/** A sparkline element: { el, draw(samples, key, now, max) }. */
export function sparkline() {
  const area = h('svg:path', { class: 'area' });
  const line = h('svg:path', { class: 'line' });
  const base = h('svg:line', { class: 'base', x1: 0, x2: W, y1: H - 0.5, y2: H - 0.5 });
  const el = h('svg:svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', 'aria-hidden': 'true' }, base, area, line);
  return {
    el,
    /**
     * Draw `samples` ([{t, ...}], oldest first), plotting `s[key]` scaled
     * to 0..`max`, over the ten minutes ending at `now`.
     */
    draw(samples, key, now, max = 100) {
      const { lineD, areaD } = sparkPaths(samples, key, now, max);
      if (line.getAttribute('d') !== lineD) {
        line.setAttribute('d', lineD);
        area.setAttribute('d', areaD);
      }
    },
  };
}

/** The SVG path data of a sparkline (exported for tests). */
export function sparkPaths(samples, key, now, max) {
  const sum = new Float64Array(BUCKETS);
  const count = new Uint16Array(BUCKETS);
  const from = now - WINDOW_MS;
  const span = WINDOW_MS / BUCKETS;
  for (let i = samples.length - 1; i >= 0; i -= 1) {
    const s = samples[i];
    if (s.t < from) break;
    const v = s[key];
    if (v == null || !isFinite(v)) continue;
    const b = Math.min(BUCKETS - 1, Math.floor((s.t - from) / span));
    sum[b] += v;
    count[b] += 1;
  }
  let lineD = '';
  let areaD = '';
  let run = [];
  const flush = () => {
    if (!run.length) return;
    if (run.length === 1) run.push([run[0][0] + W / BUCKETS * 0.8, run[0][1]]);
    lineD += `M${run.map(([x, y]) => `${x.toFixed(1)} ${y.toFixed(1)}`).join('L')}`;
    areaD += `M${run[0][0].toFixed(1)} ${H}L${run.map(([x, y]) => `${x.toFixed(1)} ${y.toFixed(1)}`).join('L')}L${run[run.length - 1][0].toFixed(1)} ${H}Z`;
    run = [];
  };
  for (let b = 0; b < BUCKETS; b += 1) {
    if (!count[b]) { flush(); continue; }
    const v = Math.max(0, Math.min(1, sum[b] / count[b] / max));
    run.push([(b + 0.5) * (W / BUCKETS), H - 1.5 - v * (H - 4)]);
  }
  flush();
  return { lineD, areaD };
}

/**
 * A segmented bar: done, failed and running parts over a pending track.
 * Returns { el, set(done, failed, running) } with fractions of the whole.
 */
export function segBar(thin = false) {
  const d = h('i', { class: 'b-done' });
  const f = h('i', { class: 'b-failed' });
  const r = h('i', { class: 'b-running' });
  const el = h('div', { class: thin ? 'bar bar-thin' : 'bar', role: 'presentation' }, d, f, r);
  const last = [-1, -1, -1];
  const width = (x) => `${(Math.max(0, Math.min(1, x)) * 100).toFixed(2)}%`;
  return {
    el,
    set(done, failed = 0, running = 0) {
      const v = [done, failed, running];
      [d, f, r].forEach((seg, i) => {
        if (Math.abs(last[i] - v[i]) > 1e-4) { seg.style.width = width(v[i]); last[i] = v[i]; }
      });
    },
  };
}
