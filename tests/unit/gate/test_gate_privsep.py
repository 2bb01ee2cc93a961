"""The monitor's answers to the worker: typed, checked, nothing else gets through."""

import json
import random
from ipaddress import IPv6Address, ip_address

import pytest

from spagate.gate.core import privsep
from spagate.gate.service.hooks import hook_arg
from spagate.net import parse_address


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


def opened(ip, seconds=5) -> bytes:
    return json.dumps({"op": "opened", "ip": ip, "seconds": seconds}).encode()


def test_opened_carries_a_plain_address_and_nothing_else():
    req = privsep.decode(opened("2001:db8::1"))
    assert req == privsep.Opened(ip_address("2001:db8::1"), 5)
    assert privsep.decode(privsep.encode(req)) == req
    assert privsep.decode(opened("::ffff:192.0.2.7")).ip == ip_address("192.0.2.7")
    # A zone (scope id) is text after a %: it must never reach a hook's shell command.
    for bad in ("2001:db8::1%;id>/tmp/pwned;", "fe80::1%eth0", "0.0.0.0", "ff02::1",
                "255.255.255.255", "192.0.2.1; id", "192.0.2.1\n;id", 7, None):  # fmt: skip
        assert isinstance(privsep.decode(opened(bad)), privsep.Malformed), bad
    for seconds in (0, -1, privsep.MAX_SECONDS + 1, 1.5, True, "5"):
        assert isinstance(privsep.decode(opened("192.0.2.1", seconds)), privsep.Malformed)


def test_no_scoped_address_is_taken_anywhere():
    with pytest.raises(ValueError, match="scoped"):
        parse_address("fe80::1%eth0")
    with pytest.raises(ValueError, match="scoped"):
        parse_address(IPv6Address("fe80::1%1"))
    with pytest.raises(ValueError):  # (which words depends on the Python: never the text)
        hook_arg(IPv6Address("2001:db8::1%;id;"))
    assert hook_arg(ip_address("2001:db8::1")) == "2001:0db8:0000:0000:0000:0000:0000:0001"


def test_decode_never_raises_whatever_the_worker_sends():
    rnd = random.Random(7)
    values = [None, True, 1, -1, 1.5, "", "x" * 600, [], {}, [1, [2]], {"op": "opened"}]
    for op in [*values, "opened", "reattach", "repin", "linked", "hooks"]:
        for _ in range(20):
            msg = {"op": op, **{k: rnd.choice(values) for k in
                                rnd.sample(["ip", "seconds", "ifname", "queued"], 2)}}  # fmt: skip
            data = json.dumps(msg).encode()[: privsep.MAX_MESSAGE]
            got = privsep.decode(data), privsep.decode_answer(data)
            assert all(isinstance(g, privsep.Opened | privsep.Reattach | privsep.Repin
                                  | privsep.Linked | privsep.HookStats | privsep.Malformed)
                       for g in got), (msg, got)  # fmt: skip
    for op in ([], {}, 1, None):  # unhashable ones raised TypeError in `op in kinds`
        assert isinstance(privsep.decode(json.dumps({"op": op}).encode()), privsep.Malformed)
