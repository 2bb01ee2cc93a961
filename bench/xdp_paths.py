"""Nanoseconds per packet for each verdict path of the XDP gate (BPF_PROG_TEST_RUN, root).

Runs each path `--repeat` times in the kernel (opts.duration = average ns) with the allow map
holding 1, 10,000 and 1,000,000 entries, beside a program that only returns XdpAction.PASS, and
prints the ratio to that empty program. Every figure is the best of `--rounds` interleaved
rounds (noise from other work on the machine only ever adds). Goal: every non-SPA path <= 3x
empty, flat across sizes.
The SPA paths run the in-kernel MAC check (tail call to xdp_spa_verify): a valid packet
queued to the ring, and junk (bad MAC) with 1 and SPA_KEYS_MAX keys (what a flood costs).

    sudo .venv/bin/python bench/xdp_paths.py [--repeat 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from dataclasses import replace
from ipaddress import IPv4Address

from spagate.gate.kernel import bpfsys
from spagate.gate.kernel.abi import FLOW_KEY, SPA_KEYS_MAX, U64, XdpAction
from spagate.gate.kernel.build import GateOptions, load
from spagate.gate.kernel.pins import unpin
from spagate.lab import packets
from spagate.net import addr16
from spagate.protocol import generate_keypair, make_packet

SIZES = (1, 10_000, 1_000_000)
SRC, DST = "198.51.100.10", "203.0.113.1"
# A static list of realistic size: 100 /24s (10.200.0.0/24 ...) and 100 IPv6 /48s.
STATIC_NETS = [f"10.200.{i}.0/24" for i in range(100)]
STATIC_NETS += [f"2001:db8:{i:x}::/48" for i in range(100)]


def eth_ip4(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    return packets.eth(packets.ipv4(src, dst, proto, l4, ident=1))


def tcp(sport: int, dport: int, flags: int) -> bytes:
    return packets.tcp(sport, dport, flags, seq=1)


udp = packets.udp


def fill_allow(maps, n: int, until: int) -> None:
    """n whole-host entries: SRC and n - 1 other addresses (100.64.0.0/10 and up)."""
    others = [IPv4Address((100 << 24) | (64 << 16) | i) for i in range(n - 1)]
    maps.allow_hosts([*others, SRC], until)


def measure(prog_fd: int, pkt: bytes, repeat: int, expect: int | None = None) -> int:
    r = bpfsys.prog_test_run(prog_fd, pkt, repeat)
    if expect is not None and r.retval != expect:
        raise SystemExit(f"unexpected verdict {r.retval} (wanted {expect})")
    return r.duration_ns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/xdp_paths.py needs root")
    rep = args.repeat
    base = f"/sys/fs/bpf/spagate-bench-{os.getpid()}"
    opts = GateOptions(allow_capacity=2_000_000, spa_budget_per_s=10**9)
    # SPA valid packet: a program whose limits never bite (the first copy is queued, the
    # repeats are replays dropped after the MAC check).
    spa_opts = replace(
        opts,
        spa_rate_per_s=1e9,
        spa_burst=10**9,
        allow_capacity=1024,
        ringbuf_pages=8192,
        untagged_budget_per_s=10**9,  # the junk is untagged: every copy reaches the HMAC
    )
    empty = bpfsys.prog_load_xdp_return(XdpAction.PASS)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    me, port = cli.getsockname(), srv.getsockname()[1]
    gates = []
    try:
        for label, o in (
            ("coarse", opts),
            ("fine", replace(opts, coarse_clock=False)),
        ):
            g = load(o, f"{base}-{label}")
            gates.append((label, g))
        spa_gate = load(spa_opts, f"{base}-spa")
        gates.append(("spa", spa_gate))

        stray = eth_ip4("192.0.2.99", DST, 6, tcp(40000, 22, 0x10))
        pk = {
            "unrelated (TCP :80)": (eth_ip4(SRC, DST, 6, tcp(40000, 80, 2)), 2),
            "SPA rate-limited": (eth_ip4(SRC, DST, 17, udp(40000, 8484, bytes(96))), 1),
            "protected SYN dropped": (eth_ip4("192.0.2.99", DST, 6, tcp(40000, 22, 2)), 1),
            "protected SYN allowed": (eth_ip4(SRC, DST, 6, tcp(40000, 22, 2)), 2),
            "established (sk lookup)": (
                eth_ip4(me[0], "127.0.0.1", 6, tcp(me[1], port, 0x10)),
                2,
            ),
            "stray ACK dropped": (stray, 1),
            "UDP flow": (eth_ip4(SRC, DST, 17, udp(40000, 51820, bytes(64))), 2),
            "UDP dropped": (eth_ip4("192.0.2.99", DST, 17, udp(40000, 51820, bytes(64))), 1),
        }
        # Paths measured with a static list of STATIC_NETS networks (LPM trie lookups).
        pk_static = {
            "SYN dropped, static list set": pk["protected SYN dropped"],
            "SYN static-allowed": (eth_ip4("10.200.1.1", DST, 6, tcp(40000, 22, 2)), 2),
        }
        fine_only = ("protected SYN allowed", "UDP flow", "SPA rate-limited")
        empties: list[int] = []
        rows: dict[str, dict[str, int]] = {}

        def best(row: str, n: int, ns: int) -> None:
            cell = rows.setdefault(row, {})
            cell[str(n)] = min(cell.get(str(n), ns), ns)

        for label, g in gates[:2]:
            g.maps.set_protected([("tcp", 22), ("tcp", port), ("udp", 51820)])
            key = FLOW_KEY.pack(addr16(SRC), 40000, 51820)
            for n in SIZES:
                g.maps.clear()
                g.maps.set_static([])
                fill_allow(g.maps, n, time.monotonic_ns() + 3600 * 10**9)
                bpfsys.update(g.maps.fd("udp_flows"), key, U64.pack(time.monotonic_ns()))
                for _ in range(args.rounds):
                    empties.append(measure(empty, pk["unrelated (TCP :80)"][0], rep))
                    for name, (pkt, want) in pk.items():
                        if label == "fine" and name not in fine_only:
                            continue
                        best(f"{name} [{label} clock]", n, measure(g.prog_fd, pkt, rep, want))
                if label == "fine":
                    continue
                g.maps.set_static(STATIC_NETS)
                for _ in range(args.rounds):
                    for name, (pkt, want) in pk_static.items():
                        best(f"{name} [{label} clock]", n, measure(g.prog_fd, pkt, rep, want))
                g.maps.set_static([])
        keys = generate_keypair()
        valid = make_packet(keys, SRC, int(time.time() * 1000))
        spa_pkt = eth_ip4(SRC, DST, 17, udp(40000, 8484, valid))
        junk_pkt = eth_ip4(SRC, DST, 17, udp(40000, 8484, os.urandom(96)))
        spa_rep = min(rep, 200_000)  # what the ring (8192 pages) holds without a reader
        junk_rep = min(rep, 100_000)  # ~1 us per key and packet
        spa_gate.maps.set_spa_keys([keys.hmac_key])
        spa_ns = measure(spa_gate.prog_fd, spa_pkt, spa_rep, 1)
        c = spa_gate.maps.counters()
        # One packet repeated: queued once, then dropped as a replay (MAC check + spa_seen).
        assert c["spa_queued"] == 1 and c["spa_replay_dup"] == spa_rep - 1, c
        junk_ns = {1: measure(spa_gate.prog_fd, junk_pkt, junk_rep, 1)}
        others = [generate_keypair().hmac_key for _ in range(SPA_KEYS_MAX - 1)]
        spa_gate.maps.set_spa_keys([keys.hmac_key, *others])
        junk_ns[SPA_KEYS_MAX] = measure(spa_gate.prog_fd, junk_pkt, junk_rep, 1)
        c = spa_gate.maps.counters()
        assert c["spa_bad_mac"] == 2 * junk_rep, f"junk not dropped as bad MAC: {c}"
        e = min(empties)
        print(
            f"repeat {rep:,}, best of {args.rounds} rounds per figure; ns per packet "
            "(ratio to the empty program)"
        )
        print(
            f"empty XDP program: {e} ns (median of its {len(empties)} runs: "
            f"{sorted(empties)[len(empties) // 2]} ns)"
        )
        hdr = "".join(f"{f'allow={n:,}':>18}" for n in SIZES)
        print(f"{'path':<44}{hdr}")
        for name, per in sorted(rows.items(), key=lambda r: "fine" in r[0]):
            cells = "".join(
                f"{per[str(n)]:>9} ns {per[str(n)] / e:>4.1f}x" for n in SIZES if str(n) in per
            )
            print(f"{name:<44}{cells}")
        print(
            f"{'SPA valid replayed (MAC + spa_seen, 1 key)':<44}{spa_ns:>9} ns {spa_ns / e:>4.1f}x"
            f"   (repeat {spa_rep:,})"
        )
        for n, ns in junk_ns.items():
            name = f"SPA junk (bad MAC, {n} key{'s' if n > 1 else ''})"
            print(f"{name:<44}{ns:>9} ns {ns / e:>4.1f}x   (repeat {junk_rep:,})")
    finally:
        for s in (cli, conn, srv):
            s.close()
        os.close(empty)
        for label, g in gates:
            g.close()
            unpin(f"{base}-{label}")


if __name__ == "__main__":
    main()
