/** Main-area views: a version's report (sandboxed) and a comparison of two versions. */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { api, HandoffError, IMeta, IVersion, Source } from './api';
import { errorBox } from './dom';
import { direction, isMetric, verdictOf } from './vocabulary';

/**
 * The report in an iframe with an empty sandbox: no scripts, no same-origin, no forms.
 * The HTML goes in through srcdoc, so it never runs with Jupyter's origin.
 */
export class ReportView extends Widget {
  constructor(
    readonly source: Source,
    readonly model: string,
    readonly number: number
  ) {
    super();
    this.addClass('jp-Handoff-report');
    this.node.textContent = `Loading the report of ${model}:${number}…`;
    void this.load();
  }

  async load(): Promise<void> {
    try {
      const html = await api.report(this.source, this.model, this.number);
      const frame = document.createElement('iframe');
      frame.setAttribute('sandbox', '');
      frame.setAttribute('referrerpolicy', 'no-referrer');
      frame.title = `Report ${this.model}:${this.number}`;
      frame.srcdoc = html;
      this.node.replaceChildren(frame);
    } catch (error) {
      this.node.replaceChildren(errorBox(error as HandoffError));
    }
  }
}

export function reportWidget(
  source: Source,
  model: string,
  n: number
): MainAreaWidget<ReportView> {
  const content = new ReportView(source, model, n);
  const widget = new MainAreaWidget({ content });
  widget.id = `handoff-report-${source}-${model}-${n}`;
  widget.title.label = `Report ${model}:${n}`;
  widget.title.closable = true;
  return widget;
}

type Row = { name: string; a: unknown; b: unknown };

function numeric(v: unknown): number | null {
  return typeof v === 'number' && isFinite(v) ? v : null;
}

function fmt(v: unknown): string {
  const n = numeric(v);
  if (n !== null) {
    return Number.isInteger(n)
      ? String(n)
      : Math.abs(n) >= 1000
        ? n.toFixed(0)
        : n.toPrecision(4);
  }
  if (v === null || v === undefined) {
    return '–';
  }
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

/** Every numeric metric a version carries: its own, then each check's (not its counters). */
export function metricsOf(
  v: IVersion,
  meta: IMeta | null
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, val] of Object.entries(v.metrics ?? {})) {
    const n = numeric(val);
    if (n !== null && isMetric(meta, k)) {
      out[k] = n;
    }
  }
  for (const check of v.checks ?? []) {
    for (const [k, val] of Object.entries(check.result?.metrics ?? {})) {
      const n = numeric(val);
      const name = check.name === 'performance' ? k : `${check.name}.${k}`;
      if (n !== null && isMetric(meta, k) && !(name in out)) {
        out[name] = n;
      }
    }
  }
  return out;
}

export class CompareView extends Widget {
  constructor(
    readonly source: Source,
    readonly a: [string, number],
    readonly b: [string, number],
    readonly meta: IMeta | null
  ) {
    super();
    this.addClass('jp-Handoff-comparison');
    this.node.textContent = 'Loading…';
    void this.load();
  }

  async load(): Promise<void> {
    try {
      const [va, vb] = await Promise.all([
        api.version(this.source, ...this.a),
        api.version(this.source, ...this.b)
      ]);
      this.node.replaceChildren(this.table(va, vb));
    } catch (error) {
      const e = error as HandoffError;
      this.node.textContent = `${e.message} ${e.detail?.hint ?? ''}`;
    }
  }

  private table(va: IVersion, vb: IVersion): HTMLElement {
    const la = `${va.model}:${va.number}`;
    const lb = `${vb.model}:${vb.number}`;
    const summary: Row[] = [
      {
        name: 'verdict',
        a: verdictOf(va, this.meta),
        b: verdictOf(vb, this.meta)
      },
      { name: 'stage', a: va.stage, b: vb.stage },
      { name: 'pushed by', a: va.pushed_by, b: vb.pushed_by },
      { name: 'pushed at', a: va.pushed_at, b: vb.pushed_at }
    ];
    const ma = metricsOf(va, this.meta);
    const mb = metricsOf(vb, this.meta);
    const names = [...new Set([...Object.keys(ma), ...Object.keys(mb)])].sort();
    const checks = [
      ...new Set([...(va.checks ?? []), ...(vb.checks ?? [])].map(c => c.name))
    ];
    const status = (v: IVersion, name: string) =>
      v.checks?.find(c => c.name === name)?.status;

    const table = document.createElement('table');
    table.className = 'jp-Handoff-compareTable';
    const head = table.createTHead().insertRow();
    for (const h of ['', la, lb, 'Δ']) {
      const th = document.createElement('th');
      th.textContent = h;
      head.append(th);
    }
    const body = table.createTBody();
    const add = (name: string, a: unknown, b: unknown, cls = '') => {
      const row = body.insertRow();
      row.className = cls;
      row.dataset.name = name;
      row.insertCell().textContent = name;
      row.insertCell().textContent = fmt(a);
      row.insertCell().textContent = fmt(b);
      const na = numeric(a);
      const nb = numeric(b);
      const delta = row.insertCell();
      if (na !== null && nb !== null) {
        const d = nb - na;
        delta.textContent = d === 0 ? '' : `${d > 0 ? '+' : ''}${fmt(d)}`;
        // Better or worse by the metric's direction, from the agent's vocabulary.
        const better = direction(this.meta, name, d);
        if (better && this.meta) {
          const { better_colour, worse_colour } = this.meta.comparison;
          delta.style.color = better > 0 ? better_colour : worse_colour;
          delta.dataset.better = better > 0 ? 'better' : 'worse';
        }
      } else if (a !== undefined && b !== undefined && a !== b) {
        delta.textContent = 'changed'; // not where one side has no such metric
      }
    };
    for (const r of summary) {
      add(r.name, r.a, r.b, 'jp-Handoff-summaryRow');
    }
    for (const c of checks) {
      add(`check ${c}`, status(va, c), status(vb, c), 'jp-Handoff-checkRow');
    }
    for (const n of names) {
      add(n, ma[n], mb[n], 'jp-Handoff-metricRow');
    }
    const wrap = document.createElement('div');
    const title = document.createElement('h2');
    title.textContent = `${la} vs ${lb}`;
    const note = document.createElement('p');
    note.className = 'jp-Handoff-hint';
    note.textContent = `Δ is ${lb} minus ${la}, coloured when the metric has a known direction. Metrics come from the checks' stored results.`;
    wrap.append(title, note);
    if (va.task && vb.task && va.task !== vb.task) {
      const tasks = document.createElement('p');
      tasks.className = 'jp-Handoff-mismatch jp-Handoff-tasks';
      tasks.textContent = `Different tasks (${va.task} and ${vb.task}): their metrics are not comparable.`;
      wrap.append(tasks);
    }
    wrap.append(table);
    return wrap;
  }
}

export function compareWidget(
  source: Source,
  a: [string, number],
  b: [string, number],
  meta: IMeta | null
): MainAreaWidget<CompareView> {
  const content = new CompareView(source, a, b, meta);
  const widget = new MainAreaWidget({ content });
  widget.id = `handoff-compare-${source}-${a.join(':')}-${b.join(':')}`;
  widget.title.label = `${a.join(':')} vs ${b.join(':')}`;
  widget.title.closable = true;
  return widget;
}
