"""The worker: the unprivileged process that reads the SPA ring buffer and opens the windows.

It runs as the `spagate` system user with CAP_BPF alone, and it is the only spagate process
that parses network input. It imports neither bcc nor pyroute2 nor the command line: pinned
maps, the pinned ring buffer and the pinned links, opened through libbpf (bpfsys), are all it
touches in the kernel. What needs root (hooks, re-attaching a link) it asks of the monitor with
typed requests (spagate.gate.core.privsep).

The loop: poll the rings (200 ms), decide up to 256 records (core intake), write the batch
(nonces, then windows), pass hook requests on; at least once a second check every link and
publish the state file. No side error stops it: a failed state write is logged and retried,
a monitor that is away gets its requests later, a lost link is reported and re-attached.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from spagate.errors import SpagateError
from spagate.gate.core import privsep
from spagate.gate.core.config import GateConfig
from spagate.gate.core.eventlog import EventLog
from spagate.gate.kernel import bpfsys, pins
from spagate.gate.kernel.link import LinkState, link_state, pinned_link
from spagate.gate.kernel.maps import GateMaps
from spagate.gate.kernel.ringbuf import FwknopRing, SpaRing
from spagate.gate.service import priority
from spagate.gate.service.admission import Admission
from spagate.gate.service.journal import event_log, journal_emit
from spagate.gate.service.preflight import capability_names, effective_capabilities
from spagate.gate.service.state import (
    read_attached,
    remove_state,
    take_lock,
    touch_state,
    write_state,
)

CHECK_EVERY_S = 0.5  # links: at least twice a second
PUBLISH_EVERY_S = 1.0
# Records decided per flush at most: bounds a batch's memory and how long its first knock
# waits for its window (256 x the pipeline's 35 us warm: 9 ms); the rest wait for the next turn.
BATCH_RECORDS = 256
SAMPLES_EVERY_S = 0.1  # drop samples: read ten times a second (they come without a wakeup)
HINTS_EVERY_S = 1.0  # tag hints rotate per 30 s step; the table keeps a 2 s margin
MONITOR_STALE_S = 3.0  # hook figures older than this: the monitor is not reporting
RECENT_PUBLISHED = 12  # latest accepts and refusals in the state file (`spagate top`)
# Requests waiting for the monitor (a few hundred bytes each). Beyond it, while the monitor
# stays away, new hook requests are dropped and counted (the windows open all the same: only
# their hooks are lost), never the worker stopped over it.
MAX_QUEUED = 1_000_000


class MonitorChannel:
    """The worker's end of the connection to the monitor. Requests leave in order and are
    never dropped: while the monitor is away (restarting, not yet up) they wait here."""

    def __init__(self, sock: socket.socket | None = None, path: str | None = None, log=None):
        self._sock, self._path, self._log = sock, path, log
        self._queue: deque[tuple[bytes, list[int]]] = deque()
        self._links_asked: set[bytes] = set()  # Reattach/Repin queued: each once, not per check
        self.dropped = 0  # hook requests dropped: the queue was full
        self._down_since: float | None = None
        self.hook_stats: privsep.HookStats | None = None  # the monitor's latest figures
        self.hook_stats_at = 0.0  # time.monotonic() when they came
        if sock is not None:
            sock.setblocking(False)

    def send(self, req: privsep.Request, fds: list[int] | None = None) -> None:
        data = privsep.encode(req)
        if not isinstance(req, privsep.Opened):
            if data in self._links_asked:  # already waiting: asked again at every check
                return
            self._links_asked.add(data)
        elif len(self._queue) >= MAX_QUEUED:
            if not self.dropped and self._log:
                self._log.error(f"monitor unreachable for too long: {MAX_QUEUED} requests wait;"
                                " the hooks of newer windows are dropped (counted)")  # fmt: skip
            self.dropped += 1
            return
        self._queue.append((data, [os.dup(fd) for fd in fds or ()]))
        self.flush()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def fileno(self) -> int | None:
        return self._sock.fileno() if self._sock is not None else None

    def _connect(self) -> bool:
        if self._sock is not None:
            return True
        if self._path is None:
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            return False
        s.setblocking(False)
        self._sock = s
        return True

    def flush(self) -> None:
        while self._queue:
            if not self._connect():
                self._note_down()
                return
            data, fds = self._queue[0]
            try:
                if fds:
                    socket.send_fds(self._sock, [data], fds)
                else:
                    self._sock.send(data)
            except BlockingIOError:
                return
            except OSError:
                self._sock.close()
                self._sock = None
                self._note_down()
                if self._path is None:  # a socketpair: the monitor is gone for good
                    raise SpagateError("the monitor went away") from None
                return
            self._queue.popleft()
            self._links_asked.discard(data)
            for fd in fds:
                os.close(fd)
            if self._down_since is not None and self._log:
                self._log.info("monitor reachable again; queued requests delivered")
            self._down_since = None

    def receive(self) -> list[tuple[privsep.Linked, int]]:
        """Answers waiting from the monitor: (Linked, link fd) pairs; anything else is closed."""
        out = []
        while self._sock is not None:
            try:
                data, fds, _, _ = socket.recv_fds(self._sock, privsep.MAX_MESSAGE + 1, 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if not data and not fds:
                break
            answer = privsep.decode_answer(data)
            if isinstance(answer, privsep.Linked) and len(fds) == 1:
                out.append((answer, fds[0]))
            elif isinstance(answer, privsep.HookStats) and not fds:
                self.hook_stats, self.hook_stats_at = answer, time.monotonic()
            else:
                for fd in fds:
                    os.close(fd)
        return out

    def _note_down(self) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            if self._log:
                self._log.error(
                    f"monitor unreachable ({self._path or 'socket'}): {len(self._queue)} "
                    "request(s) wait (hooks, re-attach) until it is back"
                )


def heap_trimmer():
    """glibc's malloc_trim, or None where there is none. The worker calls it once a second:
    the nonces of a busy second are freed seconds later, amid newer ones, and without it the
    heap keeps those pages (a plateau that rises with every burst: docs/performance.md)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


