"""Tiny network probes run inside lab hosts by the demo and the end-to-end tests.

python -m spagate.lab.probe serve tcp|udp PORT        echo server (prints "ready" when bound)
python -m spagate.lab.probe connect HOST PORT [-t S]  TCP connect: exit 0 connected, 1 timeout,
                                                  2 refused/unreachable
python -m spagate.lab.probe hold HOST PORT [-t S]     connect, then send each stdin line and
                                                  print the echo (a connection kept open)
python -m spagate.lab.probe udp HOST PORT [-t S]      send lines from stdin, print the echoes
                                                  ("timeout" when none comes back)
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import os
import random
import socket
import sys
import threading
import time

from spagate.lab import packets


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve(proto: str, port: int) -> None:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 and IPv6 on one socket
    s.bind(("::", port))
    print("ready", flush=True)
    if proto == "udp":
        while True:
            data, peer = s.recvfrom(65535)
            s.sendto(b"echo " + data, peer)
    s.listen(128)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=_echo, args=(conn,), daemon=True).start()


def _echo(conn: socket.socket) -> None:
    with conn:
        conn.sendall(b"hello from the protected service\n")
        while data := conn.recv(4096):
            conn.sendall(b"echo " + data)


def connect(host: str, port: int, timeout: float) -> socket.socket | int:
    s = socket.socket(_family(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except TimeoutError:
        return 1
    except OSError:
        return 2
    return s


def raw(host: str, port: int, payloads: list[bytes], wait: float) -> str:
    """Send payloads on a connected UDP socket: an ICMP port-unreachable shows as ECONNREFUSED."""
    s = socket.socket(_family(host), socket.SOCK_DGRAM)
    s.connect((host, port))
    s.settimeout(wait)
    try:
        for p in payloads:
            s.send(p)
            time.sleep(0.01)
        s.recv(65535)
        return "answered"
    except ConnectionRefusedError:
        return "icmp"
    except TimeoutError:
        return "silent"


def flood(
    host: str, port: int, count: int, spoof: str | None, size: int = 96, text: bool = False
) -> None:
    """Bounded junk flood: count packets of size bytes (text: base64 characters, as fwknop's
    are), then stop. Spoofed sources need IPv4 raw sockets."""
    junk = base64.b64encode(os.urandom(size))[:size] if text else os.urandom(size)
    if spoof is None:
        s = socket.socket(_family(host), socket.SOCK_DGRAM)
        for _ in range(count):
            s.sendto(junk, (host, port))
        return
    net = ipaddress.ip_network(spoof)
    base, size = int(net.network_address), net.num_addresses
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL implied
    rnd = random.Random(os.getpid())
    for _ in range(count):
        src = str(ipaddress.IPv4Address(base + rnd.randrange(size)))
        l4 = packets.udp(rnd.randrange(1024, 65535), port, junk)
        s.sendto(packets.ipv4(src, host, packets.UDP, l4, ident=0), (host, 0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spagate.lab.probe")
    ap.add_argument("cmd", choices=["serve", "connect", "hold", "udp", "raw", "flood"])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("payloads", nargs="*")
    ap.add_argument("-t", "--timeout", type=float, default=2.0)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--spoof")
    ap.add_argument("--size", type=int, default=96, help="flood: payload bytes")
    ap.add_argument("--text", action="store_true", help="flood: base64 characters")
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        serve(args.a, int(args.b))
        return 0
    host, port = args.a, int(args.b)
    if args.cmd == "raw":
        print(raw(host, port, [bytes.fromhex(h) for h in args.payloads], args.timeout))
        return 0
    if args.cmd == "flood":
        t = time.monotonic()
        flood(host, port, args.count, args.spoof, args.size, args.text)
        print(f"sent {args.count} in {time.monotonic() - t:.2f}s", flush=True)
        return 0
    if args.cmd == "udp":
        s = socket.socket(_family(host), socket.SOCK_DGRAM)
        s.settimeout(args.timeout)
        for line in sys.stdin:
            s.sendto(line.encode(), (host, port))
            try:
                print(s.recv(65535).decode().rstrip("\n"), flush=True)
            except TimeoutError:
                print("timeout", flush=True)
        return 0
    res = connect(host, port, args.timeout)
    if isinstance(res, int):
        print("timeout" if res == 1 else "refused", flush=True)
        return res
    banner = res.recv(4096).decode().rstrip("\n")
    print(f"connected: {banner}", flush=True)
    if args.cmd == "hold":
        for line in sys.stdin:
            res.sendall(line.encode())
            try:
                print(res.recv(4096).decode().rstrip("\n"), flush=True)
            except TimeoutError:
                print("timeout", flush=True)
    res.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
