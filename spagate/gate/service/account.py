"""The gate's roles and what each may hold: the root loader and monitor, the unprivileged worker.

loader   root, one-shot: compiles (bcc), pins, attaches, configures the maps, exits
worker   the `spagate` system user with CAP_BPF only: reads the ring buffer, verifies,
         writes windows; the only process that parses network input
monitor  root, small: runs open-cmd/close-cmd hooks and re-attaches a removed link, on
         typed requests from the worker (spagate.gate.core.privsep); never parses packets
"""

from __future__ import annotations

import grp
import pwd
from dataclasses import dataclass

from spagate.errors import SpagateError

SERVICE_USER = "spagate"

# Capability bits (uapi/linux/capability.h) the roles need.
CAP_BITS = {
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_NET_ADMIN": 12,
    "CAP_SYS_ADMIN": 21,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
}
# The loader: bcc reopens pinned maps by id (CAP_SYS_ADMIN), attaches (CAP_NET_ADMIN), loads a
# privileged program (CAP_PERFMON, CAP_BPF).
LOADER_CAPS = ("CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON", "CAP_SYS_ADMIN")
# The worker: bpf() on the pinned maps and the ring buffer it was given, nothing else.
WORKER_CAPS = ("CAP_BPF",)
# What the worker starts with (the unit's CapabilityBoundingSet): enough to drop to the
# spagate user and empty its bounding set, which leaves WORKER_CAPS.
WORKER_START_CAPS = ("CAP_BPF", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP")


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int


def service_account() -> Account:
    """The spagate system user and group, or a one-line error saying how to create them."""
    try:
        pw = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise SpagateError(
            f"no '{SERVICE_USER}' system user: the worker runs as it (create it with "
            f"`adduser --system --group --no-create-home {SERVICE_USER}`, or run sudo ./setup)"
        ) from None
    try:
        gid = grp.getgrnam(SERVICE_USER).gr_gid
    except KeyError:
        gid = pw.pw_gid
    if pw.pw_uid == 0:
        raise SpagateError(f"the '{SERVICE_USER}' user must not be root (uid 0)")
    return Account(pw.pw_uid, gid)


def config_readers() -> frozenset[int]:
    """The groups that may read the gate's configuration besides its owner: root's, and the
    spagate group (the package installs /etc/spagate.ini root:spagate 0640, so that the worker
    reads it as the spagate user). Never with write access (inifile.read_key_file)."""
    try:
        return frozenset({0, grp.getgrnam(SERVICE_USER).gr_gid})
    except KeyError:
        return frozenset({0})
