/**
 * The Inventory view (every model at central, with risk tags and filters) and the dossier
 * download. Self-contained: the panel and index.ts only hook in a button and a command.
 */
import { MainAreaWidget, Notification } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { el, errorBox } from './dom';

import {
  agentPath,
  api,
  apiUrl,
  HandoffError,
  requestAPI,
  Source
} from './api';

export interface IInventoryRow {
  name: string;
  owner: string | null;
  latest_version: number | null;
  version: number | null;
  stage: string | null;
  serving: { deployed: boolean | null; where: string | null; note: string };
  /** Known only from `monitor import`: served elsewhere, no version here. */
  imported?: boolean;
  data: { role: string; fingerprint: string; source: string | null }[];
  sensitive_attributes: string[];
  fairness: { status: string; message: string } | null;
  drift: { status: string; message: string } | null;
  alerts: unknown[];
  last_signoff: {
    user: string;
    role: string;
    decision: string;
    time: string;
  } | null;
  risk_tags: string[];
}

export interface IInventory {
  models: IInventoryRow[];
  count: number;
  risk_tags: Record<string, string>;
  monitoring: { configured: boolean; note: string };
  data_sources: { tracked: boolean; note: string };
}

export const FILTERS = [
  'tag',
  'stage',
  'owner',
  'dataset',
  'sensitive'
] as const;

/** Ask the agent for a version's signed dossier and save it through the browser. */
export async function downloadDossier(
  source: Source,
  model: string,
  n: number
): Promise<void> {
  const settings = ServerConnection.makeSettings();
  const url = apiUrl(
    agentPath(source, 'models', model, 'versions', n, 'dossier')
  );
  try {
    const response = await ServerConnection.makeRequest(url, {}, settings);
    if (!response.ok) {
      let detail = {
        code: `http_${response.status}`,
        message: response.statusText,
        hint: ''
      };
      try {
        detail = { ...detail, ...(await response.json()).error };
      } catch {
        // keep the status
      }
      throw new HandoffError(response.status, detail);
    }
    const blob = await response.blob();
    const link = document.createElement('a');
    link.href = URL.createObjectURL(blob);
    link.download = `dossier-${model}-${n}.zip`;
    document.body.append(link);
    link.click();
    link.remove();
    window.setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    Notification.success(
      `Handoff: saved the signed dossier of ${model}:${n}.`,
      {
        autoClose: 5000
      }
    );
  } catch (error) {
    const e = error as HandoffError;
    Notification.error(
      `Handoff: no dossier for ${model}:${n}: ${e.message}${e.detail?.hint ? ` ${e.detail.hint}` : ''}`,
      { autoClose: 10000 }
    );
  }
}

/** The panel's per-version button, for versions that reached central (they have a stage). */
export function dossierButton(
  source: Source,
  model: string,
  v: { number: number; stage?: string | null }
): HTMLElement | null {
  if (!v.stage) {
    return null;
  }
  const button = el(
    'button',
    {
      class: 'jp-Handoff-dossier jp-mod-styled',
      title: `Download the signed dossier of ${model}:${v.number} (central signs it)`
    },
    'Dossier'
  );
  button.onclick = e => {
    e.stopPropagation();
    void downloadDossier(source, model, v.number);
  };
  return button;
}

export class InventoryView extends Widget {
  source: Source = 'central';
  filters: Record<string, string> = {};
  private doc: IInventory | null = null;
  private error: HandoffError | null = null;

  constructor() {
    super();
    this.addClass('jp-Handoff-inventory');
    this.node.textContent = 'Loading the inventory…';
    void this.load();
  }

  async load(): Promise<void> {
    try {
      const info = await api.info();
      this.source = info.central.configured ? 'central' : 'local';
      const query = new URLSearchParams(
        Object.entries(this.filters).filter(([, v]) => v)
      ).toString();
      this.doc = await requestAPI<IInventory>(
        agentPath(this.source, 'inventory') + (query ? `?${query}` : '')
      );
      this.error = null;
    } catch (error) {
      this.error = error as HandoffError;
    }
    this.render();
  }

