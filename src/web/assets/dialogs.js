// The page's small dialogs: the web-token prompt, confirmations, the log
// viewer, and toasts. Each uses a native <dialog> (focus trapping, Esc and
// the backdrop come with it) declared in index.html.

import { byId, h } from './util.js';
import { api } from './api.js';

/** Close buttons and backdrop clicks close every dialog. */
export function wireDialogs() {
  for (const d of document.querySelectorAll('dialog')) {
    d.addEventListener('click', (e) => {
      if (e.target.closest('[data-close]')) d.close();
      else if (e.target === d && d.id !== 'token-dialog') {
        const r = d.getBoundingClientRect();
        const inside = e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom;
        if (!inside) d.close();
      }
    });
  }
}

/** Ask for the node's web token; resolves with it. */
export function askToken(reason, hadToken) {
  const dlg = byId('token-dialog');
  const input = byId('token-input');
  const err = byId('token-err');
  err.textContent = hadToken ? 'The node refused this token: paste the one it was started with.' : '';
  if (reason) byId('token-why').title = reason;
  input.value = '';
  return new Promise((resolve) => {
    const form = byId('token-form');
    const onSubmit = (e) => {
      const t = input.value.trim();
      if (!t) { e.preventDefault(); err.textContent = 'Paste the token the node was started with.'; return; }
      form.removeEventListener('submit', onSubmit);
      dlg.removeEventListener('cancel', onCancel);
      resolve(t);
    };
    const onCancel = (e) => e.preventDefault();
    form.addEventListener('submit', onSubmit);
    dlg.addEventListener('cancel', onCancel);
    if (!dlg.open) dlg.showModal();
    input.focus();
  });
}

/** Ask to confirm an action; resolves true or false. */
export function confirm({ title, text, yes }) {
  const dlg = byId('confirm-dialog');
  byId('confirm-h').textContent = title;
  byId('confirm-text').textContent = text;
  byId('confirm-yes').textContent = yes;
  dlg.returnValue = '';
  dlg.showModal();
  byId('confirm-yes').focus();
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'yes'), { once: true });
  });
}

/** A short message in the corner; errors stay longer. */
export function toast(text, kind = 'info') {
  const el = h('div', { class: 'toast', role: kind === 'error' ? 'alert' : 'status', dataset: { kind } }, text);
  const box = byId('toasts');
  box.append(el);
  while (box.children.length > 4) box.firstChild.remove();
  setTimeout(() => el.remove(), kind === 'error' ? 9000 : 4000);
}

let logUrl = null;

/** Show a task's whole log (fetched with the token, so a plain link would not do). */
export async function showLog(jobId, jobName, task) {
  const dlg = byId('log-dialog');
  const text = byId('log-text');
  const dl = byId('log-download');
  byId('log-h').textContent = `${jobName} · task ${task} · log`;
  text.textContent = 'Loading…';
  dl.hidden = true;
  if (logUrl) { URL.revokeObjectURL(logUrl); logUrl = null; }
  dlg.showModal();
  try {
    const log = await api.log(jobId, task);
    text.textContent = log;
    text.scrollTop = text.scrollHeight;
    logUrl = URL.createObjectURL(new Blob([log], { type: 'text/plain' }));
    dl.href = logUrl;
    dl.download = `${jobName}-task${task}.log`;
    dl.hidden = false;
  } catch (e) {
    text.textContent = e.message;
  }
}
