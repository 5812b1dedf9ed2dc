// Shared building blocks: status tags, dialogs, tabs, form fields, errors, polling, toasts.
import { html, useEffect, useRef, useState, useCallback } from './lib.js';
import { t, statusLabel } from './i18n.js';
import { Link } from './router.js';

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
  stopped: 'idle',
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
