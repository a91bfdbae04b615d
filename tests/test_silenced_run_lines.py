"""Inside ``disable_run_logger()`` a run tells nothing: not its loggers' records, nor the
engine's lines ("Created flow run", "Finished in state ...", a failure's traceback) on the
console or in the store. Outside it, the same flow tells them again."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from flowbook import flow, task
from flowbook.logging import disable_run_logger
from flowbook.store import get_store


@task
def explode() -> None:
    raise ValueError("bad input 7")


@task
def fine() -> int:
    return 1


@flow
def quiet() -> int:
    explode.submit().wait()
    return fine()


def _stored_messages() -> list[str]:
    """The stored lines that tell of ``explode``'s failure (of any run of this test)."""
    store = get_store()
    assert store is not None
    assert store.writer.flush()
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT message FROM logs WHERE message LIKE '%bad input 7%'"))
        return [m for (m,) in rows]


def test_runs_inside_disable_run_logger_print_and_store_no_engine_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = _stored_messages()
    with disable_run_logger():
        assert quiet() == 1
    err = capsys.readouterr().err
    assert "Created flow run" not in err
    assert "Finished in state" not in err
    assert "bad input 7" not in err
    assert _stored_messages() == before

    # outside it, the same flow's lines are back
    assert quiet() == 1
    err = capsys.readouterr().err
    assert "Created flow run" in err
    assert "Task run 'explode-0' - Finished in state Failed(" in err
    # the failure line is stored; its "Finished in state Failed(...)" line is told from the
    # state row when the run is read back (and so is not silenced there: docs/behaviour.md)
    added = _stored_messages()[len(before) :]
    assert len(added) == 1
    assert added[0].startswith("Task run failed with exception: ValueError('bad input 7')")
