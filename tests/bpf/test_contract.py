"""C and Python agree: reason list, map layouts (as bcc compiled them), maps API arguments."""

from __future__ import annotations

import ctypes as ct
import re
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from pathlib import Path

import pytest

from spagate.gate.loader import SPA_EVENT_HEADER
from spagate.gate.maps import MAP_SPECS, REASONS, addr16, addr_from16

BPF = Path(__file__).resolve().parents[2] / "bpf"


def test_reasons_mirror_the_c_enum():
    text = (BPF / "reasons.h").read_text()
    found = dict(re.findall(r"REASON_(\w+)\s*=\s*(\d+)", text))
    count = int(found.pop("COUNT"))
    c_names = sorted(found, key=lambda n: int(found[n]))
    assert [int(found[n]) for n in c_names] == list(range(count))
    assert tuple(n.lower() for n in c_names) == REASONS


def test_map_layouts_match_bcc(gate):
    for name, spec in MAP_SPECS.items():
        table = gate._bpf[name.encode()]
        assert ct.sizeof(table.Key) == spec.key_size, name
        leaf = getattr(table, "sLeaf", table.Leaf)  # bcc: per-CPU Leaf is an array per CPU
        assert ct.sizeof(leaf) == spec.value_size, name
    assert SPA_EVENT_HEADER.size == 48


def test_spa_event_struct_matches_header():
    text = (BPF / "maps.h").read_text()
    body = re.search(r"struct spa_event \{(.*?)\};", text, re.S).group(1)
    fields = re.findall(r"(__u\d+|__u8)\s+(\w+)(\[\w+\])?;", body)
    assert [f[1] for f in fields] == [
        "src",
        "dst",
        "sport",
        "dport",
        "ifindex",
        "len",
        "copied",
        "key",
        "payload",
    ]


def test_address_forms():
    assert addr16("192.0.2.1") == addr16("::ffff:192.0.2.1") == addr16(IPv4Address("192.0.2.1"))
    assert addr_from16(addr16("::ffff:192.0.2.1")) == IPv4Address("192.0.2.1")
    with pytest.raises(ValueError):
        addr16("not-an-ip")


def test_maps_argument_errors(fresh):
    m = fresh.maps
    with pytest.raises(ValueError, match="needs a protocol"):
        m.allow("192.0.2.1", 1, None, 22)
    with pytest.raises(ValueError, match="protocol"):
        m.allow("192.0.2.1", 1, "icmp")
    with pytest.raises(ValueError, match="port"):
        m.allow("192.0.2.1", 1, "tcp", 70000)
    with pytest.raises(ValueError, match="16 bytes"):
        m.replay_remember(b"short", 1)
    with pytest.raises(ValueError):
        m.set_static(["192.0.2.1/24"])  # host bits set
    m.set_static(["192.0.2.0/24", IPv6Network("2001:db8::/32"), "10.0.0.1/32"])
    assert m.static() == [
        IPv4Network("10.0.0.1/32"),
        IPv4Network("192.0.2.0/24"),
        IPv6Network("2001:db8::/32"),
    ]
