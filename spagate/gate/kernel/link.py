"""Attaching XDP programs to interfaces: BPF links (pinned), and netlink (pyroute2) to see
and to remove what else is there.

Its one concern is which program is on which interface, in which mode. The gate is attached
with a BPF link pinned in its pin directory: the kernel then refuses to let any other program
(netlink, `ip link set ... xdp`, another tool) replace or remove it, the program stays attached
with no process holding it, and an upgrade swaps the program atomically (BPF_LINK_UPDATE).
Never compiles.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

from spagate.errors import SpagateError
from spagate.gate.kernel import bpfsys, pins
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


CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def in_netns(path: str | os.PathLike | None):
    """Move the calling thread into a network namespace (setns is per thread), then back:
    sockets (netlink included) made inside belong to that namespace."""
    if path is None:
        yield
        return
    import ctypes as ct

    libc = ct.CDLL(None, use_errno=True)
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ct.get_errno(), f"setns {path}")
        yield
    finally:
        libc.setns(back, CLONE_NEWNET)
        os.close(fd)
        os.close(back)


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


# --- BPF links -------------------------------------------------------------------------------

# The program name of spagate's gate (xdp_gate, as the kernel truncates it to 15 characters).
GATE_PROG_NAME = "xdp_gate"


def ifindex_of(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise SpagateError(f"interface {ifname!r} does not exist") from None


def program_name(prog_id: int) -> str:
    """The name of a loaded program (needs CAP_SYS_ADMIN), or "?"."""
    try:
        fd = bpfsys.prog_get_fd_by_id(prog_id)
    except OSError:
        return "?"
    try:
        return bpfsys.prog_info(fd).name
    finally:
        os.close(fd)


@dataclass(frozen=True)
class LinkState:
    """What a pinned link says of itself."""

    pinned: bool  # the pin exists
    ifindex: int  # 0: detached (interface gone, BPF_LINK_DETACH), or no pin
    prog_id: int


def pinned_link(pin_dir: str | os.PathLike, ifname: str) -> int | None:
    """An fd of ifname's pinned link, or None when there is no pin."""
    try:
        return bpfsys.obj_get(pins.link_pin(pin_dir, ifname))
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise


def link_state(fd: int | None) -> LinkState:
    if fd is None:
        return LinkState(False, 0, 0)
    info = bpfsys.link_info(fd)
    return LinkState(True, info.ifindex, info.prog_id)


def _create(prog_fd: int, ifindex: int, ifname: str, mode: XdpMode) -> tuple[int, XdpMode]:
    tries = [XdpMode.NATIVE, XdpMode.GENERIC] if mode == XdpMode.AUTO else [XdpMode(mode)]
    errors = []
    for m in tries:
        try:
            return bpfsys.xdp_link_create(prog_fd, ifindex, MODE_FLAGS[m]), m
        except OSError as e:
            errors.append(f"{m}: {os.strerror(e.errno)}")
    raise SpagateError(f"cannot attach XDP to {ifname} ({'; '.join(errors)})")


def attach_link(
    pin_dir: str | os.PathLike,
    ifname: str,
    prog_fd: int,
    mode: XdpMode = XdpMode.AUTO,
    force: bool = False,
    log=lambda line: None,
) -> XdpMode:
    """Guard ifname with prog_fd through a BPF link pinned as link.<ifname> in pin_dir.

    - Our link is already there (a restart, an upgrade): swap its program atomically.
    - Nothing is attached: create the link.
    - Another program is attached: refuse, naming it, unless it is spagate's own gate attached
      the old way (netlink) or force is given; then remove it and create the link (the
      interface is unguarded for the microseconds in between: said in the log).
    Returns the mode the program runs in."""
    ifindex = ifindex_of(ifname)
    pin = pins.link_pin(pin_dir, ifname)
    fd = pinned_link(pin_dir, ifname)
    if fd is not None:
        try:
            state = link_state(fd)
            if state.ifindex == ifindex:
                bpfsys.link_update(fd, prog_fd)
                return current_mode(ifname) or XdpMode.NATIVE
        finally:
            os.close(fd)
        pin.unlink()  # a dead link (the interface was re-created): make a new one
    there = xdp_attached(ifname)
    if there is not None:
        prog_id, there_mode = there
        name = program_name(prog_id)
        other_link = xdp_link_on(ifindex)
        # spagate's own gate attached the old way (netlink) is taken over; anything else, a
        # link of another gate (another pin dir) included, only with force.
        legacy = other_link is None and name == GATE_PROG_NAME
        if not force and not legacy:
            held = f" held by BPF link id {other_link}" if other_link else ""
            raise SpagateError(
                f"{ifname} already has XDP program id {prog_id} ({name}, {there_mode}){held}: "
                "spagate will not replace it; remove it first, or pass --force"
            )
        log(f"{ifname}: replacing XDP program id {prog_id} ({name}, {there_mode})")
        remove_program(ifname, ifindex, there_mode)
    fd, used = _create(prog_fd, ifindex, ifname, mode)
    try:
        pins.pin(fd, pin)
    finally:
        os.close(fd)
    return used


def xdp_link_on(ifindex: int) -> int | None:
    """The id of the BPF link holding an XDP program on ifindex, if one does (CAP_SYS_ADMIN)."""
    for link_id in bpfsys.link_ids():
        try:
            fd = bpfsys.link_get_fd_by_id(link_id)
        except OSError:
            continue
        try:
            info = bpfsys.link_info(fd)
        finally:
            os.close(fd)
        if info.type == bpfsys.BPF_LINK_TYPE_XDP and info.ifindex == ifindex:
            return link_id
    return None


def remove_program(ifname: str, ifindex: int, mode: XdpMode) -> None:
    """Remove what is attached to ifname: a netlink program, or (force) another tool's link."""
    try:
        set_xdp(ifname, -1, mode if mode in MODE_FLAGS else XdpMode.NATIVE)
        return
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise SpagateError(f"{ifname}: cannot remove its XDP program: {e.strerror}") from None
    link_id = xdp_link_on(ifindex)  # a BPF link of someone else's: detach it
    if link_id is not None:
        fd = bpfsys.link_get_fd_by_id(link_id)
        try:
            bpfsys.link_detach(fd)
            return
        finally:
            os.close(fd)
    raise SpagateError(f"{ifname}: cannot remove its XDP program (busy)")


def current_mode(ifname: str) -> XdpMode | None:
    there = xdp_attached(ifname)
    return there[1] if there else None


def detach_link(pin_dir: str | os.PathLike, ifname: str) -> bool:
    """Detach ifname's pinned link now and remove its pin; True if there was one."""
    pin = pins.link_pin(pin_dir, ifname)
    fd = pinned_link(pin_dir, ifname)
    if fd is None:
        return False
    try:
        with contextlib.suppress(OSError):  # already detached (interface gone)
            bpfsys.link_detach(fd)
    finally:
        os.close(fd)
    pin.unlink(missing_ok=True)
    return True


def pinned_interfaces(pin_dir: str | os.PathLike) -> list[str]:
    """Interfaces with a pinned link in pin_dir."""
    d = Path(pin_dir)
    if not d.is_dir():
        return []
    return sorted(pins.link_ifname(p.name) for p in d.glob(pins.LINK_PREFIX + "*"))
