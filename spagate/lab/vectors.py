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
