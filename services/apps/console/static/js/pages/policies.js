// Policies (guide chapter 2): the system policies and the account's custom ones, with a JSON editor that
// the server validates as you type (POST /api/v1/iam/policies/validate) and that points at the error's
// line and column.
import { html, useEffect, useRef, useState } from '../lib.js';
import { api, del, get, post } from '../api.js';
import { t } from '../i18n.js';
import { Link, navigate } from '../router.js';
import {
  ActionButton, ConfirmDelete, Empty, ErrorBox, Field, KV, PageHead, Section, Spinner, fieldError, fmtTime, toast,
  useAction, usePoll,
} from '../ui.js';

const TEMPLATE = `{
  "Version": "1.1",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": [
        "maas:*:get*",
        "maas:*:list*"
      ]
    }
  ]
}`;

// "document: line 7, column 9: ..." -> {line: 7, column: 9}
export function errorPosition(message) {
  const found = /line (\d+), column (\d+)/.exec(message || '');
  return found ? { line: Number(found[1]), column: Number(found[2]) } : null;
}

function offsetOf(text, { line, column }) {
  const lines = text.split('\n');
  let offset = 0;
  for (let i = 0; i < Math.min(line - 1, lines.length); i++) offset += lines[i].length + 1;
  return offset + column - 1;
}

// The editor: a textarea with line numbers; the error's line is marked and the caret can jump to it.
function JsonEditor({ value, onChange, readOnly, errorAt }) {
  const area = useRef(null);
  const gutter = useRef(null);
  const lines = value.split('\n').length;
  const jump = () => {
    if (!errorAt || !area.current) return;
    const at = offsetOf(value, errorAt);
    area.current.focus();
    area.current.setSelectionRange(at, at + 1);
  };
  return html`<div class="json-editor" data-testid="policy-editor">
    <pre class="json-gutter" ref=${gutter} aria-hidden="true">${Array.from({ length: lines }, (_, i) => html`<span
      class=${errorAt && errorAt.line === i + 1 ? 'error-line' : ''}>${i + 1}</span>`)}</pre>
    <textarea class="json-text" ref=${area} spellcheck="false" readOnly=${readOnly} name="document" value=${value}
      onScroll=${(e) => { if (gutter.current) gutter.current.scrollTop = e.target.scrollTop; }}
      onInput=${(e) => onChange(e.target.value)}></textarea>
    ${errorAt ? html`<button type="button" class="link error-jump" data-testid="error-position" onClick=${jump}>
      ${t('Line {line}, column {column}', errorAt)}</button>` : null}
  </div>`;
}

// Validate as the user types (debounced): {checking, result, error}.
function useValidation(document) {
  const [state, setState] = useState({ checking: false, result: null, error: null });
  useEffect(() => {
    if (!document.trim()) { setState({ checking: false, result: null, error: null }); return undefined; }
    let live = true;
    setState((s) => ({ ...s, checking: true }));
    const timer = setTimeout(async () => {
      try {
        const result = await post('/api/v1/iam/policies/validate', { document });
        if (live) setState({ checking: false, result, error: null });
      } catch (error) {
        if (live) setState({ checking: false, result: null, error });
      }
    }, 400);
    return () => { live = false; clearTimeout(timer); };
  }, [document]);
  return state;
}

function Validation({ state }) {
  if (state.error) {
    return html`<div class="error-box" role="alert" data-testid="policy-invalid">
      <div class="error-message">${state.error.message}</div></div>`;
  }
  if (!state.result) return state.checking ? html`<div class="muted small">${t('Checking…')}</div>` : null;
  return html`<div class="policy-valid" data-testid="policy-valid">
    <div class="ok">✓ ${t('The policy is valid.')}</div>
    <ul class="small">${state.result.statements.map((s, i) => html`<li>
      <strong>${s.effect === 'Deny' ? t('Deny') : t('Allow')}</strong> · ${t('{n} actions', { n: s.matches.length })}
      <span class="muted"> (${s.matches.slice(0, 8).join(', ')}${s.matches.length > 8 ? '…' : ''})</span></li>`)}</ul>
  </div>`;
}

