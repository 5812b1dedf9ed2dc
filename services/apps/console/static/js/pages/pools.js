// Resource pools (guide chapter 3: 资源池): the public pool and my account's dedicated pools with their
// capacity, what is allocated and free; a pool's nodes, my allocations and my waiting jobs; my compute
// usage (CPU-hours, accelerator-hours, package vs on-demand) and my packages (套餐包).
import { html, useState } from '../lib.js';
import { api, del, get, post } from '../api.js';
import { t } from '../i18n.js';
import { Link, navigate } from '../router.js';
import {
  ActionButton, ConfirmDelete, Empty, ErrorBox, Field, KV, Modal, PageHead, ProgressBar, Section, Spinner, fieldError,
  fmtBytes, fmtNumber, fmtTime, toast, useAction, usePoll,
} from '../ui.js';

// services/lib/pools/models.py NAME_PATTERN: a pool name is a node label value in the cluster.
const POOL_NAME = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;
const GROUPS = ['pool', 'kind', 'day'];
const PERIODS = [7, 30, 90, 366];

export const poolTypeLabel = (pool) => (pool.type === 'public' ? t('Public pool') : t('Dedicated pool'));
const num = (n) => fmtNumber(n, 2);
const hours = (n) => fmtNumber(n, 3);

// What holds a share of a pool: the job kinds link to their job's page.
const JOB_ROUTES = { tuning: '/console/tuning', compression: '/console/compression' };

function kindLabel(kind) {
  return { tuning: t('Model tuning'), compression: t('Model compression'), instance: t('Inference instance'),
    weight_conversion: t('weight_conversion') }[kind] || kind;
}

function JobLink({ kind, id, name }) {
  const route = JOB_ROUTES[kind];
  const label = name || id;
  return route ? html`<${Link} href=${`${route}/${id}`}>${label}<//>` : html`<span class="mono small">${label}</span>`;
}

// "allocated / capacity" with a bar: how full the pool is.
function Usage({ used, total }) {
  return html`<div class="w-progress"><${ProgressBar} value=${used} total=${total || 0}
    label=${`${num(used)} / ${num(total)}`} /></div>`;
}

function CreatePoolDialog({ onClose, onCreated }) {
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [touched, setTouched] = useState(false);
  const nameRule = t('1-32 lowercase letters, digits and "-", starting and ending with a letter or digit');
  const invalid = !name ? t('Required') : POOL_NAME.test(name) ? null : nameRule;
  const action = useAction(async () => {
    setTouched(true);
    if (invalid) return;
    const pool = await post('/api/v1/pools', { name, description });
    toast(`${pool.name} ✓`);
    onCreated(pool);
    onClose();
  });
  const err = action.error;
  return html`<${Modal} title=${t('Create dedicated pool')} onClose=${onClose} footer=${html`
      <button class="btn" onClick=${onClose}>${t('Cancel')}</button>
      <button class="btn btn-primary" data-testid="create-pool-ok" disabled=${action.busy} onClick=${() => action.run()}>${t('OK')}</button>`}>
    <div class="form" data-testid="create-pool-form">
      <${Field} label=${t('Name')} required id="name" hint=${nameRule}
        error=${(touched && invalid) || fieldError(err, 'name')}>
        <input class="input" name="name" value=${name} onInput=${(e) => setName(e.target.value.trim())} /><//>
      <${Field} label=${t('Description')} id="description" error=${fieldError(err, 'description')} hint=${`${description.length}/256`}>
        <textarea class="input" rows="2" name="description" maxLength="256" value=${description}
          onInput=${(e) => setDescription(e.target.value)}></textarea><//>
      <p class="muted small">${t('The pool gets its capacity from the cluster nodes the platform engineer starts with the label openmaas.io/pool=<name>.')}</p>
      ${err && !fieldError(err, 'name', 'description') ? html`<${ErrorBox} error=${err} />` : null}
    </div>
  <//>`;
}

