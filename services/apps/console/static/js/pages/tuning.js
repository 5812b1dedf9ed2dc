// Model tuning (guide chapter 6): the shared job pages (jobs.js) with tuning's columns, its create form with
// iterations and duration estimate, and its detail: live loss chart, checkpoints -> model / version.
import { html, useEffect, useMemo, useState } from '../lib.js';
import { auth, get, post, uploadObject } from '../api.js';
import { t } from '../i18n.js';
import { Link, navigate } from '../router.js';
import { LineChart } from '../chart.js';
import { JobListPage, JobPage, JobProgress, isActive } from '../jobs.js';
import {
  FormButtons, NotificationField, PermanentLogField, ResourcePoolField, SourceModelField, TaskSection, jobFormDefaults,
  permanentLogBody, useJobSource,
} from '../job-form.js';
import {
  Empty, ErrorBox, Field, KV, Modal, OutputModel, PageHead, ProgressBar, Section, StatusTag, Switch, fieldError,
  fmtNumber, fmtTime, nameError, toast, useAction, usePoll,
} from '../ui.js';

// services/tuning/models.py FLAVORS (cards feed the estimate, table 6-5).
export const FLAVORS = [
  ['cpu.1', 'CPU: 1*cpu'], ['ascend.1', 'Ascend: 1*ascend-snt9b2(64GB)'], ['ascend.2', 'Ascend: 2*ascend-snt9b2(64GB)'],
  ['ascend.4', 'Ascend: 4*ascend-snt9b2(64GB)'], ['ascend.8', 'Ascend: 8*ascend-snt9b2(64GB)'], ['gpu.1', 'GPU: 1*gpu'],
  ['gpu.8', 'GPU: 8*gpu'],
];
const NOTIFY_EVENTS = ['creating', 'waiting', 'running', 'stopped', 'completed', 'failed', 'restarted'];
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

// What the shared job pages need to know about tuning jobs.
const TUNING = {
  path: 'tuning-jobs', resource: 'tuningJobs', route: '/console/tuning', name: 'tuning',
  statuses: ['creating', 'waiting', 'running', 'stopped', 'completed', 'failed'],
  text: () => ({
    title: t('Model tuning'), create: t('Create tuning job'), logSearch: t('Search logs (e.g. lm loss)'),
    stop: t('Stop the job? Checkpoints are kept.'), continue: t('Continue from the latest checkpoint?'),
  }),
  columns: () => [
    { label: t('Source model'), cell: (job) => `${job.source.model_name || job.template_name}${job.source.version_number ? ` V${job.source.version_number}` : ''}` },
    { label: t('Tune type'), cell: (job) => t(job.tune_type) },
  ],
  progress: (job) => {
    const p = job.progress || {};
    return { value: p.iteration || 0, total: p.total_iterations || 1, label: `${p.iteration || 0} / ${p.total_iterations || '-'}` };
  },
  details: (job) => html`<${TuningDetails} job=${job} />`,
  tabs: ['details', { id: 'loss', label: () => t('Loss curve'), render: (job) => html`<${LossPanel} job=${job} />` }, 'logs',
    { id: 'checkpoints', label: () => t('Checkpoints'), render: (job, reload) => html`<${CheckpointsPanel} job=${job} reload=${reload} />` },
    'events'],
};

