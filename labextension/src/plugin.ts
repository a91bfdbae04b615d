import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';

import { FlowbookClient } from './client.js';
import { CommandIDs, registerCommands } from './commands.js';
import { FlowRunsPanel } from './panel.js';

/** Where the panel sits among the left side panels (file browser 100, running 200, toc 400). */
const PANEL_RANK = 600;

/**
 * The "Flow runs" side panel and its commands. Works in JupyterLab 4 and in Notebook 7
 * (tree and notebook pages both have a left area); the palette and the layout restorer
 * are used when the app has them.
 */
export const flowRunsPlugin: JupyterFrontEndPlugin<void> = {
  id: 'flowbook-labextension:runs-panel',
  description: 'The "Flow runs" side panel: past flow runs, their details, and the task cache.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ): void => {
    const client = new FlowbookClient(app.serviceManager.serverSettings);
    const panel = new FlowRunsPanel({
      client,
      openCell: (notebook, cellId) => {
        void app.commands.execute(CommandIDs.openRunCell, { notebook, cell_id: cellId });
      }
    });
    app.shell.add(panel, 'left', { rank: PANEL_RANK });
    restorer?.add(panel, panel.id);
    registerCommands(app, panel, palette);
  }
};
