// The page at farm scale: 50 nodes and a 10,000-frame job, measured in the
// browser while it updates live. Run against a node started with the
// hidden `--test-synthetic-farm 49,10000` (49 fake peers whose telemetry
// changes every second, one job of 10,000 frames in mixed states) that
// also holds one small real job to switch away to.
//
//   node big_farm.mjs --url http://127.0.0.1:PORT --shots DIR
//       [--nodes 50] [--frames 10000] [--seconds 10]
//       [--max-block 200] [--max-frame-p95 100] [--max-grid 250]
//
// It measures, with the page's own timings (`rs:grid`: a grid answer turned
// into pixels; `rs:grid-paint`: a whole repaint; `rs:flush`: one batched DOM
// update; enabled by `window.__rsPerf`) and the browser's (PerformanceObserver
// 'longtask', requestAnimationFrame deltas):
//   1. the full grid render, over several fresh selections of the big job;
//   2. whole repaints after resizes;
//   3. --seconds of live updates: long tasks, frame times, DOM and grid
//      updates, and how many snapshots arrived (a stalled stream must not
//      pass for a smooth page).
// The limits leave room for a loaded 2-core CI machine; the figures are
// printed either way, and once more as one JSON line (`perf {...}`). A
// measurement over a limit is taken once more and the second one judged:
// on a shared machine one descheduled moment makes a 1 s "long task" of a
// 9 ms render, and is gone on a second look, where a slow page is slow in
// both (both are printed).

import { flags, need, main, openPage, shooter, apiAt, expect, step, stats, showStats, DEADLINE_MS } from './lib.mjs';

const args = flags();
const url = need(args, 'url');
const shot = shooter(need(args, 'shots'));
const api = apiAt(url);
const nodeCount = Number(args.nodes || 50);
const frames = Number(args.frames || 10000);
const seconds = Number(args.seconds || 10);
const LIMITS = {
  blockMs: Number(args['max-block'] || 200),
  frameP95Ms: Number(args['max-frame-p95'] || 100),
  gridMs: Number(args['max-grid'] || 250),
};
const SELECTIONS = 5;

/** In the page, before its scripts: the page's timings on, long tasks kept. */
function instrument() {
  window.__rsPerf = true;
  window.__longtasks = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__longtasks.push({ start: e.startTime, ms: e.duration });
  }).observe({ type: 'longtask', buffered: true });
}

/** `rs:grid` renders of an `n`-frame grid so far (ms each); only whole ones if `full`. */
const gridsOf = (page, n, full) => page.evaluate(([k, f]) => performance.getEntriesByName('rs:grid')
  .filter((e) => e.detail && e.detail.frames === k && (e.detail.full || !f)).map((e) => e.duration), [n, full]);

/** Wait for one more `rs:grid` render of an `n`-frame grid than `count`. */
const nextGrid = (page, n, count) => page.waitForFunction(([k, c]) => performance.getEntriesByName('rs:grid')
  .filter((e) => e.detail && e.detail.frames === k).length > c, [n, count]);

/** Click job `job`'s row and wait until its name heads the detail. */
async function selectRow(page, job) {
  await page.click(`#jobs-body tr[data-id="${job.id}"]`);
  await page.waitForFunction((n) => document.getElementById('d-name').textContent === n, job.name);
}

/**
 * Select the small job and wait for its grid (else the big grid would still
 * be on the canvas and only its changed cells repainted), then the big one:
 * answer the click-to-grid time and the long tasks meanwhile.
 */
async function freshSelection(page, big, other) {
  const small = (await gridsOf(page, other.frames_total, false)).length;
  await selectRow(page, other);
  await nextGrid(page, other.frames_total, small);
  const before = (await gridsOf(page, frames, false)).length;
  await page.evaluate(() => { window.__longtasks = []; });
  const t0 = Date.now();
  await selectRow(page, big);
  await nextGrid(page, frames, before);
  return { ms: Date.now() - t0, longtasks: await page.evaluate(() => window.__longtasks.map((t) => t.ms)) };
}

