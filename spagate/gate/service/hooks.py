"""open-cmd / close-cmd hooks (sparoid compatible), run by the monitor without ever blocking it.

A template is expanded as sparoid's sprintf does: `%s` becomes the address (IPv6 as eight
zero-padded groups, as sparoid writes it), `%%` becomes `%`. Hooks run from one FIFO queue, at
most `max_running` at a time: none is ever skipped, however many windows open at once (a skipped
open or close is a lock-out, or a door left open, where the hook drives an external firewall).
One close is pending per address, at the end of its latest window, so overlapping windows do
not close early. An open already waiting for an address is not queued twice (it runs, and
opens the same). At most MAX_ADDRESSES addresses have hooks waiting: an open beyond that is
refused as a whole (HooksFull: neither its open nor its close), so no open ever lacks its close
and a worker that floods requests cannot grow the monitor without bound.
"""

from __future__ import annotations

import heapq
import re
import subprocess
import time
from collections import Counter, deque
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
        self._running: list[tuple[str, subprocess.Popen]] = []
        self._queue: deque[tuple[str, str, str]] = deque()  # (kind, template, arg), in order
        self._closes: dict[str, float] = {}  # address text -> when to queue close-cmd
        self._due: list[tuple[float, str]] = []  # heap of (when, address); stale ones skipped
        self._waiting: Counter[str] = Counter()  # address -> its entries in the queue
        self._last: dict[str, str] = {}  # address -> the kind of its last queued entry
        self.started = 0
        self.failed = 0

    def opened(self, ip: IPv4Address | IPv6Address, seconds: float) -> None:
        """Queue open-cmd for ip now and close-cmd in seconds. Raises ValueError (HooksFull,
        or an address no hook may be given): then neither runs."""
        arg = hook_arg(ip)
        new = arg not in self._closes and arg not in self._waiting
        if new and max(len(self._closes), len(self._waiting)) >= MAX_ADDRESSES:
            raise HooksFull(f"{MAX_ADDRESSES} addresses have hooks waiting")
        if self.open_cmd and self._last.get(arg) != "open":
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
        self._queue.append((kind, template, arg))
        self._waiting[arg] += 1
        self._last[arg] = kind

    @property
    def depth(self) -> int:
        """Hooks waiting for a free slot."""
        return len(self._queue)

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
                self._enqueue("close", self.close_cmd, arg)
        self._reap()
        self._start()

    def _reap(self) -> None:
        still = []
        for what, proc in self._running:
            rc = proc.poll()
            if rc is None:
                still.append((what, proc))
            elif rc != 0:
                self.failed += 1
                self._log.warning(f"hook failed with exit status {rc}: {what}")
        self._running = still

    def _start(self) -> None:
        while self._queue and len(self._running) < self._max:
            _kind, template, arg = self._queue[0]
            cmd = expand(template, arg)
            try:
                proc = subprocess.Popen(
                    ["/bin/sh", "-c", cmd],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as e:
                # Kept at the head of the queue and retried at the next poll: never skipped.
                self._log.warning(f"hook could not start ({e.strerror}), retrying: {cmd}")
                return
            self._queue.popleft()
            self._waiting[arg] -= 1
            if not self._waiting[arg]:
                del self._waiting[arg]
                self._last.pop(arg, None)
            self.started += 1
            self._running.append((cmd, proc))

    def shutdown(self, timeout: float = 10.0) -> None:
        """Run every pending close now (an external firewall must not stay open behind us)
        and wait for the hooks; queued opens are dropped, their closes are not."""
        kept = [e for e in self._queue if e[0] == "close"]
        self._queue, self._waiting, self._last = deque(), Counter(), {}
        for kind, template, arg in kept:
            self._enqueue(kind, template, arg)
        for arg in list(self._closes):
            self._enqueue("close", self.close_cmd, arg)
        self._closes.clear()
        self._due.clear()
        deadline = time.monotonic() + timeout  # real seconds, whatever clock the windows use
        while (self._queue or self._running) and time.monotonic() < deadline:
            self._reap()
            self._start()
            time.sleep(0.02)
        for what, proc in self._running:
            proc.kill()
            self._log.warning(f"hook killed at shutdown: {what}")
        if self._queue:
            self._log.error(f"{len(self._queue)} hook(s) could not run at shutdown")
        self._running.clear()
