"""open-cmd / close-cmd hooks (sparoid compatible), run by the monitor without ever blocking it.

A template is expanded as sparoid's sprintf does: `%s` becomes the address (IPv6 as eight
zero-padded groups, as sparoid writes it), `%%` becomes `%`. Hooks run from one FIFO queue, at
most `max_running` at a time: none is ever skipped, however many windows open at once (a skipped
open or close is a lock-out, or a door left open, where the hook drives an external firewall).
One close is pending per address, at the end of its latest window, so overlapping windows do
not close early. Per address the queue holds at most an open and a close: an open already
waiting is not queued twice, and a new window cancels a close that has not started (the door
is open and stays so) instead of queueing another open. An address's hooks run one at a time,
in order: its close never races its open. At most MAX_ADDRESSES addresses have hooks waiting
or a close pending: an open beyond that is refused as a whole (HooksFull: neither its open nor
its close), so no open ever lacks its close and a worker that floods requests cannot grow the
monitor without bound.
"""

from __future__ import annotations

import heapq
import re
import subprocess
import time
from collections import deque
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from spagate.gate.core.eventlog import EventLog

_FORMAT = re.compile(r"%(.)")
MAX_ADDRESSES = 100_000  # addresses with a close pending, and with hooks queued: each at most


class HooksFull(ValueError):
    """Too many addresses have hooks waiting: this window's hooks are refused."""


_ARG = re.compile(r"[0-9a-f.:]{7,39}")


def hook_arg(ip: IPv4Address | IPv6Address) -> str:
    """The address as a hook gets it (it goes through /bin/sh -c): digits, hex, dots and
    colons only, or ValueError (privsep.decode never lets anything else through)."""
    arg = ip.exploded if isinstance(ip, IPv6Address) else str(ip)
    if not _ARG.fullmatch(arg):
        raise ValueError(f"{arg[:60]!r} is not an address a hook may be given")
    return arg


def expand(template: str, arg: str) -> str:
    """sprintf-like: %s -> arg, %% -> %; any other %x stays as it is."""
    return _FORMAT.sub(lambda m: arg if m.group(1) == "s" else "%" if m.group(1) == "%" else m[0],
                       template)  # fmt: skip


class _Entry:
    """A queued hook: kind "open" or "close", its template and address; live until it
    starts or is cancelled (a close made pointless by a new window of the same address)."""

    __slots__ = ("kind", "template", "arg", "live")

    def __init__(self, kind: str, template: str, arg: str):
        self.kind, self.template, self.arg, self.live = kind, template, arg, True


