// The parts of a job's create form every job kind shares: task name and description, the source model
// (one of my models or a model-square template with preset weights), the resource pool, permanent logs,
// event notification and the form's buttons. Each kind's page holds its own fields and request body.
import { html, useMemo } from './lib.js';
import { get } from './api.js';
import { t } from './i18n.js';
import { navigate } from './router.js';
import { Field, Section, Switch, fieldError, fmtNumber, usePoll } from './ui.js';

// The form state the shared parts read and write; a kind adds its own keys.
export function jobFormDefaults(params) {
  return {
    name: '', description: '', sourceKind: params.get('template') ? 'template' : 'model',
    modelId: params.get('model') || '', version: '', templateId: params.get('template') || '',
    outputName: '', outputDescription: '', outputPath: '', pool: 'public',
    permanentLog: false, logPath: '', notify: false, topic: '', events: ['completed', 'failed'],
  };
}

// The models and templates a job of `task` ('tune' | 'compress') may start from, and the chosen one.
export function useJobSource(task, form) {
  const templates = usePoll(() => get('/api/v1/templates', { task }), [task]);
  const models = usePoll(() => get('/api/v1/models', { status: 'created', limit: 200 }), []);
  const candidates = useMemo(() => {
    if (!models.data || !templates.data) return [];
    const ids = new Set(templates.data.items.map((x) => x.id));
    return models.data.items.filter((m) => !m.quantization && ids.has(m.template_id));
  }, [models.data, templates.data]);
  const presetTemplates = templates.data ? templates.data.items.filter((x) => x.preset_weights) : [];
  const model = candidates.find((m) => m.id === form.modelId);
  const templateId = form.sourceKind === 'model' ? (model && model.template_id) : form.templateId;
  const template = templates.data ? templates.data.items.find((x) => x.id === templateId) : null;
  const source = form.sourceKind === 'model'
    ? { model_id: form.modelId, ...(form.version ? { version: Number(form.version) } : {}) }
    : { template_id: form.templateId };
  const missing = form.sourceKind === 'model' ? !form.modelId : !form.templateId;
  return { candidates, presetTemplates, model, templateId, template, source, error: missing ? t('Required') : null };
}

export function TaskSection({ form, set, nameError, err }) {
  return html`<${Section} title=${t('Task settings')}>
    <${Field} label=${t('Task name')} required id="name" error=${nameError}
      hint=${t('Name rule: 1-64 characters, starting with a letter or Chinese character; letters, digits, Chinese, "_", "-".')}>
      <input class="input" name="name" value=${form.name} onInput=${(e) => set({ name: e.target.value })} /><//>
    <${Field} label=${t('Description')} hint=${`${form.description.length}/1000`} error=${fieldError(err, 'description')}>
      <textarea class="input" rows="2" value=${form.description} onInput=${(e) => set({ description: e.target.value })}></textarea><//>
  <//>`;
}

export function SourceModelField({ form, set, source, error }) {
  const { candidates, presetTemplates, model } = source;
  return html`<${Field} label=${t('Source model')} required id="source" error=${error}>
    <div class="radio-row">
      <label><input type="radio" checked=${form.sourceKind === 'model'} onChange=${() => set({ sourceKind: 'model' })} />${t('My models')}</label>
      <label><input type="radio" checked=${form.sourceKind === 'template'} onChange=${() => set({ sourceKind: 'template' })} />${t('Model square')}</label>
    </div>
    ${form.sourceKind === 'model' ? html`<div class="row">
      <select class="input grow" name="model" value=${form.modelId} onChange=${(e) => set({ modelId: e.target.value, version: '' })}>
        <option value="">${t('Select a base model')}</option>
        ${candidates.map((m) => html`<option value=${m.id}>${m.name} (${m.template_name})</option>`)}
      </select>
      ${model ? html`<select class="input" name="version" value=${form.version} onChange=${(e) => set({ version: e.target.value })}>
        <option value="">V${model.latest_version} (latest)</option>
        ${Array.from({ length: model.latest_version }, (_, i) => i + 1).map((n) => html`<option value=${String(n)}>V${n}</option>`)}
      </select>` : null}
    </div>` : html`<select class="input" name="template" value=${form.templateId} onChange=${(e) => set({ templateId: e.target.value })}>
        <option value="">${t('Select a base model')}</option>
        ${presetTemplates.map((x) => html`<option value=${x.id}>${x.name}</option>`)}
      </select>`}
  <//>`;
}

