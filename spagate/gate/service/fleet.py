"""Fleet mode, I/O: the gate's side of the shared store, over etcd's v3 JSON gateway (etcd3gw).

Two parts:
- `FleetStore`: request/response calls, each bounded by `timeout_s` in total (all endpoints
  tried within it): claim (+ grants) in one transaction, operator allow, revoke, revoke-all,
  member heartbeat, members, a full listing. Safe to use from several threads (one etcd3gw
  client per endpoint per thread).
- `FleetSync`: the long-running part, in threads: loads the fleet's grants before the gate
  admits anything, watches the prefix (resuming from the last revision after a disconnect,
  re-listing after a compaction), keeps the member alive, and publishes the knocks admitted
  during an outage when the store returns. It talks to the local maps only through
  `LocalGate` (allow / revoke / remember), called from its own thread.

The decisions (record formats, what to believe, fallback) live in `spagate.gate.core.fleet`.

etcd3gw 2.0 is used for its client (URL, TLS session, exception mapping, base64 helpers), not
for its high-level calls: they take no timeout (its `timeout=` is stored on the requests
session, which ignores it), its Watcher reports neither errors nor compactions, and it has no
auth. Every request here is `Etcd3Client.post(url, json=..., timeout=...)`; the watch stream
is read here. `session.trust_env = False`: no proxy, netrc or CA bundle from the environment
(REQUESTS_CA_BUNDLE would otherwise replace the configured fleet CA).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol

from spagate.errors import SpagateError
from spagate.gate.core.fleet import (
    Allow,
    ClaimRecord,
    ClaimResult,
    Delete,
    Fallback,
    GrantRecord,
    JournalEntry,
    Keys,
    KnockDecision,
    LeasePool,
    MemberRecord,
    Mirror,
    OutageJournal,
    Put,
    Remember,
    Revoke,
    StoreHealth,
    decide_knock,
    decode_claim,
    decode_member,
    encode_claim,
    encode_grant,
    encode_member,
    new_operator_id,
)

IPAddress = IPv4Address | IPv6Address
log = logging.getLogger("spagate.fleet")


class StoreUnavailable(SpagateError):
    """The store gave no answer within the bound (dead members, no quorum, network)."""


class StoreDenied(SpagateError):
    """The store refused the request: credentials, permissions (an operator's mistake)."""


@dataclass(frozen=True)
class FleetOptions:
    cluster: str
    endpoints: tuple[str, ...]  # http(s)://host:port (core.fleet.parse_cluster)
    member: str  # this gate's name in the fleet
    ca: str | None = None  # CA of the members' certificates (https)
    cert: str | None = None  # client certificate and key (members with --client-cert-auth)
    key: str | None = None
    user: str | None = None  # etcd user (RBAC; the gateway cannot map certificates to users)
    password: str | None = None
    timeout_s: float = 0.3  # every request of the knock path, all endpoints included
    operator_timeout_s: float = 3.0  # allow/revoke/status/listing: may wait out an election
    watch_idle_s: float = 5.0  # a silent watch stream is reopened (from its revision) after
    member_ttl_s: int = 10  # a member unseen this long drops out of the fleet view
    heartbeat_s: float = 1.0  # member keepalive, and store probe while it is down
    fallback: Fallback = Fallback.LOCAL
    initial_sync_s: float = 5.0  # fallback local admits (journalled) if no sync by then
    claim_workers: int = 4  # concurrent claims (knock_async)
    claim_queue: int = 256  # claims waiting beyond this are answered "unavailable"


class LocalGate(Protocol):
    """What the fleet asks of the local gate. Called from FleetSync's thread."""

    def allow(self, ip: IPAddress, proto: str | None, port: int, remaining_s: float) -> None:
        """Open ip for remaining_s (from now, this host's clock); extend only, never shorten."""

    def revoke(self, ip: IPAddress, proto: str | None, port: int, flows: bool = False) -> None:
        """Close that one entry (proto None, port 0: the whole-host entry); flows: it was
        revoked before its end, so the UDP flows it let in close too."""

    def remember(self, kind: str, key: bytes, remaining_s: float) -> None:
        """A nonce (sparoid) or digest (fwknop) claimed in the fleet: refuse it here too."""


# --- one connection per endpoint per thread ------------------------------------------------------


def _b64(data: str | bytes) -> str:
    from etcd3gw.utils import _encode

    return _encode(data.encode() if isinstance(data, str) else data)


def _unb64(text: str) -> bytes:
    from etcd3gw.utils import _decode

    return _decode(text)


def _prefix_end(prefix: str) -> bytes:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return bytes(raw)


def _split_url(url: str) -> tuple[str, str, int]:
    m = re.fullmatch(r"(https?)://\[?([^\]]+?)\]?:([0-9]+)", url)
    if not m:
        raise SpagateError(f"fleet endpoint {url!r}: expected http(s)://host:port")
    return m.group(1), m.group(2), int(m.group(3))


class _Conn:
    """etcd3gw clients for every endpoint, used by one thread; failover and auth."""

    def __init__(self, opts: FleetOptions, tokens: dict[int, str], lock: threading.Lock):
        import etcd3gw  # Debian's python3-etcd3gw (2.0): imported only in fleet mode
        from etcd3gw import exceptions

        self.opts, self.exc = opts, exceptions
        self.tokens, self.lock = tokens, lock  # auth tokens, shared by every thread's _Conn
        self.clients = []
        for url in opts.endpoints:
            scheme, host, port = _split_url(url)
            c = etcd3gw.Etcd3Client(
                host=host,
                port=port,
                protocol=scheme,
                ca_cert=opts.ca,
                cert_cert=opts.cert,
                cert_key=opts.key,
                api_path="/v3/",
            )
            c.session.trust_env = False
            self.clients.append(c)
        self.preferred = 0
        self.requests = 0
        self.bytes_out = 0
        self.bytes_in = 0

    def auth(self, i: int, stale: str | None = None) -> str | None:
        """The auth token for endpoint i (authenticating once for every thread; bcrypt makes
        it slow, so it has its own bound, at most once per token lifetime)."""
        if not self.opts.user:
            return None
        with self.lock:
            tok = self.tokens.get(i)
            if tok is not None and tok != stale:
                return tok
            body = {"name": self.opts.user, "password": self.opts.password or ""}
            deadline = time.monotonic() + max(self.opts.timeout_s, 3.0)
            res = self._post(self.clients[i], "/auth/authenticate", body, deadline, None)
            self.tokens[i] = res["token"]
            return self.tokens[i]

    def _post(self, c, path: str, body: dict, deadline: float, token: str | None) -> dict:
        left = deadline - time.monotonic()
        if left <= 0:
            raise self.exc.ConnectionTimeoutError("deadline")
        data = json.dumps(body, separators=(",", ":"))
        self.requests += 1
        self.bytes_out += len(data)
        headers = {"Authorization": token} if token else None
        res = c.post(c.get_url(path), data=data, timeout=(left, left), headers=headers)
        self.bytes_in += len(json.dumps(res))
        return res

    def call(self, path: str, body: dict, deadline: float | None = None) -> dict:
        """POST body to /v3/<path> on the first endpoint that answers before the deadline."""
        if deadline is None:
            deadline = time.monotonic() + self.opts.timeout_s
        n, last = len(self.clients), "no endpoint"
        for k in range(n):
            i = (self.preferred + k) % n
            c = self.clients[i]
            try:
                token = self.auth(i)
                try:
                    res = self._post(c, path, body, deadline, token)
                except self.exc.Etcd3Exception as e:
                    if token and _is_token_error(e):
                        token = self.auth(i, stale=token)  # the token expired: once more
                        res = self._post(c, path, body, deadline, token)
                    else:
                        raise
                self.preferred = i
                return res
            except (self.exc.ConnectionFailedError, self.exc.ConnectionTimeoutError) as e:
                last = f"{self.opts.endpoints[i]}: {_detail(e)}"
                self.preferred = (i + 1) % n
                if time.monotonic() >= deadline:
                    break
            except self.exc.Etcd3Exception as e:
                raise StoreDenied(f"{self.opts.endpoints[i]}{path}: {_detail(e)}") from None
            except (ValueError, KeyError) as e:  # not JSON, or not the expected shape
                raise StoreUnavailable(f"{self.opts.endpoints[i]}{path}: bad answer {e}") from None
        raise StoreUnavailable(last)


def _detail(e: Exception) -> str:
    text = getattr(e, "detail_text", None) or str(e) or type(e).__name__
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        d = json.loads(text)
        text = d.get("message") or d.get("error") or text
    return str(text).strip().splitlines()[0][:200]


def _is_token_error(e: Exception) -> bool:
    text = _detail(e)
    return "invalid auth token" in text or "user name is empty" in text


# --- the store ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberView:
    record: MemberRecord
    last_seen_s: float  # seconds since its last keepalive, on the store's clock
    ttl_s: float  # it drops out of the fleet view after this


@dataclass(frozen=True)
class Snapshot:
    revision: int
    events: list[Put]


class FleetStore:
    """Bounded request/response calls to the fleet's store. Thread-safe."""

    def __init__(self, opts: FleetOptions, clock: Callable[[], float] = time.monotonic):
        self.opts, self.keys, self.clock = opts, Keys(opts.cluster), clock
        self._local = threading.local()
        self._conns: list[_Conn] = []
        self._lock = threading.Lock()
        self._tokens: dict[int, str] = {}
        self._auth_lock = threading.Lock()
        self.leases = LeasePool()
        self._member_lease: int | None = None
        self._member_value: bytes | None = None

    def conn(self) -> _Conn:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = _Conn(self.opts, self._tokens, self._auth_lock)
            with self._lock:
                self._conns.append(c)
        return c

    def traffic(self) -> tuple[int, int, int]:
        """(requests, bytes sent, bytes received) of every thread's calls (JSON bodies)."""
        with self._lock:
            conns = list(self._conns)
        return (
            sum(c.requests for c in conns),
            sum(c.bytes_out for c in conns),
            sum(c.bytes_in for c in conns),
        )

    def call(self, path: str, body: dict, deadline: float | None = None) -> dict:
        return self.conn().call(path, body, deadline)

    # -- leases --------------------------------------------------------------------------

    def _lease(self, need_s: float, deadline: float) -> int:
        now = self.clock()
        with self._lock:
            lease_id = self.leases.pick(need_s, now)
        if lease_id is not None:
            return lease_id
        ttl = self.leases.ttl_for(need_s)
        res = self.call("/lease/grant", {"TTL": ttl, "ID": 0}, deadline)
        lease_id = int(res["ID"])
        with self._lock:
            self.leases.add(lease_id, ttl, now)
        return lease_id

    def _txn(self, txn: dict, deadline: float, lease_id: int | None) -> dict:
        try:
            return self.call("/kv/txn", txn, deadline)
        except StoreDenied as e:
            if lease_id is not None and "lease not found" in str(e):
                with self._lock:
                    self.leases.forget(lease_id)
            raise

    # -- knocks ----------------------------------------------------------------------------

    def claim(self, claim_id: str, claim: ClaimRecord, horizon_s: float) -> ClaimResult:
        return self.claim_and_grant(claim_id, claim, (), horizon_s)

    def claim_and_grant(
        self,
        claim_id: str,
        claim: ClaimRecord,
        grants: Sequence[GrantRecord],
        horizon_s: float,
        deadline: float | None = None,
    ) -> ClaimResult:
        """Create claims/<id> if absent and, in the same transaction, the knock's grants, all
        on one lease covering the replay horizon and the longest window. CLAIMED, REPLAY or
        UNAVAILABLE (never raises for the store's state; StoreDenied for permissions)."""
        deadline = self.clock() + self.opts.timeout_s if deadline is None else deadline
        ckey = self.keys.claim(claim_id)
        need = max([horizon_s, *(g.remaining_s for g in grants)])
        for attempt in (0, 1):
            try:
                lease_id = self._lease(need, deadline)
                ops = [_put(ckey, encode_claim(claim), lease_id)]
                ops += [
                    _put(
                        self.keys.grant(g.ip, g.proto, g.port, claim_id), encode_grant(g), lease_id
                    )
                    for g in grants
                ]
                txn = {
                    "compare": [
                        {
                            "key": _b64(ckey),
                            "result": "EQUAL",
                            "target": "CREATE",
                            "create_revision": 0,
                        }  # fmt: skip
                    ],
                    "success": ops,
                    "failure": [{"request_range": {"key": _b64(ckey)}}],
                }
                res = self._txn(txn, deadline, lease_id)
            except StoreUnavailable:
                return ClaimResult.UNAVAILABLE
            except StoreDenied as e:
                if attempt == 0 and "lease not found" in str(e):
                    continue  # a pooled lease expired early (leader change): a new one
                raise
            if res.get("succeeded"):
                return ClaimResult.CLAIMED
            # The claim exists. Ours, from a try whose answer was lost? Then it is claimed.
            kvs = res.get("responses", [{}])[0].get("response_range", {}).get("kvs", [])
            if kvs:
                held = decode_claim(_unb64(kvs[0].get("value", "")))
                if held == claim:
                    return ClaimResult.CLAIMED
            return ClaimResult.REPLAY
        return ClaimResult.UNAVAILABLE

    def publish(self, grants: Sequence[GrantRecord], origin_id: str) -> None:
        """Put grants (operator or journal) on one lease as long as the longest."""
        deadline = self.clock() + self.opts.operator_timeout_s
        lease_id = self._lease(max(g.remaining_s for g in grants), deadline)
        ops = [
            _put(self.keys.grant(g.ip, g.proto, g.port, origin_id), encode_grant(g), lease_id)
            for g in grants
        ]
        self._txn({"compare": [], "success": ops, "failure": []}, deadline, lease_id)

    def allow(
        self,
        ip: IPAddress,
        proto: str | None,
        port: int,
        seconds: float,
        principal: str,
        random16hex: str,
    ) -> str:
        """An operator's fleet-wide grant; returns its key."""
        origin_id = new_operator_id(random16hex)
        g = GrantRecord(ip, proto, port, float(seconds), f"operator:{principal}", self.opts.member)
        self.publish([g], origin_id)
        return self.keys.grant(ip, proto, port, origin_id)

    # -- revocation ------------------------------------------------------------------------

    def _delete_prefixes(self, prefixes: Sequence[str]) -> int:
        ops = [
            {"request_delete_range": {"key": _b64(p), "range_end": _b64(_prefix_end(p))}}
            for p in prefixes
        ]
        deadline = self.clock() + self.opts.operator_timeout_s
        res = self.call("/kv/txn", {"compare": [], "success": ops, "failure": []}, deadline)
        return sum(
            int(r.get("response_delete_range", {}).get("deleted", 0))
            for r in res.get("responses", [])
        )

    def revoke(self, ip: IPAddress, proto: str | None = None, port: int | None = None) -> int:
        """Delete the grants of ip (port None: every grant of ip) on every gate; returns how
        many entries went."""
        if port is None:
            return self._delete_prefixes(self.keys.address_prefixes(ip))
        return self._delete_prefixes(self.keys.tuple_prefixes(ip, proto, port))

    def revoke_all(self) -> int:
        return self._delete_prefixes([self.keys.grants])

    # -- listing ---------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Every key of the cluster at one revision, with each value's time in the store
        (from its lease: granted TTL - TTL left) so a late reader computes what remains."""
        deadline = self.clock() + self.opts.operator_timeout_s
        root = self.keys.root
        res = self.call(
            "/kv/range", {"key": _b64(root), "range_end": _b64(_prefix_end(root))}, deadline
        )
        revision = int(res["header"]["revision"])
        leases: dict[str, tuple[float, float] | None] = {}
        events = []
        for kv in res.get("kvs", []):
            key = _unb64(kv["key"]).decode(errors="replace")
            lease = kv.get("lease")
            elapsed, left = 0.0, None
            if lease and not key.startswith(self.keys.members):
                if lease not in leases:
                    ttl = self.call("/lease/timetolive", {"ID": int(lease)}, deadline)
                    t, granted = int(ttl.get("TTL", -1)), int(ttl.get("grantedTTL", 0))
                    leases[lease] = None if t < 0 else (float(granted - t), float(t))
                if leases[lease] is None:
                    continue  # expired between the range and now
                elapsed, left = leases[lease]
            value = _unb64(kv.get("value", ""))
            events.append(Put(key, value, int(kv.get("mod_revision", 0)), elapsed, left))
        return Snapshot(revision, events)

    # -- members ---------------------------------------------------------------------------

    def heartbeat(self, rec: MemberRecord) -> None:
        """Keep members/<name> alive (and current): raises StoreUnavailable/StoreDenied."""
        key, value = self.keys.member(rec.name), encode_member(rec)
        if self._member_lease is not None:
            res = self.call("/lease/keepalive", {"ID": self._member_lease})
            if int(res.get("result", {}).get("TTL", -1)) <= 0:
                self._member_lease = None  # expired while we were cut off: join again
        if self._member_lease is None:
            res = self.call("/lease/grant", {"TTL": self.opts.member_ttl_s, "ID": 0})
            self._member_lease, self._member_value = int(res["ID"]), None
        if value != self._member_value:
            self.call("/kv/put", _put(key, value, self._member_lease)["request_put"])
            self._member_value = value

    def leave(self) -> None:
        """Drop out of the fleet view now (the lease and members/<name> go)."""
        if self._member_lease is not None:
            with contextlib.suppress(SpagateError):
                self.call("/lease/revoke", {"ID": self._member_lease})
            self._member_lease = None

    def members(self) -> list[MemberView]:
        deadline = self.clock() + self.opts.operator_timeout_s
        p = self.keys.members
        res = self.call("/kv/range", {"key": _b64(p), "range_end": _b64(_prefix_end(p))}, deadline)
        out = []
        for kv in res.get("kvs", []):
            rec = decode_member(_unb64(kv.get("value", "")))
            if isinstance(rec, str) or not kv.get("lease"):
                continue
            ttl = self.call("/lease/timetolive", {"ID": int(kv["lease"])}, deadline)
            t, granted = int(ttl.get("TTL", -1)), int(ttl.get("grantedTTL", 0))
            if t >= 0:
                out.append(MemberView(rec, float(granted - t), float(t)))
        return sorted(out, key=lambda m: m.record.name)


def _put(key: str, value: bytes, lease_id: int | None) -> dict:
    put = {"key": _b64(key), "value": _b64(value)}
    if lease_id is not None:
        put["lease"] = lease_id
    return {"request_put": put}


# --- the long-running part -----------------------------------------------------------------------


def _event(ev: dict) -> Put | Delete:
    kv = ev["kv"]
    key = _unb64(kv["key"]).decode(errors="replace")
    rev = int(kv.get("mod_revision", 0))
    if ev.get("type") == "DELETE":
        return Delete(key, rev)
    return Put(key, _unb64(kv.get("value", "")), rev)


class FleetSync:
    """Watch, heartbeat and outage journal of one gate. start() returns once the fleet's
    grants are in the local maps (or the initial sync timed out: see admit())."""

    def __init__(
        self,
        store: FleetStore,
        mirror: Mirror,
        gate: LocalGate,
        member: Callable[[], MemberRecord],
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ):
        self.store, self.mirror, self.gate, self.member = store, mirror, gate, member
        self.opts = store.opts
        self.clock, self.wall_ms = clock, wall_ms
        self.health = StoreHealth(retry_s=self.opts.heartbeat_s)
        self.journal = OutageJournal()
        self.counts: Counter[str] = Counter()
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # health and journal (intake threads and ours)
        self._threads: list[threading.Thread] = []
        self._resp = None
        self._need_resync = True
        self._started = 0.0
        self._pool = ThreadPoolExecutor(self.opts.claim_workers, thread_name_prefix="fleet-claim")
        self._pending = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> bool:
        """Load the fleet's state, then watch and heartbeat in threads. True when synced
        (else the watch thread keeps trying; admit() says what the gate may do meanwhile)."""
        self._started = self.clock()
        try:
            self._resync()
        except SpagateError:
            pass  # the store is away: the caller says so; the watch thread keeps trying
        except Exception as e:  # never a traceback at start: one line, then go on (fallback)
            self._log("error", f"fleet: initial sync failed: {type(e).__name__}: {_detail(e)}")
        for name, fn in (("fleet-watch", self._watch_loop), ("fleet-beat", self._beat_loop)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self.synced.is_set()

    def stop(self, leave: bool = True) -> None:
        self._stop.set()
        self._abort_stream()
        for t in self._threads:
            t.join(timeout=self.opts.watch_idle_s + 2)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if leave:
            self.store.leave()

    def admit(self) -> bool:
        """May the gate admit knocks yet? After the first sync; or, with fallback local, once
        the store stayed unreachable for initial_sync_s (journalled, published later)."""
        if self.synced.is_set():
            return True
        waited = self.clock() - self._started
        return self.opts.fallback is Fallback.LOCAL and waited >= self.opts.initial_sync_s

    # -- the knock path (the worker's intake) ------------------------------------------------

    def knock(
        self,
        claim_id: str,
        claim: ClaimRecord,
        grants: Sequence[GrantRecord],
        horizon_s: float,
    ) -> KnockDecision:
        """Claim a locally verified knock fleet-wide and publish its grants; what to do with it
        locally. Bounded by timeout_s; while the store is down, no call at all (fallback)."""
        if not claim.token:
            claim = dataclasses.replace(claim, token=os.urandom(8).hex())
        now = self.clock()
        with self._lock:
            try_it = self.health.should_try(now) and self.synced.is_set()
            if try_it:
                self.health.tried(now)
        result = ClaimResult.UNAVAILABLE
        if try_it:
            try:
                result = self.store.claim_and_grant(claim_id, claim, grants, horizon_s)
            except StoreDenied as e:
                self._log("error", f"fleet: claim refused by the store: {e}")
            self._health(result is not ClaimResult.UNAVAILABLE, "claim")
        decision = decide_knock(result, self.opts.fallback)
        self.counts[decision.reason] += 1
        if decision.journal:
            with self._lock:
                self.journal.add(JournalEntry(claim_id, claim, tuple(grants), now, horizon_s))
        return decision

    def knock_async(
        self,
        claim_id: str,
        claim: ClaimRecord,
        grants: Sequence[GrantRecord],
        horizon_s: float,
        done: Callable[[KnockDecision], None],
    ) -> None:
        """knock() in a small pool, so intake never waits for the store; done() is called
        from a pool thread. Past claim_queue waiting claims, the answer is "unavailable"."""
        with self._lock:
            full = self._pending >= self.opts.claim_queue
            if not full:
                self._pending += 1
        if full:
            self.counts["fleet-queue-full"] += 1
            d = decide_knock(ClaimResult.UNAVAILABLE, self.opts.fallback)
            if d.journal:
                with self._lock:
                    entry = JournalEntry(claim_id, claim, tuple(grants), self.clock(), horizon_s)
                    self.journal.add(entry)
            done(d)
            return

        def run() -> None:
            try:
                d = self.knock(claim_id, claim, grants, horizon_s)
            finally:
                with self._lock:
                    self._pending -= 1
            done(d)

        self._pool.submit(run)

    # -- internals -------------------------------------------------------------------------

    def _log(self, level: str, msg: str) -> None:
        getattr(log, level)(msg)

    def _health(self, ok: bool, what: str) -> None:
        now = self.clock()
        with self._lock:
            changed = self.health.succeeded(now) if ok else self.health.failed(now)
        if changed and ok:
            self._log("warning", f"fleet: store reachable again ({what})")
        elif changed:
            self.counts["fleet-store-down"] += 1
            self._log(
                "error",
                f"fleet: store unreachable ({what}); fallback {self.opts.fallback.value}: "
                + ("knocks admitted locally and journalled"
                   if self.opts.fallback is Fallback.LOCAL else "knocks refused"),
            )  # fmt: skip

    def _act(self, actions) -> None:
        for a in actions:
            try:
                if isinstance(a, Allow):
                    self.gate.allow(a.ip, a.proto, a.port, a.remaining_s)
                elif isinstance(a, Revoke):
                    self.gate.revoke(a.ip, a.proto, a.port, flows=a.flows)
                elif isinstance(a, Remember):
                    self.gate.remember(a.kind, a.key, a.remaining_s)
                self.counts[f"action-{type(a).__name__.lower()}"] += 1
            except Exception as e:  # a map error must never stop the watch
                self.counts["action-error"] += 1
                self._log("error", f"fleet: {type(a).__name__} {a}: {type(e).__name__}: {e}")

    def _resync(self) -> None:
        snap = self.store.snapshot()
        actions = self.mirror.resync(snap.events, snap.revision, self.clock(), self.wall_ms())
        self._act(actions)
        self._need_resync = False
        self.counts["resync"] += 1
        self.synced.set()
        self._health(True, "list")

    def _abort_stream(self) -> None:
        resp = self._resp
        if resp is None:
            return
        with contextlib.suppress(Exception):
            s = socket.fromfd(resp.raw._fp.fileno(), socket.AF_INET, socket.SOCK_STREAM)
            s.shutdown(socket.SHUT_RDWR)
            s.close()
        with contextlib.suppress(Exception):
            resp.close()

    def _watch_loop(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                if self._need_resync:
                    self._resync()
                self._watch_once()
                backoff = 0.1
            except SpagateError as e:
                if not self._stop.is_set():
                    self._log("warning", f"fleet: watch: {e}")
            except Exception as e:  # requests/urllib3 errors on a broken stream
                if "Read timed out" in str(e):  # silent for watch_idle_s: reopen, quietly
                    self.counts["watch-idle"] += 1
                    backoff = 0.0
                elif not self._stop.is_set():
                    self._log("warning", f"fleet: watch: {type(e).__name__}: {_detail(e)}")
            self.counts["watch-reconnect"] += 1
            self._stop.wait(backoff)
            backoff = min(max(backoff, 0.05) * 2, 2.0)

    def _watch_once(self) -> None:
        """One watch stream from the mirror's revision + 1 until it breaks or stays silent."""
        conn = self.store.conn()
        root = self.store.keys.root
        body = {
            "create_request": {
                "key": _b64(root),
                "range_end": _b64(_prefix_end(root)),
                "start_revision": self.mirror.revision + 1,
                "progress_notify": True,
            }
        }
        n = len(conn.clients)
        i = conn.preferred
        conn.preferred = (i + 1) % n  # the next attempt tries another member
        c = conn.clients[i]
        # hasleader: the member ends the stream when it loses its leader (no quorum)
        headers = {"Grpc-Metadata-hasleader": "true"}
        try:
            token = conn.auth(i)
        except conn.exc.Etcd3Exception as e:
            raise StoreUnavailable(f"watch: auth: {_detail(e)}") from None
        if token:
            headers["Authorization"] = token
        resp = c.session.post(
            c.get_url("/watch"),
            data=json.dumps(body),
            stream=True,
            headers=headers,
            timeout=(self.opts.timeout_s, self.opts.watch_idle_s),
        )
        self._resp = resp
        try:
            if resp.status_code != 200:
                raise StoreUnavailable(f"watch: HTTP {resp.status_code} {resp.text[:200]}")
            conn.preferred = i
            dec, buf = json.JSONDecoder(), ""
            for chunk in resp.iter_content(chunk_size=None):
                if self._stop.is_set():
                    return
                self.counts["watch-bytes"] += len(chunk)
                buf += chunk.decode()
                while True:
                    buf = buf.lstrip()
                    if not buf:
                        break
                    try:
                        msg, end = dec.raw_decode(buf)
                    except ValueError:
                        break  # incomplete: wait for more
                    buf = buf[end:]
                    self._on_watch(msg)
                    if self._need_resync:
                        return
        finally:
            self._resp = None
            with contextlib.suppress(Exception):
                resp.close()

    def _on_watch(self, msg: dict) -> None:
        if "error" in msg:
            text = str(msg["error"].get("message", msg["error"]))
            if "auth token" in text:
                with self.store._auth_lock:
                    self.store._tokens.clear()  # expired: authenticate again on reconnect
            raise StoreUnavailable(f"watch: {text}")
        res = msg.get("result", {})
        if res.get("canceled"):
            if int(res.get("compact_revision", 0) or 0) > 0:
                self.counts["watch-compacted"] += 1
                self._need_resync = True  # history we missed is gone: list again
                return
            raise StoreUnavailable(f"watch canceled: {res.get('cancel_reason', '')}")
        if res.get("created"):
            self._health(True, "watch")
            return
        events = [_event(e) for e in res.get("events", [])]
        if events:
            actions = self.mirror.apply(events, self.clock(), self.wall_ms())
            self._act(actions)
            self.counts["watch-events"] += len(events)
        rev = int(res.get("header", {}).get("revision", 0) or 0)
        if rev and not events:  # progress notification: nothing up to rev
            self.mirror.revision = max(self.mirror.revision, rev)

    def _beat_loop(self) -> None:
        while not self._stop.is_set():
            ok = True
            try:
                self.store.heartbeat(self.member())
            except StoreDenied as e:
                self._log("error", f"fleet: heartbeat refused: {e}")
            except SpagateError:
                ok = False
            was_down = not self.health.up
            self._health(ok, "heartbeat")
            if ok and (was_down or len(self.journal)):
                self._flush_journal()
            self._stop.wait(self.opts.heartbeat_s)

    def _flush_journal(self) -> None:
        """Claim and publish what was admitted while the store was away."""
        with self._lock:
            due = self.journal.due(self.clock())
        for r in due:
            try:
                res = self.store.claim_and_grant(r.claim_id, r.claim, r.grants, r.horizon_s)
            except StoreDenied as e:
                self._log("error", f"fleet: journal: {e}")
                res = ClaimResult.UNAVAILABLE
            if res is ClaimResult.UNAVAILABLE:
                return  # still away: keep the rest for the next heartbeat
            self.counts[
                "journal-published" if res is ClaimResult.CLAIMED else "journal-replay"
            ] += 1
            if res is ClaimResult.REPLAY:
                self._log("warning", f"fleet: {r.claim_id} was also admitted elsewhere meanwhile")
            with self._lock:
                self.journal.done(r.claim_id)


def horizon_from_until(replay_until_ms: int, now_ms: int) -> float:
    """The Verifier's replay_until (wall ms) as a horizon in seconds from now."""
    return max(0.0, (replay_until_ms - now_ms) / 1000)


__all__ = [
    "FleetOptions",
    "FleetStore",
    "FleetSync",
    "LocalGate",
    "MemberView",
    "Snapshot",
    "StoreDenied",
    "StoreUnavailable",
    "horizon_from_until",
]
