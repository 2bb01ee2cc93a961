"""Prometheus metrics of the gate, served by the unprivileged worker (`metrics = ADDR:PORT`).

Imported only when metrics are on (prometheus_client costs the worker about 3 MiB). The
exporter holds no counts of its own: at each scrape a collector reads the kernel's per-CPU
counters (every abi.KernelReason, summed over CPUs), the live windows of the allow map, and
snapshots of what the worker counts (intake tally, links, the monitor's hook figures). Only
the knock-to-window latency histogram is fed as it happens. Served by prometheus_client's
HTTP server in a thread of the worker, started after the worker dropped root.

Names follow the Prometheus conventions (base units, `_total` for counters); the
documentation of each is in docs/operations.md.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from spagate.gate.core.reasons import ACCEPTED, stage_of
from spagate.gate.kernel.abi import KernelReason

# Knock to window: ring wake-up, verify, batch write. Sub-millisecond when idle.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)  # fmt: skip


class GateCollector:
    """snapshot() returns the worker's latest worker.Snapshot (read only)."""

    def __init__(self, snapshot: Callable[[], object], counters: Callable[[], dict[str, int]],
                 open_windows: Callable[[], int]):  # fmt: skip
        self._snapshot, self._counters, self._open_windows = snapshot, counters, open_windows

    def describe(self):
        return []  # collected at scrape time only (no probe at registration)

    def collect(self):
        snap = self._snapshot()
        xdp = CounterMetricFamily(
            "spagate_xdp_packets", "Packets by the XDP program's verdict reason, all CPUs.",
            labels=["reason"],
        )  # fmt: skip
        counts = self._counters()
        for r in KernelReason:  # every reason, also the ones still at 0
            xdp.add_metric([r.label], counts.get(r.label, 0))
        yield xdp

        adm = CounterMetricFamily(
            "spagate_spa_admissions", "SPA packets admitted (windows opened), by identity "
            "and admission path (tagged, untagged, fwknop).", labels=["identity", "path"],
        )  # fmt: skip
        ref = CounterMetricFamily(
            "spagate_spa_refusals", "SPA packets the worker refused, by stage (verifier, "
            "policy), reason and identity (empty: no key matched).",
            labels=["stage", "reason", "identity"],
        )  # fmt: skip
        for (reason, identity, path), n in sorted(snap.tally.items()):
            if reason == ACCEPTED:
                adm.add_metric([identity, path], n)
            else:
                ref.add_metric([str(stage_of(reason) or ""), reason, identity], n)
        yield adm
        yield ref

        yield GaugeMetricFamily(
            "spagate_open_windows", "Windows open now (live entries of the allow map).",
            value=self._open_windows(),
        )  # fmt: skip
        guarded = GaugeMetricFamily(
            "spagate_interface_guarded", "1 while the gate's link guards the interface.",
            labels=["interface"],
        )  # fmt: skip
        for name, ok in sorted(snap.guarded.items()):
            guarded.add_metric([name], 1 if ok else 0)
        yield guarded
        yield CounterMetricFamily(
            "spagate_link_checks", "Checks of the gate's links (twice a second).",
            value=snap.link_checks,
        )  # fmt: skip
        yield CounterMetricFamily(
            "spagate_links_lost", "Times a link was found detached or replaced.",
            value=snap.links_lost,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "spagate_monitor_requests_pending",
            "Requests (hooks, re-attach) waiting for the monitor.", value=snap.monitor_pending,
        )  # fmt: skip
        hooks = snap.hooks
        yield GaugeMetricFamily(
            "spagate_monitor_up", "1 when the monitor reported in the last 3 seconds.",
            value=1 if hooks is not None else 0,
        )  # fmt: skip
        if hooks is not None:
            for name, kind, text in (
                ("queued", GaugeMetricFamily, "Hooks waiting for a free slot."),
                ("running", GaugeMetricFamily, "Hooks running now."),
                ("started", CounterMetricFamily, "Hooks started."),
                ("failed", CounterMetricFamily, "Hooks that exited non-zero."),
            ):
                yield kind(f"spagate_hooks_{name}", text, value=hooks.get(name, 0))
            yield CounterMetricFamily(
                "spagate_links_reattached", "Times the monitor re-attached a lost link.",
                value=hooks.get("reattached", 0),
            )  # fmt: skip
            yield CounterMetricFamily(
                "spagate_monitor_refused_requests", "Worker requests the monitor refused.",
                value=hooks.get("refused", 0),
            )  # fmt: skip
        yield CounterMetricFamily(
            "spagate_state_write_errors", "Failed writes of the state file.",
            value=snap.state_write_errors,
        )  # fmt: skip
        yield CounterMetricFamily(
            "spagate_map_write_errors", "Admission batches whose map writes failed.",
            value=snap.map_write_errors,
        )  # fmt: skip
        yield CounterMetricFamily(
            "spagate_drop_samples", "Kernel drop samples read (sources of drops, for the log).",
            value=snap.samples,
        )  # fmt: skip


class Metrics:
    """The worker's exporter: a registry with the gate's collector, the worker process's own
    figures (process_resident_memory_bytes, process_cpu_seconds_total ...) and the latency
    histogram."""

    def __init__(self, snapshot, counters, open_windows):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GateCollector(snapshot, counters, open_windows))
        ProcessCollector(registry=self.registry)
        self.latency = Histogram(
            "spagate_spa_admission_latency_seconds",
            "From the kernel queueing an SPA packet to its windows written in the maps.",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip

    def observe_ns(self, ns: int) -> None:
        self.latency.observe(ns / 1e9)

    def serve(self, addr: str, port: int) -> None:
        """Listen on addr:port (a thread of this process); OSError if it cannot bind."""
        start_http_server(port, addr, self.registry)
