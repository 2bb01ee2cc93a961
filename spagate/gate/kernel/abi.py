"""The Python mirror of everything the XDP program shares with userspace (spagate/bpf/).

Rule 1: every constant, default, struct layout and reason of consts.h, structs.h, spa_keys.h
and reasons.h appears here exactly once; Python code that needs one imports it from here.
Rule 2: field offsets are derived from the field lists, never written as numbers.
tests/bpf/test_contract.py has the compiler report every value, size and offset and compares.

A leaf: imports nothing from spagate and does no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

# --- consts.h -------------------------------------------------------------------------------------

DEFAULT_SPA_PORT = 8484
DEFAULT_SPA_INTERVAL_NS = 1_000_000_000
DEFAULT_SPA_BURST = 8
DEFAULT_SPA_BUDGET = 2000  # per identity
SPA_BUDGET_WINDOW_NS = 1_000_000_000
DEFAULT_SPA_UNTAGGED_BUDGET = 1000


class UntaggedMode(IntEnum):
    """SPA_UNTAGGED_*: what happens to an untagged SPA packet (config `untagged =`)."""

    ACCEPT = 0
    BOUNDED = 1  # config: budget
    REFUSE = 2


DEFAULT_UNTAGGED_MODE = UntaggedMode.BOUNDED
SPA_SEEN_ALT_MAX = 2


class SpaPath(IntEnum):
    """SPA_PATH_*: how the kernel found a packet's key (spa_event.path, spa_sample.path)."""

    NONE = 0  # (samples only: dropped before the path was known)
    TAGGED = 1
    UNTAGGED = 2


class SeenState(IntEnum):
    """SEEN_*: spa_seen_entry.state."""

    KNOWN = 0
    QUEUED = 1
    EXPECT = 2


DEFAULT_SPA_SAMPLE_RATE = 100
SPA_SAMPLES_PAGES = 16
SPA_KEY_NONE = 0xFFFF
DEFAULT_UDP_IDLE_NS = 120_000_000_000
DEFAULT_RINGBUF_PAGES = 256
DEFAULT_FWKNOP_PORT = 62201
DEFAULT_FWKNOP_BUDGET = 500
FWKNOP_MIN_PAYLOAD = 140
FWKNOP_MAX_PAYLOAD = 1500
DEFAULT_FWKNOP_RINGBUF_PAGES = 256
# max_entries by map (the C macro is <NAME>_CAPACITY).
DEFAULT_CAPACITIES = {
    "allow": 65536,
    "static_allow": 16384,
    "udp_flows": 65536,
    "spa_rate": 65536,
    "replay": 65536,
    "spa_seen": 65536,
    "spa_tags": 1024,
}
CAPACITY_MACROS = {
    "allow": "ALLOW_CAPACITY",
    "static_allow": "STATIC_CAPACITY",
    "udp_flows": "UDP_FLOW_CAPACITY",
    "spa_rate": "SPA_RATE_CAPACITY",
    "replay": "REPLAY_CAPACITY",
    "spa_seen": "SPA_SEEN_CAPACITY",
    "spa_tags": "SPA_TAGS_CAPACITY",
}
SPA_KEYS_MAX = 8
SPA_PACKET_SIZE = 96
PROTECTED_WORDS = 2048
PROTECTED_UDP_BASE = 1024
PROTO_ANY = 0
SG_VLAN_MAX = 2
SG_IPV6_EXT_MAX = 24
SPA_BUDGET_UNTAGGED = SPA_KEYS_MAX  # spa_budget slot of the untagged path
SPA_BUDGET_SLOTS = SPA_KEYS_MAX + 8  # identities, then keyless paths
DEFAULT_ICMP_PEER_CAPACITY = 65536
XRLIM_BURST_FACTOR = 6
ICMP_GLOBAL_MIN_NS = 20_000_000
ICMP4_QUOTE_MAX = 576 - 20 - 8
ICMP6_QUOTE_MAX = 1280 - 40 - 8
PROG_SLOT_SPA_VERIFY, PROG_SLOT_REPLY, PROG_SLOTS = 0, 1, 2
DISGUISES = ("filtered", "closed")


