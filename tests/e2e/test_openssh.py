"""Real OpenSSH through the gate: sshd on protected tcp/22, ssh with spagate as ProxyCommand."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

OPEN_SECONDS = 3


@pytest.fixture
def sshd(gate, tmp_path):
    """sshd in the gate namespace with a throwaway host key and one authorized client key."""
    d = tmp_path / "ssh"
    d.mkdir()
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True
        )
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    (d / "sshd_config").write_text(
        f"Port 22\nListenAddress 0.0.0.0\nListenAddress ::\nHostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPidFile none\nLogLevel VERBOSE\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    proc = gate.lab.spawn(
        "gate",
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
        stderr=subprocess.PIPE,
        text=True,
    )
    check = gate.lab.sh("gate", "for i in $(seq 50); do ss -ltn | grep -q ':22 ' && exit 0; "
                        "sleep 0.1; done; exit 1", check=False)  # fmt: skip
    assert check.returncode == 0, "sshd did not listen"
    gate.configure(f"protected = tcp/22\nopen-seconds = {OPEN_SECONDS}\n")
    gate.start()
    yield d
    proc.terminate()


def ssh_argv(gate, keydir: Path, proxy: str | None, fdpass: bool = True) -> list[str]:
    argv = [
        "ssh", "-F", "/dev/null", "-i", str(keydir / "client_key"),
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR",
    ]  # fmt: skip
    if proxy:
        argv += ["-o", f"ProxyCommand={proxy}", "-o", f"ProxyUseFdpass={'yes' if fdpass else 'no'}"]
    return [*argv, f"root@{gate.ip()}"]


def proxy_command() -> str:
    return f"{shlex.quote(sys.executable)} -m spagate connect -h %h -P %p --ip source"


def test_ssh_without_spa_times_out_and_is_not_refused(gate, sshd):
    t = time.monotonic()
    out = gate.lab.run("client", [*ssh_argv(gate, sshd, None), "true"], timeout=30)
    assert out.returncode == 255
    assert "timed out" in out.stderr, out.stderr
    assert "refused" not in out.stderr
    assert time.monotonic() - t >= 2.5


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("fdpass", [True, False], ids=["fdpass", "relay"])
def test_ssh_through_spagate_connect_in_one_step(gate, sshd, family, fdpass):
    gate.family = family
    argv = ssh_argv(gate, sshd, proxy_command(), fdpass)
    out = gate.lab.run(
        "client", [*argv, "echo logged in as $(id -un)"], env=gate.client_env(), timeout=60
    )
    assert out.returncode == 0, out.stderr + "\n".join(gate.log)
    assert out.stdout.strip() == "logged in as root"
    assert any("accept" in line for line in gate.log)


@pytest.mark.parametrize("fdpass", [True, False], ids=["fdpass", "relay"])
def test_the_session_stays_usable_after_the_window_closes(gate, sshd, fdpass):
    argv = ssh_argv(gate, sshd, proxy_command(), fdpass)
    session = gate.lab.spawn(
        "client",
        [*argv, 'while read l; do echo "got $l"; done'],
        env=gate.client_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def say(text: str) -> str:
        session.stdin.write(text + "\n")
        session.stdin.flush()
        return session.stdout.readline().strip()

    assert say("inside the window") == "got inside the window"
    time.sleep(OPEN_SECONDS + 1.5)
    assert say("after the window") == "got after the window"
    # ... while a fresh ssh without a knock is dropped again.
    out = gate.lab.run("client", [*ssh_argv(gate, sshd, None), "true"], timeout=30)
    assert out.returncode == 255 and "timed out" in out.stderr
    session.stdin.close()
    assert session.wait(10) == 0
