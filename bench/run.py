"""`sudo make bench`: every benchmark script, one after the other, then one table of figures.

Figures are ratios measured side by side within each script's own run; the machine is shared,
so compare ratios, not absolute numbers across runs. Everything the scripts create (namespaces,
pins under /sys/fs/bpf/spagate-*, nft tables inside those namespaces, processes) is removed by
the scripts themselves; this runner checks that nothing named spagate/sgb is left behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
SUMMARY = Path(tempfile.gettempdir()) / f"spagate-bench-{os.getpid()}.json"
SCRIPTS = [
    ("verifier: packets/s on one core (valid, bad MAC, replay)", ["verifier.py"], False),
    ("fwknop verifier beside sparoid's: packets/s on one core", ["verifier_fwknop.py"], False),
    ("XDP: ns per packet for each verdict path, allow map 1 .. 1M", ["xdp_paths.py"], True),
    ("XDP: in-kernel HMAC cost", ["xdp_hmac.py"], True),
    ("SPA latency: packet sent -> allow entry written", ["spa_latency.py"], True),
    ("The worker: RSS and CPU per accepted knock; the loader's peak", ["worker.py"], True),
    ("Fleet: knock-to-remote-open through etcd, real gates", ["fleet_gates.py"], True),
    ("Metrics: worker VmRSS without / with the exporter, CPU per scrape", ["metrics.py"], True),
    (
        "Floods at line rate: spagate beside nftables; valid SPA during floods; daemon",
        ["floods.py", "--json", str(SUMMARY)],
        True,
    ),
    (
        "Admission: junk cost with 8 identities, test runs, knocks injected in floods",
        ["admission.py"],
        True,
    ),
]
SPAROID = {"junk": 140_000, "valid": 57_000}  # sparoid server, packets per CPU-second (given)


def run(argv: list[str]) -> tuple[int, str]:
    """Run a script, echo its output as it comes (compiler warnings dropped), keep it."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / argv[0]), *argv[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = []
    noise = re.compile(r"warning:|note:|^\s*\^|^In file included|^\s*#define|^\S+\.h:\d+|"
                       r"^\s+(return|extern|\*\()|warnings? generated|^\s{8,}\S")  # fmt: skip
    for line in proc.stdout:
        if noise.search(line):
            continue
        out.append(line)
        print(line, end="", flush=True)
    return proc.wait(), "".join(out)


def leftovers() -> list[str]:
    left = [p.name for p in Path("/sys/fs/bpf").glob("spagate-*")]
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return left + [line.split()[0] for line in ns.splitlines() if line.startswith("sg")]


