/**
 * The Deployments view of one model: a traffic bar, a row per slot with the stats central
 * reports (whatever fields it sends), the alarms, and the actions the caller's roles allow.
 * Who may do what comes from GET /api/v1/meta (deploy.actions, the stage flow), never from
 * a copy here. While it is shown it follows the model's deployment events (a stage, the
 * traffic, a guardrail's decision, a validation, an alert; through a local agent, central's
 * relayed) and re-reads the deployment on each.
 */
import {
  InputDialog,
  MainAreaWidget,
  Notification
} from '@jupyterlab/apputils';
import { Debouncer } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import {
  agentPath,
  api,
  EventStream,
  HandoffError,
  IMeta,
  requestAPI,
  Source
} from './api';
import { el, errorBox, reconcile } from './dom';
import { canRollBack, signoffTo } from './vocabulary';

export interface ISlot {
  slot: string;
  version: number;
  traffic: number;
  [key: string]: unknown;
}

export interface IDeployment {
  model: string;
  slots: ISlot[];
  serving_url?: string | null;
  [key: string]: unknown;
}

/** Shown first, in this order; any other field central sends follows. */
const FIRST = [
  'slot',
  'version',
  'traffic',
  'requests',
  'error_rate',
  'p50_ms',
  'p99_ms'
];
const HIDDEN = new Set([
  'since',
  'by',
  'worker_pids',
  'errors',
  'alarms',
  'alarm'
]);
const FRAME = new Set([
  'model',
  'slots',
  'serving_url',
  'policy',
  'guardrails',
  'validations',
  'alarms',
  'alarm'
]);
/**
 * At most this long between two reads. While the event stream is down this is the only
 * way a change shows; while it is up it keeps the stats (requests, error rate, latency:
 * they change with every request, and no event says so) from going stale.
 */
export const REREAD_MS = 30000;

export const deploymentApi = {
  view: (source: Source, name: string) =>
    requestAPI<IDeployment>(agentPath(source, 'models', name, 'deployment')),
  traffic: (name: string, percent: number) =>
    requestAPI<IDeployment>(
      agentPath('central', 'models', name, 'deployment', 'traffic'),
      { method: 'POST', body: JSON.stringify({ percent }) }
    ),
  /** `version`: the production version the admin saw; central refuses (409, saying who
   * rolled it back and when) once it is no longer in production, so a second click or a
   * second admin never rolls back the version restored in its place. */
  rollback: (name: string, version: number, comment: string) =>
    requestAPI<IDeployment>(
      agentPath('central', 'models', name, 'deployment', 'rollback'),
      { method: 'POST', body: JSON.stringify({ version, comment }) }
    )
};

function format(key: string, value: unknown): string {
  if (value === null || value === undefined) {
    return '–';
  }
  if (typeof value === 'number') {
    if (key === 'traffic') {
      return `${value}%`;
    }
    if (key === 'error_rate') {
      return `${(100 * value).toFixed(2)}%`;
    }
    if (key.endsWith('_ms')) {
      return `${value.toFixed(2)} ms`;
    }
    return String(value);
  }
  if (Array.isArray(value)) {
    return value.map(v => format(key, v)).join(', ');
  }
  if (typeof value === 'object') {
    return Object.entries(value as Record<string, unknown>)
      .map(([k, v]) => `${k}=${format(k, v)}`)
      .join(', ');
  }
  return String(value);
}

/** What the guardrails decided, a line per slot they judge: its state, share and why. */
export function guardrailLines(view: IDeployment): string[] {
  const out: string[] = [];
  const judged = (view.guardrails ?? {}) as Record<string, unknown>;
  for (const [slot, value] of Object.entries(judged)) {
    if (!value || typeof value !== 'object') {
      continue; // the tick, or a slot with nothing to judge
    }
    const j = value as Record<string, unknown>;
    let head = slot + (j.state ? ` ${j.state}` : '');
    if (typeof j.percent === 'number') {
      head += ` at ${format('traffic', j.percent)}`;
    }
    out.push(`${head}: ${j.reason ? String(j.reason) : format(slot, j)}`);
  }
  return out;
}

