"""Registering a flow (Prefect 1's ``flow.register``) and loading it again to run it.

Prefect 1 sent a registered flow to its server, and an agent ran it later in a new process.
flowbook has no server: registering writes the flow's description to the run store (the
``flows`` table), and ``flowbook run`` is the new process: it imports the script the flow was
registered from and runs the flow there (``load_registered_flow``).

A flow's id is a hash of its name and project, so registering it again keeps its id. Its
version is 1 at the first registration and goes up by one only when its fingerprint changes:
a functional flow's ``fingerprint()`` (graph, parameters and the tasks' code), or for a
``@flow`` the hash of its function's source and of the user's code it calls (its tasks
included, ``flowbook.caching.dependencies``). Registering unchanged code twice keeps the
version.

While ``flowbook run`` imports a script, the script's own ``flow.register(...)`` call does not
register again and prints nothing (``loading_registered``): the flow is being run, not
deployed.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import runpy
import sys
import time
import types
import uuid
import warnings
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowbook.store.queries import RegisteredFlow
    from flowbook.store.store import Store

__all__ = ["flow_id", "load_registered_flow", "loading_registered", "register_flow"]

# a fixed namespace for the ids of registered flows (uuid5 of the project and the name)
_NAMESPACE = uuid.UUID("8d3c2f57-41d4-4f0b-9a53-6f1c0e5b7a21")
# the __name__ a registered script is imported under by `flowbook run`: not "__main__", so
# that its `if __name__ == "__main__":` block does not run
RUN_MODULE_NAME = "__flowbook_registered__"

_loading: ContextVar[bool] = ContextVar("flowbook_loading_registered", default=False)

# Prefect 1 arguments of Flow.register that mean nothing without a server, with their defaults:
# a different value is accepted with a warning naming it
_NO_EFFECT = {
    "idempotency_key": (None, "registering unchanged code already keeps the version"),
    "set_schedule_active": (True, "flowbook has no scheduler"),
    "version_group_id": (None, "a flow's versions are grouped by its name and project"),
    "build": (True, "the flow is loaded from its script; there is no storage to build"),
}


def flow_id(name: str, project: str | None) -> str:
    """The id of flow ``name`` in ``project``: the same at every registration."""
    return str(uuid.uuid5(_NAMESPACE, f"{project or ''}\0{name}"))


@contextlib.contextmanager
def loading_registered() -> Iterator[None]:
    """While a registered flow's script is imported to run it: ``register`` does nothing."""
    token = _loading.set(True)
    try:
        yield
    finally:
        _loading.reset(token)


def register_flow(
    flow: Any,
    project_name: str | None = None,
    labels: Iterable[str] | None = None,
    idempotency_key: str | None = None,
    set_schedule_active: bool = True,
    version_group_id: str | None = None,
    no_url: bool = False,
    build: bool = True,
) -> str:
    """Record ``flow`` in the run store under ``project_name``; returns the flow's id.

    Prints what Prefect 1 printed (with the store's location where Prefect 1 gave the flow's
    URL; ``no_url=True`` leaves that line out). Without ``project_name`` the flow's own
    ``project`` (``@flow(project=...)``) is used. Sets ``flow.project`` once the flow is saved.
    """
    if project_name is not None and (not isinstance(project_name, str) or not project_name.strip()):
        raise ValueError(
            f"project_name={project_name!r} is not a project name; give a non-empty string "
            "such as project_name='tutorial' (or leave it out)"
        )
    from flowbook.run_configs import _check_labels  # the run configs' rule for labels

    label_list = _check_labels("register", labels)
    given = {
        "idempotency_key": idempotency_key,
        "set_schedule_active": set_schedule_active,
        "version_group_id": version_group_id,
        "build": build,
    }
    for option, value in given.items():
        default, why = _NO_EFFECT[option]
        if value != default:
            warnings.warn(
                f"register({option}={value!r}) has no effect in flowbook ({why}); it is ignored",
                UserWarning,
                stacklevel=caller_stacklevel(),
            )
    if project_name is None:  # @flow(project=...) names the project a flow belongs to
        project_name = getattr(flow, "project", None)
    fid = flow_id(flow.name, project_name)
    if _loading.get():
        flow.project = project_name
        return fid

    from flowbook._setup import ensure_configured
    from flowbook.store import StoreError, get_store

    ensure_configured()
    store = get_store()
    if store is None:
        raise StoreError(
            f"flow {flow.name!r} cannot be registered: the run store is off "
            "(FLOWBOOK_STORE=off); registering records the flow in the store"
        )
    run_config = getattr(flow, "run_config", None)
    executor = getattr(flow, "executor", None)
    all_labels = sorted(set(label_list) | set(getattr(run_config, "labels", None) or ()))
    script, notebook, cell_id, code = _where(flow)
    row = {
        "id": fid,
        "name": flow.name,
        "project": project_name,
        "fingerprint": fingerprint(flow),
        "script": script,
        "notebook": notebook,
        "cell_id": cell_id,
        "code": code,
        "parameters": json.dumps(describe_parameters(flow)),
        "run_config": _describe(run_config),
        "executor": _describe(executor),
        "labels": json.dumps(all_labels),
        "registered_at": time.time(),
    }
    version, changed = _save(store, row)
    flow.project = project_name
    _print_registration(store, fid, project_name, all_labels, version, changed, no_url)
    return fid


