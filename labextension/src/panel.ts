/**
 * The "Handoff" side panel, a view of HandoffModel: models and versions with verdict, stage,
 * who pushed and when; reports, comparisons and (for reviewers) sign-offs. It renders what
 * the model holds whenever the model says it changed; user actions go to the model.
 */
import {
  Dialog,
  InputDialog,
  Notification,
  showDialog
} from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { HandoffError, IModel, IReview, IVersion, Source } from './api';
import { ago, el, errorBox, reconcile } from './dom';
import { dossierButton } from './inventory';
import { HandoffModel, VERSIONS_PAGE } from './model';
import { VERSION } from './version';
import {
  alertWord,
  canRollBack,
  isStopped,
  provisionalOf,
  provisionalWords,
  signoffTo,
  verdictOf
} from './vocabulary';

export interface IPanelOptions {
  openReport: (source: Source, model: string, n: number) => void;
  compare: (source: Source, a: [string, number], b: [string, number]) => void;
  openInventory?: () => void;
  openDeployments?: (source: Source, model: string) => void;
  openMonitor?: (source: Source, model: string) => void;
}

export class HandoffPanel extends Widget {
  /** Whether the review queue is unfolded: open until its reader folds it. */
  private reviewsOpen = true;
  /** The versions whose sign-offs are unfolded (source:model:number), kept across renders. */
  private signoffsOpen = new Set<string>();

  constructor(
    readonly model: HandoffModel,
    private options: IPanelOptions
  ) {
    super();
    this.id = 'jupyter-handoff-panel';
    this.addClass('jp-Handoff');
    this.title.caption = 'Handoff: models, verdicts and stages';
    model.stateChanged.connect(this.render, this);
  }

  dispose(): void {
    this.model.stateChanged.disconnect(this.render, this);
    super.dispose();
  }

  protected onAfterAttach(): void {
    if (!this.model.started) {
      void this.model.restart();
    }
  }

  // -- actions: a dialog, then the model ----------------------------------------------

  async signoff(
    model: string,
    n: number,
    decision: 'approve' | 'reject',
    to: string
  ): Promise<void> {
    const answer = await InputDialog.getText({
      title: `${decision === 'approve' ? 'Approve' : 'Reject'} ${model}:${n}`,
      label: 'Comment (recorded in the audit log)',
      placeholder: decision === 'approve' ? 'Looks good' : 'Why?',
      okLabel: decision === 'approve' ? 'Approve' : 'Reject'
    });
    if (answer.button.accept) {
      await this.report(
        this.model.signoff(model, n, decision, answer.value ?? '', to)
      );
    }
  }

  /** Take the caller's own sign-off for `to` back, with why (audited at central). */
  async withdraw(model: string, n: number, to: string): Promise<void> {
    const answer = await InputDialog.getText({
      title: `Withdraw my sign-off of ${model}:${n} for ${to}`,
      label: 'Why? (recorded in the audit log)',
      placeholder: 'Why?',
      okLabel: 'Withdraw'
    });
    if (answer.button.accept) {
      await this.report(this.model.withdraw(model, n, answer.value ?? '', to));
    }
  }

  async promote(model: string, n: number, to: string): Promise<void> {
    const answer = await InputDialog.getText({
      title:
        to === 'rollback'
          ? `Roll back ${model}:${n}`
          : `Promote ${model}:${n} to ${to}`,
      label: 'Comment (recorded in the audit log)',
      okLabel: to === 'rollback' ? 'Roll back' : 'Promote'
    });
    if (answer.button.accept) {
      await this.report(
        this.model.transition(model, n, to, answer.value ?? '')
      );
    }
  }

  /** An admin trusts the exact types a needs_trust version waits for (audited at central). */
  async trustTypes(model: string, n: number, types: string[]): Promise<void> {
    const answer = await showDialog({
      title: `Trust ${types.length === 1 ? 'this type' : 'these types'} for ${model}:${n}?`,
      body: `Central will load models that name: ${types.join(', ')}. Recorded in the audit log; every version waiting on them goes on to its checks.`,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Trust' })]
    });
    if (answer.button.accept) {
      await this.report(this.model.trust(model, types));
    }
  }

  compareSelected(): void {
    const pair = this.model.selectedPair();
    if (!pair) {
      Notification.warning(
        'Handoff: tick two versions in the panel to compare them.',
        {
          autoClose: 5000
        }
      );
      return;
    }
    this.options.compare(this.model.source, ...pair);
  }