@dataclass(frozen=True)
class ReplyParams:
    """The host's values the closed disguise copies (consts.h defaults; the loader reads the
    real ones from sysctl: spagate.gate.service.hostnet)."""

    ttl: int = 64  # net.ipv4.ip_default_ttl
    hop_limit: int = 64  # net.ipv6.conf.<interface>.hop_limit
    icmp_ratelimit_ns: int = 1_000_000_000  # net.ipv4.icmp_ratelimit
    icmp6_ratelimit_ns: int = 250_000_000  # net.ipv6.icmp.ratelimit, scaled by the route
    icmp_ratemask: int = 0x1818  # net.ipv4.icmp_ratemask
    icmp6_limit_unreach: bool = True  # type 1 in net.ipv6.icmp.ratemask
    icmp_msgs_per_sec: int = 1000  # net.ipv4.icmp_msgs_per_sec
    icmp_msgs_burst: int = 50  # net.ipv4.icmp_msgs_burst
    flow_secret: int = 0x5A5A5A5A  # IPv6 flow label key (random per load)

    def cflags(self) -> list[str]:
        return [
            f"-DREPLY_TTL={self.ttl}",
            f"-DREPLY_HOP_LIMIT={self.hop_limit}",
            f"-DICMP_RATELIMIT_NS={self.icmp_ratelimit_ns}ULL",
            f"-DICMP6_RATELIMIT_NS={self.icmp6_ratelimit_ns}ULL",
            f"-DICMP_RATEMASK={self.icmp_ratemask}",
            f"-DICMP6_LIMIT_UNREACH={int(self.icmp6_limit_unreach)}",
            f"-DICMP_MSGS_PER_SEC={self.icmp_msgs_per_sec}",
            f"-DICMP_MSGS_BURST={self.icmp_msgs_burst}",
            f"-DREPLY_FLOW_SECRET={self.flow_secret & 0xFFFFFFFF}U",
        ]


_REPLY = ReplyParams()

