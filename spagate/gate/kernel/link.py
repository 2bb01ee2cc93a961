"""Attaching XDP programs to interfaces (netlink, through pyroute2).

Its one concern is which program is on which interface, in which mode. Never compiles.
"""

from __future__ import annotations

import contextlib
import os
from enum import StrEnum
from functools import cache

from spagate.errors import SpagateError
from spagate.gate.kernel.abi import XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE


class XdpMode(StrEnum):
    AUTO = "auto"  # native, else generic
    NATIVE = "native"  # in the driver
    GENERIC = "generic"  # in the stack, after the skb is built
    OFFLOAD = "offload"
    MULTI = "multi"


MODE_FLAGS = {XdpMode.NATIVE: XDP_FLAGS_DRV_MODE, XdpMode.GENERIC: XDP_FLAGS_SKB_MODE}
_ATTACHED_MODES = {
    "xdp": XdpMode.NATIVE,
    "xdpgeneric": XdpMode.GENERIC,
    "xdpoffload": XdpMode.OFFLOAD,
    "xdpmulti": XdpMode.MULTI,
    1: XdpMode.NATIVE,
    2: XdpMode.GENERIC,
    3: XdpMode.OFFLOAD,
    4: XdpMode.MULTI,
}


def _ifindex(ipr, ifname: str) -> int:
    idx = ipr.link_lookup(ifname=ifname)
    if not idx:
        raise SpagateError(f"no such network interface: {ifname}")
    return idx[0]


@cache
def _xdp_message():
    """An RTM_SETLINK message class whose IFLA_XDP_FLAGS is the kernel's u32: Debian 12's
    pyroute2 (0.7.2) encodes it in 16 bits, which the kernel refuses with ERANGE."""
    from pyroute2.netlink import nla
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    def fresh(cls):
        # pyroute2 caches a compiled attribute map per class in name-mangled attributes that
        # a subclass would inherit: make this class compile its own.
        for name in dir(cls):
            if name.endswith("__compiled_nla"):
                setattr(cls, name, False)
        return cls

    @fresh
    class setxdp(ifinfmsg):
        nla_map = ifinfmsg.nla_map

        @fresh
        class xdp(ifinfmsg.xdp):
            nla_map = ifinfmsg.xdp.nla_map

            class xdp_flags(nla):
                fields = [("value", "I")]

    return setxdp


def set_xdp(ifname: str, fd: int, mode: XdpMode) -> None:
    """Put program fd on ifname in mode (native or generic) over netlink; fd -1 removes it.
    OSError on failure."""
    from pyroute2 import IPRoute
    from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.rtnl import RTM_SETLINK

    msg = _xdp_message()()
    with IPRoute() as ipr:
        msg["index"] = _ifindex(ipr, ifname)
        msg["attrs"] = [
            ("IFLA_XDP", {"attrs": [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", MODE_FLAGS[mode])]})
        ]
        try:
            ipr.nlm_request(msg, RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK)
        except NetlinkError as e:
            raise OSError(e.code, f"{ifname}: {os.strerror(e.code)}") from None


def xdp_attached(ifname: str) -> tuple[int, XdpMode] | None:
    """(program id, mode) of the XDP program on ifname, or None."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        link = ipr.get_links(_ifindex(ipr, ifname))[0]
    xdp = link.get_attr("IFLA_XDP")
    if not xdp:
        return None
    mode = xdp.get_attr("IFLA_XDP_ATTACHED")
    if not mode:
        return None
    return xdp.get_attr("IFLA_XDP_PROG_ID") or 0, _ATTACHED_MODES.get(mode, XdpMode.MULTI)


def attach(ifname: str, fd: int, mode: XdpMode = XdpMode.AUTO) -> XdpMode:
    """Attach program fd to ifname: native, generic, or auto (native, else generic).
    Replaces a program already there in the same mode. Returns the mode used."""
    try:
        mode = XdpMode(mode)
    except ValueError:
        raise SpagateError(f"XDP mode must be auto, native or generic, not {mode!r}") from None
    if mode not in (XdpMode.AUTO, XdpMode.NATIVE, XdpMode.GENERIC):
        raise SpagateError(f"XDP mode must be auto, native or generic, not {mode!r}")
    tries = [XdpMode.NATIVE, XdpMode.GENERIC] if mode == XdpMode.AUTO else [mode]
    errors = []
    for m in tries:
        try:
            set_xdp(ifname, fd, m)
        except OSError as e:
            errors.append(f"{m}: {e.strerror or e}")
            continue
        return m
    raise SpagateError(f"cannot attach XDP to {ifname} ({'; '.join(errors)})")


def detach(ifname: str) -> bool:
    """Remove whatever XDP program is on ifname (native and generic), no compiling needed.
    Returns True if one was attached."""
    found = xdp_attached(ifname) is not None
    for m in (XdpMode.NATIVE, XdpMode.GENERIC):
        with contextlib.suppress(OSError):
            set_xdp(ifname, -1, m)
    if xdp_attached(ifname) is not None:
        raise SpagateError(f"{ifname}: could not detach the XDP program")
    return found
