"""The state-hook decorators that flows and tasks share (``@my_flow.on_failure``).

A class using ``HookMethods`` names its kind (``"flow"``, ``"task"``, for messages) and its
hook options; it keeps each option's hooks in ``<option>_hooks`` and its given options in
``_options``. ``_state_hooks`` is what the lifecycle calls (``flowbook.engine.hooks``), None
when there are no hooks at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

__all__ = ["HookMethods"]


class HookMethods:
    _hook_kind: ClassVar[str]
    _hook_options: ClassVar[tuple[str, ...]]
    _options: dict[str, Any]
    _state_hooks: Any = None  # (for objects made without __init__)

    def on_completion(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Add ``fn(flow or task, its run, state)`` to the hooks of a run's ``Completed``
        state."""
        return self._add_hook("on_completion", fn)

    def on_failure(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Add ``fn(flow or task, its run, state)`` to the hooks of a run's ``Failed`` state."""
        return self._add_hook("on_failure", fn)

    def on_running(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Add ``fn(flow or task, its run, state)`` to the hooks of each attempt's start."""
        return self._add_hook("on_running", fn)

    def _hooks(self, option: str) -> list[Callable[..., Any]]:
        hooks: list[Callable[..., Any]] = getattr(self, f"{option}_hooks")
        return hooks

    def _add_hook(self, option: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        from flowbook.engine.hooks import check_hooks

        check_hooks(self._hook_kind, option, [fn])
        hooks = self._hooks(option)
        hooks.append(fn)
        self._options[option] = list(hooks)  # with_options copies keep it
        self._hooks_changed()
        return fn

    def _copy_hooks(self) -> None:
        """Give this object (a shallow copy) hook lists and options of its own."""
        self._options = dict(self._options)
        for option in self._hook_options:
            setattr(self, f"{option}_hooks", list(self._hooks(option)))

    def _hooks_changed(self) -> None:
        from flowbook.engine.hooks import StateHooks

        self._state_hooks = StateHooks.build(
            {option: self._hooks(option) for option in self._hook_options}
        )
