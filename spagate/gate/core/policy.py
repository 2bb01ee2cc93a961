"""What an accepted SPA message opens (sans-IO): the address, the ports and the window.

Rule: pure decisions on values; no maps, no sockets, no logging.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import NamedTuple

from spagate.gate.core.config import GateConfig, Identity, Port
from spagate.gate.core.reasons import PolicyReason
from spagate.net import IPAddress, unmap, window_refusal

ANY_V4 = IPv4Address("0.0.0.0")


class Grant(NamedTuple):
    ip: IPAddress
    identity: Identity
    ports: tuple[Port, ...] | None  # None: every protected port
    seconds: int
    third_party: bool  # the message names another address than the packet's source


@dataclass(frozen=True)
class Refusal:
    reason: PolicyReason
    detail: str


def destination_refusal(config: GateConfig, dst: IPAddress) -> Refusal | None:
    """`bind`: a knock sent to another address of the gate is not taken (both protocols)."""
    if config.bind is None:
        return None
    dst = unmap(dst)
    if not config.bind.is_unspecified and unmap(config.bind) != dst:
        return Refusal(
            PolicyReason.WRONG_DESTINATION, f"sent to {dst}, the gate is bound to {config.bind}"
        )
    if config.bind == ANY_V4 and dst.version == 6:
        # As sparoid's IPv4 socket on 0.0.0.0: IPv6 knocks are not taken (bind = :: takes both).
        return Refusal(PolicyReason.WRONG_DESTINATION, f"sent to {dst}, the gate takes IPv4 only")
    return None


def source_refusal(config: GateConfig, named: IPAddress, src: IPAddress) -> Refusal | None:
    """`require-source-match`: the message must name the packet's source (both protocols)."""
    if not config.require_source_match:
        return None
    named, src = unmap(named), unmap(src)
    if named.is_unspecified:
        # Such a packet names no address: anyone who sees it could send it first.
        return Refusal(PolicyReason.SOURCE_MISMATCH, "message names no address (--ip source)")
    if named != src:
        detail = f"message names {named}, packet came from {src}"
        return Refusal(PolicyReason.SOURCE_MISMATCH, detail)
    return None


def decide(
    config: GateConfig, identity: Identity, msg_ip: IPAddress, src: IPAddress, dst: IPAddress
) -> Grant | Refusal:
    """Decide what a verified message from `src` to `dst` opens."""
    msg_ip, src, dst = unmap(msg_ip), unmap(src), unmap(dst)
    refusal = destination_refusal(config, dst)
    if refusal is None and msg_ip.is_unspecified:
        refusal = source_refusal(config, msg_ip, src)
    if refusal is not None:
        return refusal
    ip = src if msg_ip.is_unspecified else msg_ip
    if (why := window_refusal(ip)) is not None:
        return Refusal(PolicyReason.UNUSABLE_IP, why)
    refusal = source_refusal(config, ip, src)
    if refusal is not None:
        return refusal
    return Grant(
        ip=ip,
        identity=identity,
        ports=identity.ports,
        seconds=config.window(identity),
        third_party=ip != src,
    )
