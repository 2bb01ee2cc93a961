"""Fleet core (sans-IO): record formats, what a gate believes from the store, fallback, journal.

Packets are real sparoid packets from the one packet maker; the re-verifier is the real
protocol core with the gate's real config.
"""

from __future__ import annotations

import os
import time
from ipaddress import ip_address

import pytest

from spagate.gate.core.config import parse_config
from spagate.gate.core.fleet import (
    Allow,
    ClaimRecord,
    ClaimResult,
    Delete,
    Fallback,
    FleetError,
    GrantRecord,
    JournalEntry,
    Keys,
    LeasePool,
    MemberRecord,
    Mirror,
    OutageJournal,
    Put,
    Remember,
    Revoke,
    StoreHealth,
    Trust,
    admit_before_sync,
    claim_id_fwknop,
    claim_id_sparoid,
    decide_knock,
    decode_claim,
    decode_grant,
    decode_member,
    encode_claim,
    encode_grant,
    encode_member,
    parse_cluster,
    parse_fallback,
    usable_address,
)
from spagate.protocol import KeyPair, decode, make_packet
from spagate.protocol.messages import Accepted
from spagate.protocol.verifier import Verifier

# random-looking keys: the gate refuses patterned ones (fewer than 8 distinct bytes)
KA = "5b0e0c7ad1e2f3a4958677a8b9cadbecfd0e1f20314253647586978a9bacbdce"
HA = "a1b2c3d4e5f60718293a4b5c6d7e8f90a2b4c6d8eaf1032547698badcfe13579"

CLIENT = ip_address("198.51.100.7")
OTHER = ip_address("203.0.113.9")
K = Keys("lab")


def _config(extra: str = "", keys: KeyPair | None = None):
    keys = keys or KeyPair(os.urandom(32), os.urandom(32))
    text = f"key = {keys.key.hex()}\nhmac-key = {keys.hmac_key.hex()}\n{extra}"
    return parse_config(text, "/etc/spagate.ini"), keys


def _knock(keys, ip=CLIENT, now_ms=None, gate="a", window=15.0):
    pkt = make_packet(keys, ip, wall_ms() if now_ms is None else now_ms)
    cid = claim_id_sparoid(decode(pkt, [keys]).message.nonce)
    claim = ClaimRecord(gate, "sparoid", pkt, ip, 5.0)
    grant = GrantRecord(ip, "tcp", 22, window, f"claim:{cid}", gate)
    return cid, claim, grant


def _events(cid, claim, grants, rev=10, origin_id=None):
    evs = [Put(K.claim(cid), encode_claim(claim), rev)]
    for g in grants:
        evs.append(Put(K.grant(g.ip, g.proto, g.port, origin_id or cid), encode_grant(g), rev))
    return evs


@pytest.fixture
def gate():
    config, keys = _config("protected = tcp/22, udp/51820\n")
    return Mirror(K, Trust.for_config(config)), keys


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


now_ms = wall_ms


# --- formats --------------------------------------------------------------------------------


def test_records_round_trip():
    cid, claim, grant = _knock(KeyPair(os.urandom(32), os.urandom(32)))
    assert decode_claim(encode_claim(claim)) == claim
    key = K.grant(grant.ip, grant.proto, grant.port, cid)
    assert key == f"/spagate/lab/grants/k/198.51.100.7/tcp/22/{cid}"
    assert decode_grant(K, key, encode_grant(grant)) == grant
    m = MemberRecord("gate-a", "attached", ("eth0", "eth1"), "refuse", "down", "0.1.0")
    assert decode_member(encode_member(m)) == m
    v6 = GrantRecord(ip_address("2001:db8::5"), None, 0, 3600.0, "operator:root@a", "a")
    key6 = K.grant(v6.ip, None, 0, "op.0123456789abcdef")
    assert key6 == "/spagate/lab/grants/o/2001:db8::5/any/0/op.0123456789abcdef"
    assert decode_grant(K, key6, encode_grant(v6)) == v6


def test_claim_ids():
    assert claim_id_sparoid(bytes(range(16))) == "s.000102030405060708090a0b0c0d0e0f"
    assert claim_id_fwknop(b"x").startswith("f.2d711642b726b044")
    with pytest.raises(FleetError):
        K.claim("s.zz")


