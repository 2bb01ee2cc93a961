"""What the gate reads of the host: the auto disguise, ICMP limits, which interfaces carry IP."""

from spagate.gate.service import hostnet
from spagate.gate.service.hostnet import classify, firewall_disguise, icmp6_interval_ns, ratemask6


def _chain(**kw):
    return {"chain": {"family": "inet", "table": "filter", "name": "input", **kw}}


def test_auto_disguise_follows_the_input_policy():
    assert firewall_disguise(None)[0] == "closed"
    assert firewall_disguise({"nftables": []})[0] == "closed"
    accept = {"nftables": [_chain(hook="input", policy="accept"),
                           _chain(hook="output", policy="drop")]}  # fmt: skip
    assert firewall_disguise(accept)[0] == "closed"
    drop = {"nftables": [{"metainfo": {}}, _chain(hook="input", policy="drop")]}
    mode, why = firewall_disguise(drop)
    assert mode == "filtered" and "inet filter input" in why
    assert firewall_disguise({"nftables": [{"table": {}}, _chain(type="filter")]})[0] == "closed"


def test_icmp6_ratemask_and_route_scaling():
    assert ratemask6("0-1,3-127") and ratemask6("1") and ratemask6("0-3")
    assert not ratemask6("0,2-127") and not ratemask6("") and not ratemask6("x")
    assert icmp6_interval_ns(1000, 128) == 10**9
    assert icmp6_interval_ns(1000, 64) == 250_000_000  # (128 - 64) >> 5 = 2
    assert icmp6_interval_ns(1000, 0) == 62_500_000  # a default route: >> 4


def _link(name, index, ifi_type=1, flags=0x1003, kind=None, master=None):
    return dict(name=name, index=index, ifi_type=ifi_type, flags=flags, kind=kind, master=master)


def test_which_interfaces_carry_ip_and_which_the_program_can_parse():
    found = {i.name: i for i in classify([
        _link("lo", 1, 772, 0x49), _link("eth0", 2), _link("br0", 3, kind="bridge"),
        _link("veth1", 4, kind="veth", master=3), _link("vx0", 5, kind="vxlan"),
        _link("wg0", 6, 65534, kind="wireguard"), _link("ppp0", 7, 512),
        _link("ifb0", 8, kind="ifb"), _link("bond0", 9, kind="bond"), _link("eth1", 10, master=9),
        _link("gre1", 11, 778, kind="gre"),
        _link("tun0", 12, 65534, kind="tun"), _link("vrf0", 13, kind="vrf"),
        _link("eth2", 14, master=13),
    ])}  # fmt: skip
    carry = {n for n, i in found.items() if i.carries_ip}
    assert carry == {"eth0", "br0", "vx0", "wg0", "ppp0", "bond0", "gre1", "tun0", "vrf0", "eth2"}
    assert {n for n in carry if not found[n].guardable} == {"wg0", "ppp0", "gre1", "tun0"}
    assert found["ppp0"].kind == "ppp" and found["eth0"].kind == "ethernet"
    guarded, exempt = {"eth0", "br0", "bond0", "vrf0"}, {"eth2"}  # eth2: unguarded = eth2
    left = hostnet.unguarded(guarded, exempt, ifaces=list(found.values()))
    assert "eth2" not in {i.name for i in left} and "vx0" in {i.name for i in left}
    msg = hostnet.unguarded_warning(left)
    assert "vx0 (vxlan)" in msg and "wg0 (wireguard) (not Ethernet-framed" in msg
    assert "lo" not in {i.name for i in left} and "veth1" not in msg


def test_which_sysctls_keep_ip_in_l2_multicast_off_the_ports_of_a_guarded_bridge_or_bond():
    ifaces = classify([
        _link("eth0", 2), _link("br0", 3, kind="bridge"), _link("veth1", 4, kind="veth", master=3),
        _link("tap0", 5, kind="tun", master=3), _link("bond0", 9, kind="bond"),
        _link("eth1", 10, master=9), _link("br1", 11, kind="bridge"), _link("p1", 12, master=11),
    ])  # fmt: skip
    KNOB = "drop_unicast_in_l2_multicast"
    on: set[str] = set()

    gone: set[str] = set()  # no such knob (IPv6 disabled)

    def read(path):
        return None if path in gone else "1" if path in on else "0"

    assert hostnet.l2_multicast_gaps(["eth0"], ifaces, read) == ([], [])  # no bridge guarded
    masters, gaps = hostnet.l2_multicast_gaps(["eth0", "br0", "bond0"], ifaces, read)
    assert masters == ["bond0", "br0"]  # br1 is not guarded: its port p1 is not ours to say
    assert gaps == [f"net.ipv4.conf.all.{KNOB}", f"net.ipv6.conf.default.{KNOB}",
                    f"net.ipv6.conf.veth1.{KNOB}", f"net.ipv6.conf.tap0.{KNOB}",
                    f"net.ipv6.conf.eth1.{KNOB}"]  # fmt: skip
    on.update({f"net/ipv4/conf/all/{KNOB}", f"net/ipv6/conf/default/{KNOB}",
               f"net/ipv6/conf/veth1/{KNOB}", f"net/ipv6/conf/tap0/{KNOB}"})  # fmt: skip
    assert hostnet.l2_multicast_gaps(["br0", "bond0"], ifaces, read)[1] == [
        f"net.ipv6.conf.eth1.{KNOB}"
    ]
    msg = hostnet.l2_multicast_warning(masters, [f"net.ipv6.conf.eth1.{KNOB}"])
    assert msg.startswith("bond0, br0: a frame to a reserved group MAC (01:80:c2:00:00:0X)")
    assert msg.endswith(f"set net.ipv6.conf.eth1.{KNOB}=1 (docs/threat-model.md, bridges)")
    gone.add(f"net/ipv6/conf/eth1/{KNOB}")
    assert hostnet.l2_multicast_gaps(["br0", "bond0"], ifaces, read)[1] == []
    # a bond inside a guarded bridge: the bond's own ports receive too
    nested = classify([_link("br0", 3, kind="bridge"), _link("bond1", 4, kind="bond", master=3),
                       _link("e5", 5, master=4)])  # fmt: skip
    assert hostnet.l2_multicast_gaps(["br0"], nested, lambda path: "0")[1][2:] == [
        f"net.ipv6.conf.bond1.{KNOB}",
        f"net.ipv6.conf.e5.{KNOB}",
    ]
