import { Widget } from '@lumino/widgets';

import { FlowbookClient } from './client.js';
import {
  button,
  child,
  el,
  reconcile,
  setAttr,
  setText,
  showError,
  stateBadge,
  updateStateBadge
} from './dom.js';
import {
  formatDuration,
  formatFullTime,
  formatLocalTime,
  formatValue,
  MISSING,
  runDuration
} from './format.js';
import { isFinalState } from './runs.js';
import { loadRunView, SnapshotModel } from './runview.js';
import { ApiResult, IRunDetails, IRunSnapshot, IStateRecord } from './types.js';

/**
 * One run's details (`.fb-run-details`): summary, parameters and state history, then the
 * run drawn by the run widget's own renderer (`run_view.js`, see runview.ts) from the
 * run's stored snapshot: graph with node details (message, retries, duration, traceback,
 * inputs, result), logs filterable by task and level, and timeline. A back button and,
 * when the run knows its notebook cell, an "Open cell" button. A run that is not final is
 * reloaded on each refresh, and the view is updated in place.
 */
export class RunDetails extends Widget {
  constructor(options: {
    client: FlowbookClient;
    onBack: () => void;
    onOpenCell: (notebook: string, cellId: string) => void;
  }) {
    super();
    this._client = options.client;
    this._onOpenCell = options.onOpenCell;
    this.addClass('fb-run-details');

    this._toolbar = el('div', 'fb-run-toolbar');
    const back = button('fb-run-back', '‹ Runs', 'Back to the list of runs');
    back.addEventListener('click', () => options.onBack());
    this._toolbar.append(back);

    this._error = el('div', 'fb-error');
    this._error.setAttribute('role', 'alert');
    this._error.hidden = true;
    this._loading = el('div', 'fb-empty fb-run-loading', 'Loading…');

    this._body = el('div', 'fb-run-body');
    this._body.hidden = true;
    const header = el('div', 'fb-run-header');
    header.append(el('span', 'fb-run-name'), stateBadge('fb-run-state'));
    this._facts = el('dl', 'fb-run-facts');
    this._params = el('div', 'fb-run-params');
    this._states = el('ol', 'fb-run-states');
    this._viewError = el('div', 'fb-error fb-run-view-error');
    this._viewError.setAttribute('role', 'alert');
    this._viewError.hidden = true;
    this._viewHost = el('div', 'fb-run-view');
    this._body.append(
      header,
      el('div', 'fb-run-message'),
      this._facts,
      el('h3', 'fb-section-title', 'Parameters'),
      this._params,
      el('h3', 'fb-section-title', 'State history'),
      this._states,
      el('h3', 'fb-section-title fb-run-tasks-title', 'Task runs'),
      this._viewError,
      this._viewHost
    );
    this.node.append(this._toolbar, this._error, this._loading, this._body);
  }

  /** The id of the run shown, or null. */
  get runId(): string | null {
    return this._runId;
  }

  /** Shows the run with this id (from scratch) and loads it. */
  load(runId: string): Promise<void> {
    this._runId = runId;
    this._run = null;
    this._generation += 1;
    setAttr(this.node, 'data-run-id', runId);
    showError(this._error, null);
    this._loading.hidden = false;
    this._body.hidden = true;
    this._setOpenCell(null, null);
    for (const section of [this._params, this._states]) {
      section.replaceChildren();
    }
    this._disposeView();
    return this.refresh();
  }

  /**
   * Reloads the run. With `ifIdle`, does nothing while a request is out or once the run is
   * final and loaded (its record does not change any more).
   */
  async refresh(ifIdle = false): Promise<void> {
    const runId = this._runId;
    if (runId === null) {
      return;
    }
    if (
      ifIdle &&
      (this._inFlight > 0 || (this._run !== null && isFinalState(this._run.state_type)))
    ) {
      return;
    }
    const generation = this._generation;
    this._inFlight += 1;
    // one request, one read of the run on the server: the run and its snapshot together
    let both: ApiResult<{ run: IRunDetails; snapshot: IRunSnapshot }>;
    try {
      both = await this._client.getRunWithSnapshot(runId);
    } finally {
      this._inFlight -= 1;
    }
    const result: ApiResult<IRunDetails> = both.ok ? { ok: true, value: both.value.run } : both;
    const snapshot: ApiResult<IRunSnapshot> = both.ok
      ? { ok: true, value: both.value.snapshot }
      : both;
    if (generation !== this._generation || this.isDisposed) {
      return; // another run was opened meanwhile
    }
    this._loading.hidden = true;
    if (!result.ok) {
      showError(this._error, `Could not load run ${runId}: ${result.message}`);
      return;
    }
    showError(this._error, null);
    this._run = result.value;
    this._render(result.value);
    await this._renderView(runId, generation, snapshot);
  }

  dispose(): void {
    this._disposeView();
    super.dispose();
  }

  /** Draws the snapshot with the widget's renderer (loaded once), or updates its model. */
  private async _renderView(
    runId: string,
    generation: number,
    snapshot: ApiResult<IRunSnapshot>
  ): Promise<void> {
    if (!snapshot.ok) {
      showError(this._viewError, `Could not load the graph of run ${runId}: ${snapshot.message}`);
      return;
    }
    if (this._viewModel !== null) {
      showError(this._viewError, null);
      this._viewModel.set(snapshot.value);
      return;
    }
    const module = await loadRunView(name => this._client.getViewFile(name));
    if (generation !== this._generation || this.isDisposed) {
      return;
    }
    if (!module.ok) {
      showError(this._viewError, module.message);
      return;
    }
    showError(this._viewError, null);
    const drawn = this._viewModel as SnapshotModel | null; // another refresh may have drawn it
    if (drawn !== null) {
      drawn.set(snapshot.value);
      return;
    }
    const model = new SnapshotModel();
    model.set(snapshot.value);
    this._viewModel = model;
    const cleanup = module.value.render({ model, el: this._viewHost });
    this._viewCleanup = typeof cleanup === 'function' ? cleanup : null;
  }

