// User groups (guide chapter 2): a group's members and the policies that say what they may do.
import { html, useState } from '../lib.js';
import { del, get, post } from '../api.js';
import { t } from '../i18n.js';
import { Link, navigate } from '../router.js';
import {
  ActionButton, ConfirmDelete, Empty, ErrorBox, Field, KV, Modal, PageHead, Section, Spinner, fieldError, fmtTime,
  toast, useAction, usePoll,
} from '../ui.js';

function CreateGroupDialog({ policies, onClose }) {
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [policyIds, setPolicyIds] = useState([]);
  const action = useAction(async () => {
    const group = await post('/api/v1/iam/groups', { name, description, policy_ids: policyIds });
    toast(`${group.name} ✓`);
    navigate(`/console/iam/groups/${group.id}`);
  });
  const toggle = (id) => setPolicyIds((ids) => (ids.includes(id) ? ids.filter((x) => x !== id) : [...ids, id]));
  const err = action.error;
  return html`<${Modal} title=${t('Create user group')} onClose=${onClose} footer=${html`
      <button class="btn" onClick=${onClose}>${t('Cancel')}</button>
      <button class="btn btn-primary" data-testid="create-group-ok" disabled=${action.busy} onClick=${() => action.run()}>${t('OK')}</button>`}>
    <div class="form" data-testid="create-group-form">
      <${Field} label=${t('Name')} required error=${fieldError(err, 'name')}>
        <input class="input" name="name" value=${name} onInput=${(e) => setName(e.target.value)} /><//>
      <${Field} label=${t('Description')} error=${fieldError(err, 'description')} hint=${`${description.length}/256`}>
        <textarea class="input" rows="2" value=${description} onInput=${(e) => setDescription(e.target.value)}></textarea><//>
      <${Field} label=${t('Policies')} error=${fieldError(err, 'policy_ids')}>
        <div class="check-list">${policies.map((p) => html`<label>
          <input type="checkbox" data-policy=${p.name} checked=${policyIds.includes(p.id)} onChange=${() => toggle(p.id)} />
          ${p.name} <span class="muted small">${p.description}</span></label>`)}</div><//>
      ${err && !fieldError(err, 'name', 'description', 'policy_ids') ? html`<${ErrorBox} error=${err} />` : null}
    </div>
  <//>`;
}

export function GroupsPage() {
  const groups = usePoll(() => get('/api/v1/iam/groups'), []);
  const policies = usePoll(() => get('/api/v1/iam/policies'), []);
  const [creating, setCreating] = useState(false);
  const [deleting, setDeleting] = useState(null);
  const data = groups.data;
  return html`<div>
    <${PageHead} title=${t('User groups')}>
      <${ActionButton} action="maas:groups:create" class="btn btn-primary" onClick=${() => setCreating(true)}>${t('Create user group')}<//>
    <//>
    <p class="muted small">${t('Give a group policies; its members may do what the policies allow. Changes take effect on the next call.')}</p>
    <${ErrorBox} error=${groups.error} />
    ${!data ? html`<${Spinner} />` : data.items.length === 0 ? html`<${Empty} />` : html`
      <table class="table" data-testid="groups-table">
        <thead><tr><th>${t('Name')}</th><th>${t('Description')}</th><th>${t('Members')}</th><th>${t('Policies')}</th>
          <th>${t('Created')}</th><th>${t('Operation')}</th></tr></thead>
        <tbody>${data.items.map((g) => html`<tr data-group=${g.name}>
          <td><${Link} href=${`/console/iam/groups/${g.id}`}>${g.name}<//></td><td>${g.description || '-'}</td>
          <td>${g.member_count}</td><td>${g.policies.map((p) => p.name).join(', ') || '-'}</td><td>${fmtTime(g.created_at)}</td>
          <td><${ActionButton} action="maas:groups:delete" class="link danger" onClick=${() => setDeleting(g)}>${t('Delete')}<//></td>
        </tr>`)}</tbody>
      </table>`}
    ${creating ? html`<${CreateGroupDialog} policies=${policies.data ? policies.data.items : []} onClose=${() => setCreating(false)} />` : null}
    ${deleting ? html`<${ConfirmDelete} what=${t('user group')} name=${deleting.name} onClose=${() => setDeleting(null)}
      onConfirm=${async () => { await del(`/api/v1/iam/groups/${deleting.id}`); toast(`${deleting.name} ✓`); groups.reload(); }} />` : null}
  </div>`;
}

