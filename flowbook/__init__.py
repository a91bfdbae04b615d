"""flowbook: a Jupyter-native workflow orchestrator with the Prefect flow/task API.

``import flowbook`` loads the engine only: no Jupyter, Dask, SQL, pydantic or asyncio. Options
are validated with pydantic when a flow or task is first decorated; ``flowbook.context`` and
Prefect 1's ``Parameter`` (with the functional API) are imported when first asked for.
"""

from typing import TYPE_CHECKING, Any

from flowbook._annotations import allow_failure
from flowbook._tags import tags
from flowbook.flows import Flow, flow
from flowbook.futures import FutureList, TaskRunFuture, as_completed, wait
from flowbook.logging import get_run_logger
from flowbook.states import State, StateType
from flowbook.tasks import Task, task, unmapped

if TYPE_CHECKING:
    from flowbook import context
    from flowbook.functional import Parameter

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """The public names imported on first use: ``flowbook.context`` and ``Parameter``."""
    if name == "context":
        import flowbook.context

        return flowbook.context
    if name == "Parameter":
        from flowbook.functional import Parameter

        globals()["Parameter"] = Parameter  # the next look-up is a plain attribute
        return Parameter
    raise AttributeError(f"module 'flowbook' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext flowbook``: run widgets, output routing, ``%%flow`` and ``%flowbook``."""
    from flowbook.jupyter.extension import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from flowbook.jupyter.extension import unload

    unload(ipython)


__all__ = [
    "Flow",
    "FutureList",
    "Parameter",
    "State",
    "StateType",
    "Task",
    "TaskRunFuture",
    "__version__",
    "allow_failure",
    "as_completed",
    "context",
    "flow",
    "get_run_logger",
    "load_ipython_extension",
    "tags",
    "task",
    "unload_ipython_extension",
    "unmapped",
    "wait",
]
