// The audit log (guide chapter 2): who changed what, when, from where, with what result; filters and CSV.
import { html, useState } from '../lib.js';
import { auth, get } from '../api.js';
import { t } from '../i18n.js';
import { ActionButton, Empty, ErrorBox, PageHead, Spinner, fmtTime, toast, usePoll } from '../ui.js';

const PAGE = 50;

// datetime-local gives local time without a zone; the API wants ISO 8601 (UTC without a zone).
const iso = (local) => (local ? new Date(local).toISOString() : '');

function filterQuery(filters) {
  return { user: filters.user.trim(), action: filters.action.trim(), resource: filters.resource.trim(),
    since: iso(filters.since), until: iso(filters.until) };
}

// The export needs the bearer token, which a plain link cannot send: fetch it and save the blob.
async function exportCsv(filters) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(filterQuery(filters))) if (v) params.set(k, v);
  const response = await fetch(`/api/v1/audit/export?${params}`, { headers: { Authorization: `Bearer ${auth.token}` } });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    toast((body.error && body.error.message) || `HTTP ${response.status}`, 'bad');
    return;
  }
  const a = document.createElement('a');
  a.href = URL.createObjectURL(await response.blob());
  a.download = (/filename="([^"]+)"/.exec(response.headers.get('content-disposition') || '') || [])[1] || 'audit.csv';
  a.click();
  URL.revokeObjectURL(a.href);
}

const EMPTY = { user: '', action: '', resource: '', since: '', until: '' };

export function AuditPage() {
  const [draft, setDraft] = useState(EMPTY);
  const [filters, setFilters] = useState(EMPTY);
  const [offset, setOffset] = useState(0);
  const { data, error, loading, reload } = usePoll(
    () => get('/api/v1/audit', { ...filterQuery(filters), offset, limit: PAGE }), [filters, offset]);
  const set = (key) => (e) => setDraft({ ...draft, [key]: e.target.value });
  const apply = (e) => { e.preventDefault(); setOffset(0); setFilters(draft); };
  return html`<div>
    <${PageHead} title=${t('Audit log')}>
      <${ActionButton} action="maas:audit:export" class="btn" data-testid="audit-export"
        onClick=${() => exportCsv(filters)}>${t('Export CSV')}<//>
    <//>
    <form class="toolbar wrap" data-testid="audit-filters" onSubmit=${apply}>
      <input class="input" name="user" placeholder=${t('User (name or ID)')} value=${draft.user} onInput=${set('user')} />
      <input class="input" name="action" placeholder=${t('Action, e.g. maas:models:*')} value=${draft.action} onInput=${set('action')} />
      <input class="input" name="resource" placeholder=${t('Resource path')} value=${draft.resource} onInput=${set('resource')} />
      <label class="small">${t('From')} <input class="input" type="datetime-local" name="since" value=${draft.since} onInput=${set('since')} /></label>
      <label class="small">${t('To')} <input class="input" type="datetime-local" name="until" value=${draft.until} onInput=${set('until')} /></label>
      <button class="btn btn-primary" type="submit">${t('Search')}</button>
      <button class="btn" type="button" onClick=${reload}>${t('Refresh')}</button>
    </form>
    <p class="muted small">${t('Records are kept 180 days by default.')}</p>
    <${ErrorBox} error=${error} />
    ${!data ? html`<${Spinner} />` : data.items.length === 0 ? html`<${Empty} />` : html`
      <table class="table" data-testid="audit-table">
        <thead><tr><th>${t('Time')}</th><th>${t('User')}</th><th>${t('Action')}</th><th>${t('Resource')}</th>
          <th>${t('Result')}</th><th>${t('Client address')}</th></tr></thead>
        <tbody>${data.items.map((r) => html`<tr data-action=${r.action}>
          <td>${fmtTime(r.at)}</td><td>${r.username || r.user_id || '-'}</td><td><code>${r.action || '-'}</code></td>
          <td class="mono small">${r.method ? r.method + ' ' : ''}${r.resource || '-'}</td>
          <td><span class=${r.status >= 400 ? 'danger' : 'ok'}>${r.status}</span></td><td class="mono small">${r.client || '-'}</td>
        </tr>`)}</tbody>
      </table>
      <div class="pager">
        <button class="btn btn-small" disabled=${offset === 0 || loading} onClick=${() => setOffset(Math.max(0, offset - PAGE))}>‹</button>
        <span class="small">${t('{from}-{to} of {total}', { from: offset + 1, to: offset + data.items.length, total: data.total })}</span>
        <button class="btn btn-small" disabled=${offset + PAGE >= data.total || loading} onClick=${() => setOffset(offset + PAGE)}>›</button>
      </div>`}
  </div>`;
}