/** What validating each served version found, a line each (backend, parity, load test). */
export function validationLines(view: IDeployment): string[] {
  const out: string[] = [];
  const all = (view.validations ?? {}) as Record<string, unknown>;
  for (const [n, value] of Object.entries(all)) {
    if (!value || typeof value !== 'object') {
      continue;
    }
    const v = value as Record<string, any>;
    const parts: string[] = v.backend ? [`${v.backend} backend`] : [];
    const parity = (v.parity ?? {}) as Record<string, any>;
    if (parity.converted && typeof parity.max_abs_diff === 'number') {
      let text = `ONNX parity: max abs diff ${parity.max_abs_diff.toPrecision(2)}`;
      if (typeof parity.label_agreement === 'number') {
        text += `, labels agree ${(100 * parity.label_agreement).toFixed(0)}%`;
      }
      parts.push(text + (parity.rows ? ` on ${parity.rows} rows` : ''));
    } else if (parity.reason) {
      parts.push(`no ONNX: ${parity.reason}`);
    }
    const loadtest = (v.loadtest ?? {}) as Record<string, any>;
    if (loadtest.verdict) {
      const reasons = ((loadtest.reasons ?? []) as string[]).join('; ');
      parts.push(
        `load test ${loadtest.verdict}` + (reasons ? `: ${reasons}` : '')
      );
    }
    const reason = v.reason ? String(v.reason) : '';
    if (reason && !parts.some(p => p.includes(reason))) {
      parts.push(reason); // once: the parity or the load test may say it already
    }
    out.push(`v${n} ${v.state ?? ''}: ${parts.join('; ')}`);
  }
  return out;
}

function alarmText(alarm: unknown): string {
  if (alarm && typeof alarm === 'object') {
    const a = alarm as Record<string, unknown>;
    return String(a.reason ?? a.message ?? a.metric ?? JSON.stringify(a));
  }
  return String(alarm);
}

/** Every alarm named on the model or on a slot, one line each. */
export function alarmsOf(view: IDeployment): string[] {
  const out: string[] = [];
  const holders: [string, Record<string, unknown>][] = [
    ['', view],
    ...view.slots.map(s => [`${s.slot}: `, s] as [string, ISlot])
  ];
  for (const [prefix, holder] of holders) {
    for (const key of ['alarms', 'alarm']) {
      const found = holder[key];
      if (!found) {
        continue;
      }
      for (const a of Array.isArray(found) ? found : [found]) {
        out.push(prefix + alarmText(a));
      }
    }
  }
  return out;
}

/** Who may take a deployment action, by the roles /meta names for it. */
export function mayDo(
  meta: IMeta | null,
  roles: string[],
  action: string
): boolean {
  const allowed = meta?.deploy?.actions?.[action] ?? [];
  return allowed.some(r => roles.includes(r));
}

export class DeploymentsView extends Widget {
  view: IDeployment | null = null;
  error: HandoffError | null = null;
  meta: IMeta | null = null;
  roles: string[] = [];
  stages = new Map<number, string>();
  /** True while the deployment event stream is open. */
  live = false;
  /**
   * The canary share typed but not yet set. Every read renders the view again; without this
   * an event arriving while the user types would put the old share back in the box.
   */
  private draft: string | null = null;
  private following = false;
  private stream: EventStream | null = null;
  private timer: number | null = null;
  /** A burst of events (a promotion is a stage and a traffic event) makes one read. */
  private reread = new Debouncer(() => this.refresh(), 250);

  constructor(
    readonly source: Source,
    readonly model: string
  ) {
    super();
    this.addClass('jp-Handoff-deployments');
    this.node.dataset.model = model;
  }

  // Only a shown view follows: each stream holds one of the browser's few connections to
  // the Jupyter server, and a view in a background tab reads again when it is shown.
  protected onAfterAttach(): void {
    this.follow();
  }

  protected onAfterShow(): void {
    this.follow();
  }

  protected onBeforeHide(): void {
    this.stop();
  }

  protected onBeforeDetach(): void {
    this.stop();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.stop();
    this.reread.dispose();
    super.dispose();
  }

  private follow(): void {
    if (this.following || !this.isVisible) {
      return;
    }
    this.following = true;
    void this.start();
  }

