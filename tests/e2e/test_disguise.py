"""The disguise from outside: nmap and raw frames from an attacker host against a real gate.

closed: every protected port and the SPA port look exactly like a port nobody uses on the same
host (nmap gives the same state; the RST and ICMP replies match the kernel's field by field).
filtered: they look like a port a default-drop nftables policy drops. disguise = auto picks
one from the gate host's firewall.
"""

from __future__ import annotations

import sys
import time
import xml.etree.ElementTree as ET

import pytest

from spagate.lab import packets as pk
from spagate.lab.util import wait_for

PROTECTED = "protected = tcp/22, udp/51820\n"
TCP_PORTS = {"protected": 22, "unused": 23}
UDP_PORTS = {"protected": 51820, "spa": 8484, "unused": 51821}
# A default-drop input policy that drops exactly the unused ports (the comparison).
NFT_DROP = """table inet cmp {
  chain input {
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    iif lo accept
    meta l4proto { icmp, ipv6-icmp } accept
    tcp dport != 23 accept
    udp dport != 51821 accept
  }
}
"""
SCANS = ["-sS", "-sA", "-sF", "-sN", "-sX", "-sW", "-sM"]


def nmap(lab, target: str, scan: str, ports) -> dict[int, str]:
    argv = ["nmap", "-Pn", "-n", "-T5", "--max-retries", "1", "--host-timeout", "60s", scan,
            "-p", ",".join(map(str, ports)), "-oX", "-", target]  # fmt: skip
    if ":" in target:
        argv.insert(1, "-6")
    out = lab.run("client", argv, timeout=120)
    assert out.returncode == 0, out.stderr
    root = ET.fromstring(out.stdout)
    return {int(p.get("portid")): p.find("state").get("state") for p in root.iter("port")}


def scan_all(lab, target: str) -> dict[str, dict[int, str]]:
    got = {s: nmap(lab, target, s, TCP_PORTS.values()) for s in SCANS}
    got["-sU"] = nmap(lab, target, "-sU", UDP_PORTS.values())
    return got


def assert_alike(got: dict[str, dict[int, str]], expected: dict[str, str]) -> None:
    for scan, states in got.items():
        ports = UDP_PORTS if scan == "-sU" else TCP_PORTS
        unused = states[ports["unused"]]
        assert unused == expected[scan], (scan, states)  # the scan itself saw what it should
        for what, port in ports.items():
            assert states[port] == unused, (scan, what, states)


def test_closed_every_scan_sees_protected_and_spa_ports_as_unused_ones(gate):
    gate.configure("disguise = auto\n" + PROTECTED)
    gate.service("tcp", 22)
    gate.service("udp", 51820)
    gate.start()
    assert any("disguise = auto: no input chain drops by default" in ln for ln in gate.log)
    got = scan_all(gate.lab, gate.ip())
    closed = {s: "closed" for s in SCANS} | {"-sA": "unfiltered", "-sU": "closed"}
    assert_alike(got, closed)
    # the protected service is still there for a key holder
    assert gate.send("client", "--ip", "source").returncode == 0
    assert wait_for(lambda: gate.probe("client").startswith("connected"))


def test_filtered_scans_see_protected_ports_as_a_default_drop_policy_does(gate):
    gate.lab.run("gate", ["nft", "-f", "-"], input=NFT_DROP, check=True)
    gate.configure("disguise = auto\n" + PROTECTED)
    gate.service("tcp", 22)
    gate.start()
    assert any("disguise = auto: nftables chain inet cmp input drops" in ln for ln in gate.log)
    got = scan_all(gate.lab, gate.ip())
    filtered = {s: "open|filtered" for s in ("-sF", "-sN", "-sX", "-sM", "-sU")}
    assert_alike(got, filtered | {"-sS": "filtered", "-sA": "filtered", "-sW": "filtered"})


# --- the replies, field by field -----------------------------------------------------------------


def _mac(lab, host: str) -> bytes:
    return bytes.fromhex(lab.sh(host, "cat /sys/class/net/eth0/address").stdout.strip()
                         .replace(":", ""))  # fmt: skip


