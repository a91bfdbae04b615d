"""The request handlers of ``{base_url}flowbook/api/``.

Every handler is a ``jupyter_server`` ``APIHandler`` and every method is
``@tornado.web.authenticated``: without the server's token (or a login) the answer is 403.
The store work runs on a thread of the event loop's executor, so a slow database never
blocks the server; the parameters are checked first, on the event loop.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.ioloop import IOLoop

from flowbook.jupyter.server import api

__all__ = ["API_PATH", "setup_handlers"]

API_PATH = "flowbook/api"
_SETTING = "flowbook_server_root"


class _FlowbookHandler(APIHandler):
    """Answers with the JSON of a store read done on a thread, or ``{"message": ...}``."""

    @property
    def server_root(self) -> str | None:
        root = self.settings.get(_SETTING)
        return root if isinstance(root, str) else None

    def error(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish(json.dumps({"message": message}))

    def arg(self, name: str) -> str | None:
        """A query parameter; an empty one counts as not given."""
        value = self.get_query_argument(name, None)
        return value or None

    async def answer(self, work: Callable[..., dict[str, Any]], *args: Any) -> None:
        from flowbook.store import StoreError

        try:
            body = await IOLoop.current().run_in_executor(None, functools.partial(work, *args))
        except api.ApiError as exc:
            self.error(exc.status, exc.message)
            return
        except StoreError as exc:
            self.log.warning("flowbook: the run store cannot be used: %s", exc)
            self.error(503, str(exc))
            return
        self.finish(json.dumps(body))


class RunsHandler(_FlowbookHandler):
    @web.authenticated
    async def get(self) -> None:
        try:
            limit = api.parse_limit(self.get_query_argument("limit", None))
            state = api.parse_state(self.arg("state"))
        except api.ApiError as exc:
            self.error(exc.status, exc.message)
            return
        await self.answer(api.run_list, self.arg("flow"), state, limit, self.server_root)


class RunHandler(_FlowbookHandler):
    @web.authenticated
    async def get(self, run_id: str) -> None:
        try:
            checked = api.parse_run_id(run_id)
        except api.ApiError as exc:
            self.error(exc.status, exc.message)
            return
        await self.answer(api.run_detail, checked, self.server_root)


class RunSnapshotHandler(_FlowbookHandler):
    @web.authenticated
    async def get(self, run_id: str) -> None:
        try:
            checked = api.parse_run_id(run_id)
        except api.ApiError as exc:
            self.error(exc.status, exc.message)
            return
        with_run = self.get_query_argument("run", "") not in ("", "0")
        await self.answer(api.run_snapshot, checked, with_run, self.server_root)


class ViewAssetHandler(_FlowbookHandler):
    """The run widget's renderer (``run_view.js``) and its CSS, for the panel to load."""

    @web.authenticated
    async def get(self, name: str) -> None:
        try:
            body, content_type = api.view_asset(name)
        except api.ApiError as exc:
            self.error(exc.status, exc.message)
            return
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-cache")
        self.finish(body)


class DiffHandler(_FlowbookHandler):
    @web.authenticated
    async def get(self) -> None:
        try:
            a, b = api.parse_diff(self.arg("a"), self.arg("b"))
        except api.ApiError as exc:
            self.error(exc.status, exc.message)
            return
        await self.answer(api.run_diff, a, b)


class FlowsHandler(_FlowbookHandler):
    @web.authenticated
    async def get(self) -> None:
        await self.answer(api.flow_list, self.arg("project"), self.server_root)


class CacheHandler(_FlowbookHandler):
    @web.authenticated
    async def get(self) -> None:
        await self.answer(api.cache_entries, self.arg("task"), self.arg("flow"))


class CacheClearHandler(_FlowbookHandler):
    @web.authenticated
    async def post(self) -> None:
        try:
            request = api.parse_clear(self.request.body)
        except api.ApiError as exc:
            self.error(exc.status, exc.message)
            return
        await self.answer(api.clear_cache, request)


def setup_handlers(serverapp: Any) -> None:
    """Add the handlers to the server's web application."""
    web_app = serverapp.web_app
    root = getattr(serverapp.contents_manager, "root_dir", None) or serverapp.root_dir
    web_app.settings[_SETTING] = os.path.abspath(os.path.expanduser(root)) if root else None
    base = url_path_join(web_app.settings["base_url"], API_PATH)
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "runs"), RunsHandler),
            (url_path_join(base, "runs", "([^/]+)"), RunHandler),
            (url_path_join(base, "runs", "([^/]+)", "snapshot"), RunSnapshotHandler),
            (url_path_join(base, "view", "([^/]+)"), ViewAssetHandler),
            (url_path_join(base, "diff"), DiffHandler),
            (url_path_join(base, "flows"), FlowsHandler),
            (url_path_join(base, "cache"), CacheHandler),
            (url_path_join(base, "cache", "clear"), CacheClearHandler),
        ],
    )
