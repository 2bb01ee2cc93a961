"""Floods at line rate: gate-side ns per packet for spagate beside nftables, and the daemon.

Two namespaces joined by one veth pair (no bridge): "client" floods, "gate" filters. The
sender is spagate/lab/livesend.py (XDP live frames redirected into the client's veth, so
frames reach the gate's eth0 as from a NIC driver). The gate's eth0 has GRO on (veth NAPI)
and threaded NAPI pinned to CPU 1; the sender runs on CPU 0; the client's eth0 drops whatever
the gate answers (XDP_DROP, threaded NAPI on CPU 0), so replies cost the gate only their
transmit.

Gate-side cost = CPU time of the gate's NAPI thread + ksoftirqd/1 (/proc/PID/schedstat, ns)
divided by the packets the gate's eth0 handled (rx_packets; spagate's counters cross-check).
Configurations run interleaved in shuffled rounds; per-round ratios, median and range.

Phases:
  syn    SYN flood to tcp/22 from random 198.18.0.0/15: kernel RST (closed port, no listener),
         sparoid's nftables ruleset, spagate native / generic XDP, allow map 1 and 1,000,000
  disguise  the same SYN flood: spagate filtered (drop) against closed (an RST built in XDP,
         XDP_TX) against the kernel's own RST, same run
  udp    96-byte UDP flood to the SPA port, 1 source and 65,536 sources: sparoid's nftables
         meter (+ notrack, + its input ruleset, a bound UDP socket that nobody reads) vs spagate
  spa    a real daemon (LabGate) guards eth0; during each flood a valid SPA is sent: opened?
         how fast?
  daemon replays of one valid packet from 65,536 sources (dropped in the kernel); RSS
         after start and after 1,000,000 accepted packets (valid, fresh, third-party IPs)

    sudo .venv/bin/python bench/floods.py [--rounds 5] [--phases syn,disguise,udp,spa,daemon]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from spagate.gate.kernel import bpfsys
from spagate.gate.kernel.abi import ALLOW_KEY, XdpAction
from spagate.gate.kernel.build import GateOptions, load
from spagate.gate.kernel.link import XdpMode, set_xdp
from spagate.gate.kernel.pins import unpin
from spagate.lab.livesend import LiveSender, frame, in_netns, tcp_syn, udp
from spagate.lab.netns import V4_NET, Host, Lab
from spagate.lab.util import counter_delta, process_cpu_ns
from spagate.net import addr16
from spagate.protocol import make_packet

SEND_CPU, GATE_CPU = 0, 1
SPA_PORT = 8484
TICK_NS = 10**9 // os.sysconf("SC_CLK_TCK")

# sparoid's README ruleset, applied inside the gate namespace only (ssh = tcp/22).
NFT_INPUT = """table inet filter {
  set sparoid { type ipv4_addr; timeout 15s; }
  chain input {
    type filter hook input priority 0; policy drop;
    iif lo accept
    ct state invalid counter drop
    ct state established,related accept
    udp dport 8484 accept
    ip saddr @sparoid tcp dport ssh accept
  }
}
"""
# sparoid's recommended rate limit of the SPA port, in a prerouting chain at -300.
NFT_METER = """table inet sparoid_meter {
  chain prerouting {
    type filter hook prerouting priority -300;
    udp dport 8484 notrack
    udp dport 8484 meter rate-limit-sparoid { ip saddr limit rate over 1/second burst 1 packets } counter drop
  }
}
"""  # noqa: E501


# --- the network ------------------------------------------------------------------------------


def _napi_threads() -> dict[int, str]:
    out = {}
    for p in glob.glob("/proc/[0-9]*/task/[0-9]*/comm"):
        with contextlib.suppress(OSError):
            name = Path(p).read_text().strip()
            if name.startswith("napi/"):
                out[int(p.split("/")[4])] = name
    return out


class P2PLab(Lab):
    """gate (192.0.2.1) and client (192.0.2.2) joined by one veth pair, both named eth0."""

    def open(self) -> None:
        from spagate.errors import SpagateError

        if os.geteuid() != 0:
            raise SpagateError("the benchmark needs root (network namespaces)")
        for i, name in enumerate(("gate", "client"), start=1):
            self.by_name[name] = Host(name, f"{self.prefix}-{name}", i, f"{V4_NET}.{i}")
            subprocess.run(["ip", "netns", "add", self.by_name[name].netns], check=True)
        g, c = self["gate"], self["client"]
        self.sh("client", f"ip link add eth0 type veth peer eth0 netns {g.netns}")
        for h in (g, c):
            self.sh(h.name, f"ip link set lo up && ip addr add {h.v4}/24 dev eth0 "
                    "&& ip link set eth0 up")  # fmt: skip
        for h in (g, c):
            self._wait_up(h)
        self.mac = {
            h.name: bytes.fromhex(self.sh(h.name, "cat /sys/class/net/eth0/address")
                                  .stdout.strip().replace(":", ""))
            for h in (g, c)
        }  # fmt: skip
        self.ifindex = {
            h.name: int(self.sh(h.name, "cat /sys/class/net/eth0/ifindex").stdout) for h in (g, c)
        }
        mac = {k: ":".join(f"{b:02x}" for b in v) for k, v in self.mac.items()}
        # Replies to the spoofed sources go to the client without ARP.
        self.sh("gate", f"ip route add default via {c.v4} && ip neigh add {c.v4} lladdr "
                f"{mac['client']} dev eth0 nud permanent && ethtool -K eth0 gro on "
                "&& sysctl -qw net.ipv4.conf.all.rp_filter=0 "
                "net.ipv4.conf.eth0.rp_filter=0")  # fmt: skip
        self.sh("client", f"ip neigh add {g.v4} lladdr {mac['gate']} dev eth0 nud permanent")
        before = set(_napi_threads())
        self.sh("gate", "echo 1 > /sys/class/net/eth0/threaded")
        new = [t for t in _napi_threads() if t not in before]
        if len(new) != 1:
            raise SpagateError(f"gate NAPI thread not found ({new})")
        self.gate_napi = _napi_threads()[new[0]]  # napi/eth0-<id>: re-found before each run
        self.drop_fd = bpfsys.prog_load_xdp_return(XdpAction.DROP, "bench_sink")
        with in_netns(self.nspath("client")):
            set_xdp("eth0", self.drop_fd, XdpMode.NATIVE)
        before = set(_napi_threads())
        self.sh("client", "echo 1 > /sys/class/net/eth0/threaded")
        for t in set(_napi_threads()) - before:
            os.sched_setaffinity(t, {SEND_CPU})

    def nspath(self, host: str) -> str:
        return f"/run/netns/{self[host].netns}"

    @contextlib.contextmanager
    def floor(self):
        """The floor of this receive path: an XDP_DROP-only program on the gate's eth0."""
        with in_netns(self.nspath("gate")):
            set_xdp("eth0", self.drop_fd, XdpMode.NATIVE)
        try:
            yield
        finally:
            with in_netns(self.nspath("gate")):
                set_xdp("eth0", -1, XdpMode.NATIVE)

    def close(self) -> None:
        super().close()
        if getattr(self, "drop_fd", None) is not None:
            os.close(self.drop_fd)
            self.drop_fd = None

    def napi_tid(self) -> int:
        tids = [t for t, n in _napi_threads().items() if n == self.gate_napi]
        if len(tids) != 1:
            raise RuntimeError(f"{self.gate_napi}: {len(tids)} threads")
        os.sched_setaffinity(tids[0], {GATE_CPU})
        return tids[0]

    def rx(self) -> tuple[int, int]:
        st = json.loads(self.sh("gate", "ip -j -s link show eth0").stdout)[0]["stats64"]["rx"]
        return st["packets"], st["dropped"]