export function PoliciesPage() {
  const { data, error, reload } = usePoll(() => get('/api/v1/iam/policies'), []);
  const [deleting, setDeleting] = useState(null);
  return html`<div>
    <${PageHead} title=${t('Policies')}>
      <${ActionButton} action="maas:policies:create" class="btn btn-primary"
        onClick=${() => navigate('/console/iam/policies/create')}>${t('Create custom policy')}<//>
    <//>
    <p class="muted small">${t('System policies: FullAccess (everything), CommonOperations (everything but managing resource pools), ReadOnly (get and list only). A custom policy names actions in the JSON format of the guide.')}</p>
    <${ErrorBox} error=${error} />
    ${!data ? html`<${Spinner} />` : data.items.length === 0 ? html`<${Empty} />` : html`
      <table class="table" data-testid="policies-table">
        <thead><tr><th>${t('Name')}</th><th>${t('Type')}</th><th>${t('Description')}</th><th>${t('Updated')}</th><th>${t('Operation')}</th></tr></thead>
        <tbody>${data.items.map((p) => html`<tr data-policy=${p.name}>
          <td><${Link} href=${`/console/iam/policies/${encodeURIComponent(p.id)}`}>${p.name}<//></td>
          <td>${p.type === 'system' ? t('System policy') : t('Custom policy')}</td><td>${p.description || '-'}</td>
          <td>${fmtTime(p.updated_at)}</td>
          <td>${p.type === 'custom' ? html`<${ActionButton} action="maas:policies:delete" class="link danger"
            onClick=${() => setDeleting(p)}>${t('Delete')}<//>` : '-'}</td>
        </tr>`)}</tbody>
      </table>`}
    ${deleting ? html`<${ConfirmDelete} what=${t('policy')} name=${deleting.name} onClose=${() => setDeleting(null)}
      onConfirm=${async () => { await del(`/api/v1/iam/policies/${deleting.id}`); toast(`${deleting.name} ✓`); reload(); }} />` : null}
  </div>`;
}

// Create (no id) or view / edit (id) a policy; a system policy is shown read-only.
export function PolicyEditPage({ id }) {
  const existing = usePoll(() => (id ? get(`/api/v1/iam/policies/${encodeURIComponent(id)}`) : null), [id]);
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [document, setDocument] = useState(id ? '' : TEMPLATE);
  const [loaded, setLoaded] = useState(!id);
  useEffect(() => {
    if (id && existing.data && !loaded) {
      setName(existing.data.name);
      setDescription(existing.data.description || '');
      setDocument(existing.data.document);
      setLoaded(true);
    }
  }, [existing.data]);
  const readOnly = !!(existing.data && existing.data.type === 'system');
  const validation = useValidation(readOnly ? '' : document);
  const save = useAction(async () => {
    if (id) {
      await api('PATCH', `/api/v1/iam/policies/${encodeURIComponent(id)}`, { name, description, document });
      toast(`${name} ✓`);
      existing.reload();
    } else {
      const created = await post('/api/v1/iam/policies', { name, description, document });
      toast(`${created.name} ✓`);
      navigate(`/console/iam/policies/${created.id}`, { replace: true });
    }
  });
  if (id && existing.error && !existing.data) return html`<${ErrorBox} error=${existing.error} />`;
  if (!loaded) return html`<${Spinner} />`;
  const docError = validation.error || (save.error && fieldError(save.error, 'document') ? save.error : null);
  const errorAt = docError ? errorPosition(docError.message) : null;
  const err = save.error;
  return html`<div>
    <${PageHead} title=${id ? name : t('Create custom policy')} back="/console/iam/policies" />
    <form class="card form" data-testid="policy-form" onSubmit=${(e) => { e.preventDefault(); save.run(); }}>
      <${Field} label=${t('Name')} required error=${fieldError(err, 'name')}>
        <input class="input" name="name" value=${name} readOnly=${readOnly} onInput=${(e) => setName(e.target.value)} /><//>
      <${Field} label=${t('Description')} error=${fieldError(err, 'description')}>
        <input class="input" name="description" value=${description} readOnly=${readOnly}
          onInput=${(e) => setDescription(e.target.value)} /><//>
      <${Field} label=${t('Policy content')} required
        hint=${t('JSON: "Version": "1.1" and "Statement", a list of {"Effect": "Allow" or "Deny", "Action": [...]}. "*" matches anything.')}>
        <${JsonEditor} value=${document} onChange=${setDocument} readOnly=${readOnly} errorAt=${errorAt} />
        ${readOnly ? null : html`<${Validation} state=${{ ...validation, error: docError }} />`}
      <//>
      ${id && existing.data ? html`<${KV} items=${[
        [t('Type'), readOnly ? t('System policy') : t('Custom policy')],
        [t('User groups'), (existing.data.groups || []).map((g) => g.name).join(', ')],
        [t('Updated'), fmtTime(existing.data.updated_at)],
      ]} />` : null}
      ${err && !fieldError(err, 'name', 'description', 'document') ? html`<${ErrorBox} error=${err} />` : null}
      ${readOnly ? null : html`<div class="form-actions">
        <button type="button" class="btn" onClick=${() => navigate('/console/iam/policies')}>${t('Cancel')}</button>
        <${ActionButton} type="submit" action=${id ? 'maas:policies:update' : 'maas:policies:create'} class="btn btn-primary"
          disabled=${save.busy}>${t('Save')}<//>
      </div>`}
    </form>
  </div>`;
}
