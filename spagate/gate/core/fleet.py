"""Fleet mode, sans-IO: what a fleet of gates writes into the shared store and what a gate does
with what it reads back. Bytes and clocks in, typed records and actions out; no sockets here.

Key layout, all under `/spagate/<cluster>/` (docs/fleet.md):

    members/<name>                                   lease: liveness (kept alive by the member)
    claims/<claim-id>                                create-if-absent; lease >= replay horizon
    grants/k/<addr>/<proto>/<port>/<claim-id>        a knock's grant; same lease as its claim
    grants/o/<addr>/<proto>/<port>/<op-id>           an operator's grant; lease = its window

claim-id: `s.<hex nonce>` (sparoid) or `f.<hex sha256 of the packet>` (fwknop). `<proto>` is
tcp, udp or any (port 0: every protected port), `<addr>` the canonical text of the address.
A knock's claim and its grants are written in ONE transaction, on one lease that covers both
the replay horizon and the window, so a knock grant never outlives its claim.

Values are compact JSON. Times are remaining seconds at write time, never timestamps: clock
domains differ between hosts. A value or key that fails validation is ignored and counted in
`Mirror.ignored[reason]`; nothing read from the store can open a gate for an address unless
it names its origin (a claim whose packet re-verifies with this gate's keys, or an operator)
and passes every bound below.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address, ip_address

from spagate.gate.core.config import GateConfig, Port
from spagate.net import unmap
from spagate.protocol import Decoded, decode

IPAddress = IPv4Address | IPv6Address

SCHEMA = 1
ROOT = "/spagate/"
MAX_VALUE = 4096  # bytes; a larger value is ignored before it is parsed
MAX_KNOCK_WINDOW_S = 86_400.0  # no knock grant is believed beyond a day, whatever it says
MAX_OPERATOR_WINDOW_S = 366 * 86_400.0  # `allow --for` is capped at a year
# Live nonces (per kind) the fleet may have one gate remember: far below the Verifier's replay
# cache (1,000,000) and the kernel's replay map (65,536, persistence), so a flood of claims
# can never make this gate refuse its own fresh knocks (REPLAY_FULL) nor push its own nonces
# out. At sparoid's 2 x max-skew that is > 1,600 knocks/s fleet-wide (default skew 5 s).
MAX_REMEMBERED = 16_384
_CLUSTER_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_MEMBER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_CLAIM_RE = re.compile(r"(s\.[0-9a-f]{32}|f\.[0-9a-f]{64})")
_OP_ID_RE = re.compile(r"op\.[0-9a-f]{16}")
PROTO_TEXT = ("tcp", "udp", "any")


class FleetError(ValueError):
    """A fleet setting or record that cannot be used (one-line reason)."""


# --- names and keys ----------------------------------------------------------------------------


def check_cluster_name(name: str) -> str:
    if not _CLUSTER_RE.fullmatch(name or ""):
        raise FleetError(f"cluster name {name!r}: use 1-63 of a-z 0-9 _ . - (first a-z or 0-9)")
    return name


def check_member_name(name: str) -> str:
    if not _MEMBER_RE.fullmatch(name or ""):
        raise FleetError(f"member name {name!r}: use 1-63 of A-Z a-z 0-9 _ . -")
    return name


def parse_cluster(text: str) -> tuple[str, ...]:
    """`etcd://h1:2379,h2:2379` (plain HTTP), `etcds://h1:2379,...` (TLS) or a comma list of
    http(s)://host:port URLs -> the endpoint URLs. IPv6 hosts in brackets."""
    text = text.strip()
    m = re.fullmatch(r"(etcds?)://(.+)", text)
    if m:
        scheme = "https" if m.group(1) == "etcds" else "http"
        urls = [f"{scheme}://{h.strip()}" for h in m.group(2).split(",")]
    else:
        urls = [u.strip() for u in text.split(",")]
    out = []
    for url in urls:
        if not re.fullmatch(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}", url):
            raise FleetError(f"cluster endpoint {url!r}: expected host:port (etcd://h1:2379,...)")
        if not 1 <= int(url.rsplit(":", 1)[1]) <= 65535:
            raise FleetError(f"cluster endpoint {url!r}: port out of range")
        out.append(url)
    if len({u.split("://")[0] for u in out}) != 1:
        raise FleetError("cluster endpoints mix http and https")
    return tuple(out)


def claim_id_sparoid(nonce: bytes) -> str:
    return "s." + bytes(nonce).hex()


def claim_id_fwknop(packet: bytes) -> str:
    """fwknop's own replay key: the SHA-256 of the packet as received."""
    return "f." + hashlib.sha256(bytes(packet)).hexdigest()