  private _disposeView(): void {
    if (this._viewCleanup !== null) {
      try {
        this._viewCleanup();
      } catch (error) {
        console.error('flowbook: closing the run view failed', error);
      }
    }
    this._viewCleanup = null;
    this._viewModel = null;
    this._viewHost.replaceChildren();
  }

  private _render(run: IRunDetails): void {
    const now = new Date();
    this._body.hidden = false;
    setAttr(this.node, 'data-state', run.state ?? '');
    setText(child(this._body, '.fb-run-name'), `${run.flow_name} / ${run.name}`);
    updateStateBadge(child(this._body, '.fb-run-state'), run.state, run.state_type, 'fb-run-state');
    const message = child(this._body, '.fb-run-message');
    setText(message, run.message ?? '');
    message.hidden = !run.message;

    this._renderFacts([
      ['Started', formatFullTime(run.start_time)],
      ['Ended', formatFullTime(run.end_time)],
      ['Duration', formatDuration(runDuration(run, now))],
      ['Tags', run.tags && run.tags.length > 0 ? run.tags.join(', ') : MISSING],
      ['Notebook', run.notebook ?? MISSING],
      ['Run id', run.id]
    ]);
    this._setOpenCell(run.notebook, run.cell_id);

    const params = Object.entries(run.parameters ?? {});
    reconcile(
      this._params,
      params.length > 0 ? params : [null],
      entry => (entry === null ? '\u0000none' : entry[0]),
      entry => {
        if (entry === null) {
          return el('div', 'fb-empty', 'No parameters');
        }
        const row = el('div', 'fb-run-param');
        row.append(el('span', 'fb-run-param-name'), el('span', 'fb-run-param-value'));
        return row;
      },
      (row, entry) => {
        if (entry !== null) {
          setText(child(row, '.fb-run-param-name'), entry[0]);
          const value = formatValue(entry[1]);
          setText(child(row, '.fb-run-param-value'), value);
          setAttr(row, 'title', value);
        }
      }
    );

    reconcile(
      this._states,
      (run.states ?? []).map((state, index) => ({ state, index })),
      item => String(item.index),
      () => {
        const row = el('li', 'fb-run-state-row');
        row.append(
          el('span', 'fb-run-state-time'),
          stateBadge(),
          el('span', 'fb-run-state-message')
        );
        return row;
      },
      (row, item) => this._updateState(row, item.state, now)
    );

    const tasks = run.task_runs ?? [];
    setText(child(this._body, '.fb-run-tasks-title'), `Task runs (${tasks.length})`);
  }

  private _renderFacts(facts: Array<[string, string]>): void {
    reconcile(
      this._facts,
      facts,
      fact => fact[0],
      fact => {
        const row = el(
          'div',
          `fb-run-fact fb-run-fact-${fact[0].toLowerCase().replace(/\s+/g, '-')}`
        );
        row.append(el('dt', undefined, fact[0]), el('dd'));
        return row;
      },
      (row, fact) => setText(child(row, 'dd'), fact[1])
    );
  }

  private _updateState(row: HTMLElement, state: IStateRecord, now: Date): void {
    setAttr(row, 'data-state', state.name ?? '');
    const time = child(row, '.fb-run-state-time');
    setText(time, formatLocalTime(state.timestamp, now));
    setAttr(time, 'title', formatFullTime(state.timestamp));
    updateStateBadge(child(row, '.fb-state-badge'), state.name, state.type);
    setText(child(row, '.fb-run-state-message'), state.message ?? '');
  }

  private _setOpenCell(notebook: string | null, cellId: string | null): void {
    let openCell = this._toolbar.querySelector<HTMLButtonElement>('.fb-run-open-cell');
    if (!notebook || !cellId) {
      openCell?.remove();
      return;
    }
    if (openCell === null) {
      openCell = button('fb-run-open-cell', 'Open cell');
      openCell.addEventListener('click', () => {
        const target = this._run;
        if (target?.notebook && target.cell_id) {
          this._onOpenCell(target.notebook, target.cell_id);
        }
      });
      this._toolbar.append(openCell);
    }
    setAttr(openCell, 'title', `Go to the cell that ran this flow in ${notebook}`);
    setAttr(openCell, 'data-notebook', notebook);
    setAttr(openCell, 'data-cell-id', cellId);
  }

  private readonly _client: FlowbookClient;
  private readonly _onOpenCell: (notebook: string, cellId: string) => void;
  private readonly _toolbar: HTMLElement;
  private readonly _error: HTMLElement;
  private readonly _loading: HTMLElement;
  private readonly _body: HTMLElement;
  private readonly _facts: HTMLElement;
  private readonly _params: HTMLElement;
  private readonly _states: HTMLElement;
  private readonly _viewError: HTMLElement;
  private readonly _viewHost: HTMLElement;
  private _viewModel: SnapshotModel | null = null;
  private _viewCleanup: (() => void) | null = null;
  private _runId: string | null = null;
  private _run: IRunDetails | null = null;
  private _generation = 0;
  private _inFlight = 0;
}
