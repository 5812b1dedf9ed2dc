// API keys (guide chapter 11, "鉴权管理"): at most 5, the secret shown once at creation.
import { html, useState } from '../lib.js';
import { del, get, post } from '../api.js';
import { t } from '../i18n.js';
import {
  ActionButton, ConfirmDelete, CopyButton, Empty, ErrorBox, Field, Modal, PageHead, Spinner, fieldError, fmtNumber, fmtTime,
  toast, useAction, usePoll,
} from '../ui.js';

function CreateKeyDialog({ onClose, onCreated }) {
  const [description, setDescription] = useState('');
  const [created, setCreated] = useState(null);
  const action = useAction(async () => {
    const key = await post('/api/v1/api-keys', { description });
    setCreated(key);
    onCreated();
  });
  if (created) {
    return html`<${Modal} title=${t('Your key')} onClose=${onClose} footer=${html`<button class="btn btn-primary" onClick=${onClose}>${t('Close')}</button>`}>
      <p class="notice">${t('Copy and keep the key now: it is shown only once.')}</p>
      <div class="secret"><code data-testid="new-key">${created.key}</code><${CopyButton} text=${created.key} /></div>
    <//>`;
  }
  return html`<${Modal} title=${t('Create API key')} onClose=${onClose} footer=${html`
      <button class="btn" onClick=${onClose}>${t('Cancel')}</button>
      <button class="btn btn-primary" disabled=${action.busy} onClick=${() => action.run()}>${t('OK')}</button>`}>
    <${Field} label=${t('Description')} hint=${`${description.length}/256`} error=${fieldError(action.error, 'description')}>
      <textarea class="input" rows="2" value=${description} onInput=${(e) => setDescription(e.target.value)}></textarea><//>
    ${action.error && !fieldError(action.error, 'description') ? html`<${ErrorBox} error=${action.error} />` : null}
  <//>`;
}

export function KeysPage() {
  const { data, error, reload } = usePoll(() => get('/api/v1/api-keys'), []);
  const [creating, setCreating] = useState(false);
  const [deleting, setDeleting] = useState(null);
  const max = data ? data.max_keys : 5;
  return html`<div>
    <${PageHead} title=${t('API keys')}>
      <${ActionButton} action="maas:apiKeys:create" class="btn btn-primary" disabled=${data && data.items.length >= max}
        onClick=${() => setCreating(true)}>${t('Create API key')}<//>
    <//>
    <p class="muted small">${t('At most {n} keys.', { n: max })}</p>
    <${ErrorBox} error=${error} />
    ${!data ? html`<${Spinner} />` : data.items.length === 0 ? html`<${Empty} />` : html`
      <table class="table" data-testid="keys-table">
        <thead><tr><th>${t('Key')}</th><th>${t('Description')}</th><th>${t('Usage (tokens)')}</th><th>${t('Created')}</th>
          <th>${t('Last used')}</th><th>${t('Operation')}</th></tr></thead>
        <tbody>${data.items.map((k) => html`<tr>
          <td class="mono">${k.masked_key}</td><td>${k.description || '-'}</td>
          <td>${fmtNumber(k.usage ? k.usage.total_tokens : 0)} (${fmtNumber(k.usage ? k.usage.requests : 0)} req)</td>
          <td>${fmtTime(k.created_at)}</td><td>${fmtTime(k.last_used_at)}</td>
          <td><${ActionButton} action="maas:apiKeys:delete" class="link danger" onClick=${() => setDeleting(k)}>${t('Delete')}<//></td>
        </tr>`)}</tbody>
      </table>`}
    ${creating ? html`<${CreateKeyDialog} onClose=${() => setCreating(false)} onCreated=${reload} />` : null}
    ${deleting ? html`<${ConfirmDelete} what=${t('Key')} name=${deleting.masked_key} onClose=${() => setDeleting(null)}
      onConfirm=${async () => { await del(`/api/v1/api-keys/${deleting.id}`); toast('✓'); reload(); }} />` : null}
  </div>`;
}
