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
import { formatDuration, formatFullTime, formatLocalTime, runDuration } from './format.js';
import { countTaskRuns, filterRuns, flowOptions, sortRuns, STATE_FILTERS } from './runs.js';
import { ApiResult, IRunFilter, IRunList, IRunSummary } from './types.js';

/** How many runs can be selected for a comparison. */
export const COMPARE_COUNT = 2;

/** How many runs the list asks for. */
export const RUN_LIST_LIMIT = 200;

/**
 * The list of runs from the store (all kernels, also past ones), newest first, with a flow
 * and a state filter, and a project filter set from the Flows view (shown as a button that
 * removes it; choosing another flow removes it too). Rows (`.fb-runs-row`, keyed by
 * `data-run-id`) are updated in place on each refresh; clicking one calls `onOpen` with the
 * run's id.
 */
export class RunList extends Widget {
  constructor(options: {
    client: FlowbookClient;
    onOpen: (runId: string) => void;
    onCompare?: (a: string, b: string) => void;
  }) {
    super();
    this._client = options.client;
    this._onOpen = options.onOpen;
    this._onCompare = options.onCompare ?? null;
    this.addClass('fb-runs-view');

    const filters = el('div', 'fb-runs-filters');
    this._flowSelect = el('select', 'fb-runs-filter-flow');
    this._flowSelect.title = 'Show the runs of one flow';
    this._flowSelect.setAttribute('aria-label', 'Flow');
    this._flowSelect.append(new Option('All flows', ''));
    this._stateSelect = el('select', 'fb-runs-filter-state');
    this._stateSelect.title = 'Show the runs in one state';
    this._stateSelect.setAttribute('aria-label', 'State');
    for (const option of STATE_FILTERS) {
      this._stateSelect.append(new Option(option.label, option.value));
    }
    this._projectChip = button(
      'fb-runs-filter-project',
      '',
      "Only the runs of this project's flow; click to show every project's"
    );
    this._projectChip.hidden = true;
    filters.append(this._flowSelect, this._stateSelect, this._projectChip);

    this._error = el('div', 'fb-error');
    this._error.setAttribute('role', 'alert');
    this._error.hidden = true;
    // compare: a checkbox per row selects up to two runs, then "Compare" shows them
    this._compareBar = el('div', 'fb-runs-compare-bar');
    this._compareHint = el('span', 'fb-runs-compare-hint');
    this._compareButton = button(
      'fb-runs-compare',
      'Compare',
      'Compare the two selected runs: parameters, states, durations and task runs'
    );
    const clear = button('fb-runs-compare-clear', 'Clear', 'Unselect the runs');
    clear.addEventListener('click', () => {
      this._selected = [];
      this._updateSelection();
    });
    this._compareButton.addEventListener('click', () => {
      if (this._selected.length === COMPARE_COUNT && this._onCompare !== null) {
        // the older run is A, so the ratios read "B took n× A's time"
        const [a, b] = this._compareOrder(this._selected[0], this._selected[1]);
        this._onCompare(a, b);
      }
    });
    this._compareBar.append(this._compareHint, this._compareButton, clear);
    this._compareBar.hidden = this._onCompare === null;
    this._list = el('div', 'fb-runs-list');
    this._list.setAttribute('role', 'list');
    this._empty = el('div', 'fb-empty fb-runs-empty');
    this._empty.hidden = true;
    this.node.append(filters, this._compareBar, this._error, this._list, this._empty);
    this._updateSelection();

    const onFilter = (): void => {
      void this.refresh();
    };
    this._flowSelect.addEventListener('change', () => {
      this._setProject(''); // the project went with the flow chosen in the Flows view
      onFilter();
    });
    this._projectChip.addEventListener('click', () => {
      this._setProject('');
      onFilter();
    });
    this._stateSelect.addEventListener('change', onFilter);
    this._list.addEventListener('click', event => this._openFrom(event));
    this._list.addEventListener('change', event => this._selectFrom(event));
    this._list.addEventListener('keydown', event => {
      if (isSelectBox(event.target)) {
        return; // Space toggles the checkbox
      }
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        this._openFrom(event);
      }
    });
  }

  /** The current filters. */
  get filter(): IRunFilter {
    return {
      flow: this._flowSelect.value,
      state: this._stateSelect.value,
      project: this._project
    };
  }

  /** The ids of the runs selected for a comparison, in the order they were selected. */
  get selected(): readonly string[] {
    return this._selected;
  }

  /** Selects runs for a comparison (at most two; the first ones kept). */
  select(ids: readonly string[]): void {
    this._selected = Array.from(new Set(ids)).slice(0, COMPARE_COUNT);
    this._updateSelection();
  }

  /** Sets filters (e.g. from a command) and refreshes. */
  setFilter(filter: Partial<IRunFilter>): Promise<void> {
    if (filter.flow !== undefined) {
      this._renderFlows(this._flows, filter.flow);
      this._flowSelect.value = filter.flow;
    }
    if (filter.state !== undefined) {
      this._stateSelect.value = filter.state;
    }
    if (filter.project !== undefined) {
      this._setProject(filter.project);
    }
    return this.refresh();
  }

  private _setProject(project: string): void {
    this._project = project;
    setText(this._projectChip, `Project: ${project} ✕`);
    this._projectChip.hidden = project === '';
  }

  /**
   * Loads the runs and shows them. With `ifIdle`, does nothing while a request is still
   * out (the auto-refresh must not pile requests up on a slow server).
   */
  async refresh(ifIdle = false): Promise<void> {
    if (ifIdle && this._inFlight > 0) {
      return;
    }
    const generation = ++this._generation;
    const filter = this.filter;
    this._inFlight += 1;
    let result: ApiResult<IRunList>;
    try {
      result = await this._client.listRuns({
        flow: filter.flow,
        state: filter.state,
        limit: RUN_LIST_LIMIT
      });
    } finally {
      this._inFlight -= 1;
    }
    if (generation !== this._generation || this.isDisposed) {
      return; // a newer refresh (e.g. a changed filter) owns the list
    }
    if (!result.ok) {
      showError(this._error, `Could not load the runs: ${result.message}`);
      return;
    }
    showError(this._error, null);
    this._flows = result.value.flows ?? [];
    this._renderFlows(this._flows, this._flowSelect.value);
    const runs = sortRuns(filterRuns(result.value.runs ?? [], filter));
    this._starts = new Map(runs.map(run => [run.id, run.start_time ?? '']));
    this._render(runs, filter);
    this._updateSelection();
  }

  private _renderFlows(flows: readonly string[], selected: string): void {
    const options = flowOptions(flows, selected);
    const signature = options.join('\u0000');
    if (signature === this._flowSignature) {
      return;
    }
    this._flowSignature = signature;
    this._flowSelect.replaceChildren(
      new Option('All flows', ''),
      ...options.map(flow => new Option(flow, flow))
    );
    this._flowSelect.value = selected;
  }

  private _render(runs: readonly IRunSummary[], filter: IRunFilter): void {
    const now = new Date();
    reconcile(
      this._list,
      runs,
      run => run.id,
      () => this._createRow(),
      (row, run) => this._updateRow(row, run, now)
    );
    const filtered =
      filter.flow !== '' || filter.state !== '' || (filter.project ?? '') !== '';
    setText(
      this._empty,
      filtered
        ? 'No runs match the filters.'
        : 'No flow runs yet. Runs of flows called in any kernel show up here.'
    );
    this._empty.hidden = runs.length > 0;
  }

  private _createRow(): HTMLElement {
    const row = el('div', 'fb-runs-row');
    row.setAttribute('role', 'listitem');
    row.tabIndex = 0;
    const main = el('div', 'fb-runs-row-main');
    const select = el('input', 'fb-runs-row-select');
    select.type = 'checkbox';
    select.title = 'Select this run to compare it with another';
    select.hidden = this._onCompare === null;
    main.append(select, el('span', 'fb-runs-row-name'), stateBadge('fb-runs-row-state'));
    const meta = el('div', 'fb-runs-row-meta');
    meta.append(
      el('span', 'fb-runs-row-flow'),
      el('span', 'fb-runs-row-started'),
      el('span', 'fb-runs-row-duration')
    );
    row.append(main, meta);
    return row;
  }

  private _updateRow(row: HTMLElement, run: IRunSummary, now: Date): void {
    setAttr(row, 'data-run-id', run.id);
    setAttr(row, 'data-state', run.state ?? '');
    setAttr(row, 'data-state-type', run.state_type ?? '');
    const tasks = countTaskRuns(run.task_runs);
    const tooltip = [
      `${run.flow_name} / ${run.name}`,
      run.message ? `${run.state ?? ''}: ${run.message}` : null,
      `started ${formatFullTime(run.start_time)}`,
      tasks !== null ? `${tasks} task run${tasks === 1 ? '' : 's'}` : null,
      `id ${run.id}`
    ];
    setAttr(row, 'title', tooltip.filter(line => line !== null).join('\n'));
    setText(child(row, '.fb-runs-row-name'), run.name);
    const select = child<HTMLInputElement>(row, '.fb-runs-row-select');
    select.setAttribute('aria-label', `Select ${run.name} to compare`);
    select.checked = this._selected.includes(run.id);
    updateStateBadge(
      child(row, '.fb-runs-row-state'),
      run.state,
      run.state_type,
      'fb-runs-row-state'
    );
    setText(child(row, '.fb-runs-row-flow'), run.flow_name);
    setText(child(row, '.fb-runs-row-started'), formatLocalTime(run.start_time, now));
    setText(child(row, '.fb-runs-row-duration'), formatDuration(runDuration(run, now)));
  }

  private _selectFrom(event: Event): void {
    const target = event.target;
    if (!isSelectBox(target)) {
      return;
    }
    const runId = target.closest<HTMLElement>('.fb-runs-row')?.dataset.runId;
    if (!runId) {
      return;
    }
    const others = this._selected.filter(id => id !== runId);
    if (target.checked) {
      // a third run replaces the oldest selection
      this._selected = [...others.slice(-(COMPARE_COUNT - 1)), runId];
    } else {
      this._selected = others;
    }
    this._updateSelection();
  }

  /** The two runs in the order to compare them: the one that started first is A. */
  private _compareOrder(x: string, y: string): [string, string] {
    const sx = this._starts.get(x) ?? '';
    const sy = this._starts.get(y) ?? '';
    return sy !== '' && (sx === '' || sy < sx) ? [y, x] : [x, y];
  }

  private _updateSelection(): void {
    const n = this._selected.length;
    for (const row of Array.from(this._list.querySelectorAll<HTMLElement>('.fb-runs-row'))) {
      const selected = this._selected.includes(row.dataset.runId ?? '');
      row.classList.toggle('fb-mod-compare', selected);
      const box = row.querySelector<HTMLInputElement>('.fb-runs-row-select');
      if (box !== null && box.checked !== selected) {
        box.checked = selected;
      }
    }
    setText(
      this._compareHint,
      n === 0
        ? 'Tick two runs to compare them.'
        : n === 1
          ? 'One run selected: tick another.'
          : 'Two runs selected.'
    );
    this._compareButton.disabled = n !== COMPARE_COUNT;
    this.node.dataset.selected = String(n);
  }

  private _openFrom(event: Event): void {
    const target = event.target as Element | null;
    if (isSelectBox(target)) {
      return; // ticking a run selects it, it does not open it
    }
    const row = target?.closest<HTMLElement>('.fb-runs-row');
    const runId = row?.dataset.runId;
    if (runId) {
      this._onOpen(runId);
    }
  }

  private readonly _client: FlowbookClient;
  private readonly _onOpen: (runId: string) => void;
  private readonly _onCompare: ((a: string, b: string) => void) | null;
  private readonly _compareBar: HTMLElement;
  private readonly _compareHint: HTMLElement;
  private readonly _compareButton: HTMLButtonElement;
  private _selected: string[] = [];
  private _starts = new Map<string, string>();
  private readonly _flowSelect: HTMLSelectElement;
  private readonly _stateSelect: HTMLSelectElement;
  private readonly _projectChip: HTMLButtonElement;
  private readonly _error: HTMLElement;
  private readonly _list: HTMLElement;
  private readonly _empty: HTMLElement;
  private _project = '';
  private _flows: string[] = [];
  private _flowSignature = '';
  private _generation = 0;
  private _inFlight = 0;
}

function isSelectBox(target: EventTarget | null): target is HTMLInputElement {
  return target instanceof HTMLInputElement && target.classList.contains('fb-runs-row-select');
}