# Every consts.h macro and its Python value (the contract test reads each from the compiler).
CONSTS: dict[str, int] = {
    "SPA_PORT": DEFAULT_SPA_PORT,
    "SPA_INTERVAL_NS": DEFAULT_SPA_INTERVAL_NS,
    "SPA_BURST": DEFAULT_SPA_BURST,
    "SPA_TAU_NS": (DEFAULT_SPA_BURST - 1) * DEFAULT_SPA_INTERVAL_NS,
    "SPA_BUDGET": DEFAULT_SPA_BUDGET,
    "SPA_BUDGET_WINDOW_NS": SPA_BUDGET_WINDOW_NS,
    "SPA_UNTAGGED_BUDGET": DEFAULT_SPA_UNTAGGED_BUDGET,
    "SPA_UNTAGGED_ACCEPT": UntaggedMode.ACCEPT,
    "SPA_UNTAGGED_BOUNDED": UntaggedMode.BOUNDED,
    "SPA_UNTAGGED_REFUSE": UntaggedMode.REFUSE,
    "SPA_UNTAGGED_MODE": DEFAULT_UNTAGGED_MODE,
    "SPA_SOURCE_MATCH": 0,
    "SPA_SEEN_ALT_MAX": SPA_SEEN_ALT_MAX,
    "SPA_BUDGET_UNTAGGED": SPA_BUDGET_UNTAGGED,
    "SPA_BUDGET_SLOTS": SPA_BUDGET_SLOTS,
    "SPA_PATH_TAGGED": SpaPath.TAGGED,
    "SPA_PATH_UNTAGGED": SpaPath.UNTAGGED,
    "SEEN_KNOWN": SeenState.KNOWN,
    "SEEN_QUEUED": SeenState.QUEUED,
    "SEEN_EXPECT": SeenState.EXPECT,
    "SPA_SAMPLE_RATE": DEFAULT_SPA_SAMPLE_RATE,
    "SPA_SAMPLES_PAGES": SPA_SAMPLES_PAGES,
    "SPA_KEY_NONE": SPA_KEY_NONE,
    "UDP_IDLE_NS": DEFAULT_UDP_IDLE_NS,
    "RINGBUF_PAGES": DEFAULT_RINGBUF_PAGES,
    "FWKNOP_PORT": DEFAULT_FWKNOP_PORT,
    "FWKNOP_BUDGET": DEFAULT_FWKNOP_BUDGET,
    "FWKNOP_MIN_PAYLOAD": FWKNOP_MIN_PAYLOAD,
    "FWKNOP_MAX_PAYLOAD": FWKNOP_MAX_PAYLOAD,
    "FWKNOP_RINGBUF_PAGES": DEFAULT_FWKNOP_RINGBUF_PAGES,
    **{CAPACITY_MACROS[m]: n for m, n in DEFAULT_CAPACITIES.items()},
    "SPA_KEYS_MAX": SPA_KEYS_MAX,
    "SPA_PACKET_SIZE": SPA_PACKET_SIZE,
    "PROTECTED_WORDS": PROTECTED_WORDS,
    "PROTECTED_UDP_BASE": PROTECTED_UDP_BASE,
    "PROTO_ANY": PROTO_ANY,
    "SG_VLAN_MAX": SG_VLAN_MAX,
    "SG_IPV6_EXT_MAX": SG_IPV6_EXT_MAX,
    "DISGUISE_CLOSED": 0,
    "REPLY_TTL": _REPLY.ttl,
    "REPLY_HOP_LIMIT": _REPLY.hop_limit,
    "ICMP_RATELIMIT_NS": _REPLY.icmp_ratelimit_ns,
    "ICMP6_RATELIMIT_NS": _REPLY.icmp6_ratelimit_ns,
    "ICMP_RATEMASK": _REPLY.icmp_ratemask,
    "ICMP6_LIMIT_UNREACH": int(_REPLY.icmp6_limit_unreach),
    "ICMP_MSGS_PER_SEC": _REPLY.icmp_msgs_per_sec,
    "ICMP_MSGS_BURST": _REPLY.icmp_msgs_burst,
    "REPLY_FLOW_SECRET": _REPLY.flow_secret,
    "XRLIM_BURST_FACTOR": XRLIM_BURST_FACTOR,
    "ICMP_GLOBAL_MIN_NS": ICMP_GLOBAL_MIN_NS,
    "ICMP4_QUOTE_MAX": ICMP4_QUOTE_MAX,
    "ICMP6_QUOTE_MAX": ICMP6_QUOTE_MAX,
    "PROG_SLOT_SPA_VERIFY": PROG_SLOT_SPA_VERIFY,
    "PROG_SLOT_REPLY": PROG_SLOT_REPLY,
    "PROG_SLOTS": PROG_SLOTS,
    "ICMP_PEER_CAPACITY": DEFAULT_ICMP_PEER_CAPACITY,
}

IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE = 6, 17, 136
PROTOS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}
PROTO_NAMES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp"}


def protected_slot(proto: int, port: int) -> tuple[int, int]:
    """(array slot, bit mask) of (proto, port) in the protected bitmaps (PROTECTED_SLOT)."""
    return (PROTECTED_UDP_BASE if proto == IPPROTO_UDP else 0) | port >> 6, 1 << (port & 63)


# --- reasons.h ------------------------------------------------------------------------------------


