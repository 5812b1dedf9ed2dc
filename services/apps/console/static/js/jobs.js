// The job pages every job kind shares (tuning, compression): the list with name / status filters, paging,
// status tags and progress; the detail page with its status history, placement and queue position, logs
// (search, download) and events;
// stop / continue / delete, greyed without the permission. A kind supplies only what differs (see JobKind).
import { html, useState } from './lib.js';
import { auth, del, get, post } from './api.js';
import { t } from './i18n.js';
import { Link, navigate } from './router.js';
import { TimelinePanel } from './timeline.js';
import {
  ActionButton, Confirm, ConfirmDelete, Empty, ErrorBox, KV, PageHead, ProgressBar, Spinner, StatusTag, Tabs, fmtNumber,
  fmtTime, toast, usePoll,
} from './ui.js';

/**
 * What a job kind tells the shared pages (every text is a function: it follows the language switch).
 * @typedef {object} JobKind
 * @property {string} path          REST collection: /api/v1/<path>
 * @property {string} resource      IAM resource: maas:<resource>:stop / :continue / :delete / :create
 * @property {string} route         console pages: <route>, <route>/create, <route>/<id>
 * @property {string} name          short name, for test ids and data-action ("tuning" -> tuning-table)
 * @property {string[]} statuses    the status filter's choices
 * @property {() => object} text    {title, create, stop, continue, logSearch}
 * @property {() => Array<{label: string, cell: (job) => any}>} columns  between Status and Progress
 * @property {(job) => {value: number, total: number, label?: string}} progress
 * @property {(job) => any} details the details tab (the status history follows it)
 * @property {Array<string|{id, label: () => string, render: (job, reload) => any}>} tabs
 *           the detail page's tabs in order: 'details', 'logs', 'events' or a tab of the kind's own
 */

// Which statuses stop / continue apply to (same rule for every kind, whatever its status names):
// anything not yet at an end may be stopped; only a stopped job continues.
const STOPPABLE = ['creating', 'waiting', 'queuing', 'pending', 'running'];
const ACTIVE = [...STOPPABLE, 'stopping'];
const PAGE = 20;

export const isActive = (job) => ACTIVE.includes(job.status);

async function downloadLog(kind, job) {
  const response = await fetch(`/api/v1/${kind.path}/${job.id}/logs/download`,
    { headers: { Authorization: `Bearer ${auth.token}` } });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(await response.blob());
  a.download = `${job.name}-${job.id.slice(0, 8)}.log`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  URL.revokeObjectURL(a.href);
}

