"""Whether output may carry ANSI escapes: only to a terminal, never with NO_COLOR set
(https://no-color.org) or TERM=dumb. Help pages follow the same rule through rich."""

from __future__ import annotations

import os
from typing import TextIO


def colour_ok(stream: TextIO) -> bool:
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def bold(text: str, stream: TextIO) -> str:
    return f"\033[1m{text}\033[0m" if colour_ok(stream) else text