// Pick one of `options` ({id, label}) not already in the list, and add it.
function AddRow({ options, action, label, testid, onAdd }) {
  const [chosen, setChosen] = useState('');
  const add = useAction(async () => { if (chosen) { await onAdd(chosen); setChosen(''); } });
  return html`<div class="toolbar">
    <select class="input" data-testid=${testid} value=${chosen} onChange=${(e) => setChosen(e.target.value)}>
      <option value="">${label}</option>
      ${options.map((o) => html`<option value=${o.id}>${o.label}</option>`)}
    </select>
    <${ActionButton} action=${action} class="btn" disabled=${!chosen || add.busy} data-testid=${testid + '-add'}
      onClick=${() => add.run()}>${t('Add')}<//>
    <${ErrorBox} error=${add.error} />
  </div>`;
}

export function GroupPage({ id }) {
  const group = usePoll(() => get(`/api/v1/iam/groups/${id}`), [id]);
  const users = usePoll(() => get('/api/v1/iam/users'), []);
  const policies = usePoll(() => get('/api/v1/iam/policies'), []);
  const remove = useAction(async (path) => { await del(path); group.reload(); });
  const g = group.data;
  if (group.error && !g) return html`<${ErrorBox} error=${group.error} />`;
  if (!g) return html`<${Spinner} />`;
  const memberIds = new Set(g.members.map((m) => m.id));
  const policyIds = new Set(g.policies.map((p) => p.id));
  const userOptions = (users.data ? users.data.items : []).filter((u) => !memberIds.has(u.id))
    .map((u) => ({ id: u.id, label: u.username }));
  const policyOptions = (policies.data ? policies.data.items : []).filter((p) => !policyIds.has(p.id))
    .map((p) => ({ id: p.id, label: `${p.name} (${p.type === 'system' ? t('System policy') : t('Custom policy')})` }));
  return html`<div>
    <${PageHead} title=${g.name} back="/console/iam/groups" />
    <${Section} title=${t('Basic information')}>
      <${KV} items=${[['ID', html`<code>${g.id}</code>`], [t('Description'), g.description], [t('Created'), fmtTime(g.created_at)]]} />
    <//>
    <${ErrorBox} error=${remove.error} />
    <${Section} title=${t('Members')}>
      <${AddRow} options=${userOptions} action="maas:groups:addMember" label=${t('Select a user')} testid="add-member"
        onAdd=${async (userId) => { await post(`/api/v1/iam/groups/${g.id}/members`, { user_id: userId }); group.reload(); }} />
      ${g.members.length === 0 ? html`<${Empty} />` : html`<table class="table" data-testid="group-members">
        <thead><tr><th>${t('Username')}</th><th>${t('Operation')}</th></tr></thead>
        <tbody>${g.members.map((m) => html`<tr data-member=${m.username}><td>${m.username}</td>
          <td><${ActionButton} action="maas:groups:removeMember" class="link danger"
            onClick=${() => remove.run(`/api/v1/iam/groups/${g.id}/members/${m.id}`)}>${t('Remove')}<//></td></tr>`)}</tbody>
      </table>`}
    <//>
    <${Section} title=${t('Policies')}>
      <${AddRow} options=${policyOptions} action="maas:groups:attachPolicy" label=${t('Select a policy')} testid="attach-policy"
        onAdd=${async (policyId) => { await post(`/api/v1/iam/groups/${g.id}/policies`, { policy_id: policyId }); group.reload(); }} />
      ${g.policies.length === 0 ? html`<${Empty} />` : html`<table class="table" data-testid="group-policies">
        <thead><tr><th>${t('Name')}</th><th>${t('Type')}</th><th>${t('Operation')}</th></tr></thead>
        <tbody>${g.policies.map((p) => html`<tr data-policy=${p.name}>
          <td><${Link} href=${`/console/iam/policies/${encodeURIComponent(p.id)}`}>${p.name}<//></td>
          <td>${p.type === 'system' ? t('System policy') : t('Custom policy')}</td>
          <td><${ActionButton} action="maas:groups:detachPolicy" class="link danger"
            onClick=${() => remove.run(`/api/v1/iam/groups/${g.id}/policies/${encodeURIComponent(p.id)}`)}>${t('Detach')}<//></td></tr>`)}</tbody>
      </table>`}
    <//>
  </div>`;
}