# --- measuring --------------------------------------------------------------------------------


def _runtime_ns(tid: int) -> int:
    return int(Path(f"/proc/{tid}/schedstat").read_text().split()[0])


def _ksoftirqd(cpu: int) -> int:
    for p in glob.glob("/proc/[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if Path(p).read_text().strip() == f"ksoftirqd/{cpu}":
                return int(p.split("/")[2])
    raise RuntimeError(f"ksoftirqd/{cpu} not found")


def _cpu_stat() -> dict[str, list[int]]:
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu"):
            f = line.split()
            out[f[0]] = [int(x) for x in f[1:]]
    return out


@dataclass
class Run:
    ns_per_pkt: float
    packets: int
    dropped: int  # veth ring overflow: the gate was saturated
    gate_cpu_ns: int
    wall_s: float
    steal_pct: float
    busy_ns_per_pkt: float  # /proc/stat busy time of the gate CPU (any task) per packet
    counters: dict[str, int]


def flood(lab: P2PLab, sender: LiveSender, count: int, maps=None) -> Run:
    tid, ksoft = lab.napi_tid(), _ksoftirqd(GATE_CPU)
    c0 = maps.counters() if maps else {}
    rx0, dr0 = lab.rx()
    st0 = _cpu_stat()
    n0, k0 = _runtime_ns(tid), _runtime_ns(ksoft)
    t0 = time.monotonic()
    sender.run(count, lab.nspath("client"), cpu=SEND_CPU)
    time.sleep(0.2)  # the gate drains its ring
    n1, k1 = _runtime_ns(tid), _runtime_ns(ksoft)
    wall = time.monotonic() - t0
    st1 = _cpu_stat()
    rx1, dr1 = lab.rx()
    c1 = maps.counters() if maps else {}
    pk = max(rx1 - rx0, 1)
    cpu = (n1 - n0) + (k1 - k0)
    g0, g1 = st0[f"cpu{GATE_CPU}"], st1[f"cpu{GATE_CPU}"]
    busy = sum(g1[i] - g0[i] for i in (0, 1, 2, 5, 6)) * TICK_NS  # user nice system irq softirq
    all_t = sum(st1["cpu"]) - sum(st0["cpu"])
    steal = 100 * (st1["cpu"][7] - st0["cpu"][7]) / max(all_t, 1)
    delta = counter_delta(c0, c1)
    return Run(cpu / pk, rx1 - rx0, dr1 - dr0, cpu, wall, steal, busy / pk, delta)


def rounds(lab: P2PLab, configs: dict, rounds_n: int, count: int, log) -> dict[str, list[Run]]:
    """configs: name -> (context manager factory, sender, maps or None). Shuffled rounds."""
    out: dict[str, list[Run]] = {k: [] for k in configs}
    names = list(configs)
    for r in range(rounds_n):
        random.shuffle(names)
        load1 = os.getloadavg()[0]
        for name in names:
            ctx, sender, maps = configs[name]
            with ctx():
                res = flood(lab, sender, count, maps)
            out[name].append(res)
            noisy = " NOISY (steal)" if res.steal_pct > 2 else ""
            if res.busy_ns_per_pkt > 1.5 * res.ns_per_pkt:
                noisy += " NOISY (other tasks on the gate CPU)"
            log(f"  round {r + 1} {name:<28} {res.ns_per_pkt:8.0f} ns/pkt  "
                f"{res.packets:>9,} pkts ({res.dropped:>9,} ring drops) {res.wall_s:4.1f}s  "
                f"busy {res.busy_ns_per_pkt:6.0f} ns/pkt  steal {res.steal_pct:.1f}%  "
                f"load1 {load1:.2f}{noisy}")  # fmt: skip
            if maps is not None:
                log(f"      counters: {res.counters}")
    return out


def summarise(title: str, res: dict[str, list[Run]], ratios: list[tuple[str, str]], log) -> dict:
    log(f"\n{title}: gate-side ns per packet (NAPI thread + ksoftirqd/{GATE_CPU}), "
        f"{len(next(iter(res.values())))} rounds")  # fmt: skip
    summary = {"ns": {}, "ratios": {}}
    for name, runs in res.items():
        v = [r.ns_per_pkt for r in runs]
        m = statistics.median(v)
        summary["ns"][name] = (m, min(v), max(v))
        pk = statistics.median(r.packets / r.wall_s for r in runs)
        log(f"  {name:<30} median {m:7.0f} ns  range {min(v):6.0f}-{max(v):6.0f}"
            f"   (~{pk / 1e6:.2f} Mpps handled)")  # fmt: skip
    for a, b in ratios:
        v = [x.ns_per_pkt / y.ns_per_pkt for x, y in zip(res[a], res[b], strict=True)]
        m = statistics.median(v)
        summary["ratios"][f"{a} / {b}"] = (m, min(v), max(v))
        log(f"  {a} / {b}: median {m:.1f}x  range {min(v):.1f}-{max(v):.1f}x")
    return summary


# --- configurations ---------------------------------------------------------------------------


def nft_ctx(lab: P2PLab, *tables: str):
    @contextlib.contextmanager
    def ctx():
        for t in tables:
            lab.run("gate", ["nft", "-f", "-"], input=t, check=True)
        try:
            yield
        finally:
            lab.sh("gate", "nft flush ruleset")

    return ctx


def xdp_ctx(lab: P2PLab, gate, mode: str):
    @contextlib.contextmanager
    def ctx():
        with in_netns(lab.nspath("gate")):
            gate.attach("eth0", mode)
        try:
            yield
        finally:
            with in_netns(lab.nspath("gate")):
                gate.detach("eth0")

    return ctx


@contextlib.contextmanager
def nothing():
    yield


def phase_syn(lab, gates, args, log) -> dict:
    g_ip = lab["gate"].v4
    tmpl = frame(lab.mac["client"], lab.mac["gate"], "198.18.0.1", g_ip, 6, tcp_syn(40000, 22))
    with LiveSender(tmpl, lab.ifindex["client"], "198.18.0.0", 0x1FFFF) as s:
        small, big = gates

        floor = lab.floor

        cfgs = {
            "XDP_DROP only (path floor)": (floor, s, None),
            "kernel RST (closed port)": (nothing, s, None),
            "nftables (sparoid ruleset)": (nft_ctx(lab, NFT_INPUT), s, None),
            "spagate native, allow 1": (xdp_ctx(lab, small, "native"), s, small.maps),
            "spagate native, allow 1M": (xdp_ctx(lab, big, "native"), s, big.maps),
            "spagate generic, allow 1": (xdp_ctx(lab, small, "generic"), s, small.maps),
            "spagate generic, allow 1M": (xdp_ctx(lab, big, "generic"), s, big.maps),
        }
        log(f"SYN flood to tcp/22 from random 198.18.0.0/15, {args.count:,} frames per run")
        res = rounds(lab, cfgs, args.rounds, args.count, log)
    return summarise("SYN flood", res, [
        ("nftables (sparoid ruleset)", "spagate native, allow 1"),
        ("nftables (sparoid ruleset)", "spagate native, allow 1M"),
        ("kernel RST (closed port)", "spagate native, allow 1"),
        ("nftables (sparoid ruleset)", "spagate generic, allow 1"),
    ], log)  # fmt: skip


def phase_disguise(lab, pins, args, log) -> dict:
    """Closed against filtered: what answering every SYN with an RST costs the gate."""
    g_ip = lab["gate"].v4
    gates = {}
    try:
        for mode in ("filtered", "closed"):
            g = load(GateOptions(disguise=mode), f"{pins}-{mode}")
            g.maps.set_protected([("tcp", 22)])
            gates[mode] = g
        tmpl = frame(lab.mac["client"], lab.mac["gate"], "198.18.0.1", g_ip, 6, tcp_syn(40000, 22))
        with LiveSender(tmpl, lab.ifindex["client"], "198.18.0.0", 0x1FFFF) as s:
            cfgs = {
                "kernel RST (closed port)": (nothing, s, None),
                "spagate filtered (drop)": (xdp_ctx(lab, gates["filtered"], "native"), s,
                                            gates["filtered"].maps),
                "spagate closed (XDP RST)": (xdp_ctx(lab, gates["closed"], "native"), s,
                                             gates["closed"].maps),
            }  # fmt: skip
            log(f"\nSYN flood to tcp/22 from random 198.18.0.0/15 by disguise, {args.count:,} "
                "frames per run")  # fmt: skip
            res = rounds(lab, cfgs, args.rounds, args.count, log)
    finally:
        for g in gates.values():
            g.close()
        for mode in ("filtered", "closed"):
            unpin(f"{pins}-{mode}")
    return summarise("SYN flood by disguise", res, [
        ("spagate closed (XDP RST)", "spagate filtered (drop)"),
        ("kernel RST (closed port)", "spagate closed (XDP RST)"),
    ], log)  # fmt: skip


def phase_udp(lab, gates, args, log) -> dict:
    g_ip = lab["gate"].v4
    small = gates[0]
    small.maps.set_spa_keys([os.urandom(32)])
    tmpl = frame(lab.mac["client"], lab.mac["gate"], "198.18.0.1", g_ip, 17,
                 udp(40000, SPA_PORT, os.urandom(96)), l4_csum=False)  # fmt: skip
    sock = lab.spawn("gate", [sys.executable, "-c",
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        f"s.bind(('0.0.0.0',{SPA_PORT}))\nprint('ready',flush=True)\ntime.sleep(3600)"],
        stdout=subprocess.PIPE, text=True)  # fmt: skip
    sock.stdout.readline()
    with (
        LiveSender(tmpl, lab.ifindex["client"], "198.18.0.1", 0) as one,
        LiveSender(tmpl, lab.ifindex["client"], "198.18.0.0", 0xFFFF) as many,
    ):
        nft = nft_ctx(lab, NFT_INPUT, NFT_METER)
        xdp = xdp_ctx(lab, small, "native")
        cfgs = {
            "nftables meter, 1 source": (nft, one, None),
            "spagate native, 1 source": (xdp, one, small.maps),
            "nftables meter, 65536 sources": (nft, many, None),
            "spagate native, 65536 sources": (xdp, many, small.maps),
        }
        log(f"\nUDP flood to udp/{SPA_PORT}, 96-byte junk payloads, {args.count:,} frames per run"
            " (gate: a bound UDP socket nobody reads)")  # fmt: skip
        res = rounds(lab, cfgs, args.rounds, args.count, log)
    sock.kill()
    return summarise("UDP flood to the SPA port", res, [
        ("nftables meter, 1 source", "spagate native, 1 source"),
        ("nftables meter, 65536 sources", "spagate native, 65536 sources"),
    ], log)  # fmt: skip


# --- the daemon ---------------------------------------------------------------------------------


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _allowed_ns(maps, ip: str) -> int | None:
    raw = bpfsys.lookup(maps.fd("allow"), ALLOW_KEY.pack(addr16(ip), 0, 0), 8)
    return None if raw is None else int.from_bytes(raw, "little")


def phase_spa(lab, work, args, log) -> dict:
    from spagate.gate.kernel.maps import GateMaps
    from spagate.lab.gate import LabGate

    window = 600
    gate = LabGate(lab, work)
    gate.configure(f"open-seconds = {window}\n")  # default limits: 1/s burst 8, budget 2000
    out = {}
    try:
        gate.start()
        client = gate.knocker()
        g_ip = gate.ip()
        kinds = {
            "SYN flood, random sources": (frame(lab.mac["client"], lab.mac["gate"], "198.18.0.1",
                g_ip, 6, tcp_syn(40000, 22)), "198.18.0.0", 0x1FFFF),
            "SPA-port flood, 1 source": (frame(lab.mac["client"], lab.mac["gate"], "198.18.0.1",
                g_ip, 17, udp(40000, SPA_PORT, os.urandom(96)), l4_csum=False), "198.18.0.1", 0),
            "SPA-port flood, 65536 sources": (frame(lab.mac["client"], lab.mac["gate"],
                "198.18.0.1", g_ip, 17, udp(40000, SPA_PORT, os.urandom(96)), l4_csum=False),
                "198.18.0.0", 0xFFFF),
        }  # fmt: skip
        log(f"\nValid SPA during a flood (real daemon, default limits, {args.spa_count:,} frames)")
        with GateMaps.from_pin_dir(gate.pin_dir) as maps:
            for k, (kind, (tmpl, base, mask)) in enumerate(kinds.items()):
                with LiveSender(tmpl, lab.ifindex["client"], base, mask) as s:
                    c0, rx0 = maps.counters(), lab.rx()
                    th = threading.Thread(
                        target=s.run, args=(args.spa_count, lab.nspath("client"), SEND_CPU)
                    )
                    t_start = time.monotonic()
                    th.start()
                    time.sleep(0.3)
                    tries, opened, first_sent = [], None, None
                    for attempt in range(8):
                        ip = f"203.0.113.{10 * k + attempt + 1}"
                        sent = int(client.ask(f"one {ip}"))
                        first_sent = first_sent or sent
                        tries.append(ip)
                        end = time.monotonic() + 0.25
                        while time.monotonic() < end:
                            exp = _allowed_ns(maps, ip)
                            if exp is not None:
                                opened = (exp - window * 10**9 - sent, th.is_alive(), sent)
                                break
                            time.sleep(0.005)
                        if opened:
                            break
                    th.join()
                    dur = time.monotonic() - t_start
                    rx1 = lab.rx()
                    c = counter_delta(c0, maps.counters())
                if opened:
                    lat, during, sent = opened
                    log(f"  {kind:<32} opened after {len(tries)} packet(s): "
                        f"{lat / 1e6:.2f} ms from its send "
                        f"({(lat + sent - first_sent) / 1e6:.1f} ms from the first), "
                        f"{'while the flood ran' if during else 'AFTER the flood'} "
                        f"(flood {dur:.1f}s)")  # fmt: skip
                else:
                    log(f"  {kind:<32} NOT opened ({len(tries)} packets sent during the flood)")
                lost = (rx1[1] - rx0[1]) / max(rx1[0] - rx0[0] + rx1[1] - rx0[1], 1)
                log(f"      counters: {c}; eth0 ring drops (overload): {100 * lost:.0f}%")
                out[kind] = {
                    "ring_drop_pct": 100 * lost,
                    "opened": bool(opened and opened[1]),
                    "tries": len(tries),
                    "ms": opened[0] / 1e6 if opened else None,
                }
        client.close()
    finally:
        gate.cleanup()
    return out


def phase_daemon(lab, work, args, log) -> dict:
    from spagate.gate.kernel.maps import GateMaps
    from spagate.gate.service.state import read_state
    from spagate.lab.gate import LabGate

    gate = LabGate(lab, work)
    gate.configure("rate = 100000/s burst 100000\nspa-budget = 10000000\n")
    out = {}
    try:
        gate.start()
        time.sleep(1.5)
        pid = read_state(gate.pin_dir)["worker_pid"]  # the process that takes the knocks
        out["rss_start_kb"] = _rss_kb(pid)
        log(f"\nDaemon (limits lifted: rate 100000/s burst 100000, spa-budget 10000000), "
            f"RSS after start {out['rss_start_kb'] / 1024:.1f} MiB")  # fmt: skip

        def settle() -> int:
            last = process_cpu_ns(pid)
            while True:
                time.sleep(0.5)
                now = process_cpu_ns(pid)
                if now - last < 10_000_000:
                    return now
                last = now

        def counts() -> dict:
            time.sleep(1.2)  # published at most once a second
            return (read_state(gate.pin_dir) or {}).get("spa", {})

        with GateMaps.from_pin_dir(gate.pin_dir) as maps:
            # Replays of one fresh valid packet from 65,536 sources: all MAC-valid; the kernel
            # queues the first and drops the rest (spa_seen, spa_replay_dup) before the budget.
            reps = []
            for i in range(3):
                valid = make_packet(gate.keys, f"203.0.113.{200 + i}", time.time_ns() // 10**6)
                tmpl = frame(lab.mac["client"], lab.mac["gate"], "198.18.0.1", gate.ip(), 17,
                             udp(40000, SPA_PORT, valid), l4_csum=False)  # fmt: skip
                with LiveSender(tmpl, lab.ifindex["client"], "198.18.0.0", 0xFFFF, False) as s:
                    c0, cpu0 = maps.counters(), settle()
                    s.run(args.replays, lab.nspath("client"), SEND_CPU)
                    cpu1 = settle()
                c1 = maps.counters()
                q = c1["spa_queued"] - c0["spa_queued"]
                dup = c1["spa_replay_dup"] - c0["spa_replay_dup"]
                reps.append((q, dup))
                log(
                    f"  replays of one packet from 65,536 sources: {q:,} queued to the daemon, "
                    f"{dup:,} dropped in the kernel as duplicates, "
                    f"{(cpu1 - cpu0) / 1e6:.0f} ms daemon CPU"
                )
            out["replays"] = {"queued": max(q for q, _ in reps), "dup": min(d for _, d in reps)}
            # Fresh valid packets for third-party addresses until 1,000,000 are accepted.
            client = gate.knocker()
            base = counts().get("accepted", 0)
            nxt = int(IPv4Address("100.64.0.0"))
            cpu0, t0 = process_cpu_ns(pid), time.monotonic()
            rss, accepted = [], 0
            while accepted < args.accepted and time.monotonic() - t0 < args.accept_timeout:
                n = min(args.accepted - accepted, 100_000)
                client.ask(f"many {n} {args.accept_rate} {IPv4Address(nxt)} quiet")
                nxt += n
                settle()
                accepted = counts().get("accepted", 0) - base
                rss.append((accepted, _rss_kb(pid)))
                log(f"  accepted {accepted:>9,}  RSS {rss[-1][1] / 1024:6.1f} MiB")
            cpu = process_cpu_ns(pid) - cpu0
            client.close()
            out["accepted"] = accepted
            out["accept_per_cpu_s"] = accepted / (cpu / 1e9)
            out["rss_kb"] = rss
            per = out["accept_per_cpu_s"]
            log(f"  {accepted:,} accepted in {time.monotonic() - t0:.0f}s, daemon CPU "
                f"{cpu / 1e9:.1f}s -> {per:,.0f} accepted per CPU-second")  # fmt: skip
    finally:
        gate.cleanup()
    return out


# --- main ---------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=3_000_000, help="frames per flood run")
    ap.add_argument("--spa-count", type=int, default=15_000_000, help="frames, SPA-under-flood")
    ap.add_argument("--replays", type=int, default=300_000)
    ap.add_argument("--accepted", type=int, default=1_000_000)
    ap.add_argument("--accept-rate", type=float, default=40_000)
    ap.add_argument("--accept-timeout", type=float, default=180)
    ap.add_argument("--phases", default="syn,disguise,udp,spa,daemon")
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/floods.py needs root")
    if os.cpu_count() < 2:
        raise SystemExit("bench/floods.py needs 2 CPUs (sender and gate apart)")
    phases = args.phases.split(",")

    def log(line: str) -> None:
        print(line, flush=True)

    summary: dict = {"machine": {"load_start": os.getloadavg()}}
    pins = f"/sys/fs/bpf/spagate-bench-{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="spagate-bench-"))
    gates = []
    lab = P2PLab(prefix=f"sgb{os.getpid() % 100000}")
    try:
        lab.open()
        if "syn" in phases or "udp" in phases:
            small = load(GateOptions(), f"{pins}-small")
            gates.append(small)
            small.maps.set_protected([("tcp", 22)])
            if "syn" in phases:
                big = load(GateOptions(allow_capacity=1_100_000), f"{pins}-big")
                gates.append(big)
                big.maps.set_protected([("tcp", 22)])
                t = time.monotonic()
                until = time.monotonic_ns() + 3600 * 10**9
                big.maps.allow_hosts([int(i).to_bytes(16, "big") for i in range(1, 10**6 + 1)],
                                     until)  # fmt: skip
                log(f"allow map filled with 1,000,000 entries in {time.monotonic() - t:.1f}s")
                summary["syn"] = phase_syn(lab, gates, args, log)
            if "udp" in phases:
                summary["udp"] = phase_udp(lab, gates, args, log)
            for g in gates:
                g.close()
            gates.clear()
        if "disguise" in phases:
            summary["disguise"] = phase_disguise(lab, pins, args, log)
        if "spa" in phases:
            summary["spa"] = phase_spa(lab, work, args, log)
        if "daemon" in phases:
            summary["daemon"] = phase_daemon(lab, work, args, log)
    finally:
        for g in gates:
            g.close()
        lab.close()
        for suffix in ("small", "big"):
            unpin(f"{pins}-{suffix}")
        shutil.rmtree(work, ignore_errors=True)
    summary["machine"]["load_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
