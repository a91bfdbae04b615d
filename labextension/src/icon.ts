import { LabIcon } from '@jupyterlab/ui-components';

/**
 * The panel's icon: three runs in a flow. `jp-icon3` lets the theme colour it; the
 * literal fill is only the fallback LabIcon expects.
 */
const FLOW_RUNS_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <circle cx="5" cy="5" r="3"/>
    <circle cx="5" cy="19" r="3"/>
    <circle cx="19" cy="12" r="3"/>
    <path d="M7.6 6.3l9.2 4.3-.9 1.8-9.2-4.3zM6.7 15.9l9.2-4.3.9 1.8-9.2 4.3z"/>
  </g>
</svg>`;

export const flowRunsIcon = new LabIcon({ name: 'flowbook:flow-runs', svgstr: FLOW_RUNS_SVG });
