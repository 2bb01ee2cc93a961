"""Dropping root for the worker, in the process itself: root starts it, it imports everything
it will ever need (so it needs no file access to the code afterwards), then it becomes the
spagate user with exactly the capabilities it keeps, before it reads a single packet.

    bounding set: every capability but the kept ones dropped (needs CAP_SETPCAP: done first)
    groups, gid, uid: the spagate user's (PR_SET_KEEPCAPS carries the kept ones across)
    effective = permitted = inheritable = the kept ones; ambient cleared; no_new_privs set
Then /proc/self/status is read back: anything else is an error and the worker does not run.
"""

from __future__ import annotations

import ctypes as ct
import os

from spagate.errors import SpagateError
from spagate.gate.service.account import CAP_BITS, Account

PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_CAP_V3 = 0x20080522


class _CapHeader(ct.Structure):
    _fields_ = [("version", ct.c_uint32), ("pid", ct.c_int)]


class _CapData(ct.Structure):
    _fields_ = [("effective", ct.c_uint32), ("permitted", ct.c_uint32),
                ("inheritable", ct.c_uint32)]  # fmt: skip


def _libc():
    libc = ct.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ct.c_int, ct.c_ulong, ct.c_ulong, ct.c_ulong, ct.c_ulong]
    return libc


def _prctl(libc, option: int, arg: int = 0, arg3: int = 0) -> None:
    if libc.prctl(option, arg, arg3, 0, 0) != 0:
        err = ct.get_errno()
        raise SpagateError(f"prctl({option}) failed: {os.strerror(err)}")


def _last_cap(libc) -> int:
    """The highest capability this kernel knows: asked with PR_CAPBSET_READ (EINVAL past it),
    not read from /proc/sys/kernel/cap_last_cap, which systemd's ProcSubset=pid hides."""
    cap = 0
    while libc.prctl(PR_CAPBSET_READ, cap + 1, 0, 0, 0) >= 0:
        cap += 1
    return cap


def _status() -> dict[str, str]:
    with open("/proc/self/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def drop_to(account: Account, keep: tuple[str, ...]) -> None:
    """Become account with only `keep` capabilities; raises SpagateError if that fails."""
    libc = _libc()
    mask = sum(1 << CAP_BITS[c] for c in keep)
    have = int(_status().get("CapPrm", "0"), 16)
    missing = [c for c in keep if not have >> CAP_BITS[c] & 1]
    if missing:
        raise SpagateError(
            f"the worker needs {', '.join(missing)} and was started without it "
            "(the unit's CapabilityBoundingSet, or not as root)"
        )
    for cap in range(_last_cap(libc) + 1):
        if not mask >> cap & 1:
            _prctl(libc, PR_CAPBSET_DROP, cap)
    _prctl(libc, PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setresgid(account.gid, account.gid, account.gid)
    os.setresuid(account.uid, account.uid, account.uid)
    data = (_CapData * 2)()
    for i in range(2):
        word = mask >> (32 * i) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = data[i].inheritable = word
    hdr = _CapHeader(_CAP_V3, 0)
    if libc.capset(ct.byref(hdr), data) != 0:
        raise SpagateError(f"capset failed: {os.strerror(ct.get_errno())}")
    _prctl(libc, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    _prctl(libc, PR_SET_KEEPCAPS, 0)
    _prctl(libc, PR_SET_NO_NEW_PRIVS, 1)
    st = _status()
    want = f"{mask:016x}"
    got = {k: st.get(k, "") for k in ("CapEff", "CapPrm", "CapBnd", "CapInh")}
    uids = st.get("Uid", "").split()
    if any(v != want for v in got.values()) or set(uids) != {str(account.uid)}:
        raise SpagateError(f"dropping privileges did not take: uid {uids}, {got}")
