"""Fleet: knock-to-remote-open latency through a real three-member etcd cluster, and the store
traffic per knock.

Two processes on one host, each a fleet member with its own adapter (FleetStore + FleetSync):
gate A verifies nothing itself but claims and publishes N real sparoid knocks, one address each
(198.18.0.0/15), paced at --rate; gate B watches and re-verifies each peer grant with the same
identity and records when its LocalGate.allow is called. CLOCK_MONOTONIC is one clock for both
processes, so remote-open = B's allow - A's knock start. Also printed: A's claim (the local
admit decision) and the requests and bytes per knock (A's calls, B's watch stream).

    .venv/bin/python bench/fleet.py [--count 1000] [--rate 200] [--tmpfs] [--tls]

The lead extends this to real gates (knock through XDP, SYN to the peer gate).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
from ipaddress import IPv4Address

from spagate.gate.core.config import parse_config
from spagate.gate.core.fleet import (
    ClaimRecord,
    GrantRecord,
    MemberRecord,
    Mirror,
    Trust,
    claim_id_sparoid,
)
from spagate.gate.service.fleet import FleetOptions, FleetStore, FleetSync
from spagate.lab.etcd import EtcdCluster
from spagate.protocol import KeyPair, decode, make_packet

BASE = IPv4Address("198.18.0.0")
WINDOW_S = 15.0  # the identity's window (open-seconds default): B caps peers to it


def _options(cluster: EtcdCluster, name: str) -> FleetOptions:
    tls = cluster.client_tls
    extra = {"ca": tls.ca, "cert": tls.cert, "key": tls.key} if tls else {}
    return FleetOptions("bench", tuple(cluster.endpoints), name, **extra)


def _config(keys: KeyPair):
    text = f"key = {keys.key.hex()}\nhmac-key = {keys.hmac_key.hex()}\nprotected = tcp/22\n"
    return parse_config(text, "/etc/spagate.ini")


class _Recorder:
    """B's LocalGate: when each address opened."""

    def __init__(self, count: int):
        self.count, self.seen, self.all = count, {}, threading.Event()

    def allow(self, ip, proto, port, remaining_s):
        self.seen.setdefault(int(ip) - int(BASE), time.monotonic())
        if len(self.seen) >= self.count:
            self.all.set()

    def revoke(self, ip, proto, port):
        pass

    def remember(self, kind, key, remaining_s):
        pass


def watcher(opts: FleetOptions, keys_hex: tuple[str, str], count: int, ready, out) -> None:
    keys = KeyPair(bytes.fromhex(keys_hex[0]), bytes.fromhex(keys_hex[1]))
    store = FleetStore(opts)
    rec = _Recorder(count)
    sync = FleetSync(
        store,
        Mirror(store.keys, Trust.for_config(_config(keys))),
        rec,
        lambda: MemberRecord(opts.member, "attached"),
    )
    sync.start()
    ready.set()
    rec.all.wait(timeout=60 + count / 10)
    counts = dict(sync.counts)
    sync.stop()
    out.put({"seen": rec.seen, "counts": counts, "ignored": dict(sync.mirror.ignored)})


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=200.0, help="knocks per second")
    ap.add_argument("--tmpfs", action="store_true", help="etcd data dirs in /dev/shm")
    ap.add_argument("--tls", action="store_true", help="client and peer TLS (throwaway CA)")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="sgfleet-", dir="/dev/shm") if args.tmpfs else None
    try:
        return run(args, base)
    finally:
        if base:
            shutil.rmtree(base, ignore_errors=True)


def run(args, base: str | None) -> int:
    keys = KeyPair(os.urandom(32), os.urandom(32))
    ctx = mp.get_context("spawn")
    with EtcdCluster(3, tls=args.tls, base_dir=base) as cluster:
        ready, out = ctx.Event(), ctx.Queue()
        b = ctx.Process(
            target=watcher,
            args=(_options(cluster, "b"), (keys.key.hex(), keys.hmac_key.hex()), args.count,
                  ready, out),
        )  # fmt: skip
        b.start()
        if not ready.wait(30):
            print("fleet bench: the watcher did not start", file=sys.stderr)
            return 1
        store = FleetStore(_options(cluster, "a"))
        sync = FleetSync(
            store,
            Mirror(store.keys, Trust.for_config(_config(keys))),
            _Recorder(0),
            lambda: MemberRecord("a", "attached"),
        )
        sync.start()
        req0 = store.traffic()
        starts, claims, outcomes = {}, [], {}
        t_begin = time.monotonic()
        for i in range(args.count):
            delay = t_begin + i / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ip = IPv4Address(int(BASE) + i)
            pkt = make_packet(keys, ip, time.time_ns() // 1_000_000)
            cid = claim_id_sparoid(decode(pkt, [keys]).message.nonce)
            t0 = time.monotonic()
            starts[i] = t0
            d = sync.knock(
                cid,
                ClaimRecord("a", "sparoid", pkt, ip, 5.0),
                [GrantRecord(ip, "tcp", 22, WINDOW_S, f"claim:{cid}", "a")],
                5.0,
            )
            claims.append(time.monotonic() - t0)
            outcomes[d.reason] = outcomes.get(d.reason, 0) + 1
        elapsed = time.monotonic() - t_begin
        req1 = store.traffic()
        result = out.get(timeout=120)
        b.join(10)
        sync.stop()
    seen = result["seen"]
    remote = [seen[i] - starts[i] for i in starts if i in seen]
    n = args.count
    reqs, sent, recv = (req1[k] - req0[k] for k in range(3))
    ms = 1000
    store_kind = "tmpfs" if args.tmpfs else "disk"
    print(f"fleet bench: 3-member etcd 3.4 ({store_kind}{', TLS' if args.tls else ''}), "
          f"{n} knocks at {n / elapsed:.0f}/s, outcomes {outcomes}")  # fmt: skip
    print(f"  claim+publish (A's admit)      p50 {pct(claims, .5) * ms:6.2f} ms   "
          f"p99 {pct(claims, .99) * ms:6.2f} ms   max {max(claims) * ms:6.2f} ms")  # fmt: skip
    if remote:
        print(f"  knock-to-remote-open (B)       p50 {pct(remote, .5) * ms:6.2f} ms   "
              f"p99 {pct(remote, .99) * ms:6.2f} ms   max {max(remote) * ms:6.2f} ms   "
              f"({len(remote)}/{n} opened on B)")  # fmt: skip
    print(f"  store traffic per knock (A)    {reqs / n:.2f} requests, {sent / n:.0f} B sent, "
          f"{recv / n:.0f} B received (JSON bodies, HTTP headers not counted)")  # fmt: skip
    wb = result["counts"].get("watch-bytes", 0)
    print(f"  watch stream per knock (B)     {wb / n:.0f} B (each watcher receives this)")
    if result["ignored"]:
        print(f"  B ignored: {result['ignored']}")
    return 0 if len(remote) == n else 1


if __name__ == "__main__":
    sys.exit(main())
