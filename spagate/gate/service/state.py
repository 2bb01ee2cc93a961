"""The state file: what a running daemon attached and its verdict counts, for `spagate status`.

/run/spagate/<pin dir name>.json, written atomically (temporary file, then rename).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

STATE_DIR = Path("/run/spagate")


def state_path(pin_dir: str | os.PathLike) -> Path:
    """Where a daemon using `pin_dir` says what it attached (read by `spagate status`)."""
    return STATE_DIR / (Path(pin_dir).name + ".json")


def write_state(pin_dir: str | os.PathLike, state: dict) -> None:
    """Replace the state file atomically; raises OSError (the caller decides what that means)."""
    path = state_path(pin_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(state))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_state(pin_dir: str | os.PathLike) -> None:
    state_path(pin_dir).unlink(missing_ok=True)


def read_state(pin_dir: str | os.PathLike) -> dict | None:
    try:
        state = json.loads(state_path(pin_dir).read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except (OSError, KeyError, ValueError):
        state["stale"] = True
    return state
