// The submit form: upload a scene file or a whole project folder, or name
// a path on the node’s machine; engine, frames, frames per task, priority,
// and the more settings: attempts, timeout, output folder, required tags,
// Blender device and output format, a movie of the frames.
//
// The node checks everything (one source of truth for the rules); its
// answer {"error", "field"} is shown under the field it names. Uploads go
// as multipart: the `request` part first (the submission without `scene`;
// the node fills it in), then one `file` part per file named by its path
// inside the project (webkitRelativePath for folders).

import { byId, h, setAttr } from './util.js';
import { api, upload, ApiError } from './api.js';

const SCENE_EXT = /\.(blend|toml|usd|usda|usdc|usdz|hip|hipnc|hiplc|ma|mb|c4d|max|nk|ass|vrscene|rib)$/i;

export class SubmitDialog {
  constructor({ engines, nodeName, onSubmitted }) {
    Object.assign(this, { engines, nodeName, onSubmitted });
    this.dlg = byId('submit-dialog');
    this.form = byId('submit-form');
    this.source = 'file';
    this.files = [];
    this.busy = false;
    byId('src-seg').addEventListener('click', (e) => {
      const b = e.target.closest('[data-src]');
      if (b) this.setSource(b.dataset.src);
    });
    byId('choose').addEventListener('click', () => byId(this.source === 'folder' ? 'folder-input' : 'file-input').click());
    byId('file-input').addEventListener('change', (e) => this.setFiles([...e.target.files].map((f) => ({ file: f, path: f.name }))));
    byId('folder-input').addEventListener('change', (e) => this.setFiles([...e.target.files].map((f) => ({ file: f, path: f.webkitRelativePath || f.name }))));
    const drop = byId('drop');
    drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', (e) => this.onDrop(e));
    this.form.addEventListener('submit', (e) => { e.preventDefault(); this.submit(); });
    this.form.addEventListener('input', (e) => {
      const f = e.target.closest('[data-field]');
      if (f) this.clearError(f.dataset.field);
    });
  }

  open() {
    const sel = byId('f-engine');
    const keep = sel.value;
    sel.replaceChildren(h('option', { value: '' }, 'Automatic (from the scene’s extension)'),
      ...this.engines().map((e) => h('option', { value: e }, e)));
    sel.value = keep;
    byId('path-node').textContent = this.nodeName() || 'this node';
    this.clearErrors();
    if (!this.dlg.open) this.dlg.showModal();
  }

  setSource(src) {
    this.source = src;
    for (const b of byId('src-seg').querySelectorAll('[data-src]')) setAttr(b, 'aria-pressed', b.dataset.src === src);
    byId('src-upload').hidden = src === 'path';
    byId('src-path').hidden = src !== 'path';
    byId('choose').textContent = src === 'folder' ? 'Choose folder…' : 'Choose file…';
    this.files = [];
    byId('file-input').value = '';
    byId('folder-input').value = '';
    this.showFiles();
    this.clearErrors();
  }

  setFiles(files) {
    this.files = files;
    this.clearError('scene');
    this.showFiles();
  }

  showFiles() {
    const text = byId('drop-text');
    const sceneField = byId('scene-file-field');
    const select = byId('f-scene-file');
    const typed = byId('f-scene-file-text');
    const isFolder = this.source === 'folder' || (this.source === 'file' && this.files.length > 1);
    if (!this.files.length) {
      text.replaceChildren(h('b', {}, this.source === 'folder' ? 'Drop a project folder here' : 'Drop a scene file here'),
        this.source === 'folder' ? 'textures, caches and all: the scene file is chosen below' : 'or choose one from this computer');
    } else {
      const bytes = this.files.reduce((a, f) => a + f.file.size, 0);
      const top = this.files[0].path.split('/')[0];
      const label = isFolder ? `${top}/ — ${this.files.length} files` : this.files[0].path;
      text.replaceChildren(h('b', {}, label), formatSize(bytes));
    }
    sceneField.hidden = this.source === 'path' ? false : !isFolder;
    if (this.source === 'path') {
      select.hidden = true;
      typed.hidden = false;
      typed.placeholder = 'only for a folder: shots/forest_v12.blend';
      return;
    }
    const candidates = this.files.map((f) => innerPath(f.path)).filter((p) => SCENE_EXT.test(p)).sort();
    select.hidden = !candidates.length;
    typed.hidden = Boolean(candidates.length);
    select.replaceChildren(...candidates.map((p) => h('option', { value: p }, p)));
  }

  async onDrop(e) {
    e.preventDefault();
    byId('drop').classList.remove('over');
    const items = [...(e.dataTransfer.items || [])].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
    if (items.some((en) => en.isDirectory)) {
      const files = [];
      for (const en of items) await walk(en, '', files);
      this.setSourceKeepFiles('folder', files);
    } else {
      this.setSourceKeepFiles('file', [...e.dataTransfer.files].map((f) => ({ file: f, path: f.name })));
    }
  }

  setSourceKeepFiles(src, files) {
    if (this.source !== src) this.setSource(src);
    this.setFiles(files);
  }

