// The node's HTTP API, as the page uses it.
//
// Every request carries `Authorization: Bearer TOKEN` once a token is known
// (kept in localStorage), and every POST carries `x-renderswarm: 1`, which
// the node demands so that other web pages cannot forge actions. A 401
// asks the person for the token once, however many requests were refused
// at the same moment, then retries them. Errors become ApiError with the
// node's message and, where the node names one, the request field.

export const BASE = '/api/v1';
const TOKEN_KEY = 'renderswarm.webToken';

export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || null;
  }
}

let askForToken = null;
let asking = null;
let memoryToken = '';
/** Whether the node asked for a token (then images load through fetch). */
export const auth = { required: false };

/** Register the dialog that asks for the token: (reason) => Promise<string>. */
export function setTokenAsker(fn) { askForToken = fn; }

export function token() {
  try { return localStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}

function saveToken(t) {
  try { localStorage.setItem(TOKEN_KEY, t); } catch { /* private mode: keep it for this page only */ }
  memoryToken = t;
}

function currentToken() { return token() || memoryToken; }

/** Headers for a request: the token, and the action header on POST. */
export function headers(post = false, extra = {}) {
  const out = { ...extra };
  const t = currentToken();
  if (t) out.Authorization = `Bearer ${t}`;
  if (post) out['x-renderswarm'] = '1';
  return out;
}

/** Ask once for a (new) token, however many callers were refused. */
export function unauthorized(message) {
  auth.required = true;
  if (!askForToken) return Promise.reject(new ApiError(401, message));
  if (!asking) {
    asking = askForToken(message, Boolean(currentToken())).then((t) => {
      saveToken(t);
      asking = null;
      return t;
    });
  }
  return asking;
}

async function errorOf(res) {
  let body = null;
  try { body = await res.json(); } catch { /* not JSON: use the status line */ }
  const message = body && body.error ? body.error : `the node answered ${res.status} ${res.statusText}`;
  return new ApiError(res.status, message, body && body.field);
}

/**
 * Call the API. `opts.json` is sent as a JSON body; `opts.as` picks the
 * answer: 'json' (default), 'text', 'blob' or 'response'.
 */
export async function request(path, opts = {}) {
  const method = opts.method || (opts.json !== undefined || opts.body ? 'POST' : 'GET');
  const post = method === 'POST';
  for (;;) {
    const init = {
      method,
      headers: headers(post, opts.json !== undefined ? { 'Content-Type': 'application/json' } : {}),
      body: opts.json !== undefined ? JSON.stringify(opts.json) : opts.body,
      signal: opts.signal,
      cache: 'no-store',
    };
    const res = await fetch(BASE + path, init);
    if (res.status === 401) {
      await unauthorized((await errorOf(res)).message);
      continue;
    }
    if (!res.ok) throw await errorOf(res);
    switch (opts.as || 'json') {
      case 'text': return res.text();
      case 'blob': return res.blob();
      case 'response': return res;
      default: return res.json();
    }
  }
}

/**
 * Upload with progress (fetch cannot report upload progress): a multipart
 * body to `path`, `onProgress(fraction)` as it goes. Retries after a 401.
 */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', BASE + path);
    for (const [k, v] of Object.entries(headers(true))) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onerror = () => reject(new ApiError(0, 'the upload broke off: is the node still running?'));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* keep null */ }
      if (xhr.status === 401) {
        unauthorized(body && body.error).then(() => upload(path, form, onProgress)).then(resolve, reject);
      } else if (xhr.status >= 200 && xhr.status < 300) {
        resolve(body);
      } else {
        reject(new ApiError(xhr.status, (body && body.error) || `the node answered ${xhr.status}`, body && body.field));
      }
    };
    xhr.send(form);
  });
}

const enc = encodeURIComponent;

/** The endpoints, by name. */
export const api = {
  node: () => request('/node'),
  nodes: (history = false) => request(`/nodes${history ? '?history=true' : ''}`),
  jobs: () => request('/jobs?tasks=false'),
  /** Every job, archived ones too (an archived one from its summary). */
  allJobs: () => request('/jobs?tasks=false&archived=true'),
  job: (id) => request(`/jobs/${enc(id)}`),
  grid: (id) => request(`/jobs/${enc(id)}/grid`),
  events: (since = 0) => request(`/events?since=${since}`),
  submit: (req) => request('/jobs', { json: req }),
  act: (id, action) => request(`/jobs/${enc(id)}/${action}`, { method: 'POST' }),
  priority: (id, priority) => request(`/jobs/${enc(id)}/priority`, { json: { priority } }),
  sleep: () => request('/node/sleep', { method: 'POST' }),
  wake: () => request('/node/wake', { method: 'POST' }),
  log: (id, task) => request(`/jobs/${enc(id)}/tasks/${task}/log`, { as: 'text' }),
  frameUrl: (id, frame, thumb = false) => `${BASE}/jobs/${enc(id)}/frames/${frame}${thumb ? '?thumb=1' : ''}`,
};

const blobUrls = new Map();
const BLOB_KEEP = 160;

/**
 * A URL an <img> can show for an API image. Without a token the API URL
 * itself (the browser caches it; frames are immutable). With a token an
 * <img> cannot send the header, so the image is fetched and shown from a
 * blob URL; the most recent ones are kept, older ones released.
 */
export async function imageUrl(url) {
  if (!auth.required) return url;
  const hit = blobUrls.get(url);
  if (hit) {
    blobUrls.delete(url);
    blobUrls.set(url, hit);
    return hit;
  }
  const blob = await request(url.slice(BASE.length), { as: 'blob' });
  const made = URL.createObjectURL(blob);
  blobUrls.set(url, made);
  if (blobUrls.size > BLOB_KEEP) {
    const [oldUrl, oldBlob] = blobUrls.entries().next().value;
    blobUrls.delete(oldUrl);
    URL.revokeObjectURL(oldBlob);
  }
  return made;
}
