// The status page of a real swarm, driven as a person would: see the
// nodes, upload a scene through the submit form, watch the frame grid fill,
// pause and resume the job with its buttons, open a finished frame, archive
// the job, put the node to sleep and wake it.
//
//   node swarm_page.mjs --url http://127.0.0.1:PORT --scene /abs/orbit.toml
//                       --frames 1-144 --nodes 2 --tags farm --shots DIR
//
// The grid is read from the page itself: a MutationObserver records every
// state the legend shows (its five counts), so the test knows the grid
// went through partial states and did not jump from nothing to done.
// The job is paused as soon as the page shows it has started, so a fast
// machine cannot finish it before the pause; `--frames` must be large
// enough that some frames are still pending by then.

import { basename } from 'node:path';
import { flags, need, main, openPage, shooter, apiAt, expect, step, DEADLINE_MS } from './lib.mjs';

const args = flags();
const url = need(args, 'url');
const scene = need(args, 'scene');
const frames = args.frames || '1-144';
const nodeCount = Number(args.nodes || 2);
// Tags every node has: the job requires them (through the form's field).
const tags = args.tags || '';
const shot = shooter(need(args, 'shots'));
const api = apiAt(url);
const jobName = basename(scene).replace(/\.[^.]*$/, '');

/** In the page, before its scripts: record every state the legend shows. */
function recordLegend() {
  window.__legend = [];
  document.addEventListener('DOMContentLoaded', () => {
    const legend = document.getElementById('d-legend');
    const record = () => {
      const n = [...legend.querySelectorAll('b')].map((b) => Number(b.textContent.replace(/\D/g, '')));
      if (n.length !== 5) return;
      window.__legend.push({
        job: /#job=([0-9a-f]+)/.exec(location.hash)?.[1],
        done: n[0], running: n[1], pending: n[2], failed: n[3], wasted: n[4],
      });
    };
    new MutationObserver(record).observe(legend, { subtree: true, childList: true, characterData: true });
  });
}

/**
 * In the page: whether the legend's latest state for job `id` meets `c`
 * (each bound optional; "finished" counts done and wasted frames). Data,
 * not code, crosses over: the page's CSP forbids evaluating strings.
 */
function legendMeets([id, c]) {
  const s = [...window.__legend].reverse().find((x) => x.job === id);
  if (!s) return false;
  const fin = s.done + s.wasted;
  return (c.startedMin == null || s.running + fin >= c.startedMin)
    && (c.finishedMin == null || fin >= c.finishedMin)
    && (c.running == null || s.running === c.running)
    && (c.pending == null || s.pending === c.pending);
}

/** The legend's latest state for job `id`. */
function latest(page, id) {
  return page.evaluate((i) => [...window.__legend].reverse().find((x) => x.job === i), id);
}

/** Wait until the legend's latest state for job `id` meets `c` (see `legendMeets`); answer it. */
async function waitLegend(page, id, c, timeout = DEADLINE_MS) {
  await page.waitForFunction(legendMeets, [id, c], { timeout });
  return latest(page, id);
}

async function jobFromApi(id) {
  const job = (await api.get('/jobs?tasks=false')).find((j) => j.id === id);
  expect(job, `the node does not list job ${id}`);
  return job;
}

const rowStatus = (page, id) => page.evaluate((i) => document.querySelector(`#jobs-body tr[data-id="${i}"]`)?.dataset.status, id);

/** Open the submit form with the scene chosen, `f` frames, and its more settings shown. */
async function openForm(page, f) {
  await page.click('#open-submit');
  await page.waitForSelector('#submit-dialog[open]');
  await page.click('#src-seg [data-src="file"]');
  await page.setInputFiles('#file-input', scene);
  await page.waitForFunction((name) => document.getElementById('drop-text').textContent.includes(name), basename(scene));
  await page.fill('#f-frames', f);
  if (!(await page.$eval('#submit-form details.more', (d) => d.open))) await page.click('#submit-form details.more > summary');
}

/**
 * The device, movie and frame-rate settings reach the node: each one the
 * node refuses for this scene comes back under its own field (the builtin
 * engine has no device; a frame rate needs a movie, and a sane one).
 */
