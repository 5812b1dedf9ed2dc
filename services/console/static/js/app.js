// The console shell: login gate, left navigation (the guide's order), language switch, page routing.
import { html, render, useEffect, useState } from './lib.js';
import { auth, setUnauthorizedHandler } from './api.js';
import { getLang, onLangChange, setLang, t } from './i18n.js';
import { Link, match, navigate, useLocation } from './router.js';
import { Toasts } from './ui.js';
import { LoginPage } from './pages/login.js';
import { SquarePage, TemplatePage } from './pages/square.js';
import { ModelsPage, ModelCreatePage, ModelPage, VersionPage } from './pages/models.js';
import { TuningPage, TuningCreatePage, TuningJobPage } from './pages/tuning.js';
import { CompressionPage, CompressionCreatePage, CompressionJobPage } from './pages/compression.js';
import { ServicesPage, DeployPage, ServicePage } from './pages/services.js';
import { PlaygroundPage } from './pages/playground.js';
import { KeysPage } from './pages/keys.js';
import { NotificationsPage } from './pages/notifications.js';
import { TracesPage } from './pages/traces.js';
import { SolutionsPage } from './pages/solutions.js';

const NAV = [
  ['/console/square', 'Model square', '◈'],
  ['/console/models', 'My models', '▣'],
  ['/console/tuning', 'Model tuning', '⚙'],
  ['/console/compression', 'Model compression', '⇲'],
  ['/console/services', 'Model deployment', '☁'],
  ['/console/playground', 'Playground', '✦'],
  ['/console/keys', 'API keys', '⚷'],
  ['/console/solutions', 'Application center', '❖'],
  ['/console/notifications', 'Notifications', '✉'],
  ['/console/traces', 'Traces', '⌇'],
];

const ROUTES = [
  ['/console/square', SquarePage],
  ['/console/square/:id', TemplatePage],
  ['/console/models', ModelsPage],
  ['/console/models/create', ModelCreatePage],
  ['/console/models/:id', ModelPage],
  ['/console/models/:id/versions/:version', VersionPage],
  ['/console/tuning', TuningPage],
  ['/console/tuning/create', TuningCreatePage],
  ['/console/tuning/:id', TuningJobPage],
  ['/console/compression', CompressionPage],
  ['/console/compression/create', CompressionCreatePage],
  ['/console/compression/:id', CompressionJobPage],
  ['/console/services', ServicesPage],
  ['/console/services/deploy', DeployPage],
  ['/console/services/:id', ServicePage],
  ['/console/playground', PlaygroundPage],
  ['/console/keys', KeysPage],
  ['/console/solutions', SolutionsPage],
  ['/console/notifications', NotificationsPage],
  ['/console/traces', TracesPage],
];

function route(path) {
  for (const [pattern, page] of ROUTES) {
    const params = match(pattern, path);
    if (params) return { page, params };
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

function Shell({ path, children }) {
  const user = auth.user;
  const logout = () => { auth.clear(); navigate('/console/login'); };
  return html`<div class="shell">
    <aside class="sidebar">
      <div class="brand"><img src="/console/assets/favicon.svg" alt="" /><span>OpenMaaS</span></div>
      <nav>
        ${NAV.map(([href, label, icon]) => html`<${Link} href=${href}
            class=${'nav-item' + (path === href || path.startsWith(href + '/') ? ' active' : '')}>
          <span class="nav-icon">${icon}</span>${t(label)}<//>`)}
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
    ${Page ? html`<${Page} key=${path} ...${found.params} />` : html`<div class="empty">404 · ${path}</div>`}
  <//><${Toasts} />`;
}

render(html`<${App} />`, document.getElementById('app'));
