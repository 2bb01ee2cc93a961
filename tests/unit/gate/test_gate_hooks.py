"""open-cmd / close-cmd run as real shell commands, without blocking, closes at window end."""

import time
from ipaddress import ip_address

import pytest

from spagate.gate.core.eventlog import EventLog
from spagate.gate.service import hooks as hooks_mod
from spagate.gate.service.hooks import Hooks, HooksFull, expand, hook_arg


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_ipv6_is_written_as_sparoid_does():
    assert hook_arg(ip_address("2001:db8::1234:5678")) == "2001:0db8:0000:0000:0000:0000:1234:5678"
    assert hook_arg(ip_address("192.0.2.33")) == "192.0.2.33"


def test_open_then_close_after_the_latest_window(tmp_path):
    out = tmp_path / "hooks.log"
    now = [0.0]
    lines = []
    log = EventLog(lambda lvl, line: lines.append(line), time.monotonic)
    hooks = Hooks(f"echo open %s >> {out}", f"echo close %s >> {out}", log, clock=lambda: now[0])
    hooks.opened(ip_address("203.0.113.7"), 15)
    now[0] = 10
    hooks.opened(ip_address("203.0.113.7"), 15)  # extends: close at 25, not 15
    # (the second open starts once the first is reaped: one hook at a time per address)
    assert wait_for(lambda: hooks.poll() or (out.exists() and out.read_text().count("open") == 2))
    now[0] = 16
    hooks.poll()
    time.sleep(0.2)
    assert "close" not in out.read_text()
    now[0] = 25
    hooks.poll()
    assert wait_for(lambda: "close 203.0.113.7" in out.read_text())
    hooks.shutdown()
    assert out.read_text().count("close") == 1


def test_a_slow_hook_does_not_block_and_a_failing_one_is_logged(tmp_path):
    lines = []
    log = EventLog(lambda lvl, line: lines.append(line), time.monotonic)
    hooks = Hooks("sleep 2; exit 3", None, log)
    t = time.monotonic()
    hooks.opened(ip_address("192.0.2.1"), 15)
    assert time.monotonic() - t < 0.5
    hooks.shutdown()
    hooks2 = Hooks("exit 3", None, log)
    hooks2.opened(ip_address("192.0.2.1"), 15)
    assert wait_for(lambda: (hooks2.poll(), any("exit status 3" in x for x in lines))[1])


def test_shutdown_runs_pending_closes(tmp_path):
    out = tmp_path / "hooks.log"
    log = EventLog(lambda lvl, line: None, time.monotonic)
    hooks = Hooks(None, f"echo close %s >> {out}", log)
    hooks.opened(ip_address("::1"), 600)
    hooks.shutdown()
    assert "close 0000:0000:0000:0000:0000:0000:0000:0001" in out.read_text()


def test_no_hook_is_ever_skipped_and_at_most_n_run_at_once(tmp_path):
    # Each hook appends its start, sleeps, appends its end: the log shows the concurrency.
    out = tmp_path / "hooks.log"
    now = [0.0]
    log = EventLog(lambda lvl, line: None, time.monotonic)
    cmd = f"echo start >> {out}; sleep 0.05; echo end %s >> {out}"
    hooks = Hooks(cmd, cmd.replace("end", "closed"), log, clock=lambda: now[0], max_running=3)
    for i in range(40):
        hooks.opened(ip_address(f"192.0.2.{i + 1}"), 1)
    assert hooks.running == 3 and hooks.depth == 37  # queued, not skipped
    now[0] = 2
    assert wait_for(lambda: (hooks.poll(), hooks.running == 0 and hooks.depth == 0)[1], 30)
    lines = out.read_text().splitlines()
    assert sum(x.startswith("end") for x in lines) == 40
    assert sum(x.startswith("closed") for x in lines) == 40
    depth, peak = 0, 0
    for x in lines:
        depth += 1 if x == "start" else -1
        peak = max(peak, depth)
    assert peak <= 3


