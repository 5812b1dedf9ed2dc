// Model tuning (guide chapter 6): jobs list, create form with iterations and duration estimate,
// detail with live loss chart, logs (search, download), checkpoints -> model / version, stop / continue / delete.
import { html, useEffect, useMemo, useState } from '../lib.js';
import { auth, del, get, post, uploadObject } from '../api.js';
import { t } from '../i18n.js';
import { Link, navigate } from '../router.js';
import { LineChart } from '../chart.js';
import { TimelinePanel } from '../timeline.js';
import {
  ActionButton, Confirm, ConfirmDelete, Empty, ErrorBox, Field, KV, Modal, OutputModel, PageHead, ProgressBar, Section, Spinner,
  StatusTag, Switch, Tabs, fieldError, fmtBytes, fmtNumber, fmtTime, nameError, toast, useAction, usePoll,
} from '../ui.js';

// services/tuning/models.py FLAVORS (cards feed the estimate, table 6-5).
export const FLAVORS = [
  ['cpu.1', 'CPU: 1*cpu'], ['ascend.1', 'Ascend: 1*ascend-snt9b2(64GB)'], ['ascend.2', 'Ascend: 2*ascend-snt9b2(64GB)'],
  ['ascend.4', 'Ascend: 4*ascend-snt9b2(64GB)'], ['ascend.8', 'Ascend: 8*ascend-snt9b2(64GB)'], ['gpu.1', 'GPU: 1*gpu'],
  ['gpu.8', 'GPU: 8*gpu'],
];
const NOTIFY_EVENTS = ['creating', 'waiting', 'running', 'stopped', 'completed', 'failed', 'restarted'];
const STOPPABLE = ['creating', 'waiting', 'running'];
const ACTIVE = ['creating', 'waiting', 'running'];
const ITERATION = /iteration\s+(\d+)\/\s*(\d+)/;
const LOSS = /lm loss: ([0-9.eE+-]+)/;

export function parseLoss(lines) {
  const x = [];
  const y = [];
  for (const line of lines) {
    const it = ITERATION.exec(line);
    const loss = LOSS.exec(line);
    if (it && loss) { x.push(Number(it[1])); y.push(Number(loss[1])); }
  }
  return { x, y };
}

