// Shared building blocks: status tags, dialogs, tabs, form fields, errors, polling, toasts.
import { html, useEffect, useRef, useState, useCallback } from './lib.js';
import { t, statusLabel } from './i18n.js';
import { Link } from './router.js';
import { auth, get } from './api.js';

export function fmtTime(value) {
  if (!value) return '-';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '-';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

export function fmtNumber(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return '-';
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits });
}

const STATUS_CLASS = {
  created: 'ok', completed: 'ok', running: 'ok', succeeded: 'ok', ready: 'ok', confirmed: 'ok', delivered: 'ok',
  creating: 'busy', waiting: 'busy', deploying: 'busy', pending: 'busy', stopping: 'busy', starting: 'busy',
  importing: 'busy', unconfirmed: 'warn', alarm: 'warn',
  failed: 'bad', dead: 'bad',
  stopped: 'idle', active: 'ok', disabled: 'idle',
};

export function StatusTag({ status, kind, message }) {
  const cls = STATUS_CLASS[status] || 'idle';
  return html`<span class="status status-${cls}" data-status=${status} title=${message || ''}>
    <i></i>${statusLabel(status, kind)}${message ? html`<span class="status-info">ⓘ</span>` : null}</span>`;
}

export function Spinner({ label }) {
  return html`<div class="loading"><span class="spinner"></span>${label || t('Loading…')}</div>`;
}

export function Empty({ children }) {
  return html`<div class="empty">${children || t('No data')}</div>`;
}

export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<div class="error-box" role="alert">
    <div class="error-message">${error.message}</div>
    ${error.field ? html`<div class="error-field">${t('Field')}: <code>${error.field}</code></div>` : null}
    ${error.details && error.details.length ? html`<ul class="error-details">
      ${error.details.slice(0, 20).map((d) => html`<li>${d.line !== undefined ? t('line {n}', { n: d.line }) + ': ' : d.field ? d.field + ': ' : ''}${d.message}</li>`)}
    </ul>` : null}
  </div>`;
}

export function Modal({ title, onClose, children, footer, wide }) {
  useEffect(() => {
    const onKey = (e) => { if (e.key === 'Escape') onClose && onClose(); };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [onClose]);
  return html`<div class="modal-backdrop" onClick=${(e) => { if (e.target === e.currentTarget && onClose) onClose(); }}>
    <div class=${'modal' + (wide ? ' modal-wide' : '')} role="dialog" aria-label=${title}>
      <div class="modal-head"><h3>${title}</h3><button class="icon-btn" aria-label=${t('Close')} onClick=${onClose}>×</button></div>
      <div class="modal-body">${children}</div>
      ${footer ? html`<div class="modal-foot">${footer}</div>` : null}
    </div>
  </div>`;
}

// A button that runs an async action, shows progress and reports an error.
export function useAction(fn) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = useCallback(async (...args) => {
    setBusy(true);
    setError(null);
    try {
      return await fn(...args);
    } catch (e) {
      setError(e);
      return undefined;
    } finally {
      setBusy(false);
    }
  }, [fn]);
  return { run, busy, error, setError };
}

export function Confirm({ title, message, onConfirm, onClose, danger }) {
  const action = useAction(async () => { await onConfirm(); onClose(); });
  return html`<${Modal} title=${title} onClose=${onClose} footer=${html`
      <button class="btn" onClick=${onClose}>${t('Cancel')}</button>
      <button class=${'btn ' + (danger ? 'btn-danger' : 'btn-primary')} disabled=${action.busy} onClick=${() => action.run()}>${t('OK')}</button>`}>
    <p>${message}</p>
    <${ErrorBox} error=${action.error} />
  <//>`;
}

