// The console shell: login gate, left navigation (the guide's order), language switch, page routing.
import { html, render, useEffect, useState } from './lib.js';
import { auth, get, setPlatformWarningHandler, setUnauthorizedHandler } from './api.js';
import { getLang, onLangChange, setLang, t } from './i18n.js';
import { Link, match, navigate, useLocation } from './router.js';
import { PageAccess, Toasts } from './ui.js';
import { LoginPage } from './pages/login.js';
import { SquarePage, TemplatePage } from './pages/square.js';
import { ModelsPage, ModelCreatePage, ModelPage, VersionPage } from './pages/models.js';
import { TuningPage, TuningCreatePage, TuningJobPage } from './pages/tuning.js';
import { CompressionPage, CompressionCreatePage, CompressionJobPage } from './pages/compression.js';
import { ServicesPage, DeployPage, ServicePage } from './pages/services.js';
import { PoolsPage, PoolPage } from './pages/pools.js';
import { PlaygroundPage } from './pages/playground.js';
import { KeysPage } from './pages/keys.js';
import { NotificationsPage } from './pages/notifications.js';
import { TracesPage } from './pages/traces.js';
import { SolutionsPage } from './pages/solutions.js';
import { UsersPage } from './pages/users.js';
import { GroupsPage, GroupPage } from './pages/groups.js';
import { PoliciesPage, PolicyEditPage } from './pages/policies.js';
import { AuditPage } from './pages/audit.js';

const NAV = [
  ['/console/square', 'Model square', '◈'],
  ['/console/models', 'My models', '▣'],
  ['/console/tuning', 'Model tuning', '⚙'],
  ['/console/compression', 'Model compression', '⇲'],
  ['/console/services', 'Model deployment', '☁'],
  ['/console/pools', 'Resource pools', '▦'],
  ['/console/playground', 'Playground', '✦'],
  ['/console/keys', 'API keys', '⚷'],
  ['/console/solutions', 'Application center', '❖'],
  ['/console/notifications', 'Notifications', '✉'],
  ['/console/traces', 'Traces', '⌇'],
];

// Account administration: shown to the account's administrators only (GET /api/v1/auth/me).
const ADMIN_NAV = [
  ['/console/iam/users', 'IAM users', '☺'],
  ['/console/iam/groups', 'User groups', '☷'],
  ['/console/iam/policies', 'Policies', '⚖'],
  ['/console/audit', 'Audit log', '☰'],
];

// Each page with the actions it needs: the "access restricted" dialog lists those the user lacks.
const ROUTES = [
  ['/console/square', SquarePage, ['maas:templates:list']],
  ['/console/square/:id', TemplatePage, ['maas:templates:get']],
  ['/console/models', ModelsPage, ['maas:models:list']],
  ['/console/models/create', ModelCreatePage, ['maas:models:create', 'maas:templates:list', 'maas:objects:put']],
  ['/console/models/:id', ModelPage, ['maas:models:get']],
  ['/console/models/:id/versions/:version', VersionPage, ['maas:models:getVersion']],
  ['/console/tuning', TuningPage, ['maas:tuningJobs:list']],
  ['/console/tuning/create', TuningCreatePage, ['maas:tuningJobs:create', 'maas:tuningJobs:estimate']],
  ['/console/tuning/:id', TuningJobPage, ['maas:tuningJobs:get']],
  ['/console/compression', CompressionPage, ['maas:compressionJobs:list']],
  ['/console/compression/create', CompressionCreatePage, ['maas:compressionJobs:create']],
  ['/console/compression/:id', CompressionJobPage, ['maas:compressionJobs:get']],
  ['/console/services', ServicesPage, ['maas:services:list']],
  ['/console/services/deploy', DeployPage, ['maas:services:create', 'maas:services:listInstanceSpecs']],
  ['/console/services/:id', ServicePage, ['maas:services:get']],
  ['/console/pools', PoolsPage, ['maas:pools:list', 'maas:usage:listCompute', 'maas:packages:list']],
  ['/console/pools/:name', PoolPage, ['maas:pools:get']],
  ['/console/playground', PlaygroundPage, ['maas:services:list', 'maas:inference:call']],
  ['/console/keys', KeysPage, ['maas:apiKeys:list']],
  ['/console/solutions', SolutionsPage, ['maas:services:list']],
  ['/console/notifications', NotificationsPage, ['maas:notificationTopics:list']],
  ['/console/traces', TracesPage, ['maas:traces:list']],
  ['/console/iam/users', UsersPage, ['maas:users:list', 'maas:groups:list']],
  ['/console/iam/groups', GroupsPage, ['maas:groups:list']],
  ['/console/iam/groups/:id', GroupPage, ['maas:groups:get', 'maas:users:list', 'maas:policies:list']],
  ['/console/iam/policies', PoliciesPage, ['maas:policies:list']],
  ['/console/iam/policies/create', PolicyEditPage, ['maas:policies:create', 'maas:policies:validate']],
  ['/console/iam/policies/:id', PolicyEditPage, ['maas:policies:get', 'maas:policies:validate']],
  ['/console/audit', AuditPage, ['maas:audit:list']],
];

