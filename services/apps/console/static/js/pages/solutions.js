// Application center (guide chapter 14): connect a running or preset service to the tools people build
// applications with. Dify's OpenAI-API-compatible provider takes the values of the guide's table 12-2.
import { html, useState } from '../lib.js';
import { get } from '../api.js';
import { t } from '../i18n.js';
import { Link } from '../router.js';
import { CodeBlock, Empty, KV, PageHead, Section, usePoll } from '../ui.js';
import { baseUrl } from './services.js';

function langchainExample(service) {
  return `from langchain_openai import ChatOpenAI

llm = ChatOpenAI(
    base_url="${baseUrl(service)}",
    api_key="<your_api_key>",  # an API key from "API keys"
    model="${service.call_model}",
)
print(llm.invoke("Hello!").content)`;
}

function DifySettings({ service }) {
  return html`<${Section} title="Dify">
    <ol class="steps">
      <li>${t('In Dify, open Settings › Model Provider and add a model to "OpenAI-API-compatible".')}</li>
      <li>${t('Fill in the values below, then pick the model in an Agent: Dify switches it to Function Calling.')}</li>
    </ol>
    <div data-testid="dify-settings"><${KV} items=${[
      [t('Model name'), html`<code data-testid="dify-model">${service.call_model}</code>`],
      ['API Key', html`<${Link} href="/console/keys">${t('Create one under API keys')} ›<//>`],
      ['API Endpoint URL', html`<code data-testid="dify-endpoint">${baseUrl(service)}</code>`],
      ['Function calling', 'Tool Call'],
      ['Stream function calling', t('Supported')],
    ]} /></div>
  <//>`;
}

export function SolutionsPage() {
  const params = new URLSearchParams(location.search);
  const mine = usePoll(() => get('/api/v1/services', { limit: 200 }), []);
  const presets = usePoll(() => get('/api/v1/preset-services'), []);
  const running = (mine.data ? mine.data.items : []).filter((s) => s.status === 'running' || s.status === 'alarm');
  // a preset still importing its weights (first start) cannot be called yet
  const presetItems = presets.data ? presets.data.items.filter((s) => s.available !== false) : [];
  const [serviceId, setServiceId] = useState(params.get('service') || '');
  const service = [...running, ...presetItems].find((s) => s.id === serviceId);
  return html`<div>
    <${PageHead} title=${t('Application center')} />
    <p class="hint">${t('Every service speaks the OpenAI API, so tools built for it work unchanged: choose a service to see what to enter.')}</p>
    <div class="toolbar"><select class="input" value=${serviceId} onChange=${(e) => setServiceId(e.target.value)}
      aria-label=${t('Select a service')} data-testid="service-picker">
      <option value="">${t('Select a service')}</option>
      <optgroup label=${t('Preset services')}>${presetItems.map((s) => html`<option value=${s.id}>${s.name}</option>`)}</optgroup>
      <optgroup label=${t('My services')}>${running.map((s) => html`<option value=${s.id}>${s.name}</option>`)}</optgroup>
    </select></div>
    ${service ? html`<div>
      <${DifySettings} service=${service} />
      <${Section} title="LangChain"><${CodeBlock} label="Python" code=${langchainExample(service)} /><//>
    </div>` : html`<${Empty}>${t('Choose a running service, or deploy one first.')} <${Link} href="/console/services">${t('Model deployment')} ›<//><//>`}
  </div>`;
}
