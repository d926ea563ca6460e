// Finished frames as thumbnails, a page at a time (a job may hold a
// million frames). The page size follows the space the panel gives it.
// Until the person pages back, the view follows the latest frames, so a
// wall screen shows what just came off the farm.

import { h, setText, fmt } from './util.js';
import { api, imageUrl } from './api.js';
import { canShow, lowerBound } from './lightbox.js';

const MIN_W = 132;
const GAP = 8;

export class ThumbsView {
  constructor({ el, scrollEl, pagerText, prevBtn, nextBtn, onOpen }) {
    Object.assign(this, { el, scrollEl, pagerText, prevBtn, nextBtn, onOpen });
    this.view = null;
    this.start = 0;
    this.follow = true;
    this.shownKey = '';
    prevBtn.addEventListener('click', () => this.page(-1));
    nextBtn.addEventListener('click', () => this.page(1));
    el.addEventListener('click', (e) => {
      const b = e.target.closest('[data-frame]');
      if (b) this.onOpen(Number(b.dataset.frame));
    });
    this.size = 12;
    // Page size follows the space given; measured on resize only (reading
    // layout on every update would force the browser to lay out mid-frame).
    new ResizeObserver(() => {
      this.size = this.measure();
      this.render();
    }).observe(scrollEl);
  }

  /** { jobId, jobName, ext, frames (sorted Int32Array), nodeOf(frame) }. */
  set(view) {
    if (!this.view || this.view.jobId !== view.jobId) { this.follow = true; this.start = 0; this.shownKey = ''; }
    this.view = view;
    this.render();
  }

  clear() { this.view = null; this.el.replaceChildren(); this.shownKey = ''; }

  pageSize() { return this.size; }

  measure() {
    const w = this.el.clientWidth || this.scrollEl.clientWidth - 32;
    const cols = Math.max(2, Math.floor((w + GAP) / (MIN_W + GAP)));
    const cellW = (w - GAP * (cols - 1)) / cols;
    const cellH = cellW * 9 / 16 + 22 + GAP;
    const rows = Math.max(1, Math.min(6, Math.floor((this.scrollEl.clientHeight - 28) / cellH)));
    return cols * rows;
  }

  page(by) {
    if (!this.view) return;
    const size = this.pageSize();
    const n = this.view.frames.length;
    this.start = Math.max(0, Math.min(Math.max(0, n - size), this.start + by * size));
    this.follow = this.start + size >= n;
    this.render();
  }

  /** Show the page holding `frame` (when its cell is clicked in the grid). */
  reveal(frame) {
    if (!this.view) return;
    const size = this.pageSize();
    const i = lowerBound(this.view.frames, frame);
    this.start = Math.floor(i / size) * size;
    this.follow = false;
    this.render();
  }

  render() {
    const v = this.view;
    if (!v) return;
    const size = this.pageSize();
    const n = v.frames.length;
    if (this.follow) this.start = Math.max(0, n - size);
    this.start = Math.min(this.start, Math.max(0, n - 1));
    const end = Math.min(n, this.start + size);
    this.prevBtn.disabled = this.start <= 0;
    this.nextBtn.disabled = end >= n;
    setText(this.pagerText, n ? `frames ${v.frames[this.start]}–${v.frames[end - 1]}  ·  ${fmt.int(n)} finished` : '');
    const frames = Array.from(v.frames.subarray(this.start, end));
    const key = `${v.jobId}|${v.ext}|${frames.join(',')}`;
    if (key === this.shownKey) {
      this.patchNodes(frames);
      return;
    }
    this.shownKey = key;
    if (!n) {
      this.el.replaceChildren(h('p', { class: 'empty span-all' }, 'No frame has finished yet.'));
      return;
    }
    // Keep the thumbnails still on the page (their images are loaded);
    // make only the new ones.
    const old = new Map([...this.el.querySelectorAll('.thumb')].map((b) => [Number(b.dataset.frame), b]));
    const same = this.shownJob === `${v.jobId}|${v.ext}`;
    this.shownJob = `${v.jobId}|${v.ext}`;
    this.el.replaceChildren(...frames.map((f) => (same && old.get(f)) || this.thumb(f)));
    this.patchNodes(frames);
  }

  thumb(frame) {
    const v = this.view;
    const box = h('div', { class: 'thumb-img' });
    // A thumbnail is a PNG whatever the frame's format, if the node makes one;
    // where it cannot (404), a placeholder names the format.
    const img = h('img', { alt: '', loading: 'lazy', decoding: 'async' });
    const fail = () => img.replaceWith(h('span', { class: 'ph' }, canShow(v.ext) ? 'no preview' : String(v.ext)));
    img.addEventListener('error', fail);
    box.append(img);
    imageUrl(api.frameUrl(v.jobId, frame, true)).then((src) => { img.src = src; }, fail);
    const node = h('span', {}, v.nodeOf(frame) || '');
    return h('button', { class: 'thumb', type: 'button', dataset: { frame }, title: `Frame ${frame}: open full size` },
      box, h('span', { class: 'thumb-cap' }, h('b', {}, String(frame)), node));
  }

  patchNodes(frames) {
    const caps = this.el.querySelectorAll('.thumb-cap span');
    frames.forEach((f, i) => { if (caps[i]) setText(caps[i], this.view.nodeOf(f) || ''); });
  }
}
