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

/** Elements whose handlers close over the data they were drawn from: replaced whole. */
const INTERACTIVE = new Set([
  'A',
  'BUTTON',
  'DETAILS',
  'INPUT',
  'SELECT',
  'TEXTAREA'
]);

/**
 * Makes `parent`'s children equal `fresh`, keeping each old node that already equals one of
 * them and descending into plain containers that match (same tag and attributes, so a row
 * keyed by `data-version` finds its old self wherever it moved). A live update then leaves
 * the button under the pointer in place, so a click landing during a re-render still counts.
 * State a property holds (a select's value, a box's tick) must be mirrored in an attribute.
 */
export function reconcile(parent: Element, fresh: Node[]): void {
  const old = Array.from(parent.childNodes);
  const kept = new Set<Node>();
  const find = (match: (o: Node) => boolean) => {
    const found = old.find(o => !kept.has(o) && match(o));
    if (found) {
      kept.add(found);
    }
    return found;
  };
  const wanted = fresh.map(node => {
    const same = find(o => o.isEqualNode(node));
    if (same) {
      return same;
    }
    if (node instanceof Element && !INTERACTIVE.has(node.tagName)) {
      const shell = node.cloneNode(false);
      const like = find(
        o => o instanceof Element && o.cloneNode(false).isEqualNode(shell)
      );
      if (like) {
        reconcile(like as Element, Array.from(node.childNodes));
        return like;
      }
    }
    return node;
  });
  for (const o of old) {
    if (!kept.has(o)) {
      o.remove();
    }
  }
  wanted.forEach((node, i) => {
    const at = parent.childNodes[i] ?? null;
    if (at !== node) {
      parent.insertBefore(node, at);
    }
  });
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