// PATCH node_count / node_resources (docs/cluster.md "Resizing a dedicated pool"): the platform starts
// and stops the nodes; it refuses (409) where it does not manage them or work would not fit.
function ResizePoolDialog({ pool, onClose, onResized }) {
  const shape = pool.node_resources || {};
  const [count, setCount] = useState(String(pool.node_count ?? pool.nodes));
  const [cpus, setCpus] = useState(shape.cpus ? String(shape.cpus) : '');
  const [memory, setMemory] = useState(shape.memory_gb ? String(shape.memory_gb) : '');
  const action = useAction(async () => {
    const body = { node_count: Number(count) };
    if (cpus || memory) body.node_resources = { cpus: Number(cpus), memory_gb: Number(memory) };
    const updated = await api('PATCH', `/api/v1/pools/${encodeURIComponent(pool.name)}`, body);
    toast(`${updated.name} ✓`);
    onResized(updated);
    onClose();
  });
  const err = action.error;
  return html`<${Modal} title=${t('Resize pool')} onClose=${onClose} footer=${html`
      <button class="btn" onClick=${onClose}>${t('Cancel')}</button>
      <button class="btn btn-primary" data-testid="resize-pool-ok" disabled=${action.busy} onClick=${() => action.run()}>${t('OK')}</button>`}>
    <div class="form" data-testid="resize-pool-form">
      <${Field} label=${t('Node count')} required id="node_count" error=${fieldError(err, 'node_count')}>
        <input class="input" type="number" min="0" name="node_count" value=${count} onInput=${(e) => setCount(e.target.value)} /><//>
      <${Field} label=${t('CPUs per node')} id="cpus" error=${fieldError(err, 'node_resources.cpus')}>
        <input class="input" type="number" min="1" step="1" name="cpus" value=${cpus} onInput=${(e) => setCpus(e.target.value)} /><//>
      <${Field} label=${t('Memory per node (GiB)')} id="memory_gb" error=${fieldError(err, 'node_resources.memory_gb')}>
        <input class="input" type="number" min="1" name="memory_gb" value=${memory} onInput=${(e) => setMemory(e.target.value)} /><//>
      <p class="muted small">${t('The platform starts and stops the nodes of the pool; it removes only nodes that run nothing.')}</p>
      ${err && !fieldError(err, 'node_count', 'node_resources.cpus', 'node_resources.memory_gb') ? html`<${ErrorBox} error=${err} />` : null}
    </div>
  <//>`;
}

function DeletePool({ pool, onClose, onDeleted }) {
  return html`<${ConfirmDelete} what=${t('Dedicated pool')} name=${pool.name} onClose=${onClose}
    onConfirm=${async () => { await del(`/api/v1/pools/${encodeURIComponent(pool.name)}`); toast(`${pool.name} ✓`); onDeleted(); }} />`;
}

function PoolsTable({ pools, onDelete }) {
  return html`<table class="table" data-testid="pools-table">
    <thead><tr><th>${t('Name')}</th><th>${t('Type')}</th><th>${t('Cluster')}</th><th>${t('Nodes')}</th>
      <th>${t('CPUs (allocated / capacity)')}</th><th>${t('Free CPUs')}</th>
      <th>${t('Accelerators (allocated / capacity)')}</th><th>${t('Free accelerators')}</th>
      <th>${t('Description')}</th><th>${t('Operation')}</th></tr></thead>
    <tbody>${pools.map((p) => html`<tr data-pool=${p.name}>
      <td><${Link} href=${`/console/pools/${encodeURIComponent(p.name)}`}>${p.name}<//></td>
      <td>${poolTypeLabel(p)}</td><td>${p.cluster}</td><td data-col="nodes">${p.nodes}</td>
      <td data-col="cpus"><${Usage} used=${p.allocated.cpus} total=${p.capacity.cpus} /></td>
      <td data-col="free-cpus">${num(p.free.cpus)}</td>
      <td data-col="gpus"><${Usage} used=${p.allocated.gpus} total=${p.capacity.gpus} /></td>
      <td data-col="free-gpus">${num(p.free.gpus)}</td>
      <td>${p.description || '-'}</td>
      <td>${p.type === 'dedicated' ? html`<${ActionButton} action="maas:pools:delete" class="link danger" data-action="delete-pool"
        onClick=${() => onDelete(p)}>${t('Delete')}<//>` : '-'}</td>
    </tr>`)}</tbody>
  </table>`;
}

