"""Task identity: what makes two task definitions "the same task" for caching.

A task's identity is its module and qualified name. For functions defined in ``__main__``
(a script, or a notebook cell) the module part is the script's path or the notebook's path
as the kernel reports it (Jupyter servers and VS Code set ``JPY_SESSION_NAME``, which the
kernel exposes as ``__session__``), never the cell's temporary file, so re-running a cell keeps
the identity and two notebooks with a function of the same name do not share entries. A kernel
that is not told its notebook (nbclient, ``jupyter execute``) falls back to its working
directory: notebooks in different folders stay apart; give such kernels ``JPY_SESSION_NAME``
to keep notebooks of one folder apart too. A script ``flowbook run`` imports (under the module
name ``flowbook.registry.RUN_MODULE_NAME``) is named by its path, as under ``python script.py``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["task_identity"]


def _main_identity() -> str:
    main = sys.modules.get("__main__")
    session = getattr(main, "__session__", None) or os.environ.get("JPY_SESSION_NAME")
    if isinstance(session, str) and session:
        return f"notebook:{session}"
    path = getattr(main, "__file__", None)
    if isinstance(path, str) and path and os.path.isfile(path):  # not "<stdin>"
        return f"script:{os.path.abspath(path)}"
    # A kernel not told its notebook (nbclient, `jupyter execute`): the working directory,
    # which such tools set to the notebook's folder, keeps other folders' notebooks apart.
    return f"__main__:{os.getcwd()}"


def _registered_script_identity(fn: Callable[..., Any]) -> str | None:
    """``script:<path>`` for a function of a script ``flowbook run`` imported: the identity
    ``python script.py`` gives it, so that both share cache entries."""
    path = getattr(fn, "__globals__", {}).get("__file__")
    if isinstance(path, str) and path:
        return f"script:{os.path.abspath(path)}"
    return None


def task_identity(fn: Callable[..., Any]) -> str:
    from flowbook.registry import RUN_MODULE_NAME

    module = getattr(fn, "__module__", None) or "?"
    if module == "__main__":
        module = _main_identity()
    elif module == RUN_MODULE_NAME:
        module = _registered_script_identity(fn) or module
    return f"{module}:{getattr(fn, '__qualname__', getattr(fn, '__name__', repr(fn)))}"
