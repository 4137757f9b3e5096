/**
 * The Monitor view of one model: its recent closed windows as spark bars per metric, each
 * against its threshold with a mark where a window crossed it, performance with its
 * bootstrap CI, per-feature PSI, and the alerts (fired and cleared). The thresholds, the
 * side of each that is worse and the crossings come from the API (each window's readings,
 * judged by the same code as the alerts); the alert words and their order from /meta.
 * Plain DOM and CSS; it re-reads central every few seconds while it is shown.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { agentPath, api, HandoffError, IMeta, requestAPI, Source } from './api';
import { el, errorBox, reconcile } from './dom';
import { alertRank, alertWord } from './vocabulary';

/** One alert kind's reading of a window (the monitor response's ``readings``). */
export interface IReading {
  kind: string;
  value: number | null;
  threshold: number | null;
  worse: 'above' | 'below';
  crossed: boolean;
}

export interface IWindow {
  kind: string;
  start: number;
  end: number;
  status: string;
  reason: string;
  labels: string;
  metrics: Record<string, any>;
  readings?: IReading[];
}

export interface IMonitorSeries {
  model: string;
  windows: IWindow[];
  firing: number;
  /** The versions taking traffic and, when none does, why (the newest version's stage). */
  traffic?: {
    versions: { slot: string; version: number; traffic: number }[];
    why_none: string | null;
  };
  policy: Record<string, { value: unknown; help?: string }>;
}

export interface IAlert {
  id: number;
  kind: string;
  window: string;
  state: 'firing' | 'cleared';
  value: number | null;
  threshold: number | null;
  fired_window: number | null;
  fired: string | null;
  cleared_window: number | null;
  cleared: string | null;
  action: string | null;
  outcome: string | null;
  message: string | null;
}

const POLL_MS = 10000;
/** The most recent windows drawn per metric. */
const SHOWN = 30;
/** The newest alerts listed (the API answers newest first). */
const ALERTS_SHOWN = 50;

export const monitorApi = {
  /** The newest ``limit`` windows of one kind (the response is central's, relayed or not). */
  series: (source: Source, name: string, kind: string, limit: number) =>
    requestAPI<IMonitorSeries>(
      `${agentPath(source, 'models', name, 'monitor')}?window=${encodeURIComponent(kind)}&limit=${limit}`
    ),
  alerts: (source: Source, name: string) =>
    requestAPI<{ alerts: IAlert[] }>(
      agentPath(source, 'models', name, 'alerts')
    )
};

export function day(epoch: number | null | undefined): string {
  if (epoch === null || epoch === undefined) {
    return '–';
  }
  return new Date(epoch * 1000).toISOString().slice(0, 16).replace('T', ' ');
}

export function num(value: unknown): string {
  if (typeof value !== 'number' || !isFinite(value)) {
    return '–';
  }
  return Math.abs(value) >= 1000
    ? value.toFixed(0)
    : String(Number(value.toPrecision(3)));
}

/** A value by its dotted path in a window's metrics. */
function at(w: IWindow, path: string[]): unknown {
  let v: unknown = w.metrics;
  for (const k of path) {
    v = v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : null;
  }
  return v;
}

/** One row of bars: a value per window, an optional threshold and crossing per window. */
interface IRow {
  key: string;
  label: string;
  values: (number | null)[];
  threshold?: number | null;
  worse?: 'above' | 'below';
  crossed?: boolean[];
  ci?: ([number, number] | null)[];
  help?: string;
}

export class MonitorView extends Widget {
  series: IMonitorSeries | null = null;
  alerts: IAlert[] = [];
  meta: IMeta | null = null;
  error: HandoffError | null = null;
  /** The window kind shown: daily at first, as `%mlops monitor` shows. */
  kind = 'daily';
  private timer: number | null = null;

  constructor(
    readonly source: Source,
    readonly model: string
  ) {
    super();
    this.addClass('jp-Handoff-monitor');
    this.node.dataset.model = model;
  }