def exchange(lab, frames: list[bytes], gap: float = 0.0) -> list[list[bytes]]:
    argv = [sys.executable, "-m", "spagate.lab.wire", "exchange", "eth0", _mac(lab, "gate").hex(),
            "-t", "0.6", "-g", str(gap), *(f.hex() for f in frames)]  # fmt: skip
    out = lab.run("client", argv, timeout=120)
    assert out.returncode == 0, out.stderr
    got = [[bytes.fromhex(h) for h in ln.split()] if ln != "-" else []
           for ln in out.stdout.splitlines()]  # fmt: skip
    return [[f for f in fs if not _neighbour(f)] for fs in got]


def _neighbour(frame: bytes) -> bool:
    """IPv6 neighbour discovery (the kernel resolving us for its own reply): not a reply."""
    d = pk.dissect(frame)
    return d["proto"] == pk.ICMP6 and 133 <= d.get("icmp_type", 0) <= 137


# Fields that legitimately differ: the IP ID (random for ICMP, per-destination in the kernel),
# the checksums (checked valid on both sides), the auto flow label (a keyed hash on both
# sides), the raw bytes, and the port itself.
SKIP = {"ip_id", "flow_label", "l3", "l4", "sport", "quote"}


def compare(gate_reply: bytes, kernel_reply: bytes, port: int, other: int, family: int) -> None:
    g, k = pk.dissect(gate_reply), pk.dissect(kernel_reply)
    assert g["l4_csum_ok"] and k["l4_csum_ok"]
    if family == 4:
        assert g["ip_csum_ok"] and k["ip_csum_ok"]
    else:
        assert (g["flow_label"] != 0) == (k["flow_label"] != 0)
    diff = {f: (g[f], k[f]) for f in g.keys() | k.keys() if f not in SKIP and g.get(f) != k.get(f)}
    assert not diff, diff
    if g["proto"] == pk.TCP:
        assert (g["sport"], k["sport"]) == (port, other)
    else:  # the quote: the same datagram but its destination port and UDP checksum
        hl = 20 if family == 4 else 40
        assert len(g["quote"]) == len(k["quote"])

        def masked(q: bytes) -> bytes:
            return q[: hl + 2] + q[hl + 4 : hl + 6] + q[hl + 8 :]

        assert masked(g["quote"]) == masked(k["quote"])


@pytest.mark.parametrize("family", [4, 6])
def test_gate_replies_match_the_kernels_for_an_unused_port(gate, family):
    gate.family = family
    gate.configure("disguise = closed\n" + PROTECTED)
    gate.start()
    lab = gate.lab
    # checksums computed in software, so the kernel's own are on the wire (a veth offloads)
    lab.sh("gate", "ethtool -K eth0 tx off >/dev/null")
    cm, gm = _mac(lab, "client"), _mac(lab, "gate")
    src, dst = gate.ip("client"), gate.ip()

    def frame(proto: int, l4: bytes, tos: int = 0) -> bytes:
        if family == 4:
            ip = pk.ipv4(src, dst, proto, l4, df=True, tos=tos, l4_checksum=True)
            return pk.eth(ip, dst_mac=gm, src_mac=cm)
        ip = pk.ipv6(src, dst, proto, l4, tclass=tos, flow_label=0x12345, l4_checksum=True)
        return pk.eth(ip, pk.ETH_IP6, dst_mac=gm, src_mac=cm)

    tcp_probes = [
        dict(flags=pk.SYN, seq=7, tos=0x2B),
        dict(flags=pk.ACK, seq=7, ack=0xCAFEBABE),
        dict(flags=pk.FIN, seq=0xFFFFFFFF),
        dict(flags=0, seq=100),
        dict(flags=pk.FIN | pk.PSH | pk.URG, seq=100),
        dict(flags=pk.SYN, seq=5, payload=b"data" * 5),
        dict(flags=pk.FIN | pk.ACK, seq=1, ack=2, tos=0x10),
    ]
    for p in tcp_probes:
        tos = p.pop("tos", 0)
        pair = [frame(pk.TCP, pk.tcp(40000, port, **p), tos) for port in (22, 23)]
        got = exchange(lab, pair)
        assert [len(x) for x in got] == [1, 1], [[pk.dissect(f) for f in x] for x in got]
        (g,), (k,) = got
        compare(g, k, 22, 23, family)
    # UDP: a short and a long datagram, to the protected port and to the SPA port
    udp_pairs = [((51820, 51821), b"hi", 0), ((51820, 51821), bytes(1300), 0x2B),
                 ((8484, 8485), bytes(96), 0)]  # fmt: skip
    for (port, other), payload, tos in udp_pairs:
        pair = [frame(pk.UDP, pk.udp(40000, p, payload), tos) for p in (port, other)]
        got = exchange(lab, pair, gap=0.05)
        assert [len(x) for x in got] == [1, 1], [[pk.dissect(f) for f in x] for x in got]
        (g,), (k,) = got
        compare(g, k, port, other, family)
    # a bad checksum gets nothing from either
    bad = [bytearray(frame(pk.TCP, pk.tcp(40000, p, pk.SYN))) for p in (22, 23)]
    for b in bad:
        b[-4] ^= 0xFF  # the TCP checksum
    assert exchange(lab, [bytes(b) for b in bad]) == [[], []]
    # and a reset nothing either
    rst = [frame(pk.TCP, pk.tcp(40000, p, pk.RST, seq=1)) for p in (22, 23)]
    assert exchange(lab, rst) == [[], []]


