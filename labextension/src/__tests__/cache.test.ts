import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { cacheEntryKey, sortCacheEntries } from '../cache.js';

function entry(task: string, key: string, created: string | null) {
  return { task_key: `mod.${task}`, key, task_name: task, created };
}

describe('cache entries', () => {
  it('are identified by task key and key', () => {
    assert.equal(cacheEntryKey(entry('t', 'k1', null)), 'mod.t\u0000k1');
    assert.notEqual(cacheEntryKey(entry('t', 'k1', null)), cacheEntryKey(entry('t', 'k2', null)));
  });

  it('sort newest first, then by task name, undated last', () => {
    const entries = [
      entry('b', '1', '2024-01-01T00:00:00Z'),
      entry('z', '2', null),
      entry('a', '3', '2024-01-01T00:00:00Z'),
      entry('c', '4', '2024-02-01T00:00:00Z')
    ];
    assert.deepEqual(
      sortCacheEntries(entries).map(e => e.key),
      ['4', '3', '1', '2']
    );
  });
});