  protected onAfterAttach(): void {
    void this.start();
  }

  protected onBeforeDetach(): void {
    this.stop();
  }

  dispose(): void {
    this.stop();
    super.dispose();
  }

  private stop(): void {
    if (this.timer !== null) {
      window.clearInterval(this.timer);
      this.timer = null;
    }
  }

  async start(): Promise<void> {
    this.meta = await api.meta(this.source).catch(() => null);
    await this.refresh();
    this.stop();
    this.timer = window.setInterval(() => void this.refresh(), POLL_MS);
  }

  async refresh(): Promise<void> {
    try {
      const [series, alerts] = await Promise.all([
        monitorApi.series(this.source, this.model, this.kind, SHOWN),
        monitorApi.alerts(this.source, this.model)
      ]);
      this.series = series;
      this.alerts = alerts.alerts;
      this.error = null;
    } catch (error) {
      this.error = error as HandoffError;
    }
    this.render();
  }

  /** The closed window kinds central's policy evaluates (the words from /meta), and the
   * one shown. */
  kinds(): string[] {
    const policy = this.series?.policy ?? {};
    const on = (this.meta?.monitor?.windows ?? []).filter(
      k => policy[k]?.value === true
    );
    return on.includes(this.kind) ? on : [...on, this.kind];
  }

  // -- rendering ------------------------------------------------------------------------

  /** Redraws in place (dom.reconcile) at each poll: the window picker a user has open, and
   * what did not change, stay themselves. */
  render(): void {
    reconcile(this.node, this.drawing());
  }

  private drawing(): HTMLElement[] {
    const firing = this.alerts.filter(a => a.state === 'firing');
    const parts: HTMLElement[] = [
      el(
        'h2',
        {},
        `Monitoring of ${this.model} (${this.source === 'central' ? 'central' : 'through this machine'}) `,
        el(
          'span',
          {
            class: `jp-Handoff-monitorFiring ${firing.length ? 'jp-mod-firing' : ''}`,
            'data-firing': String(firing.length)
          },
          firing.length ? `${firing.length} firing` : 'no alert'
        )
      )
    ];
    if (this.error) {
      parts.push(
        errorBox(
          this.error,
          `Central has no version of ${this.model} yet: it is monitored there once a version is forwarded and deployed.`
        )
      );
      return parts;
    }
    if (!this.series) {
      return parts;
    }
    parts.push(this.renderPicker(this.kinds()));
    const whyNone = this.series.traffic?.why_none;
    if (whyNone) {
      parts.push(el('p', { class: 'jp-Handoff-notServing' }, whyNone));
    }
    if (!this.windows().length) {
      parts.push(
        el(
          'p',
          { class: 'jp-Handoff-empty' },
          whyNone
            ? `No closed ${this.kind} window: windows close over served predictions.`
            : `No closed ${this.kind} window yet: central evaluates the prediction log as windows close.`
        )
      );
    } else {
      parts.push(this.renderTable());
    }
    parts.push(this.renderAlerts());
    return parts;
  }

  private renderPicker(kinds: string[]): HTMLElement {
    const select = el(
      'select',
      { class: 'jp-Handoff-monitorWindow', title: 'Which windows to show' },
      ...kinds.map(k => el('option', { value: k }, k))
    );
    select.value = this.kind;
    select.dataset.value = this.kind; // the drawing differs when the choice does
    select.onchange = () => {
      this.kind = select.value;
      void this.refresh();
    };
    return el('div', { class: 'jp-Handoff-toolbar' }, 'Windows: ', select);
  }

  /** The shown windows, oldest first. */
  windows(): IWindow[] {
    return (this.series?.windows ?? [])
      .filter(w => w.kind === this.kind)
      .sort((a, b) => a.start - b.start)
      .slice(-SHOWN);
  }