def caller_stacklevel() -> int:
    """The stack level of the first frame outside flowbook, as ``warnings.warn`` counts it
    from the function calling this one (cache_policies warns with it too)."""
    frame: types.FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and _is_flowbook(frame.f_globals.get("__name__")):
        frame = frame.f_back
        level += 1
    return level


def _is_flowbook(module: object) -> bool:
    return isinstance(module, str) and (module == "flowbook" or module.startswith("flowbook."))


def _describe(obj: Any) -> str | None:
    if obj is None:
        return None
    describe = getattr(obj, "describe", None)
    data = describe() if callable(describe) else {"type": type(obj).__name__}
    return json.dumps(data, default=repr)


def describe_parameters(flow: Any) -> list[dict[str, Any]]:
    """The flow's parameters with their defaults, as JSON-able dictionaries, sorted by name.

    A default that JSON cannot hold is kept as its ``repr`` (``jsonable`` false): ``flowbook
    run`` then needs a value for it.
    """
    params: list[tuple[str, bool, Any]] = []
    if callable(getattr(flow, "parameters", None)):  # a functional flow
        for p in flow.parameters():
            params.append((p.name, bool(p.required), None if p.required else p.default))
    else:
        for p in flow.signature.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            required = p.default is inspect.Parameter.empty
            params.append((p.name, required, None if required else p.default))
    described = []
    for name, required, default in sorted(params, key=lambda p: p[0]):
        entry: dict[str, Any] = {"name": name, "required": required}
        if not required:
            try:
                json.dumps(default, allow_nan=False)
                entry.update(default=default, jsonable=True)
            except (TypeError, ValueError):
                entry.update(default=None, jsonable=False)
            entry["repr"] = repr(default)
        described.append(entry)
    return described


