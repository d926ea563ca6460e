// Fetches and parses a job's full view off the main thread (megabytes of
// JSON for a big job would stall the page), and posts back its summary
// with the typed arrays transferred. See summary.js.

import { summarise } from './summary.js';

self.onmessage = async (e) => {
  const { seq, url, headers } = e.data;
  try {
    const res = await fetch(url, { headers, cache: 'no-store' });
    if (!res.ok) {
      let body = null;
      try { body = await res.json(); } catch { /* not JSON */ }
      self.postMessage({ seq, error: { status: res.status, message: (body && body.error) || `the node answered ${res.status}`, field: body && body.field } });
      return;
    }
    const s = summarise(await res.json());
    self.postMessage({ seq, summary: s }, [s.nodeOf.buffer, s.progress.buffer, s.renderMs.buffer]);
  } catch (err) {
    self.postMessage({ seq, error: { status: 0, message: `cannot load the job: ${err.message || err}` } });
  }
};