@pytest.mark.parametrize(
    "text, reason",
    [
        ("0.0.0.0", "unspecified address"),
        ("::", "unspecified address"),
        ("224.0.0.1", "multicast or broadcast"),
        ("ff02::1", "multicast or broadcast"),
        ("255.255.255.255", "multicast or broadcast"),
        ("::ffff:198.51.100.7", "IPv4-mapped IPv6"),
        ("127.0.0.1", "loopback"),
        ("2001:DB8::1", "not in canonical form"),
        ("010.1.1.1", "not an address"),
        ("evil", "not an address"),
    ],
)
def test_unusable_addresses(text, reason):
    assert usable_address(text) == reason


def test_usable_addresses():
    assert usable_address("198.51.100.7") == CLIENT
    assert usable_address("2001:db8::1") == ip_address("2001:db8::1")


def test_parse_cluster():
    assert parse_cluster("etcd://h1:2379,h2:2379") == ("http://h1:2379", "http://h2:2379")
    assert parse_cluster("etcds://[2001:db8::1]:2379") == ("https://[2001:db8::1]:2379",)
    for bad in ("etcd://h1", "http://a:1,https://b:2", "etcd://h:99999", "ftp://x:1"):
        with pytest.raises(FleetError):
            parse_cluster(bad)
    with pytest.raises(FleetError):
        Keys("Has/Slash")
    assert parse_fallback(" Refuse ") is Fallback.REFUSE
    with pytest.raises(FleetError, match="local or refuse"):
        parse_fallback("open")


# --- what a gate believes -------------------------------------------------------------------


def test_a_peer_knock_opens_here(gate):
    mirror, keys = gate
    cid, claim, grant = _knock(keys)
    actions = mirror.apply(_events(cid, claim, [grant]), now=100.0, now_wall_ms=now_ms())
    # remembered until the packet's own timestamp + max-skew (5 s), on this gate's clock
    rem = actions[0]
    assert isinstance(rem, Remember) and (rem.kind, rem.key) == ("sparoid", bytes.fromhex(cid[2:]))
    assert 4.9 <= rem.remaining_s <= 5.0
    (allow,) = actions[1:]
    assert isinstance(allow, Allow) and (allow.ip, allow.proto, allow.port) == (CLIENT, "tcp", 22)
    assert 14.9 <= allow.remaining_s <= 15.0
    assert not mirror.ignored


def test_forged_grants_are_ignored_and_counted(gate):
    mirror, keys = gate
    wall = now_ms()
    cid, claim, grant = _knock(keys)
    forged = []
    # no claim at all behind the grant
    forged.append(Put(K.grant(CLIENT, "tcp", 22, cid), encode_grant(grant), 5))
    # a key for 0.0.0.0 (written by hand: Keys refuses to build it)
    forged.append(Put(f"{K.knock_grants}0.0.0.0/tcp/22/{cid}", encode_grant(grant), 5))
    # the value names no origin / another claim than its key
    bad = GrantRecord(CLIENT, "tcp", 22, 15.0, "", "a")
    forged.append(Put(K.grant(CLIENT, "tcp", 22, cid), encode_grant(bad), 5))
    other = GrantRecord(CLIENT, "tcp", 22, 15.0, "claim:s." + "0" * 32, "a")
    forged.append(Put(K.grant(CLIENT, "tcp", 22, cid), encode_grant(other), 5))
    # a port the gate does not protect
    forged.append(Put(K.grant(CLIENT, "tcp", 23, cid), encode_grant(grant), 5))
    # operator grant with a huge window, and a knock grant longer than any identity's window
    op = GrantRecord(CLIENT, "tcp", 22, 10.0**9, "operator:root", "a")
    forged.append(Put(K.grant(CLIENT, "tcp", 22, "op.0123456789abcdef"), encode_grant(op), 5))
    long = GrantRecord(CLIENT, "tcp", 22, 3600.0, f"claim:{cid}", "a")
    forged.append(Put(K.grant(CLIENT, "tcp", 22, cid), encode_grant(long), 5))
    # junk value, oversized value, nan window
    forged.append(Put(K.grant(CLIENT, "tcp", 22, cid), b"{not json", 5))
    forged.append(Put(K.grant(CLIENT, "tcp", 22, cid), b" " * 5000, 5))
    forged.append(Put(K.grant(CLIENT, "tcp", 22, cid), b'{"v":1,"rem":NaN,"origin":"x"}', 5))
    assert mirror.apply(forged, now=1.0, now_wall_ms=wall) == []
    assert mirror.ignored == {
        "no-origin": 3,
        "unusable-address": 1,
        "unprotected-port": 1,
        "window-too-long": 2,
        "bad-value": 2,
        "value-too-large": 1,
    }


