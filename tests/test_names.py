"""Random run names."""

from __future__ import annotations

import re

from flowbook.names import ADJECTIVES, ANIMALS, generate_run_name


def test_name_format() -> None:
    for _ in range(500):
        assert re.fullmatch(r"[a-z]+-[a-z]+", generate_run_name())


def test_names_vary() -> None:
    names = [generate_run_name() for _ in range(200)]
    assert len(set(names)) > 150
    assert len({name.split("-")[0] for name in names}) > 50
    assert len({name.split("-")[1] for name in names}) > 50


def test_word_lists() -> None:
    for words in (ADJECTIVES, ANIMALS):
        assert len(words) >= 150
        assert len(set(words)) == len(words)
        assert all(re.fullmatch(r"[a-z]+", word) for word in words)
