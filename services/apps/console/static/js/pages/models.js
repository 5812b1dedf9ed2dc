// My models (guide chapter 5): list, create from uploaded weights, detail with versions, task records, delete.
import { html, useEffect, useMemo, useState } from '../lib.js';
import { auth, del, get, post, uploadFiles } from '../api.js';
import { t } from '../i18n.js';
import { Link, navigate } from '../router.js';
import {
  ActionButton, ConfirmDelete, Empty, ErrorBox, Field, KV, Modal, PageHead, ProgressBar, Section, Spinner, StatusTag, Switch,
  fieldError, fmtBytes, fmtTime, nameError, toast, useAction, usePoll,
} from '../ui.js';
import { canCompress, canDeploy, canTune } from './square.js';
import { TimelinePanel } from '../timeline.js';

const busy = (status) => ['creating', 'waiting', 'running', 'deploying', 'pending', 'stopping'].includes(status);

async function defaultBucket() {
  if (auth.user && auth.user.default_bucket) return auth.user.default_bucket;
  const me = await get('/api/v1/auth/me');
  auth.set(auth.token, me);
  return me.default_bucket;
}

// Files picked with <input webkitdirectory>: drop the top folder so "tiny/config.json" -> "config.json".
function folderFiles(fileList) {
  return Array.from(fileList || [])
    .map((file) => {
      const rel = file.webkitRelativePath || file.name;
      const parts = rel.split('/');
      return { file, name: parts.length > 1 ? parts.slice(1).join('/') : rel };
    })
    .filter(({ name }) => !name.split('/').some((p) => p.startsWith('.')));
}

// "Custom weights": upload a local folder or give a bucket/folder path. Returns the chosen source.
export function WeightsInput({ value, onChange, error, idPrefix = 'weights' }) {
  const files = value.files || [];
  const total = files.reduce((s, f) => s + f.file.size, 0);
  return html`<div class="weights-input">
    <div class="radio-row">
      <label><input type="radio" name=${idPrefix + '-mode'} checked=${value.mode === 'upload'}
        onChange=${() => onChange({ ...value, mode: 'upload' })} />${t('Upload a local folder')}</label>
      <label><input type="radio" name=${idPrefix + '-mode'} checked=${value.mode === 'path'}
        onChange=${() => onChange({ ...value, mode: 'path' })} />${t('Path in object storage')}</label>
    </div>
    ${value.mode === 'upload' ? html`<div>
      <input type="file" webkitdirectory directory multiple data-testid=${idPrefix + '-folder'}
        onChange=${(e) => onChange({ ...value, files: folderFiles(e.target.files) })} />
      <div class="hint">${files.length ? `${files.length} ${t('files')} · ${fmtBytes(total)} · ${files.slice(0, 6).map((f) => f.name).join(', ')}${files.length > 6 ? '…' : ''}`
        : t('Choose the model folder (config.json, *.safetensors, tokenizer files).')}</div>
    </div>` : html`<input class="input" placeholder="bucket/folder" value=${value.path || ''} data-testid=${idPrefix + '-path'}
        onInput=${(e) => onChange({ ...value, path: e.target.value })} />`}
    ${error ? html`<div class="field-error">${error}</div>` : null}
  </div>`;
}

// Upload the chosen folder (if any) and give the bucket/folder path the API expects.
export async function resolveWeights(value, label, setProgress) {
  if (value.mode === 'path') return value.path.trim();
  const bucket = await defaultBucket();
  const stamp = new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14);
  const dest = `${bucket}/uploads/${label}-${stamp}`;
  await uploadFiles(dest, value.files, (done, total, name) => setProgress({ done, total, name }));
  return dest;
}

function weightsError(value) {
  if (value.mode === 'upload' && !(value.files || []).length) return t('No files chosen');
  if (value.mode === 'path' && !(value.path || '').trim()) return t('Required');
  return null;
}

