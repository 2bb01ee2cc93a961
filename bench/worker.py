"""The gate's processes: the worker's memory and CPU per accepted knock, the loader's peak.

A real gate (`spagate attach` in a lab namespace: loader, monitor, unprivileged worker) takes
valid knocks from a client (spagate.lab.knocker), each for a fresh third-party address, with
the per-source and global limits lifted (one client opens many addresses):
  - RSS of the worker after start, and after 1,000,000 accepted knocks
  - the worker's CPU time per accepted knock at 2,000 knocks/s (paced), and at saturation
    (packets made beforehand, then sent as fast as the socket takes them: one chunk; the
    rest of the 1,000,000 are paced at 1.2x the capacity that chunk showed)
  - the loader's peak RSS (bcc and LLVM live only in it), as the supervisor logs it
CPU is the worker's schedstat (all threads); the accepted count is the worker's own.

    sudo .venv/bin/python bench/worker.py [--accepts 1000000] [--paced 20000]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

from spagate.gate.service.state import read_state
from spagate.lab.gate import LabGate
from spagate.lab.netns import Lab
from spagate.lab.util import process_cpu_ns

# The unpaced chunk: made before it is sent, all stamped at once; 20,000 take the knocker about
# a second to make, well inside the gate's max-skew (100,000 took longer, and most arrived stale)
BLAST = 20_000


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    return int(re.search(rf"^{field}:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)[1])


def rss_parts(pid: int) -> str:
    """What the RSS is made of: the heap (anonymous), code and libraries (file), the rings
    (shared: the BPF ring buffers' pages, their data area mapped twice)."""
    parts = [(f, rss_kb(pid, f)) for f in ("RssAnon", "RssFile", "RssShmem")]
    return ", ".join(f"{f[3:].lower()} {kb / 1024:.1f}" for f, kb in parts) + " MiB"


class _NoMaps:
    """Maps that take every write and hold nothing (the pipeline's own cost, no syscalls)."""

    def replay_remember_many(self, items) -> None:
        pass

    def open_windows(self, windows) -> int:
        return len(windows)

    def replay_entries(self) -> dict:
        return {}

    def replay_since(self) -> int:
        return 0

    def replay_forget_many(self, nonces) -> int:
        return len(nonces)


def pipeline_us(spacing_s: float, n: int = 4000) -> float:
    """The worker's decision pipeline in this process (ring record -> intake -> verifier ->
    policy -> admission and its log; writes to maps that hold nothing): CPU us per accept,
    the records back to back (spacing 0) or spacing_s apart, as knocks at 2,000/s come."""
    from spagate.gate.core.config import parse_config
    from spagate.gate.core.eventlog import EventLog
    from spagate.gate.kernel.ringbuf import SpaRecord
    from spagate.gate.service.admission import Admission
    from spagate.protocol import generate_keypair, make_packet

    keys = generate_keypair()
    cfg = parse_config(f"key = {keys.key.hex()}\nhmac-key = {keys.hmac_key.hex()}\n"
                       "protected = tcp/22\nopen-seconds = 600\n")  # fmt: skip
    log = EventLog(lambda level, line: None, time.monotonic)
    now = time.time_ns() // 1_000_000 + 1000  # stamped so that none goes stale during the run
    src, dst, base = IPv4Address("198.51.100.9"), IPv4Address("192.0.2.1"), 0x64400000
    recs = [SpaRecord(make_packet(keys, IPv4Address(base + i), now), src, dst, 4000, 62201, 2, 96)
            for i in range(n)]  # fmt: skip
    adm = Admission(cfg, _NoMaps(), log, _NoHooks(), batch=True, wall_ms=lambda: now)
    spent = 0
    for rec in recs:
        t = time.process_time_ns()
        adm.handle(rec)
        adm.flush()
        spent += time.process_time_ns() - t
        if spacing_s:
            time.sleep(spacing_s)
    assert adm.counts["accepted"] == n, adm.counts
    return spent / n / 1000


class _NoHooks:
    def opened(self, ip, seconds) -> None:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accepts", type=int, default=1_000_000)
    ap.add_argument("--paced", type=int, default=20_000, help="knocks at 2,000/s")
    ap.add_argument("--chunk", type=int, default=100_000)
    args = ap.parse_args()
    out: dict = {}
    # The pipeline alone, in this process: what deciding costs a warm CPU, and what it costs
    # when the CPU idles between knocks (as at 2,000/s: caches and clocks cool down)
    warm, cold = min(pipeline_us(0) for _ in range(3)), pipeline_us(0.0005)
    print(f"the decision pipeline in one process: {warm:.1f} us per accept back to back, "
          f"{cold:.1f} us with 0.5 ms between records ({cold / warm:.1f}x)")  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="spagate-bench-"))
    with Lab(("gate", "client")) as lab:
        gate = LabGate(lab, work)
        try:
            gate.configure(
                "open-seconds = 600\nrate = 100000/s burst 100000\nspa-budget = 10000000\n"
                "untagged = accept\n"  # the knocker sends sparoid packets untagged
            )
            gate.start()
            time.sleep(1.5)
            state = read_state(gate.pin_dir)
            pid = state["worker_pid"]
            loader = next(x for x in gate.log if "loader done" in x)
            out["loader_peak_mib"] = float(re.search(r"peak RSS (\d+) MiB", loader)[1])
            out["rss_start_kb"] = rss_kb(pid)
            print(f"loader: {loader.split(' ', 2)[2]}")
            print(f"worker (pid {pid}, uid {state['uid']}): RSS after start "
                  f"{out['rss_start_kb'] / 1024:.1f} MiB ({rss_parts(pid)})")  # fmt: skip

            def accepted() -> int:
                time.sleep(1.2)  # the worker publishes once a second
                return (read_state(gate.pin_dir) or {}).get("spa", {}).get("accepted", 0)

            def settle() -> None:
                last = process_cpu_ns(pid)
                while True:
                    time.sleep(0.5)
                    now = process_cpu_ns(pid)
                    if now - last < 5_000_000:
                        return
                    last = now

            knocker = gate.knocker()
            base = int(IPv4Address("100.64.0.0"))
            # 1. paced: 2,000 knocks per second
            settle()
            a0, c0 = accepted(), process_cpu_ns(pid)
            knocker.ask(f"many {args.paced} 2000 {IPv4Address(base)} quiet")
            settle()
            a1, c1 = accepted(), process_cpu_ns(pid)
            base += args.paced
            out["paced_us"] = (c1 - c0) / 1000 / max(a1 - a0, 1)
            print(f"at 2,000/s: {a1 - a0:,} accepted, worker CPU {(c1 - c0) / 1e9:.2f} s -> "
                  f"{out['paced_us']:.1f} us per accept")  # fmt: skip
            # 2. saturation: a first chunk as fast as the socket takes it (the worker's ring
            # overflows; what it took in per CPU-second is its capacity); then, up to
            # --accepts in all (the RSS figure), chunks paced at 1.2x that capacity, so most
            # packets do not die in a full ring
            done, t_cpu, t_acc, steps, rate, p_cpu, p_acc = a1, 0, 0, [], 0, 0, 0
            while done < args.accepts:
                n = min(args.chunk if rate else BLAST, args.accepts - done)
                a0, c0 = accepted(), process_cpu_ns(pid)
                t0 = time.monotonic()
                if rate:
                    knocker.ask(f"many {n} {rate} {IPv4Address(base)} quiet")
                    sent_s = time.monotonic() - t0
                else:
                    sent_s = float(knocker.ask(f"blast {n} {IPv4Address(base)}"))
                base += n
                settle()
                done, c1 = accepted(), process_cpu_ns(pid)
                if not rate:  # the saturation figure: the unpaced chunk alone
                    t_cpu, t_acc = c1 - c0, done - a0
                else:
                    p_cpu, p_acc = p_cpu + c1 - c0, p_acc + done - a0
                steps.append((done, rss_kb(pid)))
                print(f"  accepted {done:>9,}  worker RSS {steps[-1][1] / 1024:5.1f} MiB  "
                      f"(sent {n:,} in {sent_s:.2f}s{f', paced {rate:,}/s' if rate else ''}"
                      f"; {done - a0:,} accepted)")  # fmt: skip
                if done - a0 < n * 0.1:
                    print("  fewer than a tenth accepted: stopping (sender or ring overloaded)")
                    break
                rate = rate or max(1000, int(1.2 * (done - a0) / ((c1 - c0) / 1e9)))
            knocker.close()
            out["per_cpu_s"] = t_acc / (t_cpu / 1e9)
            out["rss_end_kb"] = steps[-1][1]
            print(f"saturation: {t_acc:,} accepted for {t_cpu / 1e9:.1f} s of worker CPU -> "
                  f"{out['per_cpu_s']:,.0f} accepts per CPU-second")  # fmt: skip
            if p_acc:
                print(f"paced at {rate:,}/s offered: {p_acc:,} accepted for {p_cpu / 1e9:.1f} s "
                      f"of worker CPU -> {p_acc / (p_cpu / 1e9):,.0f} per CPU-second")  # fmt: skip
            print(f"worker RSS: {out['rss_start_kb'] / 1024:.1f} MiB after start, "
                  f"{out['rss_end_kb'] / 1024:.1f} MiB after {done:,} accepts; loader peak "
                  f"{out['loader_peak_mib']:.0f} MiB")  # fmt: skip
            print(f"  the worker's RSS at the end: {rss_parts(pid)}")
            aims = [
                ("worker RSS after start <= 40 MiB", out["rss_start_kb"] <= 40 * 1024),
                ("worker RSS after 1M accepts <= 48 MiB", out["rss_end_kb"] <= 48 * 1024),
                ("<= 60 us per accept at 2,000/s", out["paced_us"] <= 60),
                (">= 60,000 accepts per CPU-second", out["per_cpu_s"] >= 60_000),
            ]
            for what, ok in aims:
                print(f"  aim {what}: {'met' if ok else 'MISSED'}")
        finally:
            gate.cleanup()
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