class Hooks:
    def __init__(
        self,
        open_cmd: str | None,
        close_cmd: str | None,
        log: EventLog,
        clock: Callable[[], float] = time.monotonic,
        max_running: int = 16,
    ):
        self.open_cmd, self.close_cmd = open_cmd, close_cmd
        self._log, self._clock, self._max = log, clock, max_running
        self._running: list[tuple[str, str, subprocess.Popen]] = []  # (cmd, address, proc)
        self._queue: deque[_Entry] = deque()  # in order; dead entries are skipped
        self._by_arg: dict[str, list[_Entry]] = {}  # address -> its live entries, in order
        self._live = 0
        self._closes: dict[str, float] = {}  # address text -> when to queue close-cmd
        self._due: list[tuple[float, str]] = []  # heap of (when, address); stale ones skipped
        self.started = 0
        self.failed = 0

    def opened(self, ip: IPv4Address | IPv6Address, seconds: float) -> None:
        """Queue open-cmd for ip now and close-cmd in seconds. Raises ValueError (HooksFull,
        or an address no hook may be given): then neither runs."""
        arg = hook_arg(ip)
        mine = self._by_arg.get(arg)
        new = arg not in self._closes and not mine
        if new and max(len(self._closes), len(self._by_arg)) >= MAX_ADDRESSES:
            raise HooksFull(f"{MAX_ADDRESSES} addresses have hooks waiting")
        if mine and mine[-1].kind == "close":
            # Its last window's close has not started: the address is open (its open ran or
            # waits before that close). Cancel the close rather than queue another open: per
            # address the queue holds at most an open and a close.
            self._drop(mine[-1])
            self._tidy()
        elif self.open_cmd and not (mine and mine[-1].kind == "open"):
            self._enqueue("open", self.open_cmd, arg)
        if self.close_cmd:
            due = self._clock() + seconds
            if due > self._closes.get(arg, 0.0):
                self._closes[arg] = due
                heapq.heappush(self._due, (due, arg))
                if len(self._due) > 2 * len(self._closes) + 1024:  # superseded ones: drop
                    self._due = [(d, a) for a, d in self._closes.items()]
                    heapq.heapify(self._due)
        self._start()

    def _enqueue(self, kind: str, template: str, arg: str) -> None:
        e = _Entry(kind, template, arg)
        self._queue.append(e)
        self._by_arg.setdefault(arg, []).append(e)
        self._live += 1

    def _drop(self, e: _Entry) -> None:
        """e leaves the live entries (started or cancelled); the queue forgets it in _tidy."""
        e.live = False
        self._live -= 1
        mine = self._by_arg[e.arg]
        mine.remove(e)  # (at most two)
        if not mine:
            del self._by_arg[e.arg]

    def _tidy(self) -> None:
        """Forget the dead entries at the head, and compact a queue that is mostly dead."""
        while self._queue and not self._queue[0].live:
            self._queue.popleft()
        if len(self._queue) > 2 * self._live + 1024:
            self._queue = deque(x for x in self._queue if x.live)

    @property
    def depth(self) -> int:
        """Hooks waiting for a free slot."""
        return self._live

    @property
    def running(self) -> int:
        return len(self._running)

    def poll(self) -> None:
        """Reap finished hooks, queue the closes that are due, start what fits."""
        now = self._clock()
        while self._due and self._due[0][0] <= now:
            due, arg = heapq.heappop(self._due)
            if self._closes.get(arg) == due:  # else superseded by a later window's end
                del self._closes[arg]
                if self.close_cmd:
                    self._enqueue("close", self.close_cmd, arg)
        self._reap()
        self._start()

    def _reap(self) -> None:
        still = []
        for what, arg, proc in self._running:
            rc = proc.poll()
            if rc is None:
                still.append((what, arg, proc))
            elif rc != 0:
                self.failed += 1
                self._log.warning(f"hook failed with exit status {rc}: {what}")
        self._running = still

    def _start(self) -> None:
        """Start queued hooks in order, up to max_running, one at a time per address: an
        address's close never runs beside its open (an `nft delete` racing its `nft add`
        would leave the door open), and its hooks never pass each other."""
        self._tidy()
        if len(self._running) >= self._max or not self._live:
            return
        busy = {arg for _, arg, _ in self._running}
        for e in list(self._queue):
            if len(self._running) >= self._max:
                break
            if not e.live:
                continue
            if e.arg in busy:  # a hook of this address runs, or an earlier one waits
                continue
            busy.add(e.arg)
            cmd = expand(e.template, e.arg)
            try:
                proc = subprocess.Popen(
                    ["/bin/sh", "-c", cmd],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as err:
                # Kept in the queue and retried at the next poll: never skipped.
                self._log.warning(f"hook could not start ({err.strerror}), retrying: {cmd}")
                return
            self._drop(e)
            self.started += 1
            self._running.append((cmd, e.arg, proc))
        self._tidy()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Run every pending close now (an external firewall must not stay open behind us)
        and wait for the hooks; queued opens are dropped, their closes are not."""
        for e in [e for e in self._queue if e.live and e.kind == "open"]:
            self._drop(e)
        for arg in list(self._closes):
            if self.close_cmd:
                self._enqueue("close", self.close_cmd, arg)
        self._closes.clear()
        self._due.clear()
        deadline = time.monotonic() + timeout  # real seconds, whatever clock the windows use
        while (self._live or self._running) and time.monotonic() < deadline:
            self._reap()
            self._start()
            time.sleep(0.02)
        for what, _arg, proc in self._running:
            proc.kill()
            self._log.warning(f"hook killed at shutdown: {what}")
        if self._live:
            self._log.error(f"{self._live} hook(s) could not run at shutdown")
        self._running.clear()