def test_reverification_binds_the_grant_to_the_packet(gate):
    """A writer of the store without the SPA keys cannot open anything: the claim's packet
    must verify here and name exactly the address, within its own window."""
    mirror, keys = gate
    wall = now_ms()
    stranger = KeyPair(os.urandom(32), os.urandom(32))
    cid, claim, grant = _knock(stranger)  # a packet made with keys the gate does not have
    assert mirror.apply(_events(cid, claim, [grant]), 1.0, wall)[1:] == []
    # a real packet for CLIENT, but the grant opens OTHER
    cid, claim, _ = _knock(keys)
    moved = GrantRecord(OTHER, "tcp", 22, 15.0, f"claim:{cid}", "a")
    mirror.apply(_events(cid, claim, [moved]), 1.0, wall)
    # a real packet filed under another claim id (to claim it twice)
    cid2, claim2, grant2 = _knock(keys)
    fake_id = "s." + "ab" * 16
    g = GrantRecord(CLIENT, "tcp", 22, 15.0, f"claim:{fake_id}", "a")
    mirror.apply(_events(fake_id, claim2, [g]), 1.0, wall)
    # a captured packet from a minute ago, published again
    cid3, claim3, grant3 = _knock(keys, now_ms=wall - 60_000)
    mirror.apply(_events(cid3, claim3, [grant3]), 1.0, wall)
    # a claim without its packet
    cid4, claim4, grant4 = _knock(keys)
    bare = ClaimRecord("a", "sparoid", b"", CLIENT, 5.0)
    mirror.apply(_events(cid4, bare, [grant4]), 1.0, wall)
    # `--ip source`: the address would come from the store, so it is not believed
    cid5, claim5, _ = _knock(keys, ip=ip_address("0.0.0.0"))
    claim5 = ClaimRecord("a", "sparoid", claim5.packet, CLIENT, 5.0)
    g5 = GrantRecord(CLIENT, "tcp", 22, 15.0, f"claim:{cid5}", "a")
    mirror.apply(_events(cid5, claim5, [g5]), 1.0, wall)
    assert not [e for e in mirror.grants.values()]
    # a claim that does not re-verify is not kept: its grants have no origin here
    assert mirror.ignored == {
        "claim-reverify-failed": 1,
        "address-mismatch": 1,
        "claim-mismatch": 1,
        "expired": 1,
        "no-packet": 1,
        "unverifiable-address": 1,
        "no-origin": 3,
    }


def test_identity_ports_and_window_bound_a_peer_grant():
    ops = KeyPair(os.urandom(32), os.urandom(32))
    config, _ = _config(
        "protected = tcp/22, udp/51820\n"
        f"[ops]\nkey = {ops.key.hex()}\nhmac-key = {ops.hmac_key.hex()}\n"
        "protected = udp/51820\nopen-seconds = 30\n"
    )
    mirror = Mirror(K, Trust.for_config(config))
    wall = now_ms()
    cid, claim, _ = _knock(ops, window=30)
    ok = GrantRecord(CLIENT, "udp", 51820, 30.0, f"claim:{cid}", "a")
    ssh = GrantRecord(CLIENT, "tcp", 22, 30.0, f"claim:{cid}", "a")
    every = GrantRecord(CLIENT, None, 0, 30.0, f"claim:{cid}", "a")
    acts = mirror.apply(_events(cid, claim, [ok, ssh, every]), 1.0, wall)
    assert [type(a) for a in acts] == [Remember, Allow]
    assert mirror.ignored == {"port-not-allowed": 2}


