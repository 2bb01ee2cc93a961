"""One vocabulary of outcomes: kernel verdicts, verifier rejections and policy refusals.

Rule: a leaf of names. Kernel reasons come from abi.KernelReason (the counters' labels, such
as spa_bad_mac), verifier reasons from spagate.protocol.Reason (mac, stale, replay ...), policy
refusals from PolicyReason below, and an admission is "accepted". Every name is unique across
the three stages, so status, logs and metrics can show them side by side.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache

from spagate.gate.kernel.abi import KernelReason
from spagate.protocol import Reason as VerifierReason

ACCEPTED = "accepted"


class Stage(StrEnum):
    KERNEL = "kernel"  # the XDP program (counters map)
    VERIFIER = "verifier"  # the protocol core (MAC, padding, time window, replay)
    POLICY = "policy"  # the gate's policy (what a valid message may open)
    ADMITTED = "admitted"


class PolicyReason(StrEnum):
    """Why the policy refused a message the verifier accepted."""

    SOURCE_MISMATCH = "source-mismatch"
    WRONG_DESTINATION = "wrong-destination"
    UNUSABLE_IP = "unusable-ip"
    # Stamped before the replay map's memory begins (a reboot emptied it): it may be a replay.
    BEFORE_REPLAY_MEMORY = "before-replay-memory"


class AdmissionPath(StrEnum):
    """How an admitted knock reached the gate: the `path` label of the admission metrics.
    sparoid packets are tagged (spagate's keyed tag in the IV) or untagged (as deployed
    sparoid clients send them); a peer protocol is its own path, named after it."""

    UNTAGGED = "untagged"
    TAGGED = "tagged"
    FWKNOP = "fwknop"


@cache
def stage_of(name: str) -> Stage | None:
    """The stage that decides the outcome `name` (None: not an outcome name)."""
    return vocabulary().get(name)


def vocabulary() -> dict[str, Stage]:
    """Every outcome name and the stage that decides it."""
    out: dict[str, Stage] = {r.label: Stage.KERNEL for r in KernelReason}
    for names, stage in ((VerifierReason, Stage.VERIFIER), (PolicyReason, Stage.POLICY)):
        for r in names:
            if r.value in out:
                raise AssertionError(f"outcome name {r.value!r} is used twice")
            out[r.value] = stage
    out[ACCEPTED] = Stage.ADMITTED
    return out
