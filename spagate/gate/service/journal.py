"""The daemon's log sink: one line per event, to the journal under systemd, else timestamped.

Never raises: a closed terminal, a dead pipe or a full disk must never stop the gate.
"""

from __future__ import annotations

import os
import sys
import time


def journal_emit(level: int, line: str) -> None:
    """One line per event: with a syslog priority prefix under systemd, a timestamp otherwise."""
    _write(level, line, stamp=True)


def json_emit(level: int, line: str) -> None:
    """A JSON line (it carries its own timestamp): with the priority prefix under systemd."""
    _write(level, line, stamp=False)


def event_log(fmt: str = "text", emit=None):
    """The gate's EventLog in the configured log-format, written here."""
    from spagate.gate.core.eventlog import EventLog

    if emit is None or (emit is journal_emit and fmt == "json"):
        emit = json_emit if fmt == "json" else journal_emit
    return EventLog(emit, time.monotonic, fmt=fmt, wall=time.time)


def _write(level: int, line: str, stamp: bool) -> None:
    if os.environ.get("JOURNAL_STREAM"):
        out = f"<{level}>{line}\n"
    elif stamp:
        out = time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n"
    else:
        out = line + "\n"
    stream = sys.stderr if level <= 4 else sys.stdout
    try:
        stream.write(out)
        stream.flush()
    except (OSError, ValueError):  # a closed terminal or pipe must never stop the gate
        pass
