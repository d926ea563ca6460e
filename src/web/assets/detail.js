// The selected job: its figures, a grid of every frame, finished frames as
// thumbnails, and why tasks failed.
//
// Two sources, refreshed at different rates. `/grid` (one character per
// task) is small and is refetched at most once a second when the job
// changes. The full job (`/jobs/{id}`, every task: megabytes for a big
// job) is parsed in a worker and refetched only when failures may have
// changed, or every 30 s for node names; live per-task progress comes
// from the nodes in each snapshot instead. A node without `/grid` (404,
// or 405 where the route exists for POST only) gets the grid from the
// full job, at a slower pace.

import { api, headers, unauthorized, ApiError, BASE } from './api.js';
import { FrameGrid, frameCodes, STATE_NAMES } from './grid.js';
import { ThumbsView } from './thumbs.js';
import { FailuresView } from './failures.js';
import { byId, h, setText, setAttr, fmt, shortId, throttle, measure } from './util.js';

const FINAL = new Set(['done', 'failed', 'cancelled']);
const SUMMARY_EVERY_MS = 30000;

/** Loads job summaries in a worker (or on this thread if workers fail). */
class SummaryLoader {
  constructor() {
    this.seq = 0;
    this.waiting = new Map();
    try {
      this.worker = new Worker('/assets/detail-worker.js', { type: 'module' });
      this.worker.onmessage = (e) => {
        const done = this.waiting.get(e.data.seq);
        this.waiting.delete(e.data.seq);
        if (done) done(e.data);
      };
      this.worker.onerror = () => {
        this.worker = null;
        for (const [, done] of this.waiting) done({ retry: true });
        this.waiting.clear();
      };
    } catch {
      this.worker = null;
    }
  }

  async load(id) {
    for (;;) {
      const r = await this.once(id);
      if (r.retry) continue;
      if (!r.error) return r.summary;
      if (r.error.status === 401) { await unauthorized(r.error.message); continue; }
      throw new ApiError(r.error.status, r.error.message, r.error.field);
    }
  }

  async once(id) {
    if (!this.worker) {
      const { summarise } = await import('./summary.js');
      try { return { summary: summarise(await api.job(id)) }; } catch (e) {
        return { error: { status: e.status || 0, message: e.message } };
      }
    }
    const seq = ++this.seq;
    return new Promise((resolve) => {
      this.waiting.set(seq, resolve);
      this.worker.postMessage({ seq, url: `${location.origin}${BASE}/jobs/${encodeURIComponent(id)}`, headers: headers() });
    });
  }
}

export class DetailView {
  constructor({ nodeName, lightbox, onLog, onRetry }) {
    Object.assign(this, { nodeName, lightbox, onLog, onRetry });
    this.el = byId('detail');
    this.loader = new SummaryLoader();
    this.id = null;
    this.job = null;
    this.codes = new Uint8Array(0);
    this.summary = null;
    this.running = new Map();
    this.noGrid = false;
    this.tip = byId('tip');
    this.grid = new FrameGrid(byId('grid'), { onHover: (x) => this.hover(x), onClick: (i, c) => this.clickCell(i, c) });
    this.thumbs = new ThumbsView({
      el: byId('thumbs'), scrollEl: byId('pane-frames').parentElement, pagerText: byId('pager-text'),
      prevBtn: byId('pager-prev'), nextBtn: byId('pager-next'), onOpen: (f) => this.openFrame(f),
    });
    this.failures = new FailuresView({ el: byId('failures'), onLog: (task) => this.onLog(this.id, this.job?.name, task) });
    this.gridSoon = throttle(() => this.fetchGrid(), 1000);
    this.summarySoon = throttle(() => this.fetchSummary(), 3000);
    for (const tab of this.el.querySelectorAll('[role="tab"]')) tab.addEventListener('click', () => this.tab(tab.id));
    byId('retry-failed').addEventListener('click', () => this.onRetry(this.id));
    new ResizeObserver(() => this.fitGrid()).observe(this.el);
    this.timer = setInterval(() => {
      if (this.id && this.job && !FINAL.has(this.job.status) && performance.now() - (this.summaryAt || 0) > SUMMARY_EVERY_MS) this.summarySoon();
    }, 5000);
  }

  /** Show job `id` (`job`: its light view, if known). */
  select(id, job) {
    if (id === this.id) return;
    this.id = id;
    this.job = null;
    this.summary = null;
    this.codes = new Uint8Array(0);
    this.gridSoon.cancel();
    this.summarySoon.cancel();
    byId('detail-empty').hidden = Boolean(id);
    byId('detail-body').hidden = !id;
    this.thumbs.clear();
    this.failures.clear();
    if (!id) return;
    if (job) this.update(job);
    this.fitGrid();
    this.fetchGrid();
    this.fetchSummary();
  }

  /** The job's light view from a snapshot: refresh head, and the grid if its counts moved. */
  update(job) {
    if (!job || job.id !== this.id) return;
    const prev = this.job;
    this.job = job;
    this.renderHead(job);
    if (prev && countsKey(prev) !== countsKey(job)) this.gridSoon();
    if (prev && prev.tasks_failed !== job.tasks_failed) this.summarySoon();
  }

