/**
 * Pure helpers that match a run's notebook path to the open documents; unit-tested with
 * `node --test`. A run records the notebook as the kernel saw it, which may be absolute
 * ("/home/ann/proj/etl.ipynb") or relative to the server root ("proj/etl.ipynb"), while
 * JupyterLab's documents have paths relative to the server root.
 */

/** Forward slashes, no "./" segments, no repeated or leading slashes. */
export function normalizePath(path: string): string {
  return path
    .replace(/\\/g, '/')
    .split('/')
    .filter(part => part !== '' && part !== '.')
    .join('/');
}

/**
 * How well an open document's path matches a run's notebook path:
 * 3 the same path, 2 the run's path is absolute and ends with the document's path,
 * 1 the document's path ends with the run's (relative) path, 0 no match.
 */
export function notebookMatchScore(openPath: string, runNotebook: string): number {
  const open = normalizePath(openPath);
  const run = normalizePath(runNotebook);
  if (open === '' || run === '') {
    return 0;
  }
  if (open === run) {
    return 3;
  }
  if (run.endsWith(`/${open}`)) {
    return 2;
  }
  if (open.endsWith(`/${run}`)) {
    return 1;
  }
  return 0;
}

/**
 * The index in `openPaths` of the document that is the run's notebook, or null. The best
 * score wins; among documents whose paths both end the run's absolute path, the longer
 * (more specific) one; the first among equal paths (two views of one notebook). Two
 * different documents that both only end with the run's relative path are ambiguous: null.
 */
export function bestNotebookMatch(
  openPaths: readonly string[],
  runNotebook: string
): number | null {
  let best: number | null = null;
  let bestScore = 0;
  let bestPath = '';
  let ambiguous = false;
  openPaths.forEach((path, index) => {
    const score = notebookMatchScore(path, runNotebook);
    if (score === 0) {
      return;
    }
    const normalized = normalizePath(path);
    const longer = score === 2 && score === bestScore && normalized.length > bestPath.length;
    if (score > bestScore || longer) {
      best = index;
      bestScore = score;
      bestPath = normalized;
      ambiguous = false;
    } else if (score === 1 && bestScore === 1 && normalized !== bestPath) {
      ambiguous = true;
    }
  });
  return ambiguous ? null : best;
}
