"""Previews of values in records and displays: short, safe, and telling the value."""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import pathlib
import uuid

from flowbook._preview import pairs_preview, parameters_preview, preview


class Colour(enum.Enum):
    RED = 1


class LoudRepr(datetime.date):
    def __repr__(self) -> str:  # a subclass's own __repr__ is never called
        raise AssertionError("called")


class Frame:
    shape = (3, 2)

    def __repr__(self) -> str:
        raise AssertionError("called")


def test_standard_library_values_show_their_value() -> None:
    assert preview(datetime.date(2026, 1, 2)) == "datetime.date(2026, 1, 2)"
    assert preview(datetime.datetime(2026, 1, 2, 3, 4)) == "datetime.datetime(2026, 1, 2, 3, 4)"
    assert preview(datetime.timedelta(seconds=5)) == "datetime.timedelta(seconds=5)"
    assert preview(decimal.Decimal("1.5")) == "Decimal('1.5')"
    assert preview(pathlib.PurePosixPath("/tmp/x")) == "PurePosixPath('/tmp/x')"
    assert preview(Colour.RED) == "<Colour.RED: 1>"
    assert preview(uuid.UUID(int=5)) == "UUID('00000000-0000-0000-0000-000000000005')"


def test_long_values_are_cut_and_other_objects_show_their_type() -> None:
    long = preview(pathlib.PurePosixPath("/x" * 100))
    assert len(long) == 79
    assert "..." in long
    assert long.startswith("PurePosixPath('/x/x")
    assert preview(LoudRepr(2026, 1, 2)) == f"<{__name__}.LoudRepr>"
    assert preview(Frame()) == f"<{__name__}.Frame shape=(3, 2)>"
    assert "..." in preview("y" * 200)
    assert len(preview("y" * 200)) < 90


def test_parameters_preview_is_json_of_previews() -> None:
    params = {"day": datetime.date(2026, 1, 2), "n": 3, "name": 'a "quoted" é'}
    text = parameters_preview(params)
    assert json.loads(text) == {
        "day": "datetime.date(2026, 1, 2)",
        "n": "3",
        "name": repr('a "quoted" é'),
    }
    assert pairs_preview(params.items()) == text
