"""Cost of the in-kernel SPA MAC check (bpf/sha256.h) per packet, via BPF_PROG_TEST_RUN.

Runs, in one process: an empty XDP program (`return XDP_PASS`), the HMAC program of
spagate/lab/hmac.py with 1 key and a valid packet, and with a full ring of
SPA_KEYS_MAX keys and a junk packet (the worst case a flood can force). Needs root.

    sudo .venv/bin/python bench/xdp_hmac.py [--repeat 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os

from spagate.gate.kernel import bpfsys
from spagate.gate.kernel.abi import SPA_KEYS_MAX, XdpAction
from spagate.lab.hmac import HmacProgram, mac_packet


def best_ns(fd: int, packet: bytes, repeat: int, rounds: int, want: int) -> int:
    """Lowest average over rounds (each: `repeat` runs in the kernel); checks the verdict."""
    best = None
    for _ in range(rounds):
        r = bpfsys.prog_test_run(fd, packet, repeat=repeat)
        if r.retval != want:
            raise SystemExit(f"unexpected verdict {r.retval} (wanted {want})")
        best = r.duration_ns if best is None else min(best, r.duration_ns)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    prog = HmacProgram()
    empty = bpfsys.prog_load_xdp_return(XdpAction.PASS, "xdp_empty")
    try:
        key = os.urandom(32)
        packet = mac_packet(key)
        base = best_ns(empty, packet, args.repeat, args.rounds, XdpAction.PASS)
        prog.set_keys([key])
        one = best_ns(prog.fd, packet, args.repeat, args.rounds, XdpAction.PASS)
        one_junk = best_ns(prog.fd, os.urandom(96), args.repeat, args.rounds, XdpAction.DROP)
        ring = [os.urandom(32) for _ in range(SPA_KEYS_MAX)]
        prog.set_keys(ring)
        full = best_ns(prog.fd, os.urandom(96), args.repeat, args.rounds, XdpAction.DROP)
    finally:
        os.close(empty)
        prog.close()

    n = SPA_KEYS_MAX
    print(f"repeat {args.repeat} x {args.rounds} rounds (best), ns per packet:")
    print(f"  empty XDP program                 {base:6d} ns   1.0x")
    print(f"  HMAC, 1 key, valid packet         {one:6d} ns  {one / max(base, 1):5.1f}x")
    print(f"  HMAC, 1 key, junk packet          {one_junk:6d} ns  {one_junk / max(base, 1):5.1f}x")
    print(f"  HMAC, {n} keys, junk packet         {full:6d} ns  {full / max(base, 1):5.1f}x")
    print(f"  => one core drops ~{1e9 / max(one_junk, 1) / 1e6:.2f} Mpps of junk with 1 key")


if __name__ == "__main__":
    main()
