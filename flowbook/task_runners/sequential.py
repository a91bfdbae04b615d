"""SequentialTaskRunner: submitted task runs execute immediately, one at a time, in order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowbook.task_runners.base import SubmittedCall, TaskRunner

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["SequentialTaskRunner"]


class SequentialTaskRunner(TaskRunner):
    """Runs each submitted task run at once on the submitting thread.

    ``.submit()`` returns an already-final future, so the flow reads as if the calls were
    plain function calls, while each task run is still recorded with its states.
    """

    def duplicate(self) -> Self:
        return type(self)()

    def submit(self, call: SubmittedCall) -> None:
        # On the submitting thread, as a call: a Ctrl-C in the task's body reaches the flow's
        # body, which stops there, as it does when the task is called.
        if all(f.done() for f in call.upstream):
            call.run_as_call()
        else:  # (futures of another runner: run by the thread that ends the last one)
            super().submit(call)

    def _execute(self, call: SubmittedCall) -> None:
        call.run()
