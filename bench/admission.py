"""SPA admission under floods, side by side in one run (docs/performance.md, "Admission").

Phases (the lab and the measuring of bench/floods.py: one veth pair, sender on CPU 0, the
gate's NAPI thread on CPU 1, gate-side ns = NAPI thread + ksoftirqd/1 CPU per packet):
  cost     gate-side ns per packet, interleaved rounds: the XDP_DROP floor; spagate's SYN drop
           (tcp/22, random 198.18.0.0/15); a junk flood to the SPA port from 65,536 random
           sources with 8 identities configured; sparoid's nftables meter on the same flood
  testrun  BPF_PROG_TEST_RUN ns beside the empty program: junk over the untagged budget and
           within it (1 and 8 keys), tagged junk (a captured hint, random ciphertext), a
           replayed tagged knock, and a fresh valid knock for the 8th of 8 keys, tagged (one
           HMAC) and untagged (eight)
  admit    a real gate (LabGate: loader, worker, monitor), 8 identities, default limits.
           Floods from 65,536 random sources: SYN, junk, tagged junk (one captured IV,
           random ciphertext and MAC), replays of one captured tagged packet. Each trial: the
           live sender writes a fresh tagged knock (the client's 3 copies, 5 ms apart) over
           the flood at known frames and notes when each copy left; admitted = its allow entry
           appears; latency = the entry's write time (expiry - window) - the departure of the
           copy that got in (the last to leave before the gate first saw the packet:
           spa_seen's first_ns)
  untagged the same junk flood with an untagged knock (a deployed sparoid client: one copy):
           the untagged budget's lottery, shown beside

The worker is pinned to CPU 0 beside the sender: the sender stands for the network and for
any busy task on the worker's CPU. The worker runs as spagate runs it: its ring reader at
SCHED_FIFO 1 (spagate.gate.service.priority); at capacity the tagged knock is also timed with
the ring reader at SCHED_OTHER, nice -10 (`attach --no-realtime`, or a unit drop-in with
CPUSchedulingPolicy=other), side by side. The gate's NAPI thread runs at SCHED_FIFO 1 (as a
NIC's softirq would). Admission runs twice per flood: paced to what the gate's CPU keeps up
with (veth ring drops < 0.5 %: every copy reaches XDP) and unpaced (overload: the ring drops
copies at random, as a NIC ring would).

    sudo .venv/bin/python bench/admission.py [--rounds 5] [--trials 20] [--phases ...]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from floods import (
    GATE_CPU,
    NFT_INPUT,
    NFT_METER,
    SEND_CPU,
    P2PLab,
    nft_ctx,
    rounds,
    summarise,
    xdp_ctx,
)

from spagate.gate.core.hints import tag_table
from spagate.gate.kernel import bpfsys
from spagate.gate.kernel.abi import (
    ALLOW_KEY,
    BUDGET,
    SPA_BUDGET_UNTAGGED,
    SPA_KEYS_MAX,
    U32,
    XdpAction,
)
from spagate.gate.kernel.build import GateOptions, load
from spagate.gate.kernel.pins import unpin
from spagate.lab import packets
from spagate.lab.livesend import PACE_MAX, KnockPlan, LiveSender, frame, tcp_syn, udp
from spagate.net import addr16
from spagate.protocol import generate_keypair, make_packet

SPA_PORT = 8484
WINDOW_S = 600
COPIES, COPY_GAP_S = 3, 0.005  # spagate send's defaults
_SEQ = itertools.count()
WORKER_NICE = -10  # the gate's one service on this host, above the sender and other load


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def pctl(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, round(p / 100 * (len(v) - 1)))]


# --- cost -----------------------------------------------------------------------------------


def phase_cost(lab, args, log) -> dict:
    ring = [generate_keypair() for _ in range(SPA_KEYS_MAX)]
    gate = load(GateOptions(), f"{args.pins}-cost")
    try:
        gate.maps.set_protected([("tcp", 22)])
        gate.maps.set_spa_keys([k.hmac_key for k in ring])
        gate.maps.set_spa_tags(tag_table(ring, now_ms(), 5000)[0])
        g_ip = lab["gate"].v4
        syn = frame(lab.mac["client"], lab.mac["gate"], "198.18.0.1", g_ip, 6, tcp_syn(40000, 22))
        junk = frame(lab.mac["client"], lab.mac["gate"], "198.18.0.1", g_ip, 17,
                     udp(40000, SPA_PORT, os.urandom(96)), l4_csum=False)  # fmt: skip

        floor = lab.floor

        sock = lab.spawn("gate", [sys.executable, "-c",
            "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"s.bind(('0.0.0.0',{SPA_PORT}))\nprint('ready',flush=True)\ntime.sleep(3600)"],
            stdout=__import__("subprocess").PIPE, text=True)  # fmt: skip
        sock.stdout.readline()
        with (
            LiveSender(syn, lab.ifindex["client"], "198.18.0.0", 0x1FFFF) as s_syn,
            LiveSender(junk, lab.ifindex["client"], "198.18.0.0", 0xFFFF) as s_junk,
        ):
            xdp = xdp_ctx(lab, gate, "native")
            cfgs = {
                "XDP_DROP only (path floor)": (floor, s_syn, None),
                "spagate SYN drop (tcp/22)": (xdp, s_syn, gate.maps),
                "spagate junk, 8 identities": (xdp, s_junk, gate.maps),
                "nftables meter, junk": (nft_ctx(lab, NFT_INPUT, NFT_METER), s_junk, None),
            }
            log(f"Cost: floods from 65,536 random sources, {args.count:,} frames per run")
            res = rounds(lab, cfgs, args.rounds, args.count, log)
        sock.kill()
    finally:
        gate.close()
        unpin(f"{args.pins}-cost")
    return summarise("Cost per packet", res, [
        ("spagate junk, 8 identities", "spagate SYN drop (tcp/22)"),
        ("nftables meter, junk", "spagate junk, 8 identities"),
    ], log)  # fmt: skip


# --- test run -------------------------------------------------------------------------------


def phase_testrun(args, log) -> dict:
    rep = args.repeat
    opts = GateOptions(spa_rate_per_s=1e9, spa_burst=10**9, untagged_budget_per_s=10**9,
                       ringbuf_pages=512)  # fmt: skip
    gate = load(opts, f"{args.pins}-tr")
    empty = bpfsys.prog_load_xdp_return(XdpAction.DROP)
    out: dict[str, float] = {}
    try:

        def pkt(payload: bytes, src: str = "198.51.100.10") -> bytes:
            ip = packets.ipv4(src, "203.0.113.1", 17, udp(40000, SPA_PORT, payload), ident=1)
            return packets.eth(ip)

        def best(prog_fd: int, p: bytes, n: int = rep, rounds_n: int = args.rounds) -> int:
            return min(bpfsys.prog_test_run(prog_fd, p, n).duration_ns for _ in range(rounds_n))

        def spend_untagged_budget() -> None:  # the flood's steady state: the budget is spent
            bpfsys.update(gate.maps.fd("spa_budget"), U32.pack(SPA_BUDGET_UNTAGGED),
                          BUDGET.pack(time.monotonic_ns() - 10**7, 10**9))  # fmt: skip

        ring = [generate_keypair() for _ in range(SPA_KEYS_MAX)]
        junk = pkt(os.urandom(96))
        e = best(empty, junk)
        rows = []
        for n in (1, SPA_KEYS_MAX):
            keys = ring[-n:]
            gate.maps.clear("spa_budget", "spa_rate")
            gate.maps.set_spa_keys([k.hmac_key for k in keys])
            gate.maps.set_spa_tags(tag_table(keys, now_ms(), 5000)[0])
            spend_untagged_budget()
            rows.append((f"junk, untagged budget spent, {n} key(s)", best(gate.prog_fd, junk)))
            gate.maps.clear("spa_budget")
            rows.append((f"junk within the untagged budget, {n} key(s)",
                         best(gate.prog_fd, junk, min(rep, 20_000))))  # fmt: skip
            captured = make_packet(keys[-1], "192.0.2.7", now_ms(), tagged=True)
            tj = pkt(os.urandom(32) + captured[32:48] + os.urandom(48))
            rows.append((f"tagged junk (captured hint), {n} key(s)", best(gate.prog_fd, tj)))
            gate.forget_seen()
            knock = pkt(captured)
            bpfsys.prog_test_run(gate.prog_fd, knock, 1)  # queued once, then copies
            rows.append((f"copy of a tagged knock, {n} key(s)", best(gate.prog_fd, knock)))
        # A fresh valid knock each run (repeat 1, so every run is as cold as a real knock):
        # tagged for the 8th of 8 keys, untagged for the 1st (one HMAC) and the 8th (eight).
        timed: dict[str, list[int]] = {"tagged, key 8 of 8": [], "untagged, key 1 of 8": [],
                                       "untagged, key 8 of 8": []}  # fmt: skip
        base1 = []
        for i in range(args.knocks):
            for name, keys, tag in (("tagged, key 8 of 8", ring[-1], True),
                                    ("untagged, key 1 of 8", ring[0], False),
                                    ("untagged, key 8 of 8", ring[-1], False)):  # fmt: skip
                src = f"10.{i}.{int(tag)}.{len(name)}"
                p = pkt(make_packet(keys, "192.0.2.7", now_ms(), tagged=tag), src)
                timed[name].append(bpfsys.prog_test_run(gate.prog_fd, p, 1).duration_ns)
            base1.append(bpfsys.prog_test_run(empty, p, 1).duration_ns)
        c = gate.maps.counters()
        assert c["spa_queued"] >= 3 * args.knocks, c
        e1 = statistics.median(base1)
        log(f"\nBPF_PROG_TEST_RUN, best of {args.rounds} rounds x {rep:,} repeats; "
            f"empty program {e} ns")  # fmt: skip
        for name, ns in rows:
            log(f"  {name:<46} {ns:>7} ns  {ns / e:6.1f}x empty")
            out[name] = ns / e
        log(f"  valid knocks, fresh each run (repeat 1, median of {args.knocks}; empty "
            f"program {e1:.0f} ns):")  # fmt: skip
        for name, v in timed.items():
            m = statistics.median(v)
            log(f"    {name:<44} {m:>7.0f} ns")
            out[f"valid {name}"] = m
        one, eight = out["valid untagged, key 1 of 8"], out["valid untagged, key 8 of 8"]
        hmacs = 1 + 7 * (out["valid tagged, key 8 of 8"] - one) / max(eight - one, 1)
        log(
            f"  => a tagged knock for key 8 of 8 costs {hmacs:.1f} HMAC(s) "
            "(interpolated between the untagged knocks' 1 and 8)"
        )
        out["tagged knock HMACs"] = hmacs
    finally:
        os.close(empty)
        gate.close()
        unpin(f"{args.pins}-tr")
    return out


# --- admission under floods -------------------------------------------------------------------


def _allowed_ns(maps, ip: str) -> int | None:
    raw = bpfsys.lookup(maps.fd("allow"), ALLOW_KEY.pack(addr16(ip), 0, 0), 8)
    return None if raw is None else int.from_bytes(raw, "little")


def _pin_worker(gate) -> int:
    """Every thread of the worker onto the sender's CPU, at nice -10; returns its pid."""
    from spagate.gate.service.state import read_state

    st = read_state(gate.pin_dir) or {}
    pid = st.get("worker_pid")
    if pid:
        for t in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(t), {SEND_CPU})
                os.setpriority(os.PRIO_PROCESS, int(t), WORKER_NICE)
    return pid


