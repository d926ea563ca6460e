// The event log: what happened, newest first, with its severity. New
// events are prepended one by one (the list is never rebuilt), and the
// list keeps the latest 1,000. A job named in an event is a link that
// selects the job.

import { h, setText, setAttr, fmt } from './util.js';

const KEEP = 1000;
const RANK = { info: 0, warning: 1, error: 2 };

export class EventsView {
  constructor({ listEl, filterEl, onSelectJob }) {
    this.listEl = listEl;
    this.onSelectJob = onSelectJob;
    this.events = [];
    this.seqs = new Set();
    this.min = 'info';
    this.counts = { warning: 0, error: 0 };
    filterEl.addEventListener('click', (e) => {
      const chip = e.target.closest('[data-filter]');
      if (!chip) return;
      this.min = chip.dataset.filter;
      for (const c of filterEl.querySelectorAll('[data-filter]')) setAttr(c, 'aria-pressed', c === chip);
      this.applyFilter();
    });
    listEl.addEventListener('click', (e) => {
      const a = e.target.closest('[data-job]');
      if (a) { e.preventDefault(); this.onSelectJob(a.dataset.job); }
    });
  }

  get lastSeq() { return this.events.length ? this.events[0].seq : 0; }

  /** Forget every event (the node restarted and numbers them from 1 again). */
  reset() {
    this.events = [];
    this.seqs.clear();
    this.counts = { warning: 0, error: 0 };
    this.listEl.replaceChildren();
  }

  /** Add events (any order, duplicates ignored); `fresh` marks live ones. */
  add(events, fresh = false, jobNames = new Map()) {
    const news = events.filter((e) => e && !this.seqs.has(e.seq)).sort((a, b) => a.seq - b.seq);
    if (!news.length) return [];
    const wasEmpty = !this.events.length;
    const frag = document.createDocumentFragment();
    for (let i = news.length - 1; i >= 0; i -= 1) frag.append(this.row(news[i], fresh && !wasEmpty, jobNames));
    for (const e of news) {
      this.seqs.add(e.seq);
      if (e.severity in this.counts) this.counts[e.severity] += 1;
    }
    this.events = news.reverse().concat(this.events);
    this.listEl.prepend(frag);
    if (this.events.length > KEEP) {
      for (const old of this.events.splice(KEEP)) {
        this.seqs.delete(old.seq);
        if (old.severity in this.counts) this.counts[old.severity] -= 1;
      }
      while (this.listEl.children.length > KEEP) this.listEl.lastElementChild.remove();
    }
    setText(document.getElementById('ef-warning'), this.counts.warning || '');
    setText(document.getElementById('ef-error'), this.counts.error || '');
    return news;
  }

  row(e, fresh, jobNames) {
    const msg = h('span', { class: 'msg', title: `${e.message}\n${e.kind} · #${e.seq} · ${new Date(e.time_ms).toLocaleString()}` });
    const name = e.job && jobNames.get(e.job);
    if (e.job && name && e.message.includes(name)) {
      const at = e.message.indexOf(name);
      msg.append(e.message.slice(0, at), h('a', { href: `#job=${e.job}`, dataset: { job: e.job } }, name), e.message.slice(at + name.length));
    } else {
      msg.append(e.message);
    }
    msg.append(h('span', { class: 'kind' }, e.kind.replace(/_/g, ' ')));
    const el = h('div', { class: `event${fresh ? ' fresh' : ''}`, dataset: { sev: e.severity } },
      h('time', { datetime: new Date(e.time_ms).toISOString() }, fmt.clock(e.time_ms)),
      h('span', { class: 'sev', title: e.severity }),
      msg);
    el.hidden = RANK[e.severity] < RANK[this.min];
    return el;
  }

  applyFilter() {
    const rows = this.listEl.children;
    for (let i = 0; i < rows.length; i += 1) {
      const show = RANK[rows[i].dataset.sev] >= RANK[this.min];
      if (rows[i].hidden === show) rows[i].hidden = !show;
    }
  }

  /** When each job finished, from `job_finished` events: id -> ms. */
  finishedTimes() {
    const out = new Map();
    for (const e of this.events) if (e.kind === 'job_finished' && e.job && !out.has(e.job)) out.set(e.job, e.time_ms);
    return out;
  }
}