def replay_key(claim_id: str) -> tuple[str, bytes]:
    """("sparoid", nonce) or ("fwknop", digest) from a claim id (already validated)."""
    kind, hexpart = claim_id.split(".", 1)
    return ("sparoid" if kind == "s" else "fwknop"), bytes.fromhex(hexpart)


def new_operator_id(random16hex: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{16}", random16hex):
        raise FleetError("operator id: 16 lowercase hex digits")
    return "op." + random16hex


def proto_text(proto: str | None) -> str:
    return "any" if proto is None else proto


@dataclass(frozen=True)
class Keys:
    """Every key of one cluster. Prefixes end with '/'."""

    cluster: str

    def __post_init__(self) -> None:
        check_cluster_name(self.cluster)

    @property
    def root(self) -> str:
        return f"{ROOT}{self.cluster}/"

    @property
    def members(self) -> str:
        return self.root + "members/"

    @property
    def claims(self) -> str:
        return self.root + "claims/"

    @property
    def grants(self) -> str:
        return self.root + "grants/"

    @property
    def knock_grants(self) -> str:
        return self.grants + "k/"

    @property
    def operator_grants(self) -> str:
        return self.grants + "o/"

    def member(self, name: str) -> str:
        return self.members + check_member_name(name)

    def claim(self, claim_id: str) -> str:
        if not _CLAIM_RE.fullmatch(claim_id):
            raise FleetError(f"claim id {claim_id!r}")
        return self.claims + claim_id

    def grant(self, ip: IPAddress, proto: str | None, port: int, origin_id: str) -> str:
        ip = usable_address(str(ip))
        if isinstance(ip, str):
            raise FleetError(f"grant address: {ip}")
        kind = (
            "k" if _CLAIM_RE.fullmatch(origin_id) else "o" if _OP_ID_RE.fullmatch(origin_id) else ""
        )
        if not kind:
            raise FleetError(f"grant origin id {origin_id!r}")
        return f"{self.grants}{kind}/{ip.compressed}/{proto_text(proto)}/{int(port)}/{origin_id}"

    def address_prefixes(self, ip: IPAddress) -> tuple[str, str]:
        """The two prefixes holding every grant of one address (knock and operator)."""
        a = ip.compressed
        return f"{self.knock_grants}{a}/", f"{self.operator_grants}{a}/"

    def tuple_prefixes(self, ip: IPAddress, proto: str | None, port: int) -> tuple[str, str]:
        a, p = ip.compressed, proto_text(proto)
        return f"{self.knock_grants}{a}/{p}/{port}/", f"{self.operator_grants}{a}/{p}/{port}/"


# --- addresses ---------------------------------------------------------------------------------

_BROADCAST = IPv4Address("255.255.255.255")


def usable_address(text: str) -> IPAddress | str:
    """The address a grant may open for, or the reason it may not: it must be one unicast host
    in canonical text form (no 0.0.0.0 or ::, no multicast or broadcast, no loopback, no
    IPv4-mapped IPv6: IPv4 is written as IPv4, so one address has one key)."""
    try:
        ip = ip_address(text)
    except ValueError:
        return "not an address"
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_multicast or ip == _BROADCAST:
        return "multicast or broadcast"
    if ip.is_loopback:
        return "loopback"
    if unmap(ip) != ip:  # one address, one key: the store holds IPv4 as IPv4
        return "IPv4-mapped IPv6"
    if ip.compressed != text:
        return "not in canonical form"
    return ip


# --- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimRecord:
    gate: str  # the member that claimed it
    kind: str  # "sparoid" or "fwknop"
    packet: bytes = b""  # the raw SPA packet, so every gate can re-verify it with its own keys
    src: IPAddress | None = None  # the packet's source as the claiming gate saw it
    horizon_s: float = 0.0  # replay horizon left at write time
    token: str = ""  # random per admission: tells our own claim (a lost answer) from a replay


@dataclass(frozen=True)
class GrantRecord:
    ip: IPAddress
    proto: str | None  # None: every protocol (port 0)
    port: int  # 0: every protected port (of proto)
    remaining_s: float  # at write time
    origin: str  # "claim:<claim-id>" or "operator:<principal>"
    gate: str  # the member that wrote it


@dataclass(frozen=True)
class MemberRecord:
    name: str
    state: str  # attached, detached, degraded, starting, stopping
    interfaces: tuple[str, ...] = ()
    fallback: str = "local"
    store: str = "up"  # what this member thinks of the store: up, down
    version: str = ""


MEMBER_STATES = ("attached", "detached", "degraded", "starting", "stopping")


def _dump(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def encode_claim(rec: ClaimRecord) -> bytes:
    d = {"v": SCHEMA, "gate": rec.gate, "kind": rec.kind, "hz": round(float(rec.horizon_s), 3)}
    if rec.packet:
        d["pkt"] = base64.b64encode(rec.packet).decode()
    if rec.src is not None:
        d["src"] = rec.src.compressed
    if rec.token:
        d["tok"] = rec.token
    return _dump(d)


def encode_grant(rec: GrantRecord) -> bytes:
    return _dump(
        {
            "v": SCHEMA,
            "rem": round(float(rec.remaining_s), 3),
            "origin": rec.origin,
            "gate": rec.gate,
        }
    )


def encode_member(rec: MemberRecord) -> bytes:
    return _dump(
        {
            "v": SCHEMA,
            "name": rec.name,
            "state": rec.state,
            "ifaces": list(rec.interfaces),
            "fallback": rec.fallback,
            "store": rec.store,
            "version": rec.version,
        }
    )


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number here")


def _finite(v: object) -> float | None:
    """v as a finite float, or None (bool, not a number, inf/nan, an int beyond a float)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _load(raw: bytes) -> dict | str:
    if len(raw) > MAX_VALUE:
        return "value-too-large"
    try:
        # NaN/Infinity refused; deep nesting raises RecursionError; 1e999 is checked by _finite
        d = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "bad-value"
    if not isinstance(d, dict) or d.get("v") != SCHEMA:
        return "bad-value"
    return d


def _str(d: dict, name: str, pattern: re.Pattern | None = None) -> str | None:
    v = d.get(name)
    if not isinstance(v, str) or (pattern is not None and not pattern.fullmatch(v)):
        return None
    return v


def decode_claim(raw: bytes) -> ClaimRecord | str:
    d = _load(raw)
    if isinstance(d, str):
        return d
    gate, kind = _str(d, "gate", _MEMBER_RE), d.get("kind")
    if gate is None or kind not in ("sparoid", "fwknop"):
        return "bad-value"
    packet = b""
    if "pkt" in d:
        if not isinstance(d["pkt"], str):
            return "bad-value"
        try:
            packet = base64.b64decode(d["pkt"], validate=True)
        except (binascii.Error, ValueError):
            return "bad-value"
    src = None
    if "src" in d:
        src = usable_address(d["src"]) if isinstance(d["src"], str) else "bad"
        if isinstance(src, str):
            return "bad-value"
    hz = _finite(d.get("hz", 0.0))
    if hz is None or not 0 <= hz <= MAX_KNOCK_WINDOW_S:
        return "bad-value"
    tok = d.get("tok", "")
    if not isinstance(tok, str) or not re.fullmatch(r"[0-9a-f]{0,32}", tok):
        return "bad-value"
    return ClaimRecord(gate, kind, packet, src, hz, tok)


def _parse_grant_key(keys: Keys, key: str) -> tuple[str, IPAddress, str | None, int, str] | str:
    """(kind k|o, ip, proto, port, origin id) of a grant key, or the reason it is unusable."""
    rest = key[len(keys.grants) :].split("/")
    if len(rest) != 5 or rest[0] not in ("k", "o"):
        return "bad-key"
    kind, addr, proto, port, origin_id = rest
    ip = usable_address(addr)
    if isinstance(ip, str):
        return "unusable-address"
    if proto not in PROTO_TEXT or not re.fullmatch(r"0|[1-9][0-9]{0,4}", port):
        return "bad-key"
    n = int(port)
    if n > 65535 or (proto == "any" and n != 0):
        return "bad-key"
    if not (_CLAIM_RE if kind == "k" else _OP_ID_RE).fullmatch(origin_id):
        return "bad-key"
    return kind, ip, (None if proto == "any" else proto), n, origin_id


def decode_grant(keys: Keys, key: str, raw: bytes) -> GrantRecord | str:
    parsed = _parse_grant_key(keys, key)
    if isinstance(parsed, str):
        return parsed
    kind, ip, proto, port, origin_id = parsed
    d = _load(raw)
    if isinstance(d, str):
        return d
    rem, origin, gate = _finite(d.get("rem")), _str(d, "origin"), _str(d, "gate", _MEMBER_RE)
    if rem is None or gate is None:
        return "bad-value"
    if origin is None or not origin:
        return "no-origin"
    if kind == "k" and origin != f"claim:{origin_id}":
        return "no-origin"  # a knock grant names exactly the claim in its key
    if kind == "o" and not re.fullmatch(r"operator:[\x21-\x7e]{1,64}", origin):
        return "no-origin"
    return GrantRecord(ip, proto, port, rem, origin, gate)


def decode_member(raw: bytes) -> MemberRecord | str:
    d = _load(raw)
    if isinstance(d, str):
        return d
    name, state = _str(d, "name", _MEMBER_RE), d.get("state")
    ifaces = d.get("ifaces", [])
    if name is None or state not in MEMBER_STATES or not isinstance(ifaces, list):
        return "bad-value"
    if not all(isinstance(i, str) and len(i) < 16 for i in ifaces):
        return "bad-value"
    fallback, store, version = (d.get(n, "") for n in ("fallback", "store", "version"))
    if not all(isinstance(v, str) for v in (fallback, store, version)):
        return "bad-value"
    return MemberRecord(name, state, tuple(ifaces), fallback, store, version[:32])


# --- re-verification -----------------------------------------------------------------------------


@dataclass(frozen=True)
class KnockFacts:
    """What a re-verified SPA packet authorizes on THIS gate."""

    claim_id: str  # derived from the packet (nonce or digest), never taken from the store
    ip: IPAddress | None  # None: the message names no address (`--ip source`)
    ports: tuple[Port, ...] | None  # the identity's ports; None: every protected port
    window_s: float  # this gate's window for the identity
    sent_ms: int  # the client's timestamp (wall clock, unix ms)
    max_skew_ms: int


# (kind, packet) -> facts, or the reason the packet does not verify here
Reverifier = Callable[[str, bytes], "KnockFacts | str"]


def sparoid_reverifier(config: GateConfig) -> Reverifier:
    """Re-verify a peer's sparoid packet with this gate's identities: HMAC (constant time) and
    decryption by the protocol core, no replay cache (the packet was claimed exactly once)."""
    keyring = [i.keys for i in config.identities]

    def reverify(kind: str, packet: bytes) -> KnockFacts | str:
        if kind != "sparoid":
            return f"no {kind} verifier"
        res = decode(packet, keyring)
        if type(res) is not Decoded:
            return f"packet: {res.reason.value}"
        msg, ident = res.message, config.identities[res.key_index]
        ip = unmap(msg.ip)
        return KnockFacts(
            claim_id_sparoid(msg.nonce),
            None if ip.is_unspecified else ip,
            ident.ports,
            float(config.window(ident)),
            msg.ts_ms,
            config.max_skew_ms,
        )

    return reverify


# --- what a gate does with what it reads ---------------------------------------------------------


@dataclass(frozen=True)
class Allow:
    """Open (extend only: never shorten a longer window) ip/proto/port for remaining_s."""

    ip: IPAddress
    proto: str | None
    port: int
    remaining_s: float


# A grant deleted with more than this left was revoked (by an operator, fleet-wide); one
# deleted later simply ended (its lease ran out)
REVOKED_BEFORE_END_S = 1.0


@dataclass(frozen=True)
class Revoke:
    ip: IPAddress
    proto: str | None
    port: int
    # revoked before its end: cut the UDP flows it let in too (an ended window keeps them, as
    # connections opened in a window keep working)
    flows: bool = False


@dataclass(frozen=True)
class Remember:
    """A nonce/digest claimed somewhere in the fleet: a replay here too, also in an outage."""

    kind: str  # sparoid, fwknop
    key: bytes
    remaining_s: float


Action = Allow | Revoke | Remember


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    revision: int
    elapsed_s: float = 0.0  # time the value has spent in the store (re-list: from its lease)
    lease_s: float | None = None  # remaining lease (re-list only)


@dataclass(frozen=True)
class Delete:
    key: str
    revision: int


Event = Put | Delete


@dataclass(frozen=True)
class Trust:
    """What this gate believes from the store.

    protected: the gate's protected ports. reverify: re-verify each claim's and knock grant's
    packet with this gate's keys (None: trust any writer of the prefix that names an existing
    claim). operator_grants: accept grants/o/ entries (they cannot be re-verified: see
    docs/fleet.md). max_skew_s: this gate's max-skew (how long a sparoid nonce needs
    remembering: until its own timestamp + max-skew). fwknop_max_age_s: this gate's fwknop
    max age (None: no fwknop here, so no fwknop digest to remember). max_remembered: the most
    nonces (per kind) the fleet may have this gate remember at once; past it a claim is not
    remembered (counted remember-full), so the store can never fill the local replay cache.
    """

    protected: frozenset[tuple[str, int]]
    reverify: Reverifier | None = None
    operator_grants: bool = True
    max_knock_window_s: float = MAX_KNOCK_WINDOW_S
    max_operator_window_s: float = MAX_OPERATOR_WINDOW_S
    max_entries: int = 200_000
    max_skew_s: float = 5.0
    fwknop_max_age_s: float | None = None
    max_remembered: int = MAX_REMEMBERED

    @classmethod
    def for_config(cls, config: GateConfig, reverify: bool = True, **kw) -> Trust:
        protected = frozenset((p.proto, p.port) for p in config.protected)
        windows = [config.window(i) for i in config.identities] or [config.open_seconds]
        kw.setdefault("max_knock_window_s", float(max(windows)))
        kw.setdefault("max_skew_s", config.max_skew_ms / 1000)
        if config.fwknop_access:
            kw.setdefault("fwknop_max_age_s", config.fwknop_max_age_ms / 1000)
        return cls(protected, sparoid_reverifier(config) if reverify else None, **kw)


@dataclass
class _Entry:
    grant: GrantRecord
    deadline: float  # local monotonic seconds


@dataclass
class _Remembered:
    """The nonces the fleet had this gate remember that are still live, per kind (bounded)."""

    until: dict[str, float] = field(default_factory=dict)  # claim id -> local deadline
    heap: list[tuple[float, str]] = field(default_factory=list)

    def live(self, claim_id: str, now: float) -> bool:
        return self.until.get(claim_id, -math.inf) > now

    def prune(self, now: float) -> None:
        while self.heap and self.heap[0][0] <= now:
            deadline, cid = heapq.heappop(self.heap)
            if self.until.get(cid) == deadline:
                del self.until[cid]

    def add(self, claim_id: str, deadline: float) -> None:
        self.until[claim_id] = deadline
        heapq.heappush(self.heap, (deadline, claim_id))


@dataclass
class Mirror:
    """This gate's view of the fleet's claims and grants, fed by the watch (apply) or a full
    listing (resync); each returns the actions for the local maps. Single-threaded.

    Every event is taken on its own: one that cannot be used (or that fails in any way) is
    counted in `ignored` and the rest of its batch still applies."""

    keys: Keys
    trust: Trust
    # id -> (record, deadline, facts of its packet re-verified here; None without reverify)
    claims: dict[str, tuple[ClaimRecord, float, KnockFacts | None]] = field(default_factory=dict)
    grants: dict[str, _Entry] = field(default_factory=dict)
    ignored: Counter[str] = field(default_factory=Counter)
    applied: Counter[str] = field(default_factory=Counter)
    revision: int = 0
    _by_tuple: dict[tuple, set[str]] = field(default_factory=dict)  # (ip, proto, port) -> keys
    # knock grant key -> the local deadline it was first opened with; kept across resyncs so
    # neither a re-put nor a re-listing can stretch a knock's window (pruned once past)
    _opened: dict[str, float] = field(default_factory=dict)
    _remembered: dict[str, _Remembered] = field(default_factory=dict)  # kind -> live nonces

    def apply(self, events: Sequence[Event], now: float, now_wall_ms: int) -> list[Action]:
        """One watch response (all events of one or more revisions, in order)."""
        return self._apply(events, now, now_wall_ms, relist=False)

    def resync(self, events: Iterable[Put], revision: int, now: float, now_wall_ms: int):
        """Replace the whole view with a listing taken at `revision` (start, compaction,
        long outage): allow what is live, revoke what vanished while we were not watching."""
        before: dict[tuple, float] = {}  # (ip, proto, port) -> its latest deadline
        for e in self.grants.values():
            t = self._tuple(e.grant)
            before[t] = max(before.get(t, -math.inf), e.deadline)
        self.claims.clear()
        self.grants.clear()
        self._by_tuple.clear()
        out = self._apply(list(events), now, now_wall_ms, relist=True)
        self.revision = max(self.revision, revision)
        after = {self._tuple(e.grant) for e in self.grants.values()}
        gone = sorted(set(before) - after, key=str)
        # revoked while we were not watching, unless it had ended anyway: its flows go too
        out.extend(Revoke(*t, flows=before[t] - now > REVOKED_BEFORE_END_S) for t in gone)
        return out

    def live_grants(self, now: float) -> list[tuple[GrantRecord, float]]:
        return [(e.grant, e.deadline - now) for e in self.grants.values() if e.deadline > now]

    def remembered(self, kind: str, now: float) -> int:
        """How many nonces of kind the fleet has this gate remember now."""
        r = self._remembered.get(kind)
        if r is None:
            return 0
        r.prune(now)
        return len(r.until)

    # -- internals --------------------------------------------------------------------------

    def _apply(self, events, now: float, now_wall_ms: int, relist: bool) -> list[Action]:
        out: list[Action] = []
        # Claims first: a knock's claim and grant share one transaction (one revision).
        for ev in sorted(events, key=lambda e: (e.revision, not self._is_claim(e.key))):
            self.revision = max(self.revision, ev.revision)
            try:
                if isinstance(ev, Put):
                    out.extend(self._put(ev, now, now_wall_ms, relist))
                else:
                    out.extend(self._delete(ev.key, now))
            except Exception:  # a value we did not foresee: it spoils this event only
                self._ignore("bad-event")
        return out

    def _is_claim(self, key: str) -> bool:
        return key.startswith(self.keys.claims)

    @staticmethod
    def _tuple(g: GrantRecord) -> tuple[IPAddress, str | None, int]:
        return (g.ip, g.proto, g.port)

    def _ignore(self, reason: str) -> list[Action]:
        self.ignored[reason] += 1
        return []

    def _put(self, ev: Put, now: float, now_wall_ms: int, relist: bool) -> list[Action]:
        k = self.keys
        if self._is_claim(ev.key):
            return self._claim(ev, now, now_wall_ms)
        if ev.key.startswith(k.grants):
            return self._grant(ev, now, now_wall_ms, relist)
        if ev.key.startswith(k.members):
            return []
        return self._ignore("bad-key")

    def _claim(self, ev: Put, now: float, now_wall_ms: int) -> list[Action]:
        """A claim is remembered (its nonce refused here too) only for as long as its packet
        could still verify here, and only if it is what it says: with re-verification a
        sparoid claim's packet must verify with this gate's keys and carry the claim's nonce;
        an fwknop claim's packet must hash to the claim's id. The writer's `hz` can shorten
        that, never lengthen it; and the number remembered at once is bounded per kind."""
        t = self.trust
        claim_id = ev.key[len(self.keys.claims) :]
        if not _CLAIM_RE.fullmatch(claim_id):
            return self._ignore("bad-key")
        rec = decode_claim(ev.value)
        if isinstance(rec, str):
            return self._ignore(rec)
        kind, nonce = replay_key(claim_id)
        if rec.kind != kind:
            return self._ignore("claim-mismatch")
        if claim_id not in self.claims and len(self.claims) >= t.max_entries:
            return self._ignore("mirror-full")
        facts: KnockFacts | None = None
        if kind == "sparoid":
            if t.reverify is not None:
                if not rec.packet:
                    return self._ignore("no-packet")
                checked = t.reverify(kind, rec.packet)
                if isinstance(checked, str):
                    return self._ignore("claim-reverify-failed")
                if checked.claim_id != claim_id:
                    return self._ignore("claim-mismatch")  # a valid packet under another nonce
                facts = checked
                # this gate's verifier refuses the packet as stale after sent + max-skew
                horizon = (facts.sent_ms + facts.max_skew_ms - now_wall_ms) / 1000
            else:
                horizon = 2 * t.max_skew_s  # sent is unknown: at most +-skew of its admission
        else:
            if t.reverify is not None and claim_id_fwknop(rec.packet) != claim_id:
                return self._ignore("claim-mismatch")  # the digest of another (or no) packet
            # its timestamp is encrypted: at most +-age of its admission; no fwknop here: none
            age = t.fwknop_max_age_s
            horizon = 0.0 if age is None else 2 * age
        remaining = min(rec.horizon_s - max(0.0, ev.elapsed_s), horizon)
        if ev.lease_s is not None:
            remaining = min(remaining, ev.lease_s)
        self.claims[claim_id] = (rec, now + max(remaining, 0.0), facts)
        self.applied["claim"] += 1
        if remaining <= 0:
            return []
        live = self._remembered.setdefault(kind, _Remembered())
        if live.live(claim_id, now):
            return []  # remembered already (a re-put or a re-listing): never for longer
        live.prune(now)
        if len(live.until) >= t.max_remembered:
            return self._ignore("remember-full")
        live.add(claim_id, now + remaining)
        return [Remember(kind, nonce, remaining)]

    def _grant(self, ev: Put, now: float, now_wall_ms: int, relist: bool) -> list[Action]:
        t = self.trust
        rec = decode_grant(self.keys, ev.key, ev.value)
        if isinstance(rec, str):
            return self._ignore(rec)
        if not math.isfinite(rec.remaining_s) or rec.remaining_s <= 0:
            return self._ignore("bad-window")
        remaining = rec.remaining_s - max(0.0, ev.elapsed_s)
        if rec.proto is not None and rec.port and (rec.proto, rec.port) not in t.protected:
            return self._ignore("unprotected-port")
        knock = not rec.origin.startswith("operator:")
        if not knock:
            if not t.operator_grants:
                return self._ignore("operator-grant-refused")
            if rec.remaining_s > t.max_operator_window_s:
                return self._ignore("window-too-long")
        else:
            if rec.remaining_s > t.max_knock_window_s:
                return self._ignore("window-too-long")
            opened = self._opened.get(ev.key)
            if opened is not None and opened <= now:
                del self._opened[ev.key]  # its window is over: it may not open again either
                return self._ignore("expired")
            if opened is not None and not relist:
                return self._ignore("re-put")  # a knock's grant is written once, with its claim
            bound = self._check_knock(rec, now_wall_ms)
            if isinstance(bound, str):
                return self._ignore(bound)
            remaining = min(remaining, bound)
            if opened is not None:
                remaining = min(remaining, opened - now)
        if remaining <= 0:
            return self._ignore("expired")
        if ev.key not in self.grants and len(self.grants) >= t.max_entries:
            return self._ignore("mirror-full")
        if knock and ev.key not in self._opened:
            if len(self._opened) >= t.max_entries:
                self._opened = {k: d for k, d in self._opened.items() if d > now}
            if len(self._opened) >= t.max_entries:
                return self._ignore("mirror-full")
            self._opened[ev.key] = now + remaining
        self.grants[ev.key] = _Entry(rec, now + remaining)
        self._by_tuple.setdefault(self._tuple(rec), set()).add(ev.key)
        self.applied["grant"] += 1
        return [Allow(rec.ip, rec.proto, rec.port, remaining)]

    def _check_knock(self, rec: GrantRecord, now_wall_ms: int) -> float | str:
        """The origin claim of a knock grant must exist; with re-verification its packet must
        have verified here and authorize exactly this address and port. Returns the upper bound
        on the remaining window, or the reason to ignore the grant."""
        claim_id = rec.origin.removeprefix("claim:")
        reverify = self.trust.reverify
        if reverify is not None and not claim_id.startswith("s."):
            return "reverify-failed"  # no fwknop re-verifier: an fwknop grant opens nothing here
        held = self.claims.get(claim_id)
        if held is None:
            return "no-origin"
        facts = held[2]
        if reverify is None:
            return math.inf
        if facts is None:
            return "reverify-failed"
        if facts.ip is None:
            return "unverifiable-address"  # `--ip source`: the store would choose the address
        if facts.ip != rec.ip:
            return "address-mismatch"
        if facts.ports is not None and (
            rec.proto is None or rec.port == 0 or Port(rec.proto, rec.port) not in facts.ports
        ):
            return "port-not-allowed"
        if facts.sent_ms > now_wall_ms + facts.max_skew_ms:
            return "future"
        # The knock's gate opened the window when it accepted the packet, at the latest at
        # sent + skew (its clock within the skew of the client's): it ends by sent + skew +
        # window, and never has more than one window left (skew counted once).
        bound = (facts.sent_ms + facts.max_skew_ms - now_wall_ms) / 1000 + facts.window_s
        if bound <= 0:
            return "expired"
        return min(bound, facts.window_s)

    def _delete(self, key: str, now: float) -> list[Action]:
        if self._is_claim(key):
            self.claims.pop(key[len(self.keys.claims) :], None)
            return []
        entry = self.grants.pop(key, None)
        if entry is None:
            return []
        t = self._tuple(entry.grant)
        others = self._by_tuple.get(t, set())
        others.discard(key)
        if not others:
            self._by_tuple.pop(t, None)
        if any(self.grants[k].deadline > now for k in others):
            return []  # another live grant still covers this address and port
        self.applied["revoke"] += 1
        return [Revoke(*t, flows=entry.deadline - now > REVOKED_BEFORE_END_S)]


# --- knocks, outages and fallback ----------------------------------------------------------------


class ClaimResult(StrEnum):
    CLAIMED = "claimed"  # first in the fleet: the claim (and its grants) are in the store
    REPLAY = "replay"  # another gate (or this one) claimed it before
    UNAVAILABLE = "unavailable"  # no answer within the bound: the store decides nothing


class Fallback(StrEnum):
    LOCAL = "local"  # admit on local verification alone; journal it; publish when back
    REFUSE = "refuse"  # refuse knocks while the store cannot claim them (open windows stay)


def parse_fallback(text: str) -> Fallback:
    try:
        return Fallback(text.strip().lower())
    except ValueError:
        raise FleetError(f"fleet-fallback: expected local or refuse, got {text!r}") from None


@dataclass(frozen=True)
class KnockDecision:
    admit: bool
    journal: bool  # admitted without the store: publish when it returns
    reason: str  # a counter name


def decide_knock(result: ClaimResult, fallback: Fallback) -> KnockDecision:
    """What a locally verified knock becomes once the fleet claim answered (or did not)."""
    if result is ClaimResult.CLAIMED:
        return KnockDecision(True, False, "fleet-claimed")
    if result is ClaimResult.REPLAY:
        return KnockDecision(False, False, "fleet-replay")
    if fallback is Fallback.LOCAL:
        return KnockDecision(True, True, "fleet-fallback-local")
    return KnockDecision(False, False, "fleet-unavailable")


def admit_before_sync(fallback: Fallback, waited_s: float, initial_sync_s: float) -> bool:
    """A starting gate admits knocks only after it loaded the fleet's grants; if the store
    stays unreachable for initial_sync_s, fallback local starts admitting (journalled)."""
    return fallback is Fallback.LOCAL and waited_s >= initial_sync_s


@dataclass
class StoreHealth:
    """Circuit breaker: after a failure, knocks go straight to the fallback (no call, no
    stall) and one probe per retry_s tells when the store is back."""

    retry_s: float = 1.0
    up: bool = True
    since: float = 0.0
    last_try: float = -math.inf
    failures: int = 0

    def should_try(self, now: float) -> bool:
        return self.up or now - self.last_try >= self.retry_s

    def tried(self, now: float) -> None:
        self.last_try = now

    def failed(self, now: float) -> bool:
        """Record a failure; True when this turns the store from up to down."""
        self.failures += 1
        self.last_try = now
        if self.up:
            self.up, self.since = False, now
            return True
        return False

    def succeeded(self, now: float) -> bool:
        """Record a success; True when this turns the store from down to up."""
        if not self.up:
            self.up, self.since = True, now
            return True
        return False


@dataclass(frozen=True)
class JournalEntry:
    claim_id: str
    claim: ClaimRecord
    grants: tuple[GrantRecord, ...]  # remaining_s as admitted
    admitted: float  # local monotonic seconds
    horizon_s: float  # replay horizon at admission


@dataclass(frozen=True)
class Replayable:
    """A journal entry ready to publish: claim with this horizon, grants with what is left."""

    claim_id: str
    claim: ClaimRecord
    grants: tuple[GrantRecord, ...]
    horizon_s: float


@dataclass
class OutageJournal:
    """Knocks admitted locally while the store was unreachable, to claim and publish when it
    returns (bounded: past capacity the oldest entry is dropped and counted)."""

    capacity: int = 10_000
    entries: dict[str, JournalEntry] = field(default_factory=dict)
    dropped: int = 0

    def add(self, entry: JournalEntry) -> None:
        if entry.claim_id not in self.entries and len(self.entries) >= self.capacity:
            self.entries.pop(next(iter(self.entries)))
            self.dropped += 1
        self.entries[entry.claim_id] = entry

    def __len__(self) -> int:
        return len(self.entries)

    def due(self, now: float) -> list[Replayable]:
        """What is still worth publishing now; entries wholly in the past are dropped (their
        window closed everywhere and their nonce is stale for every verifier)."""
        out = []
        for cid, e in list(self.entries.items()):
            age = now - e.admitted
            horizon = e.horizon_s - age
            grants = tuple(
                GrantRecord(g.ip, g.proto, g.port, round(g.remaining_s - age, 3), g.origin, g.gate)
                for g in e.grants
                if g.remaining_s - age > 0.05
            )
            if horizon <= 0 and not grants:
                del self.entries[cid]
                continue
            out.append(Replayable(cid, e.claim, grants, max(horizon, 0.0)))
        return out

    def done(self, claim_id: str) -> None:
        self.entries.pop(claim_id, None)


# --- leases --------------------------------------------------------------------------------------


@dataclass
class LeasePool:
    """Share one lease among keys that must live about as long: a lease granted with TTL T
    when the request left at t0 expires no earlier than t0 + T (the store starts it later), so
    it serves any key needing to live `need` from `now` while t0 + T >= now + need, and keeps
    it at most `slack_s` (+ rounding) longer than needed. One lease grant per slack_s per
    duration instead of one per knock."""

    slack_s: int = 1
    leases: list[tuple[float, int]] = field(default_factory=list)  # (expires no earlier, id)

    def ttl_for(self, need_s: float) -> int:
        return max(1, math.ceil(need_s)) + self.slack_s

    def pick(self, need_s: float, now: float) -> int | None:
        self.leases = [(e, i) for e, i in self.leases if e > now]
        best = None
        for expires, lease_id in self.leases:
            fits = now + need_s <= expires <= now + need_s + self.slack_s + 1
            if fits and (best is None or expires < best[0]):
                best = (expires, lease_id)
        return None if best is None else best[1]

    def add(self, lease_id: int, ttl_s: int, sent_at: float) -> None:
        self.leases.append((sent_at + ttl_s, lease_id))
        if len(self.leases) > 64:
            self.leases = sorted(self.leases)[-64:]

    def forget(self, lease_id: int) -> None:
        self.leases = [(e, i) for e, i in self.leases if i != lease_id]
