import { Message } from '@lumino/messaging';
import { Panel, SplitPanel, Widget } from '@lumino/widgets';

import { CacheList } from './cachelist.js';
import { FlowbookClient } from './client.js';
import { CompareView, DiffLoader } from './compare.js';
import { button, el } from './dom.js';
import { flowRunFilter } from './flows.js';
import { FlowList } from './flowlist.js';
import { flowRunsIcon } from './icon.js';
import { RunDetails } from './rundetails.js';
import { RunList } from './runlist.js';
import { IFlowSummary } from './types.js';

/** The side panel's widget id (for `app.shell.activateById`). */
export const PANEL_ID = 'flowbook-runs-panel';

/** How often the visible view reloads, in milliseconds. */
export const REFRESH_INTERVAL_MS = 3000;

/** The panel's width when the user has not set one, in pixels (fits "flow / run-name"). */
export const DEFAULT_WIDTH_PX = 440;

/** Where the width the user dragged the panel to is kept. */
export const WIDTH_STORAGE_KEY = 'flowbook:runs-panel-width';

/** The panel's views; `data-view` on the panel node says which one is shown. */
export type PanelView = 'runs' | 'details' | 'compare' | 'flows' | 'cache';

/**
 * The "Flow runs" side panel (`.fb-runs-panel`): a header with the Runs / Flows / Cache tabs
 * and a refresh button, then the run list, one run's details, the flows (a click on one
 * lists its runs), or the cache; two runs ticked in the run list are compared in a view of
 * their own. While the panel is
 * visible (and the browser tab too) the shown view reloads every `REFRESH_INTERVAL_MS`.
 */
export class FlowRunsPanel extends Panel {
  constructor(options: {
    client: FlowbookClient;
    loadDiff: DiffLoader;
    openCell: (notebook: string, cellId: string) => void;
  }) {
    super();
    this.id = PANEL_ID;
    this.addClass('fb-runs-panel');
    this.title.icon = flowRunsIcon;
    this.title.caption = 'Flow runs';
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'Flow runs');

    const header = el('div', 'fb-runs-header');
    const heading = el('h2', 'fb-runs-title', 'Flow runs');
    const tabs = el('div', 'fb-tabs');
    tabs.setAttribute('role', 'tablist');
    this._runsTab = button('fb-tab fb-tab-runs', 'Runs', 'Past and running flow runs');
    this._flowsTab = button(
      'fb-tab fb-tab-flows',
      'Flows',
      'Registered flows, and the flows that have runs'
    );
    this._cacheTab = button('fb-tab fb-tab-cache', 'Cache', 'Cached task results');
    for (const tab of [this._runsTab, this._flowsTab, this._cacheTab]) {
      tab.setAttribute('role', 'tab');
    }
    tabs.append(this._runsTab, this._flowsTab, this._cacheTab);
    const refresh = button('fb-runs-refresh', '⟳', 'Refresh');
    refresh.setAttribute('aria-label', 'Refresh');
    header.append(heading, tabs, refresh);
    this.addWidget(new Widget({ node: header }));

    this._list = new RunList({
      client: options.client,
      onOpen: id => void this.openRun(id),
      onCompare: (a, b) => void this.compareRuns(a, b)
    });
    this._compare = new CompareView({
      loadDiff: options.loadDiff,
      onBack: () => this.showView('runs'),
      onOpenRun: id => void this.openRun(id)
    });
    this._details = new RunDetails({
      client: options.client,
      onBack: () => this.showView('runs'),
      onOpenCell: options.openCell
    });
    this._flows = new FlowList({
      client: options.client,
      onSelect: flow => void this.showFlowRuns(flow),
      onOpenCell: options.openCell
    });
    this._cache = new CacheList({ client: options.client });
    this.addWidget(this._list);
    this.addWidget(this._details);
    this.addWidget(this._compare);
    this.addWidget(this._flows);
    this.addWidget(this._cache);