@dataclass
class Snapshot:
    """What the worker counted, copied by its loop once a second: the metrics thread reads
    only this, never the worker's live dicts."""

    tally: dict[tuple[str, str, str], int] = field(default_factory=dict)
    guarded: dict[str, bool] = field(default_factory=dict)
    link_checks: int = 0
    links_lost: int = 0
    monitor_pending: int = 0
    hooks: dict[str, int] | None = None  # the monitor's last HookStats, None: none yet
    state_write_errors: int = 0
    map_write_errors: int = 0
    samples: int = 0


class MonitorHooks:
    """The worker's side of open-cmd/close-cmd: tell the monitor a window opened."""

    def __init__(self, channel: MonitorChannel | None, enabled: bool):
        self.channel, self.enabled = channel, enabled

    def opened(self, ip, seconds: float) -> None:
        if self.enabled and self.channel is not None:
            self.channel.send(privsep.Opened(ip, int(seconds)))


def _ethernet_framed(name: str) -> bool:
    from spagate.gate.service.hostnet import ethernet_framed  # only when a link is missing

    return ethernet_framed(name)


@dataclass
class WorkerOptions:
    pin_dir: str
    interfaces: tuple[str, ...]
    supervised: bool = False  # started by `spagate attach` (its pid is the gate's)
    all_interfaces: bool = False  # interface = all: the monitor hands over new links


