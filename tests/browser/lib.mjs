// Shared machinery of the real-browser tests (run by tests/it/browser.rs):
// flags, launching Debian's Chromium through playwright-core, screenshots,
// the node's API, checks that name what went wrong, and small statistics.
//
// Every script waits on conditions in the page (waitForFunction, events),
// with generous deadlines for a loaded 2-core CI machine, never on fixed
// sleeps. A script exits 0 when every check passed, 1 when one failed (it
// stops at the first), 2 when it could not run at all.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** How long one awaited condition may take before the test fails. */
export const DEADLINE_MS = 120_000;

/** `--name value` flags into an object; a flag without a value is `true`. */
export function flags(argv = process.argv.slice(2)) {
  const out = {};
  for (let i = 0; i < argv.length; i += 1) {
    if (!argv[i].startsWith('--')) throw new Error(`unexpected argument ${argv[i]}: flags are --name value`);
    const next = argv[i + 1];
    if (next !== undefined && !next.startsWith('--')) {
      out[argv[i].slice(2)] = next;
      i += 1;
    } else {
      out[argv[i].slice(2)] = true;
    }
  }
  return out;
}

/** The flag `name`, or a clear failure naming it. */
export function need(args, name) {
  if (typeof args[name] !== 'string' || !args[name]) throw new Error(`missing --${name} VALUE`);
  return args[name];
}

/** Headless Chromium from Debian (or $CHROMIUM): no browser download. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

/**
 * A new page that records uncaught errors and CSP violations (the page's
 * CSP forbids inline code: a violation is a bug even if nothing breaks).
 */
export async function openPage(browser, viewport = { width: 1600, height: 900 }) {
  const page = await browser.newPage({ viewport });
  page.setDefaultTimeout(DEADLINE_MS);
  const errors = [];
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (/Content.Security.Policy/i.test(m.text())) errors.push(`CSP: ${m.text()}`);
  });
  return { page, errors };
}

/** Saves `NAME.png` under `dir`, and says so. */
export function shooter(dir) {
  mkdirSync(dir, { recursive: true });
  return async (page, name) => {
    const path = join(dir, `${name}.png`);
    await page.screenshot({ path });
    console.log(`screenshot ${path}`);
  };
}

/** The node's API at `base`: `get(path)` answers parsed JSON or throws. */
export function apiAt(base, token) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  return {
    async get(path) {
      const res = await fetch(new URL(`/api/v1${path}`, base), { headers });
      if (!res.ok) throw new Error(`GET /api/v1${path}: ${res.status} ${await res.text()}`);
      return res.json();
    },
    /** POSTs `body` as JSON, as the page does (with its `x-renderswarm` header). */
    async post(path, body) {
      const res = await fetch(new URL(`/api/v1${path}`, base), {
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/json', 'x-renderswarm': '1' },
        body: JSON.stringify(body ?? {}),
      });
      if (!res.ok) throw new Error(`POST /api/v1${path}: ${res.status} ${await res.text()}`);
      return res.json();
    },
  };
}

/** Throws `what` unless `cond`. */
export function expect(cond, what) {
  if (!cond) throw new Error(what);
}

/** The step under way, for the watchdog's message. */
let current = 'starting';

/** Runs one named step: prints `ok NAME` or throws `NAME: why`. */
export async function step(name, fn) {
  const t0 = Date.now();
  current = name;
  try {
    const r = await fn();
    console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    return r;
  } catch (e) {
    throw new Error(`${name}: ${e.message.split('\n')[0]}`);
  }
}

/** n, mean, p50, p95, max of `xs`, rounded to 0.1. */
export function stats(xs) {
  if (!xs.length) return { n: 0, mean: 0, p50: 0, p95: 0, max: 0 };
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  const r = (x) => Math.round(x * 10) / 10;
  return { n: s.length, mean: r(s.reduce((a, b) => a + b, 0) / s.length), p50: r(q(0.5)), p95: r(q(0.95)), max: r(s[s.length - 1]) };
}

/** `stats` as one line. */
export function showStats(x) {
  return x.n ? `n=${x.n} mean ${x.mean} p50 ${x.p50} p95 ${x.p95} max ${x.max} ms` : 'none';
}

/**
 * Runs `body(browser)` with a browser, closes it whatever happens, and exits:
 * 0 on success, 1 on a failed check (its message printed, and each open
 * page saved by `shot` as `NAME-failed-N`), 2 when the run could not start.
 * A watchdog ends a hung run before the Rust side's deadline, so the
 * failure says where it hung.
 */
export async function main(body, { name, shot, watchdogMs = 540_000 }) {
  let browser = null;
  const watchdog = setTimeout(() => {
    console.log(`FAIL: still running after ${watchdogMs / 1000} s (at: ${current})`);
    process.exit(1);
  }, watchdogMs);
  let code = 0;
  try {
    browser = await launch();
    await body(browser);
    console.log('PASS');
  } catch (e) {
    console.log(`FAIL: ${e.message}`);
    code = browser ? 1 : 2;
    const pages = browser ? browser.contexts().flatMap((c) => c.pages()) : [];
    for (const [i, page] of pages.entries()) await shot(page, `${name}-failed-${i + 1}`).catch(() => {});
  } finally {
    clearTimeout(watchdog);
    if (browser) await browser.close().catch(() => {});
  }
  process.exit(code);
}
