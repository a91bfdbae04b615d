import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ToolbarButton } from '@jupyterlab/ui-components';

import { FlowbookClient } from './client.js';
import { CommandIDs, registerCommands } from './commands.js';
import { diffLoader } from './compare.js';
import { flowRunsIcon } from './icon.js';
import { FlowRunsPanel } from './panel.js';
import { RUN_LINK_SELECTOR, runIdOfLink } from './runlinks.js';

/** Where the panel sits among the left side panels (file browser 100, running 200, toc 400). */
const PANEL_RANK = 600;

/** The name Notebook 7's application has (JupyterLab's is "JupyterLab"). */
export const NOTEBOOK_APP_NAME = 'Jupyter Notebook';

/** Where the "Flow runs" button sits in Notebook 7's top bar: after the title, on the right. */
const TOP_BAR_RANK = 1000;

/** The id of Notebook 7's "Flow runs" top-bar button. */
export const TOP_BAR_BUTTON_ID = 'flowbook-flow-runs-button';

/**
 * The "Flow runs" side panel and its commands. Works in JupyterLab 4 and in Notebook 7
 * (tree and notebook pages both have a left area); the palette and the layout restorer
 * are used when the app has them. In Notebook 7, whose left area has no tab bar, a
 * "Flow runs" button in the top bar (notebook and tree pages) opens the panel. A click on
 * a run link of `%flowbook runs` (see runlinks.ts) opens that run in the panel.
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
    const settings = app.serviceManager.serverSettings;
    const client = new FlowbookClient(settings);
    const panel = new FlowRunsPanel({
      client,
      loadDiff: diffLoader(settings),
      openCell: (notebook, cellId) => {
        void app.commands.execute(CommandIDs.openRunCell, { notebook, cell_id: cellId });
      }
    });
    app.shell.add(panel, 'left', { rank: PANEL_RANK });
    restorer?.add(panel, panel.id);
    registerCommands(app, panel, palette);
    if (app.name === NOTEBOOK_APP_NAME) {
      app.shell.add(topBarButton(app), 'top', { rank: TOP_BAR_RANK });
    }
    listenForRunLinks(app);
  }
};

/** Notebook 7's top-bar button "Flow runs": opens (or reveals) the panel. */
function topBarButton(app: JupyterFrontEnd): ToolbarButton {
  const widget = new ToolbarButton({
    icon: flowRunsIcon,
    label: 'Flow runs',
    tooltip: "Show flowbook's Flow runs panel: past and running flow runs, flows and cache",
    className: 'fb-top-bar-button',
    onClick: () => {
      void app.commands.execute(CommandIDs.openRunsPanel);
    }
  });
  widget.id = TOP_BAR_BUTTON_ID;
  widget.addClass('fb-top-bar-item');
  return widget;
}

/**
 * Opens the run of a clicked run link in the panel. Listens on the document in the
 * capture phase, so the link's own navigation (a hash) never happens.
 */
function listenForRunLinks(app: JupyterFrontEnd): void {
  document.addEventListener(
    'click',
    event => {
      if (event.button !== 0 || event.defaultPrevented) {
        return;
      }
      const target = event.target as Element | null;
      const link = target?.closest?.<HTMLAnchorElement>(RUN_LINK_SELECTOR);
      if (!link) {
        return;
      }
      const run = runIdOfLink(link.dataset.flowbookRun, link.getAttribute('href'));
      if (run === null) {
        return;
      }
      event.preventDefault();
      event.stopPropagation();
      void app.commands.execute(CommandIDs.openRun, { run });
    },
    true
  );
}