  rows(ws: IWindow[]): IRow[] {
    const rows: IRow[] = [
      {
        key: 'requests',
        label: 'traffic (requests)',
        values: ws.map(w => at(w, ['traffic', 'requests']) as number | null)
      }
    ];
    // Every alert kind a window reads, worst first as /meta orders them.
    const found = [
      ...new Set(ws.flatMap(w => (w.readings ?? []).map(r => r.kind)))
    ].sort((a, b) => alertRank(this.meta, a) - alertRank(this.meta, b));
    for (const kind of found) {
      const per = ws.map(w => (w.readings ?? []).find(r => r.kind === kind));
      const last = [...per].reverse().find(r => r);
      rows.push({
        key: kind,
        label: alertWord(this.meta, kind),
        values: per.map(r => r?.value ?? null),
        threshold: last?.threshold ?? null,
        worse: last?.worse,
        crossed: per.map(r => !!r?.crossed),
        ci:
          kind === 'performance'
            ? ws.map(
                w => (at(w, ['performance', 'ci']) as [number, number]) ?? null
              )
            : undefined
      });
    }
    // Per-feature PSI: a feature counts as drifted by the flag central set.
    const features = new Set<string>();
    for (const w of ws) {
      Object.keys(at(w, ['drift', 'features']) ?? {}).forEach(f =>
        features.add(f)
      );
    }
    const featureBound = this.series?.policy?.max_feature_psi;
    for (const f of [...features].sort()) {
      rows.push({
        key: `psi:${f}`,
        label: `PSI ${f}`,
        values: ws.map(w => at(w, ['drift', 'features', f, 'psi']) as number),
        threshold:
          typeof featureBound?.value === 'number' ? featureBound.value : null,
        worse: 'above',
        crossed: ws.map(w => !!at(w, ['drift', 'features', f, 'drifted'])),
        help: featureBound?.help
      });
    }
    return rows;
  }

  private renderTable(): HTMLElement {
    const ws = this.windows();
    const body = el('tbody');
    for (const row of this.rows(ws)) {
      if (row.values.every(v => v === null || v === undefined)) {
        continue;
      }
      const lastValue = [...row.values]
        .reverse()
        .find(v => typeof v === 'number');
      body.append(
        el(
          'tr',
          {
            class: 'jp-Handoff-monitorRow',
            'data-metric': row.key,
            'data-crossed': String(!!row.crossed?.[row.crossed.length - 1])
          },
          el('th', { title: row.help ?? '' }, row.label),
          el(
            'td',
            { class: 'jp-Handoff-monitorThreshold' },
            row.threshold === null || row.threshold === undefined
              ? ''
              : `alert ${row.worse} ${num(row.threshold)}`
          ),
          el('td', {}, this.renderBars(ws, row)),
          el('td', { class: 'jp-Handoff-monitorLast' }, num(lastValue))
        )
      );
    }
    return el(
      'table',
      { class: 'jp-Handoff-monitorTable' },
      el(
        'thead',
        {},
        el(
          'tr',
          {},
          el('th', {}, 'metric'),
          el('th', {}, 'threshold'),
          el(
            'th',
            {},
            `${ws.length} ${this.kind} windows, ${day(ws[0]?.start)} → ${day(ws[ws.length - 1]?.end)}`
          ),
          el('th', {}, 'latest')
        )
      ),
      body
    );
  }

