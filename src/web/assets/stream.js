// Live updates: the node's `/stream` of server-sent events, read with
// fetch() because EventSource cannot send an Authorization header.
//
// The parser follows the SSE rules (fields `event`, `data`, `id`, comments,
// CR, LF or CRLF line ends split anywhere across chunks). The connection
// is watched: the node sends a snapshot at least every 2 s, so 10 s of
// silence means a dead link, and the page reconnects with exponential
// backoff and jitter (0.5 s doubling to 15 s), so a restarting node is not
// stormed by every wall screen at once.

import { BASE, headers, unauthorized } from './api.js';

/**
 * An incremental SSE parser: feed it text as it arrives; it calls
 * `onMessage({event, data, id})` once per complete message.
 */
export function sseParser(onMessage) {
  let buf = '';
  let data = [];
  let event = '';
  let lastId = '';
  const line = (l) => {
    if (l === '') {
      if (data.length) onMessage({ event: event || 'message', data: data.join('\n'), id: lastId });
      data = [];
      event = '';
      return;
    }
    if (l[0] === ':') return;
    const colon = l.indexOf(':');
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? '' : l.slice(colon + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'data') data.push(value);
    else if (field === 'event') event = value;
    else if (field === 'id' && !value.includes('\0')) lastId = value;
  };
  return (text) => {
    buf += text;
    let start = 0;
    for (;;) {
      const cr = buf.indexOf('\r', start);
      const lf = buf.indexOf('\n', start);
      if (cr < 0 && lf < 0) break;
      let end;
      let next;
      if (cr >= 0 && (lf < 0 || cr < lf)) {
        if (cr === buf.length - 1) break; // a CR at the end may be half of CRLF
        end = cr;
        next = buf[cr + 1] === '\n' ? cr + 2 : cr + 1;
      } else {
        end = lf;
        next = lf + 1;
      }
      line(buf.slice(start, end));
      start = next;
    }
    buf = buf.slice(start);
  };
}

/** Delay before reconnect attempt `n` (0-based), in ms. */
export function backoff(n) {
  const base = Math.min(15000, 500 * 2 ** n);
  return Math.round(base * (0.6 + Math.random() * 0.4));
}

const SILENCE_MS = 10000;

/**
 * Keep a stream open until `stop()` is called. `onEvent(name, data)` gets
 * each parsed event; `onStatus(state, info)` hears 'connecting', 'live',
 * 'reconnecting' (with the delay), or 'unsupported' (the node has no
 * /stream: the caller falls back to polling).
 */
export function openStream({ onEvent, onStatus }) {
  let stopped = false;
  let ctrl = null;
  let failures = 0;

  async function once() {
    ctrl = new AbortController();
    let watchdog = 0;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => ctrl.abort(), SILENCE_MS);
    };
    arm();
    try {
      const res = await fetch(`${BASE}/stream`, {
        headers: headers(false, { Accept: 'text/event-stream' }),
        cache: 'no-store',
        signal: ctrl.signal,
      });
      if (res.status === 401) {
        clearTimeout(watchdog);
        let why = 'this node requires its web token';
        try { why = (await res.json()).error || why; } catch { /* keep default */ }
        await unauthorized(why);
        return 'retry-now';
      }
      if (res.status === 404 || res.status === 405) return 'unsupported';
      if (!res.ok || !res.body) throw new Error(`the stream answered ${res.status}`);
      const parse = sseParser(({ event, data }) => {
        let value = null;
        try { value = JSON.parse(data); } catch { return; }
        if (failures) failures = 0;
        onEvent(event, value);
      });
      onStatus('live');
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        arm();
        parse(value);
      }
      return 'ended';
    } catch (e) {
      return stopped ? 'stopped' : 'broken';
    } finally {
      clearTimeout(watchdog);
    }
  }

  (async () => {
    onStatus('connecting');
    while (!stopped) {
      const how = await once();
      if (stopped) return;
      if (how === 'unsupported') { onStatus('unsupported'); return; }
      if (how === 'retry-now') continue;
      const wait = backoff(failures);
      failures += 1;
      onStatus('reconnecting', wait);
      await new Promise((r) => setTimeout(r, wait));
    }
  })();

  return { stop() { stopped = true; if (ctrl) ctrl.abort(); } };
}