def table(outs: dict[str, str]) -> None:
    print("\n=== Summary (this run)")
    rows = []
    v = outs.get("verifier.py", "")
    m = re.search(r"^\s+1 valid\s+([\d,]+)", v, re.M)
    b = re.search(r"^\s+1 bad-mac\s+([\d,]+)", v, re.M)
    if m and b:
        valid, bad = (int(x.group(1).replace(",", "")) for x in (m, b))
        rows.append(("verifier, valid packets/s (1 core)", f"{valid:,}",
                     f"{valid / SPAROID['valid']:.1f}x sparoid's 57,000 valid/CPU-s"))  # fmt: skip
        rows.append(("verifier, bad-MAC packets/s (1 core)", f"{bad:,}",
                     f"{bad / SPAROID['junk']:.1f}x sparoid's 140,000 junk/CPU-s"))  # fmt: skip
    x = outs.get("xdp_paths.py", "")
    for name in ("protected SYN dropped [coarse clock]", "SPA junk (bad MAC, 1 key)"):
        m = re.search(re.escape(name) + r"\s+(\d+) ns\s+([\d.]+)x", x)
        if m:
            rows.append((f"test_run: {name}", f"{m.group(1)} ns", f"{m.group(2)}x empty program"))
    s = outs.get("spa_latency.py", "")
    m = re.search(r"p50\s+([\d.]+) us\s+p99\s+([\d.]+) us\s+max\s+([\d.]+) us", s)
    if m:
        p99 = float(m.group(2))
        ok = "met" if p99 < 1000 else "MISSED"
        rows.append(("SPA latency p50 / p99 / max", f"{m.group(1)} / {m.group(2)} / "
                     f"{m.group(3)} us", f"aim p99 < 1 ms: {ok}"))  # fmt: skip
    try:
        f = json.loads(SUMMARY.read_text())
    except (OSError, ValueError):
        f = {}
    for phase, aim in (("syn", 10), ("udp", 3)):
        for name, (med, lo, hi) in f.get(phase, {}).get("ns", {}).items():
            rows.append(
                (f"{phase.upper()} flood: {name}", f"{med:.0f} ns/pkt", f"{lo:.0f}-{hi:.0f}")
            )
        for name, (med, lo, hi) in f.get(phase, {}).get("ratios", {}).items():
            ok = "met" if med >= aim else "MISSED"
            rows.append(
                (f"  ratio {name}", f"{med:.1f}x", f"{lo:.1f}-{hi:.1f}x (aim {aim}x: {ok})")
            )
    dg = f.get("disguise", {})
    for name, (med, lo, hi) in dg.get("ns", {}).items():
        rows.append((f"SYN flood by disguise: {name}", f"{med:.0f} ns/pkt", f"{lo:.0f}-{hi:.0f}"))
    for name, (med, lo, hi) in dg.get("ratios", {}).items():
        rows.append((f"  ratio {name}", f"{med:.2f}x", f"{lo:.2f}-{hi:.2f}x"))
    for kind, r in f.get("spa", {}).items():
        res = f"opened in {r['ms']:.2f} ms" if r["opened"] else "NOT opened during the flood"
        rows.append((f"valid SPA during {kind}", res, f"{r['tries']} packet(s)"))
    d = f.get("daemon", {})
    if d:
        r = d["replays"]
        rows.append(("replays of one packet: reached the daemon / dropped in the kernel",
                     f"{r['queued']:,} / {r['dup']:,}", "per run of 65,536 sources"))  # fmt: skip
        rows.append(("daemon: accepted per CPU-second", f"{d['accept_per_cpu_s']:,.0f}",
                     f"{d['accept_per_cpu_s'] / SPAROID['valid']:.2f}x sparoid valid"))  # fmt: skip
        rss = d["rss_kb"]
        rows.append(("daemon RSS: start / after N accepted", f"{d['rss_start_kb'] / 1024:.0f} / "
                     f"{rss[-1][1] / 1024:.0f} MiB", f"N = {d['accepted']:,}; steps: " +
                     ", ".join(f"{a // 1000}k:{k // 1024}" for a, k in rss)))  # fmt: skip
    w = max((len(r[0]) for r in rows), default=10)
    for a, b, c in rows:
        print(f"{a:<{w}}  {b:>22}  {c}")


def main() -> int:
    failed, outs = [], {}
    t_all = time.monotonic()
    for title, argv, root in SCRIPTS:
        print(f"\n=== {title}", flush=True)
        if root and os.geteuid() != 0:
            print("skipped: needs root (sudo make bench)")
            failed.append(title)
            continue
        t = time.monotonic()
        rc, outs[argv[0]] = run(argv)
        print(f"({time.monotonic() - t:.0f}s, exit {rc})", flush=True)
        if rc:
            failed.append(title)
    table(outs)
    SUMMARY.unlink(missing_ok=True)
    print(f"\nmachine: {os.cpu_count()} CPUs, kernel {os.uname().release}, "
          f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"total {time.monotonic() - t_all:.0f}s")  # fmt: skip
    if os.geteuid() == 0:
        left = [x for x in leftovers() if x.startswith(("spagate-bench", "sgb", "sga"))]
        print("left behind: " + (", ".join(left) if left else "nothing"))
    if failed:
        print("\nnot measured: " + "; ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
