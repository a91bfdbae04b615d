"""The ``store`` fixture of the store tests (``store_under_test.py``); a module that defines
its own ``store`` fixture uses that one instead."""

from store_under_test import store

__all__ = ["store"]
