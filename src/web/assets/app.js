// renderswarm status page: start-up and the live loop.
//
// State arrives from the node's `/stream`: `snapshot` (all jobs, light,
// and all nodes; at most twice a second, at least every 2 s), `changed`
// (ids of jobs whose records moved: the selected job's grid is refetched,
// throttled), `log` (one event), `hello` (who the node is). Each message
// only marks parts of the page dirty; one requestAnimationFrame callback
// then patches those parts, so a burst of messages costs one repaint.
// Without `/stream` (an older node) the page polls once every 2 s.
//
// Modules: api.js (HTTP, token), stream.js (SSE over fetch), jobs.js,
// detail.js (+ grid.js, thumbs.js, failures.js, summary.js in a worker),
// nodes.js (+ charts.js), events.js, submit.js, dialogs.js, lightbox.js.

import { api, setTokenAsker, auth } from './api.js';
import { openStream } from './stream.js';
import { JobsView } from './jobs.js';
import { DetailView } from './detail.js';
import { NodesView } from './nodes.js';
import { EventsView } from './events.js';
import { SubmitDialog } from './submit.js';
import { Lightbox } from './lightbox.js';
import { askToken, confirm, toast, showLog, wireDialogs } from './dialogs.js';
import { byId, icon, setText, setAttr, fmt, startOfToday, sleep, measure } from './util.js';

const state = {
  info: null,
  jobs: [],
  jobsById: new Map(),
  /** The archived jobs, as last fetched for the jobs list's "Archived". */
  archivedById: new Map(),
  /** A selected job that left the snapshots, while the archive is asked. */
  looking: null,
  nodes: [],
  selected: null,
  conn: 'connecting',
  lastMessage: 0,
  /** [ms, frames done over all jobs], one per snapshot, last ten minutes. */
  pace: [],
};

const dirty = new Set();
let frame = 0;

/** Mark parts of the page for the next animation frame. */
function invalidate(...parts) {
  for (const p of parts) dirty.add(p);
  if (!frame) frame = requestAnimationFrame(flush);
}

function flush() {
  const t0 = performance.now();
  frame = 0;
  const parts = new Set(dirty);
  dirty.clear();
  const now = Date.now();
  const part = (name, fn) => {
    if (!parts.has(name)) return;
    const t = performance.now();
    fn();
    measure(`rs:part:${name}`, t);
  };
  part('jobs', () => jobs.render(state.jobs, state.selected, events.finishedTimes()));
  part('nodes', () => nodes.render(state.nodes, now));
  part('header', renderHeader);
  part('conn', renderConn);
  part('detail', () => {
    if (!state.selected) return;
    detail.setRunning(runningOf(state.selected));
    detail.update(jobOf(state.selected));
  });
  // For perf.mjs: the cost of one batched DOM update.
  measure('rs:flush', t0, [...parts].join(','));
}

// ------------------------------------------------------------- the views

const lightbox = new Lightbox();
const nodeName = (id) => state.nodes.find((n) => n.id === id)?.name;

const jobs = new JobsView({
  body: byId('jobs-body'), emptyEl: byId('jobs-empty'), countEl: byId('jobs-count'), filterEl: byId('jobs-filter'),
  onSelect: (id) => select(id),
  onAction: (id, action) => act(id, action),
  onPriority: (id, value) => setPriority(id, value),
  onShowArchived: () => loadArchived(),
});

const detail = new DetailView({
  nodeName,
  lightbox,
  onLog: (jobId, jobName, task) => showLog(jobId, jobName || jobId, task),
  onRetry: (id) => act(id, 'retry'),
});

const nodes = new NodesView({
  rowsEl: byId('node-rows'), scrollEl: byId('node-list'), filterEl: byId('nodes-filter'), countEl: byId('nodes-count'),
  onSelectJob: (id) => select(id),
});

const events = new EventsView({ listEl: byId('event-list'), filterEl: byId('events-filter'), onSelectJob: (id) => select(id) });

const submit = new SubmitDialog({
  engines: () => {
    const names = new Set((state.info?.engines || []).map((e) => e.name));
    for (const n of state.nodes) if (n.alive) for (const e of n.engines) names.add(e);
    return [...names].sort();
  },
  nodeName: () => state.info?.name,
  onSubmitted: (job) => {
    toast(`Job ${job.name} submitted: ${fmt.int(job.frames_total)} frames.`, 'ok');
    upsertJob(job);
    select(job.id);
  },
});

// --------------------------------------------------------------- actions

/** A job on the page: from the snapshots, or archived. */
const jobOf = (id) => state.jobsById.get(id) || state.archivedById.get(id);

