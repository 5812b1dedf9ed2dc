// Playground (guide chapter 10): pick a running or preset service, set temperature / top_p / top_k
// (table 10-1 ranges and defaults, "restore defaults"), chat with streamed answers.
import { html, useEffect, useRef, useState } from '../lib.js';
import { get, streamSSE } from '../api.js';
import { t } from '../i18n.js';
import { Link } from '../router.js';
import { ErrorBox, Field, PageHead, Section, usePoll } from '../ui.js';

// Table 10-1; the API's /playground/parameters answer replaces these when it loads.
const GUIDE_PARAMETERS = {
  temperature: { min: 0, max: 2, default: 1 },
  top_p: { min: 0.1, max: 1, default: 1 },
  top_k: { min: 1, max: 1000, default: 20 },
};
const STEPS = { temperature: 0.01, top_p: 0.01, top_k: 1 };
const LABELS = { temperature: 'Temperature', top_p: 'Top P', top_k: 'Top K' };
// Left empty, the playground API answers up to 512 tokens (at most half the service's context;
// contracts.openai.interactive_max_tokens), not /v1's default of 16.
const DEFAULT_MAX_TOKENS = 512;

function defaults(ranges) {
  return Object.fromEntries(Object.entries(ranges).map(([k, r]) => [k, r.default]));
}

function Slider({ name, range, value, onChange }) {
  const clamp = (v) => Math.min(range.max, Math.max(range.min, v));
  return html`<${Field} label=${t(LABELS[name])} hint=${`${range.min} ~ ${range.max} · ${t('Default')}: ${range.default}`}>
    <div class="slider-row" data-param=${name}>
      <input type="range" min=${range.min} max=${range.max} step=${STEPS[name]} value=${value}
        onInput=${(e) => onChange(Number(e.target.value))} aria-label=${name} />
      <input class="input narrow" type="number" min=${range.min} max=${range.max} step=${STEPS[name]} value=${value}
        onChange=${(e) => onChange(clamp(Number(e.target.value)))} aria-label=${name + ' value'} />
    </div>
  <//>`;
}