def test_without_reverification_a_claim_must_still_exist():
    config, keys = _config()
    mirror = Mirror(K, Trust.for_config(config, reverify=False))
    cid, claim, grant = _knock(keys)
    assert mirror.apply([Put(K.grant(CLIENT, "tcp", 22, cid), encode_grant(grant), 3)], 0, 0) == []
    assert mirror.ignored == {"no-origin": 1}
    acts = mirror.apply(_events(cid, claim, [grant], rev=4), 0, 0)
    assert isinstance(acts[-1], Allow)


def test_relisted_grant_counts_its_time_in_the_store(gate):
    mirror, keys = gate
    cid, claim, grant = _knock(keys)
    evs = [
        Put(K.claim(cid), encode_claim(claim), 7, elapsed_s=4.0, lease_s=12.0),
        Put(K.grant(CLIENT, "tcp", 22, cid), encode_grant(grant), 7, elapsed_s=4.0, lease_s=12),
    ]
    acts = mirror.resync(evs, revision=9, now=50.0, now_wall_ms=now_ms())
    assert acts[0] == Remember("sparoid", bytes.fromhex(cid[2:]), 1.0)
    assert isinstance(acts[1], Allow) and 10.9 <= acts[1].remaining_s <= 11.0
    assert mirror.revision == 9


def test_delete_revokes_unless_another_grant_covers(gate):
    mirror, keys = gate
    wall = now_ms()
    c1, cl1, g1 = _knock(keys)
    c2, cl2, g2 = _knock(keys)
    mirror.apply(_events(c1, cl1, [g1], rev=3) + _events(c2, cl2, [g2], rev=4), 0.0, wall)
    assert mirror.apply([Delete(K.grant(CLIENT, "tcp", 22, c1), 5)], 1.0, wall) == []
    # deleted long before its end: revoked, its UDP flows too
    assert mirror.apply([Delete(K.grant(CLIENT, "tcp", 22, c2), 6)], 1.0, wall) == [
        Revoke(CLIENT, "tcp", 22, flows=True)
    ]
    assert mirror.apply([Delete(K.grant(CLIENT, "tcp", 22, c2), 7)], 1.0, wall) == []


def test_a_grant_that_ended_is_revoked_without_its_flows(gate):
    """Its lease ran out: connections opened in the window keep working, UDP flows too."""
    mirror, keys = gate
    wall = now_ms()
    c1, cl1, g1 = _knock(keys)
    (allow,) = [a for a in mirror.apply(_events(c1, cl1, [g1], rev=3), 0.0, wall)
                if isinstance(a, Allow)]  # fmt: skip
    end = allow.remaining_s
    assert mirror.apply([Delete(K.grant(CLIENT, "tcp", 22, c1), 5)], end - 0.5, wall) == [
        Revoke(CLIENT, "tcp", 22, flows=False)
    ]


def test_resync_revokes_what_vanished(gate):
    mirror, keys = gate
    wall = now_ms()
    c1, cl1, g1 = _knock(keys)
    c2, cl2, g2 = _knock(keys, ip=OTHER)
    mirror.apply(_events(c1, cl1, [g1]) + _events(c2, cl2, [g2]), 0.0, wall)
    acts = mirror.resync(_events(c2, cl2, [g2], rev=20), 21, 1.0, wall)
    # revoked while it had most of its window left: its UDP flows go too
    assert Revoke(CLIENT, "tcp", 22, flows=True) in acts
    assert any(isinstance(a, Allow) and a.ip == OTHER for a in acts)


# --- red-team findings: what a store writer without SPA keys cannot do ------------------------

BOGUS_CLAIM = b'{"v":1,"gate":"x","kind":"sparoid","hz":86400}'


def _feed(verifier: Verifier, actions, wall: int) -> int:
    """Apply Remember actions as the worker does (the Verifier's replay cache)."""
    n = 0
    for a in actions:
        if isinstance(a, Remember):
            verifier.remember(a.key, wall + int(a.remaining_s * 1000))
            n += 1
    return n


