"""The tag hints a gate keeps live (sans-IO): identities and a wall clock in, the spa_tags
table out (hint -> identity slot, SipHash key, step). docs/admission.md has the tag.

A packet's hint comes from its own timestamp, so the gate keeps every step a packet within
+- max-skew of now can fall in, plus a margin for the worker's refresh period. A packet whose
hint is not live is simply untagged to the kernel: it is still admitted, by the untagged path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from spagate.protocol import KeyPair
from spagate.protocol.tag import hint, steps_around, tag_keys

MARGIN_MS = 2_000  # the worker refreshes the table every second


@dataclass(frozen=True, slots=True)
class Hint:
    """One live hint's value (struct spa_tag)."""

    k0: int
    k1: int
    slot: int
    step: int


def tag_table(
    keys: Sequence[KeyPair], now_ms: int, skew_ms: int
) -> tuple[dict[bytes, Hint], list[tuple[int, int]]]:
    """(hint -> Hint for every identity slot and live step, collisions): a collision is two
    identities with the same hint in a step (chance ~2^-32 per pair and step); the first keeps
    it, the other's packets of that step take the untagged path."""
    table: dict[bytes, Hint] = {}
    clashes = []
    for slot, kp in enumerate(keys):
        tk = tag_keys(kp)
        k0, k1 = tk.k0k1
        for step in steps_around(now_ms, skew_ms + MARGIN_MS):
            h = hint(tk, step)
            if h in table and table[h].slot != slot:
                clashes.append((table[h].slot, slot))
                continue
            table[h] = Hint(k0, k1, slot, step)
    return table, clashes