export function ModelsPage() {
  const [name, setName] = useState('');
  const [status, setStatus] = useState('');
  const [deleting, setDeleting] = useState(null);
  const { data, error, reload } = usePoll(() => get('/api/v1/models', { name, status, limit: 200 }), [name, status], 3000);
  return html`<div>
    <${PageHead} title=${t('My models')}>
      <${ActionButton} action="maas:models:create" class="btn btn-primary" data-action="create-model"
        onClick=${() => navigate('/console/models/create')}>${t('Create model')}<//>
    <//>
    <div class="toolbar">
      <input class="input search" placeholder=${t('Search by name')} value=${name} onInput=${(e) => setName(e.target.value)} />
      <select class="input" value=${status} onChange=${(e) => setStatus(e.target.value)} aria-label="status">
        <option value="">${t('All statuses')}</option>
        ${['creating', 'created', 'failed'].map((s) => html`<option value=${s}>${t(`status.${s === 'failed' ? 'model.failed' : s}`)}</option>`)}
      </select>
      <button class="btn" onClick=${reload}>${t('Refresh')}</button>
    </div>
    <${ErrorBox} error=${error} />
    ${!data ? html`<${Spinner} />` : data.items.length === 0 ? html`<${Empty} />` : html`
      <table class="table" data-testid="models-table">
        <thead><tr><th>${t('Name')}</th><th>${t('Status')}</th><th>${t('Source model')}</th><th>${t('Versions')}</th>
          <th>${t('Quantization')}</th><th>${t('Created')}</th><th>${t('Operation')}</th></tr></thead>
        <tbody>${data.items.map((m) => html`<tr data-model=${m.name}>
          <td><${Link} href=${`/console/models/${m.id}`}>${m.name}<//><div class="muted small">${m.id}</div></td>
          <td><${StatusTag} status=${m.status} kind="model" /></td>
          <td>${m.template_name}</td><td>${m.version_count}</td><td>${m.quantization || '-'}</td>
          <td>${fmtTime(m.created_at)}</td>
          <td><${ActionButton} action="maas:models:delete" class="link danger" onClick=${() => setDeleting(m)}>${t('Delete')}<//></td>
        </tr>`)}</tbody>
      </table>`}
    ${deleting ? html`<${ConfirmDelete} what=${t('model')} name=${deleting.name} onClose=${() => setDeleting(null)}
      onConfirm=${async () => { await del(`/api/v1/models/${deleting.id}`); toast(`${deleting.name} ✓`); reload(); }} />` : null}
  </div>`;
}

