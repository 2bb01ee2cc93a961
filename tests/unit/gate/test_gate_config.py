"""The gate configuration: sparoid configs work unchanged; every mistake names file:line."""

import os
from ipaddress import ip_address, ip_network

import pytest

from spagate.errors import ConfigError
from spagate.gate.core.config import Port, Rate, load_config, parse_config

K1 = "ba0ba062e99615c1a8a0afd5e50072dd68b4fc51fd18c2c764ab34a1823a422b"
H1 = "30cb7afcf4fe933320e777500cbad0bc75159868d0181b65cde5e145c827541a"
K2 = "11" * 32
H2 = "22" * 32


def test_sparoid_server_config_works_unchanged():
    cfg = parse_config(
        f"""bind = 0.0.0.0
port = 8484
key = {K1}
hmac-key = {H1}
open-cmd = nft add element inet filter sparoid {{ %s }}
close-cmd =
nftables-cmd = nft add element inet filter sparoid {{ %s }}
"""
    )
    assert cfg.spa_port == 8484
    assert cfg.bind == ip_address("0.0.0.0")
    assert [i.name for i in cfg.identities] == ["default"]
    assert cfg.identities[0].keys.key == bytes.fromhex(K1)
    assert cfg.identities[0].keys.hmac_key == bytes.fromhex(H1)
    assert cfg.open_cmd.startswith("nft add element")
    assert cfg.close_cmd is None
    assert cfg.protected == (Port("tcp", 22),)
    assert any("nftables-cmd" in n and ":7:" in n for n in cfg.notes)
    assert any("tcp/22" in n for n in cfg.notes)


def test_spagate_keys_and_identities():
    cfg = parse_config(
        f"""interface = eth0, eth1
protected = tcp/22, udp/51820,tcp/2222
open-seconds = 30
allow = 192.0.2.0/24 2001:db8::/32
max-skew = 2500ms
rate = 2/s burst 4
xdp-mode = native
require-source-match = yes

[alice]
key = {K1}
hmac-key = {H1}
protected = tcp/22
open-seconds = 5

[bob]
key = {K2}
hmac-key = {H2}
"""
    )
    assert cfg.interfaces == ("eth0", "eth1")
    assert cfg.protected == (Port("tcp", 22), Port("tcp", 2222), Port("udp", 51820))
    assert cfg.allow == (ip_network("192.0.2.0/24"), ip_network("2001:db8::/32"))
    assert cfg.max_skew_ms == 2500
    assert cfg.rate == Rate(2.0, 4)
    assert cfg.xdp_mode == "native"
    assert cfg.require_source_match is True
    alice, bob = cfg.identities
    assert (alice.name, alice.ports, cfg.window(alice)) == ("alice", (Port("tcp", 22),), 5)
    assert (bob.name, bob.ports, cfg.window(bob)) == ("bob", None, 30)


@pytest.mark.parametrize(
    "text, line, words",
    [
        (f"key = {K1}\nhmac-key = {H1}\nbogus = 1\n", 3, "unknown key 'bogus'"),
        (f"key = {K1[:-2]}\nhmac-key = {H1}\n", 1, "key"),
        (f"key = {K1}\nhmac-key = {H1}zz\n", 2, "hmac-key"),
        (f"key = {K1}\nhmac-key = {H1}\nport = 70000\n", 3, "out of range"),
        (f"key = {K1}\nhmac-key = {H1}\nprotected = ssh\n", 3, "PROTO/PORT"),
        (f"key = {K1}\nhmac-key = {H1}\nallow = 10.0.0.0/33\n", 3, "not an IP address or CIDR"),
        (f"key = {K1}\nhmac-key = {H1}\nxdp-mode = fast\n", 3, "native"),
        (f"key = {K1}\nhmac-key = {H1}\nrequire-source-match = maybe\n", 3, "yes or no"),
        (f"key = {K1}\nhmac-key = {H1}\nrate = fast\n", 3, "N/s"),
        (f"key = {K1}\nkey = {K1}\nhmac-key = {H1}\n", 2, "set twice"),
        (f"key = {K1}\nhmac-key = {H1}\njust words\n", 3, "name = value"),
        (f"key = {K1}\nhmac-key = {H1}\n[a b]\n", 3, "section header"),
        (f"[a]\nkey = {K1}\nhmac-key = {H1}\nport = 1\n", 4, "gate-wide setting"),
        (f"[a]\nkey = {K1}\nhmac-key = {H1}\nprotected = tcp/80\n", 4, "not in the gate"),
        (f"[a]\nkey = {K1}\nhmac-key = {H1}\n[a]\n", 4, "defined twice"),
        (f"[a]\nkey = {K1}\n", 1, "no hmac-key"),
        (f"key = {K1}\nhmac-key = {K1}\n", 2, "must differ"),
    ],
)
def test_every_mistake_is_one_line_naming_file_and_line(text, line, words):
    with pytest.raises(ConfigError) as e:
        parse_config(text, "/etc/spagate.ini")
    msg = str(e.value)
    assert msg.startswith(f"/etc/spagate.ini:{line}: "), msg
    assert words in msg
    assert "\n" not in msg