function eta(job) {
  const p = job.progress || {};
  if (!p.elapsed_time_per_iteration_s || !p.total_iterations) return null;
  const seconds = (p.total_iterations - p.iteration) * p.elapsed_time_per_iteration_s;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function JobProgress({ job }) {
  const p = job.progress || {};
  return html`<div class="job-progress">
    <${ProgressBar} value=${p.iteration || 0} total=${p.total_iterations || 1}
      label=${`${p.iteration || 0} / ${p.total_iterations || '-'}`} />
  </div>`;
}

async function downloadLog(job) {
  const response = await fetch(`/api/v1/tuning-jobs/${job.id}/logs/download`,
    { headers: { Authorization: `Bearer ${auth.token}` } });
  const blob = await response.blob();
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = `${job.name}-${job.id.slice(0, 8)}.log`;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

function JobActions({ job, reload, onDeleted, compact }) {
  const [dialog, setDialog] = useState(null);
  const cls = compact ? 'link' : 'btn';
  return html`<span class="actions">
    ${STOPPABLE.includes(job.status) ? html`<${ActionButton} action="maas:tuningJobs:stop" class=${cls} onClick=${() => setDialog('stop')}>${t('Stop')}<//>` : null}
    ${job.status === 'stopped' ? html`<${ActionButton} action="maas:tuningJobs:continue" class=${cls} onClick=${() => setDialog('continue')}>${t('Continue')}<//>` : null}
    <${ActionButton} action="maas:tuningJobs:delete" class=${cls + ' danger'} onClick=${() => setDialog('delete')}>${t('Delete')}<//>
    ${dialog === 'stop' ? html`<${Confirm} title=${t('Stop')} message=${t('Stop the job? Checkpoints are kept.')}
      onClose=${() => setDialog(null)} onConfirm=${async () => { await post(`/api/v1/tuning-jobs/${job.id}/stop`); reload(); }} />` : null}
    ${dialog === 'continue' ? html`<${Confirm} title=${t('Continue')} message=${t('Continue from the latest checkpoint?')}
      onClose=${() => setDialog(null)} onConfirm=${async () => { await post(`/api/v1/tuning-jobs/${job.id}/continue`); reload(); }} />` : null}
    ${dialog === 'delete' ? html`<${ConfirmDelete} what=${t('job')} name=${job.name} onClose=${() => setDialog(null)}
      onConfirm=${async () => { await del(`/api/v1/tuning-jobs/${job.id}`); toast(`${job.name} ✓`); onDeleted ? onDeleted() : reload(); }} />` : null}
  </span>`;
}

export function TuningPage() {
  const [name, setName] = useState('');
  const [status, setStatus] = useState('');
  const { data, error, reload } = usePoll(() => get('/api/v1/tuning-jobs', { name, status, limit: 200 }), [name, status], 3000);
  return html`<div>
    <${PageHead} title=${t('Model tuning')}>
      <${ActionButton} action="maas:tuningJobs:create" class="btn btn-primary" data-action="create-tuning-job"
        onClick=${() => navigate('/console/tuning/create')}>${t('Create tuning job')}<//>
    <//>
    <div class="toolbar">
      <input class="input search" placeholder=${t('Search by name')} value=${name} onInput=${(e) => setName(e.target.value)} />
      <select class="input" value=${status} onChange=${(e) => setStatus(e.target.value)} aria-label="status">
        <option value="">${t('All statuses')}</option>
        ${['creating', 'waiting', 'running', 'stopped', 'completed', 'failed'].map((s) => html`<option value=${s}>${t(`status.${s}`)}</option>`)}
      </select>
    </div>
    <${ErrorBox} error=${error} />
    ${!data ? html`<${Spinner} />` : data.items.length === 0 ? html`<${Empty} />` : html`
      <table class="table" data-testid="tuning-table">
        <thead><tr><th>${t('Name')}</th><th>${t('Status')}</th><th>${t('Source model')}</th><th>${t('Tune type')}</th>
          <th>${t('Progress')}</th><th>${t('Created')}</th><th>${t('Operation')}</th></tr></thead>
        <tbody>${data.items.map((job) => html`<tr data-job=${job.name}>
          <td><${Link} href=${`/console/tuning/${job.id}`}>${job.name}<//></td>
          <td><${StatusTag} status=${job.status} message=${job.status_message} /></td>
          <td>${job.source.model_name || job.template_name}${job.source.version_number ? ` V${job.source.version_number}` : ''}</td>
          <td>${t(job.tune_type)}</td><td class="w-progress"><${JobProgress} job=${job} /></td><td>${fmtTime(job.created_at)}</td>
          <td><${JobActions} job=${job} reload=${reload} compact /></td>
        </tr>`)}</tbody>
      </table>`}
  </div>`;
}

function countSamples(file) {
  // jsonl: one sample per non-empty line; json: an array. Other formats: the server counts.
  return new Promise((resolve) => {
    if (!/\.(jsonl|json)$/i.test(file.name) || file.size > 200 * 1024 * 1024) { resolve(null); return; }
    const reader = new FileReader();
    reader.onload = () => {
      const text = String(reader.result);
      if (/\.jsonl$/i.test(file.name)) { resolve(text.split('\n').filter((l) => l.trim()).length); return; }
      try { const data = JSON.parse(text); resolve(Array.isArray(data) ? data.length : null); } catch { resolve(null); }
    };
    reader.onerror = () => resolve(null);
    reader.readAsText(file);
  });
}

export function TuningCreatePage() {
  const params = new URLSearchParams(location.search);
  const templates = usePoll(() => get('/api/v1/templates', { task: 'tune' }), []);
  const models = usePoll(() => get('/api/v1/models', { status: 'created', limit: 200 }), []);
  const [form, setForm] = useState({
    name: '', description: '', sourceKind: params.get('template') ? 'template' : 'model',
    modelId: params.get('model') || '', version: '', templateId: params.get('template') || '', tuneType: '',
    outputName: '', outputDescription: '', outputPath: '', format: 'alpaca', datasetMode: 'upload', datasetFile: null,
    datasetPath: '', samples: '', epochs: '2', lr: '0.00002', checkpoints: '1', pool: 'public', flavor: 'cpu.1',
    nodes: '1', permanentLog: false, logPath: '', notify: false, topic: '', events: ['completed', 'failed'],
    autoStop: false, stopHours: '1', customHours: '', autoRestart: false, maxRestarts: '3', unconditional: false,
  });
  const set = (patch) => setForm((f) => ({ ...f, ...patch }));
  const [touched, setTouched] = useState(false);
  const [estimate, setEstimate] = useState(null);
  const [confirming, setConfirming] = useState(null);
  const [uploading, setUploading] = useState(null);

  const tuneModels = useMemo(() => {
    if (!models.data || !templates.data) return [];
    const ids = new Set(templates.data.items.map((x) => x.id));
    return models.data.items.filter((m) => !m.quantization && ids.has(m.template_id));
  }, [models.data, templates.data]);
  const presetTemplates = templates.data ? templates.data.items.filter((x) => x.preset_weights) : [];
  const model = tuneModels.find((m) => m.id === form.modelId);
  const templateId = form.sourceKind === 'model' ? (model && model.template_id) : form.templateId;
  const template = templates.data ? templates.data.items.find((x) => x.id === templateId) : null;
  const tuneTypes = template ? template.tasks.tune : [];
  useEffect(() => { if (template && !tuneTypes.includes(form.tuneType)) set({ tuneType: tuneTypes.includes('lora') ? 'lora' : tuneTypes[0] || '' }); }, [templateId, !!template]);
  useEffect(() => { if (!form.outputName && form.name) set({ outputName: `${form.name}-tuned` }); }, [form.name]);

  const gbs = template ? template.global_batch_size : 32;
  const samples = Number(form.samples);
  const epochs = Number(form.epochs);
  const iterations = samples > 0 && epochs > 0 ? Math.ceil(samples / gbs) * epochs : null;
  const source = form.sourceKind === 'model'
    ? { model_id: form.modelId, ...(form.version ? { version: Number(form.version) } : {}) }
    : { template_id: form.templateId };

  useEffect(() => {
    setEstimate(null);
    if (!template || !form.tuneType || !(samples > 0) || !(epochs > 0)) return undefined;
    const timer = setTimeout(async () => {
      try {
        setEstimate(await post('/api/v1/tuning-jobs/estimate', { source, tune_type: form.tuneType, sample_count: samples,
          epochs, flavor: form.flavor, node_count: Number(form.nodes) || 1 }));
      } catch (e) { setEstimate({ error: e }); }
    }, 300);
    return () => clearTimeout(timer);
  }, [templateId, form.modelId, form.tuneType, form.samples, form.epochs, form.flavor, form.nodes]);

  const errors = {
    name: nameError(form.name, { dot: false }),
    source: form.sourceKind === 'model' ? (form.modelId ? null : t('Required')) : (form.templateId ? null : t('Required')),
    output_model_name: nameError(form.outputName),
    dataset_path: form.datasetMode === 'upload' ? (form.datasetFile ? null : t('No files chosen')) : (form.datasetPath ? null : t('Required')),
  };

  const body = async () => {
    let datasetPath = form.datasetPath.trim();
    if (form.datasetMode === 'upload') {
      const me = auth.user && auth.user.default_bucket ? auth.user : await get('/api/v1/auth/me');
      datasetPath = `${me.default_bucket}/datasets/${form.datasetFile.name}`;
      await uploadObject(datasetPath, form.datasetFile, (done, total) => setUploading({ done, total }));
    }
    const hours = form.stopHours === 'custom' ? Number(form.customHours) : Number(form.stopHours);
    return {
      name: form.name, description: form.description, source, tune_type: form.tuneType,
      output_model_name: form.outputName, output_model_description: form.outputDescription,
      ...(form.outputPath.trim() ? { output_path: form.outputPath.trim() } : {}),
      dataset_format: form.format || null, dataset_path: datasetPath,
      ...(samples > 0 ? { sample_count: samples } : {}),
      hyperparameters: { epochs, learning_rate: Number(form.lr), checkpoint_count: Number(form.checkpoints) },
      resource_pool: form.pool, flavor: form.flavor, node_count: Number(form.nodes) || 1,
      permanent_log: { enabled: form.permanentLog, ...(form.permanentLog ? { path: form.logPath } : {}) },
      notification: { enabled: form.notify, ...(form.notify ? { topic: form.topic, events: form.events } : {}) },
      auto_stop: { enabled: form.autoStop, ...(form.autoStop ? { hours } : {}) },
      auto_restart: { enabled: form.autoRestart, max_restarts: Number(form.maxRestarts) || 3, unconditional: form.unconditional },
    };
  };
  const submit = useAction(async () => {
    const job = await post('/api/v1/tuning-jobs', await body());
    navigate(`/console/tuning/${job.id}`);
  });
  const err = submit.error;
  const shown = (key, ...api) => (touched && errors[key]) || fieldError(err, ...api);
  const trySubmit = (e) => {
    e.preventDefault();
    setTouched(true);
    if (Object.values(errors).some(Boolean)) return;
    setConfirming(true);
  };
  const est = estimate && estimate.estimate;
  return html`<div>
    <${PageHead} title=${t('Create tuning job')} back="/console/tuning" />
    <form class="form" onSubmit=${trySubmit} data-testid="tuning-create-form">
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
              ${tuneModels.map((m) => html`<option value=${m.id}>${m.name} (${m.template_name})</option>`)}
            </select>
            ${model ? html`<select class="input" name="version" value=${form.version} onChange=${(e) => set({ version: e.target.value })}>
              <option value="">V${model.latest_version} (latest)</option>
              ${Array.from({ length: model.latest_version }, (_, i) => i + 1).map((n) => html`<option value=${String(n)}>V${n}</option>`)}
            </select>` : null}
          </div>` : html`<select class="input" name="template" value=${form.templateId} onChange=${(e) => set({ templateId: e.target.value })}>
              <option value="">${t('Select a base model')}</option>
              ${presetTemplates.map((x) => html`<option value=${x.id}>${x.name}</option>`)}
            </select>`}
        <//>
        <${Field} label=${t('Tune type')} required id="tune_type" error=${fieldError(err, 'tune_type')}>
          <div class="radio-row">${['full', 'lora', 'pretrain'].map((tt) => html`<label class=${tuneTypes.includes(tt) ? '' : 'disabled'}>
            <input type="radio" name="tune_type" value=${tt} disabled=${!tuneTypes.includes(tt)} checked=${form.tuneType === tt}
              onChange=${() => set({ tuneType: tt })} />${t(tt)}</label>`)}</div>
        <//>
        <${Field} label=${t('Tuned model name')} required id="output_model_name" error=${shown('output_model_name', 'output_model_name')}>
          <input class="input" name="output_model_name" value=${form.outputName} onInput=${(e) => set({ outputName: e.target.value })} /><//>
        <${Field} label=${t('Output path (optional)')} error=${fieldError(err, 'output_path')} hint="bucket/folder">
          <input class="input" value=${form.outputPath} onInput=${(e) => set({ outputPath: e.target.value })} /><//>
      <//>
      <${Section} title=${t('Data settings')}>
        <${Field} label=${t('Dataset format')} required error=${fieldError(err, 'dataset_format')}>
          <div class="radio-row">${['moss', 'alpaca', 'sharegpt'].map((f) => html`<label>
            <input type="radio" name="format" checked=${form.format === f} onChange=${() => set({ format: f })} />${{ moss: 'MOSS', alpaca: 'Alpaca', sharegpt: 'ShareGPT' }[f]}</label>`)}</div>
        <//>
        <${Field} label=${t('Dataset')} required id="dataset_path" error=${shown('dataset_path', 'dataset_path')}>
          <div class="radio-row">
            <label><input type="radio" checked=${form.datasetMode === 'upload'} onChange=${() => set({ datasetMode: 'upload' })} />${t('Upload a file')}</label>
            <label><input type="radio" checked=${form.datasetMode === 'path'} onChange=${() => set({ datasetMode: 'path' })} />${t('Path in object storage')}</label>
          </div>
          ${form.datasetMode === 'upload' ? html`<input type="file" accept=".jsonl,.json,.csv,.xlsx" data-testid="dataset-file"
              onChange=${async (e) => { const file = e.target.files[0]; set({ datasetFile: file || null });
                if (file) { const n = await countSamples(file); if (n) set({ samples: String(n) }); } }} />`
            : html`<input class="input" placeholder="bucket/folder/data.jsonl" value=${form.datasetPath} onInput=${(e) => set({ datasetPath: e.target.value })} />`}
          ${uploading ? html`<${ProgressBar} value=${uploading.done} total=${uploading.total} />` : null}
          ${err && err.field === 'dataset_path' && err.details.length ? html`<${ErrorBox} error=${err} />` : null}
        <//>
      <//>
      <${Section} title=${t('Hyperparameters')}>
        <${Field} label=${t('Sample count')} error=${fieldError(err, 'sample_count')}>
          <input class="input narrow" type="number" min="1" name="sample_count" value=${form.samples} onInput=${(e) => set({ samples: e.target.value })} /><//>
        <${Field} label=${t('Epochs')} error=${fieldError(err, 'hyperparameters.epochs')} hint="4~8 (×100) · 2~4 (×1000) · 1~2">
          <input class="input narrow" type="number" min="1" name="epochs" value=${form.epochs} onInput=${(e) => set({ epochs: e.target.value })} /><//>
        <${Field} label=${t('Iterations')}>
          <div data-testid="iterations"><strong>${iterations === null ? '-' : fmtNumber(iterations)}</strong>
            <span class="hint"> ${iterations === null ? t('Enter the sample count to compute the iterations.') : t('Computed: ceil(samples ÷ {gbs}) × epochs = {n}', { gbs, n: iterations })}</span></div><//>
        <${Field} label=${t('Learning rate')} error=${fieldError(err, 'hyperparameters.learning_rate')} hint="(0, 0.1] · 0.00002">
          <input class="input narrow" name="learning_rate" value=${form.lr} onInput=${(e) => set({ lr: e.target.value })} /><//>
        <${Field} label=${t('Checkpoints to save')} error=${fieldError(err, 'hyperparameters.checkpoint_count')}
          hint=${`1 ~ ${iterations ? Math.min(iterations, 10) : 10}`}>
          <input class="input narrow" type="number" min="1" max="10" name="checkpoint_count" value=${form.checkpoints} onInput=${(e) => set({ checkpoints: e.target.value })} /><//>
        <${Field} label=${t('Estimated duration')}>
          <div data-testid="estimate">${est ? html`<strong>${t('{min} – {max} hours', { min: est.min_hours, max: est.max_hours })}</strong>
            <span class="hint"> (${fmtNumber(est.throughput_low)}–${fmtNumber(est.throughput_high)} tokens/s/card, +${est.prepost_hours} h)</span>`
            : estimate && estimate.note ? html`<span class="hint">${t('No throughput figures for this template: no estimate.')}</span>`
            : estimate && estimate.error ? html`<span class="field-error">${estimate.error.message}</span>` : '-'}</div><//>
      <//>
      <${Section} title=${t('Resource settings')}>
        <${Field} label=${t('Resource pool')}>
          <div class="radio-row">
            <label><input type="radio" checked=${form.pool === 'public'} onChange=${() => set({ pool: 'public' })} />${t('Public pool')}</label>
            <label><input type="radio" checked=${form.pool === 'dedicated'} onChange=${() => set({ pool: 'dedicated' })} />${t('Dedicated pool')}</label>
          </div><//>
        <${Field} label=${t('Flavor')} error=${fieldError(err, 'flavor')}>
          <select class="input" value=${form.flavor} onChange=${(e) => set({ flavor: e.target.value })}>
            ${FLAVORS.map(([id, label]) => html`<option value=${id}>${label}</option>`)}</select><//>
        <${Field} label=${t('Nodes')} error=${fieldError(err, 'node_count')}>
          <input class="input narrow" type="number" min="1" value=${form.nodes} onInput=${(e) => set({ nodes: e.target.value })} /><//>
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
        <${Field} label=${t('Auto stop')} error=${fieldError(err, 'auto_stop')}>
          <${Switch} checked=${form.autoStop} onChange=${(v) => set({ autoStop: v })} />
          ${form.autoStop ? html`<div class="row"><select class="input" value=${form.stopHours} onChange=${(e) => set({ stopHours: e.target.value })}>
            ${['1', '2', '4', '6'].map((h) => html`<option value=${h}>${h} ${t('hours')}</option>`)}<option value="custom">${t('Custom')}</option></select>
            ${form.stopHours === 'custom' ? html`<input class="input narrow" type="number" min="0.1" step="0.1" value=${form.customHours} onInput=${(e) => set({ customHours: e.target.value })} />` : null}</div>` : null}<//>
        <${Field} label=${t('Auto restart')} error=${fieldError(err, 'auto_restart')}>
          <${Switch} checked=${form.autoRestart} onChange=${(v) => set({ autoRestart: v })} />
          ${form.autoRestart ? html`<div class="row"><label>${t('Max restarts')} <input class="input narrow" type="number" min="1" max="128" value=${form.maxRestarts} onInput=${(e) => set({ maxRestarts: e.target.value })} /></label>
            <label><input type="checkbox" checked=${form.unconditional} onChange=${(e) => set({ unconditional: e.target.checked })} />${t('Unconditional restart')}</label></div>` : null}<//>
      <//>
      ${err && !err.field ? html`<${ErrorBox} error=${err} />` : err && !document.querySelector(`[data-field="${err.field}"]`) ? html`<${ErrorBox} error=${err} />` : null}
      <div class="form-actions sticky">
        <button type="button" class="btn" onClick=${() => navigate('/console/tuning')}>${t('Cancel')}</button>
        <button type="submit" class="btn btn-primary" disabled=${submit.busy}>${t('Submit')}</button>
      </div>
    </form>
    ${confirming ? html`<${Modal} title=${t('Create tuning job')} onClose=${() => setConfirming(null)} footer=${html`
        <button class="btn" onClick=${() => setConfirming(null)}>${t('Cancel')}</button>
        <button class="btn btn-primary" data-testid="confirm-submit" disabled=${submit.busy}
          onClick=${async () => { await submit.run(); setConfirming(null); }}>${t('OK')}</button>`}>
      <${KV} items=${[[t('Task name'), form.name], [t('Source model'), model ? model.name : form.templateId], [t('Tune type'), t(form.tuneType)],
        [t('Iterations'), iterations ? fmtNumber(iterations) : '-'],
        [t('Estimated duration'), est ? t('{min} – {max} hours', { min: est.min_hours, max: est.max_hours }) : '-']]} />
    <//>` : null}
  </div>`;
}

function LossPanel({ job }) {
  const running = ACTIVE.includes(job.status);
  const { data } = usePoll(() => get(`/api/v1/tuning-jobs/${job.id}/logs`, { search: 'lm loss', limit: 5000 }),
    [job.id], running ? 3000 : 0);
  const { x, y } = useMemo(() => parseLoss(data ? data.items.map((i) => i.line) : []), [data]);
  const p = job.progress || {};
  return html`<div>
    <${KV} items=${[
      [t('Progress'), html`<${JobProgress} job=${job} />`],
      [t('Loss'), p.lm_loss !== null && p.lm_loss !== undefined ? html`<span data-testid="latest-loss">${Number(p.lm_loss).toFixed(4)}</span>` : '-'],
      [t('Throughput (tokens/s/card)'), fmtNumber(p.tokens_per_sec_per_card, 1)],
      [t('ETA'), running ? eta(job) || '-' : '-'],
    ]} />
    ${x.length ? html`<${LineChart} x=${x} series=${[{ label: 'lm loss', values: y }]} xLabel=${t('Iteration')} testid="loss-chart" />`
      : html`<${Empty}>${t('Waiting for the first iteration…')}<//>`}
  </div>`;
}

function LogsPanel({ job }) {
  const [search, setSearch] = useState('');
  const running = ACTIVE.includes(job.status);
  const { data, error } = usePoll(() => get(`/api/v1/tuning-jobs/${job.id}/logs`, { search, limit: 5000 }),
    [job.id, search], running ? 3000 : 0);
  return html`<div>
    <div class="toolbar">
      <input class="input search" placeholder=${t('Search logs (e.g. lm loss)')} value=${search}
        onInput=${(e) => setSearch(e.target.value)} data-testid="log-search" />
      <button class="btn" onClick=${() => downloadLog(job)}>${t('Download')}</button>
      ${data ? html`<span class="muted small">${data.total}</span>` : null}
    </div>
    <${ErrorBox} error=${error} />
    <pre class="logs" data-testid="logs">${data ? data.items.map((l) => `${fmtTime(l.at)} ${l.line}`).join('\n') : ''}</pre>
  </div>`;
}

function ConvertDialog({ job, checkpoint, target, onClose, onDone }) {
  const [name, setName] = useState(`${job.output.model_name}-it${checkpoint.iteration}`);
  const [description, setDescription] = useState('');
  const [validate, setValidate] = useState(true);
  const action = useAction(async () => {
    const body = { target, description, validate_weights: validate, ...(target === 'new_model' ? { model_name: name } : {}) };
    await post(`/api/v1/tuning-jobs/${job.id}/checkpoints/${checkpoint.iteration}/models`, body);
    toast('✓');
    onDone();
    onClose();
  });
  return html`<${Modal} title=${target === 'new_model' ? t('Create as my model') : t('Add as a version of the tuned model')}
    onClose=${onClose} footer=${html`<button class="btn" onClick=${onClose}>${t('Cancel')}</button>
      <button class="btn btn-primary" disabled=${action.busy} onClick=${() => action.run()}>${t('Create')}</button>`}>
    <div class="form">
      ${target === 'new_model' ? html`<${Field} label=${t('Model name')} required error=${fieldError(action.error, 'model_name')}>
        <input class="input" value=${name} onInput=${(e) => setName(e.target.value)} /><//>` : null}
      <${Field} label=${t('Description')}><textarea class="input" rows="2" value=${description} onInput=${(e) => setDescription(e.target.value)}></textarea><//>
      <${Field} label=${t('Weight validation')}><${Switch} checked=${validate} onChange=${setValidate} /><//>
      ${action.error && action.error.field !== 'model_name' ? html`<${ErrorBox} error=${action.error} />` : null}
    </div>
  <//>`;
}

function CheckpointsPanel({ job, reload }) {
  const [dialog, setDialog] = useState(null);
  const conversions = usePoll(() => get(`/api/v1/tuning-jobs/${job.id}/conversions`), [job.id], 4000);
  return html`<div>
    ${(job.checkpoints || []).length === 0 ? html`<${Empty} />` : html`<table class="table" data-testid="checkpoints">
      <thead><tr><th>${t('Iteration')}</th><th>${t('Format')}</th><th>${t('Path')}</th><th>${t('Created')}</th><th>${t('Operation')}</th></tr></thead>
      <tbody>${job.checkpoints.map((c) => html`<tr>
        <td>${c.iteration}</td><td>${c.format === 'lora' ? 'LoRA adapter' : 'Huggingface'}</td><td class="mono small">${c.path}</td>
        <td>${fmtTime(c.created_at)}</td>
        <td><button class="link" onClick=${() => setDialog({ c, target: 'new_model' })}>${t('Create as my model')}</button>
          <button class="link" disabled=${job.status !== 'completed'} onClick=${() => setDialog({ c, target: 'new_version' })}>${t('Add as a version of the tuned model')}</button></td>
      </tr>`)}</tbody></table>`}
    ${conversions.data && conversions.data.items.length ? html`<h4>${t('Conversions')}</h4><table class="table">
      <thead><tr><th>${t('Iteration')}</th><th>${t('Type')}</th><th>${t('Status')}</th><th>${t('Model name')}</th><th>${t('Created')}</th></tr></thead>
      <tbody>${conversions.data.items.map((c) => html`<tr><td>${c.iteration}</td><td>${t(c.kind)}</td>
        <td><${StatusTag} status=${c.status} message=${c.message} /></td><td>${c.model_name || c.target}</td><td>${fmtTime(c.created_at)}</td></tr>`)}</tbody>
    </table>` : null}
    ${dialog ? html`<${ConvertDialog} job=${job} checkpoint=${dialog.c} target=${dialog.target} onClose=${() => setDialog(null)}
      onDone=${() => { reload(); conversions.reload(); }} />` : null}
  </div>`;
}

export function TuningJobPage({ id }) {
  const [tab, setTab] = useState('details');
  const { data: job, error, reload } = usePoll(() => get(`/api/v1/tuning-jobs/${id}`), [id], 3000);
  if (error && !job) return html`<${ErrorBox} error=${error} />`;
  if (!job) return html`<${Spinner} />`;
  const hp = job.hyperparameters || {};
  const est = job.estimate;
  return html`<div>
    <${PageHead} title=${job.name} back="/console/tuning">
      <${JobActions} job=${job} reload=${reload} onDeleted=${() => navigate('/console/tuning')} />
    <//>
    <div class="status-line"><span data-testid="job-status"><${StatusTag} status=${job.status} message=${job.status_message} /></span>
      ${job.status_message ? html`<span class="muted">${job.status_message}</span>` : null}</div>
    <${Tabs} active=${tab} onChange=${setTab} tabs=${[
      { id: 'details', label: t('Details') }, { id: 'loss', label: t('Loss curve') }, { id: 'logs', label: t('Logs') },
      { id: 'checkpoints', label: t('Checkpoints') }, { id: 'events', label: t('Events') }]} />
    <div class="card section">
      ${tab === 'details' ? html`<div class="grid-2">
        <${KV} items=${[
          ['ID', html`<code>${job.id}</code>`], [t('Description'), job.description],
          [t('Source model'), job.source.model_id ? html`<${Link} href=${`/console/models/${job.source.model_id}`}>${job.source.model_name} V${job.source.version_number}<//>` : job.template_name],
          [t('Tune type'), t(job.tune_type)],
          [t('Output model'), html`<${OutputModel} job=${job} />`],
          [t('Path'), html`<span class="mono small">${job.output.path}</span>`],
          [t('Dataset'), html`<span class="mono small">${job.dataset.path}</span>`], [t('Dataset format'), job.dataset.format],
          [t('Sample count'), fmtNumber(job.dataset.sample_count)],
        ]} />
        <${KV} items=${[
          [t('Epochs'), hp.epochs], [t('Iterations'), fmtNumber(hp.iterations)], [t('Learning rate'), hp.learning_rate],
          [t('Checkpoints to save'), hp.checkpoint_count], ['global batch size', hp.global_batch_size], ['SEQ_LEN', hp.seq_len],
          [t('Flavor'), job.resources.flavor_name], [t('Nodes'), job.resources.node_count],
          [t('Estimated duration'), est ? t('{min} – {max} hours', { min: est.min_hours, max: est.max_hours }) : '-'],
          [t('Created'), fmtTime(job.created_at)],
        ]} />
        <div class="span-2"><h4>${t('Status history')}</h4><table class="table">
          <tbody>${(job.history || []).map((h) => html`<tr><td>${fmtTime(h.at)}</td><td><${StatusTag} status=${h.status} /></td><td>${h.message || ''}</td></tr>`)}</tbody>
        </table></div>
      </div>` : null}
      ${tab === 'loss' ? html`<${LossPanel} job=${job} />` : null}
      ${tab === 'logs' ? html`<${LogsPanel} job=${job} />` : null}
      ${tab === 'checkpoints' ? html`<${CheckpointsPanel} job=${job} reload=${reload} />` : null}
      ${tab === 'events' ? html`<${TimelinePanel} resource="tuning-jobs" id=${job.id} />` : null}
    </div>
  </div>`;
}

export { fmtBytes };
