"""Client configuration: parsing (pure), file permissions, lookup order, environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from spagate.client.config import (
    DEFAULT_PUBLIC_IP_URL,
    config_from_env,
    load_config,
    parse_config,
    read_config_file,
)
from spagate.errors import ConfigError

K = "ab" * 32
H = "cd" * 32


def parse(text, path="f", host=None, name=None):
    return parse_config(text, path).select(host, name)


def test_flat_sparoid_format():
    cfg = parse(f"key = {K}\nhmac-key = {H}\n", "f.ini")
    assert cfg.keys.key == bytes.fromhex(K) and cfg.keys.hmac_key == bytes.fromhex(H)
    assert cfg.public_ipv4_url == cfg.public_ipv6_url == DEFAULT_PUBLIC_IP_URL
    assert cfg.source == "f.ini" and cfg.profile == "default"
    assert cfg.port is None and cfg.ip is None


def test_one_section_comments_and_quotes():
    text = f'# me\n[alice]\n; c\nKEY="{K}"\nhmac-key =   {H.upper()}  \n'
    cfg = parse(text, "f.ini")
    assert cfg.keys.hmac_key == bytes.fromhex(H) and cfg.source == "f.ini [alice]"


def test_unknown_keys_are_errors_like_on_the_gate():
    with pytest.raises(ConfigError, match=r"^f:3: unknown key 'protectd' \(known keys: key, "):
        parse(f"key = {K}\nhmac-key = {H}\nprotectd = tcp/22\n")


def test_public_ip_urls():
    text = f"key={K}\nhmac-key={H}\npublic-ip-url = http://a/\npublic-ipv6-url = http://b/\n"
    cfg = parse(text, "f")
    assert (cfg.public_ipv4_url, cfg.public_ipv6_url) == ("http://a/", "http://b/")
    with pytest.raises(ConfigError, match=r"^f:3: public-ip-url must be an http"):
        parse(f"key={K}\nhmac-key={H}\npublic-ip-url = ftp://x\n", "f")


@pytest.mark.parametrize(
    "text, where, what",
    [
        (f"key = {K[:-1]}\nhmac-key = {H}", "f:1", "invalid key: 63 hex characters, expected 64"),
        (f"key = {K}\nhmac-key = {H}zz", "f:2", "invalid hmac-key: non-hex character 'z'"),
        (f"key = {K}\n\nhmac-key =", "f:3", "invalid hmac-key: empty"),
        (f"key = {K}\nkey = {K}\nhmac-key = {H}", "f:2", "key set twice (first on line 1)"),
        (f"key {K}\n", "f:1", "expected `name = value`"),
        ("[oops\n", "f:1", "a section header looks like [name]"),
        (f"key = {K}\n", "f", "the top has a key without its hmac-key"),
        ("", "f", "no client keys. The keys are the gate's"),
        (f"[a]\nkey = {K}\n[b]\nhmac-key = {H}\n", "f:1", "a has a key without its hmac-key"),
        (f"key = {K}\nhmac-key = {H}\nhost = x\n", "f:3", "host = belongs in a [section]"),
        (f"key = {K}\nhmac-key = {H}\n[w]\nhost = a/b\n", "f:4", "host: expected host name"),
        (f"key = {K}\nhmac-key = {H}\nport = 0\n", "f:3", "port: expected a UDP port"),
        (f"key = {K}\nhmac-key = {H}\nip = nowhere\n", "f:3", "ip: expected an IP address"),
        (f"[default]\nkey = {K}\nhmac-key = {H}\n", "f:1", "[default] is the top of the file"),
    ],
)
def test_errors_name_file_line_and_problem(text, where, what):
    with pytest.raises(ConfigError) as e:
        parse(text, "f")
    msg = str(e.value)
    assert msg.startswith(f"{where}: ") and what in msg and "\n" not in msg
    assert K[:-1] not in msg  # key material is never echoed


PROFILES = f"""
key = {K}
hmac-key = {H}
port = 9000

