"""What the host itself does, read once at start: its reply values, its firewall, its interfaces.

The closed disguise copies the kernel (docs/xdp.md, "Disguise"), so the loader reads what the
kernel would use from sysctl (TTL, hop limit, ICMP rate limits) in the gate's network
namespace. `disguise = auto` asks the firewall: a default-drop input policy makes an unused
port look filtered, anything else closed. And the gate must know every interface that can
deliver IP to this host (a tunnel decapsulates onto its own device, which the XDP program on
eth0 never sees).

The decisions are pure functions of what was read (firewall_disguise, classify, ratemask6);
the reading is at the edge (reply_params, nft_ruleset, interfaces).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from spagate.gate.kernel.abi import ReplyParams

SYSCTL = Path("/proc/sys")
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772
IFF_LOOPBACK = 0x8
# Enslaved to one of these, an interface hands its frames to the master: guard the master.
L2_MASTERS = frozenset({"bridge", "bond", "team", "openvswitch"})
# Kinds that never receive from a network (ifb loops traffic back for shaping).
NO_RX_KINDS = frozenset({"ifb", "dummy", "nlmon", "vcan", "vxcan"})
# The XDP program parses Ethernet: on these link types it cannot find the IP header yet.
ETHERNET_TYPES = frozenset({ARPHRD_ETHER})
KIND_NAMES = {512: "ppp", 65534: "none", 768: "ipip", 769: "ip6tnl", 776: "sit", 778: "gre"}


# --- reply values ---------------------------------------------------------------------------


def _sysctl(name: str, default: str) -> str:
    try:
        return (SYSCTL / name.replace(".", "/")).read_text().strip()
    except OSError:
        return default


def ratemask6(text: str) -> bool:
    """Is type 1 (destination unreachable) in net.ipv6.icmp.ratemask ("0-1,3-127")?"""
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            if int(lo) <= 1 <= int(hi or lo):
                return True
        except ValueError:
            continue
    return False


def icmp6_interval_ns(ratelimit_ms: int, route_prefixlen: int) -> int:
    """icmpv6_xrlim_allow: the ratelimit shrinks with the route's prefix length to the peer
    (tmo >>= (128 - plen) >> 5): /64 on-link peers get a quarter, a default route 1/16."""
    return ratelimit_ms * 1_000_000 >> ((128 - route_prefixlen) >> 5)


def reply_params(interfaces: tuple[str, ...] = (), v6_route_prefixlen: int | None = None):
    """The kernel's own reply values in this network namespace (sysctl)."""
    hop = 64
    for name in (*interfaces, "default"):
        v = _sysctl(f"net.ipv6.conf.{name}.hop_limit", "")
        if v.isdigit():
            hop = int(v)
            break
    plen = default_route6_prefixlen() if v6_route_prefixlen is None else v6_route_prefixlen
    return ReplyParams(
        ttl=int(_sysctl("net.ipv4.ip_default_ttl", "64")),
        hop_limit=hop,
        icmp_ratelimit_ns=int(_sysctl("net.ipv4.icmp_ratelimit", "1000")) * 1_000_000,
        icmp6_ratelimit_ns=icmp6_interval_ns(int(_sysctl("net.ipv6.icmp.ratelimit", "1000")), plen),
        icmp_ratemask=int(_sysctl("net.ipv4.icmp_ratemask", "6168")),
        icmp6_limit_unreach=ratemask6(_sysctl("net.ipv6.icmp.ratemask", "0-1,3-127")),
        icmp_msgs_per_sec=int(_sysctl("net.ipv4.icmp_msgs_per_sec", "1000")),
        icmp_msgs_burst=int(_sysctl("net.ipv4.icmp_msgs_burst", "50")),
        flow_secret=secrets.randbits(32),
    )


def default_route6_prefixlen() -> int:
    """0 when there is an IPv6 default route (peers come through it), else 64 (on-link)."""
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            if ipr.get_default_routes(family=10):
                return 0
    except Exception:  # no IPv6, no netlink: the on-link case
        pass
    return 64


# --- auto disguise ----------------------------------------------------------------------------


def firewall_disguise(ruleset: dict | None) -> tuple[str, str]:
    """(closed | filtered, why) from `nft -j list ruleset` (iptables-nft shows there too): an
    input hook chain whose policy is drop makes an unused port look filtered to a scan."""
    if ruleset is None:
        return "closed", "no nftables ruleset could be read: an unused port answers (closed)"
    for item in ruleset.get("nftables", []):
        chain = item.get("chain") if isinstance(item, dict) else None
        if chain and chain.get("hook") == "input" and chain.get("policy") == "drop":
            where = f"{chain.get('family')} {chain.get('table')} {chain.get('name')}"
            return "filtered", f"nftables chain {where} drops by default: unused ports are silent"
    return "closed", "no input chain drops by default: an unused port answers (closed)"


def nft_ruleset() -> dict | None:
    nft = shutil.which("nft")
    if nft is None:
        return None
    try:
        r = subprocess.run([nft, "-j", "list", "ruleset"], capture_output=True, text=True,
                           timeout=10)  # fmt: skip
        return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else {}
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def decide_disguise(configured: str) -> tuple[str, str]:
    if configured != "auto":
        return configured, f"disguise = {configured}"
    mode, why = firewall_disguise(nft_ruleset())
    return mode, f"disguise = auto: {why}"


# --- interfaces ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    kind: str  # the link kind (vxlan, wireguard, veth, ...) or the link type's name
    arphrd: int
    loopback: bool
    master_kind: str | None  # the kind of the master it is enslaved to, if any
    master: str | None = None  # the name of that master

    @property
    def carries_ip(self) -> bool:
        """Can deliver IP to this host itself (loopback is the host talking to itself)."""
        if self.loopback or self.kind in NO_RX_KINDS:
            return False
        return self.master_kind not in L2_MASTERS

    @property
    def guardable(self) -> bool:
        """The XDP program can parse what arrives here (Ethernet framing)."""
        return self.arphrd in ETHERNET_TYPES


