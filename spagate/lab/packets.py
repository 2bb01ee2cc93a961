"""The one packet builder (struct only) of the tests, the benches and the probes.

Every length field is computed from the bytes given unless overridden, so a test can make a
header lie on purpose. IPv4 headers carry a correct header checksum; TCP/UDP checksums are
zero unless asked for (l4_checksum=True): the XDP gate never reads them, the kernel stack does.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, ip_address

ETH_IP, ETH_IP6, ETH_ARP, ETH_8021Q, ETH_8021AD = 0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8
TCP, UDP, ICMP, ICMP6, GRE, ESP, AH, UDPLITE = 6, 17, 1, 58, 47, 50, 51, 136
HOPOPTS, ROUTING, FRAGMENT, DSTOPTS, NONEXT = 0, 43, 44, 60, 59
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

SRC_MAC = bytes.fromhex("020000000002")
DST_MAC = bytes.fromhex("020000000001")
_L4_CSUM_AT = {TCP: 16, UDP: 6}


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of data."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(
    payload: bytes,
    ethertype: int = ETH_IP,
    vlans: tuple[int, ...] = (),
    dst_mac: bytes = DST_MAC,
    src_mac: bytes = SRC_MAC,
) -> bytes:
    """vlans: TPIDs outer first, e.g. (ETH_8021AD, ETH_8021Q) for QinQ."""
    out = dst_mac + src_mac
    for i, tpid in enumerate(vlans):
        out += struct.pack("!HH", tpid, 100 + i)
    return out + struct.pack("!H", ethertype) + payload


def _with_l4_checksum(pseudo: bytes, proto: int, l4: bytes) -> bytes:
    at = _L4_CSUM_AT.get(proto)
    if at is None or len(l4) < at + 2:
        return l4
    l4 = l4[:at] + b"\0\0" + l4[at + 2 :]
    c = checksum(pseudo + l4) or 0xFFFF
    return l4[:at] + struct.pack("!H", c) + l4[at + 2 :]


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
    ttl: int = 64,
    ident: int = 0x1234,
    df: bool = False,
    l4_checksum: bool = False,
    tos: int = 0,
) -> bytes:
    assert len(options) % 4 == 0
    ihl = ihl if ihl is not None else 5 + len(options) // 4
    hlen = 20 + len(options)
    tot = tot_len if tot_len is not None else hlen + len(l4)
    frag = (frag_offset // 8) | (0x2000 if mf else 0) | (0x4000 if df else 0)
    s, d = IPv4Address(src).packed, IPv4Address(dst).packed
    if l4_checksum:
        l4 = _with_l4_checksum(s + d + struct.pack("!BBH", 0, proto, len(l4)), proto, l4)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, tot, ident, frag, ttl, proto, 0, s, d)
    hdr += options
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + l4


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
    hop_limit: int = 64,
    l4_checksum: bool = False,
    tclass: int = 0,
    flow_label: int = 0,
) -> bytes:
    """exts: (kind, header bytes built for what follows) in wire order; nexthdr is the L4."""
    s, d = ip_address(src).packed, ip_address(dst).packed
    if l4_checksum:
        payload = _with_l4_checksum(
            s + d + struct.pack("!IxxxB", len(payload), nexthdr), nexthdr, payload
        )
    chain = b"".join(h for _, h in exts)
    first = exts[0][0] if exts else nexthdr
    body = chain + payload
    plen = payload_len if payload_len is not None else len(body)
    hdr = struct.pack("!IHBB", 6 << 28 | tclass << 20 | flow_label, plen, first, hop_limit)
    return hdr + s + d + body


def chain6(kinds: list[int], l4proto: int) -> tuple[tuple[int, bytes], ...]:
    """A chain of extension headers of the given kinds ending in l4proto."""
    out = []
    for i, kind in enumerate(kinds):
        nxt = kinds[i + 1] if i + 1 < len(kinds) else l4proto
        out.append(
            (kind, frag6(nxt) if kind == FRAGMENT else ext(nxt, kind, 16 if kind == ROUTING else 8))
        )
    return tuple(out)


def tcp(
    sport: int,
    dport: int,
    flags: int,
    doff: int = 5,
    payload: bytes = b"",
    seq: int = 1000,
    ack: int = 0,
    window: int = 65535,
) -> bytes:
    opts = bytes(max(0, doff - 5) * 4)
    return (
        struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, window, 0, 0)
        + opts
        + payload
    )


def udp(sport: int, dport: int, payload: bytes = b"", length: int | None = None) -> bytes:
    ln = length if length is not None else 8 + len(payload)
    return struct.pack("!HHHH", sport, dport, ln, 0) + payload


# --- reading frames back (replies the gate or the kernel sent) -----------------------------------


def dissect(frame: bytes) -> dict:
    """The fields of an Ethernet frame carrying IPv4/IPv6 and TCP or ICMP(v6), by name, for
    field-by-field comparisons. l3 and l4 are the raw bytes from the IP header on; extension
    headers are not expected (replies carry none). Checksums are checked: *_csum_ok."""
    out: dict = {"dst_mac": frame[:6], "src_mac": frame[6:12], "vlans": []}
    off, etype = 12, struct.unpack_from("!H", frame, 12)[0]
    while etype in (ETH_8021Q, ETH_8021AD):
        out["vlans"].append(struct.unpack_from("!HH", frame, off))
        off += 4
        etype = struct.unpack_from("!H", frame, off)[0]
    off += 2
    ip = frame[off:]
    out["ethertype"] = etype
    if etype == ETH_IP:
        ihl = (ip[0] & 15) * 4
        tot = struct.unpack_from("!H", ip, 2)[0]
        ip = ip[:tot]
        out.update(version=ip[0] >> 4, ihl=ihl, tos=ip[1], tot_len=tot,
                   ip_id=struct.unpack_from("!H", ip, 4)[0],
                   frag=struct.unpack_from("!H", ip, 6)[0], ttl=ip[8], proto=ip[9],
                   src=ip_address(ip[12:16]), dst=ip_address(ip[16:20]),
                   ip_csum_ok=checksum(ip[:ihl]) == 0)  # fmt: skip
        l4 = ip[ihl:]
        pseudo = ip[12:20] + struct.pack("!BBH", 0, ip[9], len(l4))
    else:
        first = struct.unpack_from("!I", ip, 0)[0]
        plen = struct.unpack_from("!H", ip, 4)[0]
        ip = ip[: 40 + plen]
        out.update(version=first >> 28, tclass=first >> 20 & 0xFF, flow_label=first & 0xFFFFF,
                   payload_len=plen, proto=ip[6], hop_limit=ip[7],
                   src=ip_address(ip[8:24]), dst=ip_address(ip[24:40]))  # fmt: skip
        l4 = ip[40:]
        pseudo = ip[8:40] + struct.pack("!IxxxB", len(l4), ip[6])
    out["l3"], out["l4"] = ip, l4
    if out["proto"] == TCP:
        sport, dport, seq, ack, doff, flags, win, _, urg = struct.unpack_from("!HHIIBBHHH", l4)
        hl = (doff >> 4) * 4
        out.update(sport=sport, dport=dport, seq=seq, ack=ack, doff=doff >> 4, flags=flags,
                   window=win, urg=urg, options=l4[20:hl], payload=l4[hl:],
                   l4_csum_ok=checksum(pseudo + l4) == 0)  # fmt: skip
    elif out["proto"] in (ICMP, ICMP6):
        ph = pseudo if out["proto"] == ICMP6 else b""
        out.update(icmp_type=l4[0], icmp_code=l4[1], icmp_rest=l4[4:8], quote=l4[8:],
                   l4_csum_ok=checksum(ph + l4) == 0)  # fmt: skip
    return out