// The pools of the account (GET /api/v1/pools: the public one and my dedicated ones) with what is free in
// each. Without the list (no maas:pools:list) the guide's two pool types remain: 'dedicated' is the
// account's only dedicated pool.
export function ResourcePoolField({ form, set, err }) {
  const pools = usePoll(() => get('/api/v1/pools'), []);
  const items = pools.data ? pools.data.items : null;
  const chosen = items ? items.find((p) => p.name === form.pool) : null;
  const hint = chosen ? t('Free: {cpus} of {total} CPUs, {gpus} of {totalGpus} accelerators ({nodes} nodes)', {
    cpus: fmtNumber(chosen.free.cpus, 2), total: fmtNumber(chosen.capacity.cpus, 2), gpus: fmtNumber(chosen.free.gpus, 2),
    totalGpus: fmtNumber(chosen.capacity.gpus, 2), nodes: chosen.nodes,
  }) : pools.error ? t('Your resource pools could not be listed: {message}', { message: pools.error.message }) : null;
  const label = (p) => (p.type === 'public' ? `${t('Public pool')} (${p.name})` : `${p.name} · ${t('Dedicated pool')}`);
  return html`<${Field} label=${t('Resource pool')} id="resource_pool" error=${fieldError(err, 'resource_pool')}
      hint=${hint}>
    <select class="input" name="resource_pool" value=${form.pool} onChange=${(e) => set({ pool: e.target.value })}>
      ${items ? items.map((p) => html`<option value=${p.name}>${label(p)}</option>`) : html`
        <option value="public">${t('Public pool')}</option><option value="dedicated">${t('Dedicated pool')}</option>`}
    </select><//>`;
}

export function PermanentLogField({ form, set, err }) {
  return html`<${Field} label=${t('Keep logs permanently')} error=${fieldError(err, 'permanent_log')}>
    <${Switch} checked=${form.permanentLog} onChange=${(v) => set({ permanentLog: v })} />
    ${form.permanentLog ? html`<input class="input" placeholder=${t('Log path') + ' (bucket/folder)'} value=${form.logPath} onInput=${(e) => set({ logPath: e.target.value })} />` : null}<//>`;
}

export function NotificationField({ form, set, err, events }) {
  return html`<${Field} label=${t('Event notification')} error=${fieldError(err, 'notification')}>
    <${Switch} checked=${form.notify} onChange=${(v) => set({ notify: v })} />
    ${form.notify ? html`<div><input class="input" placeholder=${t('Topic')} value=${form.topic} onInput=${(e) => set({ topic: e.target.value })} />
      <div class="checks-row">${events.map((ev) => html`<label><input type="checkbox" checked=${form.events.includes(ev)}
        onChange=${(e) => set({ events: e.target.checked ? [...form.events, ev] : form.events.filter((x) => x !== ev) })} />${t(`status.${ev}`)}</label>`)}</div></div>` : null}<//>`;
}

// The request's permanent_log object, the same for every kind.
export function permanentLogBody(form) {
  return { enabled: form.permanentLog, ...(form.permanentLog ? { path: form.logPath } : {}) };
}

export function FormButtons({ back, busy, sticky }) {
  return html`<div class=${'form-actions' + (sticky ? ' sticky' : '')}>
    <button type="button" class="btn" onClick=${() => navigate(back)}>${t('Cancel')}</button>
    <button type="submit" class="btn btn-primary" disabled=${busy}>${t('Submit')}</button>
  </div>`;
}
