"""Compile, load, pin and attach the XDP gate (bpf/gate.c) with bcc.

    gate = load(GateOptions(spa_port=8484), pin_dir="/sys/fs/bpf/spagate")
    gate.maps.set_protected([("tcp", 22)])        # GateMaps, see spagate.gate.maps
    gate.on_spa(lambda rec: ...)                  # rec: SpaRecord
    mode = gate.attach("eth0")                    # "native", or "generic" as fallback
    while running: gate.poll(100)
    gate.close()                                  # detaches what it attached; pins stay

Pinned maps are reused when the same pin_dir is loaded again (allow windows, the static list,
protected ports, counters and replay nonces survive a restart). A pinned map whose layout
differs from this version's is replaced; one whose capacity differs is migrated (entries
copied). `detach(ifname)` removes any XDP program from an interface without compiling.
bcc is imported lazily, only by load().
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import NamedTuple

from spagate.errors import SpagateError
from spagate.gate import bpfsys, spakeys
from spagate.gate.maps import MAP_SPECS, PROTECTED_WORDS, GateMaps, addr_from16

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
GATE_SOURCE = BPF_DIR / "gate.c"
DEFAULT_PIN_DIR = Path("/sys/fs/bpf/spagate")
BPFFS = Path("/sys/fs/bpf")

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
_ATTACHED_MODES = {1: "native", 2: "generic", 3: "offload", 4: "multi"}

# Header of struct spa_event (bpf/maps.h): src, dst, sport, dport, ifindex, len, copied, key.
SPA_EVENT_HEADER = struct.Struct("=16s16sHHIHHI")
SPA_PACKET_SIZE = 96  # bpf/spa_keys.h: the only payload size the program queues


@dataclass(frozen=True)
class GateOptions:
    """What the program is compiled with (-D flags) and the map capacities."""

    spa_port: int = 8484
    spa_rate_per_s: float = 1.0  # per-source tokens per second
    spa_burst: int = 8  # per-source bucket size
    spa_budget_per_s: int = 2000  # SPA packets per second from all sources together
    udp_idle_timeout_s: float = 120.0
    allow_capacity: int = 65536
    static_capacity: int = 16384
    udp_flow_capacity: int = 65536
    spa_rate_capacity: int = 65536
    replay_capacity: int = 65536
    # spa_seen (not pinned): MACs of SPA packets handed to userspace, so replays of one
    # captured packet cannot spend the budget. Keep >= budget/s x 2 x max skew (s).
    spa_seen_capacity: int = 65536
    ringbuf_pages: int = 256  # power of two
    coarse_clock: bool = True  # bpf_ktime_get_coarse_ns: same clock, tick resolution, cheaper
    extra_cflags: tuple[str, ...] = field(default=())

    def validate(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise SpagateError(f"invalid gate option: {what}")

        need(1 <= self.spa_port <= 65535, f"spa_port {self.spa_port} not in 1..65535")
        need(self.spa_rate_per_s > 0, "spa_rate_per_s must be > 0")
        need(self.spa_burst >= 1, "spa_burst must be >= 1")
        need(self.spa_budget_per_s >= 1, "spa_budget_per_s must be >= 1")
        need(self.udp_idle_timeout_s > 0, "udp_idle_timeout_s must be > 0")
        p = self.ringbuf_pages
        need(p >= 1 and p & (p - 1) == 0, "ringbuf_pages must be a power of two")
        for name, cap in self.capacities().items():
            need(cap >= 1, f"{name} capacity must be >= 1")
        need(self.spa_seen_capacity >= 1, "spa_seen capacity must be >= 1")

    def capacities(self) -> dict[str, int]:
        """max_entries of every pinned map."""
        return {
            "allow": self.allow_capacity,
            "allow_hint": self.allow_capacity,  # one per address: never more than allow
            "protected": PROTECTED_WORDS,
            "static_allow": self.static_capacity,
            "static_count": 1,
            "udp_flows": self.udp_flow_capacity,
            "spa_rate": self.spa_rate_capacity,
            "spa_budget": 1,
            "counters": len(_reasons()),
            "replay": self.replay_capacity,
            "spa_keys": spakeys.SPA_KEYS_MAX,
            "spa_key_count": 1,
        }

    def cflags(self, pin_dir: Path) -> list[str]:
        interval = max(1, round(1e9 / self.spa_rate_per_s))
        flags = [
            f"-I{BPF_DIR}",
            f'-DSPAGATE_PIN_DIR="{pin_dir}"',
            f"-DSPA_PORT={self.spa_port}",
            f"-DSPA_INTERVAL_NS={interval}ULL",
            f"-DSPA_TAU_NS={interval * (self.spa_burst - 1)}ULL",
            f"-DSPA_BUDGET={self.spa_budget_per_s}",
            f"-DUDP_IDLE_NS={round(self.udp_idle_timeout_s * 1e9)}ULL",
            f"-DALLOW_CAPACITY={self.allow_capacity}",
            f"-DSTATIC_CAPACITY={self.static_capacity}",
            f"-DUDP_FLOW_CAPACITY={self.udp_flow_capacity}",
            f"-DSPA_RATE_CAPACITY={self.spa_rate_capacity}",
            f"-DREPLAY_CAPACITY={self.replay_capacity}",
            f"-DSPA_SEEN_CAPACITY={self.spa_seen_capacity}",
            f"-DRINGBUF_PAGES={self.ringbuf_pages}",
            # Kernel headers pulled in by bcc's helpers warn under clang; not our code.
            "-Wno-ignored-attributes",
            "-Wno-duplicate-decl-specifier",
        ]
        if self.coarse_clock:
            flags.append("-DSPAGATE_COARSE_CLOCK")
        return flags + list(self.extra_cflags)


def _reasons() -> tuple[str, ...]:
    from spagate.gate.maps import REASONS

    return REASONS


class SpaRecord(NamedTuple):
    """One SPA packet the program queued (spa_events)."""

    payload: bytes  # the UDP payload (96 bytes: only MAC-valid SPA packets are queued)
    src: IPv4Address | IPv6Address
    dst: IPv4Address | IPv6Address
    sport: int
    dport: int
    ifindex: int
    length: int  # UDP payload length on the wire
    key_index: int = 0  # spa_keys slot whose MAC matched (the daemon writes identity order)


def decode_spa_event(raw: bytes) -> SpaRecord:
    """Decode one spa_events record (header + copied payload)."""
    src, dst, sport, dport, ifindex, length, copied, key = SPA_EVENT_HEADER.unpack_from(raw)
    h = SPA_EVENT_HEADER.size
    return SpaRecord(
        raw[h : h + copied], addr_from16(src), addr_from16(dst), sport, dport, ifindex, length, key
    )


def _import_bcc():
    try:
        import bcc
    except ImportError:
        raise SpagateError("bcc not found: install python3-bpfcc (sudo ./setup)") from None
    return bcc


def ensure_bpffs() -> None:
    """Mount the BPF filesystem on /sys/fs/bpf if it is not mounted yet."""
    with open("/proc/mounts") as f:
        if any(line.split()[1:3] == [str(BPFFS), "bpf"] for line in f):
            return
    r = subprocess.run(
        ["mount", "-t", "bpf", "bpf", str(BPFFS)], capture_output=True, text=True, check=False
    )
    if r.returncode:
        raise SpagateError(f"cannot mount bpffs on {BPFFS}: {r.stderr.strip() or r.returncode}")


def _copy_entries(old_fd: int, new_fd: int, spec, capacity: int) -> int:
    vsize = bpfsys.value_buffer_size(spec.type, spec.value_size)
    n = 0
    for key in list(bpfsys.keys(old_fd, spec.key_size)):
        if n >= capacity:
            break
        val = bpfsys.lookup(old_fd, key, vsize)
        if val is None:
            continue
        try:
            bpfsys.update(new_fd, key, val)
        except OSError as e:  # E2BIG: an array index beyond the new size
            if e.errno not in (errno.E2BIG, errno.ENOSPC):
                raise
            continue
        n += 1
    return n


def prepare_pins(pin_dir: Path, capacities: dict[str, int]) -> dict[str, str]:
    """Check pinned maps before bcc reuses them (it does not compare layouts).

    Layout changed: unpin (bcc then creates a fresh map). Capacity changed: create a map of
    the new size, copy the entries, re-pin. Returns {map: "kept"|"created"|"replaced"|
    "migrated"}.
    """
    pin_dir.mkdir(parents=True, exist_ok=True)
    actions = {}
    for name, spec in MAP_SPECS.items():
        path = pin_dir / name
        try:
            fd = bpfsys.obj_get(path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise SpagateError(f"cannot open pinned map {path}: {e.strerror}") from None
            actions[name] = "created"
            continue
        try:
            info = bpfsys.map_info(fd)
            same_layout = (info.type, info.key_size, info.value_size, info.flags) == (
                spec.type,
                spec.key_size,
                spec.value_size,
                spec.flags,
            )
            if not same_layout:
                path.unlink()
                actions[name] = "replaced"
            elif info.max_entries != capacities[name]:
                new = bpfsys.map_create(
                    spec.type,
                    name,
                    spec.key_size,
                    spec.value_size,
                    capacities[name],
                    spec.flags,
                )
                try:
                    _copy_entries(fd, new, spec, capacities[name])
                    path.unlink()
                    bpfsys.obj_pin(new, path)
                finally:
                    os.close(new)
                actions[name] = "migrated"
            else:
                actions[name] = "kept"
        finally:
            os.close(fd)
    return actions


def unpin(pin_dir: str | os.PathLike) -> None:
    """Remove the pinned maps and the pin directory (the gate's state is lost)."""
    pin_dir = Path(pin_dir)
    if pin_dir.is_dir():
        shutil.rmtree(pin_dir)


def _ifindex(ipr, ifname: str) -> int:
    idx = ipr.link_lookup(ifname=ifname)
    if not idx:
        raise SpagateError(f"no such network interface: {ifname}")
    return idx[0]


def _set_xdp(ifname: str, fd: int, flags: int) -> None:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        idx = _ifindex(ipr, ifname)
        try:
            ipr.link(
                "set",
                index=idx,
                xdp={"attrs": [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]},
            )
        except NetlinkError as e:
            raise OSError(e.code, f"{ifname}: {os.strerror(e.code)}") from None


def xdp_attached(ifname: str) -> tuple[int, str] | None:
    """(program id, "native"|"generic"|...) of the XDP program on ifname, or None."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        link = ipr.get_links(_ifindex(ipr, ifname))[0]
    xdp = link.get_attr("IFLA_XDP")
    if not xdp:
        return None
    mode = xdp.get_attr("IFLA_XDP_ATTACHED")
    if not mode:
        return None
    mode_num = {"xdp": 1, "xdpgeneric": 2, "xdpoffload": 3, "xdpmulti": 4}.get(mode, mode)
    return xdp.get_attr("IFLA_XDP_PROG_ID") or 0, _ATTACHED_MODES.get(mode_num, str(mode))


def detach(ifname: str) -> bool:
    """Remove whatever XDP program is on ifname (native and generic), no compiling needed.
    Returns True if one was attached."""
    found = xdp_attached(ifname) is not None
    for flags in (XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE):
        with contextlib.suppress(OSError):
            _set_xdp(ifname, -1, flags)
    if xdp_attached(ifname) is not None:
        raise SpagateError(f"{ifname}: could not detach the XDP program")
    return found


class Gate:
    """A loaded gate program with its maps. Create with load()."""

    def __init__(self, bpf, options: GateOptions, pin_dir: Path, pin_actions: dict[str, str]):
        self._bpf = bpf
        self.options = options
        self.pin_dir = pin_dir
        self.pin_actions = pin_actions  # what prepare_pins did per map
        self.prog_fd: int = bpf.load_func(b"xdp_gate", bpf.XDP).fd
        # The MAC check runs in its own program, tail-called from xdp_gate (docs/xdp.md).
        self.verify_fd: int = bpf.load_func(b"xdp_spa_verify", bpf.XDP).fd
        bpf[b"spa_progs"][ct.c_int(0)] = ct.c_int(self.verify_fd)
        fds = {name: bpf[name.encode()].map_fd for name in MAP_SPECS}
        for name, fd in fds.items():
            info, spec = bpfsys.map_info(fd), MAP_SPECS[name]
            got = (info.type, info.key_size, info.value_size, info.flags, info.max_entries)
            want = (spec.type, spec.key_size, spec.value_size, spec.flags)
            if got != (*want, options.capacities()[name]):
                raise SpagateError(f"map {name}: layout {got} differs from maps.py {want}")
        self.maps = GateMaps.from_fds(fds)
        # Derived maps new next to kept ones (an upgrade, a replaced layout) start empty.
        if pin_actions.get("allow_hint") != "kept":
            self.maps.sync_allow_hint()
        self.maps.sync_static_count()
        self.attached: dict[str, str] = {}  # ifname -> mode
        self._callbacks: list[Callable[[SpaRecord], None]] = []
        self._polled = 0
        self._ring_open = False

    # -- attach ----------------------------------------------------------------------------

    def attach(self, ifname: str, mode: str = "auto") -> str:
        """Attach to ifname: mode "native", "generic", or "auto" (native, else generic).
        Replaces a program already there in the same mode. Returns the mode used."""
        if mode not in ("auto", "native", "generic"):
            raise SpagateError(f"XDP mode must be auto, native or generic, not {mode!r}")
        tries = ["native", "generic"] if mode == "auto" else [mode]
        errors = []
        for m in tries:
            try:
                _set_xdp(ifname, self.prog_fd, MODE_FLAGS[m])
            except OSError as e:
                errors.append(f"{m}: {e.strerror or e}")
                continue
            self.attached[ifname] = m
            return m
        raise SpagateError(f"cannot attach XDP to {ifname} ({'; '.join(errors)})")

    def detach(self, ifname: str) -> None:
        mode = self.attached.pop(ifname, None)
        if mode is not None:
            with contextlib.suppress(OSError):
                _set_xdp(ifname, -1, MODE_FLAGS[mode])

    # -- SPA ring buffer -------------------------------------------------------------------

    def on_spa(self, callback: Callable[[SpaRecord], None]) -> None:
        """Register a callback called (from poll) with each SpaRecord. Exceptions raised by
        a callback propagate out of poll() after the current batch."""
        self._callbacks.append(callback)
        if self._ring_open:
            return
        self._pending_error: BaseException | None = None
        string_at, decode = ct.string_at, decode_spa_event
        hsize = SPA_EVENT_HEADER.size

        def ring_cb(_ctx, data, _size):
            self._polled += 1
            try:
                # Copy header + copied payload only (copied is at offset 42).
                copied = ct.c_uint16.from_address(data + 42).value
                rec = decode(string_at(data, hsize + copied))
                for cb in self._callbacks:
                    cb(rec)
            except BaseException as e:  # re-raised by poll()
                if self._pending_error is None:
                    self._pending_error = e
            return 0

        self._bpf[b"spa_events"].open_ring_buffer(ring_cb)
        self._ring_open = True

    def poll(self, timeout_ms: int = -1) -> int:
        """Wait up to timeout_ms (-1: forever) for SPA records; deliver them to the callbacks.
        Returns the number of records delivered."""
        if not self._ring_open:
            raise SpagateError("poll() needs a callback: call on_spa() first")
        before = self._polled
        self._bpf.ring_buffer_poll(timeout_ms)
        err, self._pending_error = self._pending_error, None
        if err is not None:
            raise err
        return self._polled - before

    # -- testing ---------------------------------------------------------------------------

    def test_run(self, packet: bytes, repeat: int = 1, ifindex: int = 0) -> bpfsys.TestRun:
        """Run the program on one packet with BPF_PROG_TEST_RUN (current netns)."""
        return bpfsys.prog_test_run(self.prog_fd, packet, repeat, ifindex)

    def close(self) -> None:
        """Detach from every interface this Gate attached to, free the program. Pins stay."""
        for ifname in list(self.attached):
            self.detach(ifname)
        if self.maps is not None:
            self.maps.close()
            self.maps = None
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(options: GateOptions | None = None, pin_dir: str | os.PathLike = DEFAULT_PIN_DIR) -> Gate:
    """Compile bpf/gate.c with options, reuse or create the maps pinned under pin_dir, and
    load the program (not attached). Raises SpagateError with a one-line reason."""
    options = options or GateOptions()
    options.validate()
    pin_dir = Path(pin_dir)
    if os.geteuid() != 0:
        raise SpagateError("loading the XDP gate needs root")
    if not GATE_SOURCE.is_file():
        raise SpagateError(f"XDP program source not found: {GATE_SOURCE}")
    bcc = _import_bcc()
    if pin_dir.is_relative_to(BPFFS):
        ensure_bpffs()
    actions = prepare_pins(pin_dir, options.capacities())
    try:
        bpf = bcc.BPF(src_file=str(GATE_SOURCE).encode(), cflags=options.cflags(pin_dir))
    except Exception as e:  # bcc raises bare Exception; clang's output went to stderr
        raise SpagateError(f"compiling {GATE_SOURCE} failed: {e}") from None
    try:
        return Gate(bpf, options, pin_dir, actions)
    except Exception as e:
        bpf.cleanup()
        if isinstance(e, SpagateError):
            raise
        raise SpagateError(f"loading {GATE_SOURCE} failed: {e}") from None
