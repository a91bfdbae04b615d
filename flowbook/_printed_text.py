"""Printed text cut into lines as a terminal shows them (the store's and the widget's).

A partial line is held as a list of pieces, bounded at ``MAX_LINE_CHARS`` (the rest is counted
and told as "(N characters cut)"); a carriage return starts the line again, so that a progress
bar redrawn ten thousand times is one line, its last drawing.
"""

from __future__ import annotations

__all__ = ["MAX_LINE_CHARS", "PartialLine", "split_writes"]

MAX_LINE_CHARS = 64 * 1024


class PartialLine:
    """A line not ended by a newline yet: its pieces, bounded, with a carriage return
    starting it again (what a terminal shows)."""

    __slots__ = ("began", "cut", "length", "limit", "pieces", "restart")

    def __init__(self, began: float, limit: int = MAX_LINE_CHARS) -> None:
        self.began = began
        self.limit = limit
        self.pieces: list[str] = []
        self.length = 0
        self.cut = 0
        self.restart = False

    def add(self, text: str) -> None:
        """Add text without a newline."""
        if not text:
            return
        if self.restart:  # the previous piece ended with a carriage return
            self._clear()
        self.restart = text.endswith("\r")
        at = text.rstrip("\r").rfind("\r")
        if at >= 0:  # the line starts again after its last carriage return
            text = text[at + 1 :]
            self._clear()
        room = self.limit - self.length
        if room <= 0:
            self.cut += len(text)
            return
        if len(text) > room:
            self.cut += len(text) - room
            text = text[:room]
        self.pieces.append(text)
        self.length += len(text)

    def _clear(self) -> None:
        self.pieces.clear()
        self.length = self.cut = 0

    def text(self) -> str:
        """The line as a terminal shows it (with a note of what was cut)."""
        line = "".join(self.pieces).rstrip("\r")
        at = line.rfind("\r")
        if at >= 0:
            line = line[at + 1 :]
        if self.cut:
            line += f" ... ({self.cut} characters cut)"
        return line


def split_writes(
    partial: PartialLine | None, text: str, ts: float
) -> tuple[list[tuple[str, float]], PartialLine | None]:
    """The whole lines ``text`` ends (with the time each began), and the partial line left."""
    lines: list[tuple[str, float]] = []
    pieces = text.split("\n")
    for piece in pieces[:-1]:
        if partial is None:
            partial = PartialLine(ts)
        partial.add(piece)
        lines.append((partial.text(), partial.began))
        partial = None
    rest = pieces[-1]
    if rest:
        if partial is None:
            partial = PartialLine(ts)
        partial.add(rest)
    return lines, partial
