"""A cached task for 04_caching.ipynb, imported there and by a separate Python process.

A task's cache identity is its module and name (here ``caching_tasks:slow_sum``) plus its
source, so every process that imports this module looks up the same cache entries.
"""

import time
from datetime import timedelta

from flowbook import flow, task
from flowbook.tasks import task_input_hash


@task(cache_key_fn=task_input_hash, cache_expiration=timedelta(days=1))
def slow_sum(n: int) -> int:
    time.sleep(1)  # stands in for a slow query
    return sum(range(n + 1))


@flow
def report(n: int) -> int:
    return slow_sum(n)
