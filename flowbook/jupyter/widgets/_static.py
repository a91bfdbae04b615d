"""The widgets' front-end files, given to anywidget as their text.

anywidget turns a *path* given as ``_esm`` or ``_css`` into a watched file, and every widget
made from the class then connects a callback holding the widget to that file's "changed"
signal, which lives as long as the class: no widget would ever be freed, not even a closed
one. Given as text, there is nothing to watch and a closed widget goes. With
``ANYWIDGET_HMR=1`` (anywidget's hot reloading, when working on the front end) the path is
given instead, as anywidget expects.
"""

from __future__ import annotations

import os
import pathlib

STATIC = pathlib.Path(__file__).parent / "static"


def static(name: str) -> str | pathlib.Path:
    """The front-end file ``static/<name>``: its text, or its path under ``ANYWIDGET_HMR``."""
    path = STATIC / name
    if os.environ.get("ANYWIDGET_HMR") == "1":
        return path
    return path.read_text(encoding="utf-8")
