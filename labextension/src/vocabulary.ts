/**
 * Reading the vocabulary the agent serves at GET /api/v1/meta. The panel keeps no copy of
 * metric directions, statuses or the stage flow: each question is asked of the meta.
 */
import { IFiring, IMeta, IProvisional, IVersion } from './api';

/** A version's verdict word (pass/warn/fail), else its status as it is. */
export function verdictOf(v: IVersion, meta: IMeta | null): string {
  if (v.verdict?.verdict) {
    return v.verdict.verdict;
  }
  for (const [verdict, status] of Object.entries(
    meta?.statuses.verdict_status ?? {}
  )) {
    if (status === v.status) {
      return verdict;
    }
  }
  return v.status ?? 'unknown';
}

/**
 * A checking version's provisional verdict, under the field the meta names; null once the
 * final verdict is in (it replaces the provisional one) or when there is none yet.
 */
export function provisionalOf(
  v: IVersion,
  meta: IMeta | null
): IProvisional | null {
  const field = meta?.statuses.provisional?.field;
  if (!field || v.verdict?.verdict) {
    return null;
  }
  const value = v[field] as IProvisional | null | undefined;
  return value?.verdict ? value : null;
}

/** The words for a provisional verdict ("passing so far"), from the meta. */
export function provisionalWords(meta: IMeta | null, verdict: string): string {
  return meta?.statuses.provisional?.words[verdict] ?? verdict;
}

/** Where a sign-off moves a version in `stage` on, by the live policy; null: nowhere. */
export function signoffTo(meta: IMeta | null, stage: string): string | null {
  return meta?.stages.flow.find(s => s.name === stage)?.signoff_to ?? null;
}

/** Whether `stage` stops a version (rejected, rolled back): its reason is shown. */
export function isStopped(meta: IMeta | null, stage?: string | null): boolean {
  return !!stage && !!meta?.stages.stopped?.includes(stage);
}

export function canRollBack(meta: IMeta | null, stage: string): boolean {
  return !!meta && meta.stages.rollback_from === stage;
}

/** +1 when a change of `delta` in `metric` is better, -1 worse, 0 unknown or none. */
export function direction(
  meta: IMeta | null,
  metric: string,
  delta: number
): number {
  const name = metric.includes('.') ? metric.split('.').pop()! : metric;
  const up = meta?.metrics.higher_is_better[name];
  if (up === undefined || delta === 0) {
    return 0;
  }
  return delta > 0 === up ? 1 : -1;
}

/** Whether a check's result key is a metric of the version, not a counter of the run. */
export function isMetric(meta: IMeta | null, key: string): boolean {
  const c = meta?.comparison;
  if (!c) {
    return true;
  }
  return !(
    c.not_metrics.includes(key) ||
    c.not_metric_affixes.prefixes.some(p => key.startsWith(p)) ||
    c.not_metric_affixes.suffixes.some(s => key.endsWith(s))
  );
}

/** An alert kind in words ("input drift"), from the meta; the kind itself if unnamed. */
export function alertWord(meta: IMeta | null, kind: string): string {
  return meta?.monitor?.alert_kinds?.[kind] ?? kind.replace(/_/g, ' ');
}

/** Firing alerts worst first, by the severity order the meta gives. */
export function worstFirst(meta: IMeta | null, alerts: IFiring[]): IFiring[] {
  return [...alerts].sort(
    (a, b) => alertRank(meta, a.kind) - alertRank(meta, b.kind)
  );
}

/** An alert kind's place in the meta's severity order (0: worst; unknown kinds last). */
export function alertRank(meta: IMeta | null, kind: string): number {
  const order = meta?.monitor?.severity ?? [];
  const i = order.indexOf(kind);
  return i < 0 ? order.length : i;
}
