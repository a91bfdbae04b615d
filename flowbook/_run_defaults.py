"""Defaults the settings give to runs that set nothing themselves, read by the engine.

Standard library only (the engine imports it); ``flowbook.settings`` writes these when the
settings are read or reloaded. A module global is read only on the path where a run has no
value of its own, so runs that set theirs pay nothing.
"""

from __future__ import annotations

# FLOWBOOK_LOGGING_LOG_PRINTS: for a top-level flow run, or a task run outside any flow run,
# whose flow or task leaves log_prints unset (nested runs inherit their parent's)
log_prints = False
