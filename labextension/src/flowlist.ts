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
import { describedType, flowKey, formatParameters, formatRunCount } from './flows.js';
import { formatFullTime, formatLocalTime, MISSING } from './format.js';
import { flowOptions } from './runs.js';
import { ApiResult, IFlowList, IFlowSummary } from './types.js';

/**
 * The flows the store knows (`.fb-flows`), as `flowbook flows` lists them: registered flows
 * (project, version, where they are defined, when registered, parameters with defaults) and
 * flows that only have runs, each with its number of runs and its last run's state, with a
 * project filter. Rows (`.fb-flows-row`, keyed by kind, project and name) are updated in
 * place; clicking one calls `onSelect` (the panel then lists that flow's runs), and a flow
 * registered from a notebook has an "Open cell" button for the cell that registered it.
 */
export class FlowList extends Widget {
  constructor(options: {
    client: FlowbookClient;
    onSelect: (flow: IFlowSummary) => void;
    onOpenCell: (notebook: string, cellId: string) => void;
  }) {
    super();
    this._client = options.client;
    this._onSelect = options.onSelect;
    this._onOpenCell = options.onOpenCell;
    this.addClass('fb-flows');

    const filters = el('div', 'fb-runs-filters fb-flows-filters');
    this._projectSelect = el('select', 'fb-flows-filter-project');
    this._projectSelect.title = 'Show the flows of one project';
    this._projectSelect.setAttribute('aria-label', 'Project');
    this._projectSelect.append(new Option('All projects', ''));
    filters.append(this._projectSelect);

    this._error = el('div', 'fb-error');
    this._error.setAttribute('role', 'alert');
    this._error.hidden = true;
    this._list = el('div', 'fb-flows-list');
    this._list.setAttribute('role', 'list');
    this._empty = el('div', 'fb-empty fb-flows-empty');
    this._empty.hidden = true;
    this.node.append(filters, this._error, this._list, this._empty);

    this._projectSelect.addEventListener('change', () => {
      void this.refresh();
    });
    this._list.addEventListener('click', event => this._activate(event));
    this._list.addEventListener('keydown', event => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        this._activate(event);
      }
    });
  }

  /** The project filter ('' for all projects). */
  get project(): string {
    return this._projectSelect.value;
  }

  /** Sets the project filter (e.g. from a command) and refreshes. */
  setProject(project: string): Promise<void> {
    this._renderProjects(this._projects, project);
    this._projectSelect.value = project;
    return this.refresh();
  }

  /** Loads the flows and shows them; with `ifIdle`, skips while a request is out. */
  async refresh(ifIdle = false): Promise<void> {
    if (ifIdle && this._inFlight > 0) {
      return;
    }
    const generation = ++this._generation;
    const project = this.project;
    this._inFlight += 1;
    let result: ApiResult<IFlowList>;
    try {
      result = await this._client.listFlows({ project });
    } finally {
      this._inFlight -= 1;
    }
    if (generation !== this._generation || this.isDisposed) {
      return; // a newer refresh (e.g. a changed filter) owns the list
    }
    if (!result.ok) {
      showError(this._error, `Could not load the flows: ${result.message}`);
      return;
    }
    showError(this._error, null);
    this._projects = result.value.projects ?? [];
    this._renderProjects(this._projects, this._projectSelect.value);
    const flows = (result.value.flows ?? []).filter(
      flow => project === '' || flow.project === project
    );
    this._render(flows, project);
  }

  private _renderProjects(projects: readonly string[], selected: string): void {
    const options = flowOptions(projects, selected);
    const signature = options.join('\u0000');
    if (signature === this._projectSignature) {
      return;
    }
    this._projectSignature = signature;
    this._projectSelect.replaceChildren(
      new Option('All projects', ''),
      ...options.map(project => new Option(project, project))
    );
    this._projectSelect.value = selected;
  }

  private _render(flows: readonly IFlowSummary[], project: string): void {
    const now = new Date();
    this._flows = new Map(flows.map(flow => [flowKey(flow), flow]));
    reconcile(
      this._list,
      flows,
      flowKey,
      () => this._createRow(),
      (row, flow) => this._updateRow(row, flow, now)
    );
    setText(
      this._empty,
      project !== ''
        ? `No flows in project ${project}.`
        : 'No flows yet. Flows show up here once they are registered ' +
            '(flow.register(project_name=...)) or have run.'
    );
    this._empty.hidden = flows.length > 0;
  }

  private _createRow(): HTMLElement {
    const row = el('div', 'fb-flows-row');
    row.setAttribute('role', 'listitem');
    row.tabIndex = 0;
    const main = el('div', 'fb-flows-row-main');
    main.append(
      el('span', 'fb-flows-row-name'),
      el('span', 'fb-flows-row-kind'),
      stateBadge('fb-flows-row-state')
    );
    const meta = el('div', 'fb-flows-row-meta');
    meta.append(
      el('span', 'fb-flows-row-project'),
      el('span', 'fb-flows-row-runs'),
      el('span', 'fb-flows-row-last'),
      el('span', 'fb-flows-row-registered')
    );
    const params = el('div', 'fb-flows-row-params');
    const where = el('div', 'fb-flows-row-where');
    where.append(
      el('span', 'fb-flows-row-path'),
      button('fb-flows-open-cell', 'Open cell', 'Go to the cell that registered this flow')
    );
    row.append(main, meta, params, where);
    return row;
  }

  private _updateRow(row: HTMLElement, flow: IFlowSummary, now: Date): void {
    setAttr(row, 'data-flow', flow.name);
    setAttr(row, 'data-project', flow.project ?? '');
    setAttr(row, 'data-registered', String(flow.registered));
    const runner = [describedType(flow.run_config), describedType(flow.executor)].filter(
      type => type !== null
    );
    const tooltip = [
      flow.project ? `${flow.project} / ${flow.name}` : flow.name,
      flow.registered
        ? `registered ${formatFullTime(flow.registered_at)}, version ${flow.version ?? MISSING}`
        : 'not registered: known from its runs',
      flow.id ? `id ${flow.id}` : null,
      flow.labels && flow.labels.length > 0 ? `labels: ${flow.labels.join(', ')}` : null,
      runner.length > 0 ? `runs with ${runner.join(', ')}` : null,
      'Click to list its runs'
    ];
    setAttr(row, 'title', tooltip.filter(line => line !== null).join('\n'));

    setText(child(row, '.fb-flows-row-name'), flow.name);
    const kind = child(row, '.fb-flows-row-kind');
    kind.hidden = !flow.registered;
    setText(kind, `v${flow.version ?? MISSING}`);
    setAttr(kind, 'title', 'The version: one more each time its code changed at registration');
    const state = child(row, '.fb-flows-row-state');
    state.hidden = flow.last_state === null && flow.last_state_type === null;
    if (!state.hidden) {
      updateStateBadge(state, flow.last_state, flow.last_state_type, 'fb-flows-row-state');
      setAttr(state, 'title', 'The state of its last run');
    }

    setText(child(row, '.fb-flows-row-project'), flow.project ?? 'no project');
    setText(child(row, '.fb-flows-row-runs'), formatRunCount(flow.runs));
    const last = child(row, '.fb-flows-row-last');
    last.hidden = flow.last_run === null;
    setText(last, `last ${formatLocalTime(flow.last_run, now)}`);
    setAttr(last, 'title', `last run started ${formatFullTime(flow.last_run)}`);
    const registered = child(row, '.fb-flows-row-registered');
    setText(
      registered,
      flow.registered ? `registered ${formatLocalTime(flow.registered_at, now)}` : 'not registered'
    );
    setAttr(
      registered,
      'title',
      flow.registered
        ? `registered ${formatFullTime(flow.registered_at)}`
        : 'Known from its runs: flow.register(project_name=...) records it'
    );

    const params = child(row, '.fb-flows-row-params');
    params.hidden = !flow.registered;
    const paramText = formatParameters(flow.parameters);
    setText(params, paramText);
    setAttr(params, 'title', `parameters: ${paramText}`);

    const where = child(row, '.fb-flows-row-where');
    where.hidden = !flow.registered;
    const path = child(row, '.fb-flows-row-path');
    setText(path, flow.where ?? MISSING);
    setAttr(path, 'title', flow.where ?? '');
    const openCell = child<HTMLButtonElement>(row, '.fb-flows-open-cell');
    openCell.hidden = !(flow.notebook && flow.cell_id);
  }

  private _activate(event: Event): void {
    const target = event.target as Element | null;
    const row = target?.closest<HTMLElement>('.fb-flows-row');
    const flow = row ? this._flows.get(row.dataset.fbKey ?? '') : undefined;
    if (flow === undefined) {
      return;
    }
    if (target?.closest('.fb-flows-open-cell')) {
      if (flow.notebook && flow.cell_id) {
        this._onOpenCell(flow.notebook, flow.cell_id);
      }
      return;
    }
    this._onSelect(flow);
  }

  private readonly _client: FlowbookClient;
  private readonly _onSelect: (flow: IFlowSummary) => void;
  private readonly _onOpenCell: (notebook: string, cellId: string) => void;
  private readonly _projectSelect: HTMLSelectElement;
  private readonly _error: HTMLElement;
  private readonly _list: HTMLElement;
  private readonly _empty: HTMLElement;
  private _flows = new Map<string, IFlowSummary>();
  private _projects: string[] = [];
  private _projectSignature = '';
  private _generation = 0;
  private _inFlight = 0;
}
