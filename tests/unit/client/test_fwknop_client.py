"""The fwknop client helpers: -A parsing, fresh packets stamped with the clock, the user name."""

from __future__ import annotations

import os

import pytest

from spagate.client import fwknop as client
from spagate.errors import SpagateError
from spagate.protocol.fwknop import FwknopKey, ProtoPort, decode

KEY = FwknopKey(os.urandom(32), os.urandom(64))


def test_parse_access():
    assert client.parse_access("tcp/22") == (ProtoPort("tcp", 22),)
    assert client.parse_access("TCP/22, udp/53,tcp/22") == (
        ProtoPort("tcp", 22),
        ProtoPort("udp", 53),
    )
    for bad in ("", "tcp", "tcp/0", "tcp/65536", "icmp/1", "tcp/22,,udp/53"):
        with pytest.raises(SpagateError, match="-A"):
            client.parse_access(bad)


def test_make_packet_is_fresh_and_decodes():
    ports = client.parse_access("tcp/22")
    a = client.make_packet(KEY, "192.0.2.5", ports, user="alice", client_timeout=30, now_s=1234)
    b = client.make_packet(KEY, "192.0.2.5", ports, user="alice", client_timeout=30, now_s=1234)
    assert a != b  # new salt and random value each time
    m = decode(a, [KEY]).message
    assert (m.timestamp, m.user, m.client_timeout, str(m.ip)) == (1234, "alice", 30, "192.0.2.5")
    with pytest.raises(SpagateError, match="cannot build"):
        client.make_packet(KEY, "192.0.2.5", ports, user="a:b")


def test_default_user(monkeypatch):
    monkeypatch.setattr(client.getpass, "getuser", lambda: "carol")
    assert client.default_user() == "carol"
    monkeypatch.setattr(client.getpass, "getuser", lambda: "bad:name")
    assert client.default_user() == "spagate"

    def fail():
        raise OSError("no user")

    monkeypatch.setattr(client.getpass, "getuser", fail)
    assert client.default_user() == "spagate"
    m = decode(client.make_packet(KEY, "192.0.2.5", [ProtoPort("tcp", 22)]), [KEY]).message
    assert m.user == "spagate"
