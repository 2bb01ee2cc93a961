"""SPA admission in the kernel (docs/admission.md): the tag checked before any HMAC, the one
HMAC of the named key, budgets per identity, buckets that cannot lock a tagged client out, the
untagged path's own budget, spa_seen before any HMAC, the source-match race, drop samples."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from ipaddress import IPv4Address, IPv6Address

import pytest
from conftest import SPA_KEYS, TEST_OPTIONS, loaded, set_tags, spa_payload

from spagate.gate.core.config import parse_config
from spagate.gate.core.hints import tag_table
from spagate.gate.core.intake import Admit, Intake, Refuse
from spagate.gate.kernel.abi import SeenState, SpaPath, UntaggedMode, XdpAction
from spagate.lab.packets import ETH_IP6, UDP, eth, ipv4, ipv6, udp
from spagate.lab.util import run_counted
from spagate.lab.vectors import vectors_dir
from spagate.protocol import KeyPair, generate_keypair, make_packet
from spagate.protocol import tag as spatag

GATE = "203.0.113.1"


def spa4(payload: bytes, src="198.51.100.7", sport=50123) -> bytes:
    return eth(ipv4(src, GATE, UDP, udp(sport, 8484, payload)))


def spa6(payload: bytes, src: str) -> bytes:
    return eth(ipv6(src, "2001:db8::1", UDP, udp(999, 8484, payload)), ETH_IP6)


def run(gate, packet):
    res, moved = run_counted(gate, packet)
    assert res.retval == XdpAction.DROP
    return moved


def tagged(keys: KeyPair = SPA_KEYS, ip="198.51.100.7") -> bytes:
    return make_packet(keys, ip, int(time.time() * 1000), tagged=True)


def records(gate):
    gate.poll(0)  # test runs are synchronous: what was queued is there
    out, gate.records[:] = list(gate.records), []
    return out


def ring_of(n: int) -> list[KeyPair]:
    return [generate_keypair() for _ in range(n)]


def use(gate, ring: list[KeyPair]) -> None:
    gate.maps.set_spa_keys([k.hmac_key for k in ring])
    set_tags(gate, ring)


# --- the tag ----------------------------------------------------------------------------------


def test_the_kernel_siphash_agrees_with_python(fresh):
    ring = ring_of(8)
    use(fresh, ring)
    got = []
    for i in range(40):
        keys = ring[i % 8]
        pkt = tagged(keys)
        assert spatag.tag_ok(spatag.tag_keys(keys), pkt)
        assert run(fresh, spa4(pkt, src=f"192.0.2.{i + 1}")) == {"spa_queued": 1}
        got += records(fresh)  # one ring page holds 26
    assert [r.key_index for r in got] == [i % 8 for i in range(40)]
    assert {r.path for r in got} == {SpaPath.TAGGED}


def test_a_valid_tagged_knock_costs_one_hmac_of_the_named_key(fresh):
    ring = ring_of(8)
    use(fresh, ring)
    # Tag and hint of identity 3, MAC of identity 7: only key 3 is tried, so it is bad...
    body = tagged(ring[3])[32:]
    mixed = hmac.new(ring[7].hmac_key, body, hashlib.sha256).digest() + body
    assert run(fresh, spa4(mixed)) == {"spa_bad_mac": 1}
    # ...while untagged (no live hint) the same MAC is found by trying every key.
    untagged = make_packet(ring[7], "198.51.100.7", int(time.time() * 1000))
    assert run(fresh, spa4(untagged)) == {"spa_queued": 1}
    assert [(r.key_index, r.path) for r in records(fresh)] == [(7, SpaPath.UNTAGGED)]


def test_a_wrong_tag_is_dropped_before_any_hmac(fresh):
    ring = ring_of(8)
    use(fresh, ring)
    captured = tagged(ring[5])
    for i in range(50):  # captured hint, random ciphertext (and MAC): the tagged-junk flood
        junk = os.urandom(32) + captured[32:48] + os.urandom(48)
        assert run(fresh, spa4(junk, src=f"100.64.0.{i + 1}")) == {"spa_tag_bad": 1}
    flipped = bytearray(captured)
    flipped[60] ^= 1  # one ciphertext bit
    assert run(fresh, spa4(bytes(flipped))) == {"spa_tag_bad": 1}
    # None of it spent identity 5's budget: its real packet is queued.
    assert run(fresh, spa4(captured)) == {"spa_queued": 1}
    assert fresh.maps.budgets()[5][1] == 1


def test_captured_packet_with_a_changed_mac_costs_one_hmac_then_none(fresh):
    real = tagged()
    # An on-path attacker's copy with another MAC arrives first: one HMAC (the named key's),
    # and the kernel remembers what the MAC must be.
    assert run(fresh, spa4(os.urandom(32) + real[32:], src="100.64.1.1")) == {"spa_bad_mac": 1}
    entry = fresh.maps.seen(real[32:48])
    assert entry.state == SeenState.KNOWN and entry.mac == real[:32]
    for i in range(20):  # further variants: known junk, unhashed, the budget untouched
        variant = os.urandom(32) + real[32:]
        assert run(fresh, spa4(variant, src=f"100.64.2.{i + 1}")) == {"spa_bad_mac": 1}
    assert fresh.maps.budgets()[0][1] == 1
    assert run(fresh, spa4(real)) == {"spa_queued": 1}  # the real one still comes in
    assert run(fresh, spa4(real)) == {"spa_replay_dup": 1}
    assert fresh.maps.seen(real[32:48]).state == SeenState.QUEUED


def test_replays_and_copies_of_a_tagged_knock_cost_a_lookup(fresh):
    knock = tagged()
    assert run(fresh, spa4(knock)) == {"spa_queued": 1}
    for i in range(100):  # the client's copies, and replays from anywhere
        assert run(fresh, spa4(knock, src=f"100.65.0.{i + 1}")) == {"spa_replay_dup": 1}
    assert run(fresh, spa6(knock, "2001:db8:7::1")) == {"spa_replay_dup": 1}
    assert fresh.maps.budgets()[0][1] == 1
    assert len(records(fresh)) == 1


def test_hints_rotate_and_a_stale_hint_is_just_untagged(fresh):
    ring = ring_of(2)
    use(fresh, ring)
    live = fresh.maps.spa_tags()
    now = int(time.time() * 1000)
    steps = spatag.steps_around(now, 5000 + 2000)
    assert len(live) == 2 * len(steps)
    assert {(t.slot, t.step) for t in live.values()} == {(s, n) for s in (0, 1) for n in steps}
    # A packet stamped an hour ago carries a hint nobody holds: the untagged path takes it
    # (the kernel never reads the time; userspace refuses it as stale).
    old = make_packet(ring[1], "198.51.100.7", now - 3_600_000, tagged=True)
    assert run(fresh, spa4(old)) == {"spa_queued": 1}
    assert records(fresh)[0].path == SpaPath.UNTAGGED
    # An hour later the table is another: written and removed, nothing else kept.
    table, _ = tag_table(ring, now + 3_600_000, 5000)
    assert fresh.maps.set_spa_tags(table) == (len(table), len(live))
    assert set(fresh.maps.spa_tags()) == set(table)


# --- buckets and budgets ----------------------------------------------------------------------


def test_a_slash_64_neighbour_cannot_lock_a_tagged_client_out(fresh):
    for i in range(3 * TEST_OPTIONS.spa_burst):  # junk from all over the client's /64
        run(fresh, spa6(os.urandom(96), f"2001:db8:0:1::{i + 100:x}"))
    client = "2001:db8:0:1::7"
    assert run(fresh, spa6(spa_payload(), client)) == {"spa_rate_source": 1}  # untagged: yes
    assert run(fresh, spa6(tagged(), client)) == {"spa_queued": 1}  # tagged: no


def test_a_spoofed_source_cannot_lock_a_tagged_client_out(fresh):
    client = "198.51.100.40"
    for _ in range(3 * TEST_OPTIONS.spa_burst):
        run(fresh, spa4(os.urandom(96), src=client))
    assert run(fresh, spa4(spa_payload(), src=client)) == {"spa_rate_source": 1}
    assert run(fresh, spa4(tagged(), src=client)) == {"spa_queued": 1}


def test_behind_nat64_each_ipv4_host_has_its_own_bucket(fresh):
    noisy, other = "64:ff9b::198.51.100.9", "64:ff9b::198.51.100.10"
    for _ in range(3 * TEST_OPTIONS.spa_burst):
        run(fresh, spa6(os.urandom(96), noisy))
    assert run(fresh, spa6(spa_payload(), noisy)) == {"spa_rate_source": 1}
    assert run(fresh, spa6(spa_payload(), other)) == {"spa_queued": 1}  # untagged, other host
    assert run(fresh, spa6(tagged(), noisy)) == {"spa_queued": 1}  # tagged: never the bucket


def test_one_identity_flooding_valid_packets_from_a_slash_48_cannot_stop_another(fresh):
    flooder, other = ring_of(2)
    use(fresh, [flooder, other])
    budget = TEST_OPTIONS.spa_budget_per_s
    outcomes: dict[str, int] = {}
    flood = [spa6(tagged(flooder), f"2001:db8:aa:{i:x}::1") for i in range(budget + 60)]
    for pkt in flood:  # made first: all within one budget window
        for k, v in run(fresh, pkt).items():
            outcomes[k] = outcomes.get(k, 0) + v
        records(fresh)
    assert outcomes == {"spa_queued": budget, "spa_rate_identity": 60}
    assert run(fresh, spa4(tagged(other))) == {"spa_queued": 1}
    # Untagged the same: identity 0's budget is spent, identity 1's is its own.
    assert run(fresh, spa4(make_packet(flooder, "192.0.2.1", int(time.time() * 1000)))) == {
        "spa_rate_identity": 1
    }
    assert run(fresh, spa4(make_packet(other, "192.0.2.1", int(time.time() * 1000)))) == {
        "spa_queued": 1
    }


def test_untagged_junk_costs_at_most_the_untagged_budget(fresh):
    n = TEST_OPTIONS.untagged_budget_per_s
    for i in range(n):
        assert run(fresh, spa4(os.urandom(96), src=f"100.66.{i // 250}.{i % 250 + 1}")) == {
            "spa_bad_mac": 1
        }
    # Over it: dropped in xdp_gate, before the tail call, hashed by nothing.
    for i in range(50):
        assert run(fresh, spa4(os.urandom(96), src=f"100.67.0.{i + 1}")) == {
            "spa_untagged_budget": 1
        }
    # An untagged knock is in the same lottery (deployed sparoid clients)...
    assert run(fresh, spa4(spa_payload(), src="192.0.2.50")) == {"spa_untagged_budget": 1}
    # ...a tagged knock is not.
    assert run(fresh, spa4(tagged(), src="192.0.2.50")) == {"spa_queued": 1}


# --- untagged = refuse / accept, require-source-match: gates compiled with those options ----


@pytest.fixture(scope="module")
def strict():
    """untagged = refuse, require-source-match = yes."""
    opts = TEST_OPTIONS.__class__(**{**TEST_OPTIONS.__dict__, "untagged": UntaggedMode.REFUSE,
                                     "source_match": True})  # fmt: skip
    with loaded(opts) as g:
        yield g


@pytest.fixture
def strict_fresh(strict):
    strict.poll(0)
    strict.records.clear()
    strict.maps.clear()
    strict.forget_seen()
    strict.maps.set_spa_keys([SPA_KEYS.hmac_key])
    set_tags(strict, [SPA_KEYS])
    return strict


def test_untagged_refuse_hashes_nothing_untagged(strict_fresh):
    assert run(strict_fresh, spa4(spa_payload())) == {"spa_untagged_refused": 1}
    assert run(strict_fresh, spa4(os.urandom(96))) == {"spa_untagged_refused": 1}
    assert run(strict_fresh, spa4(tagged())) == {"spa_queued": 1}


def test_a_wrong_source_copy_first_does_not_burn_the_real_knock(strict_fresh):
    g = strict_fresh
    knock = tagged(ip="198.51.100.7")
    # An on-path copy sent first from elsewhere: queued (the kernel cannot tell)...
    assert run(g, spa4(knock, src="100.64.9.9")) == {"spa_queued": 1}
    # ...and the real one right behind it, before userspace decided, is queued too.
    assert run(g, spa4(knock, src="198.51.100.7")) == {"spa_queued": 1}
    assert run(g, spa4(knock, src="198.51.100.7")) == {"spa_replay_dup": 1}  # its own copy
    # A few other sources may pass while undecided (SPA_SEEN_ALT_MAX), then none.
    got = [run(g, spa4(knock, src=f"100.64.8.{i + 1}")) for i in range(5)]
    assert got.count({"spa_queued": 1}) == 1 and got.count({"spa_replay_dup": 1}) == 4
    # Userspace: the wrong-source copy is refused and does not consume the nonce...
    cfg = parse_config(
        f"key = {SPA_KEYS.key.hex()}\nhmac-key = {SPA_KEYS.hmac_key.hex()}\n"
        "require-source-match = yes\n",
        "t.ini",
    )
    intake = Intake(cfg)
    now_ms, recs = int(time.time() * 1000), records(g)
    outs = [intake.handle(r, now_ms, time.monotonic_ns()) for r in recs]
    assert isinstance(outs[0], Refuse) and outs[0].reason == "source-mismatch"
    assert isinstance(outs[1], Admit) and outs[1].src == IPv4Address("198.51.100.7")
    assert isinstance(outs[2], Refuse) and outs[2].reason == "replay"  # accepted meanwhile
    # ...and the refusal names the source the kernel may still let through (SEEN_EXPECT).
    e = outs[0].expect
    assert (e.seen_key, e.ip, e.slot) == (knock[32:48], IPv4Address("198.51.100.7"), 0)


def test_after_a_wrong_source_refusal_only_the_named_source_passes(strict_fresh):
    g = strict_fresh
    knock = tagged(ip="198.51.100.7")
    assert run(g, spa4(knock, src="100.64.9.9")) == {"spa_queued": 1}
    for i in range(3):
        run(g, spa4(knock, src=f"100.64.7.{i + 1}"))  # alternates, then duplicates
    # The daemon refused the first for its source: it marks the address the message names.
    g.maps.seen_expect_many([(knock[32:48], knock[:32], IPv4Address("198.51.100.7"), 0)])
    assert run(g, spa4(knock, src="100.64.6.1")) == {"spa_replay_dup": 1}
    assert run(g, spa4(knock, src="198.51.100.7")) == {"spa_queued": 1}
    assert run(g, spa4(knock, src="198.51.100.7")) == {"spa_replay_dup": 1}


def test_untagged_accept_has_no_untagged_budget():
    opts = TEST_OPTIONS.__class__(**{**TEST_OPTIONS.__dict__, "untagged": UntaggedMode.ACCEPT,
                                     "untagged_budget_per_s": 1})  # fmt: skip
    with loaded(opts) as g:
        g.maps.set_spa_keys([SPA_KEYS.hmac_key])
        for i in range(5):
            assert run(g, spa4(os.urandom(96), src=f"100.68.0.{i + 1}")) == {"spa_bad_mac": 1}
        assert run(g, spa4(spa_payload(), src="192.0.2.9")) == {"spa_queued": 1}


# --- compatibility --------------------------------------------------------------------------


def test_every_sparoid_vector_opens_the_gate_untagged(fresh):
    path = vectors_dir("sparoid") / "vectors.json"
    assert path.is_file(), f"sparoid test vectors not found at {path.parent}"
    data = json.loads(path.read_text())
    keys = KeyPair.from_hex(data["keys"]["key"], data["keys"]["hmac_key"])
    other = generate_keypair()
    use(fresh, [other, keys])  # the vectors' key in slot 1: the kernel must try every key
    cfg = parse_config(
        f"[other]\nkey = {other.key.hex()}\nhmac-key = {other.hmac_key.hex()}\n"
        f"[sparoid]\nkey = {keys.key.hex()}\nhmac-key = {keys.hmac_key.hex()}\n",
        "t.ini",
    )
    assert len(data["vectors"]) == 14
    for i, v in enumerate(data["vectors"]):
        packet = (path.parent / v["file"]).read_bytes()
        assert run(fresh, spa4(packet, src=f"198.18.0.{i + 1}")) == {"spa_queued": 1}, v["name"]
        (rec,) = records(fresh)
        assert (rec.payload, rec.path, rec.key_index) == (packet, SpaPath.UNTAGGED, 1)
        # The daemon admits it too, at its capture time (the packets are old now).
        out = Intake(cfg).handle(rec, v["ts_ms"], time.monotonic_ns())
        assert isinstance(out, Admit) and str(out.grant.ip) == v["ip"], (v["name"], out)


# --- drop samples -----------------------------------------------------------------------------


def test_drops_are_sampled_with_their_source_and_rate_limited(fresh):
    fresh.drain_samples()
    knock = tagged()
    assert run(fresh, spa4(knock, src="192.0.2.61")) == {"spa_queued": 1}
    # The sender's own copies (the client sends 3): counted, not sampled.
    assert run(fresh, spa4(knock, src="192.0.2.61")) == {"spa_replay_dup": 1}
    assert run(fresh, spa4(knock, src="192.0.2.62", sport=4242)) == {"spa_replay_dup": 1}
    assert run(fresh, spa6(os.urandom(96), "2001:db8:5::5")) == {"spa_bad_mac": 1}
    got = fresh.drain_samples()
    assert [(s.reason, s.src, s.key_index, s.path) for s in got] == [
        ("spa_replay_dup", IPv4Address("192.0.2.62"), 0, SpaPath.TAGGED),
        ("spa_bad_mac", IPv6Address("2001:db8:5::5"), None, SpaPath.UNTAGGED),
    ]
    assert (got[0].sport, got[0].dport) == (4242, 8484)
    assert 0 < time.monotonic_ns() - got[0].ns < 10 * 10**9
    # Rate-limited: at most SPA_SAMPLE_RATE per second and CPU, whatever the drops.
    for i in range(60):
        run(fresh, spa4(knock, src=f"192.0.3.{i + 1}"))
    n = len(fresh.drain_samples())
    assert 1 <= n <= TEST_OPTIONS.sample_rate_per_s * os.cpu_count()
