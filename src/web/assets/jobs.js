// The jobs table: progress, ETA, status and the actions a person takes
// (pause, resume, cancel, retry failed tasks, priority up and down).
// "Archived" lists the jobs put away, fetched when chosen and again while
// shown whenever a job leaves the snapshots (snapshots carry only the
// others: a job that leaves them was archived); they take no actions.
//
// Rows are keyed by job id, built once and patched. Priority clicks are
// gathered for a moment and sent as one request (five quick clicks make
// one change of +5, not five round trips), and the new value shows at
// once; the next snapshot confirms it.

import { h, icon, setText, setAttr, fmt, startOfToday } from './util.js';
import { segBar } from './charts.js';

const FINAL = new Set(['done', 'failed', 'cancelled']);

export class JobsView {
  constructor({ body, emptyEl, countEl, filterEl, onSelect, onAction, onPriority, onShowArchived }) {
    Object.assign(this, { body, emptyEl, countEl, onSelect, onAction, onPriority, onShowArchived });
    this.rows = new Map();
    this.filter = 'active';
    this.order = '';
    this.pendingPrio = new Map();
    this.jobs = [];
    this.archived = [];
    filterEl.addEventListener('click', async (e) => {
      const chip = e.target.closest('[data-filter]');
      if (!chip) return;
      this.filter = chip.dataset.filter;
      for (const c of filterEl.querySelectorAll('[data-filter]')) setAttr(c, 'aria-pressed', c === chip);
      if (this.filter === 'archived') this.archived = await this.onShowArchived();
      this.render(this.jobs, this.selected, this.finished);
    });
    body.addEventListener('keydown', (e) => this.onKey(e));
  }

  /** Jobs were archived: fetch the "Archived" list again if it is shown. */
  async archivedChanged() {
    if (this.filter !== 'archived') return;
    this.archived = await this.onShowArchived();
    if (this.filter === 'archived') this.render(this.jobs, this.selected, this.finished);
  }

  /** Whether the Active filter shows `j`. */
  isActive(j, finished) {
    if (j.status === 'cancelled') return false;
    if (j.status !== 'done') return true;
    const at = finished.get(j.id);
    return at != null ? at >= startOfToday() : j.submitted_ms >= startOfToday();
  }

  /** Show `jobs` (newest first), with `selected` highlighted. */
  render(jobs, selected, finished = new Map()) {
    this.jobs = jobs;
    this.selected = selected;
    this.finished = finished;
    const shown = this.filter === 'archived' ? this.archived
      : this.filter === 'all' ? jobs : jobs.filter((j) => this.isActive(j, finished) || j.id === selected);
    const keep = new Set();
    for (const j of shown) {
      keep.add(j.id);
      let row = this.rows.get(j.id);
      if (!row) { row = this.buildRow(j); this.rows.set(j.id, row); }
      this.patchRow(row, j, j.id === selected);
    }
    for (const [id, row] of this.rows) {
      if (!keep.has(id)) { row.el.remove(); this.rows.delete(id); }
    }
    const order = shown.map((j) => j.id).join(',');
    if (order !== this.order) {
      this.order = order;
      this.body.append(...shown.map((j) => this.rows.get(j.id).el));
    }
    this.emptyEl.hidden = shown.length > 0;
    if (!shown.length && this.filter === 'archived') {
      this.emptyEl.textContent = 'No archived jobs.';
    } else if (!shown.length && jobs.length) {
      this.emptyEl.textContent = `No active jobs. ${jobs.length} finished or cancelled under “All”.`;
    }
    const running = jobs.filter((j) => j.status === 'running').length;
    const count = this.filter === 'archived' ? `${this.archived.length} archived`
      : jobs.length ? `${running} running · ${jobs.length} in all` : '';
    setText(this.countEl, count);
  }

  buildRow(j) {
    const r = { id: j.id };
    r.name = h('div', { class: 'job-name' });
    r.sub = h('div', { class: 'job-sub' });
    r.pill = h('span', { class: 'pill' });
    r.bar = segBar();
    r.progDone = h('b');
    r.progPct = h('span');
    r.eta = h('td', { class: 'r' });
    r.prioVal = h('span', { class: 'prio-val' });
    const btn = (name, title, fn, extra = '') => h('button', {
      class: `icon-btn ${extra}`, type: 'button', title, 'aria-label': title,
      onclick: (e) => { e.stopPropagation(); fn(e); },
    }, icon(name));
    r.down = btn('minus', 'Lower priority (Shift: by 10)', (e) => this.bumpPriority(r, e.shiftKey ? -10 : -1));
    r.up = btn('plus', 'Raise priority (Shift: by 10)', (e) => this.bumpPriority(r, e.shiftKey ? 10 : 1));
    r.pause = btn('pause', 'Pause: hand out no more tasks', () => this.onAction(r.id, r.paused ? 'resume' : 'pause'));
    r.retry = btn('retry', 'Retry failed tasks', () => this.onAction(r.id, 'retry'));
    r.cancel = btn('cancel', 'Cancel the job', () => this.onAction(r.id, 'cancel'), 'danger');
    r.archive = btn('archive', 'Archive: take the finished job off the list', () => this.onAction(r.id, 'archive'));
    r.el = h('tr', { tabindex: 0, dataset: { id: j.id }, onclick: () => this.onSelect(j.id) },
      h('td', {}, r.name, r.sub),
      h('td', {}, r.pill),
      h('td', {}, h('div', { class: 'prog' }, r.bar.el, h('div', { class: 'prog-text' }, h('span', {}, r.progDone), r.progPct))),
      r.eta,
      h('td', { class: 'c clip' }, h('div', { class: 'prio' }, r.down, r.prioVal, r.up)),
      h('td', { class: 'r clip' }, h('div', { class: 'actions' }, r.pause, r.retry, r.cancel, r.archive)));
    return r;
  }

