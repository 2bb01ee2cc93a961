"""The gate's log: what happened, who sent it, and a bounded number of lines whatever arrives.

Pure bookkeeping: a clock, a wall clock (for JSON) and an `emit(level, line)` are injected.
Lines are text or one JSON object each (`log-format = text | json`). Per interval (10 s):

- an accept: one line each, up to accept_burst;
- a refusal of a MAC-valid packet (a key matched, so the sender holds a key or replays a
  packet of its holder): one line each with its source and identity, up to refuse_burst;
- any other refusal (junk: bad MAC, bucket, budget, replay duplicates, from kernel samples or
  the verifier): the first of each reason, with its source;
- what was held back: one summary line at the end of the interval that names, per reason,
  the top sources (and identities) by count.

So a flood of any size writes at most accept_burst + refuse_burst + one line per reason + one
summary per interval. The top sources come from a Space-Saving table of `top_k` entries per
reason: bounded memory under a random-source flood, and a source that sends more than a
1/top_k share of a reason's packets is always in it (its count may be over by the count of
the entry it replaced). Key material is never logged. A free-text line may be given as a
callable: it is only formatted when written.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

Line = str | Callable[[], str]

INFO, NOTICE, WARNING, ERR = 6, 5, 4, 3
LEVEL_NAMES = {ERR: "error", WARNING: "warning", NOTICE: "notice", INFO: "info"}
FORMATS = ("text", "json")
SHOW_TOP = 3  # sources named per reason in a summary line


class Event(Protocol):
    """An accept or a refusal (intake.Admit, intake.Refuse, samples.Sample)."""

    event: str
    reason: str

    def describe(self) -> str: ...
    def fields(self) -> dict: ...


def _text(line: Line) -> str:
    return line if isinstance(line, str) else line()


class TopK:
    """Space-Saving heavy hitters: at most k entries, counts never under the true count."""

    def __init__(self, k: int):
        self.k = k
        self.counts: dict[str, int] = {}

    def add(self, item: str, n: int = 1) -> None:
        c = self.counts
        if item in c:
            c[item] += n
        elif len(c) < self.k:
            c[item] = n
        else:
            victim = min(c, key=c.__getitem__)
            c[item] = c.pop(victim) + n

    def top(self, n: int) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


class EventLog:
    def __init__(
        self,
        emit: Callable[[int, str], None],
        clock: Callable[[], float],
        interval_s: float = 10.0,
        accept_burst: int = 20,
        refuse_burst: int = 50,
        fmt: str = "text",
        wall: Callable[[], float] = lambda: 0.0,
        top_k: int = 16,
    ):
        if fmt not in FORMATS:
            raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        self._emit, self._clock, self._wall = emit, clock, wall
        self.fmt = fmt
        self.interval_s = interval_s
        self.accept_burst, self.refuse_burst = accept_burst, refuse_burst
        self._top_k = top_k
        self._start = clock()
        self._accepts = self._accepts_hidden = 0
        self._refusals_shown = 0
        self._held: Counter[str] = Counter()  # reason -> refusals not written one by one
        self._seen: Counter[str] = Counter()  # reason -> refusals this interval
        self._sources: dict[str, TopK] = {}  # reason -> top sources of the held-back ones
        self.totals: Counter[str] = Counter()

    # -- writing ----------------------------------------------------------------------------

    def _write(self, level: int, event: str, msg: str, fields: dict | None = None) -> None:
        if self.fmt == "text":
            self._emit(level, msg)
            return
        wall = self._wall()
        obj = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall))
            + f".{int(wall * 1000) % 1000:03d}Z",
            "level": LEVEL_NAMES.get(level, str(level)),
            "event": event,
            **(fields or {}),
            "msg": msg,
        }
        self._emit(level, json.dumps(obj, separators=(",", ":")))

    def info(self, line: Line) -> None:
        self._write(INFO, "message", _text(line))

    def warning(self, line: Line) -> None:
        self._write(WARNING, "message", _text(line))

    def error(self, line: Line) -> None:
        self._write(ERR, "message", _text(line))

    # -- events -----------------------------------------------------------------------------

    def accepted(self, ev: Event) -> None:
        self.tick()
        self.totals["accepted"] += 1
        if self._accepts < self.accept_burst:
            self._accepts += 1
            self._write(NOTICE, "accept", ev.describe(), ev.fields())
        else:
            self._accepts_hidden += 1

    def refused(self, ev: Event) -> None:
        """A refusal: intake.Refuse (verifier, policy) or samples.Sample (kernel)."""
        self.tick()
        reason = ev.reason
        self.totals[reason] += 1
        self._seen[reason] += 1
        mac_valid = getattr(ev, "mac_valid", False)
        if mac_valid and self._refusals_shown < self.refuse_burst:
            self._refusals_shown += 1
            self._write(NOTICE, "refuse", ev.describe(), ev.fields())
            return
        if not mac_valid and self._seen[reason] == 1:
            self._write(
                INFO, "refuse", ev.describe() + " (more of this reason are summed up)",
                ev.fields(),
            )  # fmt: skip
            return
        self._held[reason] += 1
        who = str(ev.src)  # type: ignore[attr-defined]
        if mac_valid:
            who += f" identity={ev.fields()['identity']}"
        top = self._sources.get(reason)
        if top is None:
            top = self._sources[reason] = TopK(self._top_k)
        top.add(who)

    def tick(self) -> None:
        """Close the interval once it is over: one summary line if anything was held back."""
        now = self._clock()
        if now - self._start < self.interval_s:
            return
        if self._held or self._accepts_hidden:
            self._summary(round(now - self._start))
        self._start = now
        self._accepts = self._accepts_hidden = self._refusals_shown = 0
        self._held.clear()
        self._seen.clear()
        self._sources.clear()

    def _summary(self, seconds: int) -> None:
        parts, refused = [], {}
        for reason, held in sorted(self._held.items()):
            total = self._seen[reason]
            top = self._sources[reason].top(SHOW_TOP)
            named = ", ".join(f"{who} {n}" for who, n in top)
            rest = held - sum(n for _, n in top)
            more = f", {rest} from others" if rest > 0 else ""
            parts.append(f"{reason}={total} [{named}{more}]")
            refused[reason] = {"count": total, "top": [[who, n] for who, n in top]}
        text = f"in the last {seconds}s: refused " + " ".join(parts) if parts else ""
        if self._accepts_hidden:
            text = (text + "; " if text else f"in the last {seconds}s: ") + (
                f"{self._accepts_hidden} accept lines not shown"
            )
        self._write(INFO, "summary", text, {
            "interval_s": seconds, "refused": refused,
            "accepts_not_shown": self._accepts_hidden,
        })  # fmt: skip