  /** A refused action is a notification with the agent's message and hint. */
  private async report(action: Promise<void>): Promise<void> {
    try {
      await action;
    } catch (error) {
      const e = error as HandoffError;
      Notification.error(
        `Handoff: ${e.message}${e.detail?.hint ? ` ${e.detail.hint}` : ''}`,
        {
          autoClose: 10000
        }
      );
    }
  }

  // -- rendering ------------------------------------------------------------------------

  render(): void {
    const node = this.node;
    // Which agent the rows shown came from: a view opened from a row asks the same one.
    node.dataset.source = this.model.source;
    const list = el('div', { class: 'jp-Handoff-models' });
    if (
      !this.model.error &&
      this.model.models.length === 0 &&
      this.model.info
    ) {
      list.append(
        el(
          'p',
          { class: 'jp-Handoff-empty' },
          this.model.source === 'local'
            ? 'No models yet. In a notebook: %load_ext jupyter_handoff, then %mlops push MODEL --name NAME.'
            : 'Central has no models yet.'
        )
      );
    }
    for (const m of this.model.models) {
      list.append(this.renderModel(m));
    }
    const parts = [
      this.renderHeader(),
      this.renderMismatch(),
      this.model.error ? errorBox(this.model.error) : null,
      this.renderReviews(),
      list
    ];
    reconcile(
      node,
      parts.filter((p): p is HTMLElement => p !== null)
    );
  }

  private renderHeader(): HTMLElement {
    const select = el(
      'select',
      { class: 'jp-Handoff-source', title: 'Which agent to show' },
      el('option', { value: 'local' }, 'This machine'),
      this.model.info?.central.configured
        ? el('option', { value: 'central' }, 'Central')
        : null
    );
    select.value = this.model.source;
    select.dataset.value = this.model.source; // the drawing differs when the source does
    select.onchange = () => void this.model.setSource(select.value as Source);
    const refresh = el(
      'button',
      { class: 'jp-Handoff-refresh jp-mod-styled', title: 'Refresh' },
      'Refresh'
    );
    refresh.onclick = () => void this.model.refresh();
    const compare = el(
      'button',
      {
        class: 'jp-Handoff-compare jp-mod-styled',
        title: 'Compare the two ticked versions'
      },
      `Compare ${this.model.selected.length}/2`
    );
    (compare as HTMLButtonElement).disabled = this.model.selected.length !== 2;
    compare.onclick = () => this.compareSelected();
    const inventory = el(
      'button',
      {
        class: 'jp-Handoff-inventoryOpen jp-mod-styled',
        title: 'Every model, with risk tags'
      },
      'Inventory'
    );
    inventory.onclick = () => this.options.openInventory?.();
    const status = el(
      'span',
      {
        class: `jp-Handoff-live ${this.model.live ? 'jp-mod-live' : ''}`,
        title: this.model.live
          ? 'Live: updates as the agent reports'
          : `Updates: ${this.model.refreshPolicy}`
      },
      this.model.live ? '● live' : `○ ${this.model.refreshPolicy}`
    );
    const who = this.model.whoami
      ? el(
          'div',
          { class: 'jp-Handoff-whoami' },
          `Signed in to central as ${this.model.whoami.user} (${this.model.whoami.roles.join(', ') || 'no role'})`
        )
      : null;
    return el(
      'div',
      { class: 'jp-Handoff-header' },
      el('div', { class: 'jp-Handoff-title' }, el('h2', {}, 'Handoff'), status),
      el(
        'div',
        { class: 'jp-Handoff-toolbar' },
        select,
        refresh,
        compare,
        inventory
      ),
      who
    );
  }