class Worker:
    def __init__(
        self,
        config: GateConfig,
        opts: WorkerOptions,
        monitor: MonitorChannel | None,
        lock_fd: int | None = None,
        emit=journal_emit,
        realtime_error: str | None = None,
    ):
        self.config, self.opts, self.monitor = config, opts, monitor
        self.log: EventLog = event_log(config.log_format, emit)
        if monitor is not None and monitor._log is None:
            monitor._log = self.log
        self.lock_fd = lock_fd
        self.stopping = False
        self.started = int(time.time())
        self.links: dict[str, int] = {}  # ifname -> fd of its link
        self.link_ok: dict[str, bool] = {}
        self.links_lost = 0
        self.fleet = None
        self.modes = read_attached(opts.pin_dir)  # what the loader attached, in which mode
        self.state_errors = 0
        self._state_failing = False
        self._hints_failing = False
        self.link_checks = 0
        self.samples = None  # DropSamples, when the kernel samples drops
        self.metrics = None  # metrics.Metrics, when `metrics =` is set
        self._snapshot = None  # what the metrics thread reads (replaced, never mutated)
        self.realtime_error = realtime_error  # why --realtime could not be had, if asked

    def _stop(self, _signum, _frame) -> None:
        self.stopping = True

    def warm_up(self) -> None:
        """Import and exercise every code path the loop needs, while the code is still
        readable (a worker started as root drops to the spagate user right after this)."""
        from spagate.gate.core.intake import Intake

        intake = Intake(self.config)
        intake.verifier.verify(bytes(96), 0)
        write_state.__module__, privsep.encode(privsep.Reattach("lo"))
        if self.config.metrics is not None:
            from spagate.gate.service import metrics

            metrics.Metrics.__init__  # noqa: B018 (imported now, while the code is readable)

    def run(self, drop_to=None) -> int:
        """Open the pins, drop privileges if started as root (before reading a packet), then
        take knocks until SIGINT/SIGTERM."""
        cfg, opts = self.config, self.opts
        pin_dir = Path(opts.pin_dir)
        if self.lock_fd is None:
            self.lock_fd = take_lock(pin_dir)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal must not stop it
        # Everything in bpffs is opened first: /sys/fs/bpf is often mode 0700 (systemd mounts
        # it so), which the spagate user could not even enter.
        maps = GateMaps.from_pin_dir(pin_dir)
        prog_fd = bpfsys.obj_get(pin_dir / pins.PROG_PIN)
        self.prog_id = bpfsys.prog_info(prog_fd).id
        os.close(prog_fd)
        if opts.all_interfaces:  # every link pinned so far (the monitor pinned new ones)
            from spagate.gate.kernel.link import pinned_interfaces

            opts.interfaces = tuple(pinned_interfaces(pin_dir)) or opts.interfaces
        kept = []
        for name in opts.interfaces:
            fd = pinned_link(pin_dir, name)
            if fd is None and not opts.all_interfaces and not _ethernet_framed(name):
                # the loader left it unguarded and said so (loader.expand_interfaces)
                self.log.error(f"{name} is not Ethernet-framed: not guarded, it stays UNGUARDED")
                continue
            if fd is None:
                raise SpagateError(f"{name}: no link pinned in {pin_dir}: run the loader first")
            self.links[name] = fd
            self.link_ok[name] = True
            kept.append(name)
        if not kept:
            raise SpagateError(f"no link pinned in {pin_dir}: run the loader first")
        opts.interfaces = tuple(kept)
        events_fd = bpfsys.obj_get(pin_dir / "spa_events")
        fwknop_fd = bpfsys.obj_get(pin_dir / "fwknop_events")
        access = None
        if cfg.fwknop_access:  # read as root, with the key-file checks (docs/fwknop.md)
            from spagate.gate.core.fwknop_access import load_access

            access = load_access(cfg.fwknop_access)
            for w in access.warnings:
                self.log.warning(w)
        fleet = None
        if cfg.fleet is not None:  # built before the drop: all its code is imported as root
            from spagate.gate.service.fleetgate import FleetBridge

            fleet = FleetBridge(cfg, maps, None, self.log, opts.interfaces)
        from spagate.gate.service.samples import open_drop_samples

        self.samples = open_drop_samples(pin_dir, [i.name for i in cfg.identities])
        if drop_to is not None:
            from spagate.gate.service.account import WORKER_CAPS
            from spagate.gate.service.privdrop import drop_to as drop

            self.warm_up()
            drop(drop_to, WORKER_CAPS)
        hooks = MonitorHooks(self.monitor, bool(cfg.open_cmd or cfg.close_cmd))
        names = {socket.if_nametoindex(n): n for n in opts.interfaces}

        def ifname(index: int) -> str:
            """The interface's name (one guarded later, interface = all: looked up once)."""
            if index not in names:
                try:
                    names[index] = socket.if_indextoname(index)
                except OSError:
                    return str(index)
            return names[index]

        admission = Admission(
            cfg,
            maps,
            self.log,
            hooks,
            ifnames=ifname,
            batch=True,
            fwknop_access=access,
        )
        restored = admission.restore()
        if fleet is not None:
            fleet.admission = admission
            admission.fleet = fleet
            synced = fleet.start()  # the fleet's open windows are in the maps from here
            self.log.info(f"fleet {cfg.fleet.name}: member {fleet.member}, "
                          + ("synced" if synced else "NOT synced"))  # fmt: skip
        self.fleet = fleet
        ring = SpaRing(events_fd, admission.handle)
        os.close(events_fd)
        fw_ring = FwknopRing(fwknop_fd, admission.handle_fwknop)
        os.close(fwknop_fd)
        self.check_links()
        self.snapshot(admission)
        self.publish(admission)  # before "attached": from then on `status` finds a live worker
        if cfg.metrics is not None:
            self.start_metrics(maps, admission)
        caps = ",".join(capability_names(effective_capabilities())) or "none"
        self.log.info(
            "attached "
            + ", ".join(f"{n} ({self.mode_of(n)})" for n in opts.interfaces)
            + f"; protecting {', '.join(map(str, cfg.protected))}"
            + f"; SPA on udp/{cfg.spa_port}; identities "
            + ", ".join(i.name for i in cfg.identities)
            + (f"; static allow {', '.join(map(str, cfg.allow))}" if cfg.allow else "")
            + (f"; fwknop on udp/{cfg.fwknop_port}" if access is not None else "")
            + (f"; {restored} nonces restored" if restored else "")
            + f"; worker uid {os.getuid()} caps {caps}"
            + (f"; metrics on {self.metrics_url()}" if self.metrics else "")
            + ("; drop samples on" if self.samples else "")
            + f"; scheduling {priority.describe()}"
        )
        if self.realtime_error is not None:
            self.log.error(f"cannot run real-time ({self.realtime_error}): still guarding, but "
                           "a knock may wait for a busy CPU's next scheduler tick")  # fmt: skip
        next_check = next_publish = next_hints = next_samples = 0.0
        trim = heap_trimmer()
        # One wait for both: records in the ring, an answer from the monitor.
        waiter = select.epoll()
        waiter.register(ring.map_fd(), select.EPOLLIN)
        waiter.register(fw_ring.map_fd(), select.EPOLLIN)
        mon_fd = self.monitor.fileno() if self.monitor is not None else None
        if mon_fd is not None:
            waiter.register(mon_fd, select.EPOLLIN)
        if fleet is not None:
            waiter.register(fleet.fileno(), select.EPOLLIN)
        try:
            while not self.stopping:
                # The rings' fds are level-triggered (readable while records wait): under load
                # this returns at once, idle it sleeps. Each wakeup reads each ring once.
                answers = any(fd == mon_fd for fd, _ in waiter.poll(0.2))
                if ring.consume(BATCH_RECORDS) + fw_ring.consume(BATCH_RECORDS):
                    admission.flush()
                if fleet is not None:
                    fleet.drain()
                now = time.monotonic()
                if self.samples is not None and now >= next_samples:
                    # The kernel queues samples without a wakeup: read them on a timer.
                    for sample in self.samples.samples():
                        self.log.refused(sample)
                        admission.recent.append((time.time(), sample))
                    next_samples = now + SAMPLES_EVERY_S
                if self.monitor is not None:
                    if self.monitor.pending:
                        self.monitor.flush()
                    if answers or now >= next_check:
                        for answer, fd in self.monitor.receive():
                            self.take_link(answer.ifname, fd)
                    if self.monitor.fileno() != mon_fd:  # reconnected (systemd mode)
                        if mon_fd is not None:
                            with contextlib.suppress(OSError):  # closed: already gone
                                waiter.unregister(mon_fd)
                        mon_fd = self.monitor.fileno()
                        if mon_fd is not None:
                            waiter.register(mon_fd, select.EPOLLIN)
                if now >= next_check:
                    self.check_links()
                    next_check = now + CHECK_EVERY_S
                if now >= next_publish:
                    self.publish(admission)
                    self.snapshot(admission)
                    if trim is not None:
                        trim(0)  # tens of us (measured): free pages back to the kernel
                    next_publish = now + PUBLISH_EVERY_S
                if now >= next_hints:
                    self.rotate_hints(admission)
                    next_hints = now + HINTS_EVERY_S
                self.log.tick()
                admission.prune()
        finally:
            waiter.close()
            admission.flush()
            if fleet is not None:
                fleet.stop()
            ring.close()
            fw_ring.close()
            if self.samples is not None:
                self.samples.close()
            maps.close()
            for fd in self.links.values():
                os.close(fd)
            if not opts.supervised:
                remove_state(pin_dir)
            self.log.info("worker stopped; the gate stays attached and guarding")
        return 0

    # -- tag hints, drop samples ---------------------------------------------------------------

    def rotate_hints(self, admission: Admission) -> None:
        """Keep the tag hints of the current time steps live (a side error keeps guarding:
        tagged packets whose hint is missing still come in by the untagged path)."""
        try:
            clashes = admission.refresh_hints()
        except OSError as e:
            if not self._hints_failing:
                self.log.error(f"cannot rotate the tag hints ({e.strerror}); still guarding")
            self._hints_failing = True
            return
        if self._hints_failing:
            self.log.info("tag hints rotated again")
        self._hints_failing = False
        for a, b in clashes:
            names = self.config.identities
            self.log.info(
                f"identities {names[a].name} and {names[b].name} share a tag hint this step: "
                f"{names[b].name}'s packets take the untagged path until the next step"
            )

    # -- links -------------------------------------------------------------------------------

    def take_link(self, name: str, fd: int) -> None:
        """The monitor re-attached name, or (interface = all) guarded a new interface: keep
        the fd of its link (once shown to be it)."""
        if name not in self.links and not self.opts.all_interfaces:
            os.close(fd)
            return
        st = link_state(fd)
        if st.prog_id != self.prog_id or st.ifindex == 0:
            os.close(fd)
            return
        if name in self.links:
            os.close(self.links[name])
        else:
            self.opts.interfaces = (*self.opts.interfaces, name)
            self.link_ok[name] = True
            self.log.info(f"{name}: guarded (a new interface)")
        self.links[name] = fd
        self.check_links()

    def mode_of(self, name: str) -> str:
        return str(self.modes.get(name, "?"))

    def check_links(self) -> None:
        """Each link still on its interface with our program? If not: say so (error), count
        it, and ask the monitor to re-attach; pick up the new link once it is pinned."""
        pin_dir = self.opts.pin_dir
        self.link_checks += 1
        for name, fd in list(self.links.items()):
            state = link_state(fd)
            try:
                want = socket.if_nametoindex(name)
            except OSError:
                want = -1  # the interface is gone: nothing to guard until it is back
                if self.opts.all_interfaces:  # it was found, not configured: forget it
                    os.close(self.links.pop(name))
                    self.link_ok.pop(name, None)
                    self.opts.interfaces = tuple(n for n in self.opts.interfaces if n != name)
                    self.log.info(f"{name}: the interface is gone")
                    continue
            good = state.ifindex == want and state.prog_id == self.prog_id
            try:
                pinned = pins.link_pin(pin_dir, name).exists()
            except OSError:
                pinned = True  # we may not look (bpffs 0700): the monitor keeps the pins
            if good and pinned:
                if not self.link_ok[name]:
                    self.log.info(f"{name}: guarded again (link {bpfsys.link_info(fd).id})")
                self.link_ok[name] = True
                continue
            if good:  # our link lives (we hold it) but its pin was removed: re-pin it
                self.log.error(f"{name}: the gate's link pin was removed; asking to re-pin it")
                if self.monitor is not None:
                    self.monitor.send(privsep.Repin(name), [fd])
                continue
            try:
                fresh = pinned_link(pin_dir, name)  # re-attached meanwhile (if we may look)?
            except OSError:
                fresh = None
            if fresh is not None:
                fs = link_state(fresh)
                if fs.ifindex == want and fs.prog_id == self.prog_id:
                    os.close(fd)
                    self.links[name] = fresh
                    continue
                os.close(fresh)
            if self.link_ok[name]:
                self.links_lost += 1
                self.log.error(f"{name}: {self._why(state, want)}; re-attaching")
            self.link_ok[name] = False
            if self.monitor is not None:
                self.monitor.send(privsep.Reattach(name))

    def _why(self, state: LinkState, want: int) -> str:
        if want < 0:
            return "the interface is gone"
        if state.ifindex == 0:
            return "the gate's XDP link was detached: the interface is UNGUARDED"
        return f"the gate's link runs program id {state.prog_id}, not {self.prog_id}"

    # -- metrics -----------------------------------------------------------------------------

    def metrics_url(self) -> str:
        addr, port = self.config.metrics
        host = f"[{addr}]" if addr.version == 6 else str(addr)
        return f"http://{host}:{port}/metrics"

    def start_metrics(self, maps: GateMaps, admission: Admission) -> None:
        """Serve /metrics from a thread (the worker has dropped root by now). A port that
        cannot be bound is reported; the gate keeps guarding without metrics."""
        from spagate.gate.service.metrics import Metrics

        m = Metrics(lambda: self._snapshot, maps.counters, maps.live_windows)
        addr, port = self.config.metrics
        try:
            m.serve(str(addr), port)
        except OSError as e:
            self.log.error(f"metrics: cannot listen on {addr} port {port} ({e.strerror}); "
                           "the gate keeps guarding without metrics")  # fmt: skip
            return
        self.metrics = m
        admission.on_latency = m.observe_ns

    def snapshot(self, admission: Admission) -> None:
        """Copy what the metrics thread may read (a new object: the thread never sees one
        being built)."""
        mon = self.monitor
        fresh = mon is not None and time.monotonic() - mon.hook_stats_at < MONITOR_STALE_S
        stats = mon.hook_stats if fresh and mon is not None else None
        self._snapshot = Snapshot(
            tally=dict(admission.intake.tally),
            guarded=dict(self.link_ok),
            link_checks=self.link_checks,
            links_lost=self.links_lost,
            monitor_pending=mon.pending if mon else 0,
            hooks={f: getattr(stats, f) for f in privsep.HOOK_STATS_FIELDS} if stats else None,
            state_write_errors=self.state_errors,
            map_write_errors=admission.write_errors,
            samples=self.samples.read if self.samples else 0,
        )

    # -- state -------------------------------------------------------------------------------

    def publish(self, admission: Admission) -> None:
        links = {}
        for name, fd in self.links.items():
            with contextlib.suppress(OSError):
                info = bpfsys.link_info(fd)
                links[name] = {
                    "link_id": info.id,
                    "prog_id": info.prog_id,
                    "ok": self.link_ok[name],
                }
        state = {
            "pid": os.getppid() if self.opts.supervised else os.getpid(),
            "worker_pid": os.getpid(),
            "uid": os.getuid(),
            "interfaces": {n: self.mode_of(n) for n in self.opts.interfaces},
            "unguarded_by_config": list(self.config.unguarded),
            "links": links,
            "links_lost": self.links_lost,
            "pin_dir": str(self.opts.pin_dir),
            "config": self.config.path,
            "spa_port": self.config.spa_port,
            "started": self.started,
            "spa": dict(admission.counts),
            "drop_samples": self.samples.read if self.samples is not None else 0,
            "monitor_pending": self.monitor.pending if self.monitor else 0,
            "hooks": self._snapshot.hooks if self._snapshot else None,
            "link_checks": self.link_checks,
            "metrics": self.metrics_url() if self.metrics else None,
            "recent": [
                {"t": round(t, 3), "event": ev.event, **ev.fields()}
                for t, ev in list(admission.recent)[-RECENT_PUBLISHED:]
            ],
        }
        if self.fleet is not None:
            state["fleet"] = {
                "cluster": self.config.fleet.name,
                "member": self.fleet.member,
                "store": "up" if self.fleet.sync.health.up else "down",
                "synced": self.fleet.sync.synced.is_set(),
                "ignored": dict(self.fleet.mirror.ignored),
                "counts": dict(self.fleet.sync.counts),
            }
        try:
            write_state(self.opts.pin_dir, state)
        except OSError as e:
            self.state_errors += 1
            touch_state(self.opts.pin_dir)  # still the heartbeat `status` looks for
            if not self._state_failing:  # once per failure streak: a full /run must not flood
                self.log.error(f"cannot write the state file ({e.strerror}); still guarding")
            self._state_failing = True
            return
        if self._state_failing:
            self.log.info("state file written again")
        self._state_failing = False


