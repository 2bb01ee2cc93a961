"""Both ends of the worker-monitor connection under abuse and outages: the worker's queue while
the monitor is away, the monitor's accept and wait. Real sockets."""

import errno
import os
import resource
import socket
import time
from ipaddress import ip_address

from spagate.gate.core import privsep
from spagate.gate.core.eventlog import EventLog
from spagate.gate.service import monitor as monitor_mod
from spagate.gate.service import worker as worker_mod


def log_to(lines):
    return EventLog(lambda lvl, line: lines.append(line), time.monotonic)


def test_while_the_monitor_is_away_link_requests_wait_once_and_hooks_never_stop_the_worker(
    tmp_path, monkeypatch
):
    lines = []
    ch = worker_mod.MonitorChannel(path=str(tmp_path / "nobody.sock"), log=log_to(lines))
    r, w = os.pipe()
    try:
        fds_before = len(os.listdir("/proc/self/fd"))
        for _ in range(500):  # the worker asks at every link check, twice a second
            ch.send(privsep.Repin("eth0"), [r])
            ch.send(privsep.Reattach("eth0"))
        assert ch.pending == 2  # each once, and one fd dup'ed, not 500
        assert len(os.listdir("/proc/self/fd")) == fds_before + 1
        monkeypatch.setattr(worker_mod, "MAX_QUEUED", 5)
        for i in range(10):  # beyond the bound: dropped and counted, never raised
            ch.send(privsep.Opened(ip_address(f"192.0.2.{i}"), 5))
        assert ch.pending == 5 and ch.dropped == 7
        assert sum("hooks of newer windows are dropped" in x for x in lines) == 1, lines
    finally:
        os.close(r)
        os.close(w)


class _Server:
    def __init__(self, exc):
        self.exc = exc

    def accept(self):
        raise self.exc


def test_the_monitor_accepts_at_most_two_workers_and_lives_through_an_fd_shortage(tmp_path):
    lines = []

    class Mon:  # what accept_worker uses of a Monitor
        log = log_to(lines)
        account = type("A", (), {"uid": os.getuid()})()
        refused = 0

        def _refuse(self, why):
            self.refused += 1

    mon, conns = Mon(), []
    monitor_mod.accept_worker(mon, _Server(OSError(errno.EMFILE, "Too many open files")), conns)
    assert conns == [] and any("cannot accept a connection" in x for x in lines), lines
    path = str(tmp_path / "m.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    server.listen(16)
    server.setblocking(False)
    clients = []
    try:
        for _ in range(6):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            c.connect(path)
            clients.append(c)
            monitor_mod.accept_worker(mon, server, conns)
        assert len(conns) == monitor_mod.MAX_CONNECTIONS == 2
        # the newest two are kept, and served: the oldest clients see theirs closed
        assert clients[0].recv(10) == b""
        clients[-1].send(b"ping")
        assert monitor_mod._wait(conns, 1.0) == [conns[-1]] and conns[-1].recv(10) == b"ping"
    finally:
        for s in (*clients, *conns, server):
            s.close()


def test_the_monitor_waits_on_descriptors_beyond_1024():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard > 2000, f"this machine's file limit ({hard}) cannot show it"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    high = os.dup2(a.fileno(), 2000)
    s = socket.socket(fileno=high)
    try:
        b.send(b"x")
        assert monitor_mod._wait([s], 1.0) == [s]  # select() raised ValueError here
    finally:
        s.close()
        a.close()
        b.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
