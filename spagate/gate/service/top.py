"""`spagate top`: a live view of the gate in the terminal, refreshed once a second.

It reads what the kernel and the worker publish, never the worker itself: the per-CPU
counters (packets per second per verdict reason, from the difference of two readings), the
allow map (open windows and their remaining seconds), the state file (the latest accepts and
refusals with their sources, the monitor's hooks) and the real attachment of each interface
(spagate.gate.service.status). Root, as `status`. Fits 80 columns; q or Ctrl-C quits and
gives the terminal back as it was. `--once` prints one screen as plain text (scripts, tests).

render() is pure (a Frame in, rich renderables out), so its layout is tested without a
terminal.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from spagate.errors import SpagateError
from spagate.gate.kernel.abi import KernelReason

HISTORY = 30  # seconds of sparkline
BARS = " ▁▂▃▄▅▆▇█"
MAX_REASONS, MAX_WINDOWS, MAX_EVENTS = 10, 5, 4


@dataclass
class Frame:
    """One reading: everything a screen shows."""

    when: float
    rates: dict[str, float]  # reason -> packets/s over the last interval
    totals: dict[str, int]
    history: dict[str, list[float]]  # reason -> rates, oldest first
    windows: list[tuple[str, str, float]]  # (ip, ports, seconds left), soonest first
    windows_total: int
    interfaces: list[tuple[str, bool, str]]  # (name, guarded, mode or why)
    worker: str  # "pid 123" or "NOT RUNNING"
    accepts: list[dict] = field(default_factory=list)  # latest first
    refusals: list[dict] = field(default_factory=list)
    hooks: dict | None = None


def sparkline(values: list[float], width: int = 12) -> str:
    vals = values[-width:]
    top = max(vals, default=0)
    if top <= 0:
        return " " * width
    bars = "".join(BARS[min(8, round(v / top * 8))] if v > 0 else " " for v in vals)
    return bars.rjust(width)


def _rate(r: float) -> str:
    return f"{r:,.0f}" if r >= 10 or r == 0 else f"{r:.1f}"


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def render(f: Frame) -> Group:
    head = Text()
    head.append("spagate top ", style="bold")
    for name, ok, what in f.interfaces:
        head.append(f" {name} ", style="bold")
        head.append("guarded" if ok else "UNGUARDED", style="green" if ok else "bold red")
        head.append(f" ({what})")
    if not f.interfaces:
        head.append(" no interface", style="bold red")
    head.append(f"  worker {f.worker}", style="" if f.worker.startswith("pid") else "bold red")
    head.append(f"  {_clock(f.when)}  q quits")

    verdicts = Table(box=None, pad_edge=False, expand=False, padding=(0, 1))
    verdicts.add_column("verdict", width=24, no_wrap=True)
    verdicts.add_column("pkts/s", justify="right", width=9)
    verdicts.add_column(f"last {HISTORY}s", width=HISTORY, no_wrap=True)
    verdicts.add_column("total", justify="right", width=12)
    shown = sorted(
        (r for r in f.totals if f.totals[r] or f.rates.get(r)),
        key=lambda r: (-f.rates.get(r, 0), -f.totals[r], r),
    )
    for r in shown[:MAX_REASONS]:
        verdicts.add_row(r, _rate(f.rates.get(r, 0)), sparkline(f.history.get(r, []), HISTORY),
                         f"{f.totals[r]:,}")  # fmt: skip
    if not shown:
        verdicts.add_row("(no packets yet)", "", "", "")

    wins = Table(box=None, pad_edge=False, padding=(0, 1))
    wins.add_column(f"open windows: {f.windows_total}", width=40, no_wrap=True)
    wins.add_column("ports", width=20, no_wrap=True)
    wins.add_column("left", justify="right", width=10)
    for ip, ports, left in f.windows[:MAX_WINDOWS]:
        wins.add_row(ip, ports, f"{left:,.0f}s")
    if f.windows_total > MAX_WINDOWS:
        wins.add_row(f"... and {f.windows_total - MAX_WINDOWS} more", "", "")

    def events(title: str, rows: list[dict], accept: bool) -> Table:
        t = Table(box=None, pad_edge=False, padding=(0, 1))
        t.add_column(title, width=8, no_wrap=True)
        t.add_column("", width=69, no_wrap=True, overflow="ellipsis")
        for e in rows[:MAX_EVENTS]:
            if accept:
                what = (f"accept {e.get('ip')} identity={e.get('identity')} from "
                        f"{e.get('src')}:{e.get('sport')} via {e.get('via')}")  # fmt: skip
            else:
                who = f" identity={e['identity']}" if e.get("identity") else ""
                what = f"{e.get('reason')} from {e.get('src')}:{e.get('sport')}{who}"
            t.add_row(_clock(e.get("t", 0)), what)
        if not rows:
            t.add_row("", "(none yet)")
        return t

    parts = [head, Text(""), verdicts, Text(""), wins, Text(""),
             events("accepts", f.accepts, True), events("refusals", f.refusals, False)]  # fmt: skip
    if f.hooks:
        h = f.hooks
        parts.append(Text(f"hooks: {h.get('queued', 0)} queued, {h.get('running', 0)} running, "
                          f"{h.get('failed', 0)} failed of {h.get('started', 0)}"))  # fmt: skip
    return Group(*parts)


class Reader:
    """Reads the kernel and the state file once per call to frame()."""

    def __init__(self, pin_dir: str):
        from spagate.gate.kernel.maps import GateMaps

        if not Path(pin_dir, "allow").exists():
            raise SpagateError(f"no gate state under {pin_dir}: is `spagate attach` running?")
        self.pin_dir = pin_dir
        self.maps = GateMaps.from_pin_dir(pin_dir)
        self._prev: tuple[float, dict[str, int]] | None = None
        self._hist: dict[str, deque[float]] = {r.label: deque(maxlen=HISTORY) for r in KernelReason}

    def frame(self) -> Frame:
        from spagate.gate.service.state import read_state
        from spagate.gate.service.status import gate_status

        now = time.monotonic()
        counts = self.maps.counters()
        rates: dict[str, float] = {}
        if self._prev is not None:
            t0, before = self._prev
            dt = max(now - t0, 1e-3)
            for r, n in counts.items():
                rates[r] = max(0, n - before.get(r, 0)) / dt
                self._hist.setdefault(r, deque(maxlen=HISTORY)).append(rates[r])
        self._prev = (now, counts)
        entries = self.maps.allowed()
        windows = [
            (str(e.ip), f"{e.proto}/{e.port}" if e.proto and e.port else (e.proto or "all") +
             " ports", e.remaining_s)
            for e in entries
        ]  # fmt: skip
        st = gate_status(self.pin_dir)
        state = read_state(self.pin_dir) or {}
        recent = list(reversed(state.get("recent") or [])) if st.worker_running else []
        return Frame(
            when=time.time(),
            rates=rates,
            totals=counts,
            history={r: list(h) for r, h in self._hist.items()},
            windows=windows,
            windows_total=len(windows),
            interfaces=[
                (i.name, i.guarded, i.mode or "" if i.guarded else i.why) for i in st.interfaces
            ],  # fmt: skip
            worker=f"pid {st.worker_pid}" if st.worker_running else "NOT RUNNING",
            accepts=[e for e in recent if e.get("event") == "accept"],
            refusals=[e for e in recent if e.get("event") == "refuse"],
            hooks=state.get("hooks") if st.worker_running else None,
        )

    def close(self) -> None:
        self.maps.close()


@contextlib.contextmanager
def _cbreak(fd: int):
    """Keys without Enter, no echo; the terminal's settings come back whatever happens."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _key(fd: int, timeout: float) -> str:
    ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
    if not ready:
        return ""
    try:
        return os.read(fd, 16).decode(errors="replace")
    except OSError:
        return ""


def run_top(pin_dir: str, once: bool = False) -> int:
    reader = Reader(pin_dir)
    try:
        if once:
            reader.frame()
            time.sleep(1.0)
            Console(width=80, color_system=None, force_terminal=False,
                    highlight=False).print(render(reader.frame()))  # fmt: skip
            return 0
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise SpagateError("spagate top needs a terminal (for a script: spagate top --once)")
        from rich.live import Live

        console = Console(highlight=False)
        fd = sys.stdin.fileno()
        with _cbreak(fd), Live(console=console, screen=True, auto_refresh=False) as live:
            try:
                while True:
                    start = time.monotonic()
                    live.update(render(reader.frame()), refresh=True)
                    key = _key(fd, 1.0 - (time.monotonic() - start))
                    if key[:1] in ("q", "Q"):
                        break
                    if key:  # another key: wait out the rest of the second
                        time.sleep(max(0.0, 1.0 - (time.monotonic() - start)))
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        reader.close()
