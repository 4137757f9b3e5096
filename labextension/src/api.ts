/**
 * One helper for every call: the server extension's /handoff/api routes, with Jupyter's
 * own credentials. The browser never sees an agent's token.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export type Source = 'local' | 'central';

export interface IApiError {
  code: string;
  message: string;
  hint: string;
}

export class HandoffError extends Error {
  constructor(
    readonly status: number,
    readonly detail: IApiError
  ) {
    super(detail.message);
  }
}

export interface IInfo {
  python_version: string;
  labextension_version: string | null;
  labextension_path: string | null;
  match: boolean;
  fix: string;
  agent: { running: boolean; url: string | null; auto_start: boolean };
  central: { configured: boolean; url: string };
}

/** A firing alert as the models list names it (central), worst kind first. */
export interface IFiring {
  kind: string;
  window: string;
  fired_window?: number | null;
  message?: string | null;
}

export interface IModel {
  name: string;
  owner?: string;
  versions: number;
  latest_status?: string;
  /** Central: the count of firing alerts, and the alerts themselves. */
  open_alerts?: number;
  firing?: IFiring[];
  /** Central: known only from `monitor import` (served elsewhere, no version here). */
  imported?: boolean;
}

export interface IVerdict {
  verdict: 'pass' | 'warn' | 'fail';
  reasons: string[];
}

/** The verdict so far, while the version is still checking (vocabulary.PROVISIONAL_FIELD). */
export interface IProvisional extends IVerdict {
  /** The checks still queued or running. */
  pending: string[];
}

export interface IVersion {
  model: string;
  number: number;
  status: string;
  pushed_by?: string;
  pushed_at?: string;
  message?: string;
  verdict?: IVerdict | null;
  /** Read through `provisionalOf` (the field's name comes from the meta). */
  [field: string]: unknown;
  stage?: string | null;
  /** classification or regression, as the push recorded it. */
  task?: string | null;
  /** When retention removed its bundle (`jupyter handoff prune`); its record stays. */
  pruned?: string | null;
  /** Central: the exact types it waits for an admin to trust (stage needs_trust). */
  needs_trust?: string[] | null;
  stages?: { stage: string; since: string; by: string; comment?: string }[];
  /** The stage in the agent's words: 'approved by bob', 'rejected by rita: too few rows'. */
  stage_text?: string;
  /** Hand-offs not delivered yet: pending (retried) or dead (refused), with the last error. */
  undelivered?: {
    destination: string;
    state: string;
    last_error?: string | null;
  }[];
  /** On a local agent: the number central gave the version (null until it answered). */
  central_version?: number | null;
  /** A local agent's hand-offs; central's answer names the number it gave the version. */
  forwards?: {
    destination: string;
    remote?: { version?: number } | null;
  }[];
  signoffs?: ISignoff[];
  metrics?: Record<string, unknown> | null;
  checks?: {
    name: string;
    status: string;
    message?: string;
    result?: { metrics?: Record<string, unknown> } | null;
  }[];
  reports?: string[];
}

/** One sign-off of a version, as central recorded it (a withdrawn one is gone). */
export interface ISignoff {
  stage: string;
  role: string;
  user: string;
  decision: string;
  comment: string;
  time: string;
}

export interface IWhoami {
  user: string;
  roles: string[];
  role: string;
}

/** A version waiting for sign-offs at central (GET /api/v1/reviews). */
export interface IReview {
  model: string;
  version: number;
  stage: string;
  since: string;
  next: string;
  missing: Record<string, number>;
  signoffs: { role: string; user: string; decision: string; time: string }[];
  verdict: string;
  pushed_by: string;
  blocked: { code: string; message: string } | null;
}

export interface IEvent {
  id: number;
  type: string;
  model?: string;
  version?: number;
  [key: string]: unknown;
}

/** One stage of the flow, as the agent's live policy has it (GET /api/v1/meta). */
export interface IStage {
  name: string;
  signoffs: Record<string, number>;
  next: string | null;
  /** Where reviewers' sign-offs (or an admin's promotion) move a version on. */
  signoff_to: string | null;
  by_agent: boolean;
}

