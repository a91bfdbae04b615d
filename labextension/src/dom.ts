/**
 * Small DOM helpers shared by the panel's views. Updates are keyed and in place, so the
 * nodes a user (or a browser test) is about to click survive an auto-refresh.
 */
import { stateClass } from './runs.js';

/** A new element with an optional class and text. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** A button with a class, a label and a tooltip. */
export function button(className: string, label: string, title?: string): HTMLButtonElement {
  const node = el('button', `fb-button ${className}`, label);
  node.type = 'button';
  if (title) {
    node.title = title;
  }
  return node;
}

/** Sets a node's text only when it changed. */
export function setText(node: Element, text: string): void {
  if (node.textContent !== text) {
    node.textContent = text;
  }
}

/** Sets (or, with null, removes) an attribute only when it changed. */
export function setAttr(node: Element, name: string, value: string | null): void {
  if (value === null) {
    if (node.hasAttribute(name)) {
      node.removeAttribute(name);
    }
  } else if (node.getAttribute(name) !== value) {
    node.setAttribute(name, value);
  }
}

/** The first descendant matching `selector`; it must exist (the views build their rows). */
export function child<T extends Element = HTMLElement>(node: Element, selector: string): T {
  const found = node.querySelector<T>(selector);
  if (found === null) {
    throw new Error(`flowbook: no ${selector} in ${node.className}`);
  }
  return found;
}

/** A state badge: `fb-state-badge fb-state-<category>` plus `extraClass`. */
export function stateBadge(extraClass = ''): HTMLSpanElement {
  return el('span', `fb-state-badge ${extraClass}`.trim());
}

/** Shows a state in a badge made by `stateBadge`. */
export function updateStateBadge(
  node: HTMLElement,
  state: string | null,
  stateType: string | null,
  extraClass = ''
): void {
  const className = `fb-state-badge ${stateClass(state, stateType)} ${extraClass}`.trim();
  if (node.className !== className) {
    node.className = className;
  }
  setText(node, state ?? stateType ?? 'unknown');
}

/**
 * Makes `container`'s children the rows of `items`, in order: a row whose key is still
 * there is updated in place (and moved only when its position changed), a new key gets a
 * new row, a row whose key is gone is removed, and so is any child without a key (a
 * placeholder). Keys live in `data-fb-key`.
 */
export function reconcile<T>(
  container: HTMLElement,
  items: readonly T[],
  keyOf: (item: T) => string,
  create: (item: T) => HTMLElement,
  update: (row: HTMLElement, item: T) => void
): void {
  const existing = new Map<string, HTMLElement>();
  for (const row of Array.from(container.children)) {
    const key = (row as HTMLElement).dataset.fbKey;
    if (key === undefined) {
      row.remove(); // a placeholder such as "No task runs"
    } else {
      existing.set(key, row as HTMLElement);
    }
  }
  const wanted = new Set<string>();
  items.forEach((item, index) => {
    const key = keyOf(item);
    wanted.add(key);
    let row = existing.get(key);
    if (row === undefined) {
      row = create(item);
      row.dataset.fbKey = key;
    }
    update(row, item);
    const current = container.children[index] ?? null;
    if (current !== row) {
      container.insertBefore(row, current);
    }
  });
  for (const [key, row] of existing) {
    if (!wanted.has(key)) {
      row.remove();
    }
  }
}

/** Shows `message` in an error banner, or hides the banner for null. */
export function showError(banner: HTMLElement, message: string | null): void {
  setText(banner, message ?? '');
  banner.hidden = message === null;
}