# --- tunnels -------------------------------------------------------------------------------------

INNER_GATE, INNER_CLIENT = "198.51.100.1", "198.51.100.2"


def vxlan(lab, host: str, dev: str, vni: int, local: str, remote: str, inner: str) -> None:
    lab.sh(host, f"ip link add {dev} type vxlan id {vni} dstport 4789 local {local} "
           f"remote {remote} && ip addr add {inner}/24 dev {dev} "
           f"&& ip link set {dev} up")  # fmt: skip


def inner_probe(lab, ip: str, port: int = 22) -> str:
    out = lab.run("client", [sys.executable, "-m", "spagate.lab.probe", "connect", ip,
                             str(port), "-t", "1.5"], timeout=30)  # fmt: skip
    return out.stdout.strip()


def tunnel(lab, vni: int, gate_inner: str, client_inner: str, dev: str) -> None:
    g, c = lab["gate"].v4, lab["client"].v4
    # the gate's configured peer is a host that does not exist: the attacker is not it
    vxlan(lab, "gate", dev, vni, g, "192.0.2.99", gate_inner)
    vxlan(lab, "client", dev, vni, c, g, client_inner)


def test_a_vxlan_tunnel_is_reported_unguarded_and_bypasses_an_eth0_gate(gate):
    lab = gate.lab
    tunnel(lab, 42, INNER_GATE, INNER_CLIENT, "vx0")
    gate.configure("protected = tcp/22\n")
    gate.service("tcp", 22)
    gate.start()
    assert gate.probe("client") == "timeout"  # eth0 is guarded
    warn = [ln for ln in gate.log if "UNGUARDED interfaces" in ln]
    assert warn and "vx0 (vxlan)" in warn[0]
    st = gate.spagate("status")
    assert st.returncode == 1 and "UNGUARDED: vx0 (vxlan)" in st.stdout
    # the class the warning is about: the tunnel walks around the gate
    assert wait_for(lambda: inner_probe(lab, INNER_GATE).startswith("connected"), 10)
    # a tunnel created after the start is an error too
    vxlan(lab, "gate", "vx1", 43, lab["gate"].v4, "192.0.2.98", "203.0.113.1")
    assert wait_for(lambda: any("vx1 (vxlan)" in ln for ln in gate.log), 10)


