/**
 * Pure helpers over runs: state filters, CSS classes, sorting; unit-tested with `node --test`.
 */
import { parseTime } from './format.js';
import { IRunFilter } from './types.js';

/** The state filter's options; a value matches a state's name or its type, ignoring case. */
export const STATE_FILTERS: ReadonlyArray<{ value: string; label: string }> = [
  { value: '', label: 'All states' },
  { value: 'running', label: 'Running' },
  { value: 'completed', label: 'Completed' },
  { value: 'failed', label: 'Failed' },
  { value: 'crashed', label: 'Crashed' },
  { value: 'cancelled', label: 'Cancelled' },
  { value: 'pending', label: 'Pending' },
  { value: 'scheduled', label: 'Scheduled' }
];

/** The colour families of states; each is a CSS class `fb-state-<category>`. */
export type StateCategory =
  'completed' | 'cached' | 'failed' | 'crashed' | 'cancelled' | 'running' | 'pending' | 'unknown';

const BY_NAME: Record<string, StateCategory> = {
  completed: 'completed',
  cached: 'cached',
  failed: 'failed',
  timedout: 'failed',
  crashed: 'crashed',
  cancelled: 'cancelled',
  cancelling: 'cancelled',
  running: 'running',
  retrying: 'running',
  pending: 'pending',
  scheduled: 'pending',
  awaitingretry: 'pending',
  late: 'pending',
  paused: 'pending'
};

const BY_TYPE: Record<string, StateCategory> = {
  completed: 'completed',
  failed: 'failed',
  crashed: 'crashed',
  cancelled: 'cancelled',
  cancelling: 'cancelled',
  running: 'running',
  pending: 'pending',
  scheduled: 'pending',
  paused: 'pending'
};

/** The colour family of a state: from its name ("Cached", "TimedOut") first, else its type. */
export function stateCategory(
  state: string | null | undefined,
  stateType?: string | null
): StateCategory {
  const name = (state ?? '').toLowerCase();
  if (name in BY_NAME) {
    return BY_NAME[name];
  }
  const type = (stateType ?? '').toLowerCase();
  if (type in BY_TYPE) {
    return BY_TYPE[type];
  }
  return 'unknown';
}

/** The CSS class of a state badge: "fb-state-completed", "fb-state-failed", ... */
export function stateClass(state: string | null | undefined, stateType?: string | null): string {
  return `fb-state-${stateCategory(state, stateType)}`;
}

/** Whether a state type is final (the run will not change any more). */
export function isFinalState(stateType: string | null | undefined): boolean {
  const type = (stateType ?? '').toUpperCase();
  return type === 'COMPLETED' || type === 'FAILED' || type === 'CRASHED' || type === 'CANCELLED';
}

/** The fields the filters and the sort read. */
export interface IFilterable {
  flow_name: string;
  project?: string | null;
  state: string | null;
  state_type: string | null;
  start_time: string | null;
}

/** Whether a run's state matches a state filter value ('' matches all). */
export function stateMatches(run: IFilterable, state: string): boolean {
  if (state === '') {
    return true;
  }
  const wanted = state.toLowerCase();
  return (
    (run.state ?? '').toLowerCase() === wanted || (run.state_type ?? '').toLowerCase() === wanted
  );
}

/** The runs that match the filters (flow, state, and project when set), in their order. */
export function filterRuns<T extends IFilterable>(runs: readonly T[], filter: IRunFilter): T[] {
  const project = filter.project ?? '';
  return runs.filter(
    run =>
      (filter.flow === '' || run.flow_name === filter.flow) &&
      (project === '' || run.project === project) &&
      stateMatches(run, filter.state)
  );
}

/**
 * The runs newest first by start time; runs that have not started yet (no start time) come
 * first, and equal times keep their order.
 */
export function sortRuns<T extends IFilterable>(runs: readonly T[]): T[] {
  const keyed = runs.map((run, index) => ({
    run,
    index,
    time: parseTime(run.start_time)?.getTime() ?? Number.POSITIVE_INFINITY
  }));
  keyed.sort((a, b) => {
    if (a.time !== b.time) {
      return a.time > b.time ? -1 : 1;
    }
    return a.index - b.index;
  });
  return keyed.map(item => item.run);
}

/** The flow filter's options: the API's flows, sorted and unique, plus the selected one. */
export function flowOptions(flows: readonly string[], selected: string): string[] {
  const unique = new Set(flows.filter(flow => flow !== ''));
  if (selected !== '') {
    unique.add(selected);
  }
  return [...unique].sort((a, b) => a.localeCompare(b));
}

/**
 * The number of task runs from a list row's `task_runs`: a number, a list, or a
 * `{state: count}` map; null when absent or of another shape.
 */
export function countTaskRuns(value: unknown): number | null {
  if (typeof value === 'number' && Number.isFinite(value)) {
    return value;
  }
  if (Array.isArray(value)) {
    return value.length;
  }
  if (value !== null && typeof value === 'object') {
    let total = 0;
    for (const count of Object.values(value as Record<string, unknown>)) {
      if (typeof count === 'number' && Number.isFinite(count)) {
        total += count;
      }
    }
    return total;
  }
  return null;
}
