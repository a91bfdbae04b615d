import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { FlowbookClient } from './client.js';
import { button, child, el, reconcile, setAttr, setText, showError } from './dom.js';
import { formatBytes, formatFullTime, formatLocalTime, MISSING } from './format.js';
import { cacheEntryKey, sortCacheEntries } from './cache.js';
import {
  ApiResult,
  CacheClearRequest,
  ICacheClearResult,
  ICacheEntry,
  ICacheList
} from './types.js';

/**
 * The task cache (`.fb-cache`): one row per entry (`.fb-cache-row`, keyed by
 * `data-task-key` + `data-key`) with its task, flow, creation time, hits and a preview of
 * its inputs, a "Clear" button per entry, and "Clear expired" / "Clear all" (the latter
 * asks first).
 */
export class CacheList extends Widget {
  constructor(options: { client: FlowbookClient }) {
    super();
    this._client = options.client;
    this.addClass('fb-cache');

    const toolbar = el('div', 'fb-cache-toolbar');
    this._clearExpired = button(
      'fb-cache-clear-expired',
      'Clear expired',
      'Delete the entries whose expiration has passed'
    );
    this._clearAll = button('fb-cache-clear-all', 'Clear all', 'Delete every cache entry');
    this._status = el('span', 'fb-cache-status');
    this._status.setAttribute('role', 'status');
    toolbar.append(this._clearExpired, this._clearAll, this._status);

    this._error = el('div', 'fb-error');
    this._error.setAttribute('role', 'alert');
    this._error.hidden = true;
    this._list = el('div', 'fb-cache-list');
    this._list.setAttribute('role', 'list');
    this._empty = el('div', 'fb-empty fb-cache-empty', 'The cache is empty.');
    this._empty.hidden = true;
    this.node.append(toolbar, this._error, this._list, this._empty);

    this._clearExpired.addEventListener('click', () => {
      void this._clear({ expired: true });
    });
    this._clearAll.addEventListener('click', () => {
      void this._confirmClearAll();
    });
    this._list.addEventListener('click', event => {
      const target = event.target as Element | null;
      if (!target?.closest('.fb-cache-clear')) {
        return;
      }
      const row = target.closest<HTMLElement>('.fb-cache-row');
      const taskKey = row?.dataset.taskKey;
      const key = row?.dataset.key;
      if (taskKey !== undefined && key !== undefined) {
        void this._clear({ entries: [{ task_key: taskKey, key }] });
      }
    });
  }

  /** Loads the entries and shows them; with `ifIdle`, skips while a request is out. */
  async refresh(ifIdle = false): Promise<void> {
    if (ifIdle && this._inFlight > 0) {
      return;
    }
    const generation = ++this._generation;
    this._inFlight += 1;
    let result: ApiResult<ICacheList>;
    try {
      result = await this._client.listCache();
    } finally {
      this._inFlight -= 1;
    }
    if (generation !== this._generation || this.isDisposed) {
      return;
    }
    if (!result.ok) {
      showError(this._error, `Could not load the cache: ${result.message}`);
      return;
    }
    showError(this._error, null);
    this._render(sortCacheEntries(result.value.entries ?? []));
  }

  private _render(entries: readonly ICacheEntry[]): void {
    const now = new Date();
    this._count = entries.length;
    reconcile(
      this._list,
      entries,
      cacheEntryKey,
      () => this._createRow(),
      (row, entry) => this._updateRow(row, entry, now)
    );
    this._empty.hidden = entries.length > 0;
    this._clearAll.disabled = this._busy || entries.length === 0;
  }

  private _createRow(): HTMLElement {
    const row = el('div', 'fb-cache-row');
    row.setAttribute('role', 'listitem');
    const main = el('div', 'fb-cache-row-main');
    main.append(
      el('span', 'fb-cache-row-task'),
      el('span', 'fb-cache-row-expired', 'expired'),
      button('fb-cache-clear', 'Clear', 'Delete this cache entry')
    );
    const meta = el('div', 'fb-cache-row-meta');
    meta.append(
      el('span', 'fb-cache-row-flow'),
      el('span', 'fb-cache-row-created'),
      el('span', 'fb-cache-row-hits'),
      el('span', 'fb-cache-row-size')
    );
    row.append(main, meta, el('div', 'fb-cache-row-input'));
    return row;
  }

  private _updateRow(row: HTMLElement, entry: ICacheEntry, now: Date): void {
    setAttr(row, 'data-task-key', entry.task_key);
    setAttr(row, 'data-key', entry.key);
    setAttr(row, 'data-expired', entry.expired ? 'true' : 'false');
    setText(child(row, '.fb-cache-row-task'), entry.task_name);
    child(row, '.fb-cache-row-expired').hidden = !entry.expired;
    setText(child(row, '.fb-cache-row-flow'), entry.flow_name ?? MISSING);
    const created = child(row, '.fb-cache-row-created');
    setText(created, formatLocalTime(entry.created, now));
    setAttr(
      created,
      'title',
      `created ${formatFullTime(entry.created)}` +
        (entry.expires ? `, expires ${formatFullTime(entry.expires)}` : ', never expires')
    );
    setText(child(row, '.fb-cache-row-hits'), `${entry.hits} hit${entry.hits === 1 ? '' : 's'}`);
    setText(child(row, '.fb-cache-row-size'), formatBytes(entry.size));
    const input = child(row, '.fb-cache-row-input');
    setText(input, entry.input_preview ?? '');
    setAttr(input, 'title', entry.input_preview ?? '');
    child<HTMLButtonElement>(row, '.fb-cache-clear').disabled = this._busy;
  }

  private async _confirmClearAll(): Promise<void> {
    const count = this._count;
    const result = await showDialog({
      title: 'Clear the whole cache?',
      body:
        `This deletes all ${count} cache entr${count === 1 ? 'y' : 'ies'} and their stored ` +
        'results, for every flow and kernel. Cached tasks run again on their next call.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Clear all' })]
    });
    if (result.button.accept) {
      await this._clear({ all: true });
    }
  }

  private async _clear(request: CacheClearRequest): Promise<void> {
    if (this._busy) {
      return;
    }
    this._setBusy(true);
    let result: ApiResult<ICacheClearResult>;
    try {
      result = await this._client.clearCache(request);
    } finally {
      this._setBusy(false);
    }
    if (!result.ok) {
      showError(this._error, `Could not clear the cache: ${result.message}`);
      return;
    }
    showError(this._error, null);
    const cleared = result.value.cleared;
    setText(this._status, `Cleared ${cleared} entr${cleared === 1 ? 'y' : 'ies'}.`);
    await this.refresh();
  }

  private _setBusy(busy: boolean): void {
    this._busy = busy;
    this.node.classList.toggle('fb-busy', busy);
    for (const node of this.node.querySelectorAll<HTMLButtonElement>('button')) {
      node.disabled = busy;
    }
  }

  private readonly _client: FlowbookClient;
  private readonly _clearExpired: HTMLButtonElement;
  private readonly _clearAll: HTMLButtonElement;
  private readonly _status: HTMLElement;
  private readonly _error: HTMLElement;
  private readonly _list: HTMLElement;
  private readonly _empty: HTMLElement;
  private _count = 0;
  private _busy = false;
  private _generation = 0;
  private _inFlight = 0;
}