  private stop(): void {
    this.following = false;
    this.stream?.stop();
    this.stream = null;
    this.setLive(false);
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private setLive(live: boolean): void {
    this.live = live;
    this.node.dataset.live = String(live);
  }

  /** The next read, REREAD_MS after this one, while the view follows. */
  private schedule(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.following) {
      this.timer = window.setTimeout(() => void this.refresh(), REREAD_MS);
    }
  }

  /** Read who may do what, then follow the model's deployment events and read it. */
  async start(): Promise<void> {
    const [meta, roles] = await Promise.all([
      api.meta(this.source).catch(() => null),
      this.source === 'central'
        ? api
            .whoami('central')
            .then(w => w.roles)
            .catch(() => [])
        : Promise.resolve([] as string[])
    ]);
    if (!this.following || this.stream) {
      return; // hidden or closed meanwhile, or already following
    }
    [this.meta, this.roles] = [meta, roles];
    this.stream = new EventStream(
      this.source,
      // Every event the route sends concerns this deployment ("central": a local agent's
      // relay opened again, and what it missed shows on a read).
      () => void this.reread.invoke(),
      connected => {
        const opened = connected && !this.live;
        this.setLive(connected);
        if (opened) {
          void this.reread.invoke(); // what changed while it was down
        }
      },
      ['models', this.model, 'deployment', 'events']
    );
    this.stream.start();
    await this.refresh();
  }

  async refresh(): Promise<void> {
    try {
      this.view = await deploymentApi.view(this.source, this.model);
      this.error = null;
      if (this.source === 'central') {
        await this.readStages();
      }
    } catch (error) {
      this.error = error as HandoffError;
    } finally {
      this.schedule();
    }
    if (!this.isDisposed) {
      this.render();
    }
  }

  /** The stage of each version in a slot: where the stage flow lets it go next. */
  private async readStages(): Promise<void> {
    const numbers = [...new Set((this.view?.slots ?? []).map(s => s.version))];
    const found = await Promise.all(
      numbers.map(n =>
        api
          .version('central', this.model, n)
          .then(v => [n, v.stage ?? ''] as [number, string])
          .catch(() => [n, ''] as [number, string])
      )
    );
    this.stages = new Map(found);
  }

  private async act(action: Promise<unknown>): Promise<void> {
    try {
      await action;
    } catch (error) {
      const e = error as HandoffError;
      Notification.error(
        `Handoff: ${e.message}${e.detail?.hint ? ` ${e.detail.hint}` : ''}`,
        { autoClose: 10000 }
      );
    }
    await this.refresh();
  }

  /**
   * Move a version on along the flow: a sign-off when the caller holds a role the policy
   * names for that stage (it moves once they are all in), else an admin's stage change.
   */
  async promote(n: number, to: string): Promise<void> {
    const answer = await InputDialog.getText({
      title: `Move ${this.model}:${n} to ${to}`,
      label: 'Comment (recorded in the audit log)',
      okLabel: 'Move'
    });
    if (!answer.button.accept) {
      return;
    }
    const comment = answer.value ?? '';
    const signs = Object.keys(
      this.meta?.stages.flow.find(f => f.name === to)?.signoffs ?? {}
    ).some(r => this.roles.includes(r));
    await this.act(
      (signs
        ? api.signoff('central', this.model, n, 'approve', comment, to)
        : api.transition('central', this.model, n, to, comment)
      ).then(out => {
        const waiting = (out as { waiting_for?: string }).waiting_for;
        if (waiting) {
          Notification.info(
            `Handoff: signed off ${this.model}:${n} for ${waiting}; it moves once every sign-off the policy names is in.`,
            { autoClose: 8000 }
          );
        }
      })
    );
  }

  async setTraffic(percent: number): Promise<void> {
    this.draft = null;
    await this.act(deploymentApi.traffic(this.model, percent));
  }

  /** Roll back `version`, the production version this view showed when clicked. */
  async rollback(version: number): Promise<void> {
    const answer = await InputDialog.getText({
      title: `Roll back ${this.model}:${version}`,
      label: 'Comment (recorded in the audit log)',
      okLabel: 'Roll back'
    });
    if (answer.button.accept) {
      await this.act(
        deploymentApi.rollback(this.model, version, answer.value ?? '')
      );
    }
  }

