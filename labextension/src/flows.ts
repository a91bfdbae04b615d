/**
 * Pure helpers over the flows of `GET flows`: row keys, parameter and count texts, and the
 * run-list filter a flow selects; unit-tested with `node --test`.
 */
import { MISSING } from './format.js';
import { IFlowParameter, IFlowSummary, IRunFilter } from './types.js';

/**
 * A flow's row key: a registered flow and a never-registered flow of the same name and
 * project are two rows (the store lists both when the runs predate the registration under
 * another project), so the kind is part of the key.
 */
export function flowKey(flow: Pick<IFlowSummary, 'registered' | 'name' | 'project'>): string {
  return [flow.registered ? 'registered' : 'runs', flow.project ?? '', flow.name].join('\u0000');
}

/**
 * One parameter as a Python user writes it: `n=3`, `name='world'` (the default's `repr`,
 * else its JSON), and `name (required)` for a parameter without a default.
 */
export function formatParameter(parameter: IFlowParameter): string {
  if (parameter.required) {
    return `${parameter.name} (required)`;
  }
  if (typeof parameter.repr === 'string') {
    return `${parameter.name}=${parameter.repr}`;
  }
  return `${parameter.name}=${JSON.stringify(parameter.default ?? null)}`;
}

/** The parameters, comma-separated; "no parameters" for none, `MISSING` when unknown. */
export function formatParameters(parameters: readonly IFlowParameter[] | null | undefined): string {
  if (parameters === null || parameters === undefined) {
    return MISSING;
  }
  if (parameters.length === 0) {
    return 'no parameters';
  }
  return parameters.map(formatParameter).join(', ');
}

/** "no runs", "1 run", "12 runs". */
export function formatRunCount(count: number | null | undefined): string {
  const n = typeof count === 'number' && Number.isFinite(count) ? count : 0;
  if (n === 0) {
    return 'no runs';
  }
  return `${n} run${n === 1 ? '' : 's'}`;
}

/** The `type` of a run config's or an executor's description ("LocalRun"), or null. */
export function describedType(
  described: Record<string, unknown> | null | undefined
): string | null {
  const type = described?.type;
  return typeof type === 'string' && type !== '' ? type : null;
}

/**
 * The run list's filter for a flow's runs: its name and, when it has one, its project
 * (runs of another project's flow of the same name stay out); any state.
 */
export function flowRunFilter(flow: Pick<IFlowSummary, 'name' | 'project'>): IRunFilter {
  return { flow: flow.name, state: '', project: flow.project ?? '' };
}