def classify(links: list[dict]) -> list[Interface]:
    """Interfaces from simplified netlink link records: name, index, ifi_type, flags, kind,
    master (an index)."""
    by_index = {ln["index"]: ln for ln in links}
    out = []
    for ln in links:
        master = by_index.get(ln.get("master") or -1)
        kind = ln.get("kind") or KIND_NAMES.get(ln["ifi_type"], "ethernet")
        out.append(Interface(ln["name"], ln["index"], kind, ln["ifi_type"],
                             bool(ln["flags"] & IFF_LOOPBACK) or ln["ifi_type"] == ARPHRD_LOOPBACK,
                             (master or {}).get("kind") if master else None,
                             (master or {}).get("name") if master else None))  # fmt: skip
    return out


def link_record(msg) -> dict:
    """A pyroute2 RTM_NEWLINK message as classify() takes it."""
    info = msg.get_attr("IFLA_LINKINFO")
    return {
        "name": msg.get_attr("IFLA_IFNAME"),
        "index": msg["index"],
        "ifi_type": msg["ifi_type"],
        "flags": msg["flags"],
        "kind": info.get_attr("IFLA_INFO_KIND") if info else None,
        "master": msg.get_attr("IFLA_MASTER"),
    }


def interfaces() -> list[Interface]:
    """Every interface of this network namespace."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return classify([link_record(m) for m in ipr.get_links()])


def unguarded(
    guarded: Iterable[str], exempt: Iterable[str] = (), *, ifaces: list[Interface] | None = None
) -> list[Interface]:
    """IP-carrying interfaces without the gate, but for those exempt (`unguarded =`: left
    outside on purpose). The one rule the loader, the monitor and `status` apply."""
    ifaces = interfaces() if ifaces is None else ifaces
    outside = {*guarded, *exempt}
    return [i for i in ifaces if i.carries_ip and i.name not in outside]


# A frame to an IEEE 802.1D reserved group address (01:80:c2:00:00:0X) is not the bridge's (a
# bond's inactive slave passes it up too): the kernel delivers it on the port itself, where
# the master's XDP program never runs, and IP takes the unicast datagram inside (UDP does; TCP
# drops what was not sent to the host's MAC). These sysctls make IP drop such datagrams: IPv4
# ORs "all" with the device, IPv6 reads the receiving device's own ("default" is what devices
# created later start with). A knob that does not exist (IPv6 disabled) is no gap.
L2_MULTICAST = "drop_unicast_in_l2_multicast"


def l2_multicast_gaps(
    guarded: Iterable[str], ifaces: list[Interface] | None = None, read=None
) -> tuple[list[str], list[str]]:
    """(the guarded bridges, bonds and teams; the sysctls still to set to 1 so that none of
    their ports, nor the ports of a bond inside them, delivers IP around the gate).
    read(path) -> text, or None when there is no such knob."""
    ifaces = interfaces() if ifaces is None else ifaces
    read = read or (lambda path: _read(SYSCTL / path))
    guarded = set(guarded)
    masters = sorted(i.name for i in ifaces if i.name in guarded and i.kind in L2_MASTERS)
    if not masters:
        return [], []
    devices = [("ipv4", "all"), ("ipv6", "default")]
    below, seen = set(masters), set(masters)
    while below:  # a bond enslaved to a bridge: its ports receive too
        ports = [i.name for i in ifaces if i.master in below and i.name not in seen]
        devices += [("ipv6", p) for p in ports]
        below = set(ports)
        seen |= below
    gaps = []
    for fam, dev in devices:
        value = read(f"net/{fam}/conf/{dev}/{L2_MULTICAST}")
        if value is not None and value != "1":
            gaps.append(f"net.{fam}.conf.{dev}.{L2_MULTICAST}")
    return masters, gaps


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def l2_multicast_warning(masters: list[str], gaps: list[str]) -> str:
    return (
        f"{', '.join(masters)}: a frame to a reserved group MAC (01:80:c2:00:00:0X) reaches "
        "this host on a port, around the gate (UDP services answer it): set "
        + ", ".join(f"{g}=1" for g in gaps)
        + " (docs/threat-model.md, bridges)"
    )


def bare(names: Iterable[str], ifaces: list[Interface]) -> list[Interface]:
    """Those of names that are here without Ethernet framing: the program would read their IP
    header as Ethernet and pass every packet (the loader, the monitor and status ask)."""
    by_name = {i.name: i for i in ifaces}
    return [by_name[n] for n in names if n in by_name and not by_name[n].guardable]


SIOCGIFHWADDR = 0x8927


def ethernet_framed(name: str) -> bool:
    """Whether interface name (in this network namespace) is Ethernet-framed, by an ioctl: the
    worker's question, without a netlink library. True when it cannot tell (no such
    interface: others say so)."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s, SIOCGIFHWADDR, struct.pack("16s16x", name.encode()[:15]))
        except OSError:
            return True
    return struct.unpack_from("H", raw, 16)[0] in ETHERNET_TYPES


def describe(i: Interface) -> str:
    why = "" if i.guardable else " (not Ethernet-framed: spagate cannot guard it yet)"
    return f"{i.name} ({i.kind}){why}"


def unguarded_warning(found: list[Interface]) -> str:
    return (
        "UNGUARDED interfaces deliver IP to this host around the gate: "
        + ", ".join(describe(i) for i in found)
        + " (guard them too, e.g. interface = all; docs/threat-model.md, tunnels)"
    )