export function ModelCreatePage() {
  const params = new URLSearchParams(location.search);
  const templates = usePoll(() => get('/api/v1/templates'), []);
  const [templateId, setTemplateId] = useState(params.get('template') || '');
  const [filter, setFilter] = useState('');
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [source, setSource] = useState('custom');
  const [weights, setWeights] = useState({ mode: 'upload', files: [], path: '' });
  const [validate, setValidate] = useState(true);
  const [touched, setTouched] = useState(false);
  const [progress, setProgress] = useState(null);
  const template = useMemo(() => (templates.data ? templates.data.items.find((x) => x.id === templateId) : null),
    [templates.data, templateId]);
  useEffect(() => { if (template && !template.preset_weights && source === 'preset') setSource('custom'); }, [template]);

  const errors = {
    template_id: templateId ? null : t('Required'),
    name: nameError(name),
    description: description.length > 100 ? t('At most {n} characters', { n: 100 }) : null,
    weights: source === 'custom' ? weightsError(weights) : null,
  };
  const action = useAction(async () => {
    setTouched(true);
    if (Object.values(errors).some(Boolean)) return;
    const body = { name, description, template_id: templateId, validate_weights: validate };
    if (source === 'preset') body.weights_source = 'preset';
    else body.weights_path = await resolveWeights(weights, name, setProgress);
    const model = await post('/api/v1/models', body);
    toast(t('Model created. Its weights are being checked.'));
    navigate(`/console/models/${model.id}`);
  });
  const err = action.error;
  const shown = (key, ...apiFields) => (touched && errors[key]) || fieldError(err, ...apiFields);
  const list = templates.data ? templates.data.items.filter((x) => !filter
    || x.name.toLowerCase().includes(filter.toLowerCase()) || x.id.includes(filter.toLowerCase())) : [];
  return html`<div>
    <${PageHead} title=${t('Create model')} back="/console/models" />
    <form class="card form" onSubmit=${(e) => { e.preventDefault(); action.run(); }} data-testid="model-create-form">
      <${Field} label=${t('Source model')} required error=${shown('template_id', 'template_id')} id="template_id">
        <div class="row">
          <input class="input search" placeholder=${t('Search')} value=${filter} onInput=${(e) => setFilter(e.target.value)} />
          <select class="input grow" name="template_id" value=${templateId} onChange=${(e) => setTemplateId(e.target.value)}>
            <option value="">${t('Select a base model')}</option>
            ${list.map((x) => html`<option value=${x.id}>${x.name} (${x.id})</option>`)}
          </select>
        </div>
      <//>
      <${Field} label=${t('Model name')} required id="name" error=${shown('name', 'name')}
        hint=${t('Name rule: 1-64 characters, starting with a letter or Chinese character; letters, digits, Chinese, "_", "-", ".".')}>
        <input class="input" name="name" value=${name} onInput=${(e) => setName(e.target.value)} onBlur=${() => setTouched(true)} />
      <//>
      <${Field} label=${t('Description')} id="description" error=${shown('description', 'description')} hint=${`${description.length}/100`}>
        <textarea class="input" name="description" rows="2" value=${description} onInput=${(e) => setDescription(e.target.value)}></textarea>
      <//>
      <${Field} label=${t('Weights and vocabulary')} required id="weights_source">
        <div class="radio-row">
          <label><input type="radio" name="source" checked=${source === 'custom'} onChange=${() => setSource('custom')} />${t('Custom weights')}</label>
          <label class=${template && template.preset_weights ? '' : 'disabled'}><input type="radio" name="source"
            disabled=${!(template && template.preset_weights)} checked=${source === 'preset'}
            onChange=${() => setSource('preset')} />${t('Preset weights')}</label>
          ${template && template.preset_weights && template.preset_weights.state
            && template.preset_weights.state.status !== 'ready'
            ? html`<${StatusTag} status=${template.preset_weights.state.status} />` : null}
        </div>
      <//>
      ${source === 'custom' ? html`<${Field} label=${t('Weights path')} required id="weights_path">
        <${WeightsInput} value=${weights} onChange=${setWeights}
          error=${(touched && errors.weights) || fieldError(err, 'weights_path')} />
      <//>` : null}
      <${Field} label=${t('Weight validation')} id="validate_weights">
        <${Switch} checked=${validate} onChange=${setValidate} testid="validate-switch" />
      <//>
      ${progress ? html`<${Field} label=${t('Uploading {name}…', { name: progress.name })}>
        <${ProgressBar} value=${progress.done} total=${progress.total}
          label=${`${fmtBytes(progress.done)} / ${fmtBytes(progress.total)}`} /><//>` : null}
      ${err && !fieldError(err, 'name', 'template_id', 'weights_path', 'description') ? html`<${ErrorBox} error=${err} />` : null}
      <div class="form-actions">
        <button type="button" class="btn" onClick=${() => navigate('/console/models')}>${t('Cancel')}</button>
        <button type="submit" class="btn btn-primary" disabled=${action.busy}>${t('Create')}</button>
      </div>
    </form>
  </div>`;
}

function AddVersionDialog({ model, onClose, onDone }) {
  const [description, setDescription] = useState('');
  const [base, setBase] = useState(String(model.latest_version));
  const [weights, setWeights] = useState({ mode: 'upload', files: [], path: '' });
  const [validate, setValidate] = useState(true);
  const [progress, setProgress] = useState(null);
  const action = useAction(async () => {
    const problem = weightsError(weights);
    if (problem) throw Object.assign(new Error(problem), { field: 'weights_path' });
    const path = await resolveWeights(weights, model.name, setProgress);
    await post(`/api/v1/models/${model.id}/versions`, { description, weights_path: path, base_version: Number(base),
      validate_weights: validate });
    onDone();
    onClose();
  });
  return html`<${Modal} title=${t('Add version')} onClose=${onClose} wide footer=${html`
      <button class="btn" onClick=${onClose}>${t('Cancel')}</button>
      <button class="btn btn-primary" disabled=${action.busy} onClick=${() => action.run()}>${t('OK')}</button>`}>
    <div class="form">
      <${Field} label=${t('New version number')}><span>V${model.latest_version + 1}</span><//>
      <${Field} label=${t('Version description')} hint=${`${description.length}/100`} error=${fieldError(action.error, 'description')}>
        <textarea class="input" rows="2" value=${description} onInput=${(e) => setDescription(e.target.value)}></textarea><//>
      <${Field} label=${t('Base model version')}>
        <select class="input" value=${base} onChange=${(e) => setBase(e.target.value)}>
          ${(model.versions || []).map((v) => html`<option value=${String(v.number)}>${v.name}</option>`)}
        </select><//>
      <${Field} label=${t('Weights path')} required>
        <${WeightsInput} value=${weights} onChange=${setWeights} idPrefix="version-weights"
          error=${fieldError(action.error, 'weights_path')} /><//>
      <${Field} label=${t('Weight validation')}><${Switch} checked=${validate} onChange=${setValidate} /><//>
      ${progress ? html`<${ProgressBar} value=${progress.done} total=${progress.total} />` : null}
      ${action.error && !fieldError(action.error, 'weights_path', 'description') ? html`<${ErrorBox} error=${action.error} />` : null}
    </div>
  <//>`;
}