/** The archived jobs, fetched afresh (the jobs list's "Archived"). */
async function loadArchived() {
  try {
    const archived = (await api.allJobs()).filter((j) => j.archived);
    state.archivedById = new Map(archived.map((j) => [j.id, j]));
    return archived;
  } catch (e) {
    toast(e.message, 'error');
    return [...state.archivedById.values()];
  }
}

function select(id) {
  if (!id) return;
  if (!jobOf(id)) {
    toast('That job is not in the ledger any more.', 'error');
    return;
  }
  state.selected = id;
  if (location.hash !== `#job=${id}`) history.replaceState(null, '', `#job=${id}`);
  detail.select(id, jobOf(id));
  invalidate('jobs', 'detail');
}

const CONFIRM = {
  cancel: (j) => ({ title: `Cancel ${j.name}?`, text: `Renders under way are stopped and no more tasks are handed out. ${fmt.int(j.frames_done)} of ${fmt.int(j.frames_total)} frames are done; a cancelled job cannot be resumed.`, yes: 'Cancel job' }),
  archive: (j) => ({ title: `Archive ${j.name}?`, text: `It leaves this list on every node’s page (“Archived” and swarm jobs --archived still show it), and its frames and logs may then leave the nodes’ caches: collect what you need first.`, yes: 'Archive job' }),
};

async function act(id, action) {
  const j = state.jobsById.get(id);
  if (!j) return;
  if (CONFIRM[action] && !(await confirm(CONFIRM[action](j)))) return;
  try {
    const view = await api.act(id, action);
    const done = { pause: 'paused', resume: 'resumed', cancel: 'cancelled', retry: 'given fresh attempts for its failed tasks', archive: 'archived' }[action];
    toast(`${j.name} ${done}.`, 'ok');
    if (action === 'archive') { dropJob(id); return; }
    upsertJob(view);
    if (id === state.selected) { detail.changed(); detail.taskFailed(); }
  } catch (e) {
    toast(e.message, 'error');
  }
}

async function setPriority(id, value) {
  try {
    upsertJob(await api.priority(id, value));
  } catch (e) {
    toast(e.message, 'error');
  }
}

// This node's sleep: the page belongs to one node, and puts that one to
// sleep or wakes it (`swarm sleep` / `swarm wake` on its machine).
const sleepBtn = byId('node-sleep');

function renderSleepButton(me) {
  if (!me) return;
  const asleep = Boolean(me.asleep);
  const key = `${asleep}|${me.name}`;
  if (sleepBtn.dataset.key === key) return;
  sleepBtn.dataset.key = key;
  sleepBtn.dataset.asleep = asleep;
  sleepBtn.replaceChildren(icon(asleep ? 'sun' : 'moon'), asleep ? 'Wake this node' : 'Sleep this node');
  sleepBtn.title = asleep
    ? `${me.name} is asleep ${me.asleep}: wake it to take tasks again`
    : `Stop ${me.name} taking new tasks (renders under way finish); it still serves its files and this page`;
  sleepBtn.hidden = false;
}

sleepBtn.addEventListener('click', async () => {
  const waking = sleepBtn.dataset.asleep === 'true';
  try {
    const me = await (waking ? api.wake() : api.sleep());
    toast(waking ? `${me.name} is awake: it takes tasks.` : `${me.name} is asleep: it takes no new tasks.`, 'ok');
    state.nodes = state.nodes.map((n) => (n.me ? { ...n, ...me, history: n.history } : n));
    invalidate('nodes', 'header');
  } catch (e) {
    toast(e.message, 'error');
  }
});

/** Take an archived job off the page; snapshots leave it out from now on. */
function dropJob(id) {
  state.jobs = state.jobs.filter((j) => j.id !== id);
  state.jobsById.delete(id);
  invalidate('jobs', 'header', 'detail');
  if (state.selected === id) {
    state.selected = null;
    detail.select(null);
    history.replaceState(null, '', location.pathname + location.search);
    autoSelect();
  }
}

/** Merge a job view an action returned (it may carry every task: drop them). */
function upsertJob(view) {
  if (!view || !view.id) return;
  const light = { ...view };
  delete light.tasks;
  const i = state.jobs.findIndex((j) => j.id === light.id);
  if (i >= 0) state.jobs[i] = light; else state.jobs.unshift(light);
  state.jobsById.set(light.id, light);
  invalidate('jobs', 'header', 'detail');
}

// ---------------------------------------------------------------- header

