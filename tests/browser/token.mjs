// The web token, as a person meets it: a node started with --web-token
// shows no data until the token is given; the page asks for it in a dialog,
// asks again (saying why) when it is wrong, and once it is right the data
// loads, images included (fetched with the token, shown from blob: URLs).
//
//   node token.mjs --url http://127.0.0.1:PORT --token TOKEN --shots DIR
//
// The node should hold one finished job with PNG frames, so that a
// thumbnail can prove images load through the token too.

import { flags, need, main, openPage, shooter, apiAt, expect, step } from './lib.mjs';

const args = flags();
const url = need(args, 'url');
const token = need(args, 'token');
const shot = shooter(need(args, 'shots'));

const dialogOpen = () => document.getElementById('token-dialog').open;

main(async (browser) => {
  const { page, errors } = await openPage(browser, { width: 1280, height: 720 });
  const jobs = await apiAt(url, token).get('/jobs?tasks=false');
  const job = jobs.find((j) => j.status === 'done');
  expect(job, `the node should hold a finished job: it has ${jobs.map((j) => `${j.name} (${j.status})`).join(', ') || 'none'}`);

  await step('without the token the page asks for it and shows no data', async () => {
    await page.goto(url);
    await page.waitForSelector('#token-dialog[open]');
    expect(await page.locator('#node-rows .node-row').count() === 0, 'node rows shown without the token');
    expect(await page.locator('#jobs-body tr').count() === 0, 'jobs shown without the token');
    await shot(page, 'token-01-asked');
  });

  await step('a wrong token is refused: the dialog asks again, saying why', async () => {
    await page.fill('#token-input', `${token}-wrong`);
    await page.click('#token-form button[type="submit"]');
    await page.waitForFunction(() => document.getElementById('token-dialog').open
      && document.getElementById('token-err').textContent.length > 0);
    expect(await page.locator('#node-rows .node-row').count() === 0, 'node rows shown with a wrong token');
    await shot(page, 'token-02-refused');
  });

  await step('the right token: the dialog closes, the data loads and the token is kept', async () => {
    await page.fill('#token-input', token);
    await page.click('#token-form button[type="submit"]');
    await page.waitForFunction(() => !document.getElementById('token-dialog').open);
    await page.waitForSelector('#node-rows .node-row');
    await page.waitForSelector(`#jobs-body tr[data-id="${job.id}"]`);
    await page.waitForFunction(() => document.getElementById('conn-dot').dataset.conn === 'live');
    const kept = await page.evaluate(() => localStorage.getItem('renderswarm.webToken'));
    expect(kept === token, 'the page did not keep the token');
  });

  await step('images load with the token (blob: URLs)', async () => {
    await page.click(`#jobs-body tr[data-id="${job.id}"]`);
    await page.waitForFunction(() => [...document.querySelectorAll('#thumbs img')]
      .some((i) => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0));
    await shot(page, 'token-03-loaded');
  });

  await step('a reload uses the kept token without asking', async () => {
    await page.reload();
    await page.waitForSelector('#node-rows .node-row');
    expect(!(await page.evaluate(dialogOpen)), 'the dialog asked again');
  });

  await step('no page errors, no CSP violations', () => expect(!errors.length, errors.join(' | ')));
}, { name: 'token', shot });