export function ModelPage({ id }) {
  const [deleting, setDeleting] = useState(false);
  const [adding, setAdding] = useState(false);
  const { data: m, error, reload } = usePoll(() => get(`/api/v1/models/${id}`), [id], 3000);
  const tpl = usePoll(() => (m ? get(`/api/v1/templates/${m.template_id}`) : null), [m && m.template_id]);
  if (error && !m) return html`<${ErrorBox} error=${error} />`;
  if (!m) return html`<${Spinner} />`;
  const ready = m.status === 'created';
  const template = tpl.data;
  const quantized = !!m.quantization;
  return html`<div>
    <${PageHead} title=${m.name} back="/console/models">
      <${ActionButton} action="maas:tuningJobs:create" class="btn" data-action="tune"
        disabled=${!ready || quantized || !template || !canTune(template)}
        onClick=${() => navigate(`/console/tuning/create?model=${m.id}`)}>${t('Tune')}<//>
      <${ActionButton} action="maas:compressionJobs:create" class="btn" data-action="compress"
        disabled=${!ready || quantized || !template || !canCompress(template)}
        onClick=${() => navigate(`/console/compression/create?model=${m.id}`)}>${t('Compress')}<//>
      <${ActionButton} action="maas:services:create" class="btn" data-action="deploy"
        disabled=${!ready || !template || !canDeploy(template)}
        onClick=${() => navigate(`/console/services/deploy?model=${m.id}`)}>${t('Deploy')}<//>
      <${ActionButton} action="maas:models:delete" class="btn btn-danger" data-action="delete-model"
        onClick=${() => setDeleting(true)}>${t('Delete')}<//>
    <//>
    <${Section} title=${t('Basic information')}>
      <${KV} items=${[
        [t('Model name'), m.name], ['ID', html`<code>${m.id}</code>`],
        [t('Status'), html`<span data-testid="model-status"><${StatusTag} status=${m.status} kind="model" /></span>`],
        [t('Source model'), html`<${Link} href=${`/console/square/${m.template_id}`}>${m.template_name}<//>`],
        [t('Quantization'), m.quantization || t('Non-quantized')], [t('Description'), m.description],
        [t('Created'), fmtTime(m.created_at)], [t('Updated'), fmtTime(m.updated_at)],
      ]} />
    <//>
    <${Section} title=${t('My versions')} actions=${html`<${ActionButton} action="maas:models:createVersion" class="btn btn-small"
        disabled=${m.version_count >= 10 || quantized} onClick=${() => setAdding(true)}>${t('Add version')}<//>`}>
      <table class="table">
        <thead><tr><th>${t('Version')}</th><th>${t('Status')}</th><th>${t('Description')}</th><th>${t('Weights')}</th><th>${t('Created')}</th></tr></thead>
        <tbody>${(m.versions || []).map((v) => html`<tr>
          <td><${Link} href=${`/console/models/${m.id}/versions/${v.number}`}>${v.name}<//></td>
          <td><${StatusTag} status=${v.status} kind="model" message=${v.message} /></td>
          <td>${v.description || '-'}</td><td class="small mono">${v.storage_uri || v.source_uri}</td><td>${fmtTime(v.created_at)}</td>
        </tr>`)}</tbody>
      </table>
    <//>
    <${Section} title=${t('Events')}><${TimelinePanel} resource="models" id=${m.id} interval=${10000} /><//>
    ${deleting ? html`<${ConfirmDelete} what=${t('model')} name=${m.name} onClose=${() => setDeleting(false)}
      onConfirm=${async () => { await del(`/api/v1/models/${m.id}`); toast(`${m.name} ✓`); navigate('/console/models'); }} />` : null}
    ${adding ? html`<${AddVersionDialog} model=${m} onClose=${() => setAdding(false)} onDone=${reload} />` : null}
  </div>`;
}

export function VersionPage({ id, version }) {
  const model = usePoll(() => get(`/api/v1/models/${id}`), [id]);
  const { data: v, error } = usePoll(() => get(`/api/v1/models/${id}/versions/${version}`), [id, version], 3000);
  const [open, setOpen] = useState(null);
  if (error && !v) return html`<${ErrorBox} error=${error} />`;
  if (!v) return html`<${Spinner} />`;
  const name = model.data ? model.data.name : id;
  return html`<div>
    <${PageHead} title=${`${name} ${v.name}`} back=${`/console/models/${id}`} />
    <${Section} title=${t('Basic information')}>
      <${KV} items=${[
        [t('Version'), v.name], ['ID', html`<code>${v.id}</code>`],
        [t('Status'), html`<${StatusTag} status=${v.status} kind="model" message=${v.message} />`],
        [t('Message'), v.message], [t('Description'), v.description],
        [t('Source'), html`<span class="mono small">${v.source_uri}</span>`],
        [t('Weights'), html`<span class="mono small">${v.storage_uri || '-'}</span>`],
        [t('Base model version'), v.base_version ? `V${v.base_version}` : '-'],
        [t('Weight validation'), v.validate_weights ? t('On') : t('Off')],
        [t('Created'), fmtTime(v.created_at)],
      ]} />
    <//>
    <${Section} title=${t('Task records')}>
      ${(v.tasks || []).length === 0 ? html`<${Empty} />` : html`<table class="table" data-testid="task-records">
        <thead><tr><th>${t('Name')}</th><th>${t('Task type')}</th><th>${t('Status')}</th><th>${t('Created')}</th><th></th></tr></thead>
        <tbody>${v.tasks.map((task) => html`
          <tr><td>${task.name || task.id}</td><td>${t(task.kind)}</td>
            <td><${StatusTag} status=${task.status} message=${task.message} /></td><td>${fmtTime(task.created_at)}</td>
            <td>${(task.checks || []).length ? html`<button class="link" onClick=${() => setOpen(open === task.id ? null : task.id)}>${t('Checks')}</button>` : null}</td></tr>
          ${open === task.id ? html`<tr class="sub-row"><td colspan="5"><ul class="checks">
            ${task.checks.map((c) => html`<li class=${c.passed ? 'ok' : 'bad'}>${c.passed ? '✓' : '✗'} ${c.name}${c.message ? ': ' + c.message : ''}</li>`)}
          </ul></td></tr>` : null}`)}
        </tbody></table>`}
    <//>
  </div>`;
}

export { busy };