/** The vocabulary the agent shares with the panel, defined once in Python (vocabulary.py). */
export interface IMeta {
  role: string;
  metrics: { higher_is_better: Record<string, boolean> };
  statuses: {
    check: string[];
    check_running: string[];
    verdicts: string[];
    version: string[];
    verdict_status: Record<string, string>;
    verdict_words: Record<string, string>;
    /** The provisional verdict: the version's field, the checks it waits for, its words. */
    provisional: {
      field: string;
      checks: string[];
      words: Record<string, string>;
    };
  };
  stages: {
    policy: string;
    flow: IStage[];
    terminal: string[];
    rollback_from: string;
    /** Stages that stop a version, whose reason (`stage_text`) the analyst must read. */
    stopped?: string[];
    aliases: Record<string, string>;
  };
  /** The deployment words and who may take each action (deploy.actions: role lists). */
  deploy?: {
    slots: string[];
    guardrail_states: Record<string, string>;
    alarms: Record<string, string>;
    actions?: Record<string, string[]>;
    policy: Record<string, unknown>;
  };
  /** The [monitor] policy's keys, the alert kinds' words and their order, worst first. */
  monitor?: {
    policy: Record<string, unknown>;
    alert_kinds?: Record<string, string>;
    severity?: string[];
    /** The closed window kinds (hourly, daily, monthly), each on or off in the policy. */
    windows?: string[];
  };
  comparison: {
    latency: string[];
    fairness: string[];
    /** Result keys that are counters of a check's run, not metrics of the version. */
    not_metrics: string[];
    not_metric_affixes: { prefixes: string[]; suffixes: string[] };
    better_colour: string;
    worse_colour: string;
  };
}

function headers(init: RequestInit): Headers {
  const h = new Headers(init.headers ?? {});
  if (init.body && !h.has('Content-Type')) {
    h.set('Content-Type', 'application/json');
  }
  return h;
}

export function apiUrl(...parts: string[]): string {
  const settings = ServerConnection.makeSettings();
  return URLExt.join(settings.baseUrl, 'handoff', 'api', ...parts);
}

/** GET or POST a Handoff route; answers parsed JSON, or text when asked. */
export async function requestAPI<T = any>(
  path: string,
  init: RequestInit = {},
  as: 'json' | 'text' = 'json'
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(
      apiUrl(path),
      { ...init, headers: headers(init) },
      settings
    );
  } catch (error) {
    throw new HandoffError(0, {
      code: 'network',
      message: `Jupyter did not answer: ${error}`,
      hint: 'Is the Jupyter server still running?'
    });
  }
  const text = await response.text();
  if (!response.ok) {
    let detail: IApiError = {
      code: `http_${response.status}`,
      message: text.slice(0, 200) || response.statusText,
      hint: ''
    };
    try {
      const body = JSON.parse(text);
      if (body.error) {
        detail = { hint: '', ...body.error };
      } else if (body.message) {
        detail = { ...detail, message: body.message };
      }
    } catch {
      // not JSON: keep the text
    }
    if (response.status === 404 && detail.code === 'http_404') {
      detail.hint =
        'The Handoff server extension is not enabled: run `jupyter server extension enable jupyter_handoff` and restart JupyterLab.';
    }
    throw new HandoffError(response.status, detail);
  }
  if (as === 'text') {
    return text as unknown as T;
  }
  return (text ? JSON.parse(text) : {}) as T;
}

export function agentPath(
  source: Source,
  ...parts: (string | number)[]
): string {
  return URLExt.join(
    source,
    'api',
    'v1',
    ...parts.map(p => encodeURIComponent(String(p)))
  );
}

