// Notification subscriptions: topics, webhook subscriptions (confirmed before they receive anything),
// rules (which events of which jobs), and the delivery log with retries.
import { html, useState } from '../lib.js';
import { del, get, post } from '../api.js';
import { t } from '../i18n.js';
import {
  ConfirmDelete, CopyButton, Empty, ErrorBox, Field, Modal, PageHead, Spinner, StatusTag, Tabs, fieldError, fmtTime,
  nameError, toast, useAction, usePoll,
} from '../ui.js';

function CreateTopicDialog({ onClose, onDone }) {
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const action = useAction(async () => {
    const problem = nameError(name);
    if (problem) throw Object.assign(new Error(problem), { field: 'name' });
    await post('/api/v1/notification-topics', { name, description }); onDone(); onClose();
  });
  return html`<${Modal} title=${t('Create topic')} onClose=${onClose} footer=${html`<button class="btn" onClick=${onClose}>${t('Cancel')}</button>
      <button class="btn btn-primary" disabled=${action.busy} onClick=${() => action.run()}>${t('OK')}</button>`}>
    <div class="form">
      <${Field} label=${t('Name')} required error=${fieldError(action.error, 'name')}><input class="input" value=${name} onInput=${(e) => setName(e.target.value)} /><//>
      <${Field} label=${t('Description')}><textarea class="input" rows="2" value=${description} onInput=${(e) => setDescription(e.target.value)}></textarea><//>
      ${action.error && !fieldError(action.error, 'name') ? html`<${ErrorBox} error=${action.error} />` : null}
    </div>
  <//>`;
}

function AddSubscriptionDialog({ topics, onClose, onDone }) {
  const [topic, setTopic] = useState(topics[0] ? topics[0].name : '');
  const [endpoint, setEndpoint] = useState('');
  const [description, setDescription] = useState('');
  const [format, setFormat] = useState('standard-webhooks');
  const [created, setCreated] = useState(null);
  const action = useAction(async () => {
    setCreated(await post(`/api/v1/notification-topics/${encodeURIComponent(topic)}/subscriptions`,
      { protocol: 'webhook', endpoint, description, format }));
    onDone();
  });
  if (created) {
    return html`<${Modal} title=${t('Add subscription')} onClose=${onClose} footer=${html`<button class="btn btn-primary" onClick=${onClose}>${t('Close')}</button>`}>
      <p>${t('Subscriptions receive a confirmation request first; they get notifications once confirmed.')}</p>
      ${created.secret ? html`<${Field} label=${t('Signing secret (shown once)')}><div class="secret"><code>${created.secret}</code><${CopyButton} text=${created.secret} /></div><//>` : null}
    <//>`;
  }
  return html`<${Modal} title=${t('Add subscription')} onClose=${onClose} footer=${html`<button class="btn" onClick=${onClose}>${t('Cancel')}</button>
      <button class="btn btn-primary" disabled=${action.busy || !topic} onClick=${() => action.run()}>${t('OK')}</button>`}>
    <div class="form">
      <${Field} label=${t('Topic')} required><select class="input" value=${topic} onChange=${(e) => setTopic(e.target.value)}>
        ${topics.map((x) => html`<option value=${x.name}>${x.name}</option>`)}</select><//>
      <${Field} label=${t('Protocol')}><span>webhook (HTTP POST, Standard Webhooks)</span><//>
      <${Field} label=${t('Endpoint')} required error=${fieldError(action.error, 'endpoint')}>
        <input class="input" placeholder="https://example.com/hooks/maas" value=${endpoint} onInput=${(e) => setEndpoint(e.target.value)} /><//>
      <${Field} label=${t('Format')} error=${fieldError(action.error, 'format')}><select class="input" value=${format} onChange=${(e) => setFormat(e.target.value)}>
        <option value="standard-webhooks">Standard Webhooks</option><option value="cloudevents">CloudEvents (structured, signed)</option></select><//>
      <${Field} label=${t('Description')}><input class="input" value=${description} onInput=${(e) => setDescription(e.target.value)} /><//>
      ${action.error && !fieldError(action.error, 'endpoint') && !fieldError(action.error, 'format') ? html`<${ErrorBox} error=${action.error} />` : null}
    </div>
  <//>`;
}