[work]
host = *.corp.example gate.example.net, !secret.corp.example
key = {"11" * 32}
hmac-key = {"22" * 32}

[lab]
host = 192.0.2.*  2001:db8:*
port = 8484
ip = source

[spare]
key = {"33" * 32}
hmac-key = {"44" * 32}
"""


@pytest.mark.parametrize(
    "host, profile, key, port",
    [
        ("ssh.corp.example", "work", "11", 9000),  # a glob; the port comes from the top
        ("GATE.example.net.", "work", "11", 9000),  # case and a trailing dot do not matter
        ("secret.corp.example", "default", K[:2], 9000),  # excluded by !pattern
        ("192.0.2.1", "lab", K[:2], 8484),  # a section without keys takes the top's
        ("2001:db8::1", "lab", K[:2], 8484),
        ("other.example", "default", K[:2], 9000),  # nothing matches: the top
    ],
)
def test_the_profile_is_chosen_by_host_like_ssh(host, profile, key, port):
    cfg = parse(PROFILES, host=host)
    assert (cfg.profile, cfg.keys.key.hex()[:2], cfg.port) == (profile, key, port)
    assert cfg.source == ("f" if profile == "default" else f"f [{profile}]")
    assert cfg.ip == ("source" if profile == "lab" else None)


def test_the_profile_is_chosen_by_name():
    assert parse(PROFILES, host="ssh.corp.example", name="spare").keys.key.hex()[:2] == "33"
    assert parse(PROFILES, host="ssh.corp.example", name="default").profile == "default"
    with pytest.raises(ConfigError, match=r"no profile \[nope\] \(profiles: default, work, lab"):
        parse(PROFILES, name="nope")


def test_without_top_keys_an_unmatched_host_is_an_error_naming_the_profiles():
    text = PROFILES.split("[work]")[1].split("[spare]")[0]
    text = "[work]" + text
    with pytest.raises(ConfigError) as e:
        parse(text, host="elsewhere.example")
    assert "no profile matches host 'elsewhere.example'" in str(e.value)
    assert "[work] host = *.corp.example" in str(e.value) and "-n NAME" in str(e.value)


def _write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_key_file_readable_by_others_refused(tmp_path, mode):
    f = _write(tmp_path / "k.ini", f"key={K}\nhmac-key={H}\n", mode)
    with pytest.raises(ConfigError) as e:
        read_config_file(f)
    assert f"chmod 600 {f}" in str(e.value) and f"{mode:04o}" in str(e.value)


def test_lookup_order(tmp_path):
    other = "ef" * 32
    env = {"SPAGATE_KEY": other, "SPAGATE_HMAC_KEY": other}
    assert load_config(env=env, home=tmp_path).source == "$SPAGATE_KEY"
    _write(tmp_path / ".sparoid.ini", f"key={H}\nhmac-key={K}\n", 0o600)
    assert load_config(env=env, home=tmp_path).keys.key == bytes.fromhex(H)
    _write(tmp_path / ".spagate.ini", f"key={K}\nhmac-key={H}\n", 0o400)
    assert load_config(env=env, home=tmp_path).keys.key == bytes.fromhex(K)
    explicit = _write(tmp_path / "x.ini", f"key={other}\nhmac-key={H}\n", 0o600)
    assert load_config(explicit, env=env, home=tmp_path).keys.key == bytes.fromhex(other)
    _write(tmp_path / ".spagate.ini", PROFILES, 0o600)
    assert load_config(env=env, home=tmp_path, host="a.corp.example").profile == "work"
    assert load_config(env=env, home=tmp_path, host="x", name="spare").profile == "spare"


def test_missing_everything(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(env={}, home=tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path}/.spagate.ini: not found: no client keys")
    assert "from the gate's operator" in msg and "chmod 600 ~/.spagate.ini" in msg
    assert "keygen >" not in msg and "SPAGATE_KEY and SPAGATE_HMAC_KEY" in msg
    with pytest.raises(ConfigError, match="nope.ini: not found"):
        load_config(tmp_path / "nope.ini", env={}, home=tmp_path)


def test_environment():
    assert config_from_env({}) is None
    cfg = config_from_env({"SPAROID_KEY": K, "SPAROID_HMAC_KEY": H})
    assert cfg.keys.key == bytes.fromhex(K) and cfg.source == "$SPAROID_KEY"
    both = {"SPAGATE_KEY": H, "SPAGATE_HMAC_KEY": H, "SPAROID_KEY": K, "SPAROID_HMAC_KEY": H}
    assert config_from_env(both).keys.key == bytes.fromhex(H)
    with pytest.raises(ConfigError, match=r"^\$SPAGATE_KEY: is set but \$SPAGATE_HMAC_KEY"):
        config_from_env({"SPAGATE_KEY": K})
    with pytest.raises(ConfigError, match=r"^\$SPAGATE_HMAC_KEY: invalid key: 3 hex"):
        config_from_env({"SPAGATE_KEY": K, "SPAGATE_HMAC_KEY": "abc"})


def test_fwknop_keys_alone_or_with_sparoids():
    from spagate.protocol.fwknop import FwknopKey

    fw = "fwknop-key-base64 = " + "QUFB" * 8 + "\nfwknop-hmac-key-base64 = " + "QkJC" * 16 + "\n"
    cfg = parse(fw + "fwknop-user = alice\nfwknop-port = 62202\n", "f")
    assert cfg.keys is None and cfg.protocol == "fwknop"
    assert cfg.fwknop_key == FwknopKey(b"AAA" * 8, b"BBB" * 16)
    assert (cfg.fwknop_user, cfg.fwknop_port) == ("alice", 62202)
    both = parse(f"key = {K}\nhmac-key = {H}\n" + fw, "f")
    assert both.protocol == "sparoid" and both.keys is not None and both.fwknop_key is not None
    assert parse(f"key = {K}\nhmac-key = {H}\nprotocol = fwknop\n" + fw, "f").protocol == ("fwknop")
    for bad, line, words in [
        ("fwknop-key-base64 = QUFB\n", 1, "needs both"),
        (fw + "fwknop-port = 70000\n", 3, "fwknop-port: expected a UDP port from 1 to 65535"),
        (fw + "protocol = knock\n", 3, "protocol: expected sparoid or fwknop"),
    ]:
        with pytest.raises(ConfigError, match=f"^f:{line}: .*{words}"):
            parse(bad, "f")


def test_a_profile_speaks_what_its_own_keys_speak():
    fw = "fwknop-key-base64 = " + "QUFB" * 8 + "\nfwknop-hmac-key-base64 = " + "QkJC" * 16 + "\n"
    text = (f"protocol = fwknop\n{fw}\n[work]\nhost = *.work\nkey = {K}\nhmac-key = {H}\n"
            f"\n[home]\nhost = *.home\n")  # fmt: skip
    assert parse(text, host="gw.work").protocol == "sparoid"  # its own sparoid keys
    assert parse(text, host="gw.home").protocol == "fwknop"  # nothing of its own: the top's
    assert parse(text).protocol == "fwknop"
    text = f"key = {K}\nhmac-key = {H}\n\n[fw]\nhost = fw.example\n{fw}"
    assert parse(text, host="fw.example").protocol == "fwknop"  # only fwknop keys of its own
    assert parse(text, host="other").protocol == "sparoid"


def test_a_pair_whose_two_keys_are_one_is_refused_as_the_gate_would(tmp_path):
    p = _write(tmp_path / "x.ini", f"key = {K}\nhmac-key = {K}\n", 0o600)
    with pytest.raises(ConfigError) as e:
        load_config(p, env={}, home=tmp_path)
    assert str(e.value) == f"{p}:2: key and hmac-key must differ (the gate refuses the pair)"
