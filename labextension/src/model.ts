/**
 * The panel's model, as jupyterlab-git splits its own: every piece of state the views show,
 * and signals when it changes. A lumino Poll re-reads the agent (backing off while it fails);
 * with the live refresh policy the agent's events refresh the model they name at once, and
 * the poll is only a slow safety net. Views never call the API themselves.
 */
import { Poll, Debouncer } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';
import { IDisposable } from '@lumino/disposable';

import {
  api,
  EventStream,
  HandoffError,
  IEvent,
  IFiring,
  IInfo,
  IMeta,
  IModel,
  IReview,
  ISignoff,
  IVersion,
  IWhoami,
  Source
} from './api';
import { signoffTo, worstFirst } from './vocabulary';

export type RefreshPolicy = 'live' | 'poll' | 'manual';

/** Seconds between safety-net refreshes while the event stream is live. */
const LIVE_SAFETY_NET = 60;

/** Versions listed per model at first; "Show older" adds as many again. */
export const VERSIONS_PAGE = 20;

export interface ISettings {
  source: 'auto' | Source;
  refresh: RefreshPolicy;
  pollInterval: number;
  notifications: boolean;
}

export class HandoffModel implements IDisposable {
  source: Source = 'local';
  info: IInfo | null = null;
  meta: IMeta | null = null;
  whoami: IWhoami | null = null;
  models: IModel[] = [];
  versions = new Map<string, IVersion[]>();
  /** How many of each model's newest versions are listed (VERSIONS_PAGE until asked). */
  shown = new Map<string, number>();
  /** What waits for the caller's sign-off at central, oldest first; none on this machine. */
  reviews: IReview[] = [];
  /** Whether more wait than the first page holds. */
  reviewsMore = false;
  /** What central waits for before this machine's versions move on: by model, then by the
   * number central gave the version. */
  waiting = new Map<string, Map<number, IReview>>();
  /** Each model's firing alerts at central, worst first (the badges). */
  firing = new Map<string, IFiring[]>();
  selected: string[] = [];
  error: HandoffError | null = null;
  live = false;
  started = false;
  settings: ISettings = {
    source: 'auto',
    refresh: 'live',
    pollInterval: 10,
    notifications: true
  };

  private _changed = new Signal<this, void>(this);
  private _event = new Signal<this, IEvent>(this);
  private _stream: EventStream | null = null;
  private _debouncers = new Map<string, Debouncer>();
  private _isDisposed = false;
  private _poll: Poll;

  constructor() {
    this._poll = new Poll({
      auto: false,
      factory: () => this._readAll(),
      frequency: this._frequency(),
      name: 'jupyter-handoff:panel',
      standby: 'when-hidden'
    });
  }

  /** Emitted whenever anything a view shows has changed. */
  get stateChanged(): ISignal<this, void> {
    return this._changed;
  }