function UsageTable({ data }) {
  const key = data.group_by;
  const rows = data.items;
  const total = (field) => rows.reduce((s, r) => s + (r[field] || 0), 0);
  const cells = (r) => html`<td>${fmtNumber(r.runs)}</td><td>${hours(r.cpu_hours)}</td>
    <td>${hours(r.package_cpu_hours)}</td><td>${hours(r.on_demand_cpu_hours)}</td><td>${hours(r.accelerator_hours)}</td>
    <td>${hours(r.package_accelerator_hours)}</td><td>${hours(r.on_demand_accelerator_hours)}</td>`;
  return html`<table class="table" data-testid="usage-table">
    <thead><tr><th>${{ pool: t('Resource pool'), kind: t('Kind'), day: t('Day') }[key]}</th><th>${t('Runs')}</th>
      <th>${t('CPU-hours')}</th><th>${t('from packages')}</th><th>${t('on demand')}</th><th>${t('Accelerator-hours')}</th>
      <th>${t('from packages')}</th><th>${t('on demand')}</th></tr></thead>
    <tbody>${rows.map((r) => html`<tr data-row=${r[key]}>
      <td>${key === 'kind' ? kindLabel(r.kind) : r[key]}</td>${cells(r)}</tr>`)}</tbody>
    <tfoot><tr data-row="total"><td><strong>${t('Total')}</strong></td>${cells({
      runs: total('runs'), cpu_hours: total('cpu_hours'), package_cpu_hours: total('package_cpu_hours'),
      on_demand_cpu_hours: total('on_demand_cpu_hours'), accelerator_hours: total('accelerator_hours'),
      package_accelerator_hours: total('package_accelerator_hours'), on_demand_accelerator_hours: total('on_demand_accelerator_hours'),
    })}</tr></tfoot>
  </table>`;
}

function ComputeUsage() {
  const [groupBy, setGroupBy] = useState('pool');
  const [days, setDays] = useState(30);
  const { data, error } = usePoll(() => get('/api/v1/usage/compute', { group_by: groupBy, days }), [groupBy, days], 15000);
  return html`<${Section} title=${t('Compute usage')}>
    <div data-testid="compute-usage">
      <div class="toolbar">
        <label>${t('Group by')} <select class="input" name="group_by" value=${groupBy} onChange=${(e) => setGroupBy(e.target.value)}>
          ${GROUPS.map((g) => html`<option value=${g}>${{ pool: t('Resource pool'), kind: t('Kind'), day: t('Day') }[g]}</option>`)}
        </select></label>
        <label>${t('Period')} <select class="input" name="days" value=${String(days)} onChange=${(e) => setDays(Number(e.target.value))}>
          ${PERIODS.map((d) => html`<option value=${String(d)}>${t('Last {n} days', { n: d })}</option>`)}
        </select></label>
      </div>
      <p class="muted small">${t('Runs on the public pool are paid from your packages first, the rest is on demand; runs on a dedicated pool are metered only.')}</p>
      <${ErrorBox} error=${error} />
      ${!data ? (error ? null : html`<${Spinner} />`) : data.items.length === 0
        ? html`<${Empty}>${t('No compute used in this period.')}<//>` : html`<${UsageTable} data=${data} />`}
    </div>
  <//>`;
}

