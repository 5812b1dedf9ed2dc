// Model compression (guide chapter 7): jobs list, create form (strategy, migration strength, estimate),
// detail with progress, size / perplexity before and after, logs (search, download), delete.
import { html, useEffect, useMemo, useState } from '../lib.js';
import { auth, del, get, post } from '../api.js';
import { t } from '../i18n.js';
import { Link, navigate } from '../router.js';
import { TimelinePanel } from '../timeline.js';
import {
  ActionButton, ConfirmDelete, Empty, ErrorBox, Field, KV, OutputModel, PageHead, ProgressBar, Section, Spinner, StatusTag, Switch,
  Tabs, fieldError, fmtBytes, fmtNumber, fmtTime, nameError, toast, useAction, usePoll,
} from '../ui.js';

const ACTIVE = ['pending', 'running'];
const STRATEGIES = ['smoothquant-w8a8', 'awq-w4a16'];
const NOTIFY_EVENTS = ['pending', 'running', 'completed', 'failed'];

function minutes(est) {
  if (!est) return '-';
  return est.text || `${est.min_minutes} – ${est.max_minutes} min`;
}

function DeleteJob({ job, onDone, compact }) {
  const [open, setOpen] = useState(false);
  return html`<span>
    <${ActionButton} action="maas:compressionJobs:delete" class=${(compact ? 'link' : 'btn') + ' danger'} onClick=${() => setOpen(true)}>${t('Delete')}<//>
    ${open ? html`<${ConfirmDelete} what=${t('job')} name=${job.name} onClose=${() => setOpen(false)}
      onConfirm=${async () => { await del(`/api/v1/compression-jobs/${job.id}`); toast(`${job.name} ✓`); onDone(); }} />` : null}
  </span>`;
}

export function CompressionPage() {
  const [name, setName] = useState('');
  const [status, setStatus] = useState('');
  const { data, error, reload } = usePoll(() => get('/api/v1/compression-jobs', { name, status, limit: 200 }), [name, status], 3000);
  return html`<div>
    <${PageHead} title=${t('Model compression')}>
      <${ActionButton} action="maas:compressionJobs:create" class="btn btn-primary" data-action="create-compression-job"
        onClick=${() => navigate('/console/compression/create')}>${t('Create compression job')}<//>
    <//>
    <div class="toolbar">
      <input class="input search" placeholder=${t('Search by name')} value=${name} onInput=${(e) => setName(e.target.value)} />
      <select class="input" value=${status} onChange=${(e) => setStatus(e.target.value)} aria-label="status">
        <option value="">${t('All statuses')}</option>
        ${['pending', 'running', 'completed', 'failed'].map((s) => html`<option value=${s}>${t(`status.${s}`)}</option>`)}
      </select>
    </div>
    <${ErrorBox} error=${error} />
    ${!data ? html`<${Spinner} />` : data.items.length === 0 ? html`<${Empty} />` : html`
      <table class="table" data-testid="compression-table">
        <thead><tr><th>${t('Name')}</th><th>${t('Status')}</th><th>${t('Source model')}</th><th>${t('Compression strategy')}</th>
          <th>${t('Progress')}</th><th>${t('Created')}</th><th>${t('Operation')}</th></tr></thead>
        <tbody>${data.items.map((job) => html`<tr data-job=${job.name}>
          <td><${Link} href=${`/console/compression/${job.id}`}>${job.name}<//></td>
          <td><${StatusTag} status=${job.status} message=${job.status_message} /></td>
          <td>${job.source.model_name || job.source.template_id || job.template_id}</td><td>${t(job.strategy)}</td>
          <td class="w-progress"><${ProgressBar} value=${(job.progress || {}).fraction || 0} total=${1} /></td>
          <td>${fmtTime(job.created_at)}</td><td><${DeleteJob} job=${job} onDone=${reload} compact /></td>
        </tr>`)}</tbody>
      </table>`}
  </div>`;
}