  /** The submission as JSON, without the scene; throws ApiError on a field that cannot be read. */
  request() {
    const val = (id) => byId(id).value.trim();
    const int = (id, field, what) => {
      const v = val(id);
      if (v === '') return undefined;
      if (!/^-?\d+$/.test(v)) throw new ApiError(400, `${what} must be a whole number, not “${v}”`, field);
      return Number(v);
    };
    const req = { frames: val('f-frames') };
    const put = (k, v) => { if (v !== undefined && v !== '') req[k] = v; };
    put('engine', val('f-engine'));
    put('name', val('f-name'));
    put('frames_per_task', int('f-fpt', 'frames_per_task', 'Frames per task'));
    put('priority', int('f-priority', 'priority', 'Priority'));
    put('max_attempts', int('f-attempts', 'max_attempts', 'Attempts'));
    put('timeout', int('f-timeout', 'timeout', 'The timeout'));
    put('out', val('f-out'));
    const tags = val('f-requirements').split(',').map((t) => t.trim()).filter(Boolean);
    if (tags.length) req.requirements = tags;
    put('device', val('f-device'));
    put('output_format', val('f-format'));
    put('encode', val('f-encode'));
    put('fps', int('f-fps', 'fps', 'Frames per second'));
    const sceneFile = byId('scene-file-field').hidden ? '' : (byId('f-scene-file').hidden ? val('f-scene-file-text') : byId('f-scene-file').value);
    put('scene_file', sceneFile);
    return req;
  }

  async submit() {
    if (this.busy) return;
    this.clearErrors();
    let req;
    try {
      req = this.request();
      if (this.source !== 'path' && !this.files.length) throw new ApiError(400, 'Choose a scene file or a project folder first.', 'scene');
      if (this.source === 'path') {
        req.scene = byId('f-scene').value.trim();
        if (!req.scene) throw new ApiError(400, 'Name the scene’s path on the node, e.g. /mnt/projects/shot.blend.', 'scene');
      }
    } catch (e) {
      this.showError(e);
      return;
    }
    this.setBusy(true);
    const bar = byId('upload-bar');
    try {
      let job;
      if (this.source === 'path') {
        job = await api.submit(req);
      } else {
        const form = new FormData();
        // The node's `request` part is a full submission; it replaces `scene` with the upload.
        form.append('request', new Blob([JSON.stringify({ scene: '', ...req })], { type: 'application/json' }));
        for (const f of this.files) form.append('file', f.file, f.path);
        bar.hidden = false;
        job = await upload('/jobs/upload', form, (x) => { bar.firstElementChild.style.width = `${(x * 100).toFixed(1)}%`; });
      }
      this.dlg.close();
      this.onSubmitted(job);
    } catch (e) {
      this.showError(e);
    } finally {
      this.setBusy(false);
      bar.hidden = true;
      bar.firstElementChild.style.width = '0';
    }
  }

  setBusy(busy) {
    this.busy = busy;
    const go = byId('submit-go');
    go.disabled = busy;
    go.textContent = busy ? (this.source === 'path' ? 'Submitting…' : 'Uploading…') : 'Submit job';
  }

  /** Put the node's message under the field it names, or at the foot. */
  showError(e) {
    const field = e.field === 'request' || e.field === 'body' || e.field === 'file' ? (this.source === 'path' ? null : 'scene') : e.field;
    const box = field && [...this.form.querySelectorAll(`[data-field="${CSS.escape(field)}"]`)].find((f) => !f.hidden && f.offsetParent !== null);
    if (box) {
      box.setAttribute('data-invalid', '');
      const err = box.querySelector(`[data-err="${CSS.escape(field)}"]`);
      if (err) err.textContent = e.message;
      const details = box.closest('details');
      if (details) details.open = true;
      const input = box.querySelector('input:not([hidden]), select:not([hidden]), button');
      if (input) input.focus();
    } else {
      byId('form-error').textContent = e.message;
    }
  }

  clearError(field) {
    for (const box of this.form.querySelectorAll(`[data-field="${CSS.escape(field)}"]`)) {
      box.removeAttribute('data-invalid');
      for (const err of box.querySelectorAll('[data-err]')) err.textContent = '';
    }
    byId('form-error').textContent = '';
  }

  clearErrors() {
    for (const box of this.form.querySelectorAll('[data-invalid]')) box.removeAttribute('data-invalid');
    for (const err of this.form.querySelectorAll('[data-err]')) err.textContent = '';
    byId('form-error').textContent = '';
  }
}

/** A folder entry's files, with their paths inside the dropped folder. */
async function walk(entry, prefix, out) {
  const path = prefix ? `${prefix}/${entry.name}` : entry.name;
  if (entry.isFile) {
    const file = await new Promise((res, rej) => entry.file(res, rej));
    out.push({ file, path });
    return;
  }
  const reader = entry.createReader();
  for (;;) {
    const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
    if (!batch.length) break;
    for (const e of batch) await walk(e, path, out);
  }
}

/** A path inside the uploaded folder (the node roots a folder upload at its top folder). */
function innerPath(p) {
  const i = p.indexOf('/');
  return i < 0 ? p : p.slice(i + 1);
}

function formatSize(n) {
  if (n < 1024) return `${n} bytes`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}
