// IAM users (guide chapter 2): the account's users, their account role, status and groups.
import { html, useState } from '../lib.js';
import { auth, del, get, post, api } from '../api.js';
import { t } from '../i18n.js';
import { Link } from '../router.js';
import {
  ActionButton, ConfirmDelete, Empty, ErrorBox, Field, Modal, PageHead, Spinner, StatusTag, fieldError, fmtTime,
  toast, useAction, usePoll,
} from '../ui.js';

const patch = (path, body) => api('PATCH', path, body);

function CreateUserDialog({ groups, onClose, onCreated }) {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [role, setRole] = useState('member');
  const [groupIds, setGroupIds] = useState([]);
  const action = useAction(async () => {
    const user = await post('/api/v1/iam/users', { username, password, account_role: role, group_ids: groupIds });
    toast(`${user.username} ✓`);
    onCreated();
    onClose();
  });
  const toggle = (id) => setGroupIds((ids) => (ids.includes(id) ? ids.filter((x) => x !== id) : [...ids, id]));
  const err = action.error;
  return html`<${Modal} title=${t('Create user')} onClose=${onClose} footer=${html`
      <button class="btn" onClick=${onClose}>${t('Cancel')}</button>
      <button class="btn btn-primary" data-testid="create-user-ok" disabled=${action.busy} onClick=${() => action.run()}>${t('OK')}</button>`}>
    <div class="form" data-testid="create-user-form">
      <${Field} label=${t('Username')} required error=${fieldError(err, 'username')}>
        <input class="input" name="username" value=${username} onInput=${(e) => setUsername(e.target.value)} /><//>
      <${Field} label=${t('Password')} required hint=${t('At least {n} characters', { n: 8 })} error=${fieldError(err, 'password')}>
        <input class="input" type="password" name="password" autocomplete="new-password" value=${password}
          onInput=${(e) => setPassword(e.target.value)} /><//>
      <${Field} label=${t('Account role')}>
        <select class="input" name="account_role" value=${role} onChange=${(e) => setRole(e.target.value)}>
          <option value="member">${t('Member')}</option><option value="admin">${t('Administrator')}</option>
        </select><//>
      <${Field} label=${t('User groups')} error=${fieldError(err, 'group_ids')}
        hint=${role === 'admin' ? t('An administrator has every action in the account.') : t('A member may do what the policies of their groups allow.')}>
        ${groups.length ? html`<div class="check-list">${groups.map((g) => html`<label>
          <input type="checkbox" data-group=${g.name} checked=${groupIds.includes(g.id)} onChange=${() => toggle(g.id)} />
          ${g.name} <span class="muted small">${g.policies.map((p) => p.name).join(', ')}</span></label>`)}</div>`
        : html`<span class="muted">${t('No user groups yet.')} <${Link} href="/console/iam/groups">${t('Create one')}<//></span>`}<//>
      ${err && !fieldError(err, 'username', 'password', 'group_ids') ? html`<${ErrorBox} error=${err} />` : null}
    </div>
  <//>`;
}

export function UsersPage() {
  const users = usePoll(() => get('/api/v1/iam/users'), []);
  const groups = usePoll(() => get('/api/v1/iam/groups'), []);
  const [creating, setCreating] = useState(false);
  const [deleting, setDeleting] = useState(null);
  const change = useAction(async (user, body) => {
    await patch(`/api/v1/iam/users/${user.id}`, body);
    toast(`${user.username} ✓`);
    users.reload();
  });
  const me = auth.user ? auth.user.username : null;
  const data = users.data;
  return html`<div>
    <${PageHead} title=${t('IAM users')}>
      <${ActionButton} action="maas:users:create" class="btn btn-primary" onClick=${() => setCreating(true)}>${t('Create user')}<//>
    <//>
    <p class="muted small">${t('Users of your account sign in with their own password; what they may do comes from the policies of their user groups.')}</p>
    <${ErrorBox} error=${users.error || change.error} />
    ${!data ? html`<${Spinner} />` : data.items.length === 0 ? html`<${Empty} />` : html`
      <table class="table" data-testid="users-table">
        <thead><tr><th>${t('Username')}</th><th>${t('Account role')}</th><th>${t('Status')}</th><th>${t('User groups')}</th>
          <th>${t('Created')}</th><th>${t('Operation')}</th></tr></thead>
        <tbody>${data.items.map((u) => html`<tr data-user=${u.username}>
          <td>${u.username}${u.platform_admin ? html` <span class="tag">${t('Platform administrator')}</span>` : null}
            <div class="muted small">${u.id}</div></td>
          <td>${u.account_role === 'admin' ? t('Administrator') : t('Member')}</td>
          <td><${StatusTag} status=${u.status} kind="user" /></td>
          <td>${u.groups.length ? u.groups.map((g, i) => html`${i ? ', ' : ''}<${Link} href=${`/console/iam/groups/${g.id}`}>${g.name}<//>`) : '-'}</td>
          <td>${fmtTime(u.created_at)}</td>
          <td class="ops">
            <${ActionButton} action="maas:users:update" class="link" disabled=${change.busy || u.username === me}
              onClick=${() => change.run(u, { status: u.status === 'active' ? 'disabled' : 'active' })}>
              ${u.status === 'active' ? t('Disable') : t('Enable')}<//>
            <${ActionButton} action="maas:users:update" class="link" disabled=${change.busy}
              onClick=${() => change.run(u, { account_role: u.account_role === 'admin' ? 'member' : 'admin' })}>
              ${u.account_role === 'admin' ? t('Make member') : t('Make administrator')}<//>
            <${ActionButton} action="maas:users:delete" class="link danger" disabled=${u.username === me}
              onClick=${() => setDeleting(u)}>${t('Delete')}<//>
          </td>
        </tr>`)}</tbody>
      </table>`}
    ${creating ? html`<${CreateUserDialog} groups=${groups.data ? groups.data.items : []} onClose=${() => setCreating(false)}
      onCreated=${users.reload} />` : null}
    ${deleting ? html`<${ConfirmDelete} what=${t('user')} name=${deleting.username} onClose=${() => setDeleting(null)}
      onConfirm=${async () => { await del(`/api/v1/users/${deleting.id}`); toast(`${deleting.username} ✓`); users.reload(); }} />` : null}
  </div>`;
}
