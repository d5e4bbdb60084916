"""Progress lines for long loops (done/total, items/s, ETA) and the summary tables runs end with."""

from __future__ import annotations

import sys
import time
from typing import Sequence, TextIO


class Progress:
    """Prints `label done/total | rate unit/s | ETA` at most every `interval` seconds, and at the end."""

    def __init__(self, total: int, label: str, unit: str = "items", interval: float = 2.0,
                 stream: TextIO | None = None, already_done: int = 0) -> None:
        """`already_done`: steps done before this loop began (a resumed run), counted in done/total only."""
        self.total, self.label, self.unit, self.interval = total, label, unit, interval
        self.stream = stream or sys.stderr
        self.done = self.already_done = already_done
        self.items = 0
        self.start = time.perf_counter()
        self._last_print = -float("inf")

    def update(self, steps: int = 1, items: int = 0, note: str = "") -> None:
        """Record `steps` finished steps that processed `items` items; `note` (e.g. the losses) ends the line."""
        self.done += steps
        self.items += items
        now = time.perf_counter()
        if now - self._last_print >= self.interval or self.done >= self.total:
            self._last_print = now
            self.stream.write(self.line(now) + (f" | {note}" if note else "") + "\n")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.perf_counter()) - self.start, 1e-9)
        rate = self.items / elapsed
        progressed = self.done - self.already_done
        remaining = (self.total - self.done) * elapsed / progressed if progressed else float("nan")
        return (f"{self.label} {self.done}/{self.total} | {rate:,.0f} {self.unit}/s | "
                f"elapsed {elapsed:.1f}s | ETA {remaining:.1f}s")


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A right-aligned plain-text table with a rule under the header."""
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else str(value)
