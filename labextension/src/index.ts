import { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { flowRunsPlugin } from './plugin.js';

const plugins: JupyterFrontEndPlugin<void>[] = [flowRunsPlugin];

export default plugins;