function TopicsTab() {
  const { data, error, reload } = usePoll(() => get('/api/v1/notification-topics'), []);
  const [creating, setCreating] = useState(false);
  const [deleting, setDeleting] = useState(null);
  return html`<div>
    <div class="toolbar"><span class="grow"></span><button class="btn btn-primary" onClick=${() => setCreating(true)}>${t('Create topic')}</button></div>
    <${ErrorBox} error=${error} />
    ${!data ? html`<${Spinner} />` : data.items.length === 0 ? html`<${Empty} />` : html`<table class="table">
      <thead><tr><th>${t('Name')}</th><th>${t('Description')}</th><th>${t('Subscriptions')}</th><th>${t('Created')}</th><th>${t('Operation')}</th></tr></thead>
      <tbody>${data.items.map((x) => html`<tr><td>${x.name}</td><td>${x.description || '-'}</td><td>${x.subscription_count}</td>
        <td>${fmtTime(x.created_at)}</td><td><button class="link danger" onClick=${() => setDeleting(x)}>${t('Delete')}</button></td></tr>`)}</tbody></table>`}
    ${creating ? html`<${CreateTopicDialog} onClose=${() => setCreating(false)} onDone=${reload} />` : null}
    ${deleting ? html`<${ConfirmDelete} what=${t('Topic')} name=${deleting.name} onClose=${() => setDeleting(null)}
      onConfirm=${async () => { await del(`/api/v1/notification-topics/${deleting.id}`); toast('✓'); reload(); }} />` : null}
  </div>`;
}

function SubscriptionsTab() {
  const topics = usePoll(() => get('/api/v1/notification-topics'), []);
  const { data, error, reload } = usePoll(() => get('/api/v1/notification-subscriptions'), [], 5000);
  const [adding, setAdding] = useState(false);
  const [deleting, setDeleting] = useState(null);
  const resend = useAction(async (s) => { await post(`/api/v1/notification-subscriptions/${s.id}/resend-confirmation`); toast('✓'); reload(); });
  return html`<div>
    <p class="muted small">${t('Subscriptions receive a confirmation request first; they get notifications once confirmed.')}</p>
    <div class="toolbar"><span class="grow"></span><button class="btn btn-primary" disabled=${!topics.data || topics.data.items.length === 0}
      onClick=${() => setAdding(true)}>${t('Add subscription')}</button></div>
    <${ErrorBox} error=${error || resend.error} />
    ${!data ? html`<${Spinner} />` : data.items.length === 0 ? html`<${Empty} />` : html`<table class="table">
      <thead><tr><th>${t('Topic')}</th><th>${t('Protocol')}</th><th>${t('Endpoint')}</th><th>${t('Status')}</th><th>${t('Created')}</th><th>${t('Operation')}</th></tr></thead>
      <tbody>${data.items.map((s) => html`<tr><td>${s.topic_name}</td><td>${s.protocol}${s.format === 'cloudevents' ? ' · CloudEvents' : ''}</td><td class="mono small">${s.endpoint}</td>
        <td><${StatusTag} status=${s.status} /></td><td>${fmtTime(s.created_at)}</td>
        <td class="actions">${s.status === 'unconfirmed' ? html`<button class="link" onClick=${() => resend.run(s)}>${t('Resend confirmation')}</button>` : null}
          <button class="link danger" onClick=${() => setDeleting(s)}>${t('Delete')}</button></td></tr>`)}</tbody></table>`}
    ${adding ? html`<${AddSubscriptionDialog} topics=${topics.data.items} onClose=${() => setAdding(false)} onDone=${reload} />` : null}
    ${deleting ? html`<${ConfirmDelete} what=${t('Subscriptions')} name=${deleting.endpoint} onClose=${() => setDeleting(null)}
      onConfirm=${async () => { await del(`/api/v1/notification-subscriptions/${deleting.id}`); toast('✓'); reload(); }} />` : null}
  </div>`;
}

function AddRuleDialog({ topics, onClose, onDone }) {
  const kinds = usePoll(() => get('/api/v1/notification-event-kinds'), []);
  const [topic, setTopic] = useState(topics[0] ? topics[0].name : '');
  const [subject, setSubject] = useState('*');
  const [events, setEvents] = useState(['completed', 'failed']);
  const action = useAction(async () => {
    await post('/api/v1/notification-rules', { topic_name: topic, subject, events }); onDone(); onClose();
  });
  return html`<${Modal} title=${t('Add rule')} onClose=${onClose} footer=${html`<button class="btn" onClick=${onClose}>${t('Cancel')}</button>
      <button class="btn btn-primary" disabled=${action.busy || !topic || !events.length} onClick=${() => action.run()}>${t('OK')}</button>`}>
    <div class="form">
      <${Field} label=${t('Topic')} required><select class="input" value=${topic} onChange=${(e) => setTopic(e.target.value)}>
        ${topics.map((x) => html`<option value=${x.name}>${x.name}</option>`)}</select><//>
      <${Field} label=${t('Subject')} required hint=${t("'*' (everything), 'tuning-jobs/*' (every tuning job) or 'tuning-jobs/<id>'")}
        error=${fieldError(action.error, 'subject')}>
        <input class="input" value=${subject} onInput=${(e) => setSubject(e.target.value)} /><//>
      <${Field} label=${t('Events')} required error=${fieldError(action.error, 'events')}>
        <div class="checks-row">${(kinds.data ? kinds.data.items : []).map((k) => html`<label><input type="checkbox" checked=${events.includes(k.kind)}
          onChange=${(e) => setEvents(e.target.checked ? [...events, k.kind] : events.filter((x) => x !== k.kind))} />${t(`status.${k.kind}`)}</label>`)}</div><//>
      ${action.error && !fieldError(action.error, 'subject', 'events') ? html`<${ErrorBox} error=${action.error} />` : null}
    </div>
  <//>`;
}

