import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { SnapshotModel, snapshotTraits } from '../runview.js';
import { IRunSnapshot } from '../types.js';

function snapshot(state: string, logs: unknown[] = []): IRunSnapshot {
  return {
    header: { run_name: 'steady-otter', state },
    graph: { nodes: [{ key: 'task:1', state }], edges: [] },
    logs,
    logs_total: logs.length,
    timeline: { bars: [[0, 1, 2, state, 'COMPLETED', 'task:1', 'a-0']] }
  };
}

describe('SnapshotModel', () => {
  it('gives the traits the renderer reads, the timeline as JSON text', () => {
    const model = new SnapshotModel();
    model.set(snapshot('Running'));
    assert.deepEqual(model.get('header'), { run_name: 'steady-otter', state: 'Running' });
    assert.equal(typeof model.get('timeline_json'), 'string');
    assert.equal(JSON.parse(model.get('timeline_json') as string).bars.length, 1);
    assert.equal(model.get('logs_total'), 0);
    assert.equal(model.get('nothing'), undefined);
  });

  it('tells listeners only of the traits that changed', () => {
    const model = new SnapshotModel();
    model.set(snapshot('Running'));
    const seen: string[] = [];
    const onHeader = () => seen.push('header');
    model.on('change:header', onHeader);
    model.on('change:logs', () => seen.push('logs'));
    assert.deepEqual(model.set(snapshot('Running')), []);
    assert.deepEqual(seen, []);
    model.set(snapshot('Completed', [[1, 'INFO', 'a-0', 'done', 'a']]));
    assert.deepEqual(seen, ['header', 'logs']);
    model.off('change:header', onHeader);
    model.set(snapshot('Failed'));
    assert.deepEqual(seen, ['header', 'logs', 'logs']);
    model.send({ type: 'cancel' }); // ignored: a stored run cannot be cancelled
  });

  it('fills what a snapshot leaves out', () => {
    const traits = snapshotTraits({} as IRunSnapshot);
    assert.deepEqual(traits.logs, []);
    assert.equal(traits.logs_total, 0);
    assert.equal(traits.timeline_json, '{}');
  });
});
