"""What an accepted SPA message opens (sans-IO): the address, the ports and the window."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from spagate.gate.config import GateConfig, Identity, Port

IPAddress = IPv4Address | IPv6Address
BROADCAST = IPv4Address("255.255.255.255")


def unmap(ip: IPAddress) -> IPAddress:
    """::ffff:a.b.c.d is a.b.c.d everywhere in spagate."""
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class Grant:
    ip: IPAddress
    identity: Identity
    ports: tuple[Port, ...] | None  # None: every protected port
    seconds: int
    third_party: bool  # the message names another address than the packet's source


@dataclass(frozen=True)
class Refusal:
    reason: str  # a counter name: source-mismatch, wrong-destination, unusable-ip
    detail: str


def decide(
    config: GateConfig, identity: Identity, msg_ip: IPAddress, src: IPAddress, dst: IPAddress
) -> Grant | Refusal:
    """Decide what a verified message from `src` to `dst` opens."""
    msg_ip, src, dst = unmap(msg_ip), unmap(src), unmap(dst)
    if config.bind is not None and not config.bind.is_unspecified and unmap(config.bind) != dst:
        return Refusal("wrong-destination", f"sent to {dst}, the gate is bound to {config.bind}")
    if config.require_source_match and msg_ip.is_unspecified:
        # Such a packet names no address: anyone who sees it could send it first.
        return Refusal("source-mismatch", "message names no address (--ip source)")
    ip = src if msg_ip.is_unspecified else msg_ip
    if ip.is_multicast or ip == BROADCAST:
        return Refusal("unusable-ip", f"{ip} cannot open a connection")
    if config.require_source_match and ip != src:
        return Refusal("source-mismatch", f"message names {ip}, packet came from {src}")
    return Grant(
        ip=ip,
        identity=identity,
        ports=identity.ports,
        seconds=config.window(identity),
        third_party=ip != src,
    )
