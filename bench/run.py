"""`sudo make bench`: every benchmark script, one after the other, figures printed as they come.

Figures are ratios measured side by side within each script's own run; the machine is shared,
so compare ratios, not absolute numbers across runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = [
    ("verifier: packets/s on one core (valid, bad MAC, replay)", ["verifier.py"], False),
    ("XDP: ns per packet for each verdict path, allow map 1 .. 1M", ["xdp_paths.py"], True),
    ("XDP: in-kernel HMAC cost", ["xdp_hmac.py"], True),
    ("SPA latency: packet sent -> allow entry written", ["spa_latency.py"], True),
]


def main() -> int:
    failed = []
    for title, argv, root in SCRIPTS:
        print(f"\n=== {title}", flush=True)
        if root and os.geteuid() != 0:
            print("skipped: needs root (sudo make bench)")
            failed.append(title)
            continue
        t = time.monotonic()
        rc = subprocess.run([sys.executable, str(HERE / argv[0]), *argv[1:]]).returncode
        print(f"({time.monotonic() - t:.0f}s, exit {rc})", flush=True)
        if rc:
            failed.append(title)
    if failed:
        print("\nnot measured: " + "; ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