def test_config_without_keys_or_with_shared_hmac_key_is_refused():
    with pytest.raises(ConfigError, match="no keys"):
        parse_config("port = 8484\n", "x.ini")
    with pytest.raises(ConfigError, match="share an hmac-key"):
        parse_config(f"[a]\nkey={K1}\nhmac-key={H1}\n[b]\nkey={K2}\nhmac-key={H1}\n", "x.ini")
    with pytest.raises(ConfigError, match="also the SPA port"):
        parse_config(f"key={K1}\nhmac-key={H1}\nprotected = udp/8484\n", "x.ini")


def test_load_refuses_a_key_file_others_can_read(tmp_path):
    p = tmp_path / "spagate.ini"
    p.write_text(f"key = {K1}\nhmac-key = {H1}\n")
    os.chmod(p, 0o644)
    with pytest.raises(ConfigError, match=r"chmod 600") as e:
        load_config(str(p))
    assert str(e.value).startswith(str(p))
    os.chmod(p, 0o600)
    assert load_config(str(p)).identities[0].name == "default"


@pytest.mark.parametrize(
    ("mode", "ok"), [(0o640, True), (0o600, True), (0o660, False), (0o644, False)]
)
def test_gate_commands_read_a_config_the_spagate_group_may_read(tmp_path, monkeypatch, mode, ok):
    """The package installs /etc/spagate.ini root:spagate 0640 (the worker reads it as the
    spagate user): the gate's commands accept that group read, never group write."""
    import grp

    from spagate.gate import cli

    here = grp.getgrgid(os.getgid())
    monkeypatch.setattr(grp, "getgrnam", lambda name: here if name == "spagate" else None)
    p = tmp_path / "spagate.ini"
    p.write_text(f"key = {K1}\nhmac-key = {H1}\n")
    os.chmod(p, mode)
    if ok:
        assert cli.load_config(str(p)).identities[0].name == "default"
    else:
        with pytest.raises(ConfigError, match=r"accessible by group or others"):
            cli.load_config(str(p))


def test_load_names_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.ini"))
    p = tmp_path / "bin.ini"
    p.write_bytes(b"port = 8484\n\xff\xfe\n")
    os.chmod(p, 0o600)
    with pytest.raises(ConfigError, match=r":2: not valid UTF-8"):
        load_config(str(p))


def test_more_identities_than_the_kernel_key_ring_are_refused():
    sections = "".join(
        f"[id{i}]\nkey = {i + 1:02x}{'00' * 31}\nhmac-key = {i + 100:02x}{'00' * 31}\n"
        for i in range(9)
    )
    with pytest.raises(ConfigError, match=r"t.ini:25: 9 identities: at most 8"):
        parse_config(sections, "t.ini")
    assert len(parse_config(sections.split("[id8]")[0], "t.ini").identities) == 8


def test_load_refuses_a_directory_and_a_file_owned_by_someone_else(tmp_path):
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(str(tmp_path))
    p = tmp_path / "spagate.ini"
    p.write_text(f"key = {K1}\nhmac-key = {H1}\n")
    os.chmod(p, 0o600)
    if os.geteuid() == 0:
        os.chown(p, 65534, 65534)
        with pytest.raises(ConfigError, match=r"owned by uid 65534: run chown root:root"):
            load_config(str(p))
