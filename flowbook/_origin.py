"""Where a top-level flow run was started: the notebook and the cell of a Jupyter kernel.

Read once per top-level flow run, when the engine creates it, on the thread that creates it.
Nothing is imported: outside a kernel (a script, a terminal IPython, a Dask worker) IPython
or ipykernel is not in ``sys.modules`` and both answers are None at the cost of a dictionary
look-up.

- The notebook is the path the kernel was told (``__session__``, set by ipykernel from
  ``JPY_SESSION_NAME``, which Jupyter servers and VS Code give notebook kernels), as given:
  usually absolute. The Jupyter server extension makes it relative to its root when it can.
- The cell is the ``cellId`` that JupyterLab and Notebook 7 put in the metadata of the
  execute request, read only on the kernel's main thread (the one running cells): elsewhere
  the kernel's "current" request is whichever cell runs at the moment, not the one that
  started the thread.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

__all__ = ["run_origin"]


def run_origin() -> tuple[str | None, str | None]:
    """(notebook path, cell id) of a run started now, on this thread; (None, None) outside
    a Jupyter kernel."""
    if "ipykernel" not in sys.modules:
        return None, None
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    if get_ipython is None:
        return None, None
    try:
        shell = get_ipython()
    except Exception:  # an IPython half torn down at exit: no origin, never an error
        return None, None
    if shell is None or getattr(shell, "kernel", None) is None:
        return None, None  # IPython without a kernel (a terminal)
    return _notebook(), _cell_id(shell)


def _notebook() -> str | None:
    main = sys.modules.get("__main__")
    session = getattr(main, "__session__", None) or os.environ.get("JPY_SESSION_NAME")
    return session if isinstance(session, str) and session else None


def _cell_id(shell: Any) -> str | None:
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        parent = shell.get_parent()
        cell_id = parent.get("metadata", {}).get("cellId")
    except Exception:  # an ipykernel without get_parent, or a request without metadata
        return None
    return cell_id if isinstance(cell_id, str) and cell_id else None
