"""open-cmd / close-cmd hooks (sparoid compatible), run by the monitor without ever blocking it.

A template is expanded as sparoid's sprintf does: `%s` becomes the address (IPv6 as eight
zero-padded groups, as sparoid writes it), `%%` becomes `%`. Hooks run from one FIFO queue, at
most `max_running` at a time: none is ever skipped, however many windows open at once (a skipped
open or close is a lock-out, or a door left open, where the hook drives an external firewall).
One close is pending per address, at the end of its latest window, so overlapping windows do
not close early.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import deque
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from spagate.gate.core.eventlog import EventLog

_FORMAT = re.compile(r"%(.)")


def hook_arg(ip: IPv4Address | IPv6Address) -> str:
    return ip.exploded if isinstance(ip, IPv6Address) else str(ip)


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
        self._queue: deque[tuple[str, str]] = deque()  # (template, arg), in order
        self._closes: dict[str, float] = {}  # address text -> when to queue close-cmd
        self.started = 0
        self.failed = 0

    def opened(self, ip: IPv4Address | IPv6Address, seconds: float) -> None:
        arg = hook_arg(ip)
        if self.open_cmd:
            self._queue.append((self.open_cmd, arg))
        if self.close_cmd:
            due = self._clock() + seconds
            self._closes[arg] = max(due, self._closes.get(arg, 0.0))
        self._start()

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
        for arg in [a for a, due in self._closes.items() if due <= now]:
            del self._closes[arg]
            self._queue.append((self.close_cmd, arg))
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
            template, arg = self._queue[0]
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
            self.started += 1
            self._running.append((cmd, proc))

    def shutdown(self, timeout: float = 10.0) -> None:
        """Run every pending close now (an external firewall must not stay open behind us)
        and wait for the hooks; queued opens are dropped, their closes are not."""
        self._queue = deque((t, a) for t, a in self._queue if t != self.open_cmd)
        for arg in list(self._closes):
            self._queue.append((self.close_cmd, arg))
        self._closes.clear()
        deadline = self._clock() + timeout
        while (self._queue or self._running) and self._clock() < deadline:
            self._reap()
            self._start()
            time.sleep(0.02)
        for what, proc in self._running:
            proc.kill()
            self._log.warning(f"hook killed at shutdown: {what}")
        if self._queue:
            self._log.error(f"{len(self._queue)} hook(s) could not run at shutdown")
        self._running.clear()
