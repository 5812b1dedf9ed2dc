import { html, useState } from '../lib.js';
import { auth, get, post } from '../api.js';
import { getLang, setLang, t } from '../i18n.js';
import { navigate } from '../router.js';
import { ErrorBox, useAction } from '../ui.js';

export function LoginPage() {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const action = useAction(async () => {
    const answer = await post('/api/v1/auth/login', { username, password });
    auth.set(answer.token, { username: answer.username, tenant_id: answer.tenant_id });
    const me = await get('/api/v1/auth/me');
    auth.set(answer.token, me);
    const next = new URLSearchParams(location.search).get('next');
    navigate(next && next.startsWith('/console/') && !next.startsWith('/console/login') ? next : '/console/square',
      { replace: true });
  });
  const submit = (e) => { e.preventDefault(); action.run(); };
  const lang = getLang();
  return html`<div class="login-page">
    <form class="login-card card" onSubmit=${submit}>
      <div class="login-brand"><img src="/console/assets/favicon.svg" alt="" /><div>
        <h1>OpenMaaS</h1><p class="muted">${t('Self-hosted Model-as-a-Service')}</p></div></div>
      <label>${t('Username')}<input class="input" name="username" autocomplete="username" value=${username}
        onInput=${(e) => setUsername(e.target.value)} required /></label>
      <label>${t('Password')}<input class="input" name="password" type="password" autocomplete="current-password"
        value=${password} onInput=${(e) => setPassword(e.target.value)} required /></label>
      <${ErrorBox} error=${action.error} />
      <button class="btn btn-primary btn-block" type="submit" disabled=${action.busy}>
        ${action.busy ? t('Logging in…') : t('Log in')}</button>
      <div class="login-lang">
        <button type="button" class=${'link' + (lang === 'zh' ? ' active' : '')} onClick=${() => setLang('zh')}>中文</button> ·
        <button type="button" class=${'link' + (lang === 'en' ? ' active' : '')} onClick=${() => setLang('en')}>English</button>
      </div>
    </form>
  </div>`;
}