def test_claims_without_a_valid_packet_cannot_lock_out_a_fresh_knock(gate):
    """A writer without the SPA keys floods claims/ (no packet, a stranger's packet, a packet
    filed under another nonce, all asking for a day): nothing is remembered, so the gate's
    replay cache never fills and a fresh valid knock is still accepted."""
    mirror, keys = gate
    verifier = Verifier([keys], replay_capacity=50)
    wall = now_ms()
    stranger = KeyPair(os.urandom(32), os.urandom(32))
    remembered = 0
    for i in range(200):
        pkt = make_packet(stranger if i % 2 else keys, CLIENT, wall)
        forged = [
            Put(K.claim("s." + os.urandom(16).hex()), BOGUS_CLAIM, 2 * i + 1),
            Put(K.claim("s." + os.urandom(16).hex()),
                encode_claim(ClaimRecord("x", "sparoid", pkt, CLIENT, 86_400.0)), 2 * i + 1),
        ]  # fmt: skip
        remembered += _feed(verifier, mirror.apply(forged, 1.0, wall), wall)
        mirror.apply([Delete(e.key, 2 * i + 2) for e in forged], 1.0, wall)
    assert remembered == 0
    assert mirror.ignored == {"no-packet": 200, "claim-reverify-failed": 100,
                              "claim-mismatch": 100}  # fmt: skip
    assert type(verifier.verify(make_packet(keys, CLIENT, now_ms()), now_ms())) is Accepted
    # a real claim asking for a day is remembered only until its packet's ts + max-skew
    cid, claim, _ = _knock(keys, now_ms=wall - 3000)
    long = ClaimRecord("a", "sparoid", claim.packet, CLIENT, 86_400.0)
    (rem,) = mirror.apply([Put(K.claim(cid), encode_claim(long), 900)], 1.0, wall)
    assert rem == Remember("sparoid", bytes.fromhex(cid[2:]), 2.0)
    # ... once: a re-put (or a re-listing) does not remember it again, nor for longer
    assert mirror.apply([Put(K.claim(cid), encode_claim(long), 901)], 1.5, wall) == []
    assert mirror.resync([Put(K.claim(cid), encode_claim(long), 901)], 902, 1.5, wall) == []
    # a stale packet (older than max-skew) needs no remembering: this gate refuses it anyway
    cid, claim, _ = _knock(keys, now_ms=wall - 60_000)
    assert mirror.apply([Put(K.claim(cid), encode_claim(claim), 903)], 1.0, wall) == []


def test_fleet_remembered_nonces_are_bounded_per_kind():
    """Even without re-verification (trusting every writer) a claim is remembered at most 2 x
    max-skew, and no more than max_remembered at once: the rest is counted, not remembered."""
    config, keys = _config("max-skew = 2s\n")
    mirror = Mirror(K, Trust.for_config(config, reverify=False, max_remembered=3))
    acts = []
    for i in range(5):
        acts += mirror.apply([Put(K.claim(f"s.{i:032x}"), BOGUS_CLAIM, i + 1)], 10.0, now_ms())
    assert [a.remaining_s for a in acts] == [4.0, 4.0, 4.0]
    assert mirror.ignored == {"remember-full": 2} and mirror.remembered("sparoid", 10.0) == 3
    # once those expire, there is room again
    (a,) = mirror.apply([Put(K.claim("s." + "e" * 32), BOGUS_CLAIM, 9)], 14.5, now_ms())
    assert isinstance(a, Remember) and mirror.remembered("sparoid", 14.5) == 1


def test_fwknop_claims_must_hash_to_their_id_and_last_at_most_twice_the_age():
    config, keys = _config("fwknop-access = /etc/fwknop/access.conf\nfwknop-max-age = 30s\n")
    fw = Mirror(K, Trust.for_config(config))
    pkt = os.urandom(120)
    cid = claim_id_fwknop(pkt)
    day = encode_claim(ClaimRecord("a", "fwknop", pkt, CLIENT, 86_400.0))
    other = encode_claim(ClaimRecord("a", "fwknop", os.urandom(120), CLIENT, 86_400.0))
    assert fw.apply([Put(K.claim(cid), other, 1)], 1.0, now_ms()) == []
    assert fw.apply([Put(K.claim(cid), day, 2)], 1.0, now_ms()) == [
        Remember("fwknop", bytes.fromhex(cid[2:]), 60.0)
    ]
    assert fw.ignored == {"claim-mismatch": 1}
    # a gate without fwknop has nothing to refuse: nothing remembered
    plain = Mirror(K, Trust.for_config(_config()[0]))
    assert plain.apply([Put(K.claim(cid), day, 2)], 1.0, now_ms()) == []


