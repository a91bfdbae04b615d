import { JupyterFrontEnd } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { ReadonlyPartialJSONObject } from '@lumino/coreutils';

import { revealRunCell, RevealResult } from './notebookcell.js';
import { FlowRunsPanel, PANEL_ID } from './panel.js';

/** The extension's command ids. */
export namespace CommandIDs {
  /**
   * Shows the panel; args `{view?: 'runs' | 'flows' | 'cache', run?: <run id>, flow?, state?,
   * project?}`: `flow`, `state` and `project` filter the run list, except with `view: 'flows'`,
   * where `project` filters the flows.
   */
  export const openRunsPanel = 'flowbook:open-runs-panel';
  /** Goes to a run's cell; args `{notebook: <path>, cell_id: <cell id>}`. */
  export const openRunCell = 'flowbook:open-run-cell';
  /**
   * Shows one run's details in the panel; args `{run: <run id>}`. The links of
   * `%flowbook runs` run it.
   */
  export const openRun = 'flowbook:open-run';
  /** Compares two runs in the panel; args `{a: <run id>, b: <run id>}`. */
  export const compareRuns = 'flowbook:compare-runs';
}

function stringArg(args: ReadonlyPartialJSONObject, name: string): string | undefined {
  const value = args[name];
  return typeof value === 'string' ? value : undefined;
}

/** Adds the commands (and a palette entry for the panel). */
export function registerCommands(
  app: JupyterFrontEnd,
  panel: FlowRunsPanel,
  palette: ICommandPalette | null
): void {
  app.commands.addCommand(CommandIDs.openRunsPanel, {
    label: 'Show Flow Runs',
    caption: "Show flowbook's side panel of flow runs, flows and cache entries",
    icon: args => (args.isPalette ? undefined : panel.title.icon),
    execute: async args => {
      // before the layout is restored, the restorer would collapse the area again
      await app.restored;
      app.shell.activateById(PANEL_ID);
      const run = stringArg(args, 'run');
      const view = stringArg(args, 'view');
      const flow = stringArg(args, 'flow');
      const state = stringArg(args, 'state');
      const project = stringArg(args, 'project');
      if (run) {
        await panel.openRun(run);
      } else if (view === 'cache' || view === 'runs' || view === 'flows') {
        panel.showView(view);
      }
      if (view === 'flows' && !run) {
        if (project !== undefined) {
          await panel.flowList.setProject(project);
        }
      } else if (flow !== undefined || state !== undefined || project !== undefined) {
        await panel.runList.setFilter({ flow, state, project });
      }
    }
  });

  app.commands.addCommand(CommandIDs.openRun, {
    label: 'Open a Flow Run',
    caption: "Show a flow run's details in the Flow runs panel",
    execute: async args => {
      const run = stringArg(args, 'run') ?? '';
      if (run === '') {
        Notification.warning('flowbook: no run to open (the command needs a run id).', {
          autoClose: 6000
        });
        return 'missing-args';
      }
      await app.restored;
      app.shell.activateById(PANEL_ID);
      await panel.openRun(run);
      return 'opened';
    }
  });

  app.commands.addCommand(CommandIDs.compareRuns, {
    label: 'Compare Two Flow Runs',
    caption: 'Compare two flow runs in the Flow runs panel',
    execute: async args => {
      const a = stringArg(args, 'a') ?? '';
      const b = stringArg(args, 'b') ?? '';
      await app.restored;
      app.shell.activateById(PANEL_ID);
      if (a === '' || b === '') {
        panel.showView('runs');
        Notification.info('flowbook: tick two runs in the list, then click Compare.', {
          autoClose: 6000
        });
        return 'missing-args';
      }
      await panel.compareRuns(a, b);
      return 'compared';
    }
  });

  app.commands.addCommand(CommandIDs.openRunCell, {
    label: 'Go to the Cell of a Flow Run',
    caption: 'Activate the notebook of a flow run and select the cell that ran it',
    execute: async args => {
      const notebook = stringArg(args, 'notebook') ?? '';
      const cellId = stringArg(args, 'cell_id') ?? '';
      if (notebook === '' || cellId === '') {
        Notification.warning(
          'flowbook: this run did not record its notebook and cell, so there is no cell to go to.',
          { autoClose: 6000 }
        );
        return 'missing-args';
      }
      const result: RevealResult = await revealRunCell(app.shell, notebook, cellId);
      if (result === 'notebook-not-open') {
        Notification.warning(
          `The notebook ${notebook} is not open. Open it, then click "Open cell" again.`,
          { autoClose: 8000 }
        );
      } else if (result === 'cell-not-found') {
        Notification.warning(
          `The notebook ${notebook} has no cell with id ${cellId} any more ` +
            '(it was deleted, or the notebook was not saved since the run).',
          { autoClose: 8000 }
        );
      }
      return result;
    }
  });

  palette?.addItem({ command: CommandIDs.openRunsPanel, category: 'flowbook' });
}
