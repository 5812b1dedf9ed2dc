// Model deployment (guide chapters 8, 9, 11, 13): my services and preset services, the deploy form with
// the recommended instance count, service detail (monitoring, events, logs), scale / QPS / upgrade,
// start / stop / delete, the "call" dialog, claiming the free quota.
import { html, useEffect, useMemo, useState } from '../lib.js';
import { del, get, post, put } from '../api.js';
import { t } from '../i18n.js';
import { Link, navigate } from '../router.js';
import { LineChart } from '../chart.js';
import { ResourcePoolField } from '../job-form.js';
import {
  ActionButton, CodeBlock, Confirm, ConfirmDelete, Empty, ErrorBox, Field, KV, Modal, PageHead, Section, Spinner, StatusTag, Switch,
  Tabs, fieldError, fmtNumber, fmtTime, nameError, toast, useAction, usePoll,
} from '../ui.js';

const STARTABLE = ['stopped', 'failed'];
const STOPPABLE = ['deploying', 'running', 'alarm', 'failed'];
const SCALABLE = ['running', 'alarm'];
const UPGRADABLE = ['running', 'alarm', 'stopped', 'failed'];
const SERVICE_EVENTS = ['deploying', 'running', 'alarm', 'stopping', 'stopped', 'failed', 'deleted'];

export function baseUrl(service) { return `${location.origin}${service.api_base}`; }

export function callExamples(service) {
  const url = `${baseUrl(service)}/chat/completions`;
  const model = service.call_model;
  const python = `import requests
import json

if __name__ == '__main__':
    url = "${url}"
    api_key = "<your_api_key>"  # an API key from "API keys"

    headers = {
        'Content-Type': 'application/json',
        'Authorization': f'Bearer {api_key}'
    }
    data = {
        "model": "${model}",
        "max_tokens": 1024,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "hello"}
        ],
        "stream": False,
        # "stream_options": {"include_usage": True},
        "temperature": 1.0
    }
    response = requests.post(url, headers=headers, data=json.dumps(data))
    print(response.json())`;
  const openai = `from openai import OpenAI

client = OpenAI(base_url="${baseUrl(service)}", api_key="<your_api_key>")
reply = client.chat.completions.create(
    model="${model}",
    messages=[{"role": "user", "content": "hello"}],
)
print(reply.choices[0].message.content)`;
  const curl = `curl -X POST "${url}" -H "Content-Type: application/json" -H "Authorization: Bearer <your_api_key>" -d '{"model": "${model}", "max_tokens": 20, "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "hello"}], "stream": false, "temperature": 1.0}'`;
  return { python, openai, curl };
}

// Guide 11: the call page switches content moderation; turning it off needs a confirmation.
function ModerationSwitch({ service }) {
  const [enabled, setEnabled] = useState(service.content_moderation !== false);
  const [asking, setAsking] = useState(false);
  const change = useAction(async (on) => {
    await put(`/api/v1/services/${service.id}/moderation`, { enabled: on, confirm_moderation_off: !on });
    setEnabled(on);
  });
  if (service.preset) return html`<span>${t('On')}</span>`;  // preset services always moderate
  return html`<span><${Switch} checked=${enabled} testid="moderation-switch"
      onChange=${(on) => (on ? change.run(true) : setAsking(true))} />
    <${ErrorBox} error=${change.error} />
    ${asking ? html`<${Confirm} title=${t('Content moderation')} danger
      message=${t('Turn off content moderation? Inputs and outputs will not be checked for non-compliant content.')}
      onClose=${() => setAsking(false)} onConfirm=${() => change.run(false)} />` : null}</span>`;
}

export function CallDialog({ service, onClose }) {
  const [tab, setTab] = useState('curl');
  const examples = callExamples(service);
  return html`<${Modal} title=${`${t('Call')} · ${service.name}`} onClose=${onClose} wide>
    <${KV} items=${[[t('Base URL'), html`<code data-testid="base-url">${baseUrl(service)}</code>`],
      [t('Model name to send'), html`<code>${service.call_model}</code>`],
      [t('Content moderation'), html`<${ModerationSwitch} service=${service} />`]]} />
    <p class="hint">${t('Create an API key under API keys and put it in place of <your_api_key>.')}
      <${Link} href="/console/keys">${t('API keys')} ›<//></p>
    <${Tabs} active=${tab} onChange=${setTab} tabs=${[{ id: 'curl', label: 'curl' }, { id: 'python', label: 'Python (requests)' },
      { id: 'openai', label: 'Python (OpenAI SDK)' }]} />
    <div data-testid="call-example"><${CodeBlock} label=${tab} code=${examples[tab]} /></div>
  <//>`;
}

