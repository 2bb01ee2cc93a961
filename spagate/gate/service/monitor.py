"""The monitor (root, small): what must stay privileged, done on the worker's typed requests.

It runs the open-cmd/close-cmd hooks (bounded queue, never skipping one) and re-attaches the
gate's pinned program when its link was removed, or re-pins a link whose pin vanished. It
watches the interfaces (netlink): with `interface = all` it guards each new IP-carrying one with
the pinned program and hands its link to the worker; otherwise it warns (error) about each new
interface that delivers IP around the gate. It never parses a packet: its only input is
spagate.gate.core.privsep requests from the worker (over a
socketpair under `spagate attach`, over a unix socket under systemd, where only the spagate
user may connect), each checked before anything is done. An attacker who owns the worker can
make it run the operator's own hooks for addresses of its choosing and re-attach the gate on
the configured interfaces: nothing else.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time
from pathlib import Path

from spagate.gate.core import privsep
from spagate.gate.core.config import GateConfig
from spagate.gate.core.eventlog import EventLog
from spagate.gate.kernel import bpfsys, link, pins
from spagate.gate.service import hostnet
from spagate.gate.service.account import Account
from spagate.gate.service.hooks import Hooks

MAX_FDS = 1  # a Repin carries one link fd
STATS_EVERY_S = 1.0  # HookStats to the worker (it exports them as metrics)
# Requests taken from one socket per serve(): a worker that floods requests cannot hold off
# the hooks' bookkeeping or the interface events (the rest wait in the socket for the next turn)
REQUESTS_PER_TURN = 256
# Worker connections at once (systemd mode; one worker runs): a newer one replaces the oldest,
# so connections cannot pile up to the monitor's file limit
MAX_CONNECTIONS = 2


class Monitor:
    def __init__(
        self,
        config: GateConfig,
        pin_dir: str,
        interfaces: tuple[str, ...],
        mode: str,
        log: EventLog,
        account: Account,
        all_interfaces: bool = False,
        watch: bool = True,
    ):
        self.config, self.pin_dir, self.interfaces = config, pin_dir, tuple(interfaces)
        self.mode, self.log, self.account = mode, log, account
        self.all_interfaces = all_interfaces
        self.hooks = Hooks(config.open_cmd, config.close_cmd, log)
        self.refused = 0
        self.reattached = 0
        self._stats_at = 0.0
        self.peers: list[socket.socket] = []  # the workers' connections (for new links)
        self.warned: set[str] = set()
        self.watcher = None
        if watch:
            try:
                from pyroute2 import IPRoute
                from pyroute2.netlink.rtnl import RTMGRP_LINK

                self.watcher = IPRoute()
                self.watcher.bind(groups=RTMGRP_LINK)
            except Exception as e:  # still guarding what is attached; say so
                self.log.error(f"monitor: cannot watch interfaces ({e}): new ones go unnoticed")
                self.watcher = None

    # -- interfaces ----------------------------------------------------------------------------

    def link_events(self) -> None:
        """Read the pending netlink link events: guard (all) or warn about new interfaces."""
        try:
            msgs = self.watcher.get()
        except Exception as e:
            self.log.error(f"monitor: reading interface events failed: {e}")
            return
        changed = False
        for m in msgs:
            if m.get("event") == "RTM_DELLINK":
                name = m.get_attr("IFLA_IFNAME")
                if name and self.all_interfaces and name in self.interfaces:
                    with contextlib.suppress(Exception):
                        link.detach_link(self.pin_dir, name)  # the dead link's pin
                    self.interfaces = tuple(n for n in self.interfaces if n != name)
                    self.log.info(f"monitor: {name} is gone")
                self.warned.discard(name)
            elif m.get("event") == "RTM_NEWLINK":
                changed = True
        if changed:
            self.check_interfaces()

    def start(self) -> None:
        """After the loader: guard (all) what appeared since; the loader already warned about
        what it left unguarded."""
        if self.all_interfaces:
            self.check_interfaces()
        else:
            with contextlib.suppress(Exception):
                self.warned = {i.name for i in self._left()}

    def _left(self, found=None) -> list:
        """IP interfaces neither guarded nor named in `unguarded =` (a configured one without
        Ethernet framing is not guarded: the program cannot read its packets)."""
        found = hostnet.interfaces() if found is None else found
        bare = {i.name for i in hostnet.bare(self.interfaces, found)}
        guarded = [n for n in self.interfaces if n not in bare]
        return hostnet.unguarded(guarded, self.config.unguarded, ifaces=found)

    def check_interfaces(self) -> None:
        try:
            found = hostnet.interfaces()
        except Exception as e:
            self.log.error(f"monitor: cannot list interfaces: {e}")
            return
        for i in self._left(found):
            if self.all_interfaces and i.guardable:
                self.guard(i.name)
            elif i.name not in self.warned:
                self.warned.add(i.name)
                self.log.error(hostnet.unguarded_warning([i]))

    def guard(self, ifname: str) -> None:
        """interface = all: a new interface; attach the pinned program, tell the workers."""
        fd = self.reattach(ifname)
        if fd is None:
            return
        self.interfaces = (*self.interfaces, ifname)
        try:
            for s in self.peers:
                with contextlib.suppress(OSError):
                    socket.send_fds(s, [privsep.encode(privsep.Linked(ifname))], [fd])
        finally:
            os.close(fd)

    def allowed_interface(self, ifname: str) -> bool:
        if ifname in self.interfaces:
            return True
        if not self.all_interfaces or ifname in self.config.unguarded:
            return False
        try:
            return any(i.name == ifname and i.carries_ip and i.guardable
                       for i in hostnet.interfaces())  # fmt: skip
        except Exception:
            return False

    def close(self) -> None:
        if self.watcher is not None:
            with contextlib.suppress(Exception):
                self.watcher.close()
            self.watcher = None

    # -- requests ------------------------------------------------------------------------------

    def handle(self, data: bytes, fds: list[int], reply=None) -> None:
        """One request; reply(answer, fd) sends an answer back (a new link after Reattach)."""
        req: object = None
        try:
            req = privsep.decode(data)
            self._dispatch(req, fds, reply)
        except Exception as e:  # a request that fails is refused: the monitor goes on
            self._refuse(f"{type(req).__name__} failed: {type(e).__name__}: {str(e)[:120]}")
        finally:
            for fd in fds:
                os.close(fd)

    def _dispatch(self, req, fds: list[int], reply) -> None:
        if isinstance(req, privsep.Malformed):
            self._refuse(req.reason)
        elif isinstance(req, privsep.Opened):
            self.hooks.opened(req.ip, req.seconds)
        elif not self.allowed_interface(req.ifname):
            self._refuse(f"{req.ifname} is not a guarded interface")
        elif isinstance(req, privsep.Reattach):
            fd = self.reattach(req.ifname)
            if fd is not None:
                try:
                    if reply is not None:
                        reply(privsep.Linked(req.ifname), fd)
                finally:
                    os.close(fd)
        elif isinstance(req, privsep.Repin):
            self.repin(req.ifname, fds[0] if fds else -1)

    def _refuse(self, why: str) -> None:
        self.refused += 1
        self.log.warning(f"monitor: refused a request from the worker: {why}")

    def _prog_id(self) -> tuple[int, int]:
        fd = bpfsys.obj_get(Path(self.pin_dir) / pins.PROG_PIN)
        return fd, bpfsys.prog_info(fd).id

    def reattach(self, ifname: str) -> int | None:
        """Put the pinned program back on ifname (a new link, or the link's program back).
        Returns an fd of the link now guarding it (for the worker), or None."""
        try:
            bare = next(iter(hostnet.bare([ifname], hostnet.interfaces())), None)
        except Exception:  # cannot tell: attach_link still refuses a foreign program
            bare = None
        if bare is not None:  # the program would read its IP header as Ethernet, passing all
            self.log.error(f"monitor: {ifname} ({bare.kind}) is not Ethernet-framed now: not "
                           f"re-attached; {ifname} is UNGUARDED")  # fmt: skip
            return None
        try:
            prog_fd, _ = self._prog_id()
        except OSError as e:
            self.log.error(f"monitor: cannot re-attach {ifname}: no pinned program ({e})")
            return None
        try:
            new = ifname not in self.interfaces
            mode = link.attach_link(self.pin_dir, ifname, prog_fd, self.mode, False, self.log.info)
            pins.share(self.pin_dir, self.account.gid)
            if new:
                self.log.info(f"monitor: a new interface {ifname}: guarded it ({mode})")
            else:
                self.reattached += 1
                self.log.info(f"monitor: re-attached the gate to {ifname} ({mode})")
            return link.pinned_link(self.pin_dir, ifname)
        except Exception as e:  # reported; the worker asks again at its next check
            self.log.error(f"monitor: cannot re-attach {ifname}: {e}")
            return None
        finally:
            os.close(prog_fd)

    def repin(self, ifname: str, fd: int) -> None:
        """Pin a link the worker still holds, once it is shown to be the gate's on ifname."""
        try:
            info = bpfsys.link_info(fd)
            prog_fd, prog_id = self._prog_id()
            os.close(prog_fd)
        except OSError as e:
            self._refuse(f"repin {ifname}: not a link ({e})")
            return
        if info.type != bpfsys.BPF_LINK_TYPE_XDP or info.prog_id != prog_id:
            self._refuse(f"repin {ifname}: link {info.id} is not the gate's")
            return
        if info.ifindex != link.ifindex_of(ifname):
            self._refuse(f"repin {ifname}: link {info.id} is on another interface")
            return
        pins.pin(fd, pins.link_pin(self.pin_dir, ifname))
        pins.share(self.pin_dir, self.account.gid)
        self.log.info(f"monitor: re-pinned the gate's link on {ifname}")

    # -- serving ------------------------------------------------------------------------------

    def serve(self, socks: list[socket.socket], timeout: float) -> list[socket.socket]:
        """Wait up to timeout for requests on socks and handle them; returns the sockets that
        closed. Runs the hooks' bookkeeping too."""
        closed = []
        self.peers = list(socks)
        watch = [self.watcher] if self.watcher is not None else []
        ready = _wait([*socks, *watch], timeout)
        if self.watcher is not None and self.watcher in ready:
            self.link_events()
        for s in ready:
            if s is self.watcher:
                continue
            for _ in range(REQUESTS_PER_TURN):
                try:
                    data, fds, _flags, _addr = socket.recv_fds(s, privsep.MAX_MESSAGE + 1, MAX_FDS)
                except BlockingIOError:
                    break
                except OSError:
                    closed.append(s)
                    break
                if not data and not fds:
                    closed.append(s)
                    break

                def reply(answer, fd, s=s):
                    with contextlib.suppress(OSError):
                        socket.send_fds(s, [privsep.encode(answer)], [fd])

                self.handle(data, fds, reply)
        self.hooks.poll()
        now = time.monotonic()
        if now - self._stats_at >= STATS_EVERY_S:
            self._stats_at = now
            stats = privsep.encode(self.stats())
            for s in socks:
                if s not in closed:
                    with contextlib.suppress(OSError):  # a full or closed socket: next time
                        s.send(stats)
        return closed

    def stats(self) -> privsep.HookStats:
        h = self.hooks
        return privsep.HookStats(h.depth, h.running, h.started, h.failed, self.reattached,
                                 self.refused)  # fmt: skip


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def listen(path: str, account: Account) -> socket.socket:
    """The systemd-mode socket: root:spagate 0660 in a directory only they can enter."""
    p = Path(path)
    p.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    os.chown(p.parent, 0, account.gid)
    with contextlib.suppress(FileNotFoundError):
        p.unlink()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    s.bind(path)
    os.chown(path, 0, account.gid)
    os.chmod(path, 0o660)
    s.listen(4)
    s.setblocking(False)
    return s


def _wait(objs: list, timeout: float) -> list:
    """Those of objs (sockets, or anything with fileno()) readable within timeout seconds.
    poll(), not select(): no limit on fd numbers."""
    if not objs:
        time.sleep(timeout)
        return []
    poller = select.poll()
    by_fd = {}
    for o in objs:
        by_fd[o.fileno()] = o
        poller.register(o.fileno(), select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(timeout * 1000)]


def accept_worker(monitor: Monitor, server: socket.socket, conns: list[socket.socket]) -> None:
    """One pending connection, if any: kept if it is the spagate user's or root's (replacing
    the oldest beyond MAX_CONNECTIONS), refused otherwise. An error (out of file descriptors)
    is logged: the monitor goes on serving the connections it has."""
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return
    except OSError as e:
        monitor.log.error(f"monitor: cannot accept a connection: {e}")
        time.sleep(0.1)  # (not a busy loop while the error lasts)
        return
    try:
        uid = peer_uid(conn)
    except OSError:
        conn.close()
        return
    if uid not in (0, monitor.account.uid):
        monitor._refuse(f"a connection from uid {uid}")
        conn.close()
        return
    conn.setblocking(False)
    conns.append(conn)
    while len(conns) > MAX_CONNECTIONS:
        conns.pop(0).close()


def serve_forever(monitor: Monitor, path: str, stopping) -> None:
    """`spagate monitor` under systemd: accept the worker's connections (the spagate user or
    root only) and serve them until stopping() is true."""
    server = listen(path, monitor.account)
    conns: list[socket.socket] = []
    try:
        while not stopping():
            if _wait([server], 0):
                accept_worker(monitor, server, conns)
            for c in monitor.serve(conns, 0.2):
                conns.remove(c)
                c.close()
    finally:
        monitor.hooks.shutdown()
        monitor.close()
        for c in conns:
            c.close()
        server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
