"""The operator's view, end to end: a real Prometheus scraping the worker, `spagate top` in a
real terminal (tmux), a log that names sources and stays bounded under a flood, and
fail2ban-regex with the shipped filter on a captured log."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from spagate.gate.core.reasons import vocabulary
from spagate.gate.kernel.abi import KernelReason
from spagate.lab.util import spa_verdicts, wait_for
from spagate.protocol import KeyPair, Message, encode, make_packet

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]
FILTER = REPO / "packaging" / "fail2ban" / "filter.d" / "spagate.conf"
GET = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"  # noqa: E501


def http_get(gate, url: str) -> str:
    """GET url from inside the gate's network namespace (where the worker listens)."""
    r = gate.lab.run("gate", [PY, "-c", GET, url], timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def raw(gate, host: str, *payloads: bytes, port: int = 8484) -> None:
    hexes = [p.hex() for p in payloads]
    gate.lab.run(host, [PY, "-m", "spagate.lab.probe", "raw", gate.ip(), str(port), *hexes,
                        "-t", "0.2"], timeout=60)  # fmt: skip


def test_real_prometheus_counts_the_knock_and_promtool_accepts_the_scrape(gate, tmp_path):
    gate.configure("metrics = 127.0.0.1:9848\nlog-format = json\n")
    gate.service()
    gate.start()
    scrape = http_get(gate, "http://127.0.0.1:9848/metrics")
    check = subprocess.run(["promtool", "check", "metrics"], input=scrape, capture_output=True,
                           text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: spagate\n"
        "    static_configs:\n      - targets: ['127.0.0.1:9848']\n"
    )
    prom = gate.lab.spawn("gate", [
        "prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}", "--web.listen-address=127.0.0.1:9090",
        "--log.level=warn",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip

    def query(q: str) -> list:
        url = "http://127.0.0.1:9090/api/v1/query?query=" + urllib.parse.quote(q)
        r = gate.lab.run("gate", [PY, "-c", GET, url], timeout=30)
        if r.returncode != 0:  # not up yet
            return []
        got = json.loads(r.stdout)
        assert got["status"] == "success", got
        return got["data"]["result"]

    def value(q: str) -> float | None:
        res = query(q)
        return float(res[0]["value"][1]) if res else None

    assert wait_for(lambda: value('up{job="spagate"}') == 1, timeout=30), prom.poll()
    assert value("sum(spagate_spa_admissions_total)") in (None, 0)
    assert gate.send("client", "--ip", "source").returncode == 0
    assert wait_for(lambda: gate.probe().startswith("connected"))
    assert wait_for(lambda: value("sum(spagate_spa_admissions_total)") == 1, timeout=15)
    # spagate send tags its packets (docs/admission.md): the tagged path.
    assert value('spagate_spa_admissions_total{identity="default",path="tagged"}') == 1
    assert value('spagate_xdp_packets_total{reason="spa_queued"}') == 1
    assert value("spagate_spa_admission_latency_seconds_count") == 1
    assert value("spagate_open_windows") == 1
    assert value('spagate_interface_guarded{interface="eth0"}') == 1
    assert value("spagate_monitor_up") == 1 and value("process_resident_memory_bytes") > 1e6
    # every kernel reason is a series, also the ones still at zero
    assert len(query("spagate_xdp_packets_total")) == len(KernelReason)
    # log-format = json: every line of the gate is one JSON object
    events = [json.loads(line) for line in gate.log]
    accept = next(e for e in events if e["event"] == "accept")
    assert accept["identity"] == "default" and accept["src"] == gate.lab["client"].v4


def tmux(sock: str, *args: str) -> str:
    r = subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_top_in_a_terminal_shows_the_accept_and_the_rate_and_quits_cleanly(gate, tmp_path):
    gate.configure("open-seconds = 30\n")
    gate.start()
    sock = f"{gate.lab.prefix}-top"
    top = (f"nsenter --net=/run/netns/{gate.lab['gate'].netns} {PY} -m spagate top "
           f"--pin-dir {gate.pin_dir}")  # fmt: skip
    # Run it twice: q quits the first, Ctrl-C the second; the terminal's settings before and
    # after each run are compared.
    script = tmp_path / "run.sh"
    # `trap : INT`: a handler, not an ignore (which top would inherit): top gets the Ctrl-C,
    # the shell lives on to write down top's exit status.
    script.write_text(
        f"cd {tmp_path}\ntrap : INT\nstty -g > before\n"
        f"{top}\necho TOP-EXIT=$? > first\nstty -g > after1\n"
        f"{top}\necho TOP-EXIT=$? > second\nstty -g > after2\nsleep 60\n"
    )
    tmux(sock, "new-session", "-d", "-s", "top", "-x", "80", "-y", "40",
         f"env LANG=C.UTF-8 TERM=xterm-256color sh {script}")  # fmt: skip
    try:
        knocker = gate.knocker()
        client = gate.lab["client"].v4
        screen = ""

        def seen() -> bool:
            nonlocal screen
            knocker.ask(f"one {client}")
            screen = tmux(sock, "capture-pane", "-p", "-t", "top")
            rate = re.search(r"^spa_queued\s+([0-9.,]+)\s", screen, re.M)
            return bool(re.search(rf"accept {re.escape(client)} identity=default from ", screen)
                        and rate and float(rate.group(1).replace(",", "")) > 0)  # fmt: skip

        assert wait_for(seen, timeout=20, step=0.3), screen
        assert "eth0 guarded" in screen and "open windows: 1" in screen
        assert max(len(line) for line in screen.splitlines()) <= 80
        knocker.close()
        tmux(sock, "send-keys", "-t", "top", "q")
        assert wait_for(lambda: (tmp_path / "first").exists(), timeout=10)
        assert (tmp_path / "first").read_text().strip() == "TOP-EXIT=0"
        assert wait_for(lambda: "verdict" in tmux(sock, "capture-pane", "-p", "-t", "top"),
                        timeout=10)  # fmt: skip
        tmux(sock, "send-keys", "-t", "top", "C-c")
        assert wait_for(lambda: (tmp_path / "second").exists(), timeout=10)
        assert (tmp_path / "second").read_text().strip() == "TOP-EXIT=0"
        before = (tmp_path / "before").read_text()
        assert (tmp_path / "after1").read_text() == before == (tmp_path / "after2").read_text()
        assert tmux(sock, "display-message", "-p", "-t", "top", "#{alternate_on}").strip() == "0"
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)


def stale_knocks(keys: KeyPair, ip: str, n: int) -> list[bytes]:
    """n valid packets stamped a minute ago: MAC-valid, refused as stale by the worker."""
    now = time.time_ns() // 1_000_000
    return [make_packet(keys, ip, now - 60_000 - i) for i in range(n)]


def crafted(keys: KeyPair, ip: str, version: int = 1, ahead_ms: int = 0) -> bytes:
    import os
    from ipaddress import ip_address

    msg = Message(time.time_ns() // 1_000_000 + ahead_ms, os.urandom(16), ip_address(ip), version)
    return encode(keys, msg, os.urandom(16))


def test_a_flood_leaves_a_bounded_log_that_names_sources_and_fail2ban_bans_only_key_holders(
    gate, tmp_path
):
    # Limits lifted: every packet reaches the MAC check (the junk) or the worker (MAC-valid);
    # the crafted packets are untagged, as a deployed sparoid client's.
    gate.configure("rate = 100000/s burst 100000\nspa-budget = 100000\nuntagged = accept\n")
    gate.start()
    client, flood = gate.lab["client"].v4, gate.lab["flood"].v4
    # Refusals a key holder's (broken) client causes: ahead of the clock, a wrong version.
    raw(gate, "client", crafted(gate.keys, client, ahead_ms=60_000))
    raw(gate, "flood", crafted(gate.keys, flood, version=7))
    assert gate.send("client", "--ip", "source").returncode == 0
    assert wait_for(lambda: spa_verdicts(gate).get("accepted") == 1)
    lines_before = len(gate.log)
    # The flood: 200,000 junk packets (one source, and spoofed ones), and 400 stale copies of
    # the key holder's knocks (MAC-valid: each reaches the worker) from the client.
    flooders = [
        gate.lab.spawn("flood", [PY, "-m", "spagate.lab.probe", "flood", gate.ip(), "8484",
                                 "--count", "100000", *spoof], stdout=subprocess.DEVNULL)
        for spoof in ([], ["--spoof", "198.18.0.0/15"])
    ]  # fmt: skip
    t0 = time.monotonic()
    stale = stale_knocks(gate.keys, client, 400)
    for i in range(0, len(stale), 100):
        raw(gate, "client", *stale[i : i + 100])
    for f in flooders:
        assert f.wait(120) == 0
    assert wait_for(lambda: spa_verdicts(gate).get("stale") == 400, timeout=20), spa_verdicts(gate)
    # An interval closes within 10 s: its summary names the stale knocks' source and identity.
    summary = f"[{client} identity=default "
    assert wait_for(lambda: any("stale=" in line and summary in line for line in gate.log),
                    timeout=15), "\n".join(gate.log[-20:])  # fmt: skip
    flood_lines = gate.log[lines_before:]
    # Bounded: per 10 s interval at most 20 accepts + 50 MAC-valid refusals + one line per
    # reason + one summary, whatever the flood.
    intervals = int((time.monotonic() - t0) // 10) + 2
    per_interval = 20 + 50 + len(vocabulary()) + 1
    assert len(flood_lines) <= intervals * per_interval, (len(flood_lines), intervals)
    refused = [line for line in flood_lines if " refuse stale from " in line]
    assert 1 <= len(refused) <= 50 * intervals
    assert all(f"from {client}:" in line and "identity=default" in line for line in refused)
    # fail2ban: the shipped filter matches the key holder's broken packets (future, version)
    # and nothing else of this log: not the accept, not the stale copies anyone could replay,
    # not the summaries, not junk.
    log = tmp_path / "spagate.log"
    log.write_text("\n".join(gate.log) + "\n")
    r = subprocess.run(["fail2ban-regex", "-r", "-o", "row", str(log), str(FILTER)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    matched = re.findall(r"^\['([^']+)',", r.stdout, re.M)
    assert sorted(matched) == sorted([client, flood]), r.stdout
    future = [line for line in gate.log if " refuse future from " in line]
    version = [line for line in gate.log if " refuse version from " in line]
    assert len(future) == len(version) == 1 and "identity=default" in future[0]


def test_a_rate_limited_key_holder_and_a_bad_mac_source_are_named_in_the_log(gate):
    gate.configure()  # default limits: 1/s burst 8 per source
    gate.start()
    client, flood = gate.lab["client"].v4, gate.lab["flood"].v4
    raw(gate, "flood", *[bytes(96)] * 3)  # junk: the MAC matches no key
    knocker = gate.knocker()
    knocker.ask("many 40 400 198.18.7.0 quiet")  # a key holder over its limits
    knocker.close()
    limited = {r.label for r in KernelReason if "rate" in r.label or "budget" in r.label}

    def named(reasons: set[str], src: str) -> bool:
        return any(re.search(rf"refuse ({'|'.join(reasons)}) from {re.escape(src)}:\d+", line)
                   for line in gate.log)  # fmt: skip

    assert wait_for(lambda: named({"spa_bad_mac"}, flood), timeout=5), "\n".join(gate.log)
    assert wait_for(lambda: named(limited, client), timeout=5), "\n".join(gate.log)