function RulesTab() {
  const topics = usePoll(() => get('/api/v1/notification-topics'), []);
  const { data, error, reload } = usePoll(() => get('/api/v1/notification-rules'), []);
  const [adding, setAdding] = useState(false);
  const remove = useAction(async (r) => { await del(`/api/v1/notification-rules/${r.id}`); reload(); });
  return html`<div>
    <div class="toolbar"><span class="grow"></span><button class="btn btn-primary" disabled=${!topics.data || topics.data.items.length === 0}
      onClick=${() => setAdding(true)}>${t('Add rule')}</button></div>
    <${ErrorBox} error=${error || remove.error} />
    ${!data ? html`<${Spinner} />` : data.items.length === 0 ? html`<${Empty} />` : html`<table class="table">
      <thead><tr><th>${t('Topic')}</th><th>${t('Subject')}</th><th>${t('Events')}</th><th>${t('Source')}</th><th>${t('Created')}</th><th>${t('Operation')}</th></tr></thead>
      <tbody>${data.items.map((r) => html`<tr><td>${r.topic_name}</td><td class="mono small">${r.subject}</td>
        <td>${r.events.map((k) => t(`status.${k}`)).join(', ')}</td><td>${r.source}</td><td>${fmtTime(r.created_at)}</td>
        <td><button class="link danger" onClick=${() => remove.run(r)}>${t('Delete')}</button></td></tr>`)}</tbody></table>`}
    ${adding ? html`<${AddRuleDialog} topics=${topics.data.items} onClose=${() => setAdding(false)} onDone=${reload} />` : null}
  </div>`;
}

function DeliveriesTab() {
  const { data, error, reload } = usePoll(() => get('/api/v1/notification-deliveries', { limit: 100 }), [], 5000);
  const retry = useAction(async (d) => { await post(`/api/v1/notification-deliveries/${d.id}/retry`); reload(); });
  return html`<div><${ErrorBox} error=${error || retry.error} />
    ${!data ? html`<${Spinner} />` : data.items.length === 0 ? html`<${Empty} />` : html`<table class="table">
      <thead><tr><th>${t('Time')}</th><th>${t('Topic')}</th><th>${t('Type')}</th><th>${t('Subject')}</th><th>${t('Status')}</th>
        <th>${t('Attempts')}</th><th>${t('Message')}</th><th></th></tr></thead>
      <tbody>${data.items.map((d) => html`<tr><td>${fmtTime(d.created_at)}</td><td>${d.topic_name}</td><td>${d.event_type || d.kind}</td>
        <td class="mono small">${d.subject || '-'}</td><td><${StatusTag} status=${d.status} /></td><td>${d.attempts}</td>
        <td class="small">${d.last_error || (d.last_status_code ? `HTTP ${d.last_status_code}` : '')}</td>
        <td>${d.status === 'dead' ? html`<button class="link" onClick=${() => retry.run(d)}>${t('Retry')}</button>` : null}</td></tr>`)}</tbody></table>`}
  </div>`;
}

export function NotificationsPage() {
  const [tab, setTab] = useState('topics');
  return html`<div>
    <${PageHead} title=${t('Notifications')} />
    <${Tabs} active=${tab} onChange=${setTab} tabs=${[{ id: 'topics', label: t('Topics') }, { id: 'subscriptions', label: t('Subscriptions') },
      { id: 'rules', label: t('Rules') }, { id: 'deliveries', label: t('Deliveries') }]} />
    ${tab === 'topics' ? html`<${TopicsTab} />` : tab === 'subscriptions' ? html`<${SubscriptionsTab} />`
      : tab === 'rules' ? html`<${RulesTab} />` : html`<${DeliveriesTab} />`}
  </div>`;
}
