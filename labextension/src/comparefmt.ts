/**
 * The JSON of `GET flowbook/api/diff?a=..&b=..` (`flowbook.diff.RunDiff.as_dict()`) and pure
 * helpers to show it (no DOM, no JupyterLab): unit-tested with `node --test`.
 */
import { MISSING } from './format.js';

/** One of the two runs (`RunSide`). */
export interface IDiffRun {
  id: string;
  name: string;
  flow_name: string;
  state: string | null;
  state_type: string | null;
  message: string | null;
  start_time: string | null;
  duration_s: number | null;
  task_runs: number;
}

/** One parameter in both runs; null: not a parameter of that run. */
export interface IDiffParameter {
  name: string;
  a: string | null;
  b: string | null;
  changed: boolean;
}

/** One task run of a pair that differs (`TaskRunSide`). */
export interface IDiffTaskSide {
  id: string;
  name: string;
  state: string | null;
  state_type: string | null;
  message: string | null;
  duration_s: number | null;
  /** "hit" (served from the cache), "miss" (computed with a cache key), or null. */
  cache: string | null;
  inputs: string | null;
  result: string | null;
}

/** A call that differs between the runs (`TaskRunDiff`). */
export interface IDiffTaskRun {
  task_name: string;
  index: number;
  a: IDiffTaskSide | null;
  b: IDiffTaskSide | null;
  /** Of "state", "duration", "cache", "inputs", "result"; or "only in A" / "only in B". */
  changes: string[];
  /** B's duration over A's. */
  duration_ratio: number | null;
}

/** `GET diff?a=..&b=..` (`RunDiff.as_dict()`). */
export interface IRunDiff {
  a: IDiffRun;
  b: IDiffRun;
  same_flow: boolean;
  duration_ratio: number | null;
  parameters: IDiffParameter[];
  task_runs: IDiffTaskRun[];
  identical: number;
  only_in_a: number;
  only_in_b: number;
  read_results: boolean;
  min_change_s: number;
  min_ratio: number;
  matched_by: string;
  notes: string[];
}

/** "2.50×"; `MISSING` for no ratio. */
export function formatRatio(ratio: number | null | undefined): string {
  if (ratio === null || ratio === undefined || !Number.isFinite(ratio)) {
    return MISSING;
  }
  return `${ratio >= 10 ? ratio.toFixed(0) : ratio.toFixed(2)}×`;
}

/** "slower" / "faster" / "" for B's duration over A's. */
export function ratioWord(ratio: number | null | undefined): string {
  if (ratio === null || ratio === undefined || !Number.isFinite(ratio) || ratio === 1) {
    return '';
  }
  return ratio > 1 ? 'slower' : 'faster';
}

/** The name of a listed task run: A's, else B's. */
export function diffTaskName(task: IDiffTaskRun): string {
  return task.a?.name ?? task.b?.name ?? `${task.task_name}-${task.index}`;
}

/** Whether B's duration over A's is at least `minRatio` apart either way. */
export function ratioChanged(ratio: number | null, minRatio: number): boolean {
  if (ratio === null || !Number.isFinite(ratio) || ratio <= 0) {
    return false;
  }
  return ratio >= minRatio || 1 / ratio >= minRatio;
}

/** "explode-0 in B: ValueError: bad value" for listed task runs that did not complete. */
export function failureLines(tasks: readonly IDiffTaskRun[]): string[] {
  const lines: string[] = [];
  for (const task of tasks) {
    for (const [label, side] of [
      ['A', task.a],
      ['B', task.b]
    ] as const) {
      const message = side?.message?.trim();
      if (side && message && side.state_type !== 'COMPLETED') {
        lines.push(`${side.name} in ${label}: ${message.split('\n')[0].slice(0, 200)}`);
      }
    }
  }
  return lines;
}

/**
 * The stored inputs preview of a task run (a JSON object of argument name to preview, as
 * `flowbook.diff` gives it) as `name = preview` lines; `[]` for no inputs, the text itself
 * when it is not such an object.
 */
export function inputLines(inputs: string | null | undefined): string[] {
  if (inputs === null || inputs === undefined || inputs === '') {
    return [];
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(inputs);
  } catch {
    return [inputs];
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    return [inputs];
  }
  return Object.entries(parsed as Record<string, unknown>).map(
    ([name, value]) => `${name} = ${typeof value === 'string' ? value : JSON.stringify(value)}`
  );
}

/** What a side shows in place of a result preview it has none of. */
export function resultText(side: IDiffTaskSide | null): string {
  if (side === null) {
    return MISSING;
  }
  if (side.result !== null && side.result !== undefined) {
    return side.result;
  }
  return side.state_type === 'COMPLETED' ? '(no stored result)' : `(${side.state ?? 'no state'})`;
}
