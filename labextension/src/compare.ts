/**
 * Two runs compared in the "Flow runs" panel (`.fb-compare`), from the server's
 * `GET flowbook/api/diff?a=RUN_ID&b=RUN_ID` (`flowbook.diff.compare_runs`): the two runs'
 * state, start and duration with B's duration over A's, their parameters side by side (the
 * changed ones marked), and the task runs that differ in state, duration (with the ratio),
 * cache hit/miss, inputs or result (each with A's and B's inputs and result previews under
 * it), the ones only in A or only in B, and how many are identical. An error of the endpoint is shown in the view's banner.
 */
import { ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { FlowbookClient } from './client.js';
import { button, el, setText, showError, stateBadge, updateStateBadge } from './dom.js';
import {
  diffTaskName,
  failureLines,
  formatRatio,
  IDiffRun,
  IDiffTaskRun,
  IDiffTaskSide,
  inputLines,
  IRunDiff,
  ratioChanged,
  ratioWord,
  resultText
} from './comparefmt.js';
import { formatDuration, formatFullTime, MISSING } from './format.js';
import { ApiResult } from './types.js';

/** Loads the comparison of two runs; errors are values (see `ApiResult`). */
export type DiffLoader = (a: string, b: string) => Promise<ApiResult<IRunDiff>>;

/** A `DiffLoader` over the server's `GET flowbook/api/diff` (token and XSRF added). */
export function diffLoader(settings: ServerConnection.ISettings): DiffLoader {
  const client = new FlowbookClient(settings);
  return (a, b) => client.compareRuns(a, b);
}

/** The columns of the table of task runs that differ. */
const TASK_COLUMNS = ['task run', 'differs in', 'state A/B', 'time A/B', 'B/A', 'cache A/B'];

/** The cell text of a cache column. */
function cacheText(side: IDiffTaskSide | null): string {
  if (side === null) {
    return '';
  }
  return side.cache ?? MISSING;
}

/**
 * The comparison view: a back button, then (once loaded) the runs, the parameters and the
 * task runs that differ. `load(a, b)` asks the server; a failure shows in the banner.
 */
export class CompareView extends Widget {
  constructor(options: {
    loadDiff: DiffLoader;
    onBack: () => void;
    onOpenRun: (id: string) => void;
  }) {
    super();
    this._loadDiff = options.loadDiff;
    this._onOpenRun = options.onOpenRun;
    this.addClass('fb-compare');
    this.node.setAttribute('aria-label', 'Two runs compared');

    const toolbar = el('div', 'fb-run-toolbar fb-compare-toolbar');
    const back = button('fb-compare-back', '‹ Runs', 'Back to the list of runs');
    back.addEventListener('click', () => options.onBack());
    toolbar.append(back);

    this._error = el('div', 'fb-error fb-compare-error');
    this._error.setAttribute('role', 'alert');
    this._error.hidden = true;
    this._loading = el('div', 'fb-empty fb-compare-loading', 'Loading…');
    this._loading.hidden = true;
    this._body = el('div', 'fb-compare-body');
    this._body.hidden = true;
    this.node.append(toolbar, this._error, this._loading, this._body);
    this._body.addEventListener('click', event => {
      const target = event.target as Element | null;
      const link = target?.closest<HTMLElement>('[data-open-run]');
      if (link?.dataset.openRun) {
        event.preventDefault();
        this._onOpenRun(link.dataset.openRun);
      }
    });
  }

  /** The two runs compared (or being loaded), A first; null before the first `load`. */
  get runs(): [string, string] | null {
    return this._runs;
  }

  /** Compares run `a` with run `b` and shows the answer (or the server's error). */
  async load(a: string, b: string): Promise<void> {
    this._runs = [a, b];
    this.node.dataset.runA = a;
    this.node.dataset.runB = b;
    const generation = ++this._generation;
    this._loading.hidden = false;
    showError(this._error, null);
    this._body.hidden = true;
    const result = await this._loadDiff(a, b);
    if (generation !== this._generation || this.isDisposed) {
      return; // a newer comparison owns the view
    }
    this._loading.hidden = true;
    if (!result.ok) {
      showError(this._error, `Could not compare the runs: ${result.message}`);
      return;
    }
    this._render(result.value);
    this._body.hidden = false;
  }

  /** Loads the same two runs again (a run still going changes). */
  refresh(): Promise<void> {
    return this._runs === null ? Promise.resolve() : this.load(...this._runs);
  }

  private _render(diff: IRunDiff): void {
    const { a, b } = diff;
    const body = this._body;
    body.replaceChildren();

    const title = el('div', 'fb-compare-title');
    const flows = diff.same_flow ? a.flow_name : `${a.flow_name} / ${b.flow_name}`;
    title.append(el('span', 'fb-compare-flow', flows));
    body.append(title);
    for (const note of diff.notes) {
      body.append(el('div', 'fb-compare-note', `Note: ${note}`));
    }

    // the runs
    const runs = el('table', 'fb-compare-table fb-compare-runs');
    runs.append(head(['', 'A', 'B', 'B/A']));
    const tbody = el('tbody');
    const names = el('tr', 'fb-compare-row-name');
    names.append(el('th', '', 'run'), runCell(a, 'a'), runCell(b, 'b'), el('td'));
    const states = el('tr', 'fb-compare-row-state');
    states.append(el('th', '', 'state'), stateCell(a), stateCell(b), el('td'));
    if (a.state !== b.state) {
      states.classList.add('fb-mod-changed');
    }
    const started = row('started', formatFullTime(a.start_time), formatFullTime(b.start_time));
    started.classList.add('fb-compare-row-started');
    const duration = row(
      'duration',
      formatDuration(a.duration_s),
      formatDuration(b.duration_s),
      ratioText(diff.duration_ratio),
      ratioChanged(diff.duration_ratio, diff.min_ratio)
    );
    duration.classList.add('fb-compare-row-duration');
    const tasks = row(
      'task runs',
      String(a.task_runs),
      String(b.task_runs),
      undefined,
      a.task_runs !== b.task_runs
    );
    tasks.classList.add('fb-compare-row-tasks');
    tbody.append(names, states, started, duration, tasks);
    runs.append(tbody);
    body.append(runs);

    // the parameters
    const changedParams = diff.parameters.filter(p => p.changed).length;
    body.append(
      el(
        'h3',
        'fb-section-title fb-compare-params-title',
        `Parameters (${changedParams} changed)`
      )
    );
    if (diff.parameters.length === 0) {
      body.append(el('div', 'fb-empty', 'Neither run has parameters.'));
    } else {
      const params = el('table', 'fb-compare-table fb-compare-params');
      params.append(head(['name', 'A', 'B']));
      const pbody = el('tbody');
      for (const p of diff.parameters) {
        const tr = el('tr', 'fb-compare-param');
        tr.dataset.param = p.name;
        tr.dataset.changed = String(p.changed);
        const name = el('th', 'fb-compare-param-name', p.name);
        if (p.changed) {
          tr.classList.add('fb-mod-changed');
          name.append(el('span', 'fb-compare-changed', 'changed'));
        }
        tr.append(name, valueCell(p.a, 'fb-compare-a'), valueCell(p.b, 'fb-compare-b'));
        pbody.append(tr);
      }
      params.append(pbody);
      body.append(params);
    }

    // the task runs
    const differ = diff.task_runs.length - diff.only_in_a - diff.only_in_b;
    body.append(el('h3', 'fb-section-title fb-compare-tasks-title', 'Task runs'));
    const summary = el('div', 'fb-compare-summary');
    summary.append(
      count('fb-compare-count-differ', differ, 'differ'),
      count('fb-compare-count-identical', diff.identical, 'identical'),
      count('fb-compare-count-only-a', diff.only_in_a, 'only in A'),
      count('fb-compare-count-only-b', diff.only_in_b, 'only in B')
    );
    summary.title = `Task runs are matched by ${diff.matched_by}.`;
    body.append(summary);
    if (diff.task_runs.length === 0) {
      body.append(
        el('div', 'fb-empty fb-compare-no-tasks', 'No task run differs between the two runs.')
      );
    } else {
      const table = el('table', 'fb-compare-table fb-compare-tasks');
      table.append(head(TASK_COLUMNS));
      const tb = el('tbody');
      for (const task of diff.task_runs) {
        tb.append(taskRow(task), valuesRow(task, TASK_COLUMNS.length));
      }
      table.append(tb);
      body.append(table);
      const failures = failureLines(diff.task_runs);
      if (failures.length > 0) {
        const list = el('ul', 'fb-compare-failures');
        for (const line of failures) {
          list.append(el('li', '', line));
        }
        body.append(list);
      }
    }
    body.append(
      el(
        'div',
        'fb-compare-footnote',
        `Durations differ when apart by ${formatDuration(diff.min_change_s)} or more and by ` +
          `${diff.min_ratio}× or more.` +
          (diff.read_results ? '' : ' Results are compared by checksum.')
      )
    );
  }

  private readonly _loadDiff: DiffLoader;
  private readonly _onOpenRun: (id: string) => void;
  private readonly _error: HTMLElement;
  private readonly _loading: HTMLElement;
  private readonly _body: HTMLElement;
  private _runs: [string, string] | null = null;
  private _generation = 0;
}

function head(titles: string[]): HTMLTableSectionElement {
  const thead = el('thead');
  const tr = el('tr');
  for (const title of titles) {
    tr.append(el('th', '', title));
  }
  thead.append(tr);
  return thead;
}

function row(
  label: string,
  a: string,
  b: string,
  ratio?: HTMLElement,
  changed = false
): HTMLTableRowElement {
  const tr = el('tr');
  const last = el('td', 'fb-compare-ratio');
  if (ratio !== undefined) {
    last.append(ratio);
  }
  tr.append(el('th', '', label), el('td', 'fb-compare-a', a), el('td', 'fb-compare-b', b), last);
  if (changed) {
    tr.classList.add('fb-mod-changed');
  }
  return tr;
}

function ratioText(ratio: number | null): HTMLElement {
  const span = el('span', 'fb-compare-ratio-value', formatRatio(ratio));
  const word = ratioWord(ratio);
  if (word !== '') {
    span.dataset.trend = word;
    span.title = `B took ${formatRatio(ratio)} A's time (${word})`;
  }
  return span;
}

function runCell(run: IDiffRun, side: 'a' | 'b'): HTMLElement {
  const td = el('td', `fb-compare-${side}`);
  const link = el('a', 'fb-compare-run-link', run.name);
  link.href = '#';
  link.dataset.openRun = run.id;
  link.title = `Open ${run.name} (id ${run.id})`;
  td.append(link);
  return td;
}

function stateCell(run: IDiffRun | IDiffTaskSide | null): HTMLElement {
  const td = el('td');
  if (run !== null) {
    const badge = stateBadge();
    updateStateBadge(badge, run.state, run.state_type);
    td.append(badge);
  }
  return td;
}

function valueCell(value: string | null, className: string): HTMLElement {
  const td = el('td', className);
  if (value === null) {
    td.classList.add('fb-compare-absent');
    setText(td, '(not a parameter)');
  } else {
    setText(td, value);
  }
  return td;
}

function count(className: string, n: number, label: string): HTMLElement {
  const span = el('span', `fb-compare-count ${className}`);
  span.append(el('b', '', String(n)), document.createTextNode(` ${label}`));
  return span;
}

function pair(a: string, b: string): HTMLElement {
  const td = el('td');
  td.append(
    el('span', 'fb-compare-a', a),
    el('span', 'fb-compare-sep', ' / '),
    el('span', 'fb-compare-b', b)
  );
  return td;
}

function taskRow(task: IDiffTaskRun): HTMLTableRowElement {
  const tr = el('tr', 'fb-compare-task');
  const name = diffTaskName(task);
  tr.dataset.task = name;
  tr.dataset.changes = task.changes.join(',');
  tr.append(el('th', 'fb-compare-task-name', name));
  const changes = el('td', 'fb-compare-task-changes');
  for (const change of task.changes) {
    changes.append(el('span', 'fb-compare-change', change));
  }
  tr.append(changes);

  const states = el('td', 'fb-compare-task-states');
  for (const [side, cls] of [
    [task.a, 'fb-compare-a'],
    [task.b, 'fb-compare-b']
  ] as const) {
    const badge = stateBadge(cls);
    if (side === null) {
      badge.className = `fb-state-badge fb-compare-none ${cls}`;
      setText(badge, MISSING);
    } else {
      updateStateBadge(badge, side.state, side.state_type, cls);
    }
    states.append(badge);
  }
  if (task.changes.includes('state')) {
    states.classList.add('fb-mod-changed');
  }
  tr.append(states);

  const times = pair(
    task.a ? formatDuration(task.a.duration_s) : MISSING,
    task.b ? formatDuration(task.b.duration_s) : MISSING
  );
  times.classList.add('fb-compare-task-times');
  tr.append(times);

  const ratio = el('td', 'fb-compare-task-ratio');
  if (task.changes.includes('duration')) {
    ratio.append(ratioText(task.duration_ratio));
    ratio.classList.add('fb-mod-changed');
  }
  tr.append(ratio);

  const cache = pair(cacheText(task.a), cacheText(task.b));
  cache.classList.add('fb-compare-task-cache');
  cache.title = 'hit: served from the cache; miss: computed, with a cache key; –: no cache key';
  if (task.changes.includes('cache')) {
    cache.classList.add('fb-mod-changed');
  }
  tr.append(cache);
  return tr;
}

/**
 * The row under a task run's row: its inputs and result previews in A and in B side by side
 * (the stored previews: the server never unpickles), the differing ones marked.
 */
function valuesRow(task: IDiffTaskRun, columns: number): HTMLTableRowElement {
  const tr = el('tr', 'fb-compare-task-values');
  tr.dataset.task = diffTaskName(task);
  const td = el('td', 'fb-compare-values-cell');
  td.colSpan = columns;
  const grid = el('div', 'fb-compare-values');
  grid.append(
    el('span', 'fb-compare-values-head'),
    el('span', 'fb-compare-values-head fb-compare-a', 'A'),
    el('span', 'fb-compare-values-head fb-compare-b', 'B')
  );
  const lines = (side: IDiffTaskSide | null): string =>
    side === null ? MISSING : inputLines(side.inputs).join('\n') || '(no inputs)';
  for (const [label, kind, a, b] of [
    ['inputs', 'inputs', lines(task.a), lines(task.b)],
    ['result', 'result', resultText(task.a), resultText(task.b)]
  ] as const) {
    const changed = task.changes.includes(kind);
    const name = el('span', `fb-compare-values-label fb-compare-${kind}-label`, label);
    const cells = [
      el('pre', `fb-compare-value fb-compare-${kind} fb-compare-a`),
      el('pre', `fb-compare-value fb-compare-${kind} fb-compare-b`)
    ];
    setText(cells[0], a);
    setText(cells[1], b);
    for (const item of [name, ...cells]) {
      item.classList.toggle('fb-mod-changed', changed);
    }
    grid.append(name, ...cells);
  }
  td.append(grid);
  tr.append(td);
  return tr;
}
