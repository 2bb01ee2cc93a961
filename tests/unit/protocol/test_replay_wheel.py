"""The replay memory's expiry wheel: a key is never forgotten before its until_ms, at most one
step after it, and returned once; its memory is one list slot per key."""

import random
import sys

from spagate.protocol.replay import STEP_MS, ExpiryWheel, ReplayCache


def test_every_key_expires_once_never_early_at_most_a_step_late():
    rng = random.Random(7)
    wheel, until = ExpiryWheel(), {}
    for i in range(5000):
        until[i] = rng.randrange(1_000_000, 1_060_000)
        wheel.add(i, until[i])
    gone: dict[int, int] = {}
    for now in range(1_000_000, 1_061_000, 37):
        for key in wheel.expired(now):
            assert key not in gone  # once
            gone[key] = now
    assert len(gone) == 5000 and len(wheel) == 0
    for key, at in gone.items():
        assert at > until[key]  # never while the window lasts
        assert at <= until[key] + STEP_MS + 37  # a step late at most (+ the poll spacing)


def test_keys_of_one_step_share_one_expiry_object():
    wheel = ExpiryWheel()
    ends = {id(wheel.add(i, 1_000_001 + i)) for i in range(200)}  # all in one 250 ms step
    assert len(ends) == 1 and len(wheel) == 200


def test_cache_memory_per_nonce_is_a_dict_slot_and_a_list_slot():
    cache = ReplayCache(1_000_000)
    nonces = [i.to_bytes(16, "big") for i in range(100_000)]
    for n in nonces:
        cache.add(n, 1_005_000 + len(cache) // 10, 1_000_000)
    steps = cache._wheel._steps.values()
    extra = sys.getsizeof(cache._until) + sum(sys.getsizeof(s[1]) for s in steps)
    assert extra / len(nonces) < 80  # bytes per nonce beyond the nonce objects themselves