  /** The stream says the job changed. */
  changed() { if (this.id) this.gridSoon(); }

  /** A task of the job failed (an event): failures need a fresh look. */
  taskFailed() { if (this.id) this.summarySoon(); }

  /** Running tasks of this job from the nodes: task -> {node, progress}. */
  setRunning(map) { this.running = map; }

  async fetchGrid() {
    const id = this.id;
    if (!id) return;
    if (this.noGrid) { this.summarySoon(); return; }
    try {
      const grid = await api.grid(id);
      const t0 = performance.now();
      const codes = frameCodes(grid);
      const decodeMs = performance.now() - t0;
      // Paint with the rest of the frame's updates, not between them.
      requestAnimationFrame(() => { if (id === this.id) this.showCodes(codes, performance.now() - decodeMs); });
    } catch (e) {
      // 405, or 404 "no such route": this node has no /grid (a 404 naming
      // the job means the job is gone, not the endpoint).
      if ((e.status === 405 || (e.status === 404 && /no such route/.test(e.message))) && id === this.id) {
        this.noGrid = true;
        if (this.summary) this.codesFromSummary(this.summary);
        this.summarySoon();
      }
    }
  }

  async fetchSummary() {
    const id = this.id;
    if (!id) return;
    this.summaryAt = performance.now();
    try {
      const s = await this.loader.load(id);
      if (id !== this.id) return;
      this.summary = s;
      if (!this.job) this.update(s.job);
      if (this.noGrid) this.codesFromSummary(s);
      this.failures.set(id, s.failures, s.failuresTotal);
      setText(byId('failures-badge'), fmt.int(Math.max(s.job.tasks_failed, 0)));
      this.refreshThumbs();
    } catch (e) {
      if (id === this.id) this.failures.el.replaceChildren(h('p', { class: 'empty' }, e.message));
    }
  }

  /** The grid from the full job, for nodes without `/grid`. */
  codesFromSummary(s) {
    const t0 = performance.now();
    const codes = frameCodes({ frames: framesOf(s.job), frames_per_task: s.job.frames_per_task, states: s.states });
    this.showCodes(codes, t0);
  }

  showCodes(codes, t0 = performance.now()) {
    this.codes = codes;
    const full = this.grid.set(codes);
    const counts = [0, 0, 0, 0, 0];
    for (let i = 0; i < codes.length; i += 1) counts[codes[i]] += 1;
    this.renderLegend(counts);
    this.refreshThumbs();
    // For perf.mjs: how long turning a grid answer into pixels took.
    measure('rs:grid', t0, { frames: codes.length, full });
  }

  /** Finished frame numbers, sorted. */
  doneFrames() {
    const [first, , step] = framesOf(this.job || this.summary?.job);
    const out = [];
    for (let i = 0; i < this.codes.length; i += 1) if (this.codes[i] === 2 || this.codes[i] === 4) out.push(first + i * step);
    return Int32Array.from(out);
  }

  refreshThumbs() {
    if (!this.job) return;
    const frames = this.doneFrames();
    setText(byId('frames-badge'), fmt.int(frames.length));
    this.thumbs.set({
      jobId: this.id, jobName: this.job.name, ext: this.summary ? this.summary.ext || 'png' : 'png',
      frames, nodeOf: (f) => this.nodeOfFrame(f),
    });
  }

  taskOfFrame(frame) {
    const [first, , step] = framesOf(this.job);
    return Math.floor((frame - first) / step / Math.max(1, this.job.frames_per_task));
  }

  nodeOfFrame(frame) {
    const s = this.summary;
    if (!s) return null;
    const k = s.nodeOf[this.taskOfFrame(frame)];
    return k ? s.names[k - 1] : null;
  }

  openFrame(frame) {
    this.lightbox.open({
      jobId: this.id, jobName: this.job.name, ext: this.summary ? this.summary.ext || 'png' : 'png',
      frames: this.doneFrames(), nodeOf: (f) => this.nodeOfFrame(f),
    }, frame);
  }

  clickCell(index, code) {
    const [first, , step] = framesOf(this.job);
    const frame = first + index * step;
    if (code === 2 || code === 4) { this.thumbs.reveal(frame); this.openFrame(frame); }
    if (code === 3) { this.tab('tab-failures'); this.failures.reveal(this.taskOfFrame(frame)); }
  }

  hover(x) {
    if (!x || !this.job) { this.tip.hidden = true; return; }
    const [first, , step] = framesOf(this.job);
    const frame = first + x.index * step;
    const task = this.taskOfFrame(frame);
    const state = STATE_NAMES[x.code];
    const run = this.running.get(task);
    const node = run ? run.node : this.nodeOfFrame(frame);
    const bits = [`task ${task}`];
    if (node) bits.push(x.code === 1 ? `on ${node}` : x.code === 0 ? `last on ${node}` : `by ${node}`);
    if (run && run.progress != null) bits.push(fmt.pct(run.progress));
    this.tip.replaceChildren(h('b', {}, `Frame ${frame}`), h('span', { class: 'pill', dataset: { status: state } }, state),
      h('div', { class: 'muted' }, bits.join(' · ')));
    this.tip.hidden = false;
    const r = this.tip.getBoundingClientRect();
    const left = Math.min(window.innerWidth - r.width - 8, x.x + 14);
    const top = x.y + 18 + r.height > window.innerHeight ? x.y - r.height - 10 : x.y + 18;
    this.tip.style.transform = `translate(${Math.round(left)}px, ${Math.round(top)}px)`;
    this.tip.style.left = '0';
    this.tip.style.top = '0';
  }

