"""Information about the current run: ``from flowbook.runtime import flow_run, task_run``.

Attributes are read when accessed (``flow_run.name`` inside a run-name function gives the
run being named). Outside a run they are ``None`` (ids, names), ``{}`` (parameters), ``()``
(tags) or ``0`` (run_count). ``deployment`` is there for Prefect code: flowbook has no
deployments, so its ``id``, ``name`` and ``version`` are ``None``.
"""

from flowbook.runtime import deployment, flow_run, task_run

__all__ = ["deployment", "flow_run", "task_run"]
