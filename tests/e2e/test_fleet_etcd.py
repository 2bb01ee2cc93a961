"""Fleet mode against a REAL three-member etcd cluster (Debian's etcd, started by the lab kit on
loopback ports): claims exactly once, leases, watch, revoke, quorum loss, re-sync, forged
grants, TLS and RBAC. Each gate is a FleetStore/FleetSync pair with its own connections; the
local maps are seen through the LocalGate interface the worker implements.
"""

from __future__ import annotations

import os
import re
import threading
import time
from ipaddress import ip_address

import pytest

from spagate.gate.core.config import parse_config
from spagate.gate.core.fleet import (
    ClaimRecord,
    ClaimResult,
    Fallback,
    GrantRecord,
    MemberRecord,
    Mirror,
    Trust,
    claim_id_sparoid,
    encode_claim,
    encode_grant,
)
from spagate.gate.service.fleet import FleetOptions, FleetStore, FleetSync, StoreDenied, _put
from spagate.lab.etcd import EtcdCluster, ThrowawayCA
from spagate.protocol import KeyPair, decode, make_packet

CLIENT = ip_address("198.51.100.7")
KEYS = KeyPair(os.urandom(32), os.urandom(32))
CONFIG = parse_config(
    f"key = {KEYS.key.hex()}\nhmac-key = {KEYS.hmac_key.hex()}\nprotected = tcp/22\n",
    "/etc/spagate.ini",
)