  // -- rendering ------------------------------------------------------------------------

  /** Redraws in place (dom.reconcile): what did not change stays itself, so a read landing
   * mid-click loses nothing. */
  render(): void {
    const active = document.activeElement;
    const typing =
      active instanceof HTMLInputElement && this.node.contains(active)
        ? active
        : null;
    reconcile(this.node, this.drawing());
    const fresh = typing?.isConnected
      ? null
      : this.node.getElementsByClassName(typing?.className ?? '')[0];
    if (typing && fresh instanceof HTMLInputElement) {
      // The input being typed in is carried into the new drawing, not drawn again: its
      // caret and selection stay, so a read landing mid-keystroke loses no text.
      if (typing.value !== fresh.value) {
        typing.value = fresh.value;
      }
      typing.defaultValue = fresh.defaultValue;
      fresh.replaceWith(typing);
      typing.focus();
    }
  }

  private drawing(): HTMLElement[] {
    const parts: HTMLElement[] = [
      el(
        'h2',
        {},
        `Deployments of ${this.model} (${this.source === 'central' ? 'central' : 'through this machine'})`
      )
    ];
    if (this.error) {
      parts.push(
        errorBox(
          this.error,
          `Central has no version of ${this.model} yet: it serves there once a version is forwarded and deployed.`
        )
      );
      return parts;
    }
    const view = this.view;
    if (!view) {
      return parts;
    }
    if (!view.slots.length) {
      parts.push(
        el(
          'p',
          { class: 'jp-Handoff-empty' },
          'No version of this model serves.'
        )
      );
      return parts;
    }
    parts.push(this.renderBar(view), this.renderTable(view));
    for (const line of guardrailLines(view)) {
      parts.push(
        el('div', { class: 'jp-Handoff-deployExtra' }, `guardrails: ${line}`)
      );
    }
    for (const line of validationLines(view)) {
      parts.push(
        el('div', { class: 'jp-Handoff-deployExtra' }, `validation: ${line}`)
      );
    }
    for (const [k, v] of Object.entries(view)) {
      if (!FRAME.has(k) && v !== null && v !== undefined && v !== '') {
        parts.push(
          el(
            'div',
            { class: 'jp-Handoff-deployExtra' },
            `${k}: ${format(k, v)}`
          )
        );
      }
    }
    for (const alarm of alarmsOf(view)) {
      parts.push(
        el(
          'div',
          { class: 'jp-Handoff-alarm', role: 'alert' },
          `alarm: ${alarm}`
        )
      );
    }
    const rollback = this.renderRollback(view);
    if (rollback) {
      parts.push(rollback);
    }
    return parts;
  }

  private renderBar(view: IDeployment): HTMLElement {
    const bar = el('div', { class: 'jp-Handoff-trafficBar' });
    for (const s of view.slots) {
      if (typeof s.traffic === 'number' && s.traffic > 0) {
        const part = el(
          'div',
          {
            class: `jp-Handoff-traffic jp-Handoff-traffic-${s.slot}`,
            'data-slot': s.slot,
            title: `${s.slot} v${s.version}: ${s.traffic}%`
          },
          `${s.slot} v${s.version} ${s.traffic}%`
        );
        part.style.width = `${s.traffic}%`;
        bar.append(part);
      }
    }
    if (!bar.childElementCount) {
      bar.append(
        el(
          'div',
          { class: 'jp-Handoff-trafficNone' },
          'No traffic yet: a test or shadow slot is reached by version only; traffic starts at canary.'
        )
      );
    }
    return bar;
  }

  private columns(view: IDeployment): string[] {
    const cols = FIRST.filter(c => view.slots.some(s => c in s));
    for (const s of view.slots) {
      for (const k of Object.keys(s)) {
        if (!cols.includes(k) && !HIDDEN.has(k)) {
          cols.push(k);
        }
      }
    }
    return cols;
  }

