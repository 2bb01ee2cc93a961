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


def test_flat_sparoid_format():
    cfg = parse_config(f"key = {K}\nhmac-key = {H}\n", "f.ini")
    assert cfg.keys.key == bytes.fromhex(K) and cfg.keys.hmac_key == bytes.fromhex(H)
    assert cfg.public_ipv4_url == cfg.public_ipv6_url == DEFAULT_PUBLIC_IP_URL
    assert cfg.source == "f.ini"


def test_section_comments_quotes_and_unknown_names():
    text = f'# me\n[alice]\n; c\nKEY="{K}"\nhmac-key =   {H.upper()}  \nother = x\n'
    cfg = parse_config(text, "f.ini")
    assert cfg.keys.hmac_key == bytes.fromhex(H)


def test_public_ip_urls():
    text = f"key={K}\nhmac-key={H}\npublic-ip-url = http://a/\npublic-ipv6-url = http://b/\n"
    cfg = parse_config(text, "f")
    assert (cfg.public_ipv4_url, cfg.public_ipv6_url) == ("http://a/", "http://b/")
    with pytest.raises(ConfigError, match=r"^f:3: public-ip-url must be an http"):
        parse_config(f"key={K}\nhmac-key={H}\npublic-ip-url = ftp://x\n", "f")


@pytest.mark.parametrize(
    "text, where, what",
    [
        (f"key = {K[:-1]}\nhmac-key = {H}", "f:1", "invalid key: 63 hex characters, expected 64"),
        (f"key = {K}\nhmac-key = {H}zz", "f:2", "invalid hmac-key: non-hex character 'z'"),
        (f"key = {K}\n\nhmac-key =", "f:3", "invalid hmac-key: empty"),
        (f"key = {K}\nkey = {K}\nhmac-key = {H}", "f:2", "key set twice (first on line 1)"),
        (f"key {K}\n", "f:1", "expected `name = value`"),
        ("[oops\n", "f:1", "a section header looks like [name]"),
        (f"key = {K}\n", "f", "no `hmac-key = <64 hex characters>` line"),
        ("", "f", "no `key = <64 hex characters>` line"),
        (f"[a]\nkey = {K}\n[b]\nhmac-key = {H}\n", "f:4", "keys in more than one section"),
    ],
)
def test_errors_name_file_line_and_problem(text, where, what):
    with pytest.raises(ConfigError) as e:
        parse_config(text, "f")
    msg = str(e.value)
    assert msg.startswith(f"{where}: ") and what in msg and "\n" not in msg
    assert K[:-1] not in msg  # key material is never echoed


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
    _write(tmp_path / ".sparoid.ini", f"key={H}\nhmac-key={H}\n", 0o600)
    assert load_config(env=env, home=tmp_path).keys.key == bytes.fromhex(H)
    _write(tmp_path / ".spagate.ini", f"key={K}\nhmac-key={H}\n", 0o400)
    assert load_config(env=env, home=tmp_path).keys.key == bytes.fromhex(K)
    explicit = _write(tmp_path / "x.ini", f"key={other}\nhmac-key={H}\n", 0o600)
    assert load_config(explicit, env=env, home=tmp_path).keys.key == bytes.fromhex(other)


def test_missing_everything(tmp_path):
    with pytest.raises(ConfigError, match="no client keys: create it with `spagate keygen"):
        load_config(env={}, home=tmp_path)
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
    cfg = parse_config(fw + "fwknop-user = alice\nfwknop-port = 62202\n", "f")
    assert cfg.keys is None and cfg.protocol == "fwknop"
    assert cfg.fwknop_key == FwknopKey(b"AAA" * 8, b"BBB" * 16)
    assert (cfg.fwknop_user, cfg.fwknop_port) == ("alice", 62202)
    both = parse_config(f"key = {K}\nhmac-key = {H}\n" + fw, "f")
    assert both.protocol == "sparoid" and both.keys is not None and both.fwknop_key is not None
    assert parse_config(f"key = {K}\nhmac-key = {H}\nprotocol = fwknop\n" + fw, "f").protocol == (
        "fwknop"
    )
    for bad, line, words in [
        ("fwknop-key-base64 = QUFB\n", 1, "needs both"),
        (fw + "fwknop-port = 70000\n", 3, "fwknop-port: expected 1-65535"),
        (fw + "protocol = knock\n", 3, "protocol: expected sparoid or fwknop"),
    ]:
        with pytest.raises(ConfigError, match=f"^f:{line}: .*{words}"):
            parse_config(bad, "f")
