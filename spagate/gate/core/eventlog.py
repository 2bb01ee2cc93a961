"""The daemon's log: one line per accepted SPA, rejections summarised, flood-proof.

Pure bookkeeping: a clock and an `emit(level, line)` are injected. Accepted packets log one line
each, up to `accept_burst` per interval; the first rejection of each reason in an interval logs
one line with its source, the rest are counted and summed up in one line per interval. So a flood
of any size writes at most a few dozen lines a minute. Key material is never logged. A line may
be given as a callable: it is only formatted when it is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

Line = str | Callable[[], str]


def _text(line: Line) -> str:
    return line if isinstance(line, str) else line()


INFO, NOTICE, WARNING, ERR = 6, 5, 4, 3


class EventLog:
    def __init__(
        self,
        emit: Callable[[int, str], None],
        clock: Callable[[], float],
        interval_s: float = 10.0,
        accept_burst: int = 20,
    ):
        self._emit = emit
        self._clock = clock
        self.interval_s = interval_s
        self.accept_burst = accept_burst
        self._start = clock()
        self._accepts = 0
        self._accepts_dropped = 0
        self._rejects: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()

    def info(self, line: str) -> None:
        self._emit(INFO, line)

    def warning(self, line: str) -> None:
        self._emit(WARNING, line)

    def error(self, line: str) -> None:
        self._emit(ERR, line)

    def accepted(self, line: Line) -> None:
        self.tick()
        self.totals["accepted"] += 1
        if self._accepts < self.accept_burst:
            self._accepts += 1
            self._emit(NOTICE, _text(line))
        else:
            self._accepts_dropped += 1

    def rejected(self, reason: str, line: Line) -> None:
        self.tick()
        self.totals[reason] += 1
        first = reason not in self._rejects
        self._rejects[reason] += 1
        if first:
            self._emit(INFO, f"reject {reason} {_text(line)} (more of this reason are summed up)")

    def tick(self) -> None:
        """Close the interval once it is over: one summary line if anything was held back."""
        now = self._clock()
        if now - self._start < self.interval_s:
            return
        held_back = sum(self._rejects.values()) > len(self._rejects) or self._accepts_dropped
        if held_back:
            parts = []
            if self._rejects:
                parts.append(
                    "rejected " + " ".join(f"{r}={n}" for r, n in sorted(self._rejects.items()))
                )
            if self._accepts_dropped:
                parts.append(f"{self._accepts_dropped} accept lines not shown")
            self._emit(INFO, f"in the last {round(now - self._start)}s: " + "; ".join(parts))
        self._start = now
        self._accepts = self._accepts_dropped = 0
        self._rejects.clear()
