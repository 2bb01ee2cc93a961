"""Typed access to the gate's BPF maps (layouts: spagate/gate/kernel/abi.py, bpf/structs.h).

`GateMaps.from_pin_dir(path)` opens the pinned maps with plain bpf syscalls (no bcc, no
compiler), so operator commands and the worker work without the loader. `GateMaps.from_fds(
{name: fd})` wraps the maps of a program just loaded (the fds are duplicated; close the
GateMaps when done, or use it as a context manager). Its one concern is what the maps mean;
the syscalls are bpfsys's.

Addresses are accepted as str / IPv4Address / IPv6Address and stored in their 16-byte form
(spagate.net.addr16), so "::ffff:192.0.2.1" and "192.0.2.1" are the same key; addresses read
back from the maps come out as IPv4Address for mapped ones. Times in the allow and udp_flows
maps are CLOCK_MONOTONIC ns (time.monotonic_ns()).
"""

from __future__ import annotations

import errno
import os
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import NamedTuple

from spagate.errors import SpagateError
from spagate.gate.kernel import bpfsys, spakeys
from spagate.gate.kernel.abi import (
    ADDR_KEY,
    ALLOW_HINT,
    ALLOW_KEY,
    BUDGET,
    FLOW_KEY,
    LPM_KEY,
    MAP_SPECS,
    PROTECTED_UDP_BASE,
    PROTECTED_WORDS,
    PROTO_ANY,
    PROTO_NAMES,
    PROTOS,
    REASONS,
    SPA_BUDGET_SLOTS,
    SPA_KEYS_MAX,
    SPA_SEEN_ENTRY,
    SPA_TAG,
    U32,
    U64,
    MapType,
    SeenState,
    protected_slot,
)
from spagate.net import MAPPED_PREFIX, IPAddress, IPNetwork, addr16, addr_from16


def _update_many(fd: int, items: dict, pack) -> None:
    """Write {key: value} (values through pack): one update for one entry (half the cost of a
    batch of one), one batched syscall for more."""
    if len(items) == 1:
        ((key, value),) = items.items()
        bpfsys.update(fd, key, pack(*value) if isinstance(value, tuple) else pack(value))
        return
    vals = b"".join(pack(*v) if isinstance(v, tuple) else pack(v) for v in items.values())
    bpfsys.update_batch(fd, b"".join(items), vals, len(items))


def _proto_num(proto: str | None) -> int:
    if proto is None:
        return PROTO_ANY
    try:
        return PROTOS[proto.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"protocol must be 'tcp', 'udp' or None, not {proto!r}") from None


def _port(port: int) -> int:
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer 0..65535, not {port!r}")
    return port


@dataclass(frozen=True)
class AllowEntry:
    ip: IPAddress
    proto: str | None  # None: every protocol
    port: int  # 0: every protected port
    expires_ns: int  # CLOCK_MONOTONIC
    remaining_s: float  # may be <= 0 for an expired entry not yet evicted


@dataclass(frozen=True)
class SpaTag:
    """A live tag hint's value (struct spa_tag): the identity and its SipHash key."""

    k0: int
    k1: int
    slot: int
    step: int


@dataclass(frozen=True)
class SeenEntry:
    """A spa_seen entry (struct spa_seen_entry)."""

    mac: bytes
    src: IPAddress
    first_ns: int  # CLOCK_MONOTONIC
    state: SeenState
    alt: int
    slot: int


@dataclass(frozen=True)
class UdpFlow:
    ip: IPAddress
    sport: int
    dport: int
    last_seen_ns: int  # CLOCK_MONOTONIC
    idle_s: float


class Revoked(NamedTuple):
    windows: int  # windows that were open
    flows: int  # UDP flows


# Pins a gate loaded by an older spagate lacks: the commands still open its maps.
OPTIONAL_PINS = frozenset({"replay_since"})


