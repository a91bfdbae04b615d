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
  levelName,
  MISSING,
  runDuration
} from './format.js';
import { isFinalState } from './runs.js';
import { ApiResult, ILogRecord, IRunDetails, IStateRecord, ITaskRunSummary } from './types.js';

/** The most log lines shown; the newest ones are kept. */
export const MAX_LOG_LINES = 2000;

/**
 * One run's details (`.fb-run-details`): summary, parameters, state history, task runs
 * and logs, with a back button and, when the run knows its notebook cell, an "Open cell"
 * button. A run that is not final is reloaded on each refresh; sections are updated in
 * place, and the logs stay scrolled to the bottom when they were.
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
    this._tasks = el('div', 'fb-run-tasks');
    this._tasks.setAttribute('role', 'list');
    this._logs = el('div', 'fb-run-logs');
    this._logsNote = el('div', 'fb-run-logs-note');
    this._body.append(
      header,
      el('div', 'fb-run-message'),
      this._facts,
      el('h3', 'fb-section-title', 'Parameters'),
      this._params,
      el('h3', 'fb-section-title', 'State history'),
      this._states,
      el('h3', 'fb-section-title fb-run-tasks-title', 'Task runs'),
      this._tasks,
      el('h3', 'fb-section-title', 'Logs'),
      this._logsNote,
      this._logs
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
    for (const section of [this._params, this._states, this._tasks, this._logs]) {
      section.replaceChildren();
    }
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
    let result: ApiResult<IRunDetails>;
    try {
      result = await this._client.getRun(runId);
    } finally {
      this._inFlight -= 1;
    }
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
    reconcile(
      this._tasks,
      tasks,
      task => task.id,
      () => {
        const row = el('div', 'fb-run-task');
        row.setAttribute('role', 'listitem');
        row.append(
          el('span', 'fb-run-task-name'),
          stateBadge('fb-run-task-state'),
          el('span', 'fb-run-task-duration')
        );
        return row;
      },
      (row, task) => this._updateTask(row, task, now)
    );
    if (tasks.length === 0) {
      this._tasks.replaceChildren(el('div', 'fb-empty', 'No task runs'));
    }

    this._renderLogs(run);
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

  private _updateTask(row: HTMLElement, task: ITaskRunSummary, now: Date): void {
    setAttr(row, 'data-task-run-id', task.id);
    setAttr(row, 'data-state', task.state ?? '');
    setText(child(row, '.fb-run-task-name'), task.name);
    setAttr(row, 'title', `${task.task_name}: started ${formatFullTime(task.start_time)}`);
    updateStateBadge(
      child(row, '.fb-run-task-state'),
      task.state,
      task.state_type,
      'fb-run-task-state'
    );
    setText(child(row, '.fb-run-task-duration'), formatDuration(runDuration(task, now)));
  }

  private _renderLogs(run: IRunDetails): void {
    const all = run.logs ?? [];
    const logs = all.length > MAX_LOG_LINES ? all.slice(all.length - MAX_LOG_LINES) : all;
    const offset = all.length - logs.length;
    setText(
      this._logsNote,
      offset > 0 ? `Showing the last ${logs.length} of ${all.length} lines.` : ''
    );
    this._logsNote.hidden = offset === 0;
    const taskNames = new Map((run.task_runs ?? []).map(task => [task.id, task.name]));
    const atBottom = this._logs.scrollHeight - this._logs.scrollTop - this._logs.clientHeight < 4;
    reconcile(
      this._logs,
      logs.map((log, index) => ({ log, index: index + offset })),
      item => String(item.index),
      () => {
        const row = el('div', 'fb-run-log');
        row.append(
          el('span', 'fb-run-log-time'),
          el('span', 'fb-run-log-level'),
          el('span', 'fb-run-log-task'),
          el('span', 'fb-run-log-message')
        );
        return row;
      },
      (row, item) => this._updateLog(row, item.log, taskNames)
    );
    if (logs.length === 0) {
      this._logs.replaceChildren(el('div', 'fb-empty', 'No log lines'));
    } else if (atBottom) {
      this._logs.scrollTop = this._logs.scrollHeight;
    }
  }

  private _updateLog(row: HTMLElement, log: ILogRecord, taskNames: Map<string, string>): void {
    const level = levelName(log.level);
    setAttr(row, 'data-level', level);
    const time = child(row, '.fb-run-log-time');
    setText(time, formatFullTime(log.timestamp).slice(11));
    setAttr(time, 'title', formatFullTime(log.timestamp));
    setText(child(row, '.fb-run-log-level'), level);
    const task = log.task_run_id ? (taskNames.get(log.task_run_id) ?? log.task_run_id) : '';
    setText(child(row, '.fb-run-log-task'), task);
    setText(child(row, '.fb-run-log-message'), log.message);
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
  private readonly _tasks: HTMLElement;
  private readonly _logs: HTMLElement;
  private readonly _logsNote: HTMLElement;
  private _runId: string | null = null;
  private _run: IRunDetails | null = null;
  private _generation = 0;
  private _inFlight = 0;
}
