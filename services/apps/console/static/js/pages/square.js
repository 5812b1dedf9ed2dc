// Model square (guide chapter 4): template cards, filters, detail with tune / compress / deploy buttons.
import { html, useState } from '../lib.js';
import { get } from '../api.js';
import { getLang, t } from '../i18n.js';
import { Link, navigate } from '../router.js';
import { ActionButton, Empty, ErrorBox, KV, PageHead, Section, Spinner, StatusTag, usePoll } from '../ui.js';

export function canTune(tpl) { return !tpl.quantization && (tpl.tasks.tune || []).length > 0; }
export function canCompress(tpl) { return !tpl.quantization && (tpl.tasks.compress || []).length > 0; }
export function canDeploy(tpl) { return !!tpl.tasks.deploy; }

const zh = () => getLang() === 'zh';
const seriesName = (tpl) => (zh() ? tpl.series_zh : tpl.series);
const scenarios = (tpl) => (zh() ? tpl.scenarios_zh : tpl.scenarios).join(zh() ? '、' : ', ');
const langs = (tpl) => tpl.languages.map((l) => (l === 'zh' ? t('Chinese') : t('English'))).join(zh() ? '、' : ', ');
const description = (tpl) => (zh() ? tpl.description_zh || tpl.description : tpl.description);

function TaskBadges({ tpl }) {
  return html`<div class="badges">
    <span class=${'badge' + (canTune(tpl) ? '' : ' off')}>${t('Tune')}</span>
    <span class=${'badge' + (canCompress(tpl) ? '' : ' off')}>${t('Compress')}</span>
    <span class=${'badge' + (canDeploy(tpl) ? '' : ' off')}>${t('Deploy')}</span>
    ${tpl.quantization ? html`<span class="badge quant">${t(tpl.quantization)}</span>` : null}
  </div>`;
}

export function SquarePage() {
  const [search, setSearch] = useState('');
  const [task, setTask] = useState('');
  const [language, setLanguage] = useState('');
  const { data, error, loading } = usePoll(
    () => get('/api/v1/templates', { search, task, language }), [search, task, language]);
  return html`<div>
    <${PageHead} title=${t('Model square')} />
    <div class="toolbar">
      <input class="input search" placeholder=${t('Search')} value=${search} onInput=${(e) => setSearch(e.target.value)} />
      <select class="input" value=${task} onChange=${(e) => setTask(e.target.value)} aria-label="task">
        <option value="">${t('All tasks')}</option>
        <option value="tune">${t('Tunable')}</option>
        <option value="compress">${t('Compressible')}</option>
        <option value="deploy">${t('Deployable')}</option>
      </select>
      <select class="input" value=${language} onChange=${(e) => setLanguage(e.target.value)} aria-label="language">
        <option value="">${t('All languages')}</option>
        <option value="zh">${t('Chinese')}</option>
        <option value="en">${t('English')}</option>
      </select>
      ${data ? html`<span class="muted">${t('{n} templates', { n: data.total })}</span>` : null}
    </div>
    <${ErrorBox} error=${error} />
    ${loading && !data ? html`<${Spinner} />` : null}
    ${data && data.items.length === 0 ? html`<${Empty} />` : null}
    <div class="cards">
      ${(data ? data.items : []).map((tpl) => html`
        <div class="card tpl-card" data-template=${tpl.id}>
          <div class="tpl-head">
            <div class="tpl-icon">${tpl.name.slice(0, 1)}</div>
            <div><div class="tpl-name">${tpl.name}</div><div class="muted small">${seriesName(tpl)} · ${t(tpl.kind)}</div></div>
          </div>
          <div class="tpl-desc">${scenarios(tpl)}</div>
          <div class="tpl-meta muted small">${langs(tpl)} · ${t('Context length')} ${tpl.context_length}</div>
          <${TaskBadges} tpl=${tpl} />
          <div class="tpl-actions"><${Link} class="btn btn-small" href=${`/console/square/${tpl.id}`}>${t('Model details')}<//></div>
        </div>`)}
    </div>
  </div>`;
}

export function TemplatePage({ id }) {
  const { data: tpl, error } = usePoll(() => get(`/api/v1/templates/${id}`), [id]);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!tpl) return html`<${Spinner} />`;
  const preset = tpl.preset_weights;
  const go = (path) => () => navigate(path);
  return html`<div>
    <${PageHead} title=${tpl.name} back="/console/square">
      <${ActionButton} action="maas:models:create" class="btn" data-action="create-model"
        onClick=${go(`/console/models/create?template=${tpl.id}`)}>${t('Create model')}<//>
      <${ActionButton} action="maas:tuningJobs:create" class="btn btn-primary" data-action="tune" disabled=${!canTune(tpl)}
        title=${canTune(tpl) ? '' : t('Not supported')} onClick=${go(`/console/tuning/create?template=${tpl.id}`)}>${t('Tune')}<//>
      <${ActionButton} action="maas:compressionJobs:create" class="btn btn-primary" data-action="compress" disabled=${!canCompress(tpl)}
        title=${canCompress(tpl) ? '' : t('Not supported')} onClick=${go(`/console/compression/create?template=${tpl.id}`)}>${t('Compress')}<//>
      <${ActionButton} action="maas:services:create" class="btn btn-primary" data-action="deploy" disabled=${!canDeploy(tpl)}
        title=${canDeploy(tpl) ? '' : t('Not supported')} onClick=${go(`/console/services/deploy?template=${tpl.id}`)}>${t('Deploy')}<//>
    <//>
    <p class="muted small">${t('Greyed-out buttons mean the model does not support that task.')}
      ${tpl.quantization ? ' ' + t('Quantized models can only be deployed.') : ''}</p>
    <${Section} title=${t('Basic information')}>
      <p>${description(tpl)}</p>
      <${KV} items=${[
        ['ID', html`<code>${tpl.id}</code>`],
        [t('Series'), seriesName(tpl)],
        [t('Model type'), t(tpl.kind)],
        [t('Scenarios'), scenarios(tpl)],
        [t('Languages'), langs(tpl)],
        [t('Parameters'), tpl.params_billion ? `${tpl.params_billion} B` : t('any size')],
        [t('Quantization'), tpl.quantization ? t(tpl.quantization) : t('Non-quantized')],
        [t('Context length'), tpl.context_length],
        [t('QPS per instance'), tpl.recommended_qps],
        [t('Preset weights'), preset ? html`<${StatusTag} status=${preset.state && preset.state.status} />` : t('No')],
      ]} />
    <//>
    <${Section} title=${t('Supported tasks')}>
      <${KV} items=${[
        [t('Tune types'), (tpl.tasks.tune || []).map((x) => t(x)).join(', ') || t('Not supported')],
        [t('Compression strategies'), (tpl.tasks.compress || []).map((x) => t(x)).join(', ') || t('Not supported')],
        [t('Deploy'), tpl.tasks.deploy ? t('Yes') : t('No')],
      ]} />
    <//>
  </div>`;
}