  /** What waits for the caller's sign-off, oldest first, each with its buttons. */
  private renderReviews(): HTMLElement | null {
    const reviews = this.model.reviews;
    if (!reviews.length) {
      return null;
    }
    const list = el('ul', { class: 'jp-Handoff-reviewList' });
    for (const r of reviews) {
      const needs = needsText(r.missing);
      list.append(
        el(
          'li',
          {
            class: 'jp-Handoff-review',
            'data-model': r.model,
            'data-version': String(r.version),
            'data-next': r.next
          },
          el(
            'div',
            {},
            el('b', {}, `${r.model}:${r.version}`),
            ` ${r.stage} → ${r.next} · needs ${needs} · ${r.verdict} · pushed by ${r.pushed_by} · ${r.stage} ${ago(r.since)}`
          ),
          r.blocked
            ? el(
                'div',
                { class: 'jp-Handoff-hint' },
                `Not yet: ${r.blocked.message}`
              )
            : null,
          el(
            'div',
            { class: 'jp-Handoff-actions' },
            ...this.signoffButtons(
              r.model,
              r.version,
              r.next,
              r.signoffs.some(s => this.model.isMe(s.user))
            )
          )
        )
      );
    }
    const box = el(
      'details',
      { class: 'jp-Handoff-reviews' },
      el(
        'summary',
        {},
        `Waiting for your sign-off (${reviews.length}${this.model.reviewsMore ? '+' : ''})`
      ),
      list
    );
    box.open = this.reviewsOpen; // kept across re-renders
    box.ontoggle = () => (this.reviewsOpen = box.open);
    return box;
  }

