"""Packet builders for the verdict matrix (struct only). Every length field is computed from
the bytes given unless overridden, so a test can make a header lie on purpose."""

from __future__ import annotations

import struct
from ipaddress import ip_address

ETH_IP, ETH_IP6, ETH_ARP, ETH_8021Q, ETH_8021AD = 0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8
TCP, UDP, ICMP, ICMP6, GRE, ESP, AH = 6, 17, 1, 58, 47, 50, 51
HOPOPTS, ROUTING, FRAGMENT, DSTOPTS, NONEXT = 0, 43, 44, 60, 59
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

MAC = bytes.fromhex("020000000001") + bytes.fromhex("020000000002")


def eth(payload: bytes, ethertype: int = ETH_IP, vlans: tuple[int, ...] = ()) -> bytes:
    """vlans: TPIDs outer first, e.g. (ETH_8021AD, ETH_8021Q) for QinQ."""
    out = MAC
    for i, tpid in enumerate(vlans):
        out += struct.pack("!HH", tpid, 100 + i)
    return out + struct.pack("!H", ethertype) + payload


def ipv4(
    src: str,
    dst: str,
    proto: int,
    l4: bytes,
    options: bytes = b"",
    frag_offset: int = 0,
    mf: bool = False,
    tot_len: int | None = None,
    ihl: int | None = None,
) -> bytes:
    assert len(options) % 4 == 0
    ihl = ihl if ihl is not None else 5 + len(options) // 4
    hlen = 20 + len(options)
    tot = tot_len if tot_len is not None else hlen + len(l4)
    frag = (frag_offset // 8) | (0x2000 if mf else 0)
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        tot,
        0x1234,
        frag,
        64,
        proto,
        0,
        ip_address(src).packed,
        ip_address(dst).packed,
    )
    return hdr + options + l4


def ext(nexthdr: int, kind: int, size: int = 8) -> bytes:
    """One IPv6 extension header of `size` bytes (multiple of 8; AH: multiple of 4)."""
    if kind == AH:
        return struct.pack("!BB", nexthdr, size // 4 - 2) + bytes(size - 2)
    return struct.pack("!BB", nexthdr, size // 8 - 1) + bytes(size - 2)


def frag6(nexthdr: int, offset: int = 0, mf: bool = False) -> bytes:
    return struct.pack("!BBHI", nexthdr, 0, offset | int(mf), 0xBEEF)


def ipv6(
    src: str,
    dst: str,
    nexthdr: int,
    payload: bytes,
    exts: tuple[tuple[int, bytes], ...] = (),
    payload_len: int | None = None,
) -> bytes:
    """exts: (kind, header bytes built for what follows) in wire order; nexthdr is the L4."""
    chain = b"".join(h for _, h in exts)
    first = exts[0][0] if exts else nexthdr
    body = chain + payload
    plen = payload_len if payload_len is not None else len(body)
    hdr = struct.pack("!IHBB", 6 << 28, plen, first, 64)
    return hdr + ip_address(src).packed + ip_address(dst).packed + body


def chain6(kinds: list[int], l4proto: int) -> tuple[tuple[int, bytes], ...]:
    """A chain of extension headers of the given kinds ending in l4proto."""
    out = []
    for i, kind in enumerate(kinds):
        nxt = kinds[i + 1] if i + 1 < len(kinds) else l4proto
        out.append(
            (kind, frag6(nxt) if kind == FRAGMENT else ext(nxt, kind, 16 if kind == ROUTING else 8))
        )
    return tuple(out)


def tcp(sport: int, dport: int, flags: int, doff: int = 5, payload: bytes = b"") -> bytes:
    opts = bytes(max(0, doff - 5) * 4)
    return (
        struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, doff << 4, flags, 65535, 0, 0)
        + opts
        + payload
    )


def udp(sport: int, dport: int, payload: bytes = b"", length: int | None = None) -> bytes:
    ln = length if length is not None else 8 + len(payload)
    return struct.pack("!HHHH", sport, dport, ln, 0) + payload