def _ring_reader_policy(pid: int, realtime: bool) -> None:
    """The worker's main thread (its ring reader) real-time as spagate sets it, or normal."""
    if realtime:
        os.sched_setscheduler(pid, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))
    else:
        os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, pid, WORKER_NICE)


def _run(lab, s: LiveSender, count: int) -> tuple[float, float]:
    """One flood run from a thread on the sender CPU: (frames/s, veth ring drop %)."""
    rx0 = lab.rx()

    def send():
        s.run(count, lab.nspath("client"), SEND_CPU)

    th = threading.Thread(target=send)
    t = time.monotonic()
    th.start()
    th.join()
    wall = time.monotonic() - t
    time.sleep(0.05)
    rx1 = lab.rx()
    got, dropped = rx1[0] - rx0[0], rx1[1] - rx0[1]
    return count / wall, 100 * dropped / max(got + dropped, 1)


def _calibrate(lab, s: LiveSender, log) -> tuple[int, float, float]:
    """The pace at which the gate keeps up (veth ring drops < 0.5 %): (pace, Mpps, drop %)."""
    s.set_plan(KnockPlan(0, 1, 0))  # no knock while calibrating
    pace, rate, drop = 0, 0.0, 100.0
    while True:
        s.set_pace(pace)
        rate, drop = _run(lab, s, 400_000)
        if drop < 0.5 or pace >= PACE_MAX:
            return pace, rate, drop
        pace = min(PACE_MAX, max(4, int(pace * 1.4)))