class RecordingGate:
    """The local maps as the fleet sees them (LocalGate): what was opened, closed, remembered,
    with the monotonic time of each call."""

    def __init__(self):
        self.calls: list[tuple[float, str, tuple]] = []
        self.cond = threading.Condition()

    def _rec(self, what: str, args: tuple) -> None:
        with self.cond:
            self.calls.append((time.monotonic(), what, args))
            self.cond.notify_all()

    def allow(self, ip, proto, port, remaining_s):
        self._rec("allow", (ip, proto, port, remaining_s))

    def revoke(self, ip, proto, port, flows=False):
        self._rec("revoke", (ip, proto, port))

    def remember(self, kind, key, remaining_s):
        self._rec("remember", (kind, key, remaining_s))

    def wait(self, what: str, pred=lambda args: True, timeout: float = 5.0):
        """(time, args) of the first matching call, waiting up to timeout."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, w, args in self.calls:
                    if w == what and pred(args):
                        return t, args
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def opened(self, ip=CLIENT):
        return [a for _, w, a in self.calls if w == "allow" and a[0] == ip]


class Gate:
    """One fleet member: store, mirror, sync and its recorded local maps."""

    def __init__(self, cluster: EtcdCluster, name: str, fleet: str, **opts):
        tls = cluster.client_tls
        if tls is not None:
            opts = {"ca": tls.ca, "cert": tls.cert, "key": tls.key, **opts}
        self.opts = FleetOptions(fleet, tuple(cluster.endpoints), name, **opts)
        self.name = name
        self.store = FleetStore(self.opts)
        self.mirror = Mirror(self.store.keys, Trust.for_config(CONFIG))
        self.local = RecordingGate()
        self.sync = FleetSync(
            self.store, self.mirror, self.local, lambda: MemberRecord(name, "attached", ("eth0",))
        )

    def start(self) -> bool:
        return self.sync.start()

    def knock(self, ip=CLIENT, window: float = 15.0, packet: bytes | None = None):
        """A knock verified by this gate (a real packet), claimed and published."""
        pkt = packet or make_packet(KEYS, ip, time.time_ns() // 1_000_000)
        cid = claim_id_sparoid(decode(pkt, [KEYS]).message.nonce)
        claim = ClaimRecord(self.name, "sparoid", pkt, ip, 5.0)
        grant = GrantRecord(ip, "tcp", 22, window, f"claim:{cid}", self.name)
        return cid, self.sync.knock(cid, claim, [grant], horizon_s=5.0)


@pytest.fixture(scope="module")
def cluster():
    with EtcdCluster(3) as c:
        yield c


@pytest.fixture
def fleet(request):
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name[5:].lower())[:40].strip("-")
    return f"t{os.getpid() % 10000}-{name}"


@pytest.fixture
def gates(cluster, fleet):
    made: list[Gate] = []

    def make(name: str, c: EtcdCluster | None = None, **opts) -> Gate:
        g = Gate(c or cluster, name, fleet, **opts)
        made.append(g)
        return g

    yield make
    for g in made:
        g.sync.stop()


def _until(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _count_keys(c: EtcdCluster, prefix: str) -> int:
    out = c.etcdctl("get", "--prefix", "--keys-only", prefix).stdout
    return len([line for line in out.splitlines() if line.strip()])


# --- claims -----------------------------------------------------------------------------------


def test_claim_exactly_once_across_two_clients(cluster, gates):
    """Two gates race for the same 40 packets at the same instant: each nonce is claimed by
    exactly one of them; the other is told it is a replay."""
    a, b = gates("a"), gates("b")
    assert a.start() and b.start()
    packets = [make_packet(KEYS, CLIENT, time.time_ns() // 1_000_000) for _ in range(40)]
    results: dict[str, list] = {"a": [], "b": []}
    go = threading.Barrier(2)

    def run(g: Gate):
        for p in packets:
            go.wait()
            results[g.name].append(g.knock(packet=p)[1])

    threads = [threading.Thread(target=run, args=(g,)) for g in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for ra, rb in zip(results["a"], results["b"], strict=True):
        assert sorted([ra.admit, rb.admit]) == [False, True]
        assert {ra.reason, rb.reason} == {"fleet-claimed", "fleet-replay"}


def test_claim_lease_expires(cluster, gates):
    a = gates("a")
    assert a.start()
    pkt = make_packet(KEYS, CLIENT, time.time_ns() // 1_000_000)
    cid = claim_id_sparoid(decode(pkt, [KEYS]).message.nonce)
    claim = ClaimRecord("a", "sparoid", pkt, CLIENT, 1.0)
    assert a.store.claim(cid, claim, horizon_s=1.0) is ClaimResult.CLAIMED
    other = ClaimRecord("b", "sparoid", pkt, CLIENT, 1.0)
    assert a.store.claim(cid, other, horizon_s=1.0) is ClaimResult.REPLAY
    # lease TTL: ceil(1) + 1 s slack; a pooled lease may have been granted up to 1 s earlier
    end = time.monotonic() + 6
    while a.store.claim(cid, other, horizon_s=1.0) is ClaimResult.REPLAY:
        assert time.monotonic() < end, "the claim outlived its lease"
        time.sleep(0.25)


def test_grant_lease_expires_and_closes_on_peers(cluster, gates):
    a, b = gates("a"), gates("b")
    assert a.start() and b.start()
    t0 = time.monotonic()
    assert a.knock(window=1.0)[1].admit
    assert b.local.wait("allow")
    # the store deletes the grant with its lease; every gate's mirror closes it
    got = b.local.wait("revoke", timeout=8)
    assert got is not None, "the grant's lease never expired"
    assert got[0] - t0 >= 1.0
    assert _count_keys(cluster, a.store.keys.grants) == 0


# --- replication ------------------------------------------------------------------------------


def test_watch_delivers_a_grant_to_a_peer_within_1s(cluster, gates):
    a, b = gates("a"), gates("b")
    assert a.start() and b.start()
    for _ in range(5):
        t0 = time.monotonic()
        assert a.knock()[1].admit
        got = b.local.wait("allow", lambda args: args[3] > 14)
        assert got is not None and got[0] - t0 < 1.0, "peer opened too late"
        assert got[1][:3] == (CLIENT, "tcp", 22)
        b.local.calls.clear()
    assert b.mirror.ignored == {}
    assert b.sync.counts["action-remember"] == 5  # the peer also refuses the nonce locally


def test_revoke_and_revoke_all_propagate(cluster, gates):
    a, b = gates("a"), gates("b")
    assert a.start() and b.start()
    other = ip_address("203.0.113.9")
    a.knock()
    a.knock(ip=other)
    key = b.store.allow(other, "tcp", 22, 3600, "root@b", os.urandom(8).hex())
    assert "/grants/o/203.0.113.9/tcp/22/op." in key
    assert b.local.wait("allow", lambda x: x[0] == other) and a.local.wait("allow")
    assert b.store.revoke(CLIENT) == 1  # `revoke` on B closes A
    assert a.local.wait("revoke", lambda x: x[0] == CLIENT)
    assert not a.local.wait("revoke", lambda x: x[0] == other, timeout=0.3)
    assert a.store.revoke_all() == 2  # the knock and the operator grant of `other`
    assert b.local.wait("revoke", lambda x: x[0] == other)
    assert a.local.wait("revoke", lambda x: x[0] == other)


def test_fleet_view_lists_members(cluster, gates):
    a, b = gates("a"), gates("b")
    assert a.start() and b.start()
    time.sleep(1.5)
    view = a.store.members()
    assert [m.record.name for m in view] == ["a", "b"]
    assert all(m.record.state == "attached" and m.last_seen_s <= 3 for m in view)
    b.sync.stop()  # leaves: its lease is revoked
    assert [m.record.name for m in a.store.members()] == ["a"]


def test_forged_grants_are_ignored_and_counted(cluster, gates, fleet):
    """Entries written straight into the store by someone with write access but without the
    gate's SPA keys open nothing, and each is counted by its reason."""
    a = gates("a")
    assert a.start()
    k = a.store.keys
    stranger = KeyPair(os.urandom(32), os.urandom(32))
    pkt = make_packet(stranger, CLIENT, time.time_ns() // 1_000_000)
    cid = claim_id_sparoid(decode(pkt, [stranger]).message.nonce)
    good = GrantRecord(CLIENT, "tcp", 22, 15.0, f"claim:{cid}", "x")
    forged = {
        # no claim behind it
        k.grant(CLIENT, "tcp", 22, "s." + "1" * 32): GrantRecord(
            CLIENT, "tcp", 22, 15.0, "claim:s." + "1" * 32, "x"
        ),
        # for 0.0.0.0
        f"{k.knock_grants}0.0.0.0/tcp/22/{cid}": good,
        # a huge window (operator origin: not re-verifiable, but capped)
        k.grant(CLIENT, "tcp", 22, "op.00000000000000ff"): GrantRecord(
            CLIENT, "tcp", 22, 1e9, "operator:mallory", "x"
        ),
        # a claim with a packet the gate cannot verify
        k.grant(CLIENT, "tcp", 22, cid): good,
    }
    cluster.etcdctl("put", k.claim(cid), encode_claim(ClaimRecord("x", "sparoid", pkt, CLIENT)))
    for key, g in forged.items():
        cluster.etcdctl("put", key, encode_grant(g).decode())
    end = time.monotonic() + 5
    while sum(a.mirror.ignored.values()) < 5 and time.monotonic() < end:
        time.sleep(0.05)
    # the claim whose packet does not verify is not kept (nor remembered): its grant has no
    # origin here
    assert a.mirror.ignored == {
        "no-origin": 2,
        "unusable-address": 1,
        "window-too-long": 1,
        "claim-reverify-failed": 1,
    }
    assert a.local.opened() == []
    assert not [c for c in a.local.calls if c[1] == "remember"]


def test_a_writer_without_keys_neither_fills_the_replay_cache_nor_stalls_a_gate(cluster, gates):
    """A writer of the prefix without the SPA keys puts 1,024 claims asking for a day, a value
    nested 2,000 deep and a number beyond a float, in the same transaction as a real knock: the
    peer remembers only the real nonce (for its packet's ts + max-skew) and opens its window;
    a gate started while those values are in the store syncs and opens it too."""
    b = gates("b")
    assert b.start()
    k = b.store.keys
    bogus = b'{"v":1,"gate":"x","kind":"sparoid","hz":86400}'
    for _ in range(8):
        ops = [_put(k.claim("s." + os.urandom(16).hex()), bogus, None) for _ in range(128)]
        txn = {"compare": [], "success": ops, "failure": []}
        b.store.call("/kv/txn", txn, time.monotonic() + 5)
    pkt = make_packet(KEYS, CLIENT, time.time_ns() // 1_000_000)
    cid = claim_id_sparoid(decode(pkt, [KEYS]).message.nonce)
    grant = GrantRecord(CLIENT, "tcp", 22, 15.0, f"claim:{cid}", "x")
    poison_id = "s." + "a" * 32
    huge = b'{"v":1,"rem":1' + b"0" * 400 + f',"origin":"claim:{poison_id}","gate":"x"}}'.encode()
    ops = [
        _put(k.claim("s." + "b" * 32), b"[" * 2000 + b"]" * 2000, None),
        _put(k.grant(CLIENT, "tcp", 22, poison_id), huge, None),
        _put(k.claim(cid), encode_claim(ClaimRecord("x", "sparoid", pkt, CLIENT, 86_400.0)), None),
        _put(k.grant(CLIENT, "tcp", 22, cid), encode_grant(grant), None),
    ]  # fmt: skip
    b.store.call("/kv/txn", {"compare": [], "success": ops, "failure": []}, time.monotonic() + 5)
    got = b.local.wait("allow", timeout=5)
    assert got is not None and got[1][:3] == (CLIENT, "tcp", 22)
    remembered = [a for _, w, a in b.local.calls if w == "remember"]
    assert len(remembered) == 1 and remembered[0][1] == bytes.fromhex(cid[2:])
    assert remembered[0][2] <= 5.0
    assert b.mirror.ignored == {"no-packet": 1024, "bad-value": 2}
    c = gates("c")
    assert c.start()  # synced: the poison is counted, not raised
    assert c.local.wait("allow", timeout=2) is not None
    assert c.mirror.ignored == {"no-packet": 1024, "bad-value": 2}
    assert len([1 for _, w, _a in c.local.calls if w == "remember"]) == 1


# --- faults -----------------------------------------------------------------------------------


def test_one_member_down_still_works(gates, fleet):
    """Kill the leader (the worst single loss): after the election (about 1 s with etcd's
    defaults) knocks are claimed within the bound again and peers still get grants."""
    with EtcdCluster(3) as c:
        a, b = gates("a", c), gates("b", c)
        assert a.start() and b.start()
        lead = c.leader()
        c.kill(lead)
        c.wait_healthy()
        assert _until(lambda: a.sync.health.up)
        for _ in range(5):
            t0 = time.monotonic()
            assert a.knock()[1].reason == "fleet-claimed"
            assert time.monotonic() - t0 < 0.3
        assert b.local.wait("allow", timeout=3), "the peer's watch did not move to a live member"
        # and a follower on top of that would be the end of the quorum: see the next test


@pytest.mark.parametrize("fallback", [Fallback.LOCAL, Fallback.REFUSE])
def test_no_quorum_fails_fast_then_resyncs(gates, fleet, fallback):
    with EtcdCluster(3) as c:
        a = gates("a", c, fallback=fallback, timeout_s=0.3)
        b = gates("b", c, fallback=fallback, timeout_s=0.3)
        assert a.start() and b.start()
        assert a.knock()[1].admit
        assert b.local.wait("allow")
        c.kill(1)
        c.kill(2)
        # no quorum: the first claim waits for its bound, no longer
        t0 = time.monotonic()
        cid, d = a.knock()
        first = time.monotonic() - t0
        assert first < 0.6, f"a claim without quorum took {first:.2f}s"
        assert d.admit is (fallback is Fallback.LOCAL) and d.journal is d.admit
        # then the breaker: no call at all until a probe succeeds
        t0 = time.monotonic()
        for _ in range(20):
            assert a.knock()[1].admit is (fallback is Fallback.LOCAL)
        assert time.monotonic() - t0 < 0.1
        assert not a.sync.health.up
        journalled = len(a.sync.journal)
        assert journalled == (21 if fallback is Fallback.LOCAL else 0)
        # quorum back: the heartbeat sees it, the journal is published, the peer re-syncs
        b.local.calls.clear()
        c.restart(1, wait=False)
        c.restart(2)
        end = time.monotonic() + 15
        while (not a.sync.health.up or len(a.sync.journal)) and time.monotonic() < end:
            time.sleep(0.1)
        assert a.sync.health.up and len(a.sync.journal) == 0
        assert a.sync.counts["journal-published"] == journalled
        if journalled:
            got = b.local.wait("allow", timeout=10)
            assert got is not None, "the peer never got the grants admitted during the outage"
        assert a.knock()[1].reason == "fleet-claimed"
        assert b.local.wait("allow", lambda x: x[3] > 14, timeout=5)


def test_a_restarted_gate_loads_open_windows_first(cluster, gates):
    a = gates("a")
    assert a.start()
    a.knock()
    a.knock(ip=ip_address("203.0.113.9"))
    a.store.revoke(ip_address("203.0.113.9"))
    b = gates("b")
    assert b.start()  # returns once the listing is in the local maps
    opened = [args[0] for _, what, args in b.local.calls if what == "allow"]
    assert opened == [CLIENT]
    (allow,) = b.local.opened()
    assert 13 < allow[3] <= 15


def test_a_gate_cut_off_resumes_its_watch_or_relists_after_compaction(gates, fleet):
    """Gate b talks to member 0 only. While member 0 is down, a grant comes and another is
    revoked: b resumes its watch from its revision and catches up. The second time the history
    b needs is compacted away: b lists again and closes what was revoked meanwhile."""
    with EtcdCluster(3) as c:
        a = gates("a", c)
        b = Gate(c, "b", fleet)
        b.opts = FleetOptions(fleet, (c.endpoints[0],), "b")
        b.store = FleetStore(b.opts)
        b.mirror = Mirror(b.store.keys, Trust.for_config(CONFIG))
        b.sync = FleetSync(b.store, b.mirror, b.local, lambda: MemberRecord("b", "attached"))
        try:
            assert a.start() and b.start()
            a.knock()
            assert b.local.wait("allow")
            other = ip_address("203.0.113.9")
            # 1. cut off, history kept: the watch resumes from its revision
            c.kill(0)
            c.wait_healthy()
            # an election may have tripped a's breaker: the next heartbeat (1 s) resets it
            assert _until(lambda: a.sync.health.up)
            a.store.revoke(CLIENT)
            assert a.knock(ip=other)[1].reason == "fleet-claimed"
            c.restart(0)
            assert b.local.wait("revoke", lambda x: x[0] == CLIENT, timeout=10)
            assert b.local.wait("allow", lambda x: x[0] == other, timeout=10)
            assert b.sync.counts["resync"] == 1  # no listing was needed
            # 2. cut off, history compacted: the watch is refused, b lists again
            c.kill(0)
            c.wait_healthy()
            a.store.revoke(other)
            out = c.etcdctl("put", f"/spagate/{fleet}/x", "y", "--write-out=json").stdout
            c.etcdctl("compact", out.split('"revision":')[1].split(",")[0])
            c.restart(0)
            assert b.local.wait("revoke", lambda x: x[0] == other, timeout=10)
            assert b.sync.counts["watch-compacted"] >= 1 and b.sync.counts["resync"] == 2
            assert b.mirror.live_grants(time.monotonic()) == []
        finally:
            b.sync.stop()


# --- TLS and RBAC -----------------------------------------------------------------------------


def test_tls_with_a_throwaway_ca(tmp_path, fleet):
    with EtcdCluster(3, tls=True) as c:
        tls = c.client_tls
        assert all(u.startswith("https://127.0.0.1:") for u in c.endpoints)
        g = Gate(c, "a", fleet)
        assert g.store.call("/maintenance/status", {})["version"] == "3.4.23"
        assert g.start()
        assert g.knock()[1].reason == "fleet-claimed"
        g.sync.stop()
        rogue = ThrowawayCA(tmp_path / "rogue").client("mallory")
        for name, opts in {
            "no CA (system trust)": {"ca": None},
            "no client certificate": {"cert": None, "key": None},
            "a certificate from another CA": {"cert": rogue.cert, "key": rogue.key},
        }.items():
            o = FleetOptions(fleet, tuple(c.endpoints), "x", tls.ca, tls.cert, tls.key)
            o = FleetOptions(**{**o.__dict__, **opts})
            s = FleetStore(o)
            t0 = time.monotonic()
            pkt = make_packet(KEYS, CLIENT, time.time_ns() // 1_000_000)
            cid = claim_id_sparoid(decode(pkt, [KEYS]).message.nonce)
            res = s.claim(cid, ClaimRecord("x", "sparoid", pkt, CLIENT, 5.0), 5.0)
            assert res is ClaimResult.UNAVAILABLE, name
            assert time.monotonic() - t0 < 1.0, name


def test_rbac_a_user_without_write_permission_cannot_grant(fleet):
    with EtcdCluster(3) as c:
        c.enable_auth("rootpw")
        prefix = f"/spagate/{fleet}/"
        c.add_user("root:rootpw", "gate", "gatepw", "spagate-gate", [("readwrite", prefix)])
        c.add_user("root:rootpw", "viewer", "viewerpw", "spagate-view", [("read", prefix)])
        gate = Gate(c, "a", fleet, user="gate", password="gatepw")
        viewer = Gate(c, "v", fleet, user="viewer", password="viewerpw")
        nobody = Gate(c, "n", fleet)
        try:
            assert gate.start() and viewer.start()
            assert gate.knock()[1].reason == "fleet-claimed"
            assert viewer.local.wait("allow"), "a reader sees the fleet's grants"
            op = GrantRecord(CLIENT, "tcp", 22, 60.0, "operator:viewer", "v")
            with pytest.raises(StoreDenied, match="permission denied"):
                viewer.store.publish([op], "op.00000000000000aa")
            with pytest.raises(StoreDenied, match="permission denied"):
                viewer.store.revoke_all()
            pkt = make_packet(KEYS, CLIENT, time.time_ns() // 1_000_000)
            cid = claim_id_sparoid(decode(pkt, [KEYS]).message.nonce)
            with pytest.raises(StoreDenied):
                viewer.store.claim(cid, ClaimRecord("v", "sparoid", pkt, CLIENT, 5.0), 5.0)
            with pytest.raises(StoreDenied):
                nobody.store.snapshot()  # no credentials at all
            # and the role is bounded by the prefix: the gate user cannot write elsewhere
            with pytest.raises(StoreDenied, match="permission denied"):
                gate.store.call("/kv/put", {"key": "L2V0Yy9wYXNzd2Q=", "value": "eA=="})
        finally:
            for g in (gate, viewer, nobody):
                g.sync.stop()
