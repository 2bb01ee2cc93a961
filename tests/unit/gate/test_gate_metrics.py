"""The exporter's output (promtool's rules), the dashboard's queries, and the drop-sample
adapter, without a gate: the collector reads what it is handed."""

from __future__ import annotations

import json
import re
import subprocess
from ipaddress import ip_address
from pathlib import Path

from prometheus_client import generate_latest

from spagate.gate.core.samples import Sample
from spagate.gate.kernel.abi import KernelReason
from spagate.gate.service.metrics import Metrics
from spagate.gate.service.samples import DropSamples
from spagate.gate.service.worker import Snapshot

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "packaging" / "grafana" / "spagate-dashboard.json"


def scrape(snapshot: Snapshot) -> str:
    m = Metrics(lambda: snapshot, lambda: {"spa_queued": 3, "spa_bad_mac": 7}, lambda: 2)
    m.observe_ns(400_000)
    return generate_latest(m.registry).decode()


SNAP = Snapshot(
    tally={("accepted", "alice", "untagged"): 3, ("stale", "alice", ""): 1, ("mac", "", ""): 2},
    guarded={"eth0": True, "eth1": False}, link_checks=10, links_lost=1,
    hooks={"queued": 1, "running": 2, "started": 5, "failed": 1, "reattached": 1, "refused": 0},
)  # fmt: skip


def test_the_scrape_passes_promtool_and_exports_every_kernel_reason():
    text = scrape(SNAP)
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    for reason in KernelReason:  # generic: a reason appended to reasons.h shows up by itself
        assert f'spagate_xdp_packets_total{{reason="{reason.label}"}}' in text
    assert 'spagate_xdp_packets_total{reason="spa_bad_mac"} 7.0' in text
    assert 'spagate_spa_admissions_total{identity="alice",path="untagged"} 3.0' in text
    refusals = "spagate_spa_refusals_total"
    assert f'{refusals}{{identity="alice",reason="stale",stage="verifier"}} 1.0' in text
    assert f'{refusals}{{identity="",reason="mac",stage="verifier"}} 2.0' in text
    assert 'spagate_interface_guarded{interface="eth1"} 0.0' in text
    assert "spagate_hooks_queued 1.0" in text and "spagate_hooks_failed_total 1.0" in text
    assert "spagate_open_windows 2.0" in text and "process_resident_memory_bytes" in text
    assert 'spagate_spa_admission_latency_seconds_bucket{le="0.0005"} 1.0' in text


def test_without_a_monitor_report_there_are_no_hook_figures():
    text = scrape(Snapshot())
    assert "spagate_monitor_up 0.0" in text and "spagate_hooks_queued" not in text


def test_the_dashboard_queries_parse_and_use_only_exported_metrics(tmp_path):
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"].replace("$job", ".*") for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n- name: dashboard\n  rules:\n" + "".join(
        f"  - record: dashboard:q{i}\n    expr: {json.dumps(e)}\n" for i, e in enumerate(exprs)
    ))  # fmt: skip
    r = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr  # every query is valid PromQL
    exported = set(re.findall(r"^(\w+?)(?:\{| )", scrape(SNAP), re.M))
    used = {n for e in exprs for n in re.findall(r"\b((?:spagate|process)_\w+)", e)}
    assert used <= exported, used - exported


def test_the_sample_adapter_normalises_and_never_raises():
    class Raw:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    class Reader:
        closed = False

        def samples(self):
            mapped = b"\0" * 10 + b"\xff\xff" + bytes([192, 0, 2, 7])
            return [
                Raw(reason=int(KernelReason.SPA_RATE_SOURCE), src=mapped, sport=9, key=0, ts=1),
                Raw(reason="nonsense", src=mapped, sport=9),
                object(),
            ]

        def close(self):
            self.closed = True

    reader = Reader()
    ds = DropSamples(reader, ["alice"])
    assert ds.samples() == [Sample("spa_rate_source", ip_address("192.0.2.7"), 9, "alice", 1)]
    assert (ds.read, ds.malformed) == (1, 2)
    ds.close()
    assert reader.closed