class KernelReason(IntEnum):
    """enum spagate_reason: the index of each per-CPU counter. Append only."""

    PASS_NOT_IP = 0
    PASS_UNRELATED = 1
    SPA_QUEUED = 2
    SPA_RATE_SOURCE = 3
    SPA_RATE_GLOBAL = 4
    SPA_RINGBUF_FULL = 5
    PROTECTED_ALLOWED = 6
    PROTECTED_STATIC = 7
    TCP_ESTABLISHED = 8
    TCP_DROPPED_NEW = 9
    TCP_DROPPED_STRAY = 10
    UDP_FLOW = 11
    UDP_DROPPED = 12
    MALFORMED = 13
    FRAGMENT_PASSED = 14
    FRAGMENT_DROPPED = 15
    SPA_BAD_SIZE = 16
    SPA_BAD_MAC = 17
    SPA_TAIL_CALL_FAILED = 18
    SPA_REPLAY_DUP = 19
    FWKNOP_QUEUED = 20
    FWKNOP_RATE_SOURCE = 21
    FWKNOP_RATE_GLOBAL = 22
    FWKNOP_RINGBUF_FULL = 23
    FWKNOP_BAD_SIZE = 24
    SPA_TAG_BAD = 25
    SPA_RATE_IDENTITY = 26
    SPA_UNTAGGED_BUDGET = 27
    SPA_UNTAGGED_REFUSED = 28
    IPV6_CHAIN_UNWALKED = 29
    REPLY_RST = 30
    REPLY_ICMP = 31
    REPLY_RATELIMITED = 32
    REPLY_SKIPPED = 33
    REPLY_FAILED = 34

    @property
    def label(self) -> str:
        """The counter's name as shown and exported: spa_bad_mac."""
        return self.name.lower()


REASONS: tuple[str, ...] = tuple(r.label for r in KernelReason)

# --- structs.h / spa_keys.h ---------------------------------------------------------------------


class Layout:
    """A packed C struct (natural alignment, no padding: the contract test proves it) as a
    struct.Struct over its fields; a field of format "x" is a pad byte that is never packed."""

    def __init__(self, c_name: str, fields: tuple[tuple[str, str], ...]):
        self.c_name = c_name
        self.fields = fields
        self.struct = struct.Struct("=" + "".join(f for _, f in fields))
        self.size = self.struct.size
        self.offsets = {
            name: struct.calcsize("=" + "".join(f for _, f in fields[:i]))
            for i, (name, _) in enumerate(fields)
        }
        self.pack = self.struct.pack
        self.unpack = self.struct.unpack
        self.unpack_from = self.struct.unpack_from

    def offset(self, name: str) -> int:
        return self.offsets[name]


ALLOW_KEY = Layout("allow_key", (("addr", "16s"), ("port", "H"), ("proto", "B"), ("pad", "x")))
ALLOW_HINT = Layout("allow_hint", (("host_until", "Q"), ("until", "Q")))
LPM_KEY = Layout("lpm_key", (("prefixlen", "I"), ("addr", "16s")))
FLOW_KEY = Layout("flow_key", (("addr", "16s"), ("sport", "H"), ("dport", "H")))
ADDR_KEY = Layout("addr_key", (("addr", "16s"),))
BUDGET = Layout("budget", (("window_start", "Q"), ("count", "Q")))
SPA_TAG = Layout("spa_tag", (("k0", "Q"), ("k1", "Q"), ("slot", "I"), ("step", "I")))
SEEN_KEY = Layout("seen_key", (("id", "16s"),))
SPA_SEEN_ENTRY = Layout(
    "spa_seen_entry",
    (
        ("mac", "32s"),
        ("src", "16s"),
        ("alt_src", "16s"),
        ("first_ns", "Q"),
        ("state", "Q"),
        ("alt", "Q"),
        ("slot", "I"),
        ("pad", "I"),
    ),
)
NONCE_KEY = Layout("nonce_key", (("nonce", "16s"),))
SPA_KEY = Layout("spa_key", (("inner", "8I"), ("outer", "8I")))
SPA_EVENT_FIELDS = (
    ("src", "16s"),
    ("dst", "16s"),
    ("sport", "H"),
    ("dport", "H"),
    ("ifindex", "I"),
    ("len", "H"),
    ("copied", "H"),
    ("key", "H"),
    ("path", "H"),
    ("ts", "Q"),
)
SPA_EVENT_HEADER = Layout("spa_event", SPA_EVENT_FIELDS)  # the record without its payload
SPA_EVENT = Layout("spa_event", (*SPA_EVENT_FIELDS, ("payload", f"{SPA_PACKET_SIZE}s")))
FWKNOP_EVENT_FIELDS = (
    ("src", "16s"),
    ("dst", "16s"),
    ("sport", "H"),
    ("dport", "H"),
    ("ifindex", "I"),
    ("len", "H"),
    ("pad", "2x"),
    ("pad2", "4x"),
)
FWKNOP_EVENT_HEADER = Layout("fwknop_event", FWKNOP_EVENT_FIELDS)
FWKNOP_EVENT = Layout("fwknop_event", (*FWKNOP_EVENT_FIELDS, ("payload", f"{FWKNOP_MAX_PAYLOAD}s")))
SPA_SAMPLE = Layout(
    "spa_sample",
    (
        ("ns", "Q"),
        ("src", "16s"),
        ("sport", "H"),
        ("dport", "H"),
        ("reason", "H"),
        ("key", "H"),
        ("ifindex", "I"),
        ("path", "H"),
        ("pad", "H"),
    ),
)
ICMP_PEER = Layout("icmp_peer", (("tokens", "Q"), ("last", "Q")))
ICMP_GLOBAL = Layout("icmp_global", (("credit", "q"), ("stamp", "Q")))
U32 = struct.Struct("=I")
U64 = struct.Struct("=Q")