/** In the page: --seconds of live updates, measured. */
async function steadyWindow(ms) {
  window.__longtasks = [];
  performance.clearMeasures('rs:flush');
  performance.clearMeasures('rs:grid');
  const rowText = () => [...document.querySelectorAll('#node-rows .node-row')].map((r) => r.textContent);
  const rowsBefore = rowText();
  const deltas = [];
  await new Promise((resolve) => {
    let last = performance.now();
    const end = last + ms;
    const tick = (t) => {
      deltas.push(t - last);
      last = t;
      if (t < end) requestAnimationFrame(tick); else resolve();
    };
    requestAnimationFrame(tick);
  });
  const rowsAfter = rowText();
  const m = (name) => performance.getEntriesByName(name);
  return {
    deltas: deltas.slice(1),
    longtasks: window.__longtasks.map((t) => t.ms),
    flushes: m('rs:flush').map((e) => e.duration),
    snapshots: m('rs:flush').filter((e) => String(e.detail).includes('jobs')).length,
    grids: m('rs:grid').map((e) => e.duration),
    rowsChanged: rowsAfter.filter((t, i) => t !== rowsBefore[i]).length,
  };
}

function report(r) {
  console.log(`page at farm scale: ${r.nodeRows} node rows, big job ${r.frames} frames`);
  console.log(`  select the big job, click -> grid on screen: ${showStats(r.selectMs)}`);
  console.log(`  full grid render (answer -> pixels):         ${showStats(r.fullGridMs)}`);
  console.log(`  whole-grid repaint (resize):                 ${showStats(r.repaintMs)}`);
  console.log(`  long tasks while selecting the big job:      ${showStats(r.selectLongTasksMs)}`);
  console.log(`  ${r.steady.seconds} s of live updates (${r.steady.snapshots} snapshots, ${r.steady.rowsChanged} node rows changed):`);
  console.log(`    rAF frame time:             ${showStats(r.steady.frameMs)}; frames over 50 ms: ${r.steady.framesOver50ms}`);
  console.log(`    long tasks (main thread):   ${showStats(r.steady.longTasksMs)}`);
  console.log(`    DOM update per batch:       ${showStats(r.steady.domUpdateMs)}`);
  console.log(`    grid update:                ${showStats(r.steady.gridUpdateMs)}`);
  console.log(`  limits: block < ${LIMITS.blockMs} ms, p95 frame < ${LIMITS.frameP95Ms} ms, full grid < ${LIMITS.gridMs} ms`);
  console.log(`perf ${JSON.stringify(r)}`);
}

