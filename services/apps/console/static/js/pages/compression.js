// Model compression (guide chapter 7): the shared job pages (jobs.js) with compression's columns, its create
// form (strategy, migration strength, estimate) and its detail: size / perplexity before and after.
import { html, useEffect, useState } from '../lib.js';
import { get, post } from '../api.js';
import { t } from '../i18n.js';
import { Link, navigate } from '../router.js';
import { JobListPage, JobPage } from '../jobs.js';
import {
  FormButtons, NotificationField, PermanentLogField, ResourcePoolField, SourceModelField, TaskSection, jobFormDefaults,
  permanentLogBody, useJobSource,
} from '../job-form.js';
import {
  ErrorBox, Field, KV, OutputModel, PageHead, ProgressBar, Section, fieldError, fmtBytes, fmtNumber, fmtTime, nameError,
  useAction, usePoll,
} from '../ui.js';

const STRATEGIES = ['smoothquant-w8a8', 'awq-w4a16'];
const NOTIFY_EVENTS = ['pending', 'running', 'stopped', 'completed', 'failed'];

function minutes(est) {
  if (!est) return '-';
  return est.text || `${est.min_minutes} – ${est.max_minutes} min`;
}

const fraction = (job) => (job.progress || {}).fraction || 0;

// What the shared job pages need to know about compression jobs. Stop and continue as for tuning, but
// compression keeps no checkpoints: a continued job runs again from the start.
const COMPRESSION = {
  path: 'compression-jobs', resource: 'compressionJobs', route: '/console/compression', name: 'compression',
  statuses: ['pending', 'running', 'stopped', 'completed', 'failed'],
  text: () => ({
    title: t('Model compression'), create: t('Create compression job'), logSearch: t('Search'),
    stop: t('Stop the job?'), continue: t('Run the job again from the start?'),
  }),
  columns: () => [
    { label: t('Source model'), cell: (job) => job.source.model_name || job.source.template_id || job.template_id },
    { label: t('Compression strategy'), cell: (job) => t(job.strategy) },
  ],
  progress: (job) => ({ value: fraction(job), total: 1 }),
  details: (job) => html`<${CompressionDetails} job=${job} />`,
  tabs: ['details', 'logs', 'events'],
};

export function CompressionPage() {
  return html`<${JobListPage} kind=${COMPRESSION} />`;
}

export function CompressionCreatePage() {
  const params = new URLSearchParams(location.search);
  const options = usePoll(() => get('/api/v1/compression-strategies'), []);
  const [form, setForm] = useState({
    ...jobFormDefaults(params), strategy: 'smoothquant-w8a8', alpha: '0.5', calibration: '', spec: '', instances: '1',
  });
  const set = (patch) => setForm((f) => ({ ...f, ...patch }));
  const [touched, setTouched] = useState(false);
  const [estimate, setEstimate] = useState(null);
  const src = useJobSource('compress', form);
  const { templateId, template, source } = src;
  const allowed = template ? template.tasks.compress : STRATEGIES;
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
    source: src.error,
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
      permanent_log: permanentLogBody(form),
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
      <${TaskSection} form=${form} set=${set} nameError=${shown('name', 'name')} err=${err} />
      <${Section} title=${t('Model settings')}>
        <${SourceModelField} form=${form} set=${set} source=${src} error=${shown('source', 'source')} />
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
        <${ResourcePoolField} form=${form} set=${set} err=${err} />
        <${Field} label=${t('Instance spec')} error=${fieldError(err, 'instance_spec')}>
          <select class="input" value=${form.spec} onChange=${(e) => set({ spec: e.target.value })}>
            ${specs.map((s) => html`<option value=${s.id}>${s.name}</option>`)}</select><//>
      <//>
      <${Section} title=${t('More options')}>
        <${PermanentLogField} form=${form} set=${set} err=${err} />
        <${NotificationField} form=${form} set=${set} err=${err} events=${NOTIFY_EVENTS} />
      <//>
      ${err && !fieldError(err, 'name', 'source', 'output_model_name', 'alpha', 'strategy', 'instance_spec', 'output_path', 'calibration_dataset', 'resource_pool') ? html`<${ErrorBox} error=${err} />` : null}
      <${FormButtons} back="/console/compression" busy=${submit.busy} />
    </form>
  </div>`;
}

function CompressionDetails({ job }) {
  const m = job.metrics;
  const progress = job.progress || {};
  return html`
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
      [t('Progress'), html`<${ProgressBar} value=${fraction(job)} total=${1} label=${`${Math.round(fraction(job) * 100)}% ${progress.step || ''}`} />`],
      [t('Size before'), m ? fmtBytes(m.size_before_bytes) : '-'],
      [t('Size after'), m ? html`<span data-testid="size-after">${fmtBytes(m.size_after_bytes)} (×${m.size_ratio})</span>` : '-'],
      [t('Perplexity before'), m ? fmtNumber(m.perplexity_before, 2) : '-'],
      [t('Perplexity after'), m ? html`<span data-testid="ppl-after">${fmtNumber(m.perplexity_after, 2)} (×${m.perplexity_ratio})</span>` : '-'],
      [t('Duration'), m ? `${fmtNumber(m.duration_seconds, 1)} s` : '-'],
      [t('Instance spec'), job.resources && job.resources.instance_spec],
    ]} />`;
}

export function CompressionJobPage({ id }) {
  return html`<${JobPage} kind=${COMPRESSION} id=${id} />`;
}