function ScaleDialog({ service, onClose, onDone }) {
  const [count, setCount] = useState(String(service.instance_count));
  const action = useAction(async () => {
    await put(`/api/v1/services/${service.id}/instance-count`, { instance_count: Number(count) }); onDone(); onClose();
  });
  return html`<${Modal} title=${t('Scale')} onClose=${onClose} footer=${html`<button class="btn" onClick=${onClose}>${t('Cancel')}</button>
      <button class="btn btn-primary" disabled=${action.busy} onClick=${() => action.run()}>${t('OK')}</button>`}>
    <${Field} label=${t('Instances')} hint="1 ~ 16" error=${fieldError(action.error, 'instance_count')}>
      <input class="input narrow" type="number" min="1" max="16" value=${count} onInput=${(e) => setCount(e.target.value)} /><//>
    ${service.recommended_instance_count ? html`<p class="hint">${t('Recommended instances: {n}', { n: service.recommended_instance_count })}</p>` : null}
    ${action.error && !fieldError(action.error, 'instance_count') ? html`<${ErrorBox} error=${action.error} />` : null}
  <//>`;
}

function QpsDialog({ service, onClose, onDone }) {
  const [qps, setQps] = useState(String(service.qps_limit));
  const action = useAction(async () => {
    await put(`/api/v1/services/${service.id}/qps`, { qps_limit: Number(qps) }); onDone(); onClose();
  });
  return html`<${Modal} title=${t('Set QPS')} onClose=${onClose} footer=${html`<button class="btn" onClick=${onClose}>${t('Cancel')}</button>
      <button class="btn btn-primary" disabled=${action.busy} onClick=${() => action.run()}>${t('Submit')}</button>`}>
    <${Field} label=${t('QPS limit')} hint="1 ~ 10000" error=${fieldError(action.error, 'qps_limit')}>
      <input class="input narrow" type="number" min="1" value=${qps} onInput=${(e) => setQps(e.target.value)} /><//>
    ${action.error && !fieldError(action.error, 'qps_limit') ? html`<${ErrorBox} error=${action.error} />` : null}
  <//>`;
}

function UpgradeDialog({ service, onClose, onDone }) {
  const model = usePoll(() => get(`/api/v1/models/${service.model_id}`), [service.model_id]);
  const [version, setVersion] = useState('');
  const versions = model.data ? (model.data.versions || []).filter((v) => v.status === 'created' && v.id !== service.version_id) : [];
  const action = useAction(async () => {
    await post(`/api/v1/services/${service.id}/upgrade`, { version: Number(version) }); onDone(); onClose();
  });
  return html`<${Modal} title=${t('Upgrade')} onClose=${onClose} footer=${html`<button class="btn" onClick=${onClose}>${t('Cancel')}</button>
      <button class="btn btn-primary" disabled=${action.busy || !version} onClick=${() => action.run()}>${t('Submit')}</button>`}>
    <p class="hint">${t('Choose another version of the same model.')}</p>
    <${KV} items=${[[t('Model to deploy'), `${service.model_name} V${service.version_number}`], [t('Instance spec'), service.instance_spec],
      [t('Instances'), service.instance_count], [t('QPS limit'), service.qps_limit]]} />
    <${Field} label=${t('Version')} error=${fieldError(action.error, 'version')}>
      <select class="input" value=${version} onChange=${(e) => setVersion(e.target.value)}>
        <option value="">-</option>${versions.map((v) => html`<option value=${String(v.number)}>${v.name}</option>`)}
      </select><//>
    ${action.error && !fieldError(action.error, 'version') ? html`<${ErrorBox} error=${action.error} />` : null}
  <//>`;
}

