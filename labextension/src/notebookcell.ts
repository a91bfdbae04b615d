/**
 * Finding a run's cell in the open notebooks. The notebook widgets are reached through
 * the shell's main area (their `context.path` is the document path, as the notebook
 * tracker sees it) and used through the small structural types below, so the extension
 * does not bundle or pin `@jupyterlab/notebook`.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Widget } from '@lumino/widgets';

import { bestNotebookMatch } from './paths.js';

/** What `revealRunCell` did. */
export type RevealResult = 'revealed' | 'notebook-not-open' | 'cell-not-found';

interface ICellLike {
  readonly model: { readonly id: string };
  readonly node: HTMLElement;
}

interface INotebookLike {
  readonly widgets: readonly ICellLike[];
  activeCellIndex: number;
  mode: string;
  deselectAll(): void;
  scrollToCell?(cell: ICellLike): Promise<void>;
}

interface IDocumentLike extends Widget {
  readonly context: { readonly path: string };
  readonly content: unknown;
}

function isDocument(widget: Widget): widget is IDocumentLike {
  const context = (widget as unknown as { context?: { path?: unknown } }).context;
  return typeof context?.path === 'string' && 'content' in widget;
}

function asNotebook(content: unknown): INotebookLike | null {
  if (content === null || typeof content !== 'object') {
    return null;
  }
  const notebook = content as Partial<INotebookLike>;
  const ok =
    Array.isArray(notebook.widgets) &&
    typeof notebook.activeCellIndex === 'number' &&
    typeof notebook.deselectAll === 'function';
  return ok ? (notebook as INotebookLike) : null;
}

/** The open notebooks (current one first), with their paths. */
function openNotebooks(
  shell: JupyterFrontEnd.IShell
): Array<{ widget: IDocumentLike; notebook: INotebookLike }> {
  const found: Array<{ widget: IDocumentLike; notebook: INotebookLike }> = [];
  for (const widget of shell.widgets('main')) {
    if (!isDocument(widget)) {
      continue;
    }
    const notebook = asNotebook(widget.content);
    if (notebook !== null) {
      found.push({ widget, notebook });
    }
  }
  const current = shell.currentWidget;
  found.sort((a, b) => Number(b.widget === current) - Number(a.widget === current));
  return found;
}

/**
 * Activates the open notebook whose path matches `notebookPath`, then selects the cell
 * with id `cellId` and scrolls to it.
 */
export async function revealRunCell(
  shell: JupyterFrontEnd.IShell,
  notebookPath: string,
  cellId: string
): Promise<RevealResult> {
  const candidates = openNotebooks(shell);
  const index = bestNotebookMatch(
    candidates.map(candidate => candidate.widget.context.path),
    notebookPath
  );
  if (index === null) {
    return 'notebook-not-open';
  }
  const { widget, notebook } = candidates[index];
  shell.activateById(widget.id);
  const cellIndex = notebook.widgets.findIndex(cell => cell.model.id === cellId);
  if (cellIndex < 0) {
    return 'cell-not-found';
  }
  const cell = notebook.widgets[cellIndex];
  notebook.mode = 'command';
  notebook.activeCellIndex = cellIndex;
  notebook.deselectAll();
  if (typeof notebook.scrollToCell === 'function') {
    await notebook.scrollToCell(cell);
  } else {
    cell.node.scrollIntoView({ block: 'center' });
  }
  notebook.mode = 'command'; // selected, not being edited: the arrow keys move from here
  return 'revealed';
}