  /** A bar per window, scaled to the row's largest value or threshold; a line at the
   * threshold; a crossing is marked; performance shows its CI as a whisker. A metric that
   * is worse below its threshold (performance) starts its bars under its lowest value, so
   * that a drop shows. */
  private renderBars(ws: IWindow[], row: IRow): HTMLElement {
    const numbers = [
      ...row.values,
      ...(row.ci ?? []).flatMap(c => c ?? []),
      row.threshold
    ].filter((v): v is number => typeof v === 'number' && isFinite(v));
    const top = Math.max(...numbers, 1e-12);
    const low = Math.min(...numbers, top);
    const floor =
      row.worse === 'below' ? Math.max(0, low - 0.5 * (top - low)) : 0;
    const pct = (v: number) =>
      `${Math.max(0, Math.min(100, (100 * (v - floor)) / (top - floor || 1)))}%`;
    const spark = el('div', { class: 'jp-Handoff-spark' });
    ws.forEach((w, i) => {
      const v = row.values[i];
      const crossed = !!row.crossed?.[i];
      const ci = row.ci?.[i] ?? null;
      const words = [
        `${day(w.start)}: ${num(v)}`,
        ci ? `CI ${num(ci[0])}–${num(ci[1])}` : '',
        typeof row.threshold === 'number'
          ? `threshold ${num(row.threshold)}${crossed ? ' (crossed)' : ''}`
          : '',
        w.status !== 'ok' ? `${w.status}: ${w.reason}` : ''
      ].filter(Boolean);
      const cell = el('div', {
        class: `jp-Handoff-sparkCell ${crossed ? 'jp-mod-crossed' : ''} ${w.status !== 'ok' ? 'jp-mod-insufficient' : ''}`,
        'data-start': String(w.start),
        'data-crossed': String(crossed),
        title: words.join('\n')
      });
      if (typeof v === 'number') {
        const bar = el('div', { class: 'jp-Handoff-sparkBar' });
        bar.style.height = pct(v);
        cell.append(bar);
      }
      if (ci) {
        const whisker = el('div', { class: 'jp-Handoff-sparkCI' });
        whisker.style.bottom = pct(ci[0]);
        whisker.style.height = `calc(${pct(ci[1])} - ${pct(ci[0])})`;
        cell.append(whisker);
      }
      if (typeof row.threshold === 'number') {
        const line = el('div', { class: 'jp-Handoff-sparkThreshold' });
        line.style.bottom = pct(row.threshold);
        cell.append(line);
      }
      if (crossed) {
        cell.append(el('span', { class: 'jp-Handoff-sparkMark' }, '▲'));
      }
      spark.append(cell);
    });
    return spark;
  }

  private renderAlerts(): HTMLElement {
    const box = el(
      'div',
      { class: 'jp-Handoff-monitorAlerts' },
      el('h3', {}, 'Alerts')
    );
    if (!this.alerts.length) {
      box.append(el('p', { class: 'jp-Handoff-empty' }, 'No alert so far.'));
      return box;
    }
    const body = el('tbody');
    for (const a of this.alerts.slice(0, ALERTS_SHOWN)) {
      body.append(
        el(
          'tr',
          {
            class: `jp-Handoff-alertRow jp-mod-${a.state}`,
            'data-kind': a.kind,
            'data-state': a.state,
            'data-window': a.window
          },
          el('td', { class: 'jp-Handoff-alertState' }, a.state),
          el('td', {}, alertWord(this.meta, a.kind)),
          el('td', {}, a.message ?? ''),
          el(
            'td',
            {},
            `${a.window} from ${day(a.fired_window)}${a.cleared_window ? `; cleared by the window from ${day(a.cleared_window)}` : ''}`
          ),
          el('td', {}, [a.action, a.outcome].filter(Boolean).join(': '))
        )
      );
    }
    box.append(
      el(
        'table',
        { class: 'jp-Handoff-alertTable' },
        el(
          'thead',
          {},
          el(
            'tr',
            {},
            ...['state', 'alert', 'what', 'window', 'action'].map(h =>
              el('th', {}, h)
            )
          )
        ),
        body
      )
    );
    if (this.alerts.length > ALERTS_SHOWN) {
      box.append(
        el(
          'p',
          { class: 'jp-Handoff-hint' },
          `and ${this.alerts.length - ALERTS_SHOWN} older (GET /api/v1/models/${this.model}/alerts)`
        )
      );
    }
    return box;
  }
}

export function monitorWidget(
  source: Source,
  model: string
): MainAreaWidget<MonitorView> {
  const content = new MonitorView(source, model);
  const widget = new MainAreaWidget({ content });
  widget.id = `handoff-monitor-${source}-${model}`;
  widget.title.label = `Monitor: ${model}`;
  widget.title.closable = true;
  return widget;
}