POISON = [
    b"[" * 2000 + b"]" * 2000,  # RecursionError in json.loads
    b'{"v":1,"gate":"x","kind":"sparoid","hz":1' + b"0" * 400 + b"}",  # int beyond a float
    b'{"v":1,"gate":"x","kind":"sparoid","hz":1e999}',  # inf
    b'{"v":1,"gate":"x","kind":"sparoid","hz":Infinity}',
]


def _poison_grant(cid: str) -> bytes:
    return b'{"v":1,"rem":1' + b"0" * 400 + b',"origin":"claim:' + cid.encode() + b'","gate":"x"}'


def test_one_malformed_value_spoils_only_itself(gate):
    """Malformed values are ignored and counted by the decoders (never raised), and a batch
    with one still applies every good event of it, in apply as in resync."""
    mirror, keys = gate
    wall = now_ms()
    for raw in POISON:
        assert decode_claim(raw) == "bad-value"
        assert decode_member(raw) == "bad-value"
    grant_key = K.grant(CLIENT, "tcp", 22, "s." + "a" * 32)
    for rem in (b"1" + b"0" * 400, b"1e999", b"-Infinity", b"NaN"):
        raw = b'{"v":1,"rem":' + rem + b',"origin":"claim:s.' + b"a" * 32 + b'","gate":"x"}'
        assert decode_grant(K, grant_key, raw) == "bad-value"
    deep_member = b'{"v":1,"name":"m","state":"attached","fallback":' + b"[" * 900 + b"]" * 900
    assert decode_member(deep_member + b"}") == "bad-value"
    cid, claim, grant = _knock(keys)
    batch = [Put(K.claim("s." + "b" * 32), raw, 10) for raw in POISON]
    batch += [Put(grant_key, _poison_grant("s." + "a" * 32), 10)]
    batch += _events(cid, claim, [grant], rev=10)
    acts = mirror.apply(batch, 1.0, wall)
    assert [type(a) for a in acts] == [Remember, Allow]
    assert mirror.ignored == {"bad-value": 5} and mirror.revision == 10
    cid2, claim2, grant2 = _knock(keys, ip=OTHER)
    acts = mirror.resync(batch + _events(cid2, claim2, [grant2], rev=11), 12, 2.0, wall)
    assert {a.ip for a in acts if isinstance(a, Allow)} == {CLIENT, OTHER}
    assert len(mirror.grants) == 2 and mirror.revision == 12


def test_a_knock_grant_opens_once_for_at_most_its_window():
    """A store writer cannot stretch a knock's window: a re-put of its grant is ignored, a
    re-listing cannot extend it past its first deadline, a revoked one does not come back,
    and a peer never opens it for more than the identity's window (skew counted once)."""
    ops = KeyPair(os.urandom(32), os.urandom(32))
    config, keys = _config(
        "protected = tcp/22\nopen-seconds = 15\n"
        f"[ops]\nkey = {ops.key.hex()}\nhmac-key = {ops.hmac_key.hex()}\nopen-seconds = 30\n"
    )
    mirror = Mirror(K, Trust.for_config(config))
    t0 = now_ms()
    cid, claim, grant = _knock(keys, now_ms=t0)
    evs = _events(cid, claim, [grant], rev=20)
    (a0,) = [a for a in mirror.apply(evs, 0.0, t0) if isinstance(a, Allow)]
    assert 14.9 <= a0.remaining_s <= 15.0
    # the same grant put again near its end: ignored (before: 5 s more, up to max-skew)
    assert mirror.apply([Put(evs[1].key, evs[1].value, 21)], 14.9, t0 + 14_900) == []
    assert mirror.ignored == {"re-put": 1}
    # a re-listing with a fresh value: allowed only up to the first deadline
    acts = mirror.resync([evs[0], Put(evs[1].key, evs[1].value, 22)], 22, 14.9, t0 + 14_900)
    (a1,) = [a for a in acts if isinstance(a, Allow)]
    assert a1.remaining_s <= 0.1 + 1e-9
    # revoked, then put back by a writer: stays closed
    assert mirror.apply([Delete(evs[1].key, 23)], 10.0, t0 + 10_000) == [
        Revoke(CLIENT, "tcp", 22, flows=True)
    ]
    assert mirror.apply([Put(evs[1].key, evs[1].value, 24)], 10.0, t0 + 10_000) == []
    # the client's clock 4 s ahead (within max-skew) and a writer asking for 20 s: 15, the
    # identity's window, not window + skew (20 is below the longest identity's 30)
    cid, claim, _ = _knock(keys, now_ms=now_ms() + 4000)
    long = GrantRecord(CLIENT, "tcp", 22, 20.0, f"claim:{cid}", "a")
    (a2,) = [a for a in mirror.apply(_events(cid, claim, [long], 30), 50.0, now_ms())
             if isinstance(a, Allow)]  # fmt: skip
    assert a2.remaining_s == 15.0


