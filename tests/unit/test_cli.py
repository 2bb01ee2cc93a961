"""The client CLI as a subprocess: help without root or bcc, keygen output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from spagate.client.config import read_config_file
from spagate.protocol import parse_hex_key


def run(*args: str, home: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "spagate", *args], capture_output=True, text=True, env=env
    )


def test_help_runs_without_root_or_bcc():
    out = subprocess.run(
        [sys.executable, "-m", "spagate", "--help"], capture_output=True, text=True, check=True
    )
    assert "keygen" in out.stdout


def test_client_imports_without_bcc_or_gate():
    code = (
        "import sys; sys.modules['bcc'] = None\n"
        "import spagate.client.cli, spagate.client.connect, spagate.client.send, spagate.protocol\n"
        "bad = [m for m in sys.modules if m == 'bcc' and sys.modules[m] is not None"
        " or m.startswith('spagate.gate')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_keygen_sparoid_format():
    r = run("keygen")
    assert r.returncode == 0 and r.stderr == ""
    assert re.fullmatch(r"key = [0-9a-f]{64}\nhmac-key = [0-9a-f]{64}\n", r.stdout)
    key, hmac_key = (line.split(" = ")[1] for line in r.stdout.splitlines())
    assert parse_hex_key(key) != parse_hex_key(hmac_key)
    assert run("keygen").stdout != r.stdout


def test_keygen_named_section_is_a_usable_config(tmp_path):
    r = run("keygen", "--name", "alice@laptop")
    assert re.fullmatch(
        r"\[alice@laptop\]\nkey = [0-9a-f]{64}\nhmac-key = [0-9a-f]{64}\n", r.stdout
    )
    f = tmp_path / "k.ini"
    f.write_text(r.stdout)
    f.chmod(0o600)
    assert read_config_file(f).keys.key.hex() == r.stdout.split("key = ")[1][:64]


def test_keygen_rejects_bad_name():
    r = run("keygen", "--name", "a]b\n")
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.strip().startswith("spagate: error: --name")
    assert len(r.stderr.strip().splitlines()) == 1


def test_connect_h_is_host_not_help():
    r = run("connect", "--help")
    assert r.returncode == 0 and "--host" in r.stdout and "-h" in r.stdout
    r = run("connect", "-h")  # -h needs a value: it is the host option
    assert r.returncode != 0 and "Show this message" not in r.stdout
