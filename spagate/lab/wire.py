"""Send raw frames from a lab host and catch what comes back (AF_PACKET, root).

    python -m spagate.lab.wire exchange IFACE PEER_MAC [-t S] [-g S] FRAMEHEX...

For each frame (hex, built with spagate.lab.packets): send it on IFACE, then print one line,
the space-separated hex of every IPv4/IPv6 frame from PEER_MAC to us within S seconds ("-" for
none). -g: pause between frames (ICMP rate limits). Used by the tests that compare the gate's
replies with the kernel's own, byte by byte.
"""

from __future__ import annotations

import argparse
import socket
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
IP_TYPES = (b"\x08\x00", b"\x86\xdd", b"\x81\x00", b"\x88\xa8")


def exchange(iface: str, peer: bytes, frames: list[bytes], wait: float, gap: float) -> list:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    mine = s.getsockname()[4]  # our MAC: only frames to us (no multicast chatter)
    out = []
    try:
        for frame in frames:
            s.settimeout(0)
            try:
                while s.recv(65535):  # whatever came before this probe
                    pass
            except BlockingIOError:
                pass
            s.send(frame)
            got, end = [], time.monotonic() + wait
            while (left := end - time.monotonic()) > 0:
                s.settimeout(left)
                try:
                    data, addr = s.recvfrom(65535)
                except TimeoutError:
                    break
                if addr[2] == PACKET_OUTGOING or data[6:12] != peer or data[:6] != mine:
                    continue
                if data[12:14] not in IP_TYPES:
                    continue
                got.append(data)
            out.append(got)
            time.sleep(gap)
    finally:
        s.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m spagate.lab.wire")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("exchange")
    ex.add_argument("iface")
    ex.add_argument("peer_mac")
    ex.add_argument("frames", nargs="+")
    ex.add_argument("-t", "--wait", type=float, default=0.5)
    ex.add_argument("-g", "--gap", type=float, default=0.0)
    a = ap.parse_args()
    peer = bytes.fromhex(a.peer_mac.replace(":", ""))
    for got in exchange(a.iface, peer, [bytes.fromhex(f) for f in a.frames], a.wait, a.gap):
        print(" ".join(g.hex() for g in got) or "-", flush=True)


if __name__ == "__main__":
    main()
