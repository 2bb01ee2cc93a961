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
    assert read_config_file(f).select(None).keys.key.hex() == r.stdout.split("key = ")[1][:64]


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


def test_version_and_short_help():
    from spagate import __version__

    r = run("--version")
    assert r.returncode == 0 and r.stdout == f"spagate {__version__}\n"
    for args in (["-h"], ["send", "-h"], ["status", "-h"], ["top", "-h"]):
        r = run(*args)
        assert r.returncode == 0 and "Usage: spagate" in r.stdout, args


COMMANDS = ["keygen", "send", "connect", "attach", "load", "monitor", "detach", "status", "top",
            "allow", "revoke", "demo"]  # fmt: skip


def plain_help(*args: str) -> str:
    """Help as click renders it without rich (as the man page is made)."""
    code = ("import sys; sys.modules['rich'] = None; sys.argv[0] = 'spagate'; "
            "from spagate.cli import main; main()")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_help_shows_flags_as_flags_and_the_defaults():
    for cmd in COMMANDS:
        for text in (plain_help(cmd, "--help"), run(cmd, "--help").stdout):
            assert "BOOLEAN" not in text and "[default: None]" not in text, (cmd, text)
            assert "[default: False]" not in text and "<bool>" not in text, (cmd, text)
    attach = " ".join(plain_help("attach", "--help").split())
    assert "--keep-attached Leave" in attach and "--force Replace" in attach
    assert "[default: (the config's xdp-mode)]" in attach
    assert "[default: /etc/spagate.ini]" in attach
    send = " ".join(plain_help("send", "--help").split())
    assert "[default: (the profile's port, else 8484)]" in send and "-v, --verbose Say" in send
    assert "[default: 60; 1<=x<=31536000]" in " ".join(plain_help("allow", "--help").split())


def tty_output(*args: str, **env: str) -> bytes:
    """What `spagate ARGS` writes to a terminal (a pty), with env added."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: stdout is the pty
        os.environ.update(env)
        os.execv(sys.executable, [sys.executable, "-m", "spagate", *args])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    return out


def test_no_ansi_unless_a_terminal_and_no_colour_with_no_color():
    assert "\x1b[" not in run("send", "--help").stdout  # a pipe: plain text
    coloured = tty_output("send", "--help", TERM="xterm-256color")
    assert re.search(rb"\x1b\[[0-9;]*3[0-9]", coloured)  # a terminal: colours
    plain = tty_output("send", "--help", TERM="xterm-256color", NO_COLOR="1")
    assert not re.search(rb"\x1b\[[0-9;]*(3[0-9]|9[0-7])[;m]", plain)  # no colour escapes


def test_demo_headings_carry_no_escapes_into_a_file(capsys, monkeypatch):
    from spagate.lab import demo

    demo._say("hello")
    assert capsys.readouterr().out == "\n==> hello\n"


def test_operator_commands_refuse_nonsense_before_touching_anything():
    for args, want in (
        (["allow", "0.0.0.0"], "0.0.0.0 names no host; no window opened"),
        (["allow", "::"], ":: names no host; no window opened"),
        (["allow", "::ffff:0.0.0.0"], "0.0.0.0 names no host"),
        (["allow", "224.0.0.1"], "224.0.0.1 is a multicast address"),
        (["allow", "ff02::1"], "ff02::1 is a multicast address"),
        (["allow", "255.255.255.255"], "255.255.255.255 is the broadcast address"),
        (["allow", "192.0.2.1", "--port", "sctp/1"], "--port: expected PROTO/PORT"),
        (["revoke"], "name an address to revoke, or pass --all (not both)"),
        (["revoke", "192.0.2.1", "--all"], "name an address to revoke, or pass --all"),
        (["revoke", "nope"], "'nope' is not an IP address"),
    ):
        r = run(*args, "--pin-dir", "/nonexistent")
        assert r.returncode == 2 and r.stdout == "", (args, r.stdout)
        assert r.stderr.startswith("spagate: error: ") and want in r.stderr, (args, r.stderr)
        assert len(r.stderr.splitlines()) == 1