async function settingsAreChecked(page) {
  await openForm(page, '1-2');
  const refusedAt = async (field, words) => {
    await page.click('#submit-go');
    await page.waitForFunction(([f, w]) => (document.querySelector(`#submit-form [data-err="${f}"]`)?.textContent || '').includes(w), [field, words]);
    console.log(`     ${field}: ${await page.textContent(`#submit-form [data-err="${field}"]`)}`);
  };
  await page.selectOption('#f-device', 'cuda');
  await refusedAt('device', 'Blender');
  await page.selectOption('#f-device', '');
  await page.fill('#f-fps', '30');
  await refusedAt('fps', 'for a movie');
  await page.selectOption('#f-encode', 'mp4');
  await page.fill('#f-fps', '0');
  await refusedAt('fps', 'between');
  await shot(page, 'swarm-02-submit-refused');
  await page.selectOption('#f-encode', '');
  await page.fill('#f-fps', '');
  await page.click('#submit-dialog [data-close]');
  await page.waitForFunction(() => !document.getElementById('submit-dialog').open);
  const jobs = await api.get('/jobs?tasks=false');
  expect(!jobs.length, `a refused submission made a job: ${jobs.map((j) => j.name).join(', ')}`);
}

async function submit(page) {
  await openForm(page, frames);
  if (tags) await page.fill('#f-requirements', tags);
  await shot(page, 'swarm-02-submit-form');
  await page.click('#submit-go');
  // Either the dialog closes (accepted) or the node's error shows in it.
  await page.waitForFunction(() => !document.getElementById('submit-dialog').open
    || [...document.querySelectorAll('#submit-form .err, #form-error')].some((e) => e.textContent));
  const refused = await page.evaluate(() => document.getElementById('submit-dialog').open
    && [...document.querySelectorAll('#submit-form .err, #form-error')].map((e) => e.textContent).filter(Boolean).join('; '));
  expect(!refused, `the node refused the upload: ${refused}`);
  await page.waitForFunction((n) => document.getElementById('d-name').textContent === n, jobName);
  const id = await page.evaluate(() => /#job=([0-9a-f]+)/.exec(location.hash)?.[1]);
  expect(id, 'the new job is not selected (no #job= in the address)');
  const job = await jobFromApi(id);
  expect(job.frames === frames, `the node has frames ${job.frames}, not ${frames}`);
  const want = tags.split(',').map((t) => t.trim()).filter(Boolean);
  expect(JSON.stringify(job.requirements) === JSON.stringify(want.sort()), `the node has requirements ${JSON.stringify(job.requirements)}, not ${JSON.stringify(want)}`);
  return job;
}

async function pauseAndResume(page, job) {
  const row = page.locator(`#jobs-body tr[data-id="${job.id}"]`);
  await step('pause through the row’s button: the page and the API say paused', async () => {
    // Pause as soon as the page shows the job under way.
    const s = await waitLegend(page, job.id, { startedMin: 1 });
    const status = await rowStatus(page, job.id);
    expect(status !== 'done', `the job was done before it could be paused (${JSON.stringify(s)}): raise --frames`);
    await row.locator('button[title^="Pause"]').click();
    await page.waitForFunction((i) => document.querySelector(`#jobs-body tr[data-id="${i}"]`)?.dataset.status === 'paused', job.id);
    const j = await jobFromApi(job.id);
    expect(j.status === 'paused', `the API says ${j.status}`);
    expect(await page.textContent('#d-status') === 'Paused', 'the detail pill does not say Paused');
  });
  await step('while paused, renders under way finish and the grid holds part of the job', async () => {
    const s = await waitLegend(page, job.id, { running: 0, finishedMin: 1 });
    const j = await jobFromApi(job.id);
    expect(j.status === 'paused', `the API says ${j.status}`);
    expect(s.done + s.wasted < job.frames_total, `all ${job.frames_total} frames were done while paused: raise --frames`);
    console.log(`     paused with ${s.done} done, ${s.pending} pending`);
    await shot(page, 'swarm-03-paused');
  });
  await step('resume through the row’s button: the API says running, then the grid fills', async () => {
    await row.locator('button[title^="Resume"]').click();
    await page.waitForFunction((i) => document.querySelector(`#jobs-body tr[data-id="${i}"]`)?.dataset.status !== 'paused', job.id);
    const j = await jobFromApi(job.id);
    expect(j.status === 'running' || j.status === 'done', `the API says ${j.status} after resume`);
    const before = await latest(page, job.id);
    await waitLegend(page, job.id, { finishedMin: before.done + before.wasted + 1 });
    await shot(page, 'swarm-04-resumed');
  });
}

main(async (browser) => {
  const { page, errors } = await openPage(browser);
  await page.addInitScript(recordLegend);

  await step(`the page shows ${nodeCount} live nodes`, async () => {
    await page.goto(url);
    await page.waitForFunction((n) => document.querySelectorAll('#node-rows .node-row').length === n
      && document.getElementById('conn-dot').dataset.conn === 'live'
      && document.getElementById('st-nodes').textContent === String(n), nodeCount);
    await shot(page, 'swarm-01-nodes');
  });

  await step('settings the node refuses come back under their fields, and make no job', () => settingsAreChecked(page));
  const job = await step(`upload ${basename(scene)} through the form, frames ${frames}, on nodes tagged ${tags || '(any)'}`, () => submit(page));
  console.log(`     job ${job.id}: ${job.frames_total} frames`);
  await pauseAndResume(page, job);

  await step('the grid fills to every frame done; the API agrees', async () => {
    await waitLegend(page, job.id, { finishedMin: job.frames_total, running: 0, pending: 0 }, 240_000);
    await page.waitForFunction((i) => document.querySelector(`#jobs-body tr[data-id="${i}"]`)?.dataset.status === 'done', job.id);
    const j = await jobFromApi(job.id);
    expect(j.status === 'done' && j.frames_done === job.frames_total, `the API says ${j.status}, ${j.frames_done} done`);
    // A peer's last heartbeat may still name a task it just finished: the
    // ledger, which heard the Done first, has the last word.
    const holding = (await api.get('/nodes')).filter((n) => n.tasks.some((t) => t.job === job.id));
    expect(holding.length === 0, `the job is done, yet ${holding.map((n) => n.name).join(', ')} still show a task of it`);
    expect(await page.textContent('#st-frames') === '0', 'the header counts frames rendering in a done job');
    await shot(page, 'swarm-05-done');
  });

  await step('the grid went through partial states, not from nothing to done', async () => {
    const seen = (await page.evaluate(() => window.__legend)).filter((s) => s.job === job.id);
    const done = seen.map((s) => s.done + s.wasted).filter((d, i, all) => i === 0 || d !== all[i - 1]);
    console.log(`     done counts the page showed: ${done.join(' → ')}`);
    const partial = seen.filter((s) => s.done + s.wasted > 0 && s.done + s.wasted < job.frames_total);
    expect(seen.some((s) => s.pending > 0), 'never showed a pending frame');
    expect(partial.length > 0, 'never showed a partly done grid');
    expect(new Set(done).size >= 3, `only ${done.length} distinct states`);
  });

  await step('a finished frame opens in the lightbox as a real 320x180 PNG', async () => {
    await page.waitForFunction(() => [...document.querySelectorAll('#thumbs img')].some((i) => i.complete && i.naturalWidth > 0));
    const box = await page.locator('#grid').boundingBox();
    await page.mouse.click(box.x + 2, box.y + 2);
    await page.waitForSelector('#lightbox[open] #lb-stage img');
    await page.waitForFunction(() => {
      const img = document.querySelector('#lb-stage img');
      return img && img.complete && img.naturalWidth > 0;
    });
    const [w, h, title] = await page.evaluate(() => {
      const img = document.querySelector('#lb-stage img');
      return [img.naturalWidth, img.naturalHeight, document.getElementById('lb-title').textContent];
    });
    expect(w === 320 && h === 180, `the image is ${w}x${h}`);
    expect(title === `${jobName} · frame 1`, `the lightbox says “${title}”`);
    await shot(page, 'swarm-06-lightbox');
    await page.keyboard.press('Escape');
  });

  await step('archive through the row’s button: the row leaves, the API lists it only as archived', async () => {
    const row = page.locator(`#jobs-body tr[data-id="${job.id}"]`);
    await row.locator('button[title^="Archive"]').click();
    await page.waitForSelector('#confirm-dialog[open]');
    await page.click('#confirm-yes');
    await page.waitForFunction((i) => !document.querySelector(`#jobs-body tr[data-id="${i}"]`), job.id);
    const listed = (await api.get('/jobs?tasks=false')).some((j) => j.id === job.id);
    expect(!listed, 'the node still lists the archived job');
    const archived = (await api.get('/jobs?tasks=false&archived=true')).find((j) => j.id === job.id);
    expect(archived && archived.archived === true, `the node's archived listing says ${JSON.stringify(archived?.archived)}`);
    await shot(page, 'swarm-07-archived');
  });

  await step('“Archived” lists it with no action to take; selected, it shows every frame done', async () => {
    await page.click('#jobs-filter [data-filter="archived"]');
    const row = page.locator(`#jobs-body tr[data-id="${job.id}"]`);
    await row.waitFor({ timeout: DEADLINE_MS });
    const actions = await row.locator('button:visible:not([disabled])').count();
    expect(actions === 0, `the archived row offers ${actions} action(s)`);
    const count = await page.textContent('#jobs-count');
    expect(/^\d+ archived$/.test(count), `the list's count says “${count}”`);
    const { frames_total: total } = (await api.get('/jobs?tasks=false&archived=true')).find((j) => j.id === job.id);
    await row.click();
    await page.waitForFunction((n) => document.getElementById('d-name').textContent === n, jobName);
    const seen = await waitLegend(page, job.id, { finishedMin: total });
    expect(seen.done + seen.wasted === total, `the grid shows ${seen.done + seen.wasted} of ${total} frames done`);
    const pill = await page.textContent('#d-status');
    expect(pill === 'Done · archived', `the detail's status says “${pill}”`);
    expect(await page.isHidden('#retry-failed'), 'an archived job offers a retry');
    await shot(page, 'swarm-07b-archived-list');
    await page.click('#jobs-filter [data-filter="active"]');
    await row.waitFor({ state: 'detached', timeout: DEADLINE_MS });
  });

  await step('a job archived elsewhere joins “Archived” while it is shown', async () => {
    const requirements = tags ? tags.split(',') : [];
    const other = await api.post('/jobs', { scene, frames: '1', name: `${jobName}-elsewhere`, requirements });
    await page.waitForFunction((i) => document.querySelector(`#jobs-body tr[data-id="${i}"]`)?.dataset.status === 'done', other.id, { timeout: DEADLINE_MS });
    await page.click(`#jobs-body tr[data-id="${other.id}"]`);
    await page.waitForFunction((n) => document.getElementById('d-name').textContent === n, other.name);
    await page.click('#jobs-filter [data-filter="archived"]');
    await page.locator(`#jobs-body tr[data-id="${job.id}"]`).waitFor({ timeout: DEADLINE_MS });
    // Archived through the API, as by another node's page: this page did nothing.
    await api.post(`/jobs/${other.id}/archive`);
    await page.locator(`#jobs-body tr[data-id="${other.id}"]`).waitFor({ timeout: DEADLINE_MS });
    const count = await page.textContent('#jobs-count');
    expect(count === '2 archived', `the list's count says “${count}”`);
    // The job on show stays on show, as archived.
    await page.waitForFunction(() => document.getElementById('d-status').textContent === 'Done · archived');
    const name = await page.textContent('#d-name');
    expect(name === other.name, `the detail shows “${name}”, not the job archived elsewhere`);
    await page.click('#jobs-filter [data-filter="active"]');
  });

  await step('sleep this node through its button: its row and the API say asleep; wake it again', async () => {
    const me = async () => (await api.get('/nodes')).find((n) => n.me);
    await page.click('#node-sleep');
    await page.waitForFunction(() => document.querySelector('#node-rows .node-row')?.dataset.state === 'asleep'
      && document.getElementById('node-sleep').textContent.includes('Wake'));
    const asleep = await me();
    expect(asleep.asleep === 'by hand' && asleep.state === 'asleep', `the API says ${JSON.stringify([asleep.asleep, asleep.state])}`);
    const label = await page.locator('#node-rows .node-row').first().locator('.n-task-label span').first().textContent();
    expect(label === 'asleep by hand', `the row says “${label}”`);
    const sub = await page.textContent('#st-nodes-sub');
    expect(sub.includes('1 asleep'), `the header says “${sub}”`);
    await shot(page, 'swarm-08-asleep');
    await page.click('#node-sleep');
    await page.waitForFunction(() => document.querySelector('#node-rows .node-row')?.dataset.state === 'idle'
      && document.getElementById('node-sleep').textContent.includes('Sleep'));
    const awake = await me();
    expect(!awake.asleep && awake.state === 'idle', `the API says ${JSON.stringify([awake.asleep, awake.state])}`);
  });

  await step('no page errors, no CSP violations', () => expect(!errors.length, errors.join(' | ')));
}, { name: 'swarm', shot });
