"""What an accepted SPA message opens (sans-IO): the address, the ports and the window.

Rule: pure decisions on values; no maps, no sockets, no logging.
"""

from __future__ import annotations

from dataclasses import dataclass

from spagate.gate.core.config import GateConfig, Identity, Port
from spagate.gate.core.reasons import PolicyReason
from spagate.net import IPAddress, unmap, window_refusal


@dataclass(frozen=True)
class Grant:
    ip: IPAddress
    identity: Identity
    ports: tuple[Port, ...] | None  # None: every protected port
    seconds: int
    third_party: bool  # the message names another address than the packet's source


@dataclass(frozen=True)
class Refusal:
    reason: PolicyReason
    detail: str


def decide(
    config: GateConfig, identity: Identity, msg_ip: IPAddress, src: IPAddress, dst: IPAddress
) -> Grant | Refusal:
    """Decide what a verified message from `src` to `dst` opens."""
    msg_ip, src, dst = unmap(msg_ip), unmap(src), unmap(dst)
    if config.bind is not None and not config.bind.is_unspecified and unmap(config.bind) != dst:
        return Refusal(
            PolicyReason.WRONG_DESTINATION, f"sent to {dst}, the gate is bound to {config.bind}"
        )
    if config.require_source_match and msg_ip.is_unspecified:
        # Such a packet names no address: anyone who sees it could send it first.
        return Refusal(PolicyReason.SOURCE_MISMATCH, "message names no address (--ip source)")
    ip = src if msg_ip.is_unspecified else msg_ip
    if (why := window_refusal(ip)) is not None:
        return Refusal(PolicyReason.UNUSABLE_IP, why)
    if config.require_source_match and ip != src:
        return Refusal(PolicyReason.SOURCE_MISMATCH, f"message names {ip}, packet came from {src}")
    return Grant(
        ip=ip,
        identity=identity,
        ports=identity.ports,
        seconds=config.window(identity),
        third_party=ip != src,
    )
