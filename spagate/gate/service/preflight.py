"""Start-up checks that run before anything is loaded: capabilities and interfaces.

Each returns what it found or raises SpagateError with a one-line reason. No bpf, no bcc.
"""

from __future__ import annotations

import socket

from spagate.errors import SpagateError
from spagate.gate.service.account import CAP_BITS, LOADER_CAPS

# What loading, pinning and attaching need (the unit's ExecStartPre=+ runs the loader with them).
REQUIRED_CAPS = {name: CAP_BITS[name] for name in LOADER_CAPS}


def effective_capabilities(status: str | None = None) -> int:
    """CapEff of this process (or of a /proc/PID/status text) as a bit mask."""
    if status is None:
        with open("/proc/self/status") as f:
            status = f.read()
    return next((int(line.split()[1], 16) for line in status.splitlines()
                 if line.startswith("CapEff:")), 0)  # fmt: skip


def missing_capabilities(status: str | None = None, needed=LOADER_CAPS) -> list[str]:
    """Capabilities of `needed` (default: the loader's) this process does not have in effect."""
    eff = effective_capabilities(status)
    return [name for name in needed if not eff >> CAP_BITS[name] & 1]


def capability_names(mask: int) -> list[str]:
    """The names (of those spagate knows) set in a capability mask."""
    return [name for name, bit in CAP_BITS.items() if mask >> bit & 1]


def check_interfaces(names: tuple[str, ...]) -> dict[str, int]:
    if not names:
        raise SpagateError("no interface: name one (spagate attach eth0) or set 'interface ='")
    idx = {}
    for n in names:
        try:
            idx[n] = socket.if_nametoindex(n)
        except OSError:
            raise SpagateError(f"interface {n!r} does not exist") from None
    return idx
