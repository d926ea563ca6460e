// The nodes panel: one row per node, kept in the order the node lists
// them (this node first, then by name), so rows never jump on a wall screen.
//
// Rows are built once and then patched: each update compares and writes
// only the text that changed. Telemetry history lives here: seeded from
// `/nodes?history=true` and extended by one sample per node per snapshot
// (snapshots carry no history, so they stay small), trimmed to ten minutes.
// Sparklines of rows scrolled out of view are not redrawn until they show.

import { h, setText, setAttr, fmt } from './util.js';
import { sparkline, segBar, WINDOW_MS } from './charts.js';

const STATES = ['rendering', 'idle', 'asleep', 'offline'];
const SPARK_EVERY = 4;

export class NodesView {
  constructor({ rowsEl, scrollEl, filterEl, countEl, onSelectJob }) {
    this.rowsEl = rowsEl;
    this.countEl = countEl;
    this.onSelectJob = onSelectJob;
    this.rows = new Map();
    this.history = new Map();
    this.visible = new Set();
    this.filter = 'all';
    this.order = '';
    this.turn = 0;
    this.observer = new IntersectionObserver((entries) => {
      for (const e of entries) {
        const id = e.target.dataset.id;
        if (e.isIntersecting) {
          this.visible.add(id);
          const row = this.rows.get(id);
          if (row && row.latest) {
            row.stale = true;
            this.patchRow(row, row.latest, Date.now());
          }
        } else {
          this.visible.delete(id);
        }
      }
    }, { root: scrollEl, rootMargin: '120px 0px' });
    filterEl.addEventListener('click', (e) => {
      const chip = e.target.closest('[data-filter]');
      if (!chip) return;
      this.filter = chip.dataset.filter;
      for (const c of filterEl.querySelectorAll('[data-filter]')) setAttr(c, 'aria-pressed', c === chip);
      this.applyFilter();
    });
  }

  /** Seed history from `/nodes?history=true`, aligned to this browser's clock. */
  seedHistory(nodes) {
    const now = Date.now();
    for (const n of nodes) {
      if (!Array.isArray(n.history) || !n.history.length) continue;
      const newest = n.history[n.history.length - 1].t;
      const shift = now - (n.last_seen_ms || 0) - newest;
      const total = n.memory_total || 1;
      const diskTotal = (n.telemetry && n.telemetry.disk_total) || 1;
      this.history.set(n.id, n.history.map((s) => ({
        t: s.t + shift, cpu: s.cpu, mem: (s.mem / total) * 100, gpu: s.gpu, disk: (1 - s.disk_free / diskTotal) * 100,
      })));
    }
  }

  /** Add one sample per live node from a snapshot taken at `now`. */
  ingest(nodes, now) {
    for (const n of nodes) {
      if (!n.alive) continue;
      let hist = this.history.get(n.id);
      if (!hist) { hist = []; this.history.set(n.id, hist); }
      const last = hist[hist.length - 1];
      if (last && now - last.t < 900) continue;
      const t = n.telemetry || {};
      const g = gpuOf(t);
      hist.push({
        t: now,
        cpu: n.cpu,
        mem: (n.memory / (n.memory_total || 1)) * 100,
        gpu: g ? g.usage : null,
        disk: t.disk_total ? (1 - t.disk_free / t.disk_total) * 100 : null,
      });
      let cut = 0;
      while (cut < hist.length && hist[cut].t < now - WINDOW_MS) cut += 1;
      if (cut) hist.splice(0, cut);
    }
  }

