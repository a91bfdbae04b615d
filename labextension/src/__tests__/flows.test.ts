import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  describedType,
  flowKey,
  flowRunFilter,
  formatParameter,
  formatParameters,
  formatRunCount
} from '../flows.js';
import { filterRuns } from '../runs.js';

describe('flowKey', () => {
  it('tells kinds, projects and names apart', () => {
    const keys = new Set([
      flowKey({ registered: true, name: 'etl', project: 'tutorial' }),
      flowKey({ registered: false, name: 'etl', project: 'tutorial' }),
      flowKey({ registered: true, name: 'etl', project: null }),
      flowKey({ registered: true, name: 'etl', project: 'other' }),
      flowKey({ registered: true, name: 'report', project: 'tutorial' })
    ]);
    assert.equal(keys.size, 5);
    assert.equal(
      flowKey({ registered: true, name: 'etl', project: 'tutorial' }),
      flowKey({ registered: true, name: 'etl', project: 'tutorial' })
    );
  });
});

describe('formatParameters', () => {
  it('writes defaults as Python does, and marks required parameters', () => {
    assert.equal(
      formatParameter({ name: 'name', required: false, default: 'world', repr: "'world'" }),
      "name='world'"
    );
    assert.equal(formatParameter({ name: 'n', required: true, default: null }), 'n (required)');
    assert.equal(formatParameter({ name: 'xs', required: false, default: [1, 2] }), 'xs=[1,2]');
    assert.equal(
      formatParameter({
        name: 'when',
        required: false,
        default: null,
        jsonable: false,
        repr: 'datetime.date(2024, 1, 2)'
      }),
      'when=datetime.date(2024, 1, 2)'
    );
  });

  it('joins them, and says when there are none or they are unknown', () => {
    assert.equal(
      formatParameters([
        { name: 'a', required: true },
        { name: 'b', required: false, default: 2, repr: '2' }
      ]),
      'a (required), b=2'
    );
    assert.equal(formatParameters([]), 'no parameters');
    assert.equal(formatParameters(null), '–');
  });
});

describe('formatRunCount', () => {
  it('counts runs in words', () => {
    assert.equal(formatRunCount(0), 'no runs');
    assert.equal(formatRunCount(1), '1 run');
    assert.equal(formatRunCount(12), '12 runs');
    assert.equal(formatRunCount(null), 'no runs');
  });
});

describe('describedType', () => {
  it('reads the type of a description', () => {
    assert.equal(describedType({ type: 'LocalRun', env: {} }), 'LocalRun');
    assert.equal(describedType(null), null);
    assert.equal(describedType({ type: 3 }), null);
    assert.equal(describedType({}), null);
  });
});

describe('flowRunFilter', () => {
  function run(id: string, flow: string, project: string | null) {
    const state = { state: 'Completed', state_type: 'COMPLETED', start_time: null };
    return { id, flow_name: flow, project, ...state };
  }
  const runs = [
    run('a', 'etl', 'tutorial'),
    run('b', 'etl', 'other'),
    run('c', 'etl', null),
    run('d', 'report', 'tutorial')
  ];

  it("keeps a registered flow's runs of its project only", () => {
    const filter = flowRunFilter({ name: 'etl', project: 'tutorial' });
    assert.deepEqual(filter, { flow: 'etl', state: '', project: 'tutorial' });
    assert.deepEqual(filterRuns(runs, filter).map(r => r.id), ['a']);
  });

  it('keeps every run of a flow name when the flow has no project', () => {
    const filter = flowRunFilter({ name: 'etl', project: null });
    assert.deepEqual(filterRuns(runs, filter).map(r => r.id), ['a', 'b', 'c']);
  });
});
