import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  countTaskRuns,
  filterRuns,
  flowOptions,
  isFinalState,
  sortRuns,
  stateCategory,
  stateClass,
  STATE_FILTERS
} from '../runs.js';

function run(
  id: string,
  flow: string,
  state: string | null,
  type: string | null,
  start: string | null
) {
  return { id, flow_name: flow, state, state_type: type, start_time: start };
}

const RUNS = [
  run('a', 'etl', 'Completed', 'COMPLETED', '2024-01-01T10:00:00Z'),
  run('b', 'etl', 'TimedOut', 'FAILED', '2024-01-01T12:00:00Z'),
  run('c', 'report', 'Failed', 'FAILED', '2024-01-01T11:00:00Z'),
  run('d', 'report', 'Running', 'RUNNING', '2024-01-01T13:00:00Z'),
  run('e', 'etl', null, null, null)
];

describe('stateClass', () => {
  it('maps names first, then types, to a colour family', () => {
    assert.equal(stateClass('Completed', 'COMPLETED'), 'fb-state-completed');
    assert.equal(stateClass('Cached', 'COMPLETED'), 'fb-state-cached');
    assert.equal(stateClass('TimedOut', 'FAILED'), 'fb-state-failed');
    assert.equal(stateClass('Crashed', 'CRASHED'), 'fb-state-crashed');
    assert.equal(stateClass('Cancelled', 'CANCELLED'), 'fb-state-cancelled');
    assert.equal(stateClass('Retrying', 'RUNNING'), 'fb-state-running');
    assert.equal(stateClass('AwaitingRetry', 'SCHEDULED'), 'fb-state-pending');
    assert.equal(stateClass('Pending', 'PENDING'), 'fb-state-pending');
  });

  it('falls back to the type for unknown names, and to unknown', () => {
    assert.equal(stateClass('Exploded', 'CRASHED'), 'fb-state-crashed');
    assert.equal(stateCategory(null, 'running'), 'running');
    assert.equal(stateClass(null, null), 'fb-state-unknown');
    assert.equal(stateClass('Weird', 'ALSO_WEIRD'), 'fb-state-unknown');
  });

  it('knows the final state types', () => {
    assert.equal(isFinalState('COMPLETED'), true);
    assert.equal(isFinalState('crashed'), true);
    assert.equal(isFinalState('RUNNING'), false);
    assert.equal(isFinalState(null), false);
  });
});

describe('filterRuns', () => {
  it('keeps everything without filters', () => {
    assert.deepEqual(
      filterRuns(RUNS, { flow: '', state: '' }).map(r => r.id),
      ['a', 'b', 'c', 'd', 'e']
    );
  });

  it('filters by flow and by state name or type, ignoring case', () => {
    assert.deepEqual(
      filterRuns(RUNS, { flow: 'etl', state: '' }).map(r => r.id),
      ['a', 'b', 'e']
    );
    assert.deepEqual(
      filterRuns(RUNS, { flow: '', state: 'failed' }).map(r => r.id),
      ['b', 'c']
    );
    assert.deepEqual(
      filterRuns(RUNS, { flow: '', state: 'timedout' }).map(r => r.id),
      ['b']
    );
    assert.deepEqual(
      filterRuns(RUNS, { flow: 'report', state: 'failed' }).map(r => r.id),
      ['c']
    );
    assert.deepEqual(filterRuns(RUNS, { flow: 'nope', state: '' }), []);
  });

  it('offers every state filter value as a lower-case name or type', () => {
    assert.equal(STATE_FILTERS[0].value, '');
    for (const option of STATE_FILTERS) {
      assert.equal(option.value, option.value.toLowerCase());
    }
  });
});

describe('sortRuns', () => {
  it('puts runs without a start first, then newest first, stably', () => {
    assert.deepEqual(
      sortRuns(RUNS).map(r => r.id),
      ['e', 'd', 'b', 'c', 'a']
    );
    const same = [
      run('x', 'f', null, null, '2024-01-01T00:00:00Z'),
      run('y', 'f', null, null, '2024-01-01T00:00:00Z')
    ];
    assert.deepEqual(
      sortRuns(same).map(r => r.id),
      ['x', 'y']
    );
  });

  it('does not change its input', () => {
    const copy = [...RUNS];
    sortRuns(RUNS);
    assert.deepEqual(RUNS, copy);
  });
});

describe('flowOptions', () => {
  it('sorts, dedupes and keeps the selected flow', () => {
    assert.deepEqual(flowOptions(['b', 'a', 'b', ''], ''), ['a', 'b']);
    assert.deepEqual(flowOptions(['b'], 'gone'), ['b', 'gone']);
  });
});

describe('countTaskRuns', () => {
  it('reads a count, a list or a map of counts', () => {
    assert.equal(countTaskRuns(3), 3);
    assert.equal(countTaskRuns([{}, {}]), 2);
    assert.equal(countTaskRuns({ Completed: 2, Failed: 1, bad: 'x' }), 3);
    assert.equal(countTaskRuns(null), null);
    assert.equal(countTaskRuns(undefined), null);
    assert.equal(countTaskRuns('3'), null);
  });
});
