import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { bestNotebookMatch, normalizePath, notebookMatchScore } from '../paths.js';

describe('normalizePath', () => {
  it('uses forward slashes without empty or "." segments', () => {
    assert.equal(normalizePath('/home/ann//proj/./etl.ipynb'), 'home/ann/proj/etl.ipynb');
    assert.equal(normalizePath('C:\\Users\\ann\\etl.ipynb'), 'C:/Users/ann/etl.ipynb');
    assert.equal(normalizePath('./etl.ipynb'), 'etl.ipynb');
  });
});

describe('notebookMatchScore', () => {
  it('ranks same path > absolute run path > relative run path', () => {
    assert.equal(notebookMatchScore('proj/etl.ipynb', 'proj/etl.ipynb'), 3);
    assert.equal(notebookMatchScore('proj/etl.ipynb', '/home/ann/proj/etl.ipynb'), 2);
    assert.equal(notebookMatchScore('proj/etl.ipynb', 'etl.ipynb'), 1);
  });

  it('does not match other names or partial names', () => {
    assert.equal(notebookMatchScore('proj/etl.ipynb', 'report.ipynb'), 0);
    assert.equal(notebookMatchScore('proj/my_etl.ipynb', 'etl.ipynb'), 0);
    assert.equal(notebookMatchScore('', 'etl.ipynb'), 0);
  });
});

describe('bestNotebookMatch', () => {
  it('picks the best match', () => {
    const open = ['a/etl.ipynb', 'proj/etl.ipynb', 'report.ipynb'];
    assert.equal(bestNotebookMatch(open, '/home/ann/proj/etl.ipynb'), 1);
    assert.equal(bestNotebookMatch(open, 'report.ipynb'), 2);
    assert.equal(bestNotebookMatch(open, 'nothing.ipynb'), null);
    assert.equal(bestNotebookMatch([], 'etl.ipynb'), null);
  });

  it('refuses an ambiguous file name, but not two views of one notebook', () => {
    assert.equal(bestNotebookMatch(['a/etl.ipynb', 'b/etl.ipynb'], 'etl.ipynb'), null);
    assert.equal(bestNotebookMatch(['a/etl.ipynb', 'a/etl.ipynb'], 'etl.ipynb'), 0);
    assert.equal(bestNotebookMatch(['a/etl.ipynb', 'etl.ipynb'], 'etl.ipynb'), 1);
    assert.equal(bestNotebookMatch(['a/etl.ipynb', 'b/etl.ipynb', 'etl.ipynb'], 'etl.ipynb'), 2);
  });

  it('prefers the longer path that ends an absolute run path', () => {
    const run = '/home/ann/proj/etl.ipynb';
    assert.equal(bestNotebookMatch(['etl.ipynb', 'proj/etl.ipynb'], run), 1);
    assert.equal(bestNotebookMatch(['proj/etl.ipynb', 'etl.ipynb'], run), 0);
  });
});