// The guide's deletion dialog: the OK button works only once DELETE is typed.
export function ConfirmDelete({ what, name, onConfirm, onClose }) {
  const [typed, setTyped] = useState('');
  const action = useAction(async () => { await onConfirm(); onClose(); });
  return html`<${Modal} title=${t('Delete {what}', { what })} onClose=${onClose} footer=${html`
      <button class="btn" onClick=${onClose}>${t('Cancel')}</button>
      <button class="btn btn-danger" data-testid="confirm-delete" disabled=${typed !== 'DELETE' || action.busy}
        onClick=${() => action.run()}>${t('OK')}</button>`}>
    <p><strong>${name}</strong></p>
    <p class="muted">${t('Deleting cannot be undone. Type DELETE to confirm.')}</p>
    <input class="input" placeholder="DELETE" value=${typed} onInput=${(e) => setTyped(e.target.value)} aria-label="DELETE" />
    <${ErrorBox} error=${action.error} />
  <//>`;
}

export function Tabs({ tabs, active, onChange }) {
  return html`<div class="tabs" role="tablist">
    ${tabs.map((tab) => html`<button role="tab" class=${'tab' + (tab.id === active ? ' active' : '')}
      aria-selected=${tab.id === active} onClick=${() => onChange(tab.id)}>${tab.label}</button>`)}
  </div>`;
}

export function Field({ label, hint, error, required, children, id }) {
  return html`<div class=${'field' + (error ? ' has-error' : '')} data-field=${id || ''}>
    <label>${required ? html`<span class="req">*</span>` : null}${label}</label>
    <div class="field-body">${children}
      ${error ? html`<div class="field-error">${error}</div>` : hint ? html`<div class="hint">${hint}</div>` : null}
    </div>
  </div>`;
}

export function Switch({ checked, onChange, label, testid }) {
  return html`<label class="switch" data-testid=${testid}>
    <input type="checkbox" checked=${checked} onChange=${(e) => onChange(e.target.checked)} />
    <span class="slider"></span>${label ? html`<span class="switch-label">${label}</span>` : null}
  </label>`;
}

export function Section({ title, children, actions }) {
  return html`<section class="card section">
    ${title ? html`<div class="section-head"><h3>${title}</h3><div>${actions}</div></div>` : null}
    ${children}
  </section>`;
}

export function KV({ items }) {
  return html`<dl class="kv">
    ${items.filter(Boolean).map(([k, v]) => html`<div class="kv-row"><dt>${k}</dt><dd>${v === null || v === undefined || v === '' ? '-' : v}</dd></div>`)}
  </dl>`;
}

// A job's output model: a link once the registry has made it, "registering…" between the job's
// completion and that (two events later), why the registry refused it, otherwise the requested name.
export function OutputModel({ job }) {
  const out = job.output;
  if (out.model_id) return html`<${Link} href=${`/console/models/${out.model_id}`}>${out.model_name}<//>`;
  if (out.error) return html`<span>${out.model_name} <span class="danger" data-testid="output-error">${t('not registered')}: ${out.error}</span></span>`;
  if (job.status !== 'completed') return out.model_name;
  return html`<span>${out.model_name} <span class="muted" data-testid="output-registering">${t('registering…')}</span></span>`;
}

export function ProgressBar({ value, total, label }) {
  const pct = total ? Math.min(100, Math.round((value / total) * 100)) : 0;
  return html`<div class="progress" role="progressbar" aria-valuenow=${pct} aria-valuemin="0" aria-valuemax="100">
    <div class="progress-bar" style=${`width:${pct}%`}></div>
    <span class="progress-label">${label || `${pct}%`}</span>
  </div>`;
}

export function CopyButton({ text }) {
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // Clipboard API needs a secure context; fall back to a hidden textarea.
      const area = document.createElement('textarea');
      area.value = text;
      document.body.appendChild(area);
      area.select();
      document.execCommand('copy');
      area.remove();
    }
    setCopied(true);
    setTimeout(() => setCopied(false), 1500);
  };
  return html`<button class="btn btn-small" onClick=${copy}>${copied ? t('Copied') : t('Copy')}</button>`;
}

export function CodeBlock({ code, label }) {
  return html`<div class="code-block">
    <div class="code-head"><span>${label}</span><${CopyButton} text=${code} /></div>
    <pre><code>${code}</code></pre>
  </div>`;
}