def _trials(lab, maps, kind, s, flood_of, knock_of, copies, args, log) -> dict:
    """args.trials knocks, each written into a flood run by the sender itself."""
    rate, _ = _run(lab, s, 200_000)
    gap = max(1, round(rate * COPY_GAP_S))
    at = round(rate * args.lead_s)
    count = at + copies * gap + round(rate * args.tail_s)
    s.set_plan(KnockPlan(at, gap, copies))
    lat, which, admitted, rx_drop, rates, net, work = [], [], 0, [], [], [], []
    for trial in range(args.trials):
        n = next(_SEQ)  # a fresh address per knock, all phases together
        ip = f"100.{80 + n // 62500}.{n // 250 % 250}.{n % 250 + 1}"
        if flood_of is not None:
            s.set_flood(flood_of())  # e.g. a freshly captured packet: its hint is live
        payload = knock_of(ip)
        s.set_knock(frame(lab.mac["client"], lab.mac["gate"], lab["client"].v4,
                          lab["gate"].v4, 17, udp(41000 + trial % 1000, SPA_PORT, payload),
                          l4_csum=False).ljust(len(s.template), b"\0"))  # fmt: skip
        r, d = _run(lab, s, count)
        rates.append(r)
        rx_drop.append(d)
        end = time.monotonic() + 1.0
        exp = None
        while exp is None and time.monotonic() < end:
            exp = _allowed_ns(maps, ip)
            if exp is None:
                time.sleep(0.005)
        sent = [t for t in s.knock_times() if t]
        if exp is None:
            continue
        admitted += 1
        wrote = exp - WINDOW_S * 10**9
        seen = maps.seen(payload[32:48] if knock_of.tagged else payload[:16])
        first = seen.first_ns if seen else wrote
        before = [t for t in sent if t <= first] or sent[:1]
        lat.append((wrote - before[-1]) / 1e6)
        net.append((first - before[-1]) / 1e6)  # departure to the kernel's first sight
        work.append((wrote - first) / 1e6)  # the kernel's first sight to the worker's write
        which.append(sent.index(before[-1]) + 1)
    res = {
        "admitted": admitted,
        "trials": args.trials,
        "p50_ms": pctl(lat, 50) if lat else None,
        "p99_ms": pctl(lat, 99) if lat else None,
        "max_ms": max(lat) if lat else None,
        "to_kernel_max_ms": max(net) if net else None,
        "in_worker_max_ms": max(work) if work else None,
        "copy_admitted": {c: which.count(c) for c in sorted(set(which))},
        "ring_drop_pct": statistics.median(rx_drop),
        "flood_mpps": statistics.median(rates) / 1e6,
    }
    p = (f"p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms  max {res['max_ms']:.2f} ms"
         f" (to the kernel at most {res['to_kernel_max_ms']:.2f}, in the worker at most "
         f"{res['in_worker_max_ms']:.2f})" if lat else "no latency")  # fmt: skip
    log(f"  {kind:<40} admitted {admitted:>2}/{args.trials}  {p}  copy admitted "
        f"{res['copy_admitted']}  ring drops {res['ring_drop_pct']:.1f}%  "
        f"flood {res['flood_mpps']:.2f} Mpps")  # fmt: skip
    return res


