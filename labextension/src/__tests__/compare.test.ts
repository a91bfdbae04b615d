import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  diffTaskName,
  failureLines,
  formatRatio,
  IDiffTaskRun,
  IDiffTaskSide,
  inputLines,
  ratioChanged,
  ratioWord,
  resultText
} from '../comparefmt.js';
import { RUN_LINK_SELECTOR, runIdOfLink } from '../runlinks.js';

const RUN = '5393d4ec-ca5a-4c54-901e-4270d9bd4f34';

function side(name: string, over: Partial<IDiffTaskSide> = {}): IDiffTaskSide {
  return {
    id: `id-${name}`,
    name,
    state: 'Completed',
    state_type: 'COMPLETED',
    message: null,
    duration_s: 1,
    cache: null,
    inputs: null,
    result: null,
    ...over
  };
}

function task(a: IDiffTaskSide | null, b: IDiffTaskSide | null): IDiffTaskRun {
  return { task_name: 'work', index: 0, a, b, changes: ['state'], duration_ratio: null };
}

describe('formatRatio', () => {
  it('shows two decimals, none from 10 on, and a dash for none', () => {
    assert.equal(formatRatio(4.987), '4.99×');
    assert.equal(formatRatio(0.5), '0.50×');
    assert.equal(formatRatio(12.4), '12×');
    assert.equal(formatRatio(null), '–');
    assert.equal(formatRatio(Number.NaN), '–');
  });
});

describe('ratioWord and ratioChanged', () => {
  it('says slower or faster, and whether the ratio is past the threshold either way', () => {
    assert.equal(ratioWord(2), 'slower');
    assert.equal(ratioWord(0.5), 'faster');
    assert.equal(ratioWord(1), '');
    assert.equal(ratioWord(null), '');
    assert.equal(ratioChanged(1.3, 1.2), true);
    assert.equal(ratioChanged(0.8, 1.2), true);
    assert.equal(ratioChanged(1.1, 1.2), false);
    assert.equal(ratioChanged(null, 1.2), false);
    assert.equal(ratioChanged(0, 1.2), false);
  });
});

describe('diffTaskName and failureLines', () => {
  it("names a task run by A's name, else B's", () => {
    assert.equal(diffTaskName(task(side('work-0'), side('other'))), 'work-0');
    assert.equal(diffTaskName(task(null, side('work-1'))), 'work-1');
    assert.equal(diffTaskName(task(null, null)), 'work-0');
  });

  it("lists the first line of the messages of task runs that did not complete", () => {
    const failed = side('work-0', {
      state: 'Failed',
      state_type: 'FAILED',
      message: 'ValueError: bad\nmore'
    });
    const done = side('work-0', { message: 'All fine' });
    assert.deepEqual(failureLines([task(done, failed)]), ['work-0 in B: ValueError: bad']);
    assert.deepEqual(failureLines([task(done, null)]), []);
  });
});

describe('runIdOfLink', () => {
  it('reads the data attribute, else the href', () => {
    assert.equal(runIdOfLink(RUN, '#flowbook-run=other'), RUN);
    assert.equal(runIdOfLink(null, `#flowbook-run=${RUN}`), RUN);
    assert.equal(runIdOfLink('', `http://host/lab#flowbook-run=${RUN}`), RUN);
  });

  it('refuses what is not a run id', () => {
    assert.equal(runIdOfLink(null, '#flowbook-run='), null);
    assert.equal(runIdOfLink(null, '#flowbook-run=../../etc'), null);
    assert.equal(runIdOfLink('a b', '#elsewhere'), null);
    assert.equal(runIdOfLink(null, null), null);
    assert.equal(runIdOfLink(null, '#flowbook-run=%E0%A4%A'), null);
  });

  it('selects the anchors by attribute and href', () => {
    assert.equal(RUN_LINK_SELECTOR, 'a[data-flowbook-run], a[href^="#flowbook-run="]');
  });
});

describe('inputLines', () => {
  it('gives one name = preview line per argument', () => {
    assert.deepEqual(inputLines('{"delay": "0.5", "tag": "\'x\'"}'), [
      'delay = 0.5',
      "tag = 'x'"
    ]);
  });
  it('gives nothing for no inputs, and text that is not an object as it is', () => {
    assert.deepEqual(inputLines(null), []);
    assert.deepEqual(inputLines(''), []);
    assert.deepEqual(inputLines('{}'), []);
    assert.deepEqual(inputLines('not json'), ['not json']);
    assert.deepEqual(inputLines('[1, 2]'), ['[1, 2]']);
  });
});

describe('resultText', () => {
  it('shows the preview, or why there is none', () => {
    assert.equal(resultText(side('a', { result: '[1, 2]' })), '[1, 2]');
    assert.equal(resultText(side('a')), '(no stored result)');
    assert.equal(resultText(side('a', { state: 'Failed', state_type: 'FAILED' })), '(Failed)');
    assert.equal(resultText(null), '\u2013');
  });
});
