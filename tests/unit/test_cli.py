"""The client CLI as a subprocess: help without root or bcc, keygen output."""

from __future__ import annotations

import json
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


RUN_MANY = """
import contextlib, io, json, sys
from spagate.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    sys.argv = ["spagate", *argv]
    o, e, rc = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            main()
        except SystemExit as x:
            rc = x.code if isinstance(x.code, int) else (0 if x.code is None else 1)
    out.append([rc, o.getvalue(), e.getvalue()])
print(json.dumps(out))
"""


def run_many(*argvs: list[str]) -> list[tuple[int, str, str]]:
    """Several `spagate ARGV` in one process (the command line's own exit codes and output)."""
    r = subprocess.run([sys.executable, "-c", RUN_MANY, json.dumps(argvs)], capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return [tuple(x) for x in json.loads(r.stdout)]


def test_version_and_short_help():
    from spagate import __version__

    cases = [["--version"], ["-h"], ["send", "-h"], ["status", "-h"], ["top", "-h"]]
    (rc, out, _), *helps = run_many(*cases)
    assert rc == 0 and out == f"spagate {__version__}\n"
    for args, (rc, out, _) in zip(cases[1:], helps, strict=True):
        assert rc == 0 and "Usage: spagate" in out, args


COMMANDS = ["keygen", "send", "connect", "attach", "load", "monitor", "detach", "status", "top",
            "allow", "revoke", "demo"]  # fmt: skip


HELP_ALL = """
import json, sys
if sys.argv[1] == "plain":
    sys.modules["rich"] = None  # as the man page is made: click's own rendering
from typer.testing import CliRunner
from spagate.cli import build_app
app, out = build_app(), {}
for cmd in sys.argv[2:]:
    r = CliRunner().invoke(app, [cmd, "--help"], prog_name="spagate")
    assert r.exit_code == 0, (cmd, r.output)
    out[cmd] = r.output
print(json.dumps(out))
"""


def all_help(mode: str) -> dict[str, str]:
    """Every command's --help in one process: rich's rendering, or click's ("plain")."""
    r = subprocess.run([sys.executable, "-c", HELP_ALL, mode, *COMMANDS], capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_help_shows_flags_as_flags_and_the_defaults():
    plain, fancy = all_help("plain"), all_help("rich")
    for cmd in COMMANDS:
        for text in (plain[cmd], fancy[cmd]):
            assert "BOOLEAN" not in text and "[default: None]" not in text, (cmd, text)
            assert "[default: False]" not in text and "<bool>" not in text, (cmd, text)
    attach = " ".join(plain["attach"].split())
    assert "--keep-attached Leave" in attach and "--force Replace" in attach
    assert "[default: (the config's xdp-mode)]" in attach
    assert "[default: /etc/spagate.ini]" in attach
    send = " ".join(plain["send"].split())
    assert (
        "[default: (the profile's port, else 8484 (fwknop: 62201))]" in send
        and "-v, --verbose Say" in send
    )
    assert "[default: 60; 1<=x<=31536000]" in " ".join(plain["allow"].split())


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
    cases = (
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
        # a %zone was a ValueError: "internal error", exit 70
        (
            ["allow", "fe80::1%eth0"],
            "'fe80::1%eth0' is not an IP address (a %zone has no place here)",
        ),
        (["revoke", "2001:db8::1%eth0"], "is not an IP address (a %zone has no place here)"),
    )
    client = (  # the client's, before any packet leaves
        (
            ["send", "192.0.2.1", "--ip", "fe80::1%lo"],
            "'fe80::1%lo' is not an IP address or 'source' (a %zone",
        ),
        (["send", "192.0.2.1", "--ip", "224.0.0.1"], "--ip 224.0.0.1 is a multicast address"),
        (["send", "192.0.2.1", "--ip", "255.255.255.255"], "is the broadcast address"),
        (["connect", "-h", "192.0.2.1", "-P", "22", "--timeout", "nan"], "--timeout must be"),
        (["connect", "-h", "192.0.2.1", "-P", "22", "--timeout", "inf"], "at most 3600 s"),
    )
    results = run_many(*[[*args, "--pin-dir", "/nonexistent"] for args, _ in cases],
                       *[args for args, _ in client])  # fmt: skip
    for (args, want), (rc, out, err) in zip(cases + client, results, strict=True):
        assert rc == 2 and out == "", (args, out)
        assert err.startswith("spagate: error: ") and want in err, (args, err)
        assert len(err.splitlines()) == 1