  private renderTable(view: IDeployment): HTMLElement {
    const cols = this.columns(view);
    const head = el('tr');
    for (const c of [...cols, '']) {
      head.append(el('th', {}, c.replace(/_/g, ' ')));
    }
    const body = el('tbody');
    for (const s of view.slots) {
      const row = el('tr', {
        class: 'jp-Handoff-slot',
        'data-slot': s.slot,
        'data-version': String(s.version)
      });
      for (const c of cols) {
        row.append(el('td', { 'data-field': c }, format(c, s[c])));
      }
      row.append(el('td', {}, ...this.renderActions(s)));
      body.append(row);
    }
    return el(
      'table',
      { class: 'jp-Handoff-deployTable' },
      el('thead', {}, head),
      body
    );
  }

  /** Per slot: move the version on along the flow; set the canary's share. */
  private renderActions(s: ISlot): HTMLElement[] {
    if (this.source !== 'central') {
      return [];
    }
    const out: HTMLElement[] = [];
    const stage = this.stages.get(s.version) ?? '';
    const next = signoffTo(this.meta, stage);
    const signers = Object.keys(
      this.meta?.stages.flow.find(f => f.name === next)?.signoffs ?? {}
    );
    if (
      next &&
      (signers.some(r => this.roles.includes(r)) ||
        mayDo(this.meta, this.roles, 'transition'))
    ) {
      const move = el(
        'button',
        {
          class: 'jp-Handoff-deployMove jp-mod-styled',
          'data-to': next,
          title: `Stage ${stage} → ${next}: ${signers.join(', ') || 'no'} sign-offs by the policy`
        },
        `To ${next}`
      );
      move.onclick = () => void this.promote(s.version, next);
      out.push(move);
    }
    const traffic = this.meta?.deploy?.actions?.traffic;
    if (
      traffic &&
      s.slot === this.canarySlot() &&
      mayDo(this.meta, this.roles, 'traffic')
    ) {
      const input = el('input', {
        type: 'number',
        min: '0',
        max: '100',
        step: '1',
        class: 'jp-Handoff-trafficInput',
        title: "The canary's share of the traffic, %"
      }) as HTMLInputElement;
      input.value = this.draft ?? String(s.traffic);
      input.defaultValue = input.value; // the attribute: a redraw keeps the input typed in
      input.oninput = () => {
        this.draft = input.value;
        input.defaultValue = input.value; // the redraw's input equals this one
      };
      const set = el(
        'button',
        { class: 'jp-Handoff-trafficSet jp-mod-styled' },
        'Set %'
      );
      set.onclick = () =>
        void this.setTraffic(Number(this.draft ?? input.value));
      out.push(input, set);
    }
    return out;
  }

  /** The slot whose share an admin sets: the one the flow's canary stage fills. */
  private canarySlot(): string | null {
    const slots = this.meta?.deploy?.slots ?? [];
    const flow = this.meta?.stages.flow.map(f => f.name) ?? [];
    return (
      slots.find(
        s => flow.includes(s) && s !== this.meta?.stages.rollback_from
      ) ?? null
    );
  }

  private renderRollback(view: IDeployment): HTMLElement | null {
    const from = this.meta?.stages.rollback_from;
    const serving = view.slots.find(s => s.slot === from);
    if (
      this.source !== 'central' ||
      !serving ||
      !canRollBack(this.meta, this.stages.get(serving.version) ?? from ?? '') ||
      !mayDo(this.meta, this.roles, 'rollback')
    ) {
      return null;
    }
    const button = el(
      'button',
      {
        class: 'jp-Handoff-deployRollback jp-mod-styled jp-mod-warn',
        title: `Serve the previous ${from} again, in one step`
      },
      `Roll back ${from} v${serving.version}`
    );
    const version = serving.version;
    button.onclick = () => void this.rollback(version);
    return el('div', { class: 'jp-Handoff-actions' }, button);
  }
}

export function deploymentsWidget(
  source: Source,
  model: string
): MainAreaWidget<DeploymentsView> {
  const content = new DeploymentsView(source, model);
  const widget = new MainAreaWidget({ content });
  widget.id = `handoff-deployments-${source}-${model}`;
  widget.title.label = `Deployments: ${model}`;
  widget.title.closable = true;
  return widget;
}
