"""Where the captured test vectors live: $SPAGATE_VECTORS, else shared/vectors beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def vectors_dir(protocol: str) -> Path:
    """The directory of one protocol's vectors (sparoid, fwknop)."""
    base = os.environ.get("SPAGATE_VECTORS")
    root = Path(base) if base else REPO.parent / "shared" / "vectors"
    return root / protocol


def require(protocol: str, name: str) -> Path:
    """A file of the vectors, or a one-line failure saying where they were looked for."""
    path = vectors_dir(protocol) / name
    if not path.exists():
        raise FileNotFoundError(
            f"{protocol} test vectors not found at {path}: clone shared/ beside the repo or "
            f"set SPAGATE_VECTORS to the directory holding {protocol}/"
        )
    return path
