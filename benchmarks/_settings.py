"""What flowbook's one-process measurements (memory.py, breakdown.py) run with, in words.

``defaults``: flowbook's defaults (logging at INFO, the console printing every run line to
stderr, which goes to a file) on a copy of the grown store (grow_store.py); ``fresh``: logging
at WARNING and a fresh, empty ``FLOWBOOK_HOME``. Both scripts record ``describe()``'s object as
``"settings"`` in their JSON, and report.py prints its ``text``.
"""

import json
import os
import shutil
import subprocess

CHOICES = ("defaults", "fresh")


def grown_manifest(grown_store):
    with open(os.path.join(grown_store, "manifest.json")) as f:
        return json.load(f)


def describe(name, grown_store=None):
    """{"name", "logging", "console", "home", "text"} for settings NAME."""
    if name == "fresh":
        return {
            "name": "fresh",
            "logging": "WARNING",
            "console": "no run lines (WARNING)",
            "home": "a fresh, empty FLOWBOOK_HOME",
            "text": "fresh home: WARNING, a fresh empty FLOWBOOK_HOME",
        }
    m = grown_manifest(grown_store)
    home = (
        f"a copy of the grown store ({m['task_runs']:,} task runs, "
        f"{m['file_size_bytes'] / 1e6:,.0f} MB)"
    )
    return {
        "name": "defaults",
        "logging": "INFO",
        "console": "on, stderr to a file",
        "home": home,
        "task_runs_in_home": m["task_runs"],
        "text": f"defaults: INFO, console on (stderr to a file), FLOWBOOK_HOME {home}",
    }


def copy_grown(grown_store, dest):
    """A fresh copy of the grown store at DEST, synced to disk (never the original itself)."""
    if os.path.realpath(dest) == os.path.realpath(grown_store):
        raise ValueError("the grown store is copied, never written to")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(grown_store, dest)
    subprocess.run(["sync", os.path.join(dest, "flowbook.db")], check=False)
    return dest