export function TuningPage() {
  return html`<${JobListPage} kind=${TUNING} />`;
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
  const [form, setForm] = useState({
    ...jobFormDefaults(params), tuneType: '', format: 'alpaca', datasetMode: 'upload', datasetFile: null,
    datasetPath: '', samples: '', epochs: '2', lr: '0.00002', checkpoints: '1', flavor: 'cpu.1', nodes: '1', globalBatch: '',
    autoStop: false, stopHours: '1', customHours: '', autoRestart: false, maxRestarts: '3', unconditional: false,
  });
  const set = (patch) => setForm((f) => ({ ...f, ...patch }));
  const [touched, setTouched] = useState(false);
  const [estimate, setEstimate] = useState(null);
  const [confirming, setConfirming] = useState(null);
  const [uploading, setUploading] = useState(null);

  const src = useJobSource('tune', form);
  const { model, templateId, template, source } = src;
  const tuneTypes = template ? template.tasks.tune : [];
  useEffect(() => { if (template && !tuneTypes.includes(form.tuneType)) set({ tuneType: tuneTypes.includes('lora') ? 'lora' : tuneTypes[0] || '' }); }, [templateId, !!template]);
  useEffect(() => { if (!form.outputName && form.name) set({ outputName: `${form.name}-tuned` }); }, [form.name]);

  // The guide's templates fix the global batch (32, 512 for -1K); self-hosting ones let a job choose it,
  // so that a small dataset (fewer samples than one batch) can still be tuned.
  const batchRange = template && template.global_batch_size_range;
  const chosenBatch = batchRange && Number(form.globalBatch) > 0 ? Number(form.globalBatch) : null;
  const gbs = chosenBatch || (template ? template.global_batch_size : 32);
  const samples = Number(form.samples);
  const epochs = Number(form.epochs);
  const iterations = samples > 0 && epochs > 0 ? Math.ceil(samples / gbs) * epochs : null;

  useEffect(() => {
    setEstimate(null);
    if (!template || !form.tuneType || !(samples > 0) || !(epochs > 0)) return undefined;
    const timer = setTimeout(async () => {
      try {
        setEstimate(await post('/api/v1/tuning-jobs/estimate', { source, tune_type: form.tuneType, sample_count: samples,
          epochs, flavor: form.flavor, node_count: Number(form.nodes) || 1,
          ...(chosenBatch ? { global_batch_size: chosenBatch } : {}) }));
      } catch (e) { setEstimate({ error: e }); }
    }, 300);
    return () => clearTimeout(timer);
  }, [templateId, form.modelId, form.tuneType, form.samples, form.epochs, form.flavor, form.nodes, form.globalBatch]);

  const errors = {
    name: nameError(form.name, { dot: false }),
    source: src.error,
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
      hyperparameters: { epochs, learning_rate: Number(form.lr), checkpoint_count: Number(form.checkpoints),
        ...(chosenBatch ? { global_batch_size: chosenBatch } : {}) },
      resource_pool: form.pool, flavor: form.flavor, node_count: Number(form.nodes) || 1,
      permanent_log: permanentLogBody(form),
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
      <${TaskSection} form=${form} set=${set} nameError=${shown('name', 'name')} err=${err} />
      <${Section} title=${t('Model settings')}>
        <${SourceModelField} form=${form} set=${set} source=${src} error=${shown('source', 'source')} />
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
        <${Field} label=${t('Sample count')} error=${fieldError(err, 'sample_count') || (estimate && estimate.problem) || null}>
          <input class="input narrow" type="number" min="1" name="sample_count" value=${form.samples} onInput=${(e) => set({ samples: e.target.value })} /><//>
        <${Field} label=${t('Epochs')} error=${fieldError(err, 'hyperparameters.epochs')} hint="4~8 (×100) · 2~4 (×1000) · 1~2">
          <input class="input narrow" type="number" min="1" name="epochs" value=${form.epochs} onInput=${(e) => set({ epochs: e.target.value })} /><//>
        ${batchRange ? html`<${Field} label=${t('Global batch size')} error=${fieldError(err, 'hyperparameters.global_batch_size')}
            hint=${`${batchRange[0]} ~ ${batchRange[1]} · ${t('Default')}: ${template.global_batch_size}`}>
          <input class="input narrow" type="number" min=${batchRange[0]} max=${batchRange[1]} name="global_batch_size"
            placeholder=${String(template.global_batch_size)} value=${form.globalBatch} onInput=${(e) => set({ globalBatch: e.target.value })} /><//>` : null}
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
        <${ResourcePoolField} form=${form} set=${set} err=${err} />
        <${Field} label=${t('Flavor')} error=${fieldError(err, 'flavor')}>
          <select class="input" value=${form.flavor} onChange=${(e) => set({ flavor: e.target.value })}>
            ${FLAVORS.map(([id, label]) => html`<option value=${id}>${label}</option>`)}</select><//>
        <${Field} label=${t('Nodes')} error=${fieldError(err, 'node_count')}>
          <input class="input narrow" type="number" min="1" value=${form.nodes} onInput=${(e) => set({ nodes: e.target.value })} /><//>
      <//>
      <${Section} title=${t('More options')}>
        <${PermanentLogField} form=${form} set=${set} err=${err} />
        <${NotificationField} form=${form} set=${set} err=${err} events=${NOTIFY_EVENTS} />
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
      <${FormButtons} back="/console/tuning" busy=${submit.busy} sticky />
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
  const running = isActive(job);
  const { data } = usePoll(() => get(`/api/v1/tuning-jobs/${job.id}/logs`, { search: 'lm loss', limit: 5000 }),
    [job.id], running ? 3000 : 0);
  const { x, y } = useMemo(() => parseLoss(data ? data.items.map((i) => i.line) : []), [data]);
  const p = job.progress || {};
  return html`<div>
    <${KV} items=${[
      [t('Progress'), html`<${JobProgress} kind=${TUNING} job=${job} />`],
      [t('Loss'), p.lm_loss !== null && p.lm_loss !== undefined ? html`<span data-testid="latest-loss">${Number(p.lm_loss).toFixed(4)}</span>` : '-'],
      [t('Throughput (tokens/s/card)'), fmtNumber(p.tokens_per_sec_per_card, 1)],
      [t('ETA'), running ? eta(job) || '-' : '-'],
    ]} />
    ${x.length ? html`<${LineChart} x=${x} series=${[{ label: 'lm loss', values: y }]} xLabel=${t('Iteration')} testid="loss-chart" />`
      : html`<${Empty}>${t('Waiting for the first iteration…')}<//>`}
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

function TuningDetails({ job }) {
  const hp = job.hyperparameters || {};
  const est = job.estimate;
  return html`
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
    ]} />`;
}

export function TuningJobPage({ id }) {
  return html`<${JobPage} kind=${TUNING} id=${id} />`;
}