export function JobActions({ kind, job, reload, onDeleted, compact }) {
  const [dialog, setDialog] = useState(null);
  const cls = compact ? 'link' : 'btn';
  const text = kind.text();
  const act = (verb) => async () => { await post(`/api/v1/${kind.path}/${job.id}/${verb}`); reload(); };
  return html`<span class="actions">
    ${STOPPABLE.includes(job.status) ? html`<${ActionButton} action=${`maas:${kind.resource}:stop`} class=${cls}
      data-action="stop" onClick=${() => setDialog('stop')}>${t('Stop')}<//>` : null}
    ${job.status === 'stopped' ? html`<${ActionButton} action=${`maas:${kind.resource}:continue`} class=${cls}
      data-action="continue" onClick=${() => setDialog('continue')}>${t('Continue')}<//>` : null}
    <${ActionButton} action=${`maas:${kind.resource}:delete`} class=${cls + ' danger'} data-action="delete"
      onClick=${() => setDialog('delete')}>${t('Delete')}<//>
    ${dialog === 'stop' ? html`<${Confirm} title=${t('Stop')} message=${text.stop}
      onClose=${() => setDialog(null)} onConfirm=${act('stop')} />` : null}
    ${dialog === 'continue' ? html`<${Confirm} title=${t('Continue')} message=${text.continue}
      onClose=${() => setDialog(null)} onConfirm=${act('continue')} />` : null}
    ${dialog === 'delete' ? html`<${ConfirmDelete} what=${t('job')} name=${job.name} onClose=${() => setDialog(null)}
      onConfirm=${async () => { await del(`/api/v1/${kind.path}/${job.id}`); toast(`${job.name} ✓`); onDeleted ? onDeleted() : reload(); }} />` : null}
  </span>`;
}

export function JobProgress({ kind, job }) {
  const { value, total, label } = kind.progress(job);
  return html`<div class="job-progress"><${ProgressBar} value=${value} total=${total} label=${label} /></div>`;
}

function Pager({ offset, shown, total, busy, onChange }) {
  if (total <= PAGE && offset === 0) return null;
  return html`<div class="pager" data-testid="pager">
    <button class="btn btn-small" disabled=${offset === 0 || busy} onClick=${() => onChange(Math.max(0, offset - PAGE))}>‹</button>
    <span class="small">${t('{from}-{to} of {total}', { from: offset + 1, to: offset + shown, total })}</span>
    <button class="btn btn-small" disabled=${offset + PAGE >= total || busy} onClick=${() => onChange(offset + PAGE)}>›</button>
  </div>`;
}

export function JobListPage({ kind }) {
  const [name, setName] = useState('');
  const [status, setStatus] = useState('');
  const [offset, setOffset] = useState(0);
  const { data, error, loading, reload } = usePoll(
    () => get(`/api/v1/${kind.path}`, { name, status, offset, limit: PAGE }), [name, status, offset], 3000);
  const text = kind.text();
  const columns = kind.columns();
  // A new filter starts again at the first page.
  const filter = (setter) => (e) => { setOffset(0); setter(e.target.value); };
  return html`<div>
    <${PageHead} title=${text.title}>
      <${ActionButton} action=${`maas:${kind.resource}:create`} class="btn btn-primary" data-action=${`create-${kind.name}-job`}
        onClick=${() => navigate(`${kind.route}/create`)}>${text.create}<//>
    <//>
    <div class="toolbar">
      <input class="input search" placeholder=${t('Search by name')} value=${name} onInput=${filter(setName)} />
      <select class="input" value=${status} onChange=${filter(setStatus)} aria-label="status">
        <option value="">${t('All statuses')}</option>
        ${kind.statuses.map((s) => html`<option value=${s}>${t(`status.${s}`)}</option>`)}
      </select>
    </div>
    <${ErrorBox} error=${error} />
    ${!data ? html`<${Spinner} />` : data.items.length === 0 ? html`<${Empty} />` : html`
      <table class="table" data-testid=${`${kind.name}-table`}>
        <thead><tr><th>${t('Name')}</th><th>${t('Status')}</th>${columns.map((c) => html`<th>${c.label}</th>`)}
          <th>${t('Progress')}</th><th>${t('Created')}</th><th>${t('Operation')}</th></tr></thead>
        <tbody>${data.items.map((job) => html`<tr data-job=${job.name}>
          <td><${Link} href=${`${kind.route}/${job.id}`}>${job.name}<//></td>
          <td><${StatusTag} status=${job.status} message=${job.status_message} /></td>
          ${columns.map((c) => html`<td>${c.cell(job)}</td>`)}
          <td class="w-progress"><${JobProgress} kind=${kind} job=${job} /></td><td>${fmtTime(job.created_at)}</td>
          <td><${JobActions} kind=${kind} job=${job} reload=${reload} compact /></td>
        </tr>`)}</tbody>
      </table>
      <${Pager} offset=${offset} shown=${data.items.length} total=${data.total} busy=${loading} onChange=${setOffset} />`}
  </div>`;
}

export function LogsPanel({ kind, job }) {
  const [search, setSearch] = useState('');
  const { data, error } = usePoll(() => get(`/api/v1/${kind.path}/${job.id}/logs`, { search, limit: 5000 }),
    [job.id, search], isActive(job) ? 3000 : 0);
  return html`<div>
    <div class="toolbar">
      <input class="input search" placeholder=${kind.text().logSearch || t('Search')} value=${search}
        onInput=${(e) => setSearch(e.target.value)} data-testid="log-search" />
      <button class="btn" onClick=${() => downloadLog(kind, job)}>${t('Download')}</button>
      ${data ? html`<span class="muted small">${data.total}</span>` : null}
    </div>
    <${ErrorBox} error=${error} />
    <pre class="logs" data-testid="logs">${data ? data.items.map((l) => `${fmtTime(l.at)} ${l.line}`).join('\n') : ''}</pre>
  </div>`;
}

function StatusHistory({ job }) {
  return html`<div class="span-2"><h4>${t('Status history')}</h4><table class="table" data-testid="status-history">
    <tbody>${(job.history || []).map((h) => html`<tr><td>${fmtTime(h.at)}</td><td><${StatusTag} status=${h.status} /></td><td>${h.message || ''}</td></tr>`)}</tbody>
  </table></div>`;
}

// Where the job runs: the pool it was admitted to and what it takes there (services/lib/pools: placement).
function Placement({ job }) {
  const p = job.placement;
  if (!p) return null;
  return html`<div class="span-2" data-testid="job-placement"><h4>${t('Placement')}</h4><${KV} items=${[
    [t('Resource pool'), html`<${Link} href=${`/console/pools/${encodeURIComponent(p.pool)}`}>${p.pool}<//>`],
    [t('CPUs'), fmtNumber(p.cpus, 2)], [t('Accelerators'), fmtNumber(p.gpus, 2)], [t('Nodes'), p.nodes],
  ]} /></div>`;
}

// While a job waits for room in its pool: its place in the pool's queue and what it waits for.
function QueueNotice({ job }) {
  const q = job.queue;
  if (!q || !isActive(job)) return null;
  return html`<div class="notice" data-testid="job-queue">
    ${t('Position {position} in the queue of pool {pool}', { position: q.position, pool: q.pool })} · ${q.reason}
    <span class="muted small"> · ${t('since')} ${fmtTime(q.since)}</span></div>`;
}

// The tabs every kind has; a kind's own tabs are objects {id, label, render}.
const COMMON_TABS = {
  details: { label: () => t('Details'), render: (kind, job) => html`<div class="grid-2">${kind.details(job)}<${Placement} job=${job} /><${StatusHistory} job=${job} /></div>` },
  logs: { label: () => t('Logs'), render: (kind, job) => html`<${LogsPanel} kind=${kind} job=${job} />` },
  events: { label: () => t('Events'), render: (kind, job) => html`<${TimelinePanel} resource=${kind.path} id=${job.id} />` },
};

function tabsOf(kind) {
  return kind.tabs.map((tab) => (typeof tab === 'string'
    ? { id: tab, label: COMMON_TABS[tab].label, render: (job, reload) => COMMON_TABS[tab].render(kind, job, reload) }
    : tab));
}

export function JobPage({ kind, id }) {
  const [tab, setTab] = useState('details');
  const { data: job, error, reload } = usePoll(() => get(`/api/v1/${kind.path}/${id}`), [id], 3000);
  if (error && !job) return html`<${ErrorBox} error=${error} />`;
  if (!job) return html`<${Spinner} />`;
  const tabs = tabsOf(kind);
  const current = tabs.find((x) => x.id === tab) || tabs[0];
  return html`<div>
    <${PageHead} title=${job.name} back=${kind.route}>
      <${JobActions} kind=${kind} job=${job} reload=${reload} onDeleted=${() => navigate(kind.route)} />
    <//>
    <div class="status-line"><span data-testid="job-status"><${StatusTag} status=${job.status} message=${job.status_message} /></span>
      ${job.status_message ? html`<span class="muted">${job.status_message}</span>` : null}</div>
    <${QueueNotice} job=${job} />
    <${Tabs} active=${current.id} onChange=${setTab} tabs=${tabs.map((x) => ({ id: x.id, label: x.label() }))} />
    <div class="card section">${current.render(job, reload)}</div>
  </div>`;
}
