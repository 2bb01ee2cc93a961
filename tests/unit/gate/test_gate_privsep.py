"""The monitor's answers to the worker: typed, checked, nothing else gets through."""

from spagate.gate.core import privsep


def test_hook_stats_round_trip_and_are_answers_only():
    stats = privsep.HookStats(queued=3, running=16, started=1000, failed=2, reattached=1,
                              refused=0)  # fmt: skip
    data = privsep.encode(stats)
    assert privsep.decode_answer(data) == stats
    # The monitor never takes figures from the worker as a request.
    assert isinstance(privsep.decode(data), privsep.Malformed)


def test_malformed_hook_stats_are_refused():
    for bad in (
        b'{"op":"hooks","queued":-1,"running":0,"started":0,"failed":0,"reattached":0,"refused":0}',
        b'{"op":"hooks","queued":true,"running":0,"started":0,"failed":0,"reattached":0,"refused":0}',
        b'{"op":"hooks","queued":0}',
    ):
        assert isinstance(privsep.decode_answer(bad), privsep.Malformed), bad