  /** Every event the agent reports (version, check, verdict, report, stage, forward). */
  get eventReceived(): ISignal<this, IEvent> {
    return this._event;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** The caller's roles at central; none on this machine (no sign-offs locally). */
  get roles(): string[] {
    return this.source === 'central' ? (this.whoami?.roles ?? []) : [];
  }

  /**
   * Whether `user`, as a sign-off names them, is the caller at central. Central records a
   * sign-off under the user its token names, the one whoami answers, so the same token's
   * sign-offs match exactly. Central itself matches users without regard to case: one made
   * under another spelling gets no button here (the CLI's --withdraw still takes it back).
   */
  isMe(user: string): boolean {
    return this.source === 'central' && !!user && user === this.whoami?.user;
  }

  /**
   * The caller's own sign-off of `v` for the stage it waits for: the one they may still
   * withdraw. None once the version has moved on (the sign-off counted) or on this machine.
   */
  ownSignoff(v: IVersion): ISignoff | undefined {
    const waits = signoffTo(this.meta, v.stage ?? '');
    return waits
      ? v.signoffs?.find(s => s.stage === waits && this.isMe(s.user))
      : undefined;
  }

  get refreshPolicy(): RefreshPolicy {
    return this.settings.refresh;
  }

  /** New settings take effect at once: the source, the refresh policy, its interval. */
  async configure(settings: Partial<ISettings>): Promise<void> {
    this.settings = { ...this.settings, ...settings };
    await this.restart();
  }

  /** (Re)start: read info and the vocabulary, choose the source, then refresh and follow. */
  async restart(): Promise<void> {
    this.started = true;
    this._stopFollowing();
    try {
      this.info = await api.info();
    } catch (error) {
      this.info = null;
      this.error = error as HandoffError;
      this._changed.emit();
      return;
    }
    const wanted = this.settings.source;
    const central = this.info.central.configured;
    this.source = wanted === 'auto' ? (central ? 'central' : 'local') : wanted;
    if (this.source === 'central' && !central) {
      this.source = 'local';
    }
    this._poll.frequency = this._frequency();
    await this.refresh();
    if (this.settings.refresh === 'live') {
      this._follow();
    }
    if (this.settings.refresh !== 'manual') {
      void this._poll.start();
    }
  }

  async setSource(source: Source): Promise<void> {
    this.selected = [];
    await this.configure({ source });
  }

  /** Re-read everything now (the Refresh button, and after a reconnect). */
  async refresh(): Promise<void> {
    try {
      await this._readAll();
    } catch {
      // recorded in this.error; the poll backs off on its own failures
    }
  }

  /** Tick or untick a version for comparison; at most the last two stay ticked. */
  select(key: string, on: boolean): void {
    this.selected = this.selected.filter(k => k !== key);
    if (on) {
      this.selected = [...this.selected, key].slice(-2);
    }
    this._changed.emit();
  }

  /** The two ticked versions as [name, number] pairs, or null unless exactly two are. */
  selectedPair(): [[string, number], [string, number]] | null {
    if (this.selected.length !== 2) {
      return null;
    }
    const [a, b] = this.selected.map(key => {
      const i = key.lastIndexOf(':');
      return [key.slice(0, i), Number(key.slice(i + 1))] as [string, number];
    });
    return [a, b];
  }

  // -- actions: each re-reads the model it changed; a refusal is thrown to the caller --

  async signoff(
    model: string,
    n: number,
    decision: 'approve' | 'reject',
    comment: string,
    to: string
  ): Promise<void> {
    await this._act(
      () => api.signoff(this.source, model, n, decision, comment, to),
      model
    );
  }

  /** Take the caller's own sign-off for `to` (the stage the version waits for) back. */
  async withdraw(
    model: string,
    n: number,
    comment: string,
    to: string
  ): Promise<void> {
    await this._act(
      () => api.withdraw(this.source, model, n, comment, to),
      model
    );
  }

  async transition(
    model: string,
    n: number,
    to: string,
    comment: string
  ): Promise<void> {
    await this._act(
      () => api.transition(this.source, model, n, to, comment),
      model
    );
  }

  async trust(model: string, types: string[]): Promise<void> {
    await this._act(() => api.trust(this.source, types), model);
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._stopFollowing();
    this._poll.dispose();
    Signal.clearData(this);
  }

  // -- private -------------------------------------------------------------------------

  private _frequency() {
    const { refresh, pollInterval } = this.settings;
    const seconds =
      refresh === 'poll' ? Math.max(2, pollInterval) : LIVE_SAFETY_NET;
    const interval = refresh === 'manual' ? Poll.NEVER : seconds * 1000;
    return { interval, backoff: true, max: Math.max(interval, 300 * 1000) };
  }

  /** Read the vocabulary, who we are, the models and their versions. Throws on failure,
   * so that the poll backs off. */
  private async _readAll(): Promise<void> {
    try {
      this.meta = await api.meta(this.source);
      this.whoami =
        this.source === 'central'
          ? await api.whoami('central').catch(() => null)
          : null;
      this.models = (await api.models(this.source)).models;
      await Promise.all([
        ...this.models.map(m => this._readVersions(m.name)),
        this._readReviews()
      ]);
      // Both ask central only of models with a version there: the versions say which.
      await Promise.all([this._readAlerts(), this._readWaiting()]);
      this.error = null;
    } catch (error) {
      this.error = error as HandoffError;
      throw error;
    } finally {
      this._changed.emit();
    }
  }

  /** List another page of the model's older versions. */
  showOlder(name: string): void {
    this.shown.set(
      name,
      (this.shown.get(name) ?? VERSIONS_PAGE) + VERSIONS_PAGE
    );
    this._refreshModel(name);
  }

  private async _readVersions(name: string): Promise<void> {
    if (this.models.find(m => m.name === name)?.imported) {
      // Known only from an imported log: central has no version of it to list (a 404).
      this.versions.set(name, []);
      return;
    }
    const limit = this.shown.get(name) ?? VERSIONS_PAGE;
    const rows = (await api.versions(this.source, name, limit)).versions;
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

  /** The review queue: a failed read leaves it empty, as it is on this machine. */
  private async _readReviews(): Promise<void> {
    const page =
      this.source === 'central'
        ? await api.reviews('central').catch(() => ({ reviews: [] }))
        : { reviews: [] };
    this.reviews = page.reviews;
    this.reviewsMore = 'next' in page;
  }

  /** Central's review entry for one of this machine's versions, if it waits for sign-offs. */
  waitingFor(model: string, v: IVersion): IReview | undefined {
    // Central numbers every sender's versions: never this machine's number.
    const there =
      v.central_version ??
      v.forwards?.find(f => f.destination === 'central')?.remote?.version;
    return there === null || there === undefined
      ? undefined
      : this.waiting.get(model)?.get(there);
  }

  /**
   * On this machine, what central waits for on each model with a version at central (one
   * read per model, which the local agent relays). A failed read shows nothing.
   */
  private async _readWaiting(only?: string): Promise<void> {
    const names = this.models
      .map(m => m.name)
      .filter(
        name =>
          this.source === 'local' &&
          (this.versions.get(name) ?? []).some(v => v.stage)
      );
    for (const name of [...this.waiting.keys()]) {
      if (!names.includes(name)) {
        this.waiting.delete(name);
      }
    }
    await Promise.all(
      names
        .filter(name => !only || only === name)
        .map(name =>
          api
            .modelReviews(this.source, name)
            .then(r =>
              this.waiting.set(
                name,
                new Map(r.reviews.map(e => [e.version, e]))
              )
            )
            .catch(() => this.waiting.delete(name))
        )
    );
  }

  /**
   * Each model's firing alerts. Central's models list carries them (no request more); on
   * this machine, when a central is configured, one read per model that the local agent
   * relays to central. A model whose read fails shows no badge.
   */
  private async _readAlerts(only?: string): Promise<void> {
    const names = new Set(this.models.map(m => m.name));
    for (const name of [...this.firing.keys()]) {
      if (!names.has(name)) {
        this.firing.delete(name);
      }
    }
    const relay: string[] = [];
    for (const m of this.models) {
      if (m.firing) {
        this.firing.set(m.name, worstFirst(this.meta, m.firing));
      } else if (
        this.source === 'local' &&
        this.info?.central.configured &&
        (!only || only === m.name) &&
        (this.versions.get(m.name) ?? []).some(v => v.stage) // handed off: central knows it
      ) {
        relay.push(m.name);
      }
    }
    await Promise.all(
      relay.map(name =>
        api
          .firing(this.source, name)
          .then(r => this.firing.set(name, worstFirst(this.meta, r.alerts)))
          .catch(() => this.firing.delete(name))
      )
    );
  }

  /** Re-read one model, a quarter second after the last event that named it. */
  private _refreshModel(name: string): void {
    let debouncer = this._debouncers.get(name);
    if (!debouncer) {
      debouncer = new Debouncer(async () => {
        try {
          this.models = (await api.models(this.source)).models;
          await Promise.all([this._readVersions(name), this._readReviews()]);
          await Promise.all([this._readAlerts(name), this._readWaiting(name)]);
        } catch (error) {
          this.error = error as HandoffError;
        }
        this._changed.emit();
      }, 250);
      this._debouncers.set(name, debouncer);
    }
    void debouncer.invoke();
  }

  private async _act(
    call: () => Promise<unknown>,
    model: string
  ): Promise<void> {
    const reread = () =>
      Promise.all([this._readVersions(model), this._readReviews()]);
    try {
      await call();
    } catch (error) {
      // A refusal re-reads too, so what refused it (a sign-off gone, a stage moved) shows.
      await reread().catch(() => undefined);
      this._changed.emit();
      throw error;
    }
    try {
      await reread();
      this.error = null;
    } finally {
      this._changed.emit();
    }
  }

  private _follow(): void {
    this._stream = new EventStream(
      this.source,
      event => {
        const provisional = this.meta?.statuses.provisional?.field;
        if (
          event.model &&
          [
            'version',
            'verdict',
            'report',
            'stage',
            'alert',
            provisional
          ].includes(event.type)
        ) {
          this._refreshModel(event.model);
        }
        this._event.emit(event);
      },
      (connected, error) => {
        const changed = this.live !== connected;
        this.live = connected;
        if (error) {
          this.error = error;
        }
        if (changed || error) {
          this._changed.emit();
        }
        if (connected && changed) {
          void this.refresh();
        }
      }
    );
    this._stream.start();
  }

  private _stopFollowing(): void {
    this._stream?.stop();
    this._stream = null;
    this.live = false;
    void this._poll.stop();
    for (const d of this._debouncers.values()) {
      d.dispose();
    }
    this._debouncers.clear();
  }
}
