// The event timeline of a model, tuning job, compression job or service (kept 30 days, notifier API).
import { html } from './lib.js';
import { get } from './api.js';
import { getLang, t } from './i18n.js';
import { Empty, ErrorBox, Spinner, fmtTime, usePoll } from './ui.js';

export function TimelinePanel({ resource, id, interval = 5000 }) {
  const { data, error } = usePoll(() => get(`/api/v1/${resource}/${id}/timeline`, { order: 'desc', limit: 200 }),
    [resource, id], interval);
  if (error && !data) return html`<${ErrorBox} error=${error} />`;
  if (!data) return html`<${Spinner} />`;
  if (!data.items.length) return html`<${Empty} />`;
  return html`<table class="table" data-testid="timeline">
    <thead><tr><th>${t('Time')}</th><th>${t('Type')}</th><th>${t('Status')}</th><th>${t('Message')}</th></tr></thead>
    <tbody>${data.items.map((e) => html`<tr><td>${fmtTime(e.occurred_at)}</td><td class="mono small">${e.type}</td>
      <td>${getLang() === 'zh' && e.kind_label ? e.kind_label : e.kind || '-'}</td><td>${e.message || ''}</td></tr>`)}</tbody>
  </table>`;
}