def fingerprint(flow: Any) -> str:
    """A hash of the flow's code: equal for unchanged code, in any process."""
    own = getattr(flow, "fingerprint", None)
    if callable(own):
        return str(own())
    from flowbook.caching.dependencies import code_identity

    identity = code_identity(flow.fn)
    # the helpers' hashes without their names: those carry the module's name, which differs
    # between `python script.py` (__main__), an import, and `flowbook run`
    parts = [flow.name, identity.source]
    parts += sorted(value for _, value in identity.helpers)
    parts += [f"{name}={value}" for name, value in identity.closure]
    text = "\n".join(parts)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _where(flow: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """(script, notebook, cell id, code) of the code registering the flow."""
    from flowbook._origin import run_origin

    notebook, cell_id = run_origin()
    if notebook is not None:
        return None, notebook, cell_id, _cell_code()
    path = _caller_file()
    # a cell's code has no file (IPython names it "<ipython-input-…>" or a path under the
    # kernel's temporary directory that is never written)
    code = _cell_code() if path is None or not os.path.isfile(path) else None
    if code is not None:
        # a kernel or IPython shell that does not know its notebook: recorded with the
        # cell's code; `flowbook run` cannot load it (as for a notebook's) and says so
        return None, None, None, code
    if path is None or not os.path.isfile(path):
        raise ValueError(
            f"flow {flow.name!r} is registered from {path or 'code without a file'!r}, which "
            "`flowbook run` could not load again; register it from a Python script "
            "(python my_flow.py) or from a notebook"
        )
    path = os.path.abspath(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        return path, None, None, f.read()


def _caller_file() -> str | None:
    """The file of the first frame outside flowbook: the code calling ``register``."""
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None and _is_flowbook(frame.f_globals.get("__name__")):
        frame = frame.f_back
    if frame is None:
        return None
    filename = frame.f_code.co_filename
    return None if filename.startswith("<") else filename


def _cell_code() -> str | None:
    """The code of the cell being run in a kernel (best effort: None when unknown)."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
        code = shell.get_parent()["content"]["code"] if shell is not None else None
    except Exception:  # a kernel without get_parent, or a request without code
        return None
    return code if isinstance(code, str) else None


def _save(store: Store, row: dict[str, Any]) -> tuple[int, bool]:
    """Insert or update the flow's row; (its version, whether the version is new).

    The version goes up in the database (``version + 1`` where the fingerprint differs), not
    from a value read before: two processes registering at once cannot both write N + 1.
    """
    from sqlalchemy import select, update
    from sqlalchemy.exc import IntegrityError

    from flowbook.store.schema import flows

    this = flows.c.id == row["id"]
    for attempt in range(2):
        try:
            with store.engine.begin() as conn:
                bumped = conn.execute(
                    update(flows)
                    .where(this, flows.c.fingerprint != row["fingerprint"])
                    .values(**row, version=flows.c.version + 1)
                ).rowcount
                if not bumped:
                    kept = conn.execute(update(flows).where(this).values(**row)).rowcount
                    if not kept:
                        conn.execute(flows.insert().values(**row, version=1))
                        return 1, True
                version = conn.execute(select(flows.c.version).where(this)).scalar_one()
                return int(version), bool(bumped)
        except IntegrityError:
            if attempt:  # another process inserted the row meanwhile: update it now
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _print_registration(
    store: Store,
    fid: str,
    project: str | None,
    labels: list[str],
    version: int,
    changed: bool,
    no_url: bool,
) -> None:
    from flowbook.store.database import location

    if not no_url:
        # no server, so no URL: the flow is in the run store
        print(f"Flow URL: none (no server); registered in the run store {location(store.url)}")
    print(f" └── ID: {fid}")
    print(f" └── Project: {project}")
    print(f" └── Labels: {labels}")
    print(f" └── Version: {version}{'' if changed else ' (unchanged)'}")


# -- flowbook run ---------------------------------------------------------------------------------


class LoadError(Exception):
    """A registered flow cannot be loaded again; the message says why and what to do."""


def load_registered_flow(registered: RegisteredFlow) -> Any:
    """Import the script ``registered`` came from and return the flow object it defines.

    The script runs under the module name ``RUN_MODULE_NAME`` (its ``__main__`` block does
    not run), with its directory first on ``sys.path`` and ``sys.argv`` as ``python
    script.py`` would have them, and with ``register`` calls doing nothing.
    """
    label = _label(registered)
    if registered.notebook is not None:
        raise LoadError(
            f"{label} was registered from the notebook {registered.where}; `flowbook run` runs "
            "flows registered from scripts: run it in the notebook (flow.run(), or call the "
            "flow), or save the notebook as a script (jupyter nbconvert --to script), run "
            "that script once to register the flow from it, then `flowbook run` it"
        )
    path = registered.script
    if path is None:
        raise LoadError(
            f"{label} was registered from an IPython session with no notebook or script file "
            "known; `flowbook run` runs flows registered from scripts: run it where it was "
            "defined (flow.run(), or call the flow), or register it from a Python script"
        )
    if not os.path.isfile(path):
        raise LoadError(
            f"{label} was registered from the script {path!r}, which no longer exists; "
            "register it again from where it is now"
        )
    directory = os.path.dirname(path)
    sys.path.insert(0, directory)
    # the script sees the command line `python script.py` would have given it
    argv = sys.argv
    sys.argv = [path]
    try:
        with loading_registered():
            namespace = runpy.run_path(path, run_name=RUN_MODULE_NAME)
    except SystemExit as exc:
        raise LoadError(
            f"the script {path} exited ({exc.code!r}) while {label} was loaded"
        ) from None
    except Exception as exc:  # the script's own error: named, in one line
        raise LoadError(
            f"the script {path} raised {type(exc).__name__}: {exc} while {label} was loaded; "
            f"run python {path} to see where"
        ) from exc
    finally:
        sys.argv = argv
        with contextlib.suppress(ValueError):
            sys.path.remove(directory)
    from flowbook.flows import Flow

    for value in namespace.values():
        if isinstance(value, Flow) and value.name == registered.name:
            return value
    raise LoadError(
        f"the script {path} no longer defines {label}; register it again, or give the flow "
        f"its name back"
    )


def _label(registered: RegisteredFlow) -> str:
    project = f" of project {registered.project!r}" if registered.project is not None else ""
    return f"flow {registered.name!r}{project}"
