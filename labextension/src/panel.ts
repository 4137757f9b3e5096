/**
 * The "Handoff" side panel: models and versions with verdict, stage, who pushed and when;
 * live from the agent's events; reports, comparisons and (for reviewers) sign-offs.
 */
import { Dialog, InputDialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import {
  api,
  EventStream,
  HandoffError,
  IEvent,
  IInfo,
  IModel,
  IVersion,
  IWhoami,
  Source
} from './api';
import { VERSION } from './version';

export const TERMINAL = new Set(['archived', 'rejected', 'rollback']);
/** The next stage, for the stages a sign-off or an admin's promotion can move on. */
export const NEXT: Record<string, string> = {
  validated: 'approved',
  approved: 'canary',
  canary: 'production'
};

export type RefreshPolicy = 'live' | 'poll' | 'manual';

export interface IPanelOptions {
  openReport: (source: Source, model: string, n: number) => void;
  compare: (source: Source, a: [string, number], b: [string, number]) => void;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string | null)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') {
      node.className = v;
    } else {
      node.setAttribute(k, v);
    }
  }
  for (const c of children) {
    if (c !== null) {
      node.append(c);
    }
  }
  return node;
}

export function ago(iso?: string): string {
  if (!iso) {
    return '';
  }
  const t = Date.parse(iso.endsWith('Z') || iso.includes('+') ? iso : `${iso}Z`);
  if (isNaN(t)) {
    return iso;
  }
  const s = Math.max(0, (Date.now() - t) / 1000);
  if (s < 60) {
    return 'just now';
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)} min ago`;
  }
  if (s < 86400) {
    return `${Math.floor(s / 3600)} h ago`;
  }
  return new Date(t).toLocaleDateString();
}

export function verdictOf(v: IVersion): string {
  if (v.verdict?.verdict) {
    return v.verdict.verdict;
  }
  const map: Record<string, string> = {
    passed: 'pass',
    warned: 'warn',
    failed: 'fail'
  };
  return map[v.status] ?? v.status ?? 'unknown';
}

export class HandoffPanel extends Widget {
  source: Source = 'local';
  sourceSetting: 'auto' | Source = 'auto';
  refreshPolicy: RefreshPolicy = 'live';
  pollInterval = 10;
  notifications = true;

  private info: IInfo | null = null;
  private whoami: IWhoami | null = null;
  private models: IModel[] = [];
  private versions = new Map<string, IVersion[]>();
  private selected: string[] = [];
  private error: HandoffError | null = null;
  private live = false;
  private stream: EventStream | null = null;
  private timer = 0;
  private pending = new Map<string, number>();
  private started = false;

  constructor(private options: IPanelOptions) {
    super();
    this.id = 'jupyter-handoff-panel';
    this.addClass('jp-Handoff');
    this.title.caption = 'Handoff: models, verdicts and stages';
  }

  get roles(): string[] {
    return this.source === 'central' ? (this.whoami?.roles ?? []) : [];
  }

  /** (Re)start with the current settings: info, source, data and the refresh policy. */
  async restart(): Promise<void> {
    this.started = true;
    this.stopUpdates();
    try {
      this.info = await api.info();
    } catch (error) {
      this.info = null;
      this.error = error as HandoffError;
      this.render();
      return;
    }
    this.source =
      this.sourceSetting === 'auto'
        ? this.info.central.configured
          ? 'central'
          : 'local'
        : this.sourceSetting;
    if (this.source === 'central' && !this.info.central.configured) {
      this.source = 'local';
    }
    await this.refresh();
    this.startUpdates();
  }

  async setSource(source: Source): Promise<void> {
    this.sourceSetting = source;
    this.selected = [];
    await this.restart();
  }

  private startUpdates(): void {
    if (this.refreshPolicy === 'live') {
      this.stream = new EventStream(
        this.source,
        e => this.onEvent(e),
        (connected, error) => {
          const changed = this.live !== connected;
          this.live = connected;
          if (error) {
            this.error = error;
          }
          if (changed || error) {
            this.render();
          }
          if (connected && changed) {
            void this.refresh();
          }
        }
      );
      this.stream.start();
    } else if (this.refreshPolicy === 'poll') {
      this.timer = window.setInterval(
        () => void this.refresh(),
        Math.max(2, this.pollInterval) * 1000
      );
    }
  }

  private stopUpdates(): void {
    this.stream?.stop();
    this.stream = null;
    this.live = false;
    if (this.timer) {
      window.clearInterval(this.timer);
      this.timer = 0;
    }
  }

  dispose(): void {
    this.stopUpdates();
    super.dispose();
  }

  protected onAfterAttach(): void {
    if (!this.started) {
      void this.restart();
    }
  }

  /** Re-read everything the panel shows. */
  async refresh(): Promise<void> {
    try {
      if (this.source === 'central') {
        this.whoami = await api.whoami('central').catch(() => null);
      } else {
        this.whoami = null;
      }
      this.models = (await api.models(this.source)).models;
      await Promise.all(this.models.map(m => this.loadVersions(m.name)));
      this.error = null;
    } catch (error) {
      this.error = error as HandoffError;
    }
    this.render();
  }

  private async loadVersions(name: string): Promise<void> {
    const rows = (await api.versions(this.source, name)).versions;
    // The list may not carry stage and verdict; the detail does.
    const full = await Promise.all(
      rows.map(r =>
        'stage' in r && 'verdict' in r
          ? Promise.resolve(r)
          : api.version(this.source, name, r.number).catch(() => r)
      )
    );
    this.versions.set(name, full);
  }

  private refreshModel(name: string): void {
    window.clearTimeout(this.pending.get(name));
    this.pending.set(
      name,
      window.setTimeout(async () => {
        this.pending.delete(name);
        try {
          this.models = (await api.models(this.source)).models;
          await this.loadVersions(name);
        } catch (error) {
          this.error = error as HandoffError;
        }
        this.render();
      }, 250)
    );
  }

  private onEvent(event: IEvent): void {
    if (!event.model) {
      return;
    }
    const ref = `${event.model}:${event.version}`;
    if (['version', 'verdict', 'report', 'stage'].includes(event.type)) {
      this.refreshModel(event.model);
    }
    if (!this.notifications) {
      return;
    }
    if (event.type === 'verdict') {
      const verdict = String(event.verdict ?? event.status);
      const reasons = (event.reasons as string[] | undefined) ?? [];
      const text = `Handoff: checks finished for ${ref}: ${verdict}${reasons.length ? ` (${reasons[0]})` : ''}`;
      const notify =
        verdict === 'pass'
          ? Notification.success
          : verdict === 'warn'
            ? Notification.warning
            : Notification.error;
      notify(text, {
        autoClose: 8000,
        actions: [
          {
            label: 'Open report',
            callback: () =>
              this.options.openReport(
                this.source,
                event.model!,
                event.version as number
              )
          }
        ]
      });
    } else if (event.type === 'stage') {
      Notification.info(
        `Handoff: ${ref} is now ${event.stage}${event.by ? ` (by ${event.by})` : ''}`,
        { autoClose: 8000 }
      );
    }
  }

  // -- actions ------------------------------------------------------------------------

  async signoff(
    model: string,
    n: number,
    decision: 'approve' | 'reject'
  ): Promise<void> {
    const answer = await InputDialog.getText({
      title: `${decision === 'approve' ? 'Approve' : 'Reject'} ${model}:${n}`,
      label: 'Comment (recorded in the audit log)',
      placeholder: decision === 'approve' ? 'Looks good' : 'Why?',
      okLabel: decision === 'approve' ? 'Approve' : 'Reject'
    });
    if (!answer.button.accept) {
      return;
    }
    await this.act(
      () =>
        api.signoff(this.source, model, n, decision, answer.value ?? ''),
      model
    );
  }

  async promote(model: string, n: number, to: string): Promise<void> {
    const answer = await InputDialog.getText({
      title: to === 'rollback' ? `Roll back ${model}:${n}` : `Promote ${model}:${n} to ${to}`,
      label: 'Comment (recorded in the audit log)',
      okLabel: to === 'rollback' ? 'Roll back' : 'Promote'
    });
    if (!answer.button.accept) {
      return;
    }
    await this.act(
      () => api.transition(this.source, model, n, to, answer.value ?? ''),
      model
    );
  }

  /** An admin trusts the exact types a needs_trust version waits for (audited at central). */
  async trustTypes(model: string, n: number, types: string[]): Promise<void> {
    const answer = await showDialog({
      title: `Trust ${types.length === 1 ? 'this type' : 'these types'} for ${model}:${n}?`,
      body: `Central will load models that name: ${types.join(', ')}. Recorded in the audit log; every version waiting on them goes on to its checks.`,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Trust' })]
    });
    if (!answer.button.accept) {
      return;
    }
    await this.act(() => api.trust(this.source, types), model);
  }

  private async act(
    call: () => Promise<unknown>,
    model: string
  ): Promise<void> {
    try {
      await call();
      await this.loadVersions(model);
      this.error = null;
    } catch (error) {
      const e = error as HandoffError;
      Notification.error(
        `Handoff: ${e.message}${e.detail?.hint ? ` ${e.detail.hint}` : ''}`,
        { autoClose: 10000 }
      );
    }
    this.render();
  }

  compareSelected(): void {
    if (this.selected.length !== 2) {
      Notification.warning(
        'Handoff: tick two versions in the panel to compare them.',
        { autoClose: 5000 }
      );
      return;
    }
    const [a, b] = this.selected.map(key => {
      const i = key.lastIndexOf(':');
      return [key.slice(0, i), Number(key.slice(i + 1))] as [string, number];
    });
    this.options.compare(this.source, a, b);
  }

  // -- rendering ------------------------------------------------------------------------

  render(): void {
    const node = this.node;
    node.replaceChildren();
    node.append(this.renderHeader());
    const mismatch = this.renderMismatch();
    if (mismatch) {
      node.append(mismatch);
    }
    if (this.error) {
      node.append(
        el(
          'div',
          { class: 'jp-Handoff-error', role: 'alert' },
          el('b', {}, this.error.message),
          this.error.detail?.hint
            ? el('div', { class: 'jp-Handoff-hint' }, this.error.detail.hint)
            : null
        )
      );
    }
    const list = el('div', { class: 'jp-Handoff-models' });
    if (!this.error && this.models.length === 0 && this.info) {
      list.append(
        el(
          'p',
          { class: 'jp-Handoff-empty' },
          this.source === 'local'
            ? 'No models yet. In a notebook: %load_ext jupyter_handoff, then %mlops push MODEL --name NAME.'
            : 'Central has no models yet.'
        )
      );
    }
    for (const m of this.models) {
      list.append(this.renderModel(m));
    }
    node.append(list);
  }

  private renderHeader(): HTMLElement {
    const select = el(
      'select',
      { class: 'jp-Handoff-source', title: 'Which agent to show' },
      el('option', { value: 'local' }, 'This machine'),
      this.info?.central.configured
        ? el('option', { value: 'central' }, 'Central')
        : null
    );
    select.value = this.source;
    select.onchange = () => void this.setSource(select.value as Source);
    const refresh = el(
      'button',
      { class: 'jp-Handoff-refresh jp-mod-styled', title: 'Refresh' },
      'Refresh'
    );
    refresh.onclick = () => void this.refresh();
    const compare = el(
      'button',
      {
        class: 'jp-Handoff-compare jp-mod-styled',
        title: 'Compare the two ticked versions'
      },
      `Compare ${this.selected.length}/2`
    );
    (compare as HTMLButtonElement).disabled = this.selected.length !== 2;
    compare.onclick = () => this.compareSelected();
    const status = el(
      'span',
      {
        class: `jp-Handoff-live ${this.live ? 'jp-mod-live' : ''}`,
        title: this.live
          ? 'Live: updates as the agent reports'
          : `Updates: ${this.refreshPolicy}`
      },
      this.live ? '● live' : `○ ${this.refreshPolicy}`
    );
    const who = this.whoami
      ? el(
          'div',
          { class: 'jp-Handoff-whoami' },
          `Signed in to central as ${this.whoami.user} (${this.whoami.roles.join(', ') || 'no role'})`
        )
      : null;
    return el(
      'div',
      { class: 'jp-Handoff-header' },
      el(
        'div',
        { class: 'jp-Handoff-title' },
        el('h2', {}, 'Handoff'),
        status
      ),
      el('div', { class: 'jp-Handoff-toolbar' }, select, refresh, compare),
      who
    );
  }

  private renderMismatch(): HTMLElement | null {
    if (!this.info) {
      return null;
    }
    const py = this.info.python_version;
    const disk = this.info.labextension_version;
    let text = '';
    if (py !== VERSION) {
      text = `Version mismatch: the jupyter-handoff Python package is ${py}, but the JupyterLab extension running in this page is ${VERSION}.`;
    } else if (disk && disk !== VERSION) {
      text = `Version mismatch: this page runs the JupyterLab extension ${VERSION}, but ${disk} is installed.`;
    }
    if (!text) {
      return null;
    }
    return el(
      'div',
      { class: 'jp-Handoff-mismatch', role: 'alert' },
      el('b', {}, text),
      el('div', { class: 'jp-Handoff-hint' }, this.info.fix)
    );
  }

  private renderModel(m: IModel): HTMLElement {
    const versions = this.versions.get(m.name) ?? [];
    const list = el('ul', { class: 'jp-Handoff-versions' });
    for (const v of versions) {
      list.append(this.renderVersion(m.name, v));
    }
    return el(
      'section',
      { class: 'jp-Handoff-model', 'data-model': m.name },
      el(
        'h3',
        {},
        m.name,
        el(
          'span',
          { class: 'jp-Handoff-count' },
          ` ${m.versions} version${m.versions === 1 ? '' : 's'}`
        )
      ),
      list
    );
  }

  private renderVersion(model: string, v: IVersion): HTMLElement {
    const key = `${model}:${v.number}`;
    const verdict = verdictOf(v);
    const tick = el('input', {
      type: 'checkbox',
      class: 'jp-Handoff-select',
      title: 'Tick two versions to compare them'
    }) as HTMLInputElement;
    tick.checked = this.selected.includes(key);
    tick.onclick = e => e.stopPropagation();
    tick.onchange = () => {
      this.selected = this.selected.filter(k => k !== key);
      if (tick.checked) {
        this.selected = [...this.selected, key].slice(-2);
      }
      this.render();
    };
    const open = el(
      'button',
      {
        class: 'jp-Handoff-open',
        title: `Open the report of ${key}`
      },
      `v${v.number}`
    );
    open.onclick = () =>
      this.options.openReport(this.source, model, v.number);
    const reasons = v.verdict?.reasons?.length
      ? v.verdict.reasons.join('\n')
      : v.status;
    const row = el(
      'li',
      {
        class: 'jp-Handoff-version',
        'data-model': model,
        'data-version': String(v.number),
        'data-verdict': verdict,
        'data-stage': v.stage ?? ''
      },
      tick,
      open,
      el(
        'span',
        {
          class: `jp-Handoff-badge jp-Handoff-verdict-${verdict}`,
          title: reasons
        },
        verdict
      ),
      v.stage
        ? el(
            'span',
            {
              class: 'jp-Handoff-stage',
              title: v.needs_trust?.length
                ? `Central is waiting for an admin to trust: ${v.needs_trust.join(', ')}`
                : 'Stage in the central pipeline'
            },
            v.stage
          )
        : null,
      el(
        'span',
        { class: 'jp-Handoff-meta', title: v.pushed_at ?? '' },
        [v.pushed_by, ago(v.pushed_at)].filter(Boolean).join(' · ')
      )
    );
    const actions = this.renderActions(model, v);
    if (actions) {
      row.append(actions);
    }
    return row;
  }

  private renderActions(model: string, v: IVersion): HTMLElement | null {
    const roles = this.roles;
    const reviewer = roles.includes('reviewer') || roles.includes('admin');
    const admin = roles.includes('admin');
    const buttons: HTMLElement[] = [];
    const stage = v.stage ?? '';
    const next = NEXT[stage];
    if (reviewer && next) {
      const approve = el(
        'button',
        {
          class: 'jp-Handoff-approve jp-mod-styled jp-mod-accept',
          title: `Sign off ${model}:${v.number} for ${next}`
        },
        'Approve'
      );
      approve.onclick = () => void this.signoff(model, v.number, 'approve');
      const reject = el(
        'button',
        { class: 'jp-Handoff-reject jp-mod-styled jp-mod-warn' },
        'Reject'
      );
      reject.onclick = () => void this.signoff(model, v.number, 'reject');
      buttons.push(approve, reject);
    }
    if (admin && next) {
      const promote = el(
        'button',
        {
          class: 'jp-Handoff-promote jp-mod-styled',
          title: 'Move on once the sign-offs the policy names are in'
        },
        `Promote to ${next}`
      );
      promote.onclick = () => void this.promote(model, v.number, next);
      buttons.push(promote);
    }
    const waiting = v.needs_trust ?? [];
    if (admin && stage === 'needs_trust' && waiting.length) {
      const trust = el(
        'button',
        {
          class: 'jp-Handoff-trust jp-mod-styled',
          title: `Trust ${waiting.join(', ')} at central`
        },
        'Trust types'
      );
      trust.onclick = () => void this.trustTypes(model, v.number, waiting);
      buttons.push(trust);
    }
    if (admin && stage === 'production') {
      const rollback = el(
        'button',
        { class: 'jp-Handoff-rollback jp-mod-styled jp-mod-warn' },
        'Roll back'
      );
      rollback.onclick = () => void this.promote(model, v.number, 'rollback');
      buttons.push(rollback);
    }
    return buttons.length
      ? el('div', { class: 'jp-Handoff-actions' }, ...buttons)
      : null;
  }
}
