// What the page needs from a job's full view (`GET /jobs/{id}`, every
// task), in compact form. For a 10,000-task job the JSON is megabytes;
// the detail worker parses it off the main thread and hands back only
// this: per-task node and progress as typed arrays (transferred, not
// copied), the failures, the frames' file type, and the task states as a
// `/grid`-style string for nodes that do not serve `/grid`.

const STATE_CHAR = { pending: 'p', running: 'r', done: 'd', failed: 'f' };
export const MAX_FAILURES = 500;

export function summarise(job) {
  const tasks = job.tasks || [];
  const n = tasks.length;
  const names = [];
  const nameIndex = new Map();
  const nodeOf = new Uint16Array(n);
  const progress = new Float32Array(n).fill(NaN);
  const renderMs = new Uint32Array(n);
  const extCount = new Map();
  const states = new Array(n);
  const failures = [];
  let failuresTotal = 0;
  for (let i = 0; i < n; i += 1) {
    const t = tasks[i];
    const name = t.node_name || (t.node ? t.node.slice(0, 12) : null);
    if (name) {
      let k = nameIndex.get(name);
      if (k === undefined) { names.push(name); k = names.length; nameIndex.set(name, k); }
      nodeOf[i] = k;
    }
    if (t.progress != null) progress[i] = t.progress;
    if (t.render_ms != null) renderMs[i] = Math.min(t.render_ms, 0xffffffff);
    let c = STATE_CHAR[t.status] || 'p';
    if (c === 'd' && t.attempts > 1) c = 'w';
    states[i] = c;
    for (const f in t.outputs || {}) {
      const ext = t.outputs[f].ext;
      extCount.set(ext, (extCount.get(ext) || 0) + 1);
      break;
    }
    if (t.reason) {
      failuresTotal += 1;
      if (failures.length < MAX_FAILURES || t.status === 'failed') {
        failures.push({
          index: t.index, frames: t.frames, status: t.status, node: name, attempts: t.attempts,
          failures: t.failures, reason: t.reason, log: Boolean(t.log),
        });
      }
    }
  }
  failures.sort((a, b) => (a.status === 'failed' ? 0 : 1) - (b.status === 'failed' ? 0 : 1) || a.index - b.index);
  failures.length = Math.min(failures.length, MAX_FAILURES);
  let ext = null;
  let best = 0;
  for (const [e, c] of extCount) if (c > best) { best = c; ext = e; }
  const light = { ...job };
  delete light.tasks;
  return { job: light, names, nodeOf, progress, renderMs, ext, failures, failuresTotal, states: states.join('') };
}