class GateMaps:
    """The gate's pinned maps. Methods raise OSError (bpf syscalls) or ValueError (arguments)."""

    def __init__(self, fds: Mapping[str, int], *, owned: bool = True):
        missing = sorted(set(MAP_SPECS) - set(fds))
        if missing:
            raise SpagateError(f"maps missing: {', '.join(missing)}")
        self._fds = {name: fds[name] if owned else os.dup(fds[name]) for name in MAP_SPECS}
        self._ncpu = bpfsys.num_possible_cpus()

    @classmethod
    def from_fds(cls, fds: Mapping[str, int]) -> GateMaps:
        """Wrap maps of a loaded program (fds are duplicated, the caller keeps its own)."""
        return cls(fds, owned=False)

    @classmethod
    def from_pin_dir(cls, pin_dir: str | os.PathLike) -> GateMaps:
        """Open the maps pinned under pin_dir (no bcc needed)."""
        pin_dir = Path(pin_dir)
        fds: dict[str, int] = {}
        try:
            for name in MAP_SPECS:
                try:
                    fds[name] = bpfsys.obj_get(pin_dir / name)
                except OSError as e:
                    if e.errno == errno.ENOENT and name in OPTIONAL_PINS:
                        continue  # a gate loaded by an older spagate (until its restart)
                    if e.errno == errno.ENOENT:
                        raise SpagateError(
                            f"no spagate map pinned at {pin_dir / name}: is the gate loaded?"
                        ) from None
                    if e.errno in (errno.EPERM, errno.EACCES):
                        denied = f"{pin_dir / name}: permission denied (run as root)"
                        raise SpagateError(denied) from None
                    raise
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            raise
        return cls(fds, owned=True)

    def fd(self, name: str) -> int:
        return self._fds[name]

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def __enter__(self) -> GateMaps:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- allow ---------------------------------------------------------------------------

    def allow(
        self,
        ip: str | IPAddress,
        until_monotonic_ns: int,
        proto: str | None = None,
        port: int = 0,
        extend_only: bool = False,
    ) -> None:
        """Open the gate for ip until the CLOCK_MONOTONIC time until_monotonic_ns.

        proto None (every protocol) requires port 0 (every protected port); with a proto,
        port 0 means every protected port of that protocol. extend_only: leave a window that
        already lasts longer as it is (a knock never shortens an operator's longer grant).
        """
        p, port = _proto_num(proto), _port(port)
        if p == PROTO_ANY and port:
            raise ValueError("a port needs a protocol ('tcp' or 'udp')")
        a, until = addr16(ip), int(until_monotonic_ns)
        if extend_only:
            raw = bpfsys.lookup(self._fds["allow"], ALLOW_KEY.pack(a, port, p), 8)
            if raw is not None and U64.unpack(raw)[0] >= until:
                return
        host = until if p == PROTO_ANY else None
        # Hint first (the kernel decides whole-host grants on it; a hint without its entry
        # only costs lookups), then the entry.
        self._write_hint(a, host, until)
        bpfsys.update(self._fds["allow"], ALLOW_KEY.pack(a, port, p), U64.pack(until))
        # Another writer may have lowered the bound meanwhile (read-modify-write).
        if self._hint(a)[1] < until:
            self._write_hint(a, None, until)

    def allow_hosts(self, ips: Sequence[str | IPAddress | bytes], until_monotonic_ns: int) -> int:
        """Whole-host grants for many addresses at once (batched syscalls, hints first); an
        address given as bytes is its 16-byte map form. Overwrites: no extend_only."""
        until = int(until_monotonic_ns)
        addrs = [a if isinstance(a, bytes) else addr16(a) for a in ips]
        step = 50_000
        for off in range(0, len(addrs), step):
            chunk = addrs[off : off + step]
            n = len(chunk)
            bpfsys.update_batch(
                self._fds["allow_hint"], b"".join(chunk), ALLOW_HINT.pack(until, until) * n, n
            )
            keys = b"".join(ALLOW_KEY.pack(a, 0, PROTO_ANY) for a in chunk)
            bpfsys.update_batch(self._fds["allow"], keys, U64.pack(until) * n, n)
        return len(addrs)

    def open_windows(self, windows: Sequence[tuple[IPAddress | str, int, str | None, int]]) -> int:
        """Open many windows at once, each (ip, until_ns, proto, port) as in allow(...,
        extend_only=True): a window that already lasts longer is left as it is. Costs one
        lookup per window (the hint alone for a whole-host grant, whose expiry it holds) and
        two batched updates for them all: hints first, then entries. Returns how many
        windows were written (not already longer)."""
        hints: dict[bytes, tuple[int, int]] = {}  # addr -> (host_until, until) to write
        entries: dict[bytes, int] = {}  # allow key -> until
        hint_fd, allow_fd = self._fds["allow_hint"], self._fds["allow"]
        for ip, until, proto, port in windows:
            p, port = _proto_num(proto), _port(port)
            if p == PROTO_ANY and port:
                raise ValueError("a port needs a protocol ('tcp' or 'udp')")
            a, until = addr16(ip), int(until)
            if a in hints:
                host, bound = hints[a]
            else:
                raw = bpfsys.lookup(hint_fd, a, ALLOW_HINT.size)
                host, bound = ALLOW_HINT.unpack(raw) if raw is not None else (0, 0)
            key = ALLOW_KEY.pack(a, port, p)
            if p == PROTO_ANY:
                current = entries.get(key, host)  # host_until IS the whole-host expiry
            elif key in entries:
                current = entries[key]
            else:
                raw = bpfsys.lookup(allow_fd, key, 8)
                current = U64.unpack(raw)[0] if raw is not None else 0
            if current >= until:
                continue
            entries[key] = until
            hints[a] = (until if p == PROTO_ANY else host, max(bound, until))
        if hints:
            # Entries after their hints: a hint without its entry costs lookups; an entry
            # without its hint would be invisible. A concurrent revoke_ip between the two
            # leaves an entry with no hint: that window stays shut (fail closed).
            _update_many(hint_fd, hints, ALLOW_HINT.pack)
            _update_many(allow_fd, entries, U64.pack)
        return len(entries)

    def _hint(self, a: bytes) -> tuple[int, int]:
        raw = bpfsys.lookup(self._fds["allow_hint"], a, ALLOW_HINT.size)
        return ALLOW_HINT.unpack(raw) if raw is not None else (0, 0)

    def _write_hint(self, a: bytes, host: int | None, until: int) -> None:
        """allow_hint[a]: host_until = host (None: unchanged), until = max(until, old)."""
        old_host, old_until = self._hint(a)
        new = (old_host if host is None else host, max(old_until, until))
        if new != (old_host, old_until):
            bpfsys.update(self._fds["allow_hint"], a, ALLOW_HINT.pack(*new))

    def _u64_items(self, name: str) -> list[tuple[bytes, int]]:
        """(key, u64 value) of every entry of a map with u64 values; entries that vanish
        during the walk (LRU eviction, a concurrent delete) are skipped."""
        fd, size = self._fds[name], MAP_SPECS[name].key_size
        return [(key, U64.unpack(raw)[0]) for key, raw in bpfsys.items(fd, size, 8)]

    def sync_allow_hint(self) -> int:
        """Make allow_hint cover every allow entry (the loader calls this: a hint map created
        next to an existing allow map starts empty). Returns the entries seen."""
        n = 0
        for key, until in self._u64_items("allow"):
            a, port, p = ALLOW_KEY.unpack(key)
            self._write_hint(a, until if (p, port) == (PROTO_ANY, 0) else None, until)
            n += 1
        return n

    def revoke(self, ip: str | IPAddress, proto: str | None = None, port: int = 0) -> bool:
        """Remove one allow entry; True if it existed. Revoking the whole-host grant clears
        the hint's host_until; its upper bound stays (it passes with the latest window)."""
        a, p, port = addr16(ip), _proto_num(proto), _port(port)
        if (p, port) == (PROTO_ANY, 0):
            _, until = self._hint(a)
            if until:
                bpfsys.update(self._fds["allow_hint"], a, ALLOW_HINT.pack(0, until))
        return bpfsys.delete(self._fds["allow"], ALLOW_KEY.pack(a, port, p))

    def revoke_ip(self, ip: str | IPAddress) -> Revoked:
        """Remove every allow entry, the allow hint and every UDP flow of ip. Counts the
        windows that were still open (an expired entry is removed, not counted) and the
        flows."""
        return self._revoke(addr16(ip))

    def revoke_all(self) -> Revoked:
        """Close every window and UDP flow (allow, allow_hint, udp_flows emptied)."""
        return self._revoke(None)

    def _revoke(self, a: bytes | None) -> Revoked:
        now = time.monotonic_ns()
        fd = self._fds["allow"]
        windows = 0
        for key in [k for k in bpfsys.keys(fd, ALLOW_KEY.size) if a is None or k[:16] == a]:
            raw = bpfsys.lookup(fd, key, 8)
            if bpfsys.delete(fd, key) and raw is not None and U64.unpack(raw)[0] > now:
                windows += 1
        flows = self._delete_flows(None if a is None else {a: {0}})
        fd = self._fds["allow_hint"]
        for key in [a] if a is not None else list(bpfsys.keys(fd, ADDR_KEY.size)):
            bpfsys.delete(fd, key)
        return Revoked(windows, flows)

    def revoke_flows(self, revoked: Iterable[tuple[str | IPAddress, str | None, int]]) -> int:
        """Delete the live UDP flows of each revoked (ip, proto, port): port 0 is every port
        of ip, a proto other than udp (or None, the whole host) has none. XDP passes a live
        flow before it looks at the allow map, so a revoke() alone leaves it open. One walk
        of the flow map for all of them. Returns how many flows went."""
        wanted: dict[bytes, set[int]] = {}
        for ip, proto, port in revoked:
            if proto in (None, "udp"):
                wanted.setdefault(addr16(ip), set()).add(_port(port))
        return self._delete_flows(wanted) if wanted else 0

    def _delete_flows(self, wanted: dict[bytes, set[int]] | None) -> int:
        """Delete the flows of wanted's addresses to its ports (0: any port; None: every
        flow)."""
        fd, n = self._fds["udp_flows"], 0
        for key in list(bpfsys.keys(fd, FLOW_KEY.size)):
            if wanted is not None:
                ports = wanted.get(key[:16])
                if ports is None or not (0 in ports or FLOW_KEY.unpack(key)[2] in ports):
                    continue
            n += bpfsys.delete(fd, key)
        return n

    def live_windows(self) -> int:
        """How many allow entries have not expired."""
        now = time.monotonic_ns()
        return sum(1 for _, exp in self._u64_items("allow") if exp > now)

    def allowed(self, include_expired: bool = False) -> list[AllowEntry]:
        """Allow entries (sorted by expiry), with the seconds left."""
        now = time.monotonic_ns()
        out = []
        for key, exp in self._u64_items("allow"):
            if exp <= now and not include_expired:
                continue
            a, port, p = ALLOW_KEY.unpack(key)
            out.append(AllowEntry(addr_from16(a), PROTO_NAMES.get(p), port, exp, (exp - now) / 1e9))
        return sorted(out, key=lambda e: e.expires_ns)

    # -- protected -----------------------------------------------------------------------

    def set_protected(self, ports: Iterable[tuple[str, int]]) -> None:
        """Make exactly these (proto, port) pairs protected (adds first, then removes)."""
        fd = self._fds["protected"]
        want: dict[int, int] = {}
        for proto, port in ports:
            p = _proto_num(proto)
            if p == PROTO_ANY or not _port(port):
                raise ValueError(f"protected port needs 'tcp'/'udp' and 1..65535: {proto} {port}")
            slot, bit = protected_slot(p, port)
            want[slot] = want.get(slot, 0) | bit
        have = self._protected_words()
        changed = {i for i in set(want) | set(have) if want.get(i, 0) != have.get(i, 0)}
        for i in changed:  # adds: old | new
            if want.get(i, 0) & ~have.get(i, 0):
                bpfsys.update(fd, U32.pack(i), U64.pack(have.get(i, 0) | want.get(i, 0)))
        for i in changed:  # then removes
            bpfsys.update(fd, U32.pack(i), U64.pack(want.get(i, 0)))

    def _protected_words(self) -> dict[int, int]:
        """Non-zero words of the protected bitmaps by slot."""
        fd, out = self._fds["protected"], {}
        for i in range(PROTECTED_WORDS):
            raw = bpfsys.lookup(fd, U32.pack(i), 8)
            if raw is not None and (w := U64.unpack(raw)[0]):
                out[i] = w
        return out

    def protected(self) -> list[tuple[str, int]]:
        out = []
        for slot, word in self._protected_words().items():
            proto = "udp" if slot >= PROTECTED_UDP_BASE else "tcp"
            base = (slot - (PROTECTED_UDP_BASE if proto == "udp" else 0)) << 6
            out += [(proto, base + b) for b in range(64) if word >> b & 1]
        return sorted(out)

    # -- static_allow --------------------------------------------------------------------

    def set_static(self, networks: Iterable[str | IPNetwork]) -> None:
        """Make exactly these CIDRs statically allowed (v4 and v6; host bits are an error)."""
        fd = self._fds["static_allow"]
        want = set()
        for net in networks:
            if isinstance(net, str):
                net = ip_network(net.strip())
            extra = 96 if net.version == 4 else 0
            want.add(LPM_KEY.pack(net.prefixlen + extra, addr16(net.network_address)))
        for key in want:
            bpfsys.update(fd, key, U32.pack(1))
        # static_count != 0 makes the kernel look in the trie: set before removals when the
        # list stays non-empty, after them when it becomes empty.
        if want:
            self._set_static_count(len(want))
        for key in list(bpfsys.keys(fd, LPM_KEY.size)):
            if key not in want:
                bpfsys.delete(fd, key)
        if not want:
            self._set_static_count(0)

    def _set_static_count(self, n: int) -> None:
        bpfsys.update(self._fds["static_count"], U32.pack(0), U32.pack(n))

    def sync_static_count(self) -> int:
        """Set static_count from the trie (the loader calls this: a count created next to an
        existing static list starts at 0). Returns the count."""
        n = sum(1 for _ in bpfsys.keys(self._fds["static_allow"], LPM_KEY.size))
        self._set_static_count(n)
        return n

    def static(self) -> list[IPNetwork]:
        out: list[IPNetwork] = []
        for key in bpfsys.keys(self._fds["static_allow"], LPM_KEY.size):
            plen, a = LPM_KEY.unpack(key)
            if a[:12] == MAPPED_PREFIX and plen >= 96:
                out.append(IPv4Network((a[12:], plen - 96)))
            else:
                out.append(IPv6Network((a, plen)))
        return sorted(out, key=lambda n: (n.version, n))

    # -- SPA keys (the kernel's MAC check) ------------------------------------------------

    def set_spa_keys(self, hmac_keys: Sequence[bytes]) -> None:
        """Make exactly these HMAC keys the ones the kernel checks SPA packets against (slot i =
        hmac_keys[i]). Slots are written before the count, so the kernel never tries a slot
        not written yet; unused slots are then zeroed."""
        keys = [bytes(k) for k in hmac_keys]
        if len(keys) > SPA_KEYS_MAX:
            raise SpagateError(
                f"{len(keys)} SPA keys: the XDP program checks at most {SPA_KEYS_MAX}"
            )
        for i, k in enumerate(keys):
            if len(k) != 32:
                raise SpagateError(f"SPA key {i}: an hmac-key is 32 bytes, got {len(k)}")
        fd = self._fds["spa_keys"]
        for i, k in enumerate(keys):
            bpfsys.update(fd, U32.pack(i), spakeys.pack_key(k))
        bpfsys.update(self._fds["spa_key_count"], U32.pack(0), U32.pack(len(keys)))
        for i in range(len(keys), SPA_KEYS_MAX):
            bpfsys.update(fd, U32.pack(i), bytes(spakeys.SPA_KEY_SIZE))

    # -- SPA tags (the kernel's pre-filter, docs/admission.md) -----------------------------

    def set_spa_tags(self, table: Mapping[bytes, SpaTag]) -> tuple[int, int]:
        """Make exactly these hints live: hint (the IV's 4 first bytes) -> SpaTag. New and
        changed hints first, then the ones gone. Returns (written, removed)."""
        fd = self._fds["spa_tags"]
        have = {}
        for key in list(bpfsys.keys(fd, 4)):
            raw = bpfsys.lookup(fd, key, SPA_TAG.size)
            if raw is not None:
                have[key] = raw
        written = removed = 0
        for hint, tag in table.items():
            if len(hint) != 4:
                raise ValueError(f"a tag hint is 4 bytes, got {len(hint)}")
            raw = SPA_TAG.pack(tag.k0, tag.k1, tag.slot, tag.step & 0xFFFFFFFF)
            if have.get(hint) != raw:
                bpfsys.update(fd, hint, raw)
                written += 1
        for hint in set(have) - set(table):
            removed += bpfsys.delete(fd, hint)
        return written, removed

    def spa_tags(self) -> dict[bytes, SpaTag]:
        fd, out = self._fds["spa_tags"], {}
        for key in list(bpfsys.keys(fd, 4)):
            raw = bpfsys.lookup(fd, key, SPA_TAG.size)
            if raw is not None:
                out[key] = SpaTag(*SPA_TAG.unpack(raw))
        return out

    # -- spa_seen (the kernel's duplicate filter) -------------------------------------------

    def seen(self, key: bytes) -> SeenEntry | None:
        raw = bpfsys.lookup(self._fds["spa_seen"], bytes(key), SPA_SEEN_ENTRY.size)
        if raw is None:
            return None
        mac, src, _, first, state, alt, slot, _ = SPA_SEEN_ENTRY.unpack(raw)
        return SeenEntry(mac, addr_from16(src), first, SeenState(state), alt, slot)

    def seen_expect_many(self, items: Sequence[tuple[bytes, bytes, IPAddress, int]]) -> int:
        """For packets refused for their source only, each (seen key, MAC, the address the
        message names, identity slot): only a copy from that address may still pass the
        kernel (state SEEN_EXPECT). Returns how many entries were written."""
        fd, n = self._fds["spa_seen"], 0
        for key, mac, ip, slot in items:
            if len(key) != 16 or len(mac) != 32:
                raise ValueError("a seen key is 16 bytes and a MAC 32")
            old = self.seen(key)
            first = old.first_ns if old else time.monotonic_ns()
            raw = SPA_SEEN_ENTRY.pack(
                bytes(mac), addr16(ip), bytes(16), first, SeenState.EXPECT, 0, int(slot), 0
            )
            bpfsys.update(fd, bytes(key), raw)
            n += 1
        return n

    def budgets(self) -> list[tuple[int, int]]:
        """(window start ns, count) of every spa_budget slot (identities, then paths)."""
        fd, out = self._fds["spa_budget"], []
        for i in range(SPA_BUDGET_SLOTS):
            raw = bpfsys.lookup(fd, U32.pack(i), BUDGET.size)
            out.append(BUDGET.unpack(raw) if raw else (0, 0))
        return out

    def spa_key_count(self) -> int:
        raw = bpfsys.lookup(self._fds["spa_key_count"], U32.pack(0), 4)
        return U32.unpack(raw)[0] if raw else 0

    # -- counters, flows -----------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Packets per verdict reason, summed over CPUs."""
        fd = self._fds["counters"]
        size = bpfsys.value_buffer_size(MapType.PERCPU_ARRAY, 8)
        fmt = struct.Struct(f"={self._ncpu}Q")
        out = {}
        for i, name in enumerate(REASONS):
            raw = bpfsys.lookup(fd, U32.pack(i), size)
            out[name] = sum(fmt.unpack(raw)) if raw else 0
        return out

    def udp_flows(self) -> list[UdpFlow]:
        now = time.monotonic_ns()
        out = []
        for key, last in self._u64_items("udp_flows"):
            a, sport, dport = FLOW_KEY.unpack(key)
            out.append(UdpFlow(addr_from16(a), sport, dport, last, (now - last) / 1e9))
        return out

    def clear(self, *names: str) -> None:
        """Empty maps by name (default: allow, udp_flows, spa_rate, spa_budget; not replay,
        static_allow, protected or counters). Clearing allow clears allow_hint too."""
        names = names or (
            "allow",
            "udp_flows",
            "spa_rate",
            "spa_budget",
            "fwknop_rate",
            "fwknop_budget",
        )
        if "allow" in names and "allow_hint" not in names:
            names = (*names, "allow_hint")
        for name in names:
            spec, fd = MAP_SPECS[name], self._fds[name]
            if spec.type in (MapType.ARRAY, MapType.PERCPU_ARRAY):
                zero = bytes(bpfsys.value_buffer_size(spec.type, spec.value_size))
                info = bpfsys.map_info(fd)
                for i in range(info.max_entries):
                    bpfsys.update(fd, U32.pack(i), zero)
                continue
            for key in list(bpfsys.keys(fd, spec.key_size)):
                bpfsys.delete(fd, key)
        if "static_allow" in names:
            self._set_static_count(0)

    # -- replay (daemon only; the program never reads it) --------------------------------

    def replay_remember(self, nonce: bytes, until_ms: int) -> None:
        if len(nonce) != 16:
            raise ValueError(f"nonce must be 16 bytes, got {len(nonce)}")
        bpfsys.update(self._fds["replay"], bytes(nonce), U64.pack(int(until_ms)))

    def replay_entries(self) -> dict[bytes, int]:
        return dict(self._u64_items("replay"))

    def replay_since(self) -> int:
        """CLOCK_BOOTTIME ns when the loader created the replay map afresh: it remembers every
        accepted packet from then on (0: always has)."""
        if "replay_since" not in self._fds:
            return 0
        raw = bpfsys.lookup(self._fds["replay_since"], U32.pack(0), U64.size)
        return U64.unpack(raw)[0] if raw else 0

    def set_replay_since(self, boottime_ns: int) -> None:
        bpfsys.update(self._fds["replay_since"], U32.pack(0), U64.pack(int(boottime_ns)))

    def replay_remember_many(self, items: Sequence[tuple[bytes, int]]) -> None:
        """Persist many (nonce, until_ms) in one syscall."""
        for nonce, _ in items:
            if len(nonce) != 16:
                raise ValueError(f"nonce must be 16 bytes, got {len(nonce)}")
        if items:
            _update_many(self._fds["replay"], dict(items), lambda u: U64.pack(int(u)))

    def replay_forget_many(self, nonces: Sequence[bytes]) -> int:
        """Forget many nonces (batched; one an LRU already evicted is skipped). Returns how
        many went."""
        fd, todo, n = self._fds["replay"], list(nonces), 0
        if len(todo) == 1:
            return int(bpfsys.delete(fd, todo[0]))
        while todo:
            try:
                done = bpfsys.delete_batch(fd, b"".join(todo), len(todo))
                return n + done
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
            # The batch stopped at a missing key: delete one by one from there.
            for nonce in todo:
                n += bpfsys.delete(fd, nonce)
            return n
        return n

    def replay_forget(self, nonce: bytes) -> bool:
        """Forget one nonce; True if it was there."""
        return bpfsys.delete(self._fds["replay"], bytes(nonce))

    def replay_prune(self, now_ms: int) -> int:
        """Forget nonces whose until is <= now_ms; returns how many."""
        fd, n = self._fds["replay"], 0
        for nonce, until in self.replay_entries().items():
            if until <= now_ms:
                n += bpfsys.delete(fd, nonce)
        return n