  private renderMismatch(): HTMLElement | null {
    if (!this.model.info) {
      return null;
    }
    const py = this.model.info.python_version;
    const disk = this.model.info.labextension_version;
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
      el('div', { class: 'jp-Handoff-hint' }, this.model.info.fix)
    );
  }

  private renderModel(m: IModel): HTMLElement {
    const versions = this.model.versions.get(m.name) ?? [];
    const list = el('ul', { class: 'jp-Handoff-versions' });
    for (const v of versions) {
      list.append(this.renderVersion(m.name, v));
    }
    const hidden = m.versions - versions.length;
    let older: HTMLElement | null = null;
    if (versions.length && hidden > 0) {
      older = el(
        'button',
        {
          class: 'jp-Handoff-older jp-mod-styled',
          title: `List ${Math.min(hidden, VERSIONS_PAGE)} older versions of ${m.name}`
        },
        `Show older (${hidden} more)`
      );
      older.onclick = () => this.model.showOlder(m.name);
    }
    const deployments = el(
      'button',
      {
        class: 'jp-Handoff-deploymentsOpen jp-mod-styled',
        title: `Where each version of ${m.name} serves: traffic, stats, alarms`
      },
      'Deployments'
    );
    deployments.onclick = () =>
      this.options.openDeployments?.(this.model.source, m.name);
    const monitor = el(
      'button',
      {
        class: 'jp-Handoff-monitorOpen jp-mod-styled',
        title: `${m.name} after its push: drift, performance, traffic and alerts`
      },
      'Monitor'
    );
    monitor.onclick = () =>
      this.options.openMonitor?.(this.model.source, m.name);
    const atCentral =
      this.model.info?.central.configured || this.model.source === 'central';
    // Known only from an imported log: served elsewhere, so central deploys none of it;
    // its monitoring and alerts are central's.
    const count = m.imported
      ? el(
          'span',
          {
            class: 'jp-Handoff-count jp-Handoff-imported',
            title: `${m.name} is served elsewhere; central monitors its imported prediction log`
          },
          ' imported'
        )
      : el(
          'span',
          { class: 'jp-Handoff-count' },
          ` ${m.versions} version${m.versions === 1 ? '' : 's'}`
        );
    return el(
      'section',
      {
        class: 'jp-Handoff-model',
        'data-model': m.name,
        'data-imported': m.imported ? 'true' : 'false'
      },
      el(
        'h3',
        {},
        m.name,
        count,
        this.renderAlertBadge(m.name),
        atCentral && !m.imported ? deployments : null,
        atCentral ? monitor : null
      ),
      list,
      older
    );
  }

  /** The model's firing alerts at central: their count and worst kind; each in the title. */
  private renderAlertBadge(model: string): HTMLElement | null {
    const firing = this.model.firing.get(model) ?? [];
    if (!firing.length) {
      return null;
    }
    const meta = this.model.meta;
    const worst = firing[0].kind;
    const badge = el(
      'button',
      {
        class: `jp-Handoff-alertBadge jp-Handoff-alert-${worst}`,
        'data-alerts': String(firing.length),
        'data-worst': worst,
        title: [
          `${firing.length} open alert${firing.length === 1 ? '' : 's'} at central (click for the Monitor view):`,
          ...firing.map(
            a => `${alertWord(meta, a.kind)} (${a.window}): ${a.message ?? ''}`
          )
        ].join('\n')
      },
      `⚠ ${firing.length} · ${alertWord(meta, worst)}`
    );
    badge.onclick = () => this.options.openMonitor?.(this.model.source, model);
    return badge;
  }

  private renderVersion(model: string, v: IVersion): HTMLElement {
    const key = `${model}:${v.number}`;
    const verdict = verdictOf(v, this.model.meta);
    const tick = el('input', {
      type: 'checkbox',
      class: 'jp-Handoff-select',
      title: 'Tick two versions to compare them'
    }) as HTMLInputElement;
    tick.checked = this.model.selected.includes(key);
    tick.defaultChecked = tick.checked; // the attribute, so a redraw sees the tick change
    tick.onclick = e => e.stopPropagation();
    tick.onchange = () => this.model.select(key, tick.checked);
    const open = el(
      'button',
      {
        class: 'jp-Handoff-open',
        title: `Open the report of ${key}`
      },
      `v${v.number}`
    );
    open.onclick = () =>
      this.options.openReport(this.model.source, model, v.number);
    const reasons = v.verdict?.reasons?.length
      ? v.verdict.reasons.join('\n')
      : v.status;
    // While checking: the verdict so far, outlined, until the final one replaces it.
    const provisional = provisionalOf(v, this.model.meta);
    const badge = provisional
      ? el(
          'span',
          {
            class: `jp-Handoff-badge jp-Handoff-provisional jp-Handoff-verdict-${provisional.verdict}`,
            title: [
              `Provisional: ${provisional.pending.join(', ')} still running`,
              ...provisional.reasons
            ].join('\n')
          },
          provisionalWords(this.model.meta, provisional.verdict)
        )
      : el(
          'span',
          {
            class: `jp-Handoff-badge jp-Handoff-verdict-${verdict}`,
            title: reasons
          },
          verdict
        );
    const row = el(
      'li',
      {
        class: 'jp-Handoff-version',
        'data-model': model,
        'data-version': String(v.number),
        'data-verdict': verdict,
        'data-provisional': provisional?.verdict ?? '',
        'data-stage': v.stage ?? ''
      },
      tick,
      open,
      badge,
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
    // A rejected or rolled-back version says why, in the agent's words (stage_text).
    if (isStopped(this.model.meta, v.stage) && v.stage_text) {
      row.append(
        el(
          'div',
          {
            class: 'jp-Handoff-stopped',
            'data-stage': v.stage ?? '',
            title: `Why ${key} stopped, as the reviewer or the guardrails said it`
          },
          v.stage_text
        )
      );
    }
    for (const f of v.undelivered ?? []) {
      if (f.state === 'dead' || f.last_error) {
        row.append(
          el(
            'div',
            {
              class: `jp-Handoff-hint jp-Handoff-undelivered jp-Handoff-undelivered-${f.state}`,
              title:
                f.state === 'dead'
                  ? `Refused. Once the cause is fixed, %mlops forward ${model}:${v.number} --to ${f.destination} sends it again.`
                  : 'Retried until it arrives.'
            },
            `${f.destination}: ${f.state}` +
              (f.last_error ? ` (${f.last_error.split('\n')[0]})` : '')
          )
        );
      }
    }
    const waiting = this.model.waitingFor(model, v);
    if (waiting) {
      row.append(
        el(
          'div',
          { class: 'jp-Handoff-hint jp-Handoff-waiting' },
          waitingText(waiting)
        )
      );
    }
    if (v.pruned) {
      row.append(
        el(
          'div',
          {
            class: 'jp-Handoff-hint jp-Handoff-pruned',
            title:
              'Retention removed its bundle; its record and reports stay. Pushing the same model again brings it back.'
          },
          `bundle pruned on ${v.pruned.slice(0, 10)}`
        )
      );
    }
    const signoffs = this.renderSignoffs(model, v);
    if (signoffs) {
      row.append(signoffs);
    }
    const actions = this.renderActions(model, v);
    if (actions) {
      row.append(actions);
    }
    const dossier = dossierButton(this.model.source, model, v);
    if (dossier) {
      row.append(dossier);
    }
    return row;
  }

  /**
   * Every sign-off of the version, folded: who (as which role), the decision, the stage it
   * was for, and the comment. Users wrote the comments: they go in as text, never markup.
   */
  private renderSignoffs(model: string, v: IVersion): HTMLElement | null {
    const signoffs = v.signoffs ?? [];
    if (!signoffs.length) {
      return null;
    }
    const key = `${this.model.source}:${model}:${v.number}`;
    const list = el('ul', { class: 'jp-Handoff-signoffList' });
    for (const s of signoffs) {
      list.append(
        el(
          'li',
          {
            class: `jp-Handoff-signoff jp-Handoff-decision-${s.decision}`,
            'data-user': s.user,
            'data-decision': s.decision,
            'data-stage': s.stage,
            title: s.time
          },
          el(
            'div',
            {},
            el('b', { class: 'jp-Handoff-signoffUser' }, s.user),
            ` (${s.role}) `,
            el('span', { class: 'jp-Handoff-signoffDecision' }, s.decision),
            ' for ',
            el('span', { class: 'jp-Handoff-signoffStage' }, s.stage),
            el('span', { class: 'jp-Handoff-meta' }, ` · ${ago(s.time)}`)
          ),
          s.comment
            ? el('div', { class: 'jp-Handoff-signoffComment' }, s.comment)
            : null
        )
      );
    }
    const box = el(
      'details',
      { class: 'jp-Handoff-signoffs' },
      el('summary', {}, `Sign-offs (${signoffs.length})`),
      list
    );
    box.open = this.signoffsOpen.has(key); // kept across re-renders
    box.ontoggle = () => {
      if (box.open) {
        this.signoffsOpen.add(key);
      } else {
        this.signoffsOpen.delete(key);
      }
    };
    return box;
  }

  /**
   * Approve and Reject for a version's sign-off towards `next`, each with a comment; once the
   * caller signed for `next` (`signed`), only "Withdraw my sign-off", while it still waits.
   */
  private signoffButtons(
    model: string,
    n: number,
    next: string,
    signed: boolean
  ): HTMLElement[] {
    if (signed) {
      const withdraw = el(
        'button',
        {
          class: 'jp-Handoff-withdraw jp-mod-styled jp-mod-warn',
          title: `Take back your sign-off of ${model}:${n} for ${next}: it waits for it again`
        },
        'Withdraw my sign-off'
      );
      withdraw.onclick = () => void this.withdraw(model, n, next);
      return [withdraw];
    }
    const approve = el(
      'button',
      {
        class: 'jp-Handoff-approve jp-mod-styled jp-mod-accept',
        title: `Sign off ${model}:${n} for ${next}`
      },
      'Approve'
    );
    approve.onclick = () => void this.signoff(model, n, 'approve', next);
    const reject = el(
      'button',
      { class: 'jp-Handoff-reject jp-mod-styled jp-mod-warn' },
      'Reject'
    );
    reject.onclick = () => void this.signoff(model, n, 'reject', next);
    return [approve, reject];
  }

  private renderActions(model: string, v: IVersion): HTMLElement | null {
    const roles = this.model.roles;
    const reviewer = roles.includes('reviewer') || roles.includes('admin');
    const admin = roles.includes('admin');
    const buttons: HTMLElement[] = [];
    const stage = v.stage ?? '';
    const next = signoffTo(this.model.meta, stage);
    if (reviewer && next) {
      const signed = this.model.ownSignoff(v) !== undefined;
      buttons.push(...this.signoffButtons(model, v.number, next, signed));
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
    if (admin && canRollBack(this.model.meta, stage)) {
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

/** The sign-offs a version still needs, for people: '1 risk, 2 reviewer'. */
function needsText(missing: Record<string, number>): string {
  return Object.entries(missing)
    .map(([role, n]) => `${n} ${role}`)
    .join(', ');
}

/** 'Waits for 1 reviewer sign-off to become production (in: bob as risk) · not yet: …' */
function waitingText(r: IReview): string {
  const count = Object.values(r.missing).reduce((a, b) => a + b, 0);
  const signed = r.signoffs.map(s => `${s.user} as ${s.role}`).join(', ');
  return [
    `Waits for ${needsText(r.missing)} sign-off${count > 1 ? 's' : ''} to become ${r.next}`,
    signed ? ` (in: ${signed})` : '',
    r.blocked ? ` · not yet: ${r.blocked.message}` : ''
  ].join('');
}
