/**
 * The JSON shapes of flowbook's server API (`{baseUrl}flowbook/api/`), as served by
 * `flowbook.jupyter.server`. Times are ISO 8601 strings or null.
 */

/** One row of `GET runs`. */
export interface IRunSummary {
  id: string;
  name: string;
  flow_name: string;
  state: string | null;
  state_type: string | null;
  message: string | null;
  start_time: string | null;
  end_time: string | null;
  duration_s: number | null;
  /** A count, a list or a `{state: count}` map, depending on the server; see `countTaskRuns`. */
  task_runs?: unknown;
  notebook: string | null;
  cell_id: string | null;
  /** The project of the flow when it ran (a registered flow's), else null or absent. */
  project?: string | null;
}

/** `GET runs?flow=F&state=S&limit=N`. */
export interface IRunList {
  runs: IRunSummary[];
  flows: string[];
}

/** One entry of a run's state history. */
export interface IStateRecord {
  name: string | null;
  type: string | null;
  message: string | null;
  timestamp: string | null;
}

/** One task run of `GET runs/<id>`. */
export interface ITaskRunSummary {
  id: string;
  name: string;
  task_name: string;
  state: string | null;
  state_type: string | null;
  start_time: string | null;
  end_time: string | null;
  duration_s: number | null;
}

/** One log line of `GET runs/<id>`; `level` is a name ("INFO") or a Python logging number. */
export interface ILogRecord {
  timestamp: string | null;
  level: string | number | null;
  task_run_id: string | null;
  message: string;
}

/** `GET runs/<id>`: the summary's fields (with the task runs listed) and the details. */
export interface IRunDetails extends Omit<IRunSummary, 'task_runs'> {
  parameters: Record<string, unknown>;
  tags: string[];
  states: IStateRecord[];
  task_runs: ITaskRunSummary[];
  logs: ILogRecord[];
  notebook: string | null;
  cell_id: string | null;
}

/**
 * `GET runs/<id>/snapshot`: the run widget's snapshot of a stored run (the traits of
 * docs/widget-protocol.md, with the timeline as an object), drawn by `run_view.js`.
 */
export interface IRunSnapshot {
  header: Record<string, unknown>;
  graph: Record<string, unknown>;
  logs: unknown[];
  logs_total: number;
  timeline: Record<string, unknown>;
}

/** One entry of `GET cache`. */
export interface ICacheEntry {
  task_key: string;
  key: string;
  task_name: string;
  flow_name: string | null;
  created: string | null;
  expires: string | null;
  expired: boolean;
  size: number | null;
  hits: number;
  input_preview: string | null;
}

/** `GET cache?flow=F&task=T`. */
export interface ICacheList {
  entries: ICacheEntry[];
}

/** The body of `POST cache/clear`. */
export type CacheClearRequest =
  { entries: Array<{ task_key: string; key: string }> } | { expired: true } | { all: true };

/** The answer of `POST cache/clear`. */
export interface ICacheClearResult {
  cleared: number;
}

/**
 * What every client call resolves to: API errors are values to show in the panel,
 * never exceptions.
 */
export type ApiResult<T> = { ok: true; value: T } | { ok: false; status: number; message: string };

/** The run list's filters; an empty string (or no `project`) means "any". */
export interface IRunFilter {
  flow: string;
  state: string;
  /** Only runs recorded with this project (set from the Flows view). */
  project?: string;
}

/** One parameter of a registered flow, with its default when it has one. */
export interface IFlowParameter {
  name: string;
  required: boolean;
  /** The default as JSON; null when required, or when JSON cannot hold it (`jsonable` false). */
  default?: unknown;
  jsonable?: boolean;
  /** Python's `repr` of the default. */
  repr?: string;
}

/**
 * One row of `GET flows`: a registered flow (`registered` true: id, version, where it is
 * defined, when registered, parameters, labels, run config, executor) or a flow that only
 * has runs (those fields null). Both have the number of top-level runs and the last one.
 */
export interface IFlowSummary {
  registered: boolean;
  name: string;
  project: string | null;
  runs: number;
  last_run: string | null;
  last_run_id: string | null;
  last_state: string | null;
  last_state_type: string | null;
  id: string | null;
  version: number | null;
  /** The script, or the notebook and cell, it was registered from. */
  where: string | null;
  script: string | null;
  /** The notebook, relative to the server's root when inside it. */
  notebook: string | null;
  cell_id: string | null;
  registered_at: string | null;
  parameters: IFlowParameter[] | null;
  labels: string[] | null;
  run_config: Record<string, unknown> | null;
  executor: Record<string, unknown> | null;
}

/** `GET flows?project=P`: the flows, and the projects of all flows (whatever the filter). */
export interface IFlowList {
  flows: IFlowSummary[];
  projects: string[];
}