export const api = {
  info: () => requestAPI<IInfo>('info'),
  meta: (source: Source) => requestAPI<IMeta>(agentPath(source, 'meta')),
  models: (source: Source) =>
    requestAPI<{ models: IModel[] }>(agentPath(source, 'models')),
  versions: (source: Source, name: string, limit = 20) =>
    requestAPI<{ versions: IVersion[] }>(
      `${agentPath(source, 'models', name, 'versions')}?limit=${limit}`
    ),
  version: (source: Source, name: string, n: number) =>
    requestAPI<IVersion>(agentPath(source, 'models', name, 'versions', n)),
  report: (source: Source, name: string, n: number) =>
    requestAPI<string>(
      `${agentPath(source, 'models', name, 'versions', n, 'report')}?format=html`,
      {},
      'text'
    ),
  whoami: (source: Source) => requestAPI<IWhoami>(agentPath(source, 'whoami')),
  /** The first page of the versions the caller may sign off now, oldest first (central only). */
  reviews: (source: Source) =>
    requestAPI<{ reviews: IReview[]; next?: number }>(
      `${agentPath(source, 'reviews')}?mine=true`
    ),
  /** What central waits for before one model's versions move on (a local agent relays it). */
  modelReviews: (source: Source, name: string) =>
    requestAPI<{ model: string; reviews: IReview[] }>(
      agentPath(source, 'models', name, 'reviews')
    ),
  firing: (source: Source, name: string) =>
    requestAPI<{ alerts: IFiring[] }>(
      `${agentPath(source, 'models', name, 'alerts')}?state=firing`
    ),
  signoff: (
    source: Source,
    name: string,
    n: number,
    decision: 'approve' | 'reject',
    comment: string,
    to: string
  ) =>
    requestAPI<{ stage: string }>(
      agentPath(source, 'models', name, 'versions', n, 'signoffs'),
      // `to`: the next stage as the reviewer saw it; central refuses a stale sign-off
      { method: 'POST', body: JSON.stringify({ decision, comment, to }) }
    ),
  /** Take the caller's own sign-off for `to` back, while the version still waits for it. */
  withdraw: (
    source: Source,
    name: string,
    n: number,
    comment: string,
    to: string
  ) =>
    requestAPI<{
      stage: string;
      waiting_for: string;
      withdrawn: Omit<ISignoff, 'comment' | 'time'>;
    }>(agentPath(source, 'models', name, 'versions', n, 'signoffs'), {
      method: 'POST',
      body: JSON.stringify({ decision: 'withdraw', comment, to })
    }),
  transition: (
    source: Source,
    name: string,
    n: number,
    to: string,
    comment: string
  ) =>
    requestAPI<{ stage: string }>(
      agentPath(source, 'models', name, 'versions', n, 'transition'),
      { method: 'POST', body: JSON.stringify({ to, comment }) }
    ),
  trust: (source: Source, types: string[]) =>
    requestAPI<{
      added: string[];
      released: { name: string; version: number }[];
    }>(agentPath(source, 'trust'), {
      method: 'POST',
      body: JSON.stringify({ types })
    })
};

/**
 * Follows an agent's server-sent events through the proxy: its bus (`events`, the default)
 * or another stream route (a model's `deployment/events`). fetch, not EventSource, so
 * Jupyter's auth header goes along. Reconnects with Last-Event-ID until stopped, waiting
 * longer after each failure; `onState(false)` says the stream is down until it is back.
 */
export class EventStream {
  private controller: AbortController | null = null;
  private lastId = '';
  private stopped = false;

  constructor(
    private source: Source,
    private onEvent: (event: IEvent) => void,
    private onState: (connected: boolean, error?: HandoffError) => void,
    private path: (string | number)[] = ['events']
  ) {}

  start(): void {
    this.stopped = false;
    void this.loop();
  }

  stop(): void {
    this.stopped = true;
    this.controller?.abort();
  }

  private async loop(): Promise<void> {
    let delay = 1000;
    while (!this.stopped) {
      try {
        await this.follow();
        delay = 1000;
        if (this.stopped) {
          return;
        }
        this.onState(false); // the agent ended the stream: down until it opens again
      } catch (error) {
        if (this.stopped) {
          return;
        }
        this.onState(false, error instanceof HandoffError ? error : undefined);
      }
      await new Promise(resolve => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 30000);
    }
  }

  private async follow(): Promise<void> {
    this.controller = new AbortController();
    const init: RequestInit = { signal: this.controller.signal };
    const h = headers(init);
    if (this.lastId) {
      h.set('Last-Event-ID', this.lastId);
    }
    const response = await ServerConnection.makeRequest(
      apiUrl(agentPath(this.source, ...this.path)),
      { ...init, headers: h },
      ServerConnection.makeSettings()
    );
    if (!response.ok || !response.body) {
      let detail: IApiError = {
        code: `http_${response.status}`,
        message: response.statusText,
        hint: ''
      };
      try {
        detail = { hint: '', ...(await response.json()).error };
      } catch {
        // keep the status
      }
      throw new HandoffError(response.status, detail);
    }
    this.onState(true);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        return;
      }
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        this.dispatch(block);
      }
    }
  }

  private dispatch(block: string): void {
    let data = '';
    for (const line of block.split('\n')) {
      if (line.startsWith('id:')) {
        this.lastId = line.slice(3).trim();
      } else if (line.startsWith('data:')) {
        data += line.slice(5).trim();
      }
    }
    if (!data) {
      return;
    }
    try {
      this.onEvent(JSON.parse(data));
    } catch {
      // a malformed event is skipped; the panel re-reads state anyway
    }
  }
}