def read_config_fd(fd: int, path: str) -> GateConfig:
    """The configuration handed over by the supervisor as an open file (it checked the file's
    owner and mode as root; the worker may not be able to open it)."""
    from spagate.gate.core.config import parse_config

    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise SpagateError(f"{path}: not valid UTF-8 text") from None
    return parse_config(text, path)


def main(argv: list[str]) -> int:
    """`spagate worker`: parsed by hand, without the command-line library (memory: the worker
    stays small)."""
    import argparse

    ap = argparse.ArgumentParser(prog="spagate worker")
    ap.add_argument("-c", "--config", default="/etc/spagate.ini")
    ap.add_argument("--pin-dir", default=str(pins.DEFAULT_PIN_DIR))
    ap.add_argument("--config-fd", type=int)
    ap.add_argument("--monitor-fd", type=int)
    ap.add_argument("--monitor-socket")
    ap.add_argument("--lock-fd", type=int)
    ap.add_argument(
        "--drop-privileges",
        action="store_true",
        help="started as root: become the spagate user with CAP_BPF only",
    )
    ap.add_argument("--all", action="store_true", help="interface = all (new links come later)")
    ap.add_argument(
        "--realtime",
        action="store_true",
        help="take SCHED_FIFO 1 for the ring reader (spagate attach; a unit sets it itself)",
    )
    ap.add_argument("interfaces", nargs="*")
    a = ap.parse_args(argv)
    if a.config_fd is not None:
        cfg = read_config_fd(a.config_fd, a.config)
    else:
        from spagate.gate.core.config import load_config
        from spagate.gate.service.account import config_readers

        cfg = load_config(a.config, group_readers=config_readers())
    every = a.all or (not a.interfaces and cfg.all_interfaces)
    ifaces = tuple(a.interfaces) or (() if every else cfg.interfaces)
    if not ifaces and not every:
        raise SpagateError("no interface: name one or set 'interface =' in the configuration")
    monitor = None
    if a.monitor_fd is not None:
        monitor = MonitorChannel(socket.socket(fileno=a.monitor_fd))
    elif a.monitor_socket:
        monitor = MonitorChannel(path=a.monitor_socket)
    opts = WorkerOptions(a.pin_dir, ifaces, a.monitor_fd is not None, every)
    drop = None
    if a.drop_privileges:
        from spagate.gate.service.account import service_account

        drop = service_account()
    elif os.geteuid() == 0:
        raise SpagateError("the worker does not run as root: pass --drop-privileges")
    # real-time before the drop: root may, the spagate user may not
    rt_error = priority.take_realtime() if a.realtime else None
    worker = Worker(cfg, opts, monitor, a.lock_fd, realtime_error=rt_error)
    try:
        return worker.run(drop)
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            raise SpagateError(f"worker: {e} (does it have CAP_BPF and the pins' group?)") from None
        raise