function renderHeader() {
  const alive = state.nodes.filter((n) => n.alive);
  setText(byId('st-nodes'), fmt.int(alive.length));
  setText(byId('st-nodes-total'), `/ ${fmt.int(state.nodes.length)}`);
  const rendering = alive.filter((n) => n.tasks.length);
  const asleep = alive.filter((n) => n.asleep && !n.tasks.length).length;
  const idle = alive.length - rendering.length - asleep;
  setText(byId('st-nodes-sub'), `${rendering.length} rendering · ${idle} idle${asleep ? ` · ${asleep} asleep` : ''}`);
  renderSleepButton(state.nodes.find((n) => n.me));
  const frames = rendering.reduce((a, n) => a + n.tasks.reduce((b, t) => b + (t.frames ? t.frames.length : 1), 0), 0);
  setText(byId('st-frames'), fmt.int(frames));
  const slots = alive.reduce((a, n) => a + (n.slots || 1), 0);
  setText(byId('st-frames-sub'), `${fmt.int(rendering.reduce((a, n) => a + n.tasks.length, 0))} tasks · ${fmt.int(slots)} slots online`);
  const by = (s) => state.jobs.filter((j) => j.status === s).length;
  setText(byId('st-jobs'), fmt.int(by('running')));
  const queued = by('pending');
  const paused = by('paused');
  const failed = by('failed');
  setText(byId('st-jobs-sub'), [`${queued} queued`, paused ? `${paused} paused` : null, failed ? `${failed} failed` : null].filter(Boolean).join(' · '));
  renderPace();
  const today = startOfToday();
  const finished = events.finishedTimes();
  const doneToday = state.jobs.filter((j) => j.status === 'done' && (finished.get(j.id) ?? 0) >= today);
  setText(byId('st-done'), fmt.int(doneToday.length));
  setText(byId('st-done-unit'), doneToday.length === 1 ? 'job' : 'jobs');
  setText(byId('st-done-sub'), `${fmt.int(doneToday.reduce((a, j) => a + j.frames_total, 0))} frames`);
}

const PACE_MS = 10 * 60 * 1000;

function recordPace(now) {
  const total = state.jobs.reduce((a, j) => a + j.frames_done, 0);
  const p = state.pace;
  if (p.length && total < p[p.length - 1][1]) p.length = 0; // a retry or reset: start over
  p.push([now, total]);
  while (p.length > 2 && p[0][0] < now - PACE_MS) p.shift();
}

function renderPace() {
  const p = state.pace;
  const span = p.length > 1 ? p[p.length - 1][0] - p[0][0] : 0;
  if (span < 30000) {
    setText(byId('st-rate'), '–');
    setText(byId('st-rate-sub'), 'measuring…');
    return;
  }
  const perHour = ((p[p.length - 1][1] - p[0][1]) / span) * 3600000;
  setText(byId('st-rate'), fmt.int(perHour));
  setText(byId('st-rate-sub'), `frames, last ${Math.max(1, Math.round(span / 60000))} min`);
}

function renderConn() {
  // Data on screen while the link is down is dimmed: a wall screen must not
  // show stale figures as if they were live.
  document.body.dataset.conn = state.conn;
  const dot = byId('conn-dot');
  setAttr(dot, 'data-conn', state.conn);
  setText(byId('conn-name'), state.info ? state.info.name : 'connecting…');
  const words = { live: 'live', connecting: 'connecting…', reconnecting: 'reconnecting…', offline: 'node unreachable', polling: 'polling every 2 s' };
  const version = state.info ? ` · v${state.info.version}` : '';
  setText(byId('conn-sub'), `${words[state.conn] || state.conn}${version}`);
  const title = state.info ? `${state.info.name}\n${state.info.id}\ndata: ${state.info.data_dir}${(state.info.engines || []).map((e) => `\n${e.name}: ${e.version}`).join('')}` : '';
  setAttr(byId('conn-name').parentElement.parentElement, 'title', title);
  document.title = state.info ? `renderswarm · ${state.info.name}` : 'renderswarm';
}

/** Running tasks of job `id`, from the nodes: task -> {node, progress}. */
function runningOf(id) {
  const out = new Map();
  for (const n of state.nodes) for (const t of n.tasks) if (t.job === id) out.set(t.task, { node: n.name, progress: t.progress });
  return out;
}

// ------------------------------------------------------------- live data

function applySnapshot({ jobs: js, nodes: ns }) {
  const now = Date.now();
  if (Array.isArray(js)) {
    const before = state.jobsById;
    state.jobs = js;
    state.jobsById = new Map(js.map((j) => [j.id, j]));
    recordPace(now);
    // Jobs leave the ledger's list only when archived (here, on another
    // node's page, or by age).
    if ([...before.keys()].some((id) => !state.jobsById.has(id))) jobs.archivedChanged();
  }
  if (Array.isArray(ns)) {
    state.nodes = ns;
    nodes.ingest(ns, now);
  }
  invalidate('jobs', 'nodes', 'header', 'detail');
  if (state.selected && !jobOf(state.selected)) keepOrDrop(state.selected);
  if (!state.selected) autoSelect();
}

