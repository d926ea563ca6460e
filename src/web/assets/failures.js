// Why tasks failed: one entry per task that has a failure, final ones
// (every attempt used) first in red, retried ones in amber. Each shows the
// reason and, on demand, the engine's log tail; the whole log opens in the
// log viewer (it is fetched with the token, so a plain link would not do).

import { h, icon } from './util.js';

const TAIL = '\n--- log tail ---\n';
const OPEN_FIRST = 2;

export class FailuresView {
  constructor({ el, onLog }) {
    this.el = el;
    this.onLog = onLog;
    this.key = '';
    this.items = new Map();
  }

  clear() { this.el.replaceChildren(); this.key = ''; this.items.clear(); this.jobId = null; }

  /** Show `failures` (from summary.js) of job `jobId`; `total` may exceed the list. */
  set(jobId, failures, total) {
    const key = `${jobId}|${total}|${failures.map((f) => `${f.index}:${f.attempts}:${f.status}`).join(',')}`;
    if (key === this.key) return;
    this.key = key;
    if (!failures.length) {
      this.items.clear();
      this.el.replaceChildren(h('p', { class: 'empty' }, 'No task has failed.'));
      return;
    }
    // Entries whose failure did not change are kept as they are (open or
    // closed, scrolled where the person left them); only new ones are built.
    const old = this.jobId === jobId ? this.items : new Map();
    this.jobId = jobId;
    this.items = new Map();
    const list = failures.map((f, i) => {
      const sig = `${f.status}:${f.attempts}:${f.failures}:${f.reason.length}`;
      const kept = old.get(f.index);
      if (kept && kept.sig === sig) { this.items.set(f.index, kept); return kept.el; }
      return this.item(jobId, f, i < OPEN_FIRST, sig);
    });
    if (total > failures.length) {
      list.push(h('p', { class: 'muted' }, `Showing ${failures.length} of ${total} tasks with failures.`));
    }
    const now = this.el.children;
    if (list.length === now.length && list.every((el, i) => now[i] === el)) return;
    this.el.replaceChildren(...list);
  }

  item(jobId, f, open, sig) {
    const [why, tail] = splitReason(f.reason);
    const frames = f.frames.length > 1 ? `frames ${f.frames[0]}–${f.frames[f.frames.length - 1]}` : `frame ${f.frames[0]}`;
    const final = f.status === 'failed';
    const attempts = final ? `failed ${f.failures} of ${f.attempts} attempts` : `${f.status}, failed ${f.failures}×`;
    const pre = h('pre', {}, tail || why);
    pre.hidden = !open;
    const toggle = h('button', { class: 'btn btn-small btn-ghost', type: 'button', onclick: () => {
      pre.hidden = !pre.hidden;
      pre.scrollTop = pre.scrollHeight;
      toggle.textContent = pre.hidden ? 'Log tail' : 'Hide tail';
    } }, open ? 'Hide tail' : 'Log tail');
    const whole = f.log
      ? h('button', { class: 'btn btn-small', type: 'button', onclick: () => this.onLog(f.index) }, icon('log'), 'Whole log')
      : null;
    const el = h('article', { class: 'failure', dataset: { final: String(final), task: f.index } },
      h('div', { class: 'failure-head' },
        h('span', { class: 'what' }, `Task ${f.index} · ${frames}`),
        h('span', { class: 'why', title: why }, why),
        h('span', { class: 'muted' }, `${attempts}${f.node ? ` · last on ${f.node}` : ''}`),
        toggle, whole),
      pre);
    this.items.set(f.index, { el, pre, toggle, sig });
    // The end of a log says why it stopped: show the end.
    if (open) requestAnimationFrame(() => { pre.scrollTop = pre.scrollHeight; });
    return el;
  }

  /** Open and scroll to task `index`'s entry; false if it is not listed. */
  reveal(index) {
    const it = this.items.get(index);
    if (!it) return false;
    it.pre.hidden = false;
    it.pre.scrollTop = it.pre.scrollHeight;
    it.toggle.textContent = 'Hide tail';
    it.el.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
    it.el.classList.remove('flash');
    void it.el.offsetWidth;
    it.el.classList.add('flash');
    return true;
  }
}

/** The reason's first part, and the engine's log tail after the marker. */
export function splitReason(reason) {
  const i = (reason || '').indexOf(TAIL);
  return i < 0 ? [reason || '', ''] : [reason.slice(0, i), reason.slice(i + TAIL.length)];
}
