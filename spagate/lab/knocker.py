"""A knocking client for the benches, driven line by line on stdin (runs inside a lab host).

    python -m spagate.lab.knocker KEY_HEX HMAC_KEY_HEX HOST [PORT]
    one IP                 one packet opening IP; prints the CLOCK_MONOTONIC ns it left at
    many N RATE BASE [quiet]  N packets opening BASE, BASE+1, ... at RATE per second; prints
                           {ip: ns it left} as one JSON line (quiet: only N)
    blast N BASE           make N packets opening BASE, BASE+1, ... first, then send them as
                           fast as the socket takes them; prints the seconds the sending took
Prints "ready" first. Packets come from spagate.protocol.make_packet, like the real client's.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from ipaddress import ip_address

from spagate.protocol import KeyPair, make_packet


def main(argv: list[str]) -> int:
    keys = KeyPair(bytes.fromhex(argv[0]), bytes.fromhex(argv[1]))
    host, port = argv[2], int(argv[3]) if len(argv) > 3 else 8484
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "one":
            pkt = make_packet(keys, cmd[1], time.time_ns() // 1_000_000)
            t = time.monotonic_ns()
            s.sendto(pkt, (host, port))
            print(t, flush=True)
        elif cmd[0] == "many":
            n, rate, base = int(cmd[1]), float(cmd[2]), int(ip_address(cmd[3]))
            sent: dict[str, int] = {}
            start = time.monotonic()
            quiet = cmd[4:] == ["quiet"]
            for i in range(n):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # sleep, not spin: the gate shares the cores
                ip = ip_address(base + i)
                pkt = make_packet(keys, ip, time.time_ns() // 1_000_000)
                if not quiet:
                    sent[str(ip)] = time.monotonic_ns()
                s.sendto(pkt, (host, port))
            print(n if quiet else json.dumps(sent), flush=True)
        elif cmd[0] == "blast":
            n, base = int(cmd[1]), int(ip_address(cmd[2]))
            now = time.time_ns() // 1_000_000
            pkts = [make_packet(keys, ip_address(base + i), now) for i in range(n)]
            t = time.monotonic()
            for pkt in pkts:
                while True:
                    try:
                        s.sendto(pkt, (host, port))
                        break
                    except BlockingIOError:
                        time.sleep(0.0001)
            print(f"{time.monotonic() - t:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