/**
 * The selected job left the snapshots. Archived elsewhere (another node's
 * page, `swarm archive`, its age), it stays on show as archived; gone
 * altogether (a fresh ledger), something else is shown.
 */
async function keepOrDrop(id) {
  if (state.looking === id) return;
  state.looking = id;
  await loadArchived();
  state.looking = null;
  if (state.selected !== id) return;
  if (jobOf(id)) {
    invalidate('jobs', 'detail');
    return;
  }
  state.selected = null;
  detail.select(null);
  autoSelect();
}

function autoSelect() {
  const fromHash = /#job=([0-9a-f]+)/.exec(location.hash);
  const pick = (fromHash && state.jobs.find((j) => j.id.startsWith(fromHash[1])))
    || state.jobs.filter((j) => j.status === 'running').sort((a, b) => b.priority - a.priority)[0]
    || state.jobs[0];
  if (pick) select(pick.id);
}

function onStreamEvent(name, data) {
  state.lastMessage = Date.now();
  switch (name) {
    case 'hello':
      state.info = data.node || state.info;
      if (data.token_required) auth.required = true;
      invalidate('conn');
      if (helloCount++) catchUp();
      break;
    case 'snapshot':
      applySnapshot(data);
      break;
    case 'changed':
      if (state.selected && (data.jobs || []).includes(state.selected)) detail.changed();
      break;
    case 'log': {
      const added = events.add([data], true, jobNames());
      if (added.length && data.job === state.selected && data.kind === 'task_failed') detail.taskFailed();
      if (added.length && data.kind === 'job_finished') invalidate('header', 'jobs');
      break;
    }
    default:
      break;
  }
}

const jobNames = () => new Map(state.jobs.map((j) => [j.id, j.name]));
let helloCount = 0;

function setConn(s) {
  if (state.conn === s) return;
  state.conn = s;
  invalidate('conn');
}

/** After a reconnect: events missed while away, and fresh node history. */
async function catchUp() {
  try {
    await syncEvents();
    nodes.seedHistory(await api.nodes(true));
  } catch { /* the stream carries on regardless */ }
}

/**
 * Events newer than those shown. A node keeps its log in memory, so after
 * it restarts its numbers start again from 1: then the list starts over.
 */
async function syncEvents() {
  const latest = await api.events(0);
  const newest = latest.length ? latest[latest.length - 1].seq : 0;
  if (newest < events.lastSeq) events.reset();
  events.add(latest.filter((e) => e.seq > events.lastSeq), true, jobNames());
}

async function poll() {
  setConn('polling');
  for (let round = 0; ; round += 1) {
    try {
      const [js, ns] = await Promise.all([api.jobs(), api.nodes()]);
      const before = new Map(state.jobs.map((j) => [j.id, j]));
      applySnapshot({ jobs: js, nodes: ns });
      // New events each round; every 15th, a full look in case the node restarted.
      if (round % 15 === 0) await syncEvents();
      else events.add(await api.events(events.lastSeq), true, jobNames());
      const sel = state.selected && before.get(state.selected);
      const now = state.selected && state.jobsById.get(state.selected);
      if (sel && now && JSON.stringify(sel) !== JSON.stringify(now)) detail.changed();
      setConn('polling');
    } catch {
      setConn('offline');
    }
    await sleep(2000);
  }
}

async function start() {
  wireDialogs();
  setTokenAsker(askToken);
  byId('open-submit').addEventListener('click', () => submit.open());
  window.addEventListener('hashchange', () => {
    const m = /#job=([0-9a-f]+)/.exec(location.hash);
    const j = m && state.jobs.find((x) => x.id.startsWith(m[1]));
    if (j && j.id !== state.selected) select(j.id);
  });
  for (;;) {
    try {
      state.info = await api.node();
      break;
    } catch (e) {
      state.conn = 'offline';
      renderConn();
      await sleep(3000);
    }
  }
  invalidate('conn');
  const [ns, js, evs] = await Promise.all([api.nodes(true), api.jobs(), api.events(0)]).catch(() => [[], [], []]);
  nodes.seedHistory(ns);
  events.add(evs, false, new Map(js.map((j) => [j.id, j.name])));
  applySnapshot({ jobs: js, nodes: ns });
  openStream({
    onEvent: onStreamEvent,
    onStatus: (s) => {
      if (s === 'unsupported') poll();
      else setConn(s);
    },
  });
  // Relative times ("seen 4s ago") age between snapshots.
  setInterval(() => { if (Date.now() - state.lastMessage > 5000) invalidate('nodes'); }, 5000);
}

start();