LAYOUTS = (ALLOW_KEY, ALLOW_HINT, LPM_KEY, FLOW_KEY, ADDR_KEY, BUDGET, SPA_TAG, SEEN_KEY,
           SPA_SEEN_ENTRY, NONCE_KEY, SPA_KEY, SPA_EVENT, FWKNOP_EVENT, SPA_SAMPLE, ICMP_PEER,
           ICMP_GLOBAL)  # fmt: skip

# --- maps.h ---------------------------------------------------------------------------------------


class MapType(IntEnum):
    """enum bpf_map_type (uapi/linux/bpf.h), the ones spagate uses."""

    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    RINGBUF = 27


PERCPU_TYPES = frozenset({MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH})
BPF_F_NO_PREALLOC = 1


@dataclass(frozen=True)
class MapSpec:
    name: str
    type: MapType
    key_size: int
    value_size: int
    flags: int = 0


# Every pinned map (the rings spa_events and spa_samples are pinned by the loader; spa_scratch,
# spa_sample_window and spa_progs are not pinned). max_entries
# come from the gate options (GateOptions.capacities()).
MAP_SPECS: dict[str, MapSpec] = {
    s.name: s
    for s in (
        MapSpec("allow", MapType.LRU_HASH, ALLOW_KEY.size, U64.size),
        MapSpec("allow_hint", MapType.LRU_HASH, ADDR_KEY.size, ALLOW_HINT.size),
        MapSpec("protected", MapType.ARRAY, U32.size, U64.size),
        MapSpec("static_allow", MapType.LPM_TRIE, LPM_KEY.size, U32.size, BPF_F_NO_PREALLOC),
        MapSpec("static_count", MapType.ARRAY, U32.size, U32.size),
        MapSpec("udp_flows", MapType.LRU_HASH, FLOW_KEY.size, U64.size),
        MapSpec("spa_rate", MapType.LRU_HASH, ADDR_KEY.size, U64.size),
        MapSpec("spa_budget", MapType.ARRAY, U32.size, BUDGET.size),
        MapSpec("fwknop_rate", MapType.LRU_HASH, ADDR_KEY.size, U64.size),
        MapSpec("fwknop_budget", MapType.ARRAY, U32.size, BUDGET.size),
        MapSpec("counters", MapType.PERCPU_ARRAY, U32.size, U64.size),
        MapSpec("replay", MapType.LRU_HASH, NONCE_KEY.size, U64.size),
        MapSpec("replay_since", MapType.ARRAY, U32.size, U64.size),
        MapSpec("spa_keys", MapType.ARRAY, U32.size, SPA_KEY.size),
        MapSpec("spa_key_count", MapType.ARRAY, U32.size, U32.size),
        MapSpec("spa_tags", MapType.HASH, U32.size, SPA_TAG.size),
        MapSpec("spa_seen", MapType.LRU_HASH, SEEN_KEY.size, SPA_SEEN_ENTRY.size),
    )
}

# --- XDP (uapi/linux/bpf.h, if_link.h) -------------------------------------------------------


class XdpAction(IntEnum):
    ABORTED = 0
    DROP = 1
    PASS = 2
    TX = 3
    REDIRECT = 4


PROG_TYPE_XDP = 6
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