  /** Patch the rows to show `nodes`. */
  render(nodes, now) {
    this.turn = (this.turn + 1) % SPARK_EVERY;
    const seen = new Set();
    const counts = { all: nodes.length, rendering: 0, idle: 0, asleep: 0, offline: 0 };
    for (const n of nodes) {
      seen.add(n.id);
      counts[STATES.includes(n.state) ? n.state : 'offline'] += 1;
      let row = this.rows.get(n.id);
      const fresh = !row;
      if (fresh) {
        row = this.buildRow(n);
        this.rows.set(n.id, row);
        this.observer.observe(row.el);
      }
      row.turn = seen.size % SPARK_EVERY;
      row.latest = n;
      // Rows out of view keep their data and are patched when they scroll
      // in: a wall screen shows a dozen of fifty, so most updates skip most rows.
      if (fresh || this.visible.has(n.id) || row.state !== n.state) this.patchRow(row, n, now);
    }
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) { this.observer.unobserve(row.el); row.el.remove(); this.rows.delete(id); }
    }
    const order = nodes.map((n) => n.id).join(',');
    if (order !== this.order) {
      this.order = order;
      this.rowsEl.append(...nodes.map((n) => this.rows.get(n.id).el));
    }
    for (const k of Object.keys(counts)) {
      const el = document.getElementById(`nf-${k}`);
      if (el) setText(el, counts[k]);
    }
    setText(this.countEl, `${counts.all - counts.offline} of ${counts.all} online`);
    this.applyFilter();
  }

  applyFilter() {
    for (const row of this.rows.values()) {
      const show = this.filter === 'all' || row.state === this.filter;
      if (row.el.hidden === show) row.el.hidden = !show;
    }
  }

  buildRow(n) {
    const r = { id: n.id, state: '', stale: true, task: null, turn: 0 };
    r.name = h('b');
    r.sub = h('div', { class: 'n-sub' });
    r.taskLabel = h('span');
    r.taskPct = h('span');
    r.bar = segBar(true);
    r.taskEl = h('div', { class: 'n-task' }, h('div', { class: 'n-task-label' }, r.taskLabel, r.taskPct), r.bar.el);
    r.taskEl.addEventListener('click', () => { if (r.task) this.onSelectJob(r.task.job); });
    r.metrics = {};
    const cells = ['cpu', 'mem', 'gpu', 'disk'].map((key) => {
      const spark = sparkline();
      const val = h('span');
      const sub = h('small');
      const el = h('div', { class: `metric col-${key}` }, h('span', { class: 'val' }, val, sub), spark.el);
      r.metrics[key] = { spark, val, sub, el };
      return el;
    });
    r.seen = h('div', { class: 'n-seen' });
    r.dot = h('span', { class: 'dot' });
    r.el = h('div', { class: 'node-row', dataset: { id: n.id } },
      h('span', { class: 'n-dot' }, r.dot),
      h('div', { class: 'n-name' }, r.name, r.sub), r.taskEl, ...cells, r.seen);
    return r;
  }

  patchRow(r, n, now) {
    if (r.state !== n.state) {
      r.state = n.state;
      setAttr(r.el, 'data-state', n.state);
      setAttr(r.dot, 'title', n.state);
    }
    // A sleeping node that still finishes renders says so beside them.
    r.el.toggleAttribute('data-asleep', Boolean(n.asleep) && n.state === 'rendering');
    const nameKey = `${n.name}|${n.me}`;
    if (r.nameKey !== nameKey) {
      r.nameKey = nameKey;
      r.name.textContent = n.name;
    }
    const t = n.telemetry || {};
    setText(r.sub, [n.me ? 'this node' : null, n.engines.join(' · '), n.tags.join(' ')].filter(Boolean).join('  ·  '));
    setAttr(r.el, 'title', nodeTitle(n, t));
    this.patchTask(r, n);
    const m = r.metrics;
    setText(m.cpu.val, fmt.pct(n.cpu / 100));
    setText(m.mem.val, fmt.pct(n.memory / (n.memory_total || 1)));
    setText(m.mem.sub, fmt.bytes(n.memory));
    const g = gpuOf(t);
    m.gpu.el.classList.toggle('none', !g);
    setText(m.gpu.val, g ? (g.usage == null ? '?' : fmt.pct(g.usage / 100)) : '—');
    setText(m.gpu.sub, g ? fmt.bytes(g.memory_used) : 'no GPU');
    const freeFrac = t.disk_total ? t.disk_free / t.disk_total : null;
    setText(m.disk.val, fmt.bytes(t.disk_free));
    setText(m.disk.sub, 'free');
    m.disk.el.classList.toggle('low', freeFrac != null && (freeFrac < 0.05 || t.disk_free < 20e9));
    setText(r.seen, n.me ? 'this' : fmt.ago(n.last_seen_ms));
    // Sparklines move in 10 s steps: each row redraws on every
    // SPARK_EVERY-th update, a different share of rows each time.
    if (r.turn === this.turn) r.stale = true;
    if (r.stale && this.visible.has(n.id)) this.drawSparks(r, now);
  }

  patchTask(r, n) {
    const tasks = n.tasks || [];
    r.task = tasks[0] || null;
    if (!tasks.length) {
      r.taskEl.classList.add('idle');
      setText(r.taskLabel, idleLabel(n));
      setText(r.taskPct, '');
      if (!r.bar.el.hidden) r.bar.el.hidden = true;
      return;
    }
    r.taskEl.classList.remove('idle');
    if (r.bar.el.hidden) r.bar.el.hidden = false;
    const first = tasks[0];
    const frames = first.frames || [];
    const fr = frames.length > 1 ? `f${frames[0]}–${frames[frames.length - 1]}` : `f${frames[0] ?? '?'}`;
    const more = tasks.length > 1 ? ` +${tasks.length - 1}` : '';
    setText(r.taskLabel, `${first.job_name || first.job.slice(0, 8)} · ${fr}${more}`);
    const p = tasks.reduce((a, t) => a + (t.progress || 0), 0) / tasks.length;
    setText(r.taskPct, fmt.pct(p));
    r.bar.set(0, 0, p);
  }

  drawSparks(r, now) {
    const hist = this.history.get(r.id) || [];
    r.metrics.cpu.spark.draw(hist, 'cpu', now);
    r.metrics.mem.spark.draw(hist, 'mem', now);
    r.metrics.gpu.spark.draw(hist, 'gpu', now);
    r.metrics.disk.spark.draw(hist, 'disk', now);
    r.stale = false;
  }
}

/** What a row without a task says: idle, asleep and why, or offline. */
function idleLabel(n) {
  if (n.state === 'offline') return `offline for ${fmt.ago(n.last_seen_ms)}`;
  if (n.asleep) return `asleep ${n.asleep}`;
  return 'idle';
}

function gpuOf(t) {
  const g = (t && t.gpus) || [];
  if (!g.length) return null;
  const known = g.filter((x) => x.usage != null);
  return {
    usage: known.length ? known.reduce((a, x) => a + x.usage, 0) / known.length : null,
    memory_used: g.reduce((a, x) => a + (x.memory_used || 0), 0),
    name: g.map((x) => x.name).join(', '),
  };
}

function nodeTitle(n, t) {
  const lines = [`${n.name} (${n.id})`, `version ${n.version} · ${n.slots} slot${n.slots === 1 ? '' : 's'}`];
  if (t.cores) lines.push(`${t.cores} cores · load ${t.load} · ${fmt.bytes(n.memory_total)} memory`);
  const g = gpuOf(t);
  if (g) lines.push(g.name);
  if (n.rtt_ms != null) lines.push(`round trip ${n.rtt_ms.toFixed(1)} ms`);
  if (n.web) lines.push(`page: ${n.web}`);
  if (n.asleep) lines.push(`asleep ${n.asleep}: takes no new tasks`);
  return lines.join('\n');
}