function Packages() {
  const { data, error } = usePoll(() => get('/api/v1/packages'), [], 30000);
  const now = Date.now();
  return html`<${Section} title=${t('My packages')}>
    <div data-testid="packages">
      <p class="muted small">${t('Prepaid CPU-hours and accelerator-hours on the public pool, granted by the platform administrator.')}</p>
      <${ErrorBox} error=${error} />
      ${!data ? (error ? null : html`<${Spinner} />`) : data.items.length === 0 ? html`<${Empty}>${t('No packages.')}<//>` : html`
        <table class="table" data-testid="packages-table">
          <thead><tr><th>${t('Name')}</th><th>${t('CPU-hours left')}</th><th>${t('Accelerator-hours left')}</th>
            <th>${t('Granted')}</th><th>${t('Expires')}</th></tr></thead>
          <tbody>${data.items.map((p) => html`<tr data-package=${p.name}>
            <td>${p.name}</td><td>${hours(p.cpu_hours_left)} / ${hours(p.cpu_hours)}</td>
            <td>${hours(p.accelerator_hours_left)} / ${hours(p.accelerator_hours)}</td><td>${fmtTime(p.granted_at)}</td>
            <td>${fmtTime(p.expires_at)}${new Date(p.expires_at).getTime() <= now ? html`<span class="tag">${t('expired')}</span>` : null}</td>
          </tr>`)}</tbody>
        </table>`}
    </div>
  <//>`;
}

export function PoolsPage() {
  const { data, error, reload } = usePoll(() => get('/api/v1/pools'), [], 10000);
  const [creating, setCreating] = useState(false);
  const [deleting, setDeleting] = useState(null);
  return html`<div>
    <${PageHead} title=${t('Resource pools')}>
      <${ActionButton} action="maas:pools:create" class="btn btn-primary" data-action="create-pool"
        onClick=${() => setCreating(true)}>${t('Create dedicated pool')}<//>
    <//>
    <p class="muted small">${t('Jobs and services run in the public pool every account shares, or in a dedicated pool of your account. A job waits in the queue of its pool until there is room.')}</p>
    <${ErrorBox} error=${error} />
    <${Section}>${!data ? (error ? null : html`<${Spinner} />`) : data.items.length === 0 ? html`<${Empty} />`
      : html`<${PoolsTable} pools=${data.items} onDelete=${setDeleting} />`}<//>
    <${ComputeUsage} />
    <${Packages} />
    ${creating ? html`<${CreatePoolDialog} onClose=${() => setCreating(false)} onCreated=${reload} />` : null}
    ${deleting ? html`<${DeletePool} pool=${deleting} onClose=${() => setDeleting(null)} onDeleted=${reload} />` : null}
  </div>`;
}

function ResourcesText({ r }) {
  return html`<span>${t('{cpus} CPUs, {gpus} accelerators', { cpus: num(r.cpus), gpus: num(r.gpus) })}</span>`;
}