function route(path) {
  for (const [pattern, page, actions] of ROUTES) {
    const params = match(pattern, path);
    if (params) return { page, params, actions };
  }
  return null;
}

function LangSwitch() {
  const lang = getLang();
  return html`<div class="lang-switch" aria-label=${t('Language')}>
    <button class=${lang === 'zh' ? 'active' : ''} onClick=${() => setLang('zh')}>中文</button>
    <button class=${lang === 'en' ? 'active' : ''} onClick=${() => setLang('en')}>EN</button>
  </div>`;
}

// Who is signed in (account role included): asked once per token.
function useMe() {
  const [me, setMe] = useState(null);
  const token = auth.token;
  useEffect(() => {
    let live = true;
    get('/api/v1/auth/me').then((answer) => live && setMe(answer), () => {});
    return () => { live = false; };
  }, [token]);
  return me;
}

function NavItem({ href, label, icon, path }) {
  return html`<${Link} href=${href} class=${'nav-item' + (path === href || path.startsWith(href + '/') ? ' active' : '')}>
    <span class="nav-icon">${icon}</span>${t(label)}<//>`;
}

function Shell({ path, children }) {
  const user = auth.user;
  const me = useMe();
  const [warning, setWarning] = useState(null);
  useEffect(() => { setPlatformWarningHandler(setWarning); return () => setPlatformWarningHandler(() => {}); }, []);
  const logout = () => { auth.clear(); navigate('/console/login'); };
  return html`<div class="shell">
    <aside class="sidebar">
      <div class="brand"><img src="/console/assets/favicon.svg" alt="" /><span>OpenMaaS</span></div>
      <nav>
        ${NAV.map(([href, label, icon]) => html`<${NavItem} href=${href} label=${label} icon=${icon} path=${path} />`)}
        ${me && me.account_role === 'admin' ? html`<div class="nav-group" data-testid="nav-admin">${t('Access control')}</div>
          ${ADMIN_NAV.map(([href, label, icon]) => html`<${NavItem} href=${href} label=${label} icon=${icon} path=${path} />`)}` : null}
      </nav>
    </aside>
    <div class="main">
      <header class="topbar">
        <div class="crumb">ModelArts Studio · MaaS</div>
        <div class="topbar-right">
          <${LangSwitch} />
          <span class="user" data-testid="current-user">${user ? user.username : ''}</span>
          <button class="btn btn-small" onClick=${logout}>${t('Log out')}</button>
        </div>
      </header>
      ${warning ? html`<div class="notice notice-warn" role="status" data-testid="platform-warning">${warning}</div>` : null}
      <main class="content">${children}</main>
    </div>
  </div>`;
}

function App() {
  const { path } = useLocation();
  const [, setLangTick] = useState(0);
  useEffect(() => onLangChange(() => setLangTick((n) => n + 1)), []);
  useEffect(() => setUnauthorizedHandler(() => {
    auth.clear();
    if (!location.pathname.startsWith('/console/login')) {
      navigate(`/console/login?next=${encodeURIComponent(location.pathname + location.search)}`, { replace: true });
    }
  }), []);

  // Redirects run as effects: the router's listener is registered by then (not during the first render).
  let redirect = null;
  if (path === '/' || path === '/console' || path === '/console/') redirect = auth.token ? '/console/square' : '/console/login';
  else if (path !== '/console/login' && !auth.token) redirect = `/console/login?next=${encodeURIComponent(path + location.search)}`;
  useEffect(() => { if (redirect) navigate(redirect, { replace: true }); }, [redirect]);
  if (redirect) return null;
  if (path === '/console/login') return html`<${LoginPage} /><${Toasts} />`;
  const found = route(path);
  const Page = found ? found.page : null;
  return html`<${Shell} path=${path}>
    ${Page ? html`<${Page} key=${path} ...${found.params} /><${PageAccess} key=${'access:' + path} actions=${found.actions} />`
    : html`<div class="empty">404 · ${path}</div>`}
  <//><${Toasts} />`;
}

// The boot placeholder goes first: Preact keeps DOM it did not render when the first render is empty (a
// redirect), and the placeholder then stayed above the login card and the whole app until a reload.
const root = document.getElementById('app');
root.replaceChildren();
render(html`<${App} />`, root);
