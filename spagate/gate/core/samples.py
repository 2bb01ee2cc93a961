"""Kernel drop samples (sans-IO): what the XDP program dropped, with its source.

The kernel counts every drop by reason; for the SPA port's drops (bad MAC, replay, bucket,
budget) it also queues a rate-limited sample with the packet's source, so the log and
`spagate top` can name who sent it. A Sample is that, decoded: the kernel reason's label, the
source, and the identity whose key matched when one did (a packet over its bucket or budget
after its MAC or tag was checked: a key holder was refused, and is told so in the log).

to_sample() normalises what the kernel-side reader yields (spagate.gate.service.samples):
a reason as a KernelReason value or label, a source as the 16-byte map form or an address,
an identity as a key slot (identity order), a name or None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from spagate.gate.core.reasons import Stage
from spagate.gate.kernel.abi import KernelReason
from spagate.net import IPAddress, addr_from16, hostport, unmap


@dataclass(frozen=True, slots=True)
class Sample:
    reason: str  # a KernelReason label: spa_bad_mac, spa_rate_source ...
    src: IPAddress
    sport: int
    identity: str | None  # the identity the kernel took it for (a tag hint, a known packet)
    ts_ns: int = 0  # CLOCK_MONOTONIC of the drop
    # The kernel checked this packet's MAC against that identity's key (an untagged packet
    # over its identity's budget). Otherwise the identity is only claimed: a tag hint or a
    # copy of a known packet, which anyone who saw one knock can send from any source.
    verified: bool = False

    event = "refuse"
    stage = Stage.KERNEL.value
    detail = ""
    via = "kernel"

    @property
    def mac_valid(self) -> bool:
        return self.verified and self.identity is not None

    def describe(self) -> str:
        who = ""
        if self.identity:
            who = f" identity={self.identity}" if self.verified else f" hint={self.identity}"
        return f"refuse {self.reason} from {hostport(self.src, self.sport)} via kernel{who}"

    def fields(self) -> dict:
        return {
            "reason": self.reason, "stage": self.stage, "src": str(self.src),
            "sport": self.sport, "via": self.via, "identity": self.identity,
            "mac_valid": self.mac_valid, "detail": "",
        }  # fmt: skip


def _reason(value: object) -> str:
    if isinstance(value, KernelReason):
        return value.label
    if isinstance(value, int):
        return KernelReason(value).label
    label = str(value)
    if label not in {r.label for r in KernelReason}:
        raise ValueError(f"unknown kernel reason {label!r}")
    return label


def _address(value: object) -> IPAddress:
    if isinstance(value, bytes | bytearray | memoryview):
        return unmap(addr_from16(bytes(value)))
    if isinstance(value, IPv4Address | IPv6Address):
        return unmap(value)
    raise ValueError(f"not an address: {value!r}")


def _identity(value: object, identities: Sequence[str]) -> str | None:
    if value is None or (isinstance(value, int) and not 0 <= value < len(identities)):
        return None  # no key matched (slot -1, or out of range: never trust it as a name)
    if isinstance(value, int):
        return identities[value]
    name = str(value)
    return name if name in identities else None


def to_sample(raw: object, identities: Sequence[str]) -> Sample:
    """A Sample from a kernel reader's item (ringbuf.DropSample, or any object with reason,
    src, sport, identity / key / key_index and ts_ns / ts / ns attributes). Raises ValueError
    for an item that is not one."""
    ident = getattr(raw, "identity", getattr(raw, "key", getattr(raw, "key_index", None)))
    ts = getattr(raw, "ts_ns", getattr(raw, "ts", getattr(raw, "ns", 0)))
    return Sample(
        _reason(raw.reason),  # type: ignore[attr-defined]
        _address(raw.src),  # type: ignore[attr-defined]
        int(raw.sport),  # type: ignore[attr-defined]
        _identity(ident, identities),
        int(ts or 0),
        _verified(raw),
    )


def _verified(raw: object) -> bool:
    """Whether the kernel ran the identity's HMAC on the packet before this drop: only the
    untagged path's identity budget is charged after the MAC (docs/admission.md)."""
    from spagate.gate.kernel.abi import SpaPath

    return _reason(raw.reason) == "spa_rate_identity" and getattr(raw, "path", None) == (  # type: ignore[attr-defined]
        SpaPath.UNTAGGED
    )
