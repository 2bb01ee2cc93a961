"""What an accepted message opens: its own address, the source, or nothing."""

from ipaddress import ip_address

from spagate.gate.core.config import Port, parse_config
from spagate.gate.core.policy import Grant, Refusal, decide

# random-looking keys: the gate refuses patterned ones (fewer than 8 distinct bytes)
KA = "5b0e0c7ad1e2f3a4958677a8b9cadbecfd0e1f20314253647586978a9bacbdce"
HA = "a1b2c3d4e5f60718293a4b5c6d7e8f90a2b4c6d8eaf1032547698badcfe13579"
KB = "0d1c2b3a49586776859493a2b1c0dfeefd0c1b2a39485766758493a2b1c0d9e8"
HB = "f0e1d2c3b4a5968778695a4b3c2d1e0ff1e2d3c4b5a69788796a5b4c3d2e1f00"

KEYS = f"key = {KA}\nhmac-key = {HA}\n"
SRC = ip_address("198.51.100.9")
DST = ip_address("192.0.2.1")


def cfg(extra=""):
    return parse_config(extra + KEYS, "t.ini")


def test_message_ip_is_opened_even_for_a_third_party():
    c = cfg()
    g = decide(c, c.identities[0], ip_address("203.0.113.7"), SRC, DST)
    assert isinstance(g, Grant)
    assert (g.ip, g.seconds, g.ports, g.third_party) == (ip_address("203.0.113.7"), 15, None, True)


def test_unspecified_means_the_packet_source():
    c = cfg()
    for unspecified in ("0.0.0.0", "::"):
        g = decide(c, c.identities[0], ip_address(unspecified), SRC, DST)
        assert isinstance(g, Grant) and g.ip == SRC and not g.third_party


def test_ipv4_mapped_addresses_compare_as_ipv4():
    c = cfg("require-source-match = yes\n")
    g = decide(c, c.identities[0], ip_address("::ffff:198.51.100.9"), SRC, DST)
    assert isinstance(g, Grant) and g.ip == SRC


def test_require_source_match_refuses_other_addresses():
    c = cfg("require-source-match = yes\n")
    r = decide(c, c.identities[0], ip_address("203.0.113.7"), SRC, DST)
    assert isinstance(r, Refusal) and r.reason == "source-mismatch"


def test_bind_restricts_the_destination():
    c = cfg("bind = 192.0.2.1\n")
    assert isinstance(decide(c, c.identities[0], SRC, SRC, DST), Grant)
    r = decide(c, c.identities[0], SRC, SRC, ip_address("192.0.2.99"))
    assert isinstance(r, Refusal) and r.reason == "wrong-destination"


def test_multicast_is_refused():
    c = cfg()
    r = decide(c, c.identities[0], ip_address("224.0.0.1"), SRC, DST)
    assert isinstance(r, Refusal) and r.reason == "unusable-ip"


def test_identity_ports_and_window():
    c = parse_config(
        "protected = tcp/22, udp/51820\nopen-seconds = 20\n"
        f"[wg]\nkey = {KB}\nhmac-key = {HB}\n"
        "protected = udp/51820\nopen-seconds = 60\n",
        "t.ini",
    )
    g = decide(c, c.identities[0], SRC, SRC, DST)
    assert isinstance(g, Grant) and g.ports == (Port("udp", 51820),) and g.seconds == 60


def test_require_source_match_refuses_a_message_naming_no_address():
    c = cfg("require-source-match = yes\n")
    for unspecified in ("0.0.0.0", "::"):
        r = decide(c, c.identities[0], ip_address(unspecified), SRC, DST)
        assert isinstance(r, Refusal) and r.reason == "source-mismatch"


def test_bind_0_0_0_0_takes_ipv4_only_as_sparoid():
    c = cfg("bind = 0.0.0.0\n")
    assert isinstance(decide(c, c.identities[0], SRC, SRC, DST), Grant)
    v6 = ip_address("2001:db8::1")
    r = decide(c, c.identities[0], v6, v6, ip_address("2001:db8::2"))
    assert isinstance(r, Refusal) and r.reason == "wrong-destination"
    both = cfg("bind = ::\n")
    assert isinstance(decide(both, both.identities[0], v6, v6, ip_address("2001:db8::2")), Grant)
    assert any("IPv4 knocks only" in n for n in c.notes)