    this._runsTab.addEventListener('click', () => this.showView('runs'));
    this._flowsTab.addEventListener('click', () => this.showView('flows'));
    this._cacheTab.addEventListener('click', () => this.showView('cache'));
    refresh.addEventListener('click', () => void this.refresh());
    this._applyView();
  }

  /** The view shown. */
  get view(): PanelView {
    return this._view;
  }

  /** The run list (for its filters). */
  get runList(): RunList {
    return this._list;
  }

  /** The flows view (for its project filter). */
  get flowList(): FlowList {
    return this._flows;
  }

  /** The comparison view. */
  get compareView(): CompareView {
    return this._compare;
  }

  /** Shows a view and reloads it. */
  showView(view: PanelView): void {
    if (
      (view === 'details' && this._details.runId === null) ||
      (view === 'compare' && this._compare.runs === null)
    ) {
      view = 'runs';
    }
    this._view = view;
    this._applyView();
    void this.refresh();
  }

  /** Shows one run's details. */
  openRun(runId: string): Promise<void> {
    this._view = 'details';
    this._applyView();
    return this._details.load(runId);
  }

  /** Compares run `a` with run `b` (ids): their parameters, states, durations, task runs. */
  compareRuns(a: string, b: string): Promise<void> {
    this._view = 'compare';
    this._applyView();
    return this._compare.load(a, b);
  }

  /** Shows the run list filtered to one flow's runs (its name, and its project if any). */
  showFlowRuns(flow: Pick<IFlowSummary, 'name' | 'project'>): Promise<void> {
    this._view = 'runs';
    this._applyView();
    return this._list.setFilter(flowRunFilter(flow));
  }

  /** Reloads the view shown now. */
  refresh(ifIdle = false): Promise<void> {
    switch (this._view) {
      case 'runs':
        return this._list.refresh(ifIdle);
      case 'details':
        return this._details.refresh(ifIdle);
      case 'compare':
        // a comparison is loaded once (and again on the refresh button), not every few seconds
        return ifIdle ? Promise.resolve() : this._compare.refresh();
      case 'flows':
        return this._flows.refresh(ifIdle);
      case 'cache':
        return this._cache.refresh(ifIdle);
    }
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    document.addEventListener('pointerdown', this._onPointerDown, true);
    document.addEventListener('pointerup', this._onPointerUp, true);
    if (this.isVisible) {
      this._applyWidth();
      this._startTimer();
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._applyWidth();
    this._startTimer();
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._stopTimer();
  }

  protected onBeforeDetach(msg: Message): void {
    document.removeEventListener('pointerdown', this._onPointerDown, true);
    document.removeEventListener('pointerup', this._onPointerUp, true);
    this._stopTimer();
    super.onBeforeDetach(msg);
  }

  dispose(): void {
    this._stopTimer();
    super.dispose();
  }

  /**
   * Once per page, widens the side area holding the panel to the width the user last set
   * (kept in localStorage), else to `DEFAULT_WIDTH_PX` when it is narrower; at most 60% of
   * the window. Done through the enclosing split panel, so its handle still resizes it.
   */
  private _applyWidth(): void {
    if (this._widthApplied || !this.isVisible) {
      return;
    }
    this._widthApplied = true;
    const saved = Number(readStorage(WIDTH_STORAGE_KEY));
    const wanted = Number.isFinite(saved) && saved >= 120 ? saved : null;
    const current = this.node.getBoundingClientRect().width;
    if (wanted === null && current >= DEFAULT_WIDTH_PX) {
      return;
    }
    const found = enclosingSplit(this);
    if (found === null) {
      return;
    }
    const [split, area] = found;
    const total = split.node.getBoundingClientRect().width;
    const index = split.widgets.indexOf(area);
    const sizes = split.relativeSizes();
    if (total <= 0 || index < 0 || sizes.length < 2) {
      return;
    }
    const width = Math.min(wanted ?? DEFAULT_WIDTH_PX, total * 0.6);
    const sum = sizes.reduce((a, b) => a + b, 0);
    const target = (width / total) * sum;
    // the space comes from (or goes to) the largest other area: the main area
    let largest = -1;
    sizes.forEach((size, i) => {
      if (i !== index && (largest < 0 || size > sizes[largest])) {
        largest = i;
      }
    });
    const delta = target - sizes[index];
    if (largest < 0 || sizes[largest] - delta <= 0) {
      return;
    }
    sizes[index] = target;
    sizes[largest] -= delta;
    split.setRelativeSizes(sizes);
  }

  private readonly _onPointerDown = (event: PointerEvent): void => {
    const target = event.target as Element | null;
    this._dragging = !!target?.closest?.('.lm-SplitPanel-handle');
  };

  private readonly _onPointerUp = (): void => {
    if (!this._dragging) {
      return;
    }
    this._dragging = false;
    // the handle's move is applied on the next frame
    requestAnimationFrame(() => {
      const width = Math.round(this.node.getBoundingClientRect().width);
      if (this.isVisible && width >= 120) {
        writeStorage(WIDTH_STORAGE_KEY, String(width));
      }
    });
  };

  private _startTimer(): void {
    void this.refresh(true);
    if (this._timer !== null) {
      return;
    }
    this._timer = window.setInterval(() => {
      if (this.isVisible && !document.hidden) {
        void this.refresh(true);
      }
    }, REFRESH_INTERVAL_MS);
  }

  private _stopTimer(): void {
    if (this._timer !== null) {
      window.clearInterval(this._timer);
      this._timer = null;
    }
  }

  private _applyView(): void {
    this.node.dataset.view = this._view;
    this._list.setHidden(this._view !== 'runs');
    this._details.setHidden(this._view !== 'details');
    this._compare.setHidden(this._view !== 'compare');
    this._flows.setHidden(this._view !== 'flows');
    this._cache.setHidden(this._view !== 'cache');
    // the details of a run and a comparison belong to the Runs tab
    const selected = this._view === 'details' || this._view === 'compare' ? 'runs' : this._view;
    const tabs: Array<[HTMLButtonElement, PanelView]> = [
      [this._runsTab, 'runs'],
      [this._flowsTab, 'flows'],
      [this._cacheTab, 'cache']
    ];
    for (const [tab, view] of tabs) {
      tab.setAttribute('aria-selected', String(view === selected));
      tab.classList.toggle('fb-mod-selected', view === selected);
    }
  }

  private readonly _list: RunList;
  private readonly _details: RunDetails;
  private readonly _compare: CompareView;
  private readonly _flows: FlowList;
  private readonly _cache: CacheList;
  private readonly _runsTab: HTMLButtonElement;
  private readonly _flowsTab: HTMLButtonElement;
  private readonly _cacheTab: HTMLButtonElement;
  private _view: PanelView = 'runs';
  private _timer: number | null = null;
  private _widthApplied = false;
  private _dragging = false;
}

/** The split panel that lays out the side area holding `widget`, and that area. */
function enclosingSplit(widget: Widget): [SplitPanel, Widget] | null {
  let area: Widget = widget;
  let parent = widget.parent;
  while (parent !== null) {
    if (parent instanceof SplitPanel) {
      return [parent, area];
    }
    area = parent;
    parent = parent.parent;
  }
  return null;
}

function readStorage(key: string): string | null {
  try {
    return window.localStorage.getItem(key);
  } catch {
    return null; // storage disabled
  }
}

function writeStorage(key: string, value: string): void {
  try {
    window.localStorage.setItem(key, value);
  } catch {
    // storage disabled or full: the width is not remembered
  }
}
