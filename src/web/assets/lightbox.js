// The full-frame viewer: one finished frame at full size, ← and → step
// through the job's finished frames, Esc closes. Browsers cannot show EXR,
// so an EXR frame shows a placeholder and a download button instead.

import { byId, h } from './util.js';
import { api, imageUrl, auth } from './api.js';

const SHOWABLE = new Set(['png', 'jpg', 'jpeg', 'webp', 'gif', 'bmp']);

export function canShow(ext) {
  return ext == null || SHOWABLE.has(String(ext).toLowerCase());
}

export class Lightbox {
  constructor() {
    this.dlg = byId('lightbox');
    this.stage = byId('lb-stage');
    this.title = byId('lb-title');
    this.meta = byId('lb-meta');
    this.dl = byId('lb-download');
    this.prev = byId('lb-prev');
    this.next = byId('lb-next');
    this.view = null;
    this.prev.addEventListener('click', () => this.step(-1));
    this.next.addEventListener('click', () => this.step(1));
    this.dlg.addEventListener('keydown', (e) => {
      if (e.key === 'ArrowLeft') { e.preventDefault(); this.step(-1); }
      if (e.key === 'ArrowRight') { e.preventDefault(); this.step(1); }
    });
    this.dl.addEventListener('click', (e) => this.download(e));
  }

  /**
   * Open at `frame`. `view` = { jobId, jobName, ext, frames (sorted
   * finished frame numbers), nodeOf(frame) -> name or null }.
   */
  open(view, frame) {
    this.view = view;
    if (!this.dlg.open) this.dlg.showModal();
    this.show(frame);
  }

  step(by) {
    const v = this.view;
    if (!v) return;
    const f = v.frames;
    const i = lowerBound(f, this.frame);
    const j = by > 0 ? (f[i] === this.frame ? i + 1 : i) : i - 1;
    if (j >= 0 && j < f.length) this.show(f[j]);
  }

  async show(frame) {
    const v = this.view;
    this.frame = frame;
    const i = lowerBound(v.frames, frame);
    this.prev.disabled = i <= 0;
    this.next.disabled = (v.frames[i] === frame ? i + 1 : i) >= v.frames.length;
    this.title.textContent = `${v.jobName} · frame ${frame}`;
    const node = v.nodeOf(frame);
    this.meta.textContent = [node ? `rendered on ${node}` : null, v.ext ? v.ext.toUpperCase() : null].filter(Boolean).join(' · ');
    const url = api.frameUrl(v.jobId, frame);
    this.dl.href = url;
    this.dl.download = `frame_${String(frame).padStart(4, '0')}.${v.ext || 'png'}`;
    for (const el of this.stage.querySelectorAll('img, .ph, .lb-note')) el.remove();
    const showable = canShow(v.ext);
    const placeholder = () => h('div', { class: 'ph' },
      h('div', {}, `${String(v.ext).toUpperCase()} frames cannot be shown in a browser.`, h('br'),
        'Download the frame to view it in an image viewer or your compositor.'));
    // A format browsers cannot show (EXR) gets the node's PNG thumbnail as a
    // preview where the node makes one, else a placeholder.
    const img = h('img', { alt: `Frame ${frame} of ${v.jobName}`, decoding: 'async' });
    img.addEventListener('error', () => {
      img.replaceWith(showable ? h('div', { class: 'ph' }, 'This frame cannot be shown (the node could not send it).') : placeholder());
    });
    this.stage.prepend(img);
    if (!showable) {
      this.stage.append(h('div', { class: 'lb-note' }, `${String(v.ext).toUpperCase()} · small preview; download for the full frame`));
      img.addEventListener('error', () => this.stage.querySelector('.lb-note')?.remove());
    }
    try {
      const src = await imageUrl(showable ? url : api.frameUrl(v.jobId, frame, true));
      if (this.frame === frame) img.src = src;
    } catch (e) {
      this.stage.querySelector('.lb-note')?.remove();
      img.replaceWith(showable ? h('div', { class: 'ph' }, e.message) : placeholder());
    }
    const nextFrame = v.frames[i + 1];
    if (showable && nextFrame != null && !auth.required) new Image().src = api.frameUrl(v.jobId, nextFrame);
  }

  async download(e) {
    if (!auth.required) return;
    e.preventDefault();
    const blobUrl = await imageUrl(this.dl.href.replace(location.origin, ''));
    const a = h('a', { href: blobUrl, download: this.dl.download });
    a.click();
  }
}

/** First index in sorted `arr` whose value is >= x. */
export function lowerBound(arr, x) {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (arr[mid] < x) lo = mid + 1; else hi = mid;
  }
  return lo;
}
