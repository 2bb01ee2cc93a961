"""open-cmd / close-cmd hooks (sparoid compatible), run without ever blocking the daemon.

`%s` becomes the address as sparoid writes it (IPv6 as eight zero-padded groups). One close is
pending per address, at the end of its latest window, so overlapping windows do not close early.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from spagate.gate.core.eventlog import EventLog


def hook_arg(ip: IPv4Address | IPv6Address) -> str:
    return ip.exploded if isinstance(ip, IPv6Address) else str(ip)


class Hooks:
    def __init__(
        self,
        open_cmd: str | None,
        close_cmd: str | None,
        log: EventLog,
        clock: Callable[[], float] = time.monotonic,
        max_running: int = 32,
    ):
        self.open_cmd, self.close_cmd = open_cmd, close_cmd
        self._log, self._clock, self._max = log, clock, max_running
        self._running: list[tuple[str, subprocess.Popen]] = []
        self._closes: dict[str, float] = {}  # address text -> when to run close-cmd

    def opened(self, ip: IPv4Address | IPv6Address, seconds: float) -> None:
        arg = hook_arg(ip)
        if self.open_cmd:
            self._run(self.open_cmd, arg)
        if self.close_cmd:
            due = self._clock() + seconds
            self._closes[arg] = max(due, self._closes.get(arg, 0.0))

    def poll(self) -> None:
        """Reap finished hooks and run the closes that are due."""
        now = self._clock()
        for arg in [a for a, due in self._closes.items() if due <= now]:
            # A close leaves the pending list only once it has started: an external firewall
            # must never stay open because a close was skipped. Retried on the next poll.
            if self._run(self.close_cmd, arg, always=True):
                del self._closes[arg]
        still = []
        for what, proc in self._running:
            rc = proc.poll()
            if rc is None:
                still.append((what, proc))
            elif rc != 0:
                self._log.warning(f"hook failed with exit status {rc}: {what}")
        self._running = still

    def shutdown(self) -> None:
        """Run every pending close now: an external firewall must not stay open behind us."""
        for arg in list(self._closes):
            if not self._run(self.close_cmd, arg, always=True):
                self._log.error(f"close-cmd for {arg} could not run at shutdown")
        self._closes.clear()
        deadline = self._clock() + 5
        for what, proc in self._running:
            try:
                proc.wait(timeout=max(0.0, deadline - self._clock()))
            except subprocess.TimeoutExpired:
                proc.kill()
                self._log.warning(f"hook killed after 5s at shutdown: {what}")
        self._running.clear()

    def _run(self, template: str | None, arg: str, always: bool = False) -> bool:
        """Start a hook; True once started. `always`: closes are exempt from the cap."""
        if not template:
            return True
        cmd = template.replace("%s", arg)
        if len(self._running) >= self._max and not always:
            self._log.warning(f"{self._max} hooks still running: skipped {cmd}")
            return False
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", cmd],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            self._log.warning(f"hook could not start ({e.strerror}): {cmd}")
            return False
        self._running.append((cmd, proc))
        return True
