"""The names of Prefect's Dask integration (``prefect_dask``) under flowbook.

Code written for ``prefect_dask`` runs with the import renamed the way ``prefect`` is:
``from flowbook_dask import DaskTaskRunner, get_dask_client``. The runner and the client
helpers are flowbook's own (``flowbook.task_runners``); this package only gives them the
module names Prefect users already import. Dask itself is imported when a run needs it.
"""

from __future__ import annotations

from flowbook_dask.task_runners import DaskTaskRunner
from flowbook_dask.utils import get_async_dask_client, get_dask_client

__all__ = ["DaskTaskRunner", "get_async_dask_client", "get_dask_client"]