def start_interface_all(gate, extra: str = ""):
    """A tunnel vx0, then the gate with `interface = all` (and extra); returns its status."""
    tunnel(gate.lab, 42, INNER_GATE, INNER_CLIENT, "vx0")
    gate.interfaces = []
    gate.configure(f"interface = all\n{extra}protected = tcp/22\n")
    gate.service("tcp", 22)
    gate.start()
    st = gate.spagate("status")
    assert st.returncode == 0, st.stdout
    return st


def test_interface_all_guards_tunnels_also_those_created_later(gate):
    lab = gate.lab
    st = start_interface_all(gate)
    assert "eth0 (native)" in st.stdout and "vx0 (generic)" in st.stdout
    assert gate.probe("client") == "timeout"
    assert inner_probe(lab, INNER_GATE) == "timeout"
    # a VXLAN device made after the start: the monitor guards it (netlink), the worker keeps it
    tunnel(lab, 43, "203.0.113.1", "203.0.113.2", "vx1")
    assert wait_for(lambda: any("a new interface vx1: guarded it" in ln for ln in gate.log), 10)
    assert inner_probe(lab, "203.0.113.1") == "timeout"
    assert wait_for(lambda: "vx1" in gate.spagate("status").stdout, 5)
    st = gate.spagate("status")
    assert st.returncode == 0 and "UNGUARDED" not in st.stdout, st.stdout
    # a key holder still gets in
    assert gate.send("client", "--ip", "source").returncode == 0
    assert wait_for(lambda: gate.probe("client").startswith("connected"))


def test_interface_all_leaves_an_unguarded_interface_outside(gate):
    """`interface = all` with `unguarded = vx0` (the operator's management path): the gate
    guards eth0 and leaves vx0 alone, at start and when asked to re-attach; status is 0."""
    lab = gate.lab
    st = start_interface_all(gate, "unguarded = vx0\n")
    assert "eth0 (native)" in st.stdout and "vx0 (" not in st.stdout.split("\n")[0], st.stdout
    assert "outside the gate on purpose (unguarded =): vx0" in st.stdout, st.stdout
    assert "xdp" not in lab.sh("gate", "ip -d link show vx0").stdout
    assert gate.probe("client") == "timeout"  # eth0 is guarded
    assert inner_probe(lab, INNER_GATE).startswith("connected")  # the way in stays open
    # a link change on vx0 (the monitor re-checks every interface): still left alone
    lab.sh("gate", "ip link set vx0 down && ip link set vx0 up")
    time.sleep(1.5)
    assert "xdp" not in lab.sh("gate", "ip -d link show vx0").stdout
    assert not any("vx0: guarded it" in ln for ln in gate.log), gate.log[-5:]


def test_unguarded_leaves_only_the_named_interface_outside_and_status_still_fails_for_others(
    gate,
):
    lab = gate.lab
    tunnel(lab, 42, INNER_GATE, INNER_CLIENT, "vx0")  # named: a management tunnel, on purpose
    vxlan(lab, "gate", "vx1", 43, lab["gate"].v4, "192.0.2.98", "203.0.113.1")  # not named
    gate.configure("protected = tcp/22\nunguarded = vx0\n")
    gate.service("tcp", 22)
    gate.start()
    assert any("vx0 is left outside the gate on purpose" in ln for ln in gate.log), gate.log
    warn = [ln for ln in gate.log if "UNGUARDED interfaces" in ln]
    assert warn and "vx1 (vxlan)" in warn[0] and "vx0" not in warn[0], warn
    st = gate.spagate("status")
    assert st.returncode == 1, st.stdout  # vx1 is a hole nobody asked for
    assert "UNGUARDED: vx1 (vxlan)" in st.stdout and "UNGUARDED: vx0" not in st.stdout
    assert "outside the gate on purpose (unguarded =): vx0" in st.stdout, st.stdout
    # without vx1, the named one alone leaves status at 0
    lab.run("gate", ["ip", "link", "del", "vx1"], timeout=10)
    st = gate.spagate("status")
    assert st.returncode == 0, st.stdout
    assert "vx0" in st.stdout and "UNGUARDED" not in st.stdout