  private renderFilters(): HTMLElement {
    const form = el('form', { class: 'jp-Handoff-inventoryFilters' });
    for (const name of FILTERS) {
      let input: HTMLInputElement | HTMLSelectElement;
      if (name === 'tag') {
        input = el(
          'select',
          { name },
          el('option', { value: '' }, 'any risk tag')
        );
        for (const tag of Object.keys(this.doc?.risk_tags ?? {})) {
          input.append(el('option', { value: tag }, tag));
        }
      } else {
        input = el('input', {
          name,
          placeholder: name === 'dataset' ? 'dataset fingerprint' : name
        });
      }
      input.value = this.filters[name] ?? '';
      form.append(el('label', {}, `${name} `, input));
    }
    form.append(
      el(
        'button',
        { type: 'submit', class: 'jp-mod-styled jp-Handoff-inventoryApply' },
        'Filter'
      )
    );
    form.onsubmit = e => {
      e.preventDefault();
      const data = new FormData(form);
      this.filters = Object.fromEntries(
        FILTERS.map(name => [name, String(data.get(name) ?? '').trim()])
      );
      void this.load();
    };
    return form;
  }

  private renderRow(r: IInventoryRow): HTMLElement {
    const signoff = r.last_signoff
      ? `${r.last_signoff.user} (${r.last_signoff.role}) ${r.last_signoff.time.slice(0, 16)}`
      : '–';
    const tags = el('td', { class: 'jp-Handoff-riskTags' });
    for (const tag of r.risk_tags) {
      tags.append(
        el(
          'span',
          {
            class: 'jp-Handoff-riskTag',
            'data-tag': tag,
            title: this.doc?.risk_tags[tag] ?? ''
          },
          tag.replace(/_/g, ' ')
        )
      );
    }
    const dossier = el(
      'td',
      {},
      r.version === null
        ? null
        : dossierButton(this.source, r.name, {
            number: r.version,
            stage: r.stage
          })
    );
    return el(
      'tr',
      {
        class: 'jp-Handoff-inventoryRow',
        'data-model': r.name,
        'data-stage': r.stage ?? ''
      },
      el('td', {}, el('b', {}, r.name)),
      el('td', {}, r.owner ?? ''),
      el(
        'td',
        {},
        r.imported
          ? 'imported'
          : `v${r.version}${r.latest_version !== r.version ? ` (latest v${r.latest_version})` : ''}`
      ),
      el('td', {}, r.stage ?? ''),
      el(
        'td',
        { title: r.serving.note },
        r.serving.where ??
          (r.imported ? 'elsewhere (imported log)' : 'not deployed')
      ),
      el(
        'td',
        { class: 'jp-Handoff-inventoryData' },
        r.data.map(d => `${d.role}:${d.fingerprint.slice(0, 10)}`).join(' ')
      ),
      el(
        'td',
        { class: 'jp-Handoff-inventorySensitive' },
        r.sensitive_attributes.join(', ')
      ),
      el('td', { title: r.fairness?.message ?? '' }, r.fairness?.status ?? '–'),
      el('td', { title: r.drift?.message ?? '' }, r.drift?.status ?? '–'),
      el('td', {}, String(r.alerts.length)),
      el('td', {}, signoff),
      tags,
      dossier
    );
  }

  render(): void {
    const node = this.node;
    node.replaceChildren(
      el(
        'h2',
        {},
        `Model inventory (${this.source === 'central' ? 'central' : 'this machine'})`
      ),
      this.renderFilters()
    );
    if (this.error) {
      node.append(errorBox(this.error));
      return;
    }
    if (!this.doc) {
      return;
    }
    const head = el('tr');
    for (const h of [
      'model',
      'owner',
      'version',
      'stage',
      'serves',
      'data',
      'sensitive',
      'fairness',
      'drift',
      'alerts',
      'last sign-off',
      'risk tags',
      ''
    ]) {
      head.append(el('th', {}, h));
    }
    const table = el(
      'table',
      { class: 'jp-Handoff-inventoryTable' },
      el('thead', {}, head)
    );
    const body = el('tbody');
    for (const r of this.doc.models) {
      body.append(this.renderRow(r));
    }
    table.append(body);
    node.append(
      table,
      el(
        'p',
        { class: 'jp-Handoff-hint' },
        `${this.doc.count} model(s). ${this.doc.monitoring.note}. ${this.doc.data_sources.note}.`
      )
    );
  }
}

export function inventoryWidget(): MainAreaWidget<InventoryView> {
  const content = new InventoryView();
  const widget = new MainAreaWidget({ content });
  widget.id = 'handoff-inventory';
  widget.title.label = 'Handoff Inventory';
  widget.title.closable = true;
  return widget;
}
