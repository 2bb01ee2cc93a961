"""Addresses: the one home of the IPv4-mapped rule and of the 16-byte address form.

Rule: ::ffff:a.b.c.d IS a.b.c.d everywhere in spagate. Every layer (codec, policy, maps, client)
calls unmap() or addr16() instead of testing ipv4_mapped itself. Pure: no sockets, no I/O.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# ::ffff:0:0/96, the first 12 bytes of a mapped address (how the kernel maps keep IPv4).
MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"


def unmap(ip: IPAddress) -> IPAddress:
    """::ffff:a.b.c.d -> a.b.c.d; every other address unchanged."""
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_address(text: str | IPAddress) -> IPAddress:
    """An address from text (or an address), unmapped. Raises ValueError on a bad address,
    and on a scoped one (fe80::1%eth0): the zone is not part of the address a window or a
    rule names, and its text (anything after the %) must never reach a hook or a log."""
    if isinstance(text, IPv4Address | IPv6Address):
        ip = text
    elif isinstance(text, str):
        ip = ip_address(text.strip())
    else:
        raise ValueError(f"not an IP address: {text!r}")
    if isinstance(ip, IPv6Address) and ip.scope_id is not None:
        raise ValueError("a scoped address (with a %zone) is not an address spagate takes")
    return unmap(ip)


def not_an_address(text: str, what: str = "an IP address") -> str:
    """The one-line reason text is refused by parse_address, for the caller's error."""
    zone = " (a %zone has no place here)" if "%" in text else ""
    return f"{text!r} is not {what}{zone}"


def addr16(ip: str | IPAddress) -> bytes:
    """The 16-byte map form of an address (IPv4 mapped). Raises ValueError on a bad address."""
    ip = parse_address(ip)
    return MAPPED_PREFIX + ip.packed if ip.version == 4 else ip.packed


def addr_from16(raw: bytes) -> IPAddress:
    """The address of a 16-byte map form (a mapped one comes back as IPv4Address)."""
    if raw[:12] == MAPPED_PREFIX:
        return IPv4Address(raw[12:16])
    return IPv6Address(raw[:16])


def packed(ip: str | IPAddress) -> bytes:
    """4 bytes for IPv4 (mapped ones included), 16 for IPv6: how SPA packets carry it."""
    return parse_address(ip).packed


def hostport(ip: IPAddress, port: int) -> str:
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


BROADCAST = IPv4Address("255.255.255.255")


def window_refusal(ip: IPAddress) -> str | None:
    """Why no window may open for ip (None: one may). The one rule for knocks, the operator's
    `allow` and the monitor's requests: an address no connection can come from."""
    ip = unmap(ip)
    if ip.is_unspecified:
        return f"{ip} names no host"
    if ip.is_multicast:
        return f"{ip} is a multicast address: no connection comes from it"
    if ip == BROADCAST:
        return f"{ip} is the broadcast address: no connection comes from it"
    return None