def phase_admit(lab, work, args, log) -> dict:
    from spagate.gate.kernel.maps import GateMaps
    from spagate.lab.gate import LabGate

    ring = [generate_keypair() for _ in range(SPA_KEYS_MAX)]
    gate = LabGate(lab, work, keys=ring[0])
    gate.configure(
        f"open-seconds = {WINDOW_S}\n"
        + "".join(
            f"[id{i}]\nkey = {k.key.hex()}\nhmac-key = {k.hmac_key.hex()}\n"
            for i, k in enumerate(ring)
        ),  # fmt: skip
        keys=False,
    )
    out: dict = {}
    napi = lab.napi_tid()
    try:
        # The gate's NAPI thread at real-time priority, as a NIC's softirq would run: the veth
        # ring then overflows only when the gate's CPU cannot keep up, not when another task
        # of this shared machine holds the CPU.
        os.sched_setscheduler(napi, os.SCHED_FIFO, os.sched_param(1))
        gate.start()
        time.sleep(1.5)
        worker = _pin_worker(gate)
        assert os.sched_getscheduler(worker) & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO
        g_ip, c_mac, g_mac = gate.ip(), lab.mac["client"], lab.mac["gate"]
        knocker = ring[0]

        def knock_tagged(ip: str) -> bytes:
            return make_packet(knocker, ip, now_ms(), tagged=True)

        def knock_untagged(ip: str) -> bytes:
            return make_packet(knocker, ip, now_ms())

        knock_tagged.tagged, knock_untagged.tagged = True, False

        def udp_tmpl(payload: bytes) -> bytes:
            return frame(c_mac, g_mac, "198.18.0.1", g_ip, 17, udp(40000, SPA_PORT, payload),
                         l4_csum=False)  # fmt: skip

        knock_len = len(udp_tmpl(bytes(96)))
        syn = frame(c_mac, g_mac, "198.18.0.1", g_ip, 6, tcp_syn(40000, 22)).ljust(knock_len, b"\0")

        def captured() -> bytes:  # a tagged packet of identity 3 seen on the wire, fresh
            return udp_tmpl(make_packet(ring[3], "100.99.0.3", now_ms(), tagged=True))

        def replayed() -> bytes:  # one of identity 2, replayed (it opens 100.99.0.2 once)
            return udp_tmpl(make_packet(ring[2], "100.99.0.2", now_ms(), tagged=True))

        floods = {  # template (a SYN padded so a knock frame fits), mode, fresh flood frame
            "SYN flood": (syn, "replay", None),
            "junk flood": (udp_tmpl(os.urandom(96)), "junk", None),
            "tagged-junk flood (captured IV)": (captured(), "tagged-junk", captured),
            "replay flood (one tagged packet)": (replayed(), "replay", replayed),
        }
        regimes = [r for r in ("capacity", "overload") if r in args.regimes]
        plan = KnockPlan(0, 1, 0)
        with GateMaps.from_pin_dir(gate.pin_dir) as maps:
            for kind, (tmpl, mode, fresh) in floods.items():
                with LiveSender(tmpl, lab.ifindex["client"], "198.18.0.0", 0xFFFF, mode=mode,
                                knock=plan) as s:  # fmt: skip
                    pace, cap_rate, cap_drop = _calibrate(lab, s, log)
                    log(
                        f"\n{kind}: the gate keeps up at {cap_rate / 1e6:.2f} Mpps (sender "
                        f"pace {pace}, ring drops {cap_drop:.2f}%); overload: unpaced"
                    )
                    for regime in regimes:
                        s.set_pace(pace if regime == "capacity" else 0)
                        variants = [("tagged", knock_tagged, COPIES, True),
                                    ("untagged", knock_untagged, 1, True)]  # fmt: skip
                        if regime == "capacity" and "normal" in args.worker:
                            variants.append(("tagged", knock_tagged, COPIES, False))
                        for label, knock, copies, realtime in variants:
                            if label == "untagged" and (
                                "untagged" not in args.phases or kind not in args.untagged_floods
                            ):
                                continue
                            if label == "tagged" and "admit" not in args.phases:
                                continue
                            c0 = maps.counters()
                            name = f"{label}, {regime}" + ("" if realtime else ", worker normal")
                            _ring_reader_policy(worker, realtime)
                            out[f"{kind}: {name}"] = _trials(lab, maps, name, s, fresh, knock,
                                                            copies, args, log)  # fmt: skip
                            _ring_reader_policy(worker, True)
                            c1 = maps.counters()
                            moved = {k: c1[k] - c0[k] for k in c1 if c1[k] != c0[k]}
                            log(f"      counters: {moved}")
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(napi, os.SCHED_OTHER, os.sched_param(0))
        gate.cleanup()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=3_000_000, help="frames per cost run")
    ap.add_argument("--repeat", type=int, default=1_000_000, help="test-run repeats")
    ap.add_argument("--knocks", type=int, default=200, help="fresh knocks timed in test runs")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--lead-s", type=float, default=0.3, help="flood before the knock")
    ap.add_argument("--tail-s", type=float, default=0.1, help="flood after the last copy")
    ap.add_argument("--phases", default="cost,testrun,admit,untagged")
    ap.add_argument(
        "--regimes",
        default="capacity,overload",
        help="admission floods paced to the gate's capacity, and unpaced",
    )
    ap.add_argument("--untagged-floods", default="SYN flood,junk flood")
    ap.add_argument(
        "--worker",
        default="realtime,normal",
        help="realtime: as spagate runs it; normal: also the ring reader at SCHED_OTHER",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/admission.py needs root")
    if os.cpu_count() < 2:
        raise SystemExit("bench/admission.py needs 2 CPUs (sender and gate apart)")
    args.phases = args.phases.split(",")
    args.regimes = args.regimes.split(",")
    args.untagged_floods = args.untagged_floods.split(",")
    args.worker = args.worker.split(",")
    args.pins = f"/sys/fs/bpf/spagate-bench-adm-{os.getpid()}"

    def log(line: str) -> None:
        print(line, flush=True)

    log(f"load average at start: {os.getloadavg()[0]:.2f} (gate CPU {GATE_CPU})")
    work = Path(tempfile.mkdtemp(prefix="spagate-bench-"))
    lab = P2PLab(prefix=f"sga{os.getpid() % 100000}")
    try:
        if "testrun" in args.phases:
            phase_testrun(args, log)
        lab.open()
        if "cost" in args.phases:
            phase_cost(lab, args, log)
        if "admit" in args.phases or "untagged" in args.phases:
            phase_admit(lab, work, args, log)
    finally:
        lab.close()
        for suffix in ("cost", "tr"):
            unpin(f"{args.pins}-{suffix}")
        shutil.rmtree(work, ignore_errors=True)
    log(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