  tab(id) {
    for (const t of this.el.querySelectorAll('[role="tab"]')) setAttr(t, 'aria-selected', t.id === id);
    byId('pane-frames').hidden = id !== 'tab-frames';
    byId('pane-failures').hidden = id !== 'tab-failures';
    byId('pager').hidden = id !== 'tab-frames';
    this.renderRetry();
    if (id === 'tab-frames') this.thumbs.render();
  }

  renderRetry() {
    const j = this.job;
    byId('retry-failed').hidden = !(byId('pane-frames').hidden && j && j.tasks_failed > 0 && j.status !== 'cancelled' && !j.archived);
  }

  fitGrid() {
    const panel = this.el.clientHeight;
    const fixed = ['.detail-head', '#d-legend', '.tabs'].reduce((a, s) => a + (this.el.querySelector(s)?.offsetHeight || 0), 0);
    const room = panel - fixed - 150;
    this.grid.setMaxHeight(Math.max(72, Math.min(room, panel * 0.5, 420)));
  }

  renderHead(j) {
    setText(byId('d-name'), j.name);
    const pill = byId('d-status');
    setAttr(pill, 'data-status', j.status);
    setText(pill, j.status[0].toUpperCase() + j.status.slice(1) + (j.archived ? ' · archived' : ''));
    const who = this.nodeName(j.submitter) || shortId(j.submitter);
    const parts = [j.engine, j.scene_file, `frames ${j.frames}`, `${j.frames_per_task} frame${j.frames_per_task === 1 ? '' : 's'}/task`,
      `priority ${j.priority}`, `${j.max_attempts} attempts`, `submitted ${fmt.when(j.submitted_ms)} on ${who}`];
    if (j.collect_dir) parts.push(`→ ${j.collect_dir}${j.collected ? ' (collected)' : ''}`);
    const meta = byId('d-meta');
    setText(meta, `${parts.join(' · ')} · ${shortId(j.id)}`);
    setAttr(meta, 'title', `${parts.join('\n')}\n${j.id}`);
    const figs = [
      ['Done', fmt.pct1(j.frames_total ? j.frames_done / j.frames_total : 0), `${fmt.int(j.frames_done)} of ${fmt.int(j.frames_total)}`],
      ['ETA', j.eta_secs != null && !FINAL.has(j.status) ? fmt.duration(j.eta_secs) : '—', j.status === 'paused' ? 'paused' : ''],
      ['Per task', j.mean_render_ms != null ? fmt.ms(j.mean_render_ms) : '—', 'mean render'],
      ['Wasted', fmt.int(j.renders_wasted), `of ${fmt.int(j.renders_started)} renders`],
    ];
    if (!this.figEls) {
      this.figEls = figs.map(() => ({ label: h('span'), value: h('b'), sub: h('small') }));
      byId('d-figs').replaceChildren(...this.figEls.map((f) => h('div', { class: 'fig' }, f.label, f.value, f.sub)));
    }
    figs.forEach(([label, value, sub], i) => {
      const f = this.figEls[i];
      setText(f.label, label);
      setText(f.value, value);
      setText(f.sub, sub || '\u00a0');
    });
    this.renderRetry();
  }

  renderLegend(counts) {
    const order = [2, 1, 0, 3, 4];
    const label = ['Pending', 'Running', 'Done', 'Failed', 'Done, with wasted renders'];
    if (!this.legendEls) {
      const swatch = ['sw-pending', 'sw-running', 'sw-done', 'sw-failed', 'sw-wasted'];
      this.legendEls = [];
      byId('d-legend').replaceChildren(...order.map((c) => {
        this.legendEls[c] = h('b');
        return h('span', {}, h('i', { class: swatch[c] }), label[c], this.legendEls[c]);
      }), h('span', { class: 'hint' }, 'One cell per frame · click a finished frame to view it'));
    }
    for (const c of order) setText(this.legendEls[c], fmt.int(counts[c]));
    setAttr(byId('grid'), 'aria-label', `Frames: ${order.map((c) => `${label[c]} ${counts[c]}`).join(', ')}`);
  }
}

function framesOf(job) {
  const m = /^(\d+)(?:-(\d+))?(?::(\d+))?$/.exec((job && job.frames) || '');
  if (!m) return [1, 1, 1];
  const first = Number(m[1]);
  return [first, m[2] ? Number(m[2]) : first, m[3] ? Number(m[3]) : 1];
}

function countsKey(j) {
  return `${j.tasks_done}/${j.tasks_running}/${j.tasks_failed}/${j.tasks_pending}/${j.renders_wasted}/${j.status}`;
}
