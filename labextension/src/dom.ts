/** Small DOM helpers the views share. */

import type { HandoffError } from './api';

export function el<K extends keyof HTMLElementTagNameMap>(
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
  const t = Date.parse(
    iso.endsWith('Z') || iso.includes('+') ? iso : `${iso}Z`
  );
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

/**
 * An agent's error as a view shows it: the message, and the hint under it. With `unknown`,
 * a model the agent does not know (404 not_found: not forwarded to central yet, say) is
 * that note instead of an alert.
 */
export function errorBox(error: HandoffError, unknown?: string): HTMLElement {
  if (unknown && error.status === 404 && error.detail?.code === 'not_found') {
    return el('p', { class: 'jp-Handoff-empty' }, unknown);
  }
  return el(
    'div',
    { class: 'jp-Handoff-error', role: 'alert' },
    el('b', {}, error.message),
    error.detail?.hint
      ? el('div', { class: 'jp-Handoff-hint' }, error.detail.hint)
      : null
  );
}
