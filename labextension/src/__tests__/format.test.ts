import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  formatBytes,
  formatDuration,
  formatFullTime,
  formatLocalTime,
  formatValue,
  levelName,
  MISSING,
  parseTime,
  runDuration,
  truncate
} from '../format.js';

describe('formatDuration', () => {
  it('shows missing and invalid durations as a dash', () => {
    assert.equal(formatDuration(null), MISSING);
    assert.equal(formatDuration(undefined), MISSING);
    assert.equal(formatDuration(Number.NaN), MISSING);
    assert.equal(formatDuration(-1), MISSING);
  });

  it('uses milliseconds below a second', () => {
    assert.equal(formatDuration(0), '0 ms');
    assert.equal(formatDuration(0.25), '250 ms');
    assert.equal(formatDuration(0.9994), '999 ms');
  });

  it('uses one decimal below ten seconds, rounding down', () => {
    assert.equal(formatDuration(1), '1.0 s');
    assert.equal(formatDuration(4.26), '4.2 s');
    assert.equal(formatDuration(9.99), '9.9 s');
  });

  it('uses whole seconds, minutes, hours and days above', () => {
    assert.equal(formatDuration(42.7), '42 s');
    assert.equal(formatDuration(60), '1 min');
    assert.equal(formatDuration(185), '3 min 5 s');
    assert.equal(formatDuration(7200), '2 h');
    assert.equal(formatDuration(7800), '2 h 10 min');
    assert.equal(formatDuration(86400 * 3), '3 d');
    assert.equal(formatDuration(86400 * 3 + 3600 * 4 + 5), '3 d 4 h');
  });
});

describe('formatLocalTime', () => {
  // Dates built from local fields, so the expectations hold in every time zone.
  const now = new Date(2024, 0, 31, 18, 0, 0);

  it('shows the clock time for a time on the same local day', () => {
    const iso = new Date(2024, 0, 31, 14, 2, 11, 204).toISOString();
    assert.equal(formatLocalTime(iso, now), '14:02:11');
  });

  it('shows the date and minutes for another day', () => {
    const iso = new Date(2023, 11, 5, 9, 7, 3).toISOString();
    assert.equal(formatLocalTime(iso, now), '2023-12-05 09:07');
  });

  it('shows missing and invalid times as a dash', () => {
    assert.equal(formatLocalTime(null, now), MISSING);
    assert.equal(formatLocalTime('', now), MISSING);
    assert.equal(formatLocalTime('not a time', now), MISSING);
  });

  it('reads UTC offsets', () => {
    const local = new Date('2024-01-31T12:00:00+02:00');
    assert.equal(parseTime('2024-01-31T10:00:00Z')?.getTime(), local.getTime());
  });
});

describe('formatFullTime', () => {
  it('shows the local date and time with milliseconds', () => {
    const iso = new Date(2024, 1, 3, 4, 5, 6, 7).toISOString();
    assert.equal(formatFullTime(iso), '2024-02-03 04:05:06.007');
    assert.equal(formatFullTime(null), MISSING);
  });
});

describe('runDuration', () => {
  const now = new Date('2024-01-01T00:01:00Z');

  it("prefers the server's duration", () => {
    const run = { start_time: '2024-01-01T00:00:00Z', end_time: null, duration_s: 1.5 };
    assert.equal(runDuration(run, now), 1.5);
  });

  it('computes end minus start, or now minus start while running', () => {
    const done = {
      start_time: '2024-01-01T00:00:00Z',
      end_time: '2024-01-01T00:00:10Z',
      duration_s: null
    };
    assert.equal(runDuration(done, now), 10);
    const running = { start_time: '2024-01-01T00:00:30Z', end_time: null, duration_s: null };
    assert.equal(runDuration(running, now), 30);
  });

  it('is null before the start', () => {
    assert.equal(runDuration({ start_time: null, end_time: null, duration_s: null }, now), null);
  });
});

describe('formatBytes', () => {
  it('scales by 1024', () => {
    assert.equal(formatBytes(null), MISSING);
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1536), '1.5 KB');
    assert.equal(formatBytes(12 * 1024 * 1024), '12.0 MB');
    assert.equal(formatBytes(3 * 1024 ** 3), '3.0 GB');
  });
});

describe('levelName', () => {
  it('names Python logging levels', () => {
    assert.equal(levelName(20), 'INFO');
    assert.equal(levelName(40), 'ERROR');
    assert.equal(levelName(25), 'LEVEL 25');
    assert.equal(levelName('warning'), 'WARNING');
    assert.equal(levelName(null), MISSING);
  });
});

describe('formatValue and truncate', () => {
  it('shows strings as they are and anything else as JSON', () => {
    assert.equal(formatValue('abc'), 'abc');
    assert.equal(formatValue(3), '3');
    assert.equal(formatValue([1, 'a']), '[1,"a"]');
    assert.equal(formatValue({ a: null }), '{"a":null}');
    assert.equal(formatValue(undefined), 'undefined');
  });

  it('cuts long text with an ellipsis', () => {
    assert.equal(truncate('abcdef', 10), 'abcdef');
    assert.equal(truncate('abcdef', 4), 'abc…');
  });
});
