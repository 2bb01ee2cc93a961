"""Verifier throughput on one core: valid packets, bad-MAC packets, replays.

Prints packets/s for spagate's Verifier and, side by side, a naive verifier (fresh HMAC and
CBC cipher per packet, padding stripped before the key is known) on the same packets.

    .venv/bin/python bench/verifier.py [--n 100000] [--keys 1]
"""

from __future__ import annotations

import argparse
import hmac
import os
import time
from ipaddress import ip_address

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from spagate.protocol import KeyPair, Verifier, generate_keypair, make_packet


class NaiveVerifier:
    """Straightforward per-packet key setup, the way a first implementation would do it."""

    def __init__(self, keyring, max_skew_ms=5000):
        self.keyring = list(keyring)
        self.skew = max_skew_ms
        self.seen: dict[bytes, int] = {}

    def verify(self, packet, now_ms):
        if len(packet) != 96:
            return "size"
        for kp in self.keyring:
            mac = hmac.new(kp.hmac_key, packet[32:], "sha256").digest()
            if hmac.compare_digest(mac, packet[:32]):
                break
        else:
            return "mac"
        dec = Cipher(algorithms.AES(kp.key), modes.CBC(packet[32:48])).decryptor()
        padded = dec.update(packet[48:]) + dec.finalize()
        unpad = padding.PKCS7(128).unpadder()
        plain = unpad.update(padded) + unpad.finalize()
        ts = int.from_bytes(plain[4:12], "big", signed=True)
        if abs(ts - now_ms) > self.skew:
            return "time"
        nonce = plain[12:28]
        if nonce in self.seen:
            return "replay"
        self.seen[nonce] = ts + self.skew
        ip_address(plain[28:])
        return "ok"


def packets(keys: KeyPair, n: int, now_ms: int) -> list[bytes]:
    return [make_packet(keys, "198.51.100.7", now_ms) for _ in range(n)]


def rate(fn, items, now_ms) -> float:
    t0 = time.perf_counter()
    for p in items:
        fn(p, now_ms)
    return len(items) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument(
        "--keys", type=int, nargs="+", default=[1, 3], help="key ring sizes; the right key is last"
    )
    args = ap.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core

    print(f"packets/s on one core, {args.n} packets per case")
    print(f"{'keys':>4} {'case':<8} {'spagate':>12} {'naive':>12} {'ratio':>7}")
    for size in args.keys:
        ring = [generate_keypair() for _ in range(size)]
        now = int(time.time() * 1000)
        valid = packets(ring[-1], args.n, now)
        bad_mac = [os.urandom(96) for _ in range(args.n)]
        replays = [valid[0]] * args.n
        for name, items in (("valid", valid), ("bad-mac", bad_mac), ("replay", replays)):
            fast = Verifier(ring, replay_capacity=2 * args.n + 10)
            naive = NaiveVerifier(ring)
            if name == "replay":
                fast.verify(valid[0], now)
                naive.verify(valid[0], now)
            r_fast = rate(fast.verify, items, now)
            r_naive = rate(naive.verify, items, now)
            ratio = r_fast / r_naive
            print(f"{size:>4} {name:<8} {r_fast:>12,.0f} {r_naive:>12,.0f} {ratio:>6.1f}x")


if __name__ == "__main__":
    main()