def test_templates_expand_as_sparoids_sprintf():
    assert expand("date +%%T; echo %s", "192.0.2.1") == "date +%T; echo 192.0.2.1"
    assert expand("%d %s %%s", "x") == "%d x %s"


def queued(hooks) -> list[tuple[str, str]]:
    return [(e.kind, e.arg) for e in hooks._queue if e.live]


def test_per_address_the_queue_holds_at_most_an_open_and_a_close():
    now = [0.0]
    log = EventLog(lambda lvl, line: None, time.monotonic)
    hooks = Hooks("true open %s", "true close %s", log, clock=lambda: now[0], max_running=0)
    a = ip_address("203.0.113.7")
    for _ in range(1000):  # a worker repeating itself: one open waits, one close is due
        hooks.opened(a, 10)
    assert queued(hooks) == [("open", "203.0.113.7")]
    for t in range(10, 10_000, 10):  # every window ends, and a new one opens at once
        now[0] = t
        hooks.poll()
        assert queued(hooks)[-1] == ("close", "203.0.113.7")
        hooks.opened(a, 10)  # cancels that close (the door is open and stays so)
        assert queued(hooks) == [("open", "203.0.113.7")], t
    assert len(hooks._queue) < 1100  # the cancelled ones do not pile up
    now[0] = 10_000
    hooks.poll()
    assert queued(hooks) == [("open", "203.0.113.7"), ("close", "203.0.113.7")]
    hooks.shutdown(timeout=0.05)


def test_an_address_s_close_never_runs_beside_its_open(tmp_path):
    """A window shorter than its open-cmd takes: the close waits for the open to end."""
    out = tmp_path / "hooks.log"
    now = [0.0]
    log = EventLog(lambda lvl, line: None, time.monotonic)
    hooks = Hooks(f"sleep 0.3; echo open %s >> {out}", f"echo close %s >> {out}", log,
                  clock=lambda: now[0])  # fmt: skip
    hooks.opened(ip_address("192.0.2.5"), 1)
    hooks.opened(ip_address("192.0.2.6"), 100)
    now[0] = 1
    hooks.poll()  # 192.0.2.5's close is due while its open still runs
    assert hooks.running == 2 and hooks.depth == 1  # the other address's open runs meanwhile
    assert wait_for(lambda: hooks.poll() or (out.exists() and "close" in out.read_text()))
    assert out.read_text().splitlines()[:1] in (["open 192.0.2.5"], ["open 192.0.2.6"])
    lines = out.read_text().splitlines()
    assert lines.index("open 192.0.2.5") < lines.index("close 192.0.2.5"), lines
    hooks.shutdown()


def test_beyond_max_addresses_a_window_s_hooks_are_refused_whole(monkeypatch):
    monkeypatch.setattr(hooks_mod, "MAX_ADDRESSES", 3)
    now = [0.0]
    log = EventLog(lambda lvl, line: None, time.monotonic)
    hooks = Hooks("true open %s", "true close %s", log, clock=lambda: now[0], max_running=0)
    for i in range(3):
        hooks.opened(ip_address(f"192.0.2.{i}"), 10)
    with pytest.raises(HooksFull):
        hooks.opened(ip_address("192.0.2.9"), 10)
    assert hooks.depth == 3 and "192.0.2.9" not in hooks._closes  # neither open nor close
    hooks.opened(ip_address("192.0.2.1"), 20)  # one already waiting may still be extended
    assert hooks._closes["192.0.2.1"] == 20
    now[0] = 10
    hooks.poll()  # two closes due; 192.0.2.1's window was extended to 20
    assert sorted(a for k, a in queued(hooks) if k == "close") == ["192.0.2.0", "192.0.2.2"]
    now[0] = 20
    hooks.poll()
    assert [a for k, a in queued(hooks) if k == "close"][-1] == "192.0.2.1"
    assert not hooks._closes
    hooks.shutdown(timeout=0.05)