function ServiceActions({ service, reload, onDeleted, compact }) {
  const [dialog, setDialog] = useState(null);
  const cls = compact ? 'link' : 'btn';
  const close = () => setDialog(null);
  const running = service.status === 'running' || service.status === 'alarm';
  return html`<span class="actions">
    <button class=${cls} disabled=${!running} onClick=${() => setDialog('call')}>${t('Call')}</button>
    <button class=${cls} disabled=${!running} onClick=${() => navigate(`/console/playground?service=${service.id}`)}>${t('Try it')}</button>
    ${STARTABLE.includes(service.status) ? html`<${ActionButton} action="maas:services:start" class=${cls} onClick=${() => setDialog('start')}>${t('Start')}<//>` : null}
    ${STOPPABLE.includes(service.status) ? html`<${ActionButton} action="maas:services:stop" class=${cls} onClick=${() => setDialog('stop')}>${t('Stop')}<//>` : null}
    <${ActionButton} action="maas:services:scale" class=${cls} disabled=${!SCALABLE.includes(service.status)} onClick=${() => setDialog('scale')}>${t('Scale')}<//>
    <${ActionButton} action="maas:services:updateQps" class=${cls} disabled=${!SCALABLE.includes(service.status)} onClick=${() => setDialog('qps')}>${t('Set QPS')}<//>
    <${ActionButton} action="maas:services:upgrade" class=${cls} disabled=${!UPGRADABLE.includes(service.status)} onClick=${() => setDialog('upgrade')}>${t('Upgrade')}<//>
    <${ActionButton} action="maas:services:delete" class=${cls + ' danger'} onClick=${() => setDialog('delete')}>${t('Delete')}<//>
    ${dialog === 'call' ? html`<${CallDialog} service=${service} onClose=${close} />` : null}
    ${dialog === 'start' ? html`<${Confirm} title=${t('Start')} message=${t('Start the service? A running service is billed.')} onClose=${close}
      onConfirm=${async () => { await post(`/api/v1/services/${service.id}/start`); reload(); }} />` : null}
    ${dialog === 'stop' ? html`<${Confirm} title=${t('Stop')} message=${t('Stop the service?')} onClose=${close}
      onConfirm=${async () => { await post(`/api/v1/services/${service.id}/stop`); reload(); }} />` : null}
    ${dialog === 'scale' ? html`<${ScaleDialog} service=${service} onClose=${close} onDone=${reload} />` : null}
    ${dialog === 'qps' ? html`<${QpsDialog} service=${service} onClose=${close} onDone=${reload} />` : null}
    ${dialog === 'upgrade' ? html`<${UpgradeDialog} service=${service} onClose=${close} onDone=${reload} />` : null}
    ${dialog === 'delete' ? html`<${ConfirmDelete} what=${t('Service')} name=${service.name} onClose=${close}
      onConfirm=${async () => { await del(`/api/v1/services/${service.id}`); toast(`${service.name} ✓`); onDeleted ? onDeleted() : reload(); }} />` : null}
  </span>`;
}

function MyServices() {
  const [name, setName] = useState('');
  const { data, error, reload } = usePoll(() => get('/api/v1/services', { name, limit: 200 }), [name], 3000);
  return html`<div>
    <div class="toolbar">
      <input class="input search" placeholder=${t('Search by name')} value=${name} onInput=${(e) => setName(e.target.value)} />
      <span class="grow"></span>
      <${ActionButton} action="maas:services:create" class="btn btn-primary" data-action="deploy-service"
        onClick=${() => navigate('/console/services/deploy')}>${t('Deploy model service')}<//>
    </div>
    <${ErrorBox} error=${error} />
    ${!data ? html`<${Spinner} />` : data.items.length === 0 ? html`<${Empty} />` : html`
      <table class="table" data-testid="services-table">
        <thead><tr><th>${t('Name')}</th><th>${t('Status')}</th><th>${t('Model to deploy')}</th><th>${t('Instances')}</th>
          <th>QPS</th><th>${t('Created')}</th><th>${t('Operation')}</th></tr></thead>
        <tbody>${data.items.map((s) => html`<tr data-service=${s.name}>
          <td><${Link} href=${`/console/services/${s.id}`}>${s.name}<//></td>
          <td><${StatusTag} status=${s.status} message=${s.message} /></td>
          <td>${s.model_name} V${s.version_number}</td><td>${s.ready_instances}/${s.instance_count}</td><td>${s.qps_limit}</td>
          <td>${fmtTime(s.created_at)}</td><td><${ServiceActions} service=${s} reload=${reload} compact /></td>
        </tr>`)}</tbody>
      </table>`}
  </div>`;
}

// A preset whose service does not exist yet: the platform is still importing its weights (first start).
function PresetStatus({ service: s }) {
  if (s.status === 'importing') {
    const pct = Math.round((s.import_progress || 0) * 100);
    return html`<span class="status status-busy" data-status="importing" title=${t('The platform imports the weights of its preset services on its first start; the service can be claimed and called once it is ready.')}>
      <i></i>${t('Importing {pct}%', { pct })}</span>`;
  }
  if (s.status === 'import_failed') {
    return html`<span class="status status-bad" data-status="import_failed" title=${s.message || ''}>
      <i></i>${t('Import failed')}${s.message ? html`<span class="status-info">ⓘ</span>` : null}</span>`;
  }
  return html`<${StatusTag} status=${s.status} />`;
}

function PresetServices() {
  const { data, error, reload } = usePoll(() => get('/api/v1/preset-services'), [], 5000);
  const [calling, setCalling] = useState(null);
  const claim = useAction(async (s) => { await post(`/api/v1/preset-services/${s.id}/claim`); toast(`${s.name}: ${t('Claimed')}`); reload(); });
  return html`<div>
    <${ErrorBox} error=${error || claim.error} />
    ${!data ? html`<${Spinner} />` : data.items.length === 0 ? html`<${Empty} />` : html`
      <table class="table" data-testid="presets-table">
        <thead><tr><th>${t('Name')}</th><th>${t('Model to deploy')}</th><th>${t('Status')}</th><th>${t('Context length')}</th>
          <th>${t('Free quota')}</th><th>${t('Operation')}</th></tr></thead>
        <tbody>${data.items.map((s) => html`<tr data-service=${s.name}>
          <td>${s.name}</td><td>${s.model_name}</td><td><${PresetStatus} service=${s} /></td><td>${s.max_model_len}</td>
          <td>${s.quota.claimed ? `${fmtNumber(s.quota.remaining)} / ${fmtNumber(s.quota.granted)}` : `${fmtNumber(s.quota.granted)}`}</td>
          <td class="actions">
            <${ActionButton} action="maas:presetServices:claim" class="link" data-action="claim" disabled=${s.quota.claimed || claim.busy || s.available === false} onClick=${() => claim.run(s)}>${s.quota.claimed ? t('Claimed') : t('Claim')}<//>
            <button class="link" disabled=${!s.quota.claimed || s.quota.remaining <= 0 || s.available === false} onClick=${() => navigate(`/console/playground?service=${s.id}`)}>${t('Try it')}</button>
            <button class="link" onClick=${() => setCalling(s)}>${t('Call')}</button>
          </td>
        </tr>`)}</tbody>
      </table>`}
    ${calling ? html`<${CallDialog} service=${{ ...calling, preset: true }} onClose=${() => setCalling(null)} />` : null}
  </div>`;
}

export function ServicesPage() {
  const params = new URLSearchParams(location.search);
  const [tab, setTab] = useState(params.get('tab') === 'preset' ? 'preset' : 'mine');
  const change = (id) => { setTab(id); history.replaceState(null, '', id === 'preset' ? '?tab=preset' : location.pathname); };
  return html`<div>
    <${PageHead} title=${t('Model deployment')} />
    <${Tabs} active=${tab} onChange=${change} tabs=${[{ id: 'mine', label: t('My services') }, { id: 'preset', label: t('Preset services') }]} />
    ${tab === 'mine' ? html`<${MyServices} />` : html`<${PresetServices} />`}
  </div>`;
}

export function DeployPage() {
  const params = new URLSearchParams(location.search);
  const models = usePoll(() => get('/api/v1/models', { status: 'created', limit: 200 }), []);
  const specs = usePoll(() => get('/api/v1/services/instance-specs'), []);
  const templateFilter = params.get('template');
  const [form, setForm] = useState({
    name: '', description: '', modelId: params.get('model') || '', version: '', pool: 'public', spec: '', qps: '1',
    instances: '1', moderation: true, confirmOff: false, notify: false, topic: '', events: ['running', 'failed'],
    autoStop: false, stopHours: '1', customHours: '',
  });
  const set = (patch) => setForm((f) => ({ ...f, ...patch }));
  const [touched, setTouched] = useState(false);
  const [askOff, setAskOff] = useState(false);
  const [recommended, setRecommended] = useState(null);
  const choices = models.data ? models.data.items.filter((m) => !templateFilter || m.template_id === templateFilter) : [];
  const model = choices.find((m) => m.id === form.modelId);
  useEffect(() => { if (specs.data && !form.spec) set({ spec: specs.data.items[0].id }); }, [specs.data]);
  useEffect(() => { if (!form.name && model) set({ name: `${model.name.replace(/\./g, '-')}-svc`.slice(0, 64) }); }, [form.modelId]);
  useEffect(() => {
    setRecommended(null);
    if (!form.modelId || !(Number(form.qps) >= 1)) return undefined;
    const timer = setTimeout(async () => {
      try { setRecommended(await get('/api/v1/services/recommendation', { qps: Number(form.qps), model_id: form.modelId })); }
      catch (e) { setRecommended({ error: e }); }
    }, 250);
    return () => clearTimeout(timer);
  }, [form.modelId, form.qps]);

  const errors = { name: nameError(form.name, { dot: false }), model_id: form.modelId ? null : t('Required') };
  const submit = useAction(async () => {
    setTouched(true);
    if (Object.values(errors).some(Boolean)) return;
    const hours = form.stopHours === 'custom' ? Number(form.customHours) : Number(form.stopHours);
    const service = await post('/api/v1/services', {
      name: form.name, description: form.description, model_id: form.modelId,
      ...(form.version ? { version: Number(form.version) } : {}), resource_pool: form.pool, instance_spec: form.spec,
      qps_limit: Number(form.qps), instance_count: Number(form.instances), content_moderation: form.moderation,
      confirm_moderation_off: !form.moderation && form.confirmOff,
      notification: { enabled: form.notify, ...(form.notify ? { topic_name: form.topic, events: form.events } : {}) },
      auto_stop: { enabled: form.autoStop, ...(form.autoStop ? { hours } : {}) },
    });
    navigate(`/console/services/${service.id}`);
  });
  const err = submit.error;
  const shown = (key, ...api) => (touched && errors[key]) || fieldError(err, ...api);
  return html`<div>
    <${PageHead} title=${t('Deploy model service')} back="/console/services" />
    <form class="form" onSubmit=${(e) => { e.preventDefault(); submit.run(); }} data-testid="deploy-form">
      <${Section} title=${t('Service settings')}>
        <${Field} label=${t('Service name')} required id="name" error=${shown('name', 'name')}
          hint=${t('Name rule: 1-64 characters, starting with a letter or Chinese character; letters, digits, Chinese, "_", "-".')}>
          <input class="input" name="name" value=${form.name} onInput=${(e) => set({ name: e.target.value })} /><//>
        <${Field} label=${t('Description')} hint=${`${form.description.length}/256`} error=${fieldError(err, 'description')}>
          <textarea class="input" rows="2" value=${form.description} onInput=${(e) => set({ description: e.target.value })}></textarea><//>
      <//>
      <${Section} title=${t('Model settings')}>
        <${Field} label=${t('Model to deploy')} required id="model_id" error=${shown('model_id', 'model_id', 'version')}>
          <div class="row">
            <select class="input grow" name="model" value=${form.modelId} onChange=${(e) => set({ modelId: e.target.value, version: '' })}>
              <option value="">${t('Select a base model')}</option>
              ${choices.map((m) => html`<option value=${m.id}>${m.name} (${m.template_name}${m.quantization ? ', ' + m.quantization : ''})</option>`)}
            </select>
            ${model ? html`<select class="input" value=${form.version} onChange=${(e) => set({ version: e.target.value })}>
              <option value="">V${model.latest_version} (latest)</option>
              ${Array.from({ length: model.latest_version }, (_, i) => i + 1).map((n) => html`<option value=${String(n)}>V${n}</option>`)}
            </select>` : null}
          </div><//>
      <//>
      <${Section} title=${t('Resource settings')}>
        <${ResourcePoolField} form=${form} set=${set} err=${err} />
        <${Field} label=${t('Instance spec')} error=${fieldError(err, 'instance_spec')}>
          <select class="input" value=${form.spec} onChange=${(e) => set({ spec: e.target.value })}>
            ${(specs.data ? specs.data.items : []).map((s) => html`<option value=${s.id}>${s.name}</option>`)}</select><//>
        <${Field} label=${t('QPS limit')} error=${fieldError(err, 'qps_limit')} hint="1 ~ 10000">
          <input class="input narrow" type="number" min="1" name="qps_limit" value=${form.qps} onInput=${(e) => set({ qps: e.target.value })} /><//>
        <${Field} label=${t('Instances')} error=${fieldError(err, 'instance_count')}>
          <div class="row"><input class="input narrow" type="number" min="1" max="16" name="instance_count" value=${form.instances} onInput=${(e) => set({ instances: e.target.value })} />
            <span class="hint" data-testid="recommended">${recommended && recommended.recommended_instance_count
              ? html`${t('Recommended instances: {n}', { n: recommended.recommended_instance_count })}
                  <button type="button" class="link" onClick=${() => set({ instances: String(recommended.recommended_instance_count) })}>✓</button>`
              : recommended && recommended.error ? recommended.error.message : ''}</span></div><//>
      <//>
      <${Section} title=${t('More options')}>
        <${Field} label=${t('Content moderation')} error=${fieldError(err, 'confirm_moderation_off', 'content_moderation')}>
          <${Switch} checked=${form.moderation} onChange=${(v) => (v ? set({ moderation: true, confirmOff: false }) : setAskOff(true))} /><//>
        <${Field} label=${t('Event notification')} error=${fieldError(err, 'notification')}>
          <${Switch} checked=${form.notify} onChange=${(v) => set({ notify: v })} />
          ${form.notify ? html`<div><input class="input" placeholder=${t('Topic')} value=${form.topic} onInput=${(e) => set({ topic: e.target.value })} />
            <div class="checks-row">${SERVICE_EVENTS.map((ev) => html`<label><input type="checkbox" checked=${form.events.includes(ev)}
              onChange=${(e) => set({ events: e.target.checked ? [...form.events, ev] : form.events.filter((x) => x !== ev) })} />${t(`status.${ev}`)}</label>`)}</div></div>` : null}<//>
        <${Field} label=${t('Auto stop')} error=${fieldError(err, 'auto_stop')}>
          <${Switch} checked=${form.autoStop} onChange=${(v) => set({ autoStop: v })} />
          ${form.autoStop ? html`<div class="row"><select class="input" value=${form.stopHours} onChange=${(e) => set({ stopHours: e.target.value })}>
            ${['1', '2', '4', '6'].map((h) => html`<option value=${h}>${h} ${t('hours')}</option>`)}<option value="custom">${t('Custom')}</option></select>
            ${form.stopHours === 'custom' ? html`<input class="input narrow" type="number" min="0.1" step="0.1" value=${form.customHours} onInput=${(e) => set({ customHours: e.target.value })} />` : null}</div>` : null}<//>
      <//>
      ${err && !fieldError(err, 'name', 'model_id', 'version', 'qps_limit', 'instance_count', 'instance_spec', 'description') ? html`<${ErrorBox} error=${err} />` : null}
      <div class="form-actions sticky">
        <button type="button" class="btn" onClick=${() => navigate('/console/services')}>${t('Cancel')}</button>
        <button type="submit" class="btn btn-primary" disabled=${submit.busy}>${t('Submit')}</button>
      </div>
    </form>
    ${askOff ? html`<${Modal} title=${t('Content moderation')} onClose=${() => setAskOff(false)} footer=${html`
        <button class="btn" onClick=${() => setAskOff(false)}>${t('Cancel')}</button>
        <button class="btn btn-danger" onClick=${() => { set({ moderation: false, confirmOff: true }); setAskOff(false); }}>${t('I understand, turn it off')}</button>`}>
      <p>${t('Turn off content moderation? Inputs and outputs will not be checked for non-compliant content.')}</p>
    <//>` : null}
  </div>`;
}

function MonitoringPanel({ service }) {
  const [minutes, setMinutes] = useState(60);
  const { data, error } = usePoll(() => get(`/api/v1/services/${service.id}/metrics`, { minutes }), [service.id, minutes], 10000);
  const series = useMemo(() => {
    if (!data) return null;
    const x = data.series.map((p) => new Date(p.minute).getTime() / 1000);
    return {
      x,
      requests: [{ label: t('Requests'), values: data.series.map((p) => p.requests) },
        { label: t('Errors'), values: data.series.map((p) => p.errors) }],
      tokens: [{ label: 'prompt', values: data.series.map((p) => p.prompt_tokens) },
        { label: 'completion', values: data.series.map((p) => p.completion_tokens) }],
      latency: [{ label: t('Avg latency (ms)'), values: data.series.map((p) => p.avg_latency_ms) },
        { label: t('Time to first token (ms)'), values: data.series.map((p) => p.avg_ttft_ms) }],
    };
  }, [data]);
  const totals = data ? data.totals : {};
  return html`<div data-testid="monitoring">
    <div class="toolbar"><select class="input" value=${String(minutes)} onChange=${(e) => setMinutes(Number(e.target.value))}>
      ${[60, 360, 1440, 10080].map((m) => html`<option value=${String(m)}>${t('Last {n} minutes', { n: m })}</option>`)}</select></div>
    <${ErrorBox} error=${error} />
    <div class="stats">
      <div class="stat"><span>${t('Requests')}</span><strong data-testid="metric-requests">${fmtNumber(totals.requests)}</strong></div>
      <div class="stat"><span>${t('Errors')}</span><strong>${fmtNumber(totals.errors)}</strong></div>
      <div class="stat"><span>${t('Tokens')}</span><strong>${fmtNumber((totals.prompt_tokens || 0) + (totals.completion_tokens || 0))}</strong></div>
      <div class="stat"><span>${t('Avg latency (ms)')}</span><strong>${fmtNumber(totals.avg_latency_ms, 1)}</strong></div>
      <div class="stat"><span>${t('Time to first token (ms)')}</span><strong>${fmtNumber(totals.avg_ttft_ms, 1)}</strong></div>
      <div class="stat"><span>${t('Prefix cache hit rate')}</span><strong data-testid="metric-prefix-cache">${totals.prefix_cache_hit_rate == null ? '–' : `${fmtNumber(100 * totals.prefix_cache_hit_rate, 1)}%`}</strong></div>
      <div class="stat"><span>${t('Ready instances')}</span><strong>${service.ready_instances}/${service.instance_count}</strong></div>
    </div>
    ${series && series.x.length ? html`<div class="grid-2">
      <div><h4>${t('Requests')}</h4><${LineChart} x=${series.x} series=${series.requests} time height=${200} testid="chart-requests" /></div>
      <div><h4>${t('Tokens')}</h4><${LineChart} x=${series.x} series=${series.tokens} time height=${200} /></div>
      <div><h4>${t('Avg latency (ms)')}</h4><${LineChart} x=${series.x} series=${series.latency} time height=${200} /></div>
    </div>` : data ? html`<${Empty}>${t('No requests in this period.')}<//>` : null}
  </div>`;
}

function EventsPanel({ service }) {
  const { data, error } = usePoll(() => get(`/api/v1/services/${service.id}/events`, { limit: 200 }), [service.id], 5000);
  return html`<div><${ErrorBox} error=${error} />
    ${data && data.items.length ? html`<table class="table" data-testid="service-events"><thead><tr><th>${t('Time')}</th><th>${t('Type')}</th><th>${t('Message')}</th></tr></thead>
      <tbody>${data.items.map((ev) => html`<tr class=${'level-' + ev.level}><td>${fmtTime(ev.at)}</td><td>${ev.kind}</td><td>${ev.message}</td></tr>`)}</tbody></table>`
      : data ? html`<${Empty} />` : html`<${Spinner} />`}</div>`;
}

function LogsPanel({ service }) {
  const [search, setSearch] = useState('');
  const { data, error } = usePoll(() => get(`/api/v1/services/${service.id}/logs`, { search, limit: 1000 }), [service.id, search], 5000);
  return html`<div>
    <div class="toolbar"><input class="input search" placeholder=${t('Search')} value=${search} onInput=${(e) => setSearch(e.target.value)} /></div>
    <${ErrorBox} error=${error} />
    <pre class="logs" data-testid="service-logs">${data ? data.items.map((l) => `${fmtTime(l.at)} [${l.instance_id.slice(0, 8)}] ${l.line}`).join('\n') : ''}</pre>
  </div>`;
}

export function ServicePage({ id }) {
  const [tab, setTab] = useState('details');
  const { data: s, error, reload } = usePoll(() => get(`/api/v1/services/${id}`), [id], 3000);
  if (error && !s) return html`<${ErrorBox} error=${error} />`;
  if (!s) return html`<${Spinner} />`;
  return html`<div>
    <${PageHead} title=${s.name} back="/console/services">
      <${ServiceActions} service=${s} reload=${reload} onDeleted=${() => navigate('/console/services')} />
    <//>
    <div class="status-line"><span data-testid="service-status"><${StatusTag} status=${s.status} message=${s.message} /></span>
      ${s.message ? html`<span class="muted">${s.message}</span>` : null}${s.operation ? html`<span class="muted"> · ${s.operation}</span>` : null}</div>
    <${Tabs} active=${tab} onChange=${setTab} tabs=${[{ id: 'details', label: t('Details') }, { id: 'monitoring', label: t('Monitoring') },
      { id: 'events', label: t('Events') }, { id: 'logs', label: t('Logs') }]} />
    <div class="card section">
      ${tab === 'details' ? html`<div class="grid-2">
        <${KV} items=${[['ID', html`<code>${s.id}</code>`], [t('Description'), s.description],
          [t('Model to deploy'), html`<${Link} href=${`/console/models/${s.model_id}`}>${s.model_name} V${s.version_number}<//>`],
          [t('Quantization'), s.quantization || t('Non-quantized')], [t('Context length'), s.max_model_len],
          [t('Base URL'), html`<code>${baseUrl(s)}</code>`], [t('Model name to send'), html`<code>${s.call_model}</code>`]]} />
        <${KV} items=${[[t('Resource pool'), s.resource_pool], [t('Instance spec'), s.instance_spec],
          [t('Instances'), `${s.ready_instances}/${s.instance_count}`], [t('QPS limit'), s.qps_limit],
          [t('Recommended instances'), s.recommended_instance_count],
          [t('Content moderation'), s.content_moderation ? t('On') : t('Off')],
          [t('Auto stop'), s.auto_stop && s.auto_stop.enabled ? `${s.auto_stop.hours} ${t('hours')} (${fmtTime(s.stop_at)})` : t('Off')],
          [t('Created'), fmtTime(s.created_at)]]} />
        ${s.instances && s.instances.length ? html`<div class="span-2"><h4>${t('Instance')}</h4><table class="table">
          <thead><tr><th>ID</th><th>${t('Status')}</th><th>${t('Version')}</th><th>${t('Created')}</th><th>${t('Message')}</th></tr></thead>
          <tbody>${s.instances.map((i) => html`<tr><td class="mono small">${i.id}</td><td><${StatusTag} status=${i.status} /></td>
            <td>${i.version_number ? `V${i.version_number}` : html`<span class="mono small">${i.version_id.slice(0, 8)}</span>`}</td><td>${fmtTime(i.started_at)}</td><td>${i.message || ''}</td></tr>`)}</tbody></table></div>` : null}
      </div>` : null}
      ${tab === 'monitoring' ? html`<${MonitoringPanel} service=${s} />` : null}
      ${tab === 'events' ? html`<${EventsPanel} service=${s} />` : null}
      ${tab === 'logs' ? html`<${LogsPanel} service=${s} />` : null}
    </div>
  </div>`;
}