// Load data and refresh it every `interval` ms while mounted (interval 0: once).
export function usePoll(load, deps, interval = 0) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const tick = useRef(0);
  const reload = useCallback(async () => {
    const mine = ++tick.current;
    try {
      const data = await load();
      if (mine === tick.current) setState({ data, error: null, loading: false });
    } catch (error) {
      if (mine === tick.current) setState((s) => ({ data: s.data, error, loading: false }));
    }
  }, deps);
  useEffect(() => {
    // Keep showing the previous data while new filters load (no flicker).
    setState((st) => ({ ...st, loading: true }));
    reload();
    if (!interval) return undefined;
    const timer = setInterval(reload, interval);
    return () => { clearInterval(timer); tick.current++; };
  }, [reload, interval]);
  return { ...state, reload };
}

// Toasts: toast('text', 'ok' | 'bad')
const toastListeners = new Set();
export function toast(message, kind = 'ok') { toastListeners.forEach((fn) => fn({ message, kind, id: Math.random() })); }

export function Toasts() {
  const [items, setItems] = useState([]);
  useEffect(() => {
    const fn = (item) => {
      setItems((xs) => [...xs, item]);
      setTimeout(() => setItems((xs) => xs.filter((x) => x.id !== item.id)), 4000);
    };
    toastListeners.add(fn);
    return () => toastListeners.delete(fn);
  }, []);
  return html`<div class="toasts">${items.map((i) => html`<div class=${'toast toast-' + i.kind}>${i.message}</div>`)}</div>`;
}

export function PageHead({ title, children, back }) {
  return html`<div class="page-head">
    <div class="page-title">${back ? html`<a class="back" href=${back} onClick=${(e) => { e.preventDefault(); history.back(); }}>‹</a>` : null}<h2>${title}</h2></div>
    <div class="page-actions">${children}</div>
  </div>`;
}

// Client-side name rule of the guide (models: with '.', jobs and services: without).
const NAME_WITH_DOT = /^[A-Za-z\u4e00-\u9fff][A-Za-z0-9\u4e00-\u9fff_.\-]{0,63}$/;
const NAME_NO_DOT = /^[A-Za-z\u4e00-\u9fff][A-Za-z0-9\u4e00-\u9fff_\-]{0,63}$/;

export function nameError(value, { dot = true } = {}) {
  if (!value) return t('Required');
  const ok = (dot ? NAME_WITH_DOT : NAME_NO_DOT).test(value);
  if (ok) return null;
  return dot
    ? t('Name rule: 1-64 characters, starting with a letter or Chinese character; letters, digits, Chinese, "_", "-", ".".')
    : t('Name rule: 1-64 characters, starting with a letter or Chinese character; letters, digits, Chinese, "_", "-".');
}

// Errors of the API that name a field go next to that field; the rest in an ErrorBox.
export function fieldError(error, ...names) {
  if (!error || !error.field) return null;
  return names.some((n) => error.field === n || error.field.startsWith(n + '.')) ? error.message : null;
}

// ---------------------------------------------------------------------------- permissions
// What the signed-in user may do (GET /api/v1/auth/permissions), for greyed buttons and the "access
// restricted" dialog. One request per render pass: the actions asked for in the same tick go together.
// Answers are kept a few seconds only, so a policy change shows on the next page.
const PERMISSION_TTL_MS = 10000;
let permissionCache = { token: null, entries: new Map() };   // action -> {allowed, reason, grantable, at}
let permissionBatch = null;                                  // {actions: Set, promise}

function permissionEntries() {
  if (permissionCache.token !== auth.token) permissionCache = { token: auth.token, entries: new Map() };
  return permissionCache.entries;
}