  patchRow(r, j, selected) {
    r.job = j;
    setAttr(r.el, 'aria-selected', selected);
    setAttr(r.el, 'data-status', j.status);
    setText(r.name, j.name);
    setAttr(r.name, 'title', `${j.name}\n${j.id}`);
    const fpt = j.frames_per_task > 1 ? ` · ${j.frames_per_task}/task` : '';
    setText(r.sub, `${j.engine} · frames ${j.frames}${fpt} · ${fmt.when(j.submitted_ms)}`);
    setAttr(r.pill, 'data-status', j.status);
    setText(r.pill, j.status[0].toUpperCase() + j.status.slice(1));
    setAttr(r.bar.el, 'data-status', j.status);
    const total = j.tasks_total || 1;
    r.bar.set(j.tasks_done / total, j.tasks_failed / total, j.tasks_running / total);
    setText(r.progDone, `${fmt.int(j.frames_done)} / ${fmt.int(j.frames_total)}`);
    setText(r.progPct, fmt.pct(j.frames_total ? j.frames_done / j.frames_total : 0));
    setText(r.eta, etaText(j));
    setAttr(r.eta, 'title', j.waiting ? `Waiting: ${j.waiting}` : '');
    const pend = this.pendingPrio.get(j.id);
    setText(r.prioVal, pend ? pend.base + pend.delta : j.priority);
    const final = FINAL.has(j.status);
    r.paused = j.status === 'paused';
    if (r.pauseIcon !== r.paused) {
      r.pauseIcon = r.paused;
      r.pause.replaceChildren(icon(r.paused ? 'play' : 'pause'));
    }
    const pauseTitle = r.paused ? 'Resume: hand out tasks again' : 'Pause: hand out no more tasks (renders under way finish)';
    setAttr(r.pause, 'title', pauseTitle);
    setAttr(r.pause, 'aria-label', pauseTitle);
    r.pause.disabled = final;
    r.retry.disabled = !(j.tasks_failed > 0) || j.status === 'cancelled';
    // An archived job takes no action at all.
    r.pause.hidden = r.retry.hidden = Boolean(j.archived);
    // A finished job cannot be stopped but can be put away: one place for both.
    r.cancel.hidden = final || j.archived;
    r.archive.hidden = !final || j.archived;
    r.up.disabled = r.down.disabled = final || j.archived;
  }

  bumpPriority(r, by) {
    const j = r.job;
    const pend = this.pendingPrio.get(r.id) || { base: j.priority, delta: 0, timer: 0 };
    pend.delta += by;
    clearTimeout(pend.timer);
    this.pendingPrio.set(r.id, pend);
    setText(r.prioVal, pend.base + pend.delta);
    pend.timer = setTimeout(async () => {
      const value = pend.base + pend.delta;
      try {
        await this.onPriority(r.id, value);
      } finally {
        if (this.pendingPrio.get(r.id) === pend) this.pendingPrio.delete(r.id);
        if (r.job) this.patchRow(r, r.job, r.id === this.selected);
      }
    }, 400);
  }

  onKey(e) {
    const tr = e.target.closest('tr');
    if (!tr || e.target !== tr) return;
    if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); this.onSelect(tr.dataset.id); return; }
    const next = e.key === 'ArrowDown' ? tr.nextElementSibling : e.key === 'ArrowUp' ? tr.previousElementSibling : null;
    if (next) { e.preventDefault(); next.focus(); this.onSelect(next.dataset.id); }
  }
}

/** Time left while the job runs; why it waits when no node will take it. */
function etaText(j) {
  if (j.status !== 'running' && j.status !== 'pending') return '';
  if (j.waiting) return j.waiting.includes('asleep') ? 'nodes asleep' : 'no node';
  return j.eta_secs != null ? fmt.duration(j.eta_secs) : '—';
}