export function PlaygroundPage() {
  const params = new URLSearchParams(location.search);
  const mine = usePoll(() => get('/api/v1/services', { limit: 200 }), []);
  const presets = usePoll(() => get('/api/v1/preset-services'), []);
  const ranges = usePoll(() => get('/api/v1/playground/parameters').catch(() => GUIDE_PARAMETERS), []);
  const r = ranges.data || GUIDE_PARAMETERS;
  const [serviceId, setServiceId] = useState(params.get('service') || '');
  const [values, setValues] = useState(defaults(GUIDE_PARAMETERS));
  const [maxTokens, setMaxTokens] = useState('');
  const [system, setSystem] = useState('');
  const [messages, setMessages] = useState([]);
  const [input, setInput] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const abort = useRef(null);
  const log = useRef(null);
  useEffect(() => { if (ranges.data) setValues(defaults(ranges.data)); }, [ranges.data]);
  useEffect(() => { if (log.current) log.current.scrollTop = log.current.scrollHeight; }, [messages]);

  const running = (mine.data ? mine.data.items : []).filter((s) => s.status === 'running' || s.status === 'alarm');
  // a preset still importing its weights (first start) cannot be called yet
  const presetItems = presets.data ? presets.data.items.filter((s) => s.available !== false) : [];
  const preset = presetItems.find((s) => s.id === serviceId);

  const send = async (e) => {
    e && e.preventDefault();
    const text = input.trim();
    if (!text || !serviceId || busy) return;
    const history = [...messages, { role: 'user', content: text }];
    setMessages([...history, { role: 'assistant', content: '' }]);
    setInput('');
    setBusy(true);
    setError(null);
    abort.current = new AbortController();
    const body = {
      service_id: serviceId, stream: true, ...values,
      messages: [...(system.trim() ? [{ role: 'system', content: system.trim() }] : []), ...history],
      ...(Number(maxTokens) > 0 ? { max_tokens: Number(maxTokens) } : {}),
    };
    let answer = '';
    let cut = false;   // finish_reason "length": the answer stopped at max_tokens, not at its end
    try {
      await streamSSE('/api/v1/playground/chat', body, (event) => {
        const choice = event.choices && event.choices[0];
        const delta = choice && choice.delta;
        if (choice && choice.finish_reason === 'length') cut = true;
        if (delta && delta.content) answer += delta.content;
        if ((delta && delta.content) || event.usage || cut) {
          setMessages([...history, { role: 'assistant', content: answer, cut, ...(event.usage ? { usage: event.usage } : {}) }]);
        }
      }, { signal: abort.current.signal });
    } catch (err) {
      if (err.name !== 'AbortError') setError(err);
      if (!answer) setMessages(history);
    } finally {
      setBusy(false);
      abort.current = null;
    }
  };

  return html`<div>
    <${PageHead} title=${t('Playground')} />
    <div class="playground">
      <div class="chat card">
        <div class="chat-head">
          <select class="input grow" value=${serviceId} onChange=${(e) => { setServiceId(e.target.value); setMessages([]); }}
            aria-label=${t('Select a service')} data-testid="service-picker">
            <option value="">${t('Select a service')}</option>
            <optgroup label=${t('Preset services')}>${presetItems.map((s) => html`<option value=${s.id}>${s.name}${s.quota.claimed ? '' : ` (${t('Free quota')}: ${t('Claim')})`}</option>`)}</optgroup>
            <optgroup label=${t('My services')}>${running.map((s) => html`<option value=${s.id}>${s.name}</option>`)}</optgroup>
          </select>
          <button class="btn" onClick=${() => { setMessages([]); setError(null); }}>${t('Clear')}</button>
        </div>
        ${preset && !preset.quota.claimed ? html`<div class="notice">${t('Free quota')}: <${Link} href="/console/services?tab=preset">${t('Claim')} ›<//></div>` : null}
        <div class="chat-log" ref=${log} data-testid="chat-log">
          ${messages.length === 0 ? html`<div class="empty">${t('Start a conversation with the selected service.')}</div>` : null}
          ${messages.map((m) => html`<div class=${'msg msg-' + m.role}><div class="bubble">${m.content || (busy ? '…' : '')}</div>
            ${m.cut ? html`<div class="notice small" data-testid="answer-cut">${t('The answer stopped at the max tokens limit; raise Max tokens for a longer one.')}</div>` : null}
            ${m.usage ? html`<div class="muted small">${m.usage.prompt_tokens} + ${m.usage.completion_tokens} tokens</div>` : null}</div>`)}
        </div>
        <${ErrorBox} error=${error} />
        <form class="chat-input" onSubmit=${send}>
          <textarea class="input grow" rows="2" placeholder=${t('Type a message…')} value=${input} data-testid="chat-input"
            onInput=${(e) => setInput(e.target.value)} onKeyDown=${(e) => { if (e.key === 'Enter' && !e.shiftKey) send(e); }}></textarea>
          ${busy ? html`<button type="button" class="btn" onClick=${() => abort.current && abort.current.abort()}>${t('Stop generating')}</button>`
            : html`<button type="submit" class="btn btn-primary" disabled=${!serviceId || !input.trim()}>${t('Send')}</button>`}
        </form>
      </div>
      <${Section} title=${t('Parameter settings')} actions=${html`<button class="btn btn-small" data-action="restore-defaults"
          onClick=${() => setValues(defaults(r))}>${t('Restore defaults')}</button>`}>
        ${Object.keys(GUIDE_PARAMETERS).map((name) => html`<${Slider} name=${name} range=${r[name] || GUIDE_PARAMETERS[name]}
          value=${values[name]} onChange=${(v) => setValues({ ...values, [name]: v })} />`)}
        <${Field} label=${t('Max tokens')} hint=${`${t('Default')}: ${DEFAULT_MAX_TOKENS}`}><input class="input narrow" type="number" min="1" value=${maxTokens} placeholder=${String(DEFAULT_MAX_TOKENS)}
          aria-label="max_tokens" onInput=${(e) => setMaxTokens(e.target.value)} /><//>
        <${Field} label=${t('System prompt')}><textarea class="input" rows="3" value=${system} onInput=${(e) => setSystem(e.target.value)}></textarea><//>
      <//>
    </div>
  </div>`;
}
