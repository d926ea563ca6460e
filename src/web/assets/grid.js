// The frame grid: every frame of a job as one cell on a <canvas>, coloured
// by its task's state. 10,000 cells are 10,000 fillRects batched by colour
// (a few ms), where 10,000 elements would cost layout and memory.
//
// The cell size is the largest that fits the grid into the height it is
// given (down to 2 device pixels, then the grid scrolls). An update that
// changes few cells repaints only those cells. Cells are laid out in
// device pixels so edges stay crisp on any screen.

import { measure } from './util.js';

/** Task-state characters of the `/grid` answer, as codes. */
export const CODE = { p: 0, r: 1, d: 2, f: 3, w: 4 };
export const STATE_NAMES = ['pending', 'running', 'done', 'failed', 'wasted'];
const CSS_VARS = ['--cell-pending', '--cell-running', '--cell-done', '--cell-failed', '--cell-wasted'];

/** Per-frame state codes from a `/grid` answer. */
export function frameCodes(grid) {
  const [first, last, step] = grid.frames;
  const count = last >= first && step > 0 ? Math.floor((last - first) / step) + 1 : 0;
  const fpt = Math.max(1, grid.frames_per_task | 0);
  const codes = new Uint8Array(count);
  const s = grid.states || '';
  for (let t = 0, i = 0; t < s.length && i < count; t += 1) {
    const c = CODE[s[t]] ?? 0;
    const end = Math.min(count, i + fpt);
    if (c) codes.fill(c, i, end);
    i = end;
  }
  return codes;
}

export class FrameGrid {
  constructor(canvas, { onHover, onClick }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d', { alpha: false });
    this.onHover = onHover;
    this.onClick = onClick;
    this.codes = new Uint8Array(0);
    this.layoutKey = '';
    this.maxHeight = 240;
    this.width = 0;
    this.hoverRaf = 0;
    this.colours = CSS_VARS.map((v) => getComputedStyle(document.documentElement).getPropertyValue(v).trim() || '#555');
    this.bg = getComputedStyle(document.documentElement).getPropertyValue('--panel').trim() || '#1b1b1d';
    new ResizeObserver(() => this.resize()).observe(canvas.parentElement);
    canvas.addEventListener('mousemove', (e) => this.hover(e));
    canvas.addEventListener('mouseleave', () => { cancelAnimationFrame(this.hoverRaf); this.onHover(null); });
    canvas.addEventListener('click', (e) => {
      const i = this.indexAt(e.clientX, e.clientY);
      if (i != null) this.onClick(i, this.codes[i]);
    });
  }

  /** Show new per-frame codes; true when the whole grid was repainted. */
  set(codes) {
    const old = this.codes;
    this.codes = codes;
    if (!this.layout() && old.length === codes.length) {
      this.paintChanged(old, codes);
      return false;
    }
    this.paintAll();
    return true;
  }

  /** The height the grid may take before it scrolls, in CSS px. */
  setMaxHeight(px) {
    if (Math.abs(px - this.maxHeight) < 4) return;
    this.maxHeight = px;
    if (this.layout()) this.paintAll();
  }

  resize() {
    const w = this.canvas.parentElement.clientWidth;
    if (!w || w === this.width) return;
    this.width = w;
    if (this.layout()) this.paintAll();
  }

  /** Choose cell pitch and canvas size; true when they changed. */
  layout() {
    const dpr = window.devicePixelRatio || 1;
    const n = Math.max(1, this.codes.length);
    const W = Math.max(1, Math.floor((this.width || this.canvas.parentElement.clientWidth) * dpr));
    const maxH = this.maxHeight * dpr;
    let pitch = Math.round(18 * dpr);
    const minPitch = Math.max(2, Math.round(2 * dpr));
    for (; pitch > minPitch; pitch -= 1) {
      const cols = Math.floor(W / pitch);
      if (Math.ceil(n / cols) * pitch <= maxH) break;
    }
    const gap = pitch >= 10 * dpr ? Math.round(2 * dpr) : pitch >= 4 ? Math.max(1, Math.round(dpr)) : 0;
    const cols = Math.max(1, Math.floor(W / pitch));
    const rows = Math.ceil(n / cols);
    const H = Math.max(pitch, rows * pitch - gap);
    const key = `${W}x${H}/${pitch}/${gap}`;
    if (key === this.layoutKey) return false;
    this.layoutKey = key;
    Object.assign(this, { pitch, gap, cols, rows, dpr });
    this.canvas.width = W;
    this.canvas.height = H;
    this.canvas.style.width = `${W / dpr}px`;
    this.canvas.style.height = `${H / dpr}px`;
    return true;
  }

  paintAll() {
    const t0 = performance.now();
    const { ctx, codes, pitch, gap, cols } = this;
    const cell = pitch - gap;
    ctx.fillStyle = this.bg;
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    for (let c = 0; c < this.colours.length; c += 1) {
      ctx.fillStyle = this.colours[c];
      ctx.beginPath();
      for (let i = 0; i < codes.length; i += 1) {
        if (codes[i] === c) ctx.rect((i % cols) * pitch, Math.floor(i / cols) * pitch, cell, cell);
      }
      ctx.fill();
    }
    // For perf.mjs: a whole-grid repaint (also after a resize).
    measure('rs:grid-paint', t0, { frames: codes.length });
  }

  paintChanged(old, codes) {
    const { ctx, pitch, gap, cols } = this;
    const cell = pitch - gap;
    let last = -1;
    for (let i = 0; i < codes.length; i += 1) {
      const c = codes[i];
      if (c === old[i]) continue;
      if (c !== last) { ctx.fillStyle = this.colours[c]; last = c; }
      ctx.fillRect((i % cols) * pitch, Math.floor(i / cols) * pitch, cell, cell);
    }
  }

  indexAt(clientX, clientY) {
    const rect = this.canvas.getBoundingClientRect();
    const x = (clientX - rect.left) * this.dpr;
    const y = (clientY - rect.top) * this.dpr;
    const col = Math.floor(x / this.pitch);
    const row = Math.floor(y / this.pitch);
    if (col < 0 || col >= this.cols || row < 0) return null;
    const i = row * this.cols + col;
    return i < this.codes.length ? i : null;
  }

  hover(e) {
    const { clientX, clientY } = e;
    cancelAnimationFrame(this.hoverRaf);
    this.hoverRaf = requestAnimationFrame(() => {
      const i = this.indexAt(clientX, clientY);
      this.onHover(i == null ? null : { index: i, code: this.codes[i], x: clientX, y: clientY });
    });
  }
}