export function CompressionCreatePage() {
  const params = new URLSearchParams(location.search);
  const options = usePoll(() => get('/api/v1/compression-strategies'), []);
  const templates = usePoll(() => get('/api/v1/templates', { task: 'compress' }), []);
  const models = usePoll(() => get('/api/v1/models', { status: 'created', limit: 200 }), []);
  const [form, setForm] = useState({
    name: '', description: '', sourceKind: params.get('template') ? 'template' : 'model', modelId: params.get('model') || '',
    version: '', templateId: params.get('template') || '', strategy: 'smoothquant-w8a8', alpha: '0.5', outputName: '',
    outputDescription: '', outputPath: '', calibration: '', pool: 'public', spec: '', instances: '1',
    permanentLog: false, logPath: '', notify: false, topic: '', events: ['completed', 'failed'],
  });
  const set = (patch) => setForm((f) => ({ ...f, ...patch }));
  const [touched, setTouched] = useState(false);
  const [estimate, setEstimate] = useState(null);
  const compressible = useMemo(() => {
    if (!models.data || !templates.data) return [];
    const ids = new Set(templates.data.items.map((x) => x.id));
    return models.data.items.filter((m) => !m.quantization && ids.has(m.template_id));
  }, [models.data, templates.data]);
  const presetTemplates = templates.data ? templates.data.items.filter((x) => x.preset_weights) : [];
  const model = compressible.find((m) => m.id === form.modelId);
  const templateId = form.sourceKind === 'model' ? (model && model.template_id) : form.templateId;
  const template = templates.data ? templates.data.items.find((x) => x.id === templateId) : null;
  const allowed = template ? template.tasks.compress : STRATEGIES;
  const source = form.sourceKind === 'model'
    ? { model_id: form.modelId, ...(form.version ? { version: Number(form.version) } : {}) }
    : { template_id: form.templateId };
  useEffect(() => { if (options.data && !form.spec) set({ spec: options.data.instance_specs[0].id }); }, [options.data]);
  useEffect(() => { if (template && !allowed.includes(form.strategy) && allowed.length) set({ strategy: allowed[0] }); }, [templateId, !!template]);
  useEffect(() => { if (!form.outputName && form.name) set({ outputName: `${form.name}-${form.strategy === 'awq-w4a16' ? 'awq' : 'sq'}` }); }, [form.name]);
  useEffect(() => {
    setEstimate(null);
    if (!template) return undefined;
    const timer = setTimeout(async () => {
      try { setEstimate(await post('/api/v1/compression-jobs/estimate', { source, strategy: form.strategy })); }
      catch (e) { setEstimate({ error: e }); }
    }, 250);
    return () => clearTimeout(timer);
  }, [templateId, form.modelId, form.strategy]);

  const alpha = Number(form.alpha);
  const errors = {
    name: nameError(form.name, { dot: false }),
    source: form.sourceKind === 'model' ? (form.modelId ? null : t('Required')) : (form.templateId ? null : t('Required')),
    output_model_name: nameError(form.outputName),
    alpha: form.strategy === 'smoothquant-w8a8' && !(alpha >= 0 && alpha <= 1) ? '0 ~ 1' : null,
  };
  const submit = useAction(async () => {
    setTouched(true);
    if (Object.values(errors).some(Boolean)) return;
    const job = await post('/api/v1/compression-jobs', {
      name: form.name, description: form.description, source, strategy: form.strategy,
      ...(form.strategy === 'smoothquant-w8a8' ? { alpha } : {}),
      ...(form.calibration.trim() ? { calibration_dataset: form.calibration.trim() } : {}),
      output_model_name: form.outputName, output_model_description: form.outputDescription,
      ...(form.outputPath.trim() ? { output_path: form.outputPath.trim() } : {}),
      resource_pool: form.pool, instance_spec: form.spec, instance_count: Number(form.instances) || 1,
      permanent_log: { enabled: form.permanentLog, ...(form.permanentLog ? { path: form.logPath } : {}) },
      notification: { enabled: form.notify, ...(form.notify ? { topic_name: form.topic, events: form.events } : {}) },
    });
    navigate(`/console/compression/${job.id}`);
  });
  const err = submit.error;
  const shown = (key, ...api) => (touched && errors[key]) || fieldError(err, ...api);
  const specs = options.data ? options.data.instance_specs : [];
  return html`<div>
    <${PageHead} title=${t('Create compression job')} back="/console/compression" />
    <form class="form" onSubmit=${(e) => { e.preventDefault(); submit.run(); }} data-testid="compression-create-form">
      <${Section} title=${t('Task settings')}>
        <${Field} label=${t('Task name')} required id="name" error=${shown('name', 'name')}
          hint=${t('Name rule: 1-64 characters, starting with a letter or Chinese character; letters, digits, Chinese, "_", "-".')}>
          <input class="input" name="name" value=${form.name} onInput=${(e) => set({ name: e.target.value })} /><//>
        <${Field} label=${t('Description')} hint=${`${form.description.length}/1000`} error=${fieldError(err, 'description')}>
          <textarea class="input" rows="2" value=${form.description} onInput=${(e) => set({ description: e.target.value })}></textarea><//>
      <//>
      <${Section} title=${t('Model settings')}>
        <${Field} label=${t('Source model')} required id="source" error=${shown('source', 'source')}>
          <div class="radio-row">
            <label><input type="radio" checked=${form.sourceKind === 'model'} onChange=${() => set({ sourceKind: 'model' })} />${t('My models')}</label>
            <label><input type="radio" checked=${form.sourceKind === 'template'} onChange=${() => set({ sourceKind: 'template' })} />${t('Model square')}</label>
          </div>
          ${form.sourceKind === 'model' ? html`<div class="row">
            <select class="input grow" name="model" value=${form.modelId} onChange=${(e) => set({ modelId: e.target.value, version: '' })}>
              <option value="">${t('Select a base model')}</option>
              ${compressible.map((m) => html`<option value=${m.id}>${m.name} (${m.template_name})</option>`)}
            </select>
            ${model ? html`<select class="input" value=${form.version} onChange=${(e) => set({ version: e.target.value })}>
              <option value="">V${model.latest_version} (latest)</option>
              ${Array.from({ length: model.latest_version }, (_, i) => i + 1).map((n) => html`<option value=${String(n)}>V${n}</option>`)}
            </select>` : null}
          </div>` : html`<select class="input" name="template" value=${form.templateId} onChange=${(e) => set({ templateId: e.target.value })}>
              <option value="">${t('Select a base model')}</option>
              ${presetTemplates.map((x) => html`<option value=${x.id}>${x.name}</option>`)}
            </select>`}
        <//>
        <${Field} label=${t('Compression strategy')} required error=${fieldError(err, 'strategy')}>
          <div class="radio-row">${STRATEGIES.map((s) => html`<label class=${allowed.includes(s) ? '' : 'disabled'}>
            <input type="radio" name="strategy" value=${s} disabled=${!allowed.includes(s)} checked=${form.strategy === s}
              onChange=${() => set({ strategy: s })} />${t(s)}</label>`)}</div>
        <//>
        <${Field} label=${t('Compressed model name')} required id="output_model_name" error=${shown('output_model_name', 'output_model_name')}>
          <input class="input" name="output_model_name" value=${form.outputName} onInput=${(e) => set({ outputName: e.target.value })} /><//>
      <//>
      <${Section} title=${t('Parameter settings')}>
        ${form.strategy === 'smoothquant-w8a8' ? html`<${Field} label=${t('Migration strength')} error=${shown('alpha', 'alpha')} hint="0 ~ 1 · 0.5">
          <div class="slider-row"><input type="range" min="0" max="1" step="0.05" value=${form.alpha} onInput=${(e) => set({ alpha: e.target.value })} aria-label="alpha" />
            <input class="input narrow" name="alpha" value=${form.alpha} onInput=${(e) => set({ alpha: e.target.value })} /></div><//>` : null}
        <${Field} label=${t('Calibration data (optional)')} error=${fieldError(err, 'calibration_dataset')} hint="bucket/path (.txt, .jsonl, .json)">
          <input class="input" value=${form.calibration} onInput=${(e) => set({ calibration: e.target.value })} /><//>
        <${Field} label=${t('Output path (optional)')} error=${fieldError(err, 'output_path')} hint="bucket/folder">
          <input class="input" value=${form.outputPath} onInput=${(e) => set({ outputPath: e.target.value })} /><//>
        <${Field} label=${t('Estimated duration')}>
          <div data-testid="estimate">${estimate && estimate.estimate ? html`<strong>${minutes(estimate.estimate)}</strong>
            <span class="hint"> (${estimate.estimate.basis})</span>` : estimate && estimate.note ? html`<span class="hint">${estimate.note}</span>`
            : estimate && estimate.error ? html`<span class="field-error">${estimate.error.message}</span>` : '-'}</div><//>
      <//>
      <${Section} title=${t('Resource settings')}>
        <${Field} label=${t('Resource pool')}>
          <div class="radio-row">
            <label><input type="radio" checked=${form.pool === 'public'} onChange=${() => set({ pool: 'public' })} />${t('Public pool')}</label>
            <label><input type="radio" checked=${form.pool === 'dedicated'} onChange=${() => set({ pool: 'dedicated' })} />${t('Dedicated pool')}</label>
          </div><//>
        <${Field} label=${t('Instance spec')} error=${fieldError(err, 'instance_spec')}>
          <select class="input" value=${form.spec} onChange=${(e) => set({ spec: e.target.value })}>
            ${specs.map((s) => html`<option value=${s.id}>${s.name}</option>`)}</select><//>
      <//>
      <${Section} title=${t('More options')}>
        <${Field} label=${t('Keep logs permanently')} error=${fieldError(err, 'permanent_log')}>
          <${Switch} checked=${form.permanentLog} onChange=${(v) => set({ permanentLog: v })} />
          ${form.permanentLog ? html`<input class="input" placeholder=${t('Log path') + ' (bucket/folder)'} value=${form.logPath} onInput=${(e) => set({ logPath: e.target.value })} />` : null}<//>
        <${Field} label=${t('Event notification')} error=${fieldError(err, 'notification')}>
          <${Switch} checked=${form.notify} onChange=${(v) => set({ notify: v })} />
          ${form.notify ? html`<div><input class="input" placeholder=${t('Topic')} value=${form.topic} onInput=${(e) => set({ topic: e.target.value })} />
            <div class="checks-row">${NOTIFY_EVENTS.map((ev) => html`<label><input type="checkbox" checked=${form.events.includes(ev)}
              onChange=${(e) => set({ events: e.target.checked ? [...form.events, ev] : form.events.filter((x) => x !== ev) })} />${t(`status.${ev}`)}</label>`)}</div></div>` : null}<//>
      <//>
      ${err && !fieldError(err, 'name', 'source', 'output_model_name', 'alpha', 'strategy', 'instance_spec', 'output_path', 'calibration_dataset') ? html`<${ErrorBox} error=${err} />` : null}
      <div class="form-actions">
        <button type="button" class="btn" onClick=${() => navigate('/console/compression')}>${t('Cancel')}</button>
        <button type="submit" class="btn btn-primary" disabled=${submit.busy}>${t('Submit')}</button>
      </div>
    </form>
  </div>`;
}

async function downloadLog(job) {
  const response = await fetch(`/api/v1/compression-jobs/${job.id}/logs/download`, { headers: { Authorization: `Bearer ${auth.token}` } });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(await response.blob());
  a.download = `${job.name}-${job.id.slice(0, 8)}.log`;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

function LogsPanel({ job }) {
  const [search, setSearch] = useState('');
  const { data, error } = usePoll(() => get(`/api/v1/compression-jobs/${job.id}/logs`, { search, limit: 1000 }),
    [job.id, search], ACTIVE.includes(job.status) ? 3000 : 0);
  return html`<div>
    <div class="toolbar">
      <input class="input search" placeholder=${t('Search')} value=${search} onInput=${(e) => setSearch(e.target.value)} data-testid="log-search" />
      <button class="btn" onClick=${() => downloadLog(job)}>${t('Download')}</button>
    </div>
    <${ErrorBox} error=${error} />
    <pre class="logs" data-testid="logs">${data ? data.items.map((l) => `${fmtTime(l.at)} ${l.line}`).join('\n') : ''}</pre>
  </div>`;
}

export function CompressionJobPage({ id }) {
  const [tab, setTab] = useState('details');
  const { data: job, error } = usePoll(() => get(`/api/v1/compression-jobs/${id}`), [id], 3000);
  if (error && !job) return html`<${ErrorBox} error=${error} />`;
  if (!job) return html`<${Spinner} />`;
  const m = job.metrics;
  const progress = job.progress || {};
  return html`<div>
    <${PageHead} title=${job.name} back="/console/compression">
      <${DeleteJob} job=${job} onDone=${() => navigate('/console/compression')} />
    <//>
    <div class="status-line"><span data-testid="job-status"><${StatusTag} status=${job.status} message=${job.status_message} /></span>
      ${job.status_message ? html`<span class="muted">${job.status_message}</span>` : null}</div>
    <${Tabs} active=${tab} onChange=${setTab} tabs=${[{ id: 'details', label: t('Details') }, { id: 'logs', label: t('Logs') },
      { id: 'events', label: t('Events') }]} />
    <div class="card section">
      ${tab === 'details' ? html`<div class="grid-2">
        <${KV} items=${[
          ['ID', html`<code>${job.id}</code>`], [t('Description'), job.description],
          [t('Source model'), job.source.model_id ? html`<${Link} href=${`/console/models/${job.source.model_id}`}>${job.source.model_name || job.source.model_id}<//>` : job.template_id],
          [t('Compression strategy'), t(job.strategy)],
          [t('Migration strength'), job.params && job.params.alpha !== null && job.params.alpha !== undefined ? job.params.alpha : '-'],
          [t('Compressed model'), html`<${OutputModel} job=${job} />`],
          [t('Path'), html`<span class="mono small">${job.output.path}</span>`],
          [t('Estimated duration'), minutes(job.estimate)], [t('Created'), fmtTime(job.created_at)],
        ]} />
        <${KV} items=${[
          [t('Progress'), html`<${ProgressBar} value=${progress.fraction || 0} total=${1} label=${`${Math.round((progress.fraction || 0) * 100)}% ${progress.step || ''}`} />`],
          [t('Size before'), m ? fmtBytes(m.size_before_bytes) : '-'],
          [t('Size after'), m ? html`<span data-testid="size-after">${fmtBytes(m.size_after_bytes)} (×${m.size_ratio})</span>` : '-'],
          [t('Perplexity before'), m ? fmtNumber(m.perplexity_before, 2) : '-'],
          [t('Perplexity after'), m ? html`<span data-testid="ppl-after">${fmtNumber(m.perplexity_after, 2)} (×${m.perplexity_ratio})</span>` : '-'],
          [t('Duration'), m ? `${fmtNumber(m.duration_seconds, 1)} s` : '-'],
          [t('Instance spec'), job.resources && job.resources.instance_spec],
        ]} />
        <div class="span-2"><h4>${t('Status history')}</h4><table class="table">
          <tbody>${(job.history || []).map((h) => html`<tr><td>${fmtTime(h.at)}</td><td><${StatusTag} status=${h.status} /></td><td>${h.message || ''}</td></tr>`)}</tbody>
        </table></div>
      </div>` : tab === 'logs' ? html`<${LogsPanel} job=${job} />` : html`<${TimelinePanel} resource="compression-jobs" id=${job.id} />`}
    </div>
  </div>`;
}

