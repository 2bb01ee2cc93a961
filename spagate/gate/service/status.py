"""What `spagate status` reports, asked of the kernel rather than of a state file.

For each interface of the gate: is its pinned link alive on that interface, is the program on
the interface (netlink, in the worker's network namespace) the link's program, and is that
the gate's pinned program. Whether the worker lives is the lock's answer. The state file only
adds what the worker counted. Any other interface that delivers IP to this host (a tunnel, a
PPP or tun device, WireGuard...) without the gate is listed too: traffic it decapsulates never
meets the program. Exit codes: 0 guarded and taking knocks; 1 an interface is unguarded (one
of the gate's, or another IP-carrying one); 3 guarded but no worker reads the knocks.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from spagate.gate.kernel import bpfsys, link, pins
from spagate.gate.service.state import lock_held, read_attached, read_state, state_age

OK, UNGUARDED, NO_WORKER = 0, 1, 3
# The worker publishes once a second: silent this long, it takes no knocks (stopped, hung,
# or dead while its supervisor still holds the gate's lock, restarting it)
WORKER_SILENT_S = 5.0


@dataclass
class InterfaceStatus:
    name: str
    guarded: bool
    why: str  # "" when guarded
    mode: str | None = None
    prog_id: int | None = None  # on the interface, as netlink reports it
    link_id: int | None = None


@dataclass
class GateStatus:
    pin_dir: str
    worker_running: bool
    worker_pid: int | None
    pid: int | None
    interfaces: list[InterfaceStatus] = field(default_factory=list)
    spa: dict[str, int] = field(default_factory=dict)
    links_lost: int = 0
    others_unguarded: list[str] = field(default_factory=list)  # "vx0 (vxlan)", ...
    unguarded_by_config: list[str] = field(default_factory=list)  # unguarded = (on purpose)
    hooks: dict | None = None  # the monitor's hook queue figures, as the worker last heard
    metrics: str | None = None  # where the worker serves /metrics
    worker_why: str = ""  # why no worker takes knocks ("" while one does)

    @property
    def exit_code(self) -> int:
        if any(not i.guarded for i in self.interfaces) or not self.interfaces:
            return UNGUARDED
        if self.others_unguarded:
            return UNGUARDED
        return OK if self.worker_running else NO_WORKER

    def as_dict(self) -> dict:
        d = asdict(self)
        d["exit_code"] = self.exit_code
        return d


def _netns_of(state: dict | None) -> str | None:
    pid = (state or {}).get("worker_pid")
    if not pid:
        return None
    path = f"/proc/{int(pid)}/ns/net"
    return path if os.path.exists(path) else None


def _pid_alive(pid) -> bool:
    try:
        pid = int(pid)
        os.kill(pid, 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return pid > 0


def worker_liveness(pin_dir: Path, state: dict | None) -> str:
    """Why no worker takes knocks for pin_dir, or "" when one does: the gate's lock is held,
    the worker the state file names lives, and it published within WORKER_SILENT_S."""
    if not lock_held(pin_dir):
        return "no gate holds the lock"
    if not state:
        return "no worker has reported yet"
    if not _pid_alive(state.get("worker_pid")):
        return f"worker pid {state.get('worker_pid')} is gone"
    age = state_age(pin_dir)
    if age is None or age > WORKER_SILENT_S:
        return f"the worker has not reported for {age or 0:.0f}s (stopped or hung)"
    return ""


def gate_status(pin_dir: str | os.PathLike) -> GateStatus:
    pin_dir = Path(pin_dir)
    state = read_state(pin_dir)
    why = worker_liveness(pin_dir, state)
    running = not why
    names = sorted(
        set(link.pinned_interfaces(pin_dir))
        | set(read_attached(pin_dir))
        | set((state or {}).get("interfaces") or ())
    )
    st = GateStatus(
        str(pin_dir),
        running,
        (state or {}).get("worker_pid") if running else None,
        (state or {}).get("pid") if running else None,
        spa=(state or {}).get("spa", {}),
        links_lost=(state or {}).get("links_lost", 0),
        hooks=(state or {}).get("hooks") if running else None,
        metrics=(state or {}).get("metrics") if running else None,
        worker_why=why,
    )
    try:
        fd = bpfsys.obj_get(pin_dir / pins.PROG_PIN)
        ours = bpfsys.prog_info(fd).id
        os.close(fd)
    except OSError:
        ours = None
    # the worker's namespace while a gate holds the lock (its pid may be stopped, not gone)
    with link.in_netns(_netns_of(state) if lock_held(pin_dir) else None):
        from spagate.gate.service import hostnet

        for name in names:
            st.interfaces.append(_interface(pin_dir, name, ours))
        try:
            names_here = [i.name for i in st.interfaces]
            bare = {f.name: f.kind for f in hostnet.bare(names_here, hostnet.interfaces())}
        except Exception:  # cannot tell: the kernel's answer above stands
            bare = {}
        for i in st.interfaces:
            if i.guarded and i.name in bare:  # the program is there but reads no packet of it
                i.guarded = False
                i.why = f"{bare[i.name]} is not Ethernet-framed: the program passes all its packets"
        try:
            meant = [str(n) for n in (state or {}).get("unguarded_by_config") or ()]
            left = hostnet.unguarded([i.name for i in st.interfaces if i.guarded], meant)
            st.others_unguarded = [hostnet.describe(i) for i in left if i.name not in names]
            st.unguarded_by_config = meant
        except Exception as e:  # say we could not tell, never hide it
            st.others_unguarded = [f"? (cannot list interfaces: {e})"]
    return st


def _interface(pin_dir: Path, name: str, ours: int | None) -> InterfaceStatus:
    fd = link.pinned_link(pin_dir, name)
    state = link.link_state(fd)
    link_id = None
    if fd is not None:
        with contextlib.suppress(OSError):
            link_id = bpfsys.link_info(fd).id
        os.close(fd)
    try:
        ifindex = link.ifindex_of(name)
        there = link.xdp_attached(name)
    except Exception:  # the interface is gone (or in a namespace we cannot see)
        return InterfaceStatus(name, False, "no such interface here", link_id=link_id)
    prog_id, mode = there if there else (None, None)
    s = InterfaceStatus(name, False, "", str(mode) if mode else None, prog_id, link_id)
    if not state.pinned:
        s.why = "no link pinned: the gate is not attached"
    elif state.ifindex != ifindex:
        s.why = "the gate's link was detached"
    elif prog_id is None:
        s.why = "no XDP program on the interface"
    elif prog_id != state.prog_id or (ours is not None and prog_id != ours):
        s.why = f"XDP program id {prog_id} is not the gate's"
    else:
        s.guarded = True
    return s


def find_pin_dirs() -> list[Path]:
    """Every spagate pin directory on this host's bpffs."""
    if not pins.BPFFS.is_dir():
        return []
    found = [*pins.BPFFS.glob("spagate*"), *pins.BPFFS.glob("spagate*/*")]
    return sorted(p for p in found if p.is_dir() and (p / pins.PROG_PIN).exists())
