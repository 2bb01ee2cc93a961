"""Compile and load the XDP gate (spagate/bpf/gate.c) with bcc: the only module that imports bcc.

    gate = load(GateOptions(spa_port=8484), pin_dir="/sys/fs/bpf/spagate")
    gate.maps.set_protected([("tcp", 22)])        # GateMaps, see spagate.gate.kernel.maps
    gate.on_spa(lambda rec: ...)                  # rec: SpaRecord (kernel.ringbuf)
    mode = gate.attach("eth0")                    # "native", or "generic" as fallback
    while running: gate.poll(100)
    gate.close()                                  # detaches what it attached; pins stay

Pinned maps are reused when the same pin_dir is loaded again (kernel.pins checks and migrates
them first). bcc is imported lazily, only by compile_program() and load().
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from spagate.errors import SpagateError
from spagate.gate.kernel import abi, bpfsys, link, pins
from spagate.gate.kernel.abi import MAP_SPECS, PROTECTED_WORDS, REASONS, SPA_KEYS_MAX
from spagate.gate.kernel.maps import GateMaps
from spagate.gate.kernel.ringbuf import SpaRecord, SpaRing

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
GATE_SOURCE = BPF_DIR / "gate.c"
# Kernel headers pulled in by bcc's helpers warn under clang; not our code.
QUIET_CFLAGS = ("-Wno-ignored-attributes", "-Wno-duplicate-decl-specifier")


@dataclass(frozen=True)
class GateOptions:
    """What the program is compiled with (-D flags, consts.h) and the map capacities."""

    spa_port: int = abi.DEFAULT_SPA_PORT
    spa_rate_per_s: float = 1e9 / abi.DEFAULT_SPA_INTERVAL_NS  # per-source tokens per second
    spa_burst: int = abi.DEFAULT_SPA_BURST  # per-source bucket size
    spa_budget_per_s: int = abi.DEFAULT_SPA_BUDGET  # SPA packets/s per identity (HMACs)
    untagged: abi.UntaggedMode = abi.DEFAULT_UNTAGGED_MODE  # untagged = accept|budget|refuse
    untagged_budget_per_s: int = abi.DEFAULT_SPA_UNTAGGED_BUDGET  # untagged HMAC rounds/s
    source_match: bool = False  # require-source-match: copies from other sources may be real
    sample_rate_per_s: int = abi.DEFAULT_SPA_SAMPLE_RATE  # drop samples per second and CPU
    udp_idle_timeout_s: float = abi.DEFAULT_UDP_IDLE_NS / 1e9
    allow_capacity: int = abi.DEFAULT_CAPACITIES["allow"]
    static_capacity: int = abi.DEFAULT_CAPACITIES["static_allow"]
    udp_flow_capacity: int = abi.DEFAULT_CAPACITIES["udp_flows"]
    spa_rate_capacity: int = abi.DEFAULT_CAPACITIES["spa_rate"]
    replay_capacity: int = abi.DEFAULT_CAPACITIES["replay"]
    # spa_seen: packets that passed (or, tagged, were given) an HMAC, so copies and replays
    # of one packet cost a lookup. Keep >= the budgets/s x 2 x max skew (s).
    spa_seen_capacity: int = abi.DEFAULT_CAPACITIES["spa_seen"]
    spa_tags_capacity: int = abi.DEFAULT_CAPACITIES["spa_tags"]  # live tag hints
    ringbuf_pages: int = abi.DEFAULT_RINGBUF_PAGES  # power of two
    fwknop_port: int = abi.DEFAULT_FWKNOP_PORT  # may be spa_port (by length); 0: off
    fwknop_budget_per_s: int = abi.DEFAULT_FWKNOP_BUDGET
    coarse_clock: bool = True  # bpf_ktime_get_coarse_ns: same clock, tick resolution, cheaper
    # The disguise: "filtered" (silence) or "closed" (answer as a port nobody listens on, with
    # the host's values in `reply`: spagate.gate.service.hostnet reads them from sysctl).
    disguise: str = "filtered"
    reply: abi.ReplyParams = field(default_factory=abi.ReplyParams)
    extra_cflags: tuple[str, ...] = field(default=())

    def validate(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise SpagateError(f"invalid gate option: {what}")

        need(1 <= self.spa_port <= 65535, f"spa_port {self.spa_port} not in 1..65535")
        need(0 <= self.fwknop_port <= 65535, f"fwknop_port {self.fwknop_port} not in 0..65535")
        need(self.fwknop_budget_per_s >= 1, "fwknop_budget_per_s must be >= 1")
        need(self.spa_rate_per_s > 0, "spa_rate_per_s must be > 0")
        need(self.spa_burst >= 1, "spa_burst must be >= 1")
        need(self.spa_budget_per_s >= 1, "spa_budget_per_s must be >= 1")
        need(self.untagged_budget_per_s >= 1, "untagged_budget_per_s must be >= 1")
        need(self.sample_rate_per_s >= 0, "sample_rate_per_s must be >= 0")
        need(self.udp_idle_timeout_s > 0, "udp_idle_timeout_s must be > 0")
        p = self.ringbuf_pages
        need(p >= 1 and p & (p - 1) == 0, "ringbuf_pages must be a power of two")
        for name, cap in self.capacities().items():
            need(cap >= 1, f"{name} capacity must be >= 1")
        need(self.disguise in abi.DISGUISES, f"disguise {self.disguise!r} not in {abi.DISGUISES}")
        r = self.reply
        need(1 <= r.ttl <= 255 and 1 <= r.hop_limit <= 255, "reply TTL / hop limit not in 1..255")
        need(r.icmp_msgs_per_sec >= 0 and r.icmp_msgs_burst >= 0, "ICMP limits must be >= 0")

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
            "spa_budget": abi.SPA_BUDGET_SLOTS,
            "fwknop_rate": self.spa_rate_capacity,
            "fwknop_budget": 1,
            "counters": len(REASONS),
            "replay": self.replay_capacity,
            "replay_since": 1,
            "spa_keys": SPA_KEYS_MAX,
            "spa_key_count": 1,
            "spa_tags": self.spa_tags_capacity,
            "spa_seen": self.spa_seen_capacity,
        }

    def cflags(self, pin_dir: Path) -> list[str]:
        caps = {
            "allow": self.allow_capacity,
            "static_allow": self.static_capacity,
            "udp_flows": self.udp_flow_capacity,
            "spa_rate": self.spa_rate_capacity,
            "replay": self.replay_capacity,
            "spa_seen": self.spa_seen_capacity,
            "spa_tags": self.spa_tags_capacity,
        }
        flags = [
            f"-I{BPF_DIR}",
            f'-DSPAGATE_PIN_DIR="{pin_dir}"',
            f"-DSPA_PORT={self.spa_port}",
            f"-DSPA_INTERVAL_NS={max(1, round(1e9 / self.spa_rate_per_s))}ULL",
            f"-DSPA_BURST={self.spa_burst}",
            f"-DSPA_BUDGET={self.spa_budget_per_s}",
            f"-DSPA_UNTAGGED_MODE={int(self.untagged)}",
            f"-DSPA_UNTAGGED_BUDGET={self.untagged_budget_per_s}",
            f"-DSPA_SOURCE_MATCH={int(self.source_match)}",
            f"-DSPA_SAMPLE_RATE={self.sample_rate_per_s}",
            f"-DUDP_IDLE_NS={round(self.udp_idle_timeout_s * 1e9)}ULL",
            *(f"-D{abi.CAPACITY_MACROS[m]}={n}" for m, n in caps.items()),
            f"-DRINGBUF_PAGES={self.ringbuf_pages}",
            f"-DFWKNOP_PORT={self.fwknop_port}",
            f"-DFWKNOP_BUDGET={self.fwknop_budget_per_s}",
            f"-DDISGUISE_CLOSED={int(self.disguise == 'closed')}",
            *self.reply.cflags(),
            *QUIET_CFLAGS,
        ]
        if self.coarse_clock:
            flags.append("-DSPAGATE_COARSE_CLOCK")
        return flags + list(self.extra_cflags)


MODULES_DIR = Path("/lib/modules")
KHEADERS = Path("/sys/kernel/kheaders.tar.xz")  # CONFIG_IKHEADERS: bcc's other source


def missing_kernel_headers(
    release: str | None = None,
    modules: Path = MODULES_DIR,
    kheaders: Path = KHEADERS,
    environ: dict[str, str] | None = None,
    tmp: str = "/tmp",
) -> str | None:
    """Why bcc finds no kernel headers to compile against, in one line naming the package to
    install; None when it may find some (BCC_KERNEL_SOURCE, the release's build or source
    tree, the kernel's own kheaders, or bcc's copy of them). Asked after a compile failed,
    so that a lookup bcc knows and this does not never refuses a gate that would start."""
    env = os.environ if environ is None else environ
    if env.get("BCC_KERNEL_SOURCE"):
        return None
    release = release or os.uname().release
    tree = modules / release
    if any((tree / part / "include").is_dir() for part in ("build", "source")):
        return None
    copy = Path(tmp) / f"kheaders-{release}"  # bcc's copy of them from an earlier run
    if kheaders.exists() or copy.is_dir():
        return None
    return (
        f"no kernel headers for the running kernel {release} (bcc looks in {tree}/build): "
        f"install linux-headers-{release}"
    )


def _compile_failed(what: str, e: Exception) -> SpagateError:
    """The one-line error of a failed bcc compile: missing headers said as such."""
    return SpagateError(missing_kernel_headers() or f"compiling {what} failed: {e}")


def _import_bcc():
    try:
        import bcc
    except ImportError:
        raise SpagateError("bcc not found: install python3-bpfcc (sudo ./setup)") from None
    return bcc


class Program:
    """A BPF C text compiled with bcc (for the lab's helper programs and the contract probe):
    fd(name) loads an XDP function, map_fd(name) opens one of its maps."""

    def __init__(self, text: str, cflags: list[str] = ()):
        bcc = _import_bcc()
        try:
            self._bpf = bcc.BPF(text=text.encode(), cflags=[f"-I{BPF_DIR}", *QUIET_CFLAGS, *cflags])
        except Exception as e:  # bcc raises bare Exception; clang's output went to stderr
            raise _compile_failed("a BPF program", e) from None
        self._xdp = bcc.BPF.XDP

    @staticmethod
    def include_dir() -> Path:
        """Where the gate's headers are (on the include path of every Program)."""
        return BPF_DIR

    def fd(self, function: str) -> int:
        return self._bpf.load_func(function.encode(), self._xdp).fd

    def map_fd(self, name: str) -> int:
        return self._bpf[name.encode()].map_fd

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def __enter__(self) -> Program:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Gate:
    """A loaded gate program with its maps. Create with load()."""

    def __init__(
        self, bpf, options: GateOptions, pin_dir: Path, pin_actions: dict[str, pins.PinAction]
    ):
        self._bpf = bpf
        self.options = options
        self.pin_dir = pin_dir
        self.pin_actions = pin_actions  # what kernel.pins did per map
        self.prog_fd: int = bpf.load_func(b"xdp_gate", bpf.XDP).fd
        # The MAC check runs in its own program, tail-called from xdp_gate (docs/xdp.md).
        self.verify_fd: int = bpf.load_func(b"xdp_spa_verify", bpf.XDP).fd
        # The closed disguise's replies, tail-called by sg_reject() (bpf/reply.h).
        self.reply_fd: int = bpf.load_func(b"xdp_reply", bpf.XDP).fd
        # The program's own maps, pinned by pin_extras() (not by bcc): the program array and
        # the three rings; and the ICMP limiter (internal, never pinned).
        self.internal = {
            n: bpf[n.encode()].map_fd
            for n in ("spa_progs", "spa_events", "fwknop_events", "spa_samples", "icmp_peers",
                      "icmp_global")
        }  # fmt: skip
        self.set_verifier(True)
        slot = abi.U32.pack(abi.PROG_SLOT_REPLY)
        bpfsys.update(self.internal["spa_progs"], slot, abi.U32.pack(self.reply_fd))
        fds = {name: bpf[name.encode()].map_fd for name in MAP_SPECS}
        for name, fd in fds.items():
            info, spec = bpfsys.map_info(fd), MAP_SPECS[name]
            got = (info.type, info.key_size, info.value_size, info.flags, info.max_entries)
            want = (spec.type, spec.key_size, spec.value_size, spec.flags)
            if got != (*want, options.capacities()[name]):
                raise SpagateError(f"map {name}: layout {got} differs from abi.py {want}")
        self.maps = GateMaps.from_fds(fds)
        # Derived maps new next to kept ones (an upgrade, a replaced layout) start empty.
        if pin_actions.get("allow_hint") != pins.PinAction.KEPT:
            self.maps.sync_allow_hint()
        self.maps.sync_static_count()
        self.attached: dict[str, link.XdpMode] = {}  # ifname -> mode
        self._ring: SpaRing | None = None
        self._callbacks: list[Callable[[SpaRecord], None]] = []

    def set_verifier(self, present: bool) -> None:
        """Fill (or, for a test, empty) spa_progs[0], the tail-called MAC check."""
        key = abi.U32.pack(abi.PROG_SLOT_SPA_VERIFY)
        if present:
            bpfsys.update(self.internal["spa_progs"], key, abi.U32.pack(self.verify_fd))
        else:
            bpfsys.delete(self.internal["spa_progs"], key)

    def pin_extras(self) -> None:
        """Pin what must outlive this process (kernel.pins.EXTRA_PINS): the program array
        (the kernel empties one when its last user reference goes), the ring buffers (for the
        worker: sparoid and fwknop records, drop samples) and the program (for the monitor's
        re-attach)."""
        fds = {**self.internal, pins.PROG_PIN: self.prog_fd}
        for name in pins.EXTRA_PINS:
            pins.pin(fds[name], self.pin_dir / name)

    def forget_seen(self) -> None:
        """Empty spa_seen, the kernel's duplicate filter (for tests and benches)."""
        self.maps.clear("spa_seen")

    def forget_icmp(self) -> None:
        """Reset the closed disguise's ICMP limiter (for tests and benches)."""
        fd = self.internal["icmp_peers"]
        for key in list(bpfsys.keys(fd, abi.ADDR_KEY.size)):
            bpfsys.delete(fd, key)
        bpfsys.update(self.internal["icmp_global"], abi.U32.pack(0), bytes(abi.ICMP_GLOBAL.size))

    # -- attach ----------------------------------------------------------------------------

    def attach(self, ifname: str, mode: str = link.XdpMode.AUTO) -> link.XdpMode:
        """Attach to ifname: mode "native", "generic", or "auto" (native, else generic).
        Replaces a program already there in the same mode. Returns the mode used."""
        used = link.attach(ifname, self.prog_fd, mode)
        self.attached[ifname] = used
        return used

    def detach(self, ifname: str) -> None:
        mode = self.attached.pop(ifname, None)
        if mode is not None:
            with contextlib.suppress(OSError):
                link.set_xdp(ifname, -1, mode)

    # -- SPA ring buffer -------------------------------------------------------------------

    def on_spa(self, callback: Callable[[SpaRecord], None]) -> None:
        """Register a callback called (from poll) with each SpaRecord. An exception raised by
        a callback propagates out of poll()."""
        self._callbacks.append(callback)
        if self._ring is None:

            def deliver(rec: SpaRecord) -> None:
                for cb in self._callbacks:
                    cb(rec)

            self._ring = SpaRing(self.internal["spa_events"], deliver)

    def poll(self, timeout_ms: int = -1) -> int:
        """Wait up to timeout_ms (-1: forever) for SPA records; deliver them to the callbacks.
        Returns the number of records delivered."""
        if self._ring is None:
            raise SpagateError("poll() needs a callback: call on_spa() first")
        return self._ring.poll(timeout_ms)

    # -- testing ---------------------------------------------------------------------------

    def test_run(self, packet: bytes, repeat: int = 1, ifindex: int = 0) -> bpfsys.TestRun:
        """Run the program on one packet with BPF_PROG_TEST_RUN (current netns)."""
        return bpfsys.prog_test_run(self.prog_fd, packet, repeat, ifindex)

    def close(self) -> None:
        """Detach from every interface this Gate attached to, free the program. Pins stay."""
        for ifname in list(self.attached):
            self.detach(ifname)
        if self._ring is not None:
            self._ring.close()
            self._ring = None
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


def load(
    options: GateOptions | None = None, pin_dir: str | os.PathLike = pins.DEFAULT_PIN_DIR
) -> Gate:
    """Compile gate.c with options, reuse or create the maps pinned under pin_dir, and load
    the program (not attached). Raises SpagateError with a one-line reason."""
    options = options or GateOptions()
    options.validate()
    pin_dir = Path(pin_dir)
    if os.geteuid() != 0:
        raise SpagateError("loading the XDP gate needs root")
    if not GATE_SOURCE.is_file():
        raise SpagateError(f"XDP program source not found: {GATE_SOURCE}")
    bcc = _import_bcc()
    if pin_dir.is_relative_to(pins.BPFFS):
        pins.ensure_bpffs()
    actions = pins.prepare_pins(pin_dir, options.capacities())
    try:
        bpf = bcc.BPF(src_file=str(GATE_SOURCE).encode(), cflags=options.cflags(pin_dir))
    except Exception as e:  # bcc raises bare Exception; clang's output went to stderr
        raise _compile_failed(str(GATE_SOURCE), e) from None
    try:
        return Gate(bpf, options, pin_dir, actions)
    except Exception as e:
        bpf.cleanup()
        if isinstance(e, SpagateError):
            raise
        raise SpagateError(f"loading {GATE_SOURCE} failed: {e}") from None
