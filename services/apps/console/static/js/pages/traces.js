// Recent traces (admins): what this API process recorded, for the embedded default where no
// Tempo/Grafana runs. A trace spans the HTTP request, the Kafka hops and the workers in this process.
import { html, useState } from '../lib.js';
import { get } from '../api.js';
import { t } from '../i18n.js';
import { Empty, ErrorBox, PageHead, Spinner, usePoll } from '../ui.js';

const ms = (value) => (value == null ? '-' : value.toFixed(1));

function Spans({ traceId }) {
  const { data, error } = usePoll(() => get(`/api/v1/traces/${traceId}`), [traceId]);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!data) return html`<${Spinner} />`;
  const start = Math.min(...data.spans.map((s) => s.start_ns || 0));
  return html`<table class="table" data-testid="trace-spans">
    <thead><tr><th>${t('Span')}</th><th>${t('Kind')}</th><th>${t('Service')}</th><th>${t('Offset (ms)')}</th>
      <th>${t('Duration (ms)')}</th><th>${t('Status')}</th></tr></thead>
    <tbody>${data.spans.map((s) => html`<tr>
      <td class="mono">${s.name}</td><td>${s.kind}</td><td>${s.service || '-'}</td>
      <td>${ms((s.start_ns - start) / 1e6)}</td><td>${ms(s.duration_ms)}</td>
      <td class=${s.status === 'ERROR' ? 'danger' : ''}>${s.status}</td></tr>`)}</tbody>
  </table>`;
}

export function TracesPage() {
  const { data, error } = usePoll(() => get('/api/v1/traces/recent?limit=100'), [], 5000);
  const [open, setOpen] = useState(null);
  return html`<div>
    <${PageHead} title=${t('Traces')} />
    <p class="muted small">${t('The latest traces recorded by this process; with docker-compose, Grafana shows every process.')}</p>
    <${ErrorBox} error=${error} />
    ${!data ? (error ? null : html`<${Spinner} />`) : data.items.length === 0 ? html`<${Empty} />` : html`
      <table class="table" data-testid="traces-table">
        <thead><tr><th>${t('Trace')}</th><th>${t('Root span')}</th><th>${t('Spans')}</th><th>${t('Duration (ms)')}</th>
          <th>${t('Services')}</th><th>${t('Status')}</th></tr></thead>
        <tbody>${data.items.map((tr) => html`<tr>
          <td class="mono"><button class="link" onClick=${() => setOpen(open === tr.trace_id ? null : tr.trace_id)}>${tr.trace_id.slice(0, 12)}…</button></td>
          <td class="mono">${tr.root}</td><td>${tr.span_count}</td><td>${ms(tr.duration_ms)}</td>
          <td>${tr.services.join(', ')}</td><td class=${tr.error ? 'danger' : ''}>${tr.error ? 'ERROR' : 'OK'}</td>
        </tr>`)}</tbody>
      </table>`}
    ${open ? html`<h3 class="mono">${open}</h3><${Spans} traceId=${open} />` : null}
  </div>`;
}
