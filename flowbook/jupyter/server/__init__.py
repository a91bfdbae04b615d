"""The Jupyter server extension: the JSON API of JupyterLab's "Flow runs" panel.

Enabled by ``jupyter-config/jupyter_server_config.d/flowbook.json`` (installed with the
package) or ``--ServerApp.jpserver_extensions="{'flowbook.jupyter.server': True}"``. It serves
the run store of the server's environment (``FLOWBOOK_HOME`` / ``FLOWBOOK_DATABASE_URL``, as a
kernel reads them) under ``{base_url}flowbook/api/``:

- ``GET runs?flow=&state=&limit=``: top-level flow runs, newest first, and the flow names;
- ``GET runs/<id>``: one flow run with its states, task runs, logs and parameters;
- ``GET runs/<id>/snapshot?run=``: the run as the run widget draws it (``StoredRun``'s
  snapshot); with ``run=1``, ``{"run": <GET runs/<id>'s answer>, "snapshot": ...}`` from one
  read of the run;
- ``GET view/run_view.js``, ``GET view/run_view.css``: the widget's renderer, for the panel;
- ``GET diff?a=&b=``: two runs compared (``flowbook.diff``; results by checksum only);
- ``GET flows?project=``: registered flows and the flows that only have runs;
- ``GET cache?flow=&task=``: cache entries;
- ``POST cache/clear``: delete cache entries.

Importing this package imports neither IPython, ipykernel nor the store; the handlers (and
jupyter_server, tornado, SQLAlchemy) are imported when the server loads the extension.
"""

from __future__ import annotations

from typing import Any

__all__ = ["_jupyter_server_extension_points", "_load_jupyter_server_extension"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "flowbook.jupyter.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from flowbook.jupyter.server.handlers import API_PATH, setup_handlers

    setup_handlers(serverapp)
    serverapp.log.info("flowbook | the run store API is at %s/", API_PATH)