main(async (browser) => {
  const { page, errors } = await openPage(browser, { width: 1920, height: 1080 });
  await page.addInitScript(instrument);
  const jobs = await api.get('/jobs?tasks=false');
  const big = jobs.find((j) => j.frames_total === frames);
  const other = jobs.find((j) => j.frames_total !== frames);
  expect(big && other, `need a ${frames}-frame job and another: the node has ${jobs.map((j) => `${j.name} (${j.frames_total})`).join(', ')}`);

  await step(`the page lists ${nodeCount} nodes, live`, async () => {
    await page.goto(url);
    await page.waitForFunction((n) => document.querySelectorAll('#node-rows .node-row').length === n
      && document.getElementById('conn-dot').dataset.conn === 'live', nodeCount);
    await page.click('#jobs-filter [data-filter="all"]');
  });

  const selections = [];
  await step(`select the big job ${SELECTIONS} times: the legend accounts for every frame`, async () => {
    for (let i = 0; i < SELECTIONS; i += 1) selections.push(await freshSelection(page, big, other));
    const legend = await page.evaluate(() => [...document.querySelectorAll('#d-legend b')].map((b) => Number(b.textContent.replace(/\D/g, ''))));
    const [done, running, , failed, wasted] = legend;
    const sum = legend.reduce((a, b) => a + b, 0);
    expect(sum === frames, `the legend sums to ${sum}, not ${frames}`);
    const now = (await api.get('/jobs?tasks=false')).find((j) => j.id === big.id);
    expect(done + wasted === now.frames_done, `legend: ${done}+${wasted} done, API: ${now.frames_done}`);
    expect(failed === now.tasks_failed && running === now.tasks_running, `legend: ${failed} failed, ${running} running; API: ${now.tasks_failed}, ${now.tasks_running}`);
  });

  await step('resize: the grid repaints whole', async () => {
    for (const width of [1700, 1920, 1500, 1920]) {
      const before = await page.evaluate(() => performance.getEntriesByName('rs:grid-paint').length);
      await page.setViewportSize({ width, height: 1080 });
      await page.waitForFunction((c) => performance.getEntriesByName('rs:grid-paint').length > c, before);
    }
  });
  const repaints = await page.evaluate((n) => performance.getEntriesByName('rs:grid-paint')
    .filter((e) => e.detail.frames === n).map((e) => e.duration), frames);

  let fullGridMs = stats(await gridsOf(page, frames, true));
  if (fullGridMs.max >= LIMITS.gridMs) {
    console.log(`full grid render over ${LIMITS.gridMs} ms (${showStats(fullGridMs)}): selecting ${SELECTIONS} times more`);
    await page.evaluate(() => performance.clearMeasures('rs:grid'));
    await step(`select the big job ${SELECTIONS} times more`, async () => {
      for (let i = 0; i < SELECTIONS; i += 1) await freshSelection(page, big, other);
    });
    fullGridMs = stats(await gridsOf(page, frames, true));
  }
  const live = () => page.evaluate(steadyWindow, seconds * 1000);
  let steady = await step(`${seconds} s of live updates`, live);
  const block = Math.max(0, ...steady.longtasks, ...steady.deltas);
  if (block >= LIMITS.blockMs) {
    console.log(`a block of ${Math.round(block)} ms in the live window: ${seconds} s more`);
    steady = await step(`${seconds} s more of live updates`, live);
  }
  await shot(page, 'big-farm-50-nodes-10000-frames');

  const r = {
    nodeRows: await page.evaluate(() => document.querySelectorAll('#node-rows .node-row').length),
    frames,
    selectMs: stats(selections.map((s) => s.ms)),
    fullGridMs,
    repaintMs: stats(repaints),
    selectLongTasksMs: stats(selections.flatMap((s) => s.longtasks)),
    steady: {
      seconds,
      snapshots: steady.snapshots,
      rowsChanged: steady.rowsChanged,
      frameMs: stats(steady.deltas),
      framesOver50ms: steady.deltas.filter((d) => d > 50).length,
      longTasksMs: stats(steady.longtasks),
      domUpdateMs: stats(steady.flushes),
      gridUpdateMs: stats(steady.grids),
    },
  };
  report(r);

  await step('the live window really was live', () => {
    expect(r.steady.snapshots >= Math.floor(seconds / 3), `only ${r.steady.snapshots} snapshots in ${seconds} s`);
    expect(r.steady.rowsChanged > 0, 'no node row changed: the telemetry did not reach the page');
  });
  await step(`no main-thread block over ${LIMITS.blockMs} ms while live`, () => {
    expect(r.steady.longTasksMs.max < LIMITS.blockMs, `a long task of ${r.steady.longTasksMs.max} ms`);
    expect(r.steady.frameMs.max < LIMITS.blockMs, `a frame of ${r.steady.frameMs.max} ms`);
  });
  await step(`p95 frame time under ${LIMITS.frameP95Ms} ms`, () => {
    expect(r.steady.frameMs.n > seconds * 5, `only ${r.steady.frameMs.n} frames in ${seconds} s`);
    expect(r.steady.frameMs.p95 < LIMITS.frameP95Ms, `p95 ${r.steady.frameMs.p95} ms`);
  });
  await step(`full grid render under ${LIMITS.gridMs} ms`, () => {
    expect(fullGridMs.n >= SELECTIONS, `only ${fullGridMs.n} full renders measured`);
    expect(fullGridMs.max < LIMITS.gridMs, `max ${fullGridMs.max} ms`);
  });
  await step('no page errors, no CSP violations', () => expect(!errors.length, errors.join(' | ')));
}, { name: 'big-farm', shot, watchdogMs: DEADLINE_MS * 4 });
