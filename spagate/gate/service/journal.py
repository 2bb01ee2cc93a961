"""The daemon's log sink: one line per event, to the journal under systemd, else timestamped.

Never raises: a closed terminal, a dead pipe or a full disk must never stop the gate.
"""

from __future__ import annotations

import os
import sys
import time


def journal_emit(level: int, line: str) -> None:
    """One line per event: with a syslog priority prefix under systemd, a timestamp otherwise."""
    if os.environ.get("JOURNAL_STREAM"):
        out = f"<{level}>{line}\n"
    else:
        out = time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n"
    stream = sys.stderr if level <= 4 else sys.stdout
    try:
        stream.write(out)
        stream.flush()
    except (OSError, ValueError):  # a closed terminal or pipe must never stop the gate
        pass