function askPermissions(actions) {
  if (!permissionBatch) {
    const batch = { actions: new Set() };
    batch.promise = Promise.resolve().then(async () => {
      permissionBatch = null;
      const names = [...batch.actions];
      const query = names.map((a) => `action=${encodeURIComponent(a)}`).join('&');
      const answer = await get(`/api/v1/auth/permissions?${query}`);
      const entries = permissionEntries();
      const at = Date.now();
      for (const name of answer.allowed) entries.set(name, { allowed: true, at });
      for (const d of answer.denied) entries.set(d.action, { allowed: false, reason: d.reason, grantable: d.grantable, at });
    });
    permissionBatch = batch;
  }
  actions.forEach((a) => permissionBatch.actions.add(a));
  return permissionBatch.promise;
}

// The policy (guide format) that grants `actions`: what the user sends their administrator.
export function grantingPolicy(actions) {
  return JSON.stringify({ Version: '1.1', Statement: [{ Effect: 'Allow', Action: [...actions].sort() }] }, null, 2);
}

// usePermissions(['maas:services:create', ...]) -> {ready, allowed(a), reason(a), denied: [{action, reason, grantable}]}
// Until the answer comes every action counts as allowed (the server decides anyway).
export function usePermissions(actions) {
  const key = actions.join(' ');
  const [, setTick] = useState(0);
  useEffect(() => {
    if (!actions.length || !auth.token) return undefined;
    let live = true;
    const entries = permissionEntries();
    const stale = actions.filter((a) => !entries.has(a) || Date.now() - entries.get(a).at > PERMISSION_TTL_MS);
    if (stale.length) askPermissions(stale).then(() => live && setTick((n) => n + 1), () => {});
    return () => { live = false; };
  }, [key]);
  const entries = permissionEntries();
  const denied = actions.filter((a) => entries.has(a) && !entries.get(a).allowed)
    .map((a) => ({ action: a, reason: entries.get(a).reason, grantable: entries.get(a).grantable }));
  return {
    ready: actions.every((a) => entries.has(a)),
    allowed: (a) => !(entries.has(a) && !entries.get(a).allowed),
    reason: (a) => (entries.has(a) && !entries.get(a).allowed ? t('You lack the permission {action}', { action: a }) : ''),
    denied,
  };
}

// A button that needs `action`: greyed, with the missing action as its title, when the user lacks it.
// Every other prop is the button's own (its own `disabled` and `title` still apply when allowed).
export function ActionButton({ action, disabled, title, children, ...rest }) {
  const perms = usePermissions([action]);
  const allowed = perms.allowed(action);
  return html`<button ...${rest} disabled=${disabled || !allowed} data-denied=${allowed ? undefined : action}
    title=${allowed ? title : perms.reason(action)}>${children}</button>`;
}

// The guide's "access restricted" dialog (figures 2-17/2-18): the page needs actions the user lacks;
// it lists them and copies the policy that grants them, for the user to send to the administrator.
export function AccessRestricted({ denied, onClose }) {
  const grantable = denied.filter((d) => d.grantable).map((d) => d.action);
  const policy = grantable.length ? grantingPolicy(grantable) : '';
  return html`<${Modal} title=${t('Access restricted')} onClose=${onClose}
      footer=${html`<button class="btn btn-primary" onClick=${onClose}>${t('OK')}</button>`}>
    <div data-testid="access-restricted">
      <p>${t('This page needs permissions you do not have. Ask an administrator of your account for them:')}</p>
      <ul class="denied-actions">${denied.map((d) => html`<li><code>${d.action}</code>
        ${d.reason ? html`<span class="muted small"> · ${d.reason}</span>` : null}</li>`)}</ul>
      ${policy ? html`<p class="muted small">${t('Copy this policy and send it to your administrator, who can give it to one of your groups.')}</p>
        <${CodeBlock} code=${policy} label=${t('Policy')} />` : null}
    </div>
  <//>`;
}

// The dialog for a page: shown once when the page's actions are not all allowed.
export function PageAccess({ actions }) {
  const perms = usePermissions(actions);
  const [closed, setClosed] = useState(false);
  if (closed || !perms.ready || !perms.denied.length) return null;
  return html`<${AccessRestricted} denied=${perms.denied} onClose=${() => setClosed(true)} />`;
}