# --- knocks, outages, leases ----------------------------------------------------------------


def test_decide_knock():
    assert decide_knock(ClaimResult.CLAIMED, Fallback.REFUSE).admit
    assert not decide_knock(ClaimResult.REPLAY, Fallback.LOCAL).admit
    local = decide_knock(ClaimResult.UNAVAILABLE, Fallback.LOCAL)
    assert local.admit and local.journal and local.reason == "fleet-fallback-local"
    refuse = decide_knock(ClaimResult.UNAVAILABLE, Fallback.REFUSE)
    assert not refuse.admit and not refuse.journal
    assert not admit_before_sync(Fallback.LOCAL, 1.0, 5.0)
    assert admit_before_sync(Fallback.LOCAL, 5.0, 5.0)
    assert not admit_before_sync(Fallback.REFUSE, 500.0, 5.0)


def test_store_health_breaker():
    h = StoreHealth(retry_s=1.0)
    assert h.should_try(0.0)
    assert h.failed(0.0) and not h.failed(0.1)
    assert not h.should_try(0.5) and h.should_try(1.2)
    assert h.succeeded(1.3) and not h.succeeded(1.4) and h.up


def test_outage_journal():
    j = OutageJournal(capacity=2)
    g = GrantRecord(CLIENT, "tcp", 22, 15.0, "claim:s." + "1" * 32, "a")
    claim = ClaimRecord("a", "sparoid", b"p", CLIENT, 5.0)
    j.add(JournalEntry("s." + "1" * 32, claim, (g,), admitted=100.0, horizon_s=5.0))
    (r,) = j.due(110.0)
    assert r.horizon_s == 0.0 and r.grants[0].remaining_s == 5.0
    assert j.due(120.0) == [] and len(j) == 0
    for n in range(3):
        j.add(JournalEntry(f"s.{n:032x}", claim, (g,), admitted=100.0, horizon_s=5.0))
    assert len(j) == 2 and j.dropped == 1


def test_lease_pool_shares_leases_safely():
    pool = LeasePool(slack_s=1)
    assert pool.ttl_for(15.0) == 16 and pool.ttl_for(0.2) == 2
    assert pool.pick(15.0, now=0.0) is None
    pool.add(7, 16, sent_at=0.0)
    assert pool.pick(15.0, now=0.5) == 7  # expires no earlier than 16 >= 15.5
    assert pool.pick(15.0, now=1.5) is None  # 16 < 16.5: would die too early
    assert pool.pick(5.0, now=0.5) is None  # would keep a 5 s key 10 s longer


def test_fleet_operator_grants_no_refuses_every_operator_grant_from_the_store():
    text = (f"key = {KA}\nhmac-key = {HA}\nprotected = tcp/22\n"
            "cluster = http://127.0.0.1:2379\ncluster-name = lab\n")  # fmt: skip
    assert parse_config(text).fleet.operator_grants is True  # (the default: RBAC decides)
    cfg = parse_config(text + "fleet-operator-grants = no\n")
    mirror = Mirror(K, Trust.for_config(cfg, operator_grants=cfg.fleet.operator_grants))
    op = GrantRecord(CLIENT, "tcp", 22, 3600.0, "operator:root@a", "a")
    put = Put(K.grant(CLIENT, "tcp", 22, "op.0123456789abcdef"), encode_grant(op), 5)
    assert mirror.apply([put], now=1.0, now_wall_ms=now_ms()) == []
    assert mirror.ignored == {"operator-grant-refused": 1}
