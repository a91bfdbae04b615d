"""Normalised function source: layout and comments do not count, code does."""

from __future__ import annotations

import io
import itertools
import linecache
import textwrap
from typing import Any

from flowbook.caching.source import normalized_source, source_hash

_cells = itertools.count(1)


def run_cell(source: str, name: str = "f") -> Any:
    """Define a function the way a notebook does: source kept in linecache, module __main__."""
    source = textwrap.dedent(source)
    filename = f"<notebook-cell-{next(_cells)}>"
    lines = io.StringIO(source).readlines()  # split on "\n" only, as a file read would be
    linecache.cache[filename] = (len(source), None, lines, filename)
    namespace: dict[str, Any] = {"__name__": "__main__", "deco": lambda fn: fn}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]


def run_without_source(source: str, name: str = "f") -> Any:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(textwrap.dedent(source), namespace)
    return namespace[name]


PLAIN = """
def f(x, y=2):
    total = x + y
    return total * 2
"""


def test_layout_and_comments_do_not_count() -> None:
    noisy = """
    # a comment above


    def f(x, y=2):   # why y defaults to 2
        # explain the sum

        total = x + y<pad>

        return total * 2  # doubled
    """.replace("<pad>", "      ")
    assert normalized_source(run_cell(noisy)) == normalized_source(run_cell(PLAIN))
    assert source_hash(run_cell(noisy)) == source_hash(run_cell(PLAIN))


def test_normalised_text() -> None:
    source = '''
    @deco
    def f(x):  # note
        """Doc with # hash.

        Second paragraph.
        """

        s = "# kept"<pad>
        return s
    '''.replace("<pad>", "   ")
    assert normalized_source(run_cell(source)) == (
        "def f(x):\n"
        '    """Doc with # hash.\n'
        "\n"
        "    Second paragraph.\n"
        '    """\n'
        '    s = "# kept"\n'
        "    return s"
    )


def test_body_edits_count() -> None:
    edited = PLAIN.replace("total * 2", "total * 3")
    renamed = PLAIN.replace("y=2", "y=3")
    hashes = {source_hash(run_cell(text)) for text in (PLAIN, edited, renamed)}
    assert len(hashes) == 3


def test_docstrings_are_code() -> None:
    one = 'def f():\n    """One."""\n    return 1\n'
    two = 'def f():\n    """Two."""\n    return 1\n'
    assert source_hash(run_cell(one)) != source_hash(run_cell(two))


def test_decorator_lines_are_dropped() -> None:
    decorated = """
    @deco
    @deco(  # a comment inside a decorator call
    ) if False else deco
    def f(x, y=2):
        total = x + y
        return total * 2
    """
    assert normalized_source(run_cell(decorated)) == normalized_source(run_cell(PLAIN))


def test_inner_decorators_are_kept() -> None:
    inner = """
    def f():
        @deco
        def g():
            return 1
        return g
    """
    assert "@deco" in normalized_source(run_cell(inner))


def test_methods_are_dedented() -> None:
    source = """
    class Model:
        @staticmethod
        def f(x):
            # scale it
            return x * 10
    """
    method = run_cell(source, "Model").f
    assert normalized_source(method) == "def f(x):\n    return x * 10"


def test_unchanged_cell_rerun_gives_the_same_hash() -> None:
    first = run_cell(PLAIN)
    rerun = run_cell(PLAIN)
    assert first is not rerun
    assert first.__code__.co_filename != rerun.__code__.co_filename
    assert source_hash(first) == source_hash(rerun)


def test_function_without_source_is_hashed_from_its_code() -> None:
    first = run_without_source(PLAIN)
    shifted = run_without_source("\n\n\n" + PLAIN)
    edited = run_without_source(PLAIN.replace("total * 2", "total * 3"))
    text = normalized_source(first)
    assert text.startswith("code f args=2,0,0")
    assert "<string>" not in text
    assert normalized_source(shifted) == text
    assert source_hash(shifted) == source_hash(first)
    assert source_hash(edited) != source_hash(first)


def test_code_text_of_nested_functions_and_set_constants() -> None:
    source = """
    def f(word):
        def inner(x):
            return x in {"alpha", "beta", "gamma"}
        return inner(word)
    """
    one = normalized_source(run_without_source(source))
    assert "  code inner args=1,0,0" in one
    assert "const frozenset({'alpha', 'beta', 'gamma'})" in one
    changed = source.replace('"gamma"', '"delta"')
    assert source_hash(run_without_source(changed)) != source_hash(run_without_source(source))


def test_builtins_have_a_fixed_text() -> None:
    assert normalized_source(len) == "<no source: builtins.len>"
    assert source_hash(len) == source_hash(len)


def test_memo_follows_code_replacement() -> None:
    fn = run_cell(PLAIN)
    before = source_hash(fn)
    assert source_hash(fn) == before
    fn.__code__ = run_cell("def f(x, y=2):\n    return x - y\n").__code__
    assert source_hash(fn) != before
    assert source_hash(fn) == source_hash(run_cell("def f(x, y=2):\n    return x - y\n"))


def test_module_function_source() -> None:
    assert normalized_source(run_cell).startswith(
        'def run_cell(source: str, name: str = "f") -> Any:'
    )


def test_unusual_line_breaks_inside_strings() -> None:
    source = 'def f():\n    x = "a\u2028b\x0cc"  # note\n\n    return x\n'
    assert normalized_source(run_cell(source)) == 'def f():\n    x = "a\u2028b\x0cc"\n    return x'