export function PoolPage({ name }) {
  const { data: pool, error, reload } = usePoll(() => get(`/api/v1/pools/${encodeURIComponent(name)}`), [name], 5000);
  const [deleting, setDeleting] = useState(false);
  const [resizing, setResizing] = useState(false);
  if (error && !pool) return html`<div><${PageHead} title=${name} back="/console/pools" /><${ErrorBox} error=${error} /></div>`;
  if (!pool) return html`<${Spinner} />`;
  return html`<div>
    <${PageHead} title=${pool.name} back="/console/pools">
      ${pool.type === 'dedicated' ? html`<${ActionButton} action="maas:pools:update" class="btn" data-action="resize-pool"
        onClick=${() => setResizing(true)}>${t('Resize')}<//>` : null}
      ${pool.type === 'dedicated' ? html`<${ActionButton} action="maas:pools:delete" class="btn btn-danger" data-action="delete-pool"
        onClick=${() => setDeleting(true)}>${t('Delete')}<//>` : null}
    <//>
    <${ErrorBox} error=${error} />
    <${Section} title=${t('Details')}>
      <div class="grid-2" data-testid="pool-details">
        <${KV} items=${[[t('Type'), poolTypeLabel(pool)], [t('Cluster'), pool.cluster], [t('Nodes'), html`<span data-testid="pool-node-count">${pool.node_count == null ? pool.nodes
            : `${pool.nodes} / ${pool.node_count}`} ${pool.status === 'scaling' ? html`<span class="tag">${t('scaling')}</span>` : null}
            ${pool.status_message ? html`<span class="muted small">${pool.status_message}</span>` : null}</span>`],
          [t('Description'), pool.description], [t('Created'), fmtTime(pool.created_at)]]} />
        <${KV} items=${[[t('Capacity'), html`<${ResourcesText} r=${pool.capacity} />`],
          [t('Allocated'), html`<${ResourcesText} r=${pool.allocated} />`],
          [t('Free'), html`<span data-testid="pool-free"><${ResourcesText} r=${pool.free} /></span>`]]} />
      </div>
    <//>
    <${Section} title=${t('Compute nodes')}>
      ${pool.node_list.length === 0 ? html`<${Empty}>${t('No nodes: start cluster nodes with the label openmaas.io/pool={name}.', { name: pool.name })}<//>` : html`
        <table class="table" data-testid="pool-nodes">
          <thead><tr><th>ID</th><th>${t('Address')}</th><th>${t('CPUs')}</th><th>${t('Accelerators')}</th><th>${t('Memory')}</th></tr></thead>
          <tbody>${pool.node_list.map((n) => html`<tr data-node=${n.id}>
            <td class="mono small">${n.id}</td><td class="mono small">${n.address}</td><td>${num(n.resources.cpus)}</td>
            <td>${num(n.resources.gpus)}</td><td>${n.resources.memory_bytes ? fmtBytes(n.resources.memory_bytes) : '-'}</td>
          </tr>`)}</tbody>
        </table>`}
    <//>
    <${Section} title=${t('My allocations')}>
      ${pool.allocations.length === 0 ? html`<${Empty}>${t('Nothing of your account runs in this pool.')}<//>` : html`
        <table class="table" data-testid="pool-allocations">
          <thead><tr><th>${t('Kind')}</th><th>${t('Job')}</th><th>${t('CPUs')}</th><th>${t('Accelerators')}</th><th>${t('Since')}</th></tr></thead>
          <tbody>${pool.allocations.map((a) => html`<tr data-job=${a.job_id}>
            <td>${kindLabel(a.kind)}</td><td><${JobLink} kind=${a.kind} id=${a.job_id} /></td>
            <td>${num(a.resources.cpus)}</td><td>${num(a.resources.gpus)}</td><td>${fmtTime(a.since)}</td>
          </tr>`)}</tbody>
        </table>`}
    <//>
    <${Section} title=${t('My queue')}>
      ${pool.queue.length === 0 ? html`<${Empty}>${t('None of your jobs waits for this pool.')}<//>` : html`
        <table class="table" data-testid="pool-queue">
          <thead><tr><th>${t('Position')}</th><th>${t('Kind')}</th><th>${t('Job')}</th><th>${t('Reason')}</th></tr></thead>
          <tbody>${pool.queue.map((q) => html`<tr data-job=${q.job_id}>
            <td>${q.position}</td><td>${kindLabel(q.kind)}</td><td><${JobLink} kind=${q.kind} id=${q.job_id} name=${q.name} /></td>
            <td>${q.reason}</td>
          </tr>`)}</tbody>
        </table>`}
    <//>
    ${deleting ? html`<${DeletePool} pool=${pool} onClose=${() => setDeleting(false)} onDeleted=${() => navigate('/console/pools')} />` : null}
    ${resizing ? html`<${ResizePoolDialog} pool=${pool} onClose=${() => setResizing(false)} onResized=${reload} />` : null}
  </div>`;
}
