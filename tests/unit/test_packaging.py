"""Packaging and the Vagrant lab: what can be checked without VMs or systemd as PID 1.

The Vagrantfile goes through `vagrant validate` (core config, and the libvirt provider block with
Debian's vagrant-libvirt), the unit through `systemd-analyze verify`, shell scripts through
`bash -n` and shellcheck, ssh configs through `ssh -G`, gate configs through the real parser.
Each check is also run on a broken copy, to show that it can fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from spagate.errors import ConfigError
from spagate.gate.core.config import GateConfig, Port, parse_config
from spagate.gate.service.account import WORKER_START_CAPS
from spagate.protocol import parse_hex_key

REPO = Path(__file__).resolve().parents[2]
VAGRANT = REPO / "vagrant"
PACKAGING = REPO / "packaging"
DOCS = REPO / "docs"
SCRIPTS = [
    VAGRANT / "provision-gate.sh",
    VAGRANT / "provision-client.sh",
    VAGRANT / "install-deb.sh",
    VAGRANT / "gate-config.sh",
    VAGRANT / "client-ssh-config.sh",
    VAGRANT / "demo-ssh",
    VAGRANT / "held-session",
    VAGRANT / "build-box",
    VAGRANT / "host-libvirt",
    VAGRANT / "accel",
    VAGRANT / "vm-test",
    PACKAGING / "render-unit",
    PACKAGING / "build-deb",
    PACKAGING / "build-wheel",
    PACKAGING / "runtime-deps",
    PACKAGING / "debian" / "manpage",
    PACKAGING / "debian" / "spagate.postinst",
    PACKAGING / "debian" / "spagate.prerm",
    PACKAGING / "debian" / "spagate.postrm",
    REPO / "setup",
]
K = "f26384e5fe24638f0df2f33d65148fd1e04a7dd46c8a0cb4485b631a456212ea"
H = "29bd8de6d0cc88fd866e6ee76eea6f906a3acf9e91a11c011d5d9bec7102eb76"


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


# --- Vagrantfile -----------------------------------------------------------------------------


def validate(vagrant_dir: Path, tmp: Path, provider: str | None) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        VAGRANT_CWD=str(vagrant_dir),
        VAGRANT_HOME=str(tmp / "vagrant-home"),
        VAGRANT_DOTFILE_PATH=str(tmp / "dotfile"),  # keep .vagrant/ out of the checkout
        VAGRANT_CHECKPOINT_DISABLE="1",
    )
    if provider:
        env["VAGRANT_DEFAULT_PROVIDER"] = provider
        return run(["vagrant", "validate"], env=env)
    return run(["vagrant", "validate", "--ignore-provider"], env=env)


def test_vagrantfile_validates(tmp_path):
    core = validate(VAGRANT, tmp_path, None)
    assert core.returncode == 0, core.stdout + core.stderr
    assert "validated successfully" in core.stdout
    # Debian's vagrant-libvirt checks the libvirt block; VirtualBox needs VBoxManage to validate.
    libvirt = validate(VAGRANT, tmp_path, "libvirt")
    assert libvirt.returncode == 0, libvirt.stdout + libvirt.stderr


def test_vagrant_validate_catches_a_broken_vagrantfile(tmp_path):
    copy = tmp_path / "vagrant"
    shutil.copytree(VAGRANT, copy, ignore=shutil.ignore_patterns(".keys", ".vagrant"))
    vf = copy / "Vagrantfile"
    good = vf.read_text()

    vf.write_text(good.replace("lv.cpus", "lv.cpuz"))
    bad = validate(copy, tmp_path, "libvirt")
    assert bad.returncode != 0 and "cpuz" in bad.stdout + bad.stderr

    vf.write_text(good)
    (copy / "provision-gate.sh").unlink()
    bad = validate(copy, tmp_path, None)
    assert bad.returncode != 0 and "provision-gate.sh" in bad.stdout + bad.stderr
    # validate never made keys: that happens only before up/reload/provision
    assert not (copy / ".keys").exists()


def test_lab_keys_are_made_once_private_and_usable(tmp_path):
    copy = tmp_path / "vagrant"
    shutil.copytree(VAGRANT, copy, ignore=shutil.ignore_patterns(".keys", ".vagrant"))
    # The Vagrantfile's own make_lab_keys, with Vagrant.configure stubbed out.
    ruby = "module Vagrant; def self.configure(*); end; end; load ARGV[0]; make_lab_keys"
    for _ in range(2):
        r = run(["ruby", "-e", ruby, str(copy / "Vagrantfile")])
        assert r.returncode == 0, r.stderr
        if _ == 0:
            first = {p.name: p.read_bytes() for p in (copy / ".keys").iterdir()}
    keys = copy / ".keys"
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == first  # second run kept them
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for p in keys.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p

    spa = (keys / "spa.ini").read_text()
    values = dict(line.split(" = ") for line in spa.splitlines())
    assert set(values) == {"key", "hmac-key"}
    assert len(parse_hex_key(values["key"])) == len(parse_hex_key(values["hmac-key"])) == 32
    assert values["key"] != values["hmac-key"]

    pub = run(["ssh-keygen", "-y", "-f", str(keys / "demo_ssh_key")])
    assert pub.returncode == 0 and pub.stdout.startswith("ssh-rsa "), pub.stderr
    ignored = run(["git", "check-ignore", "vagrant/.keys/spa.ini"], cwd=REPO)
    assert ignored.returncode == 0, "vagrant/.keys/ must be gitignored"


def test_gate_vm_config_parses_and_protects_ssh_on_the_private_interface(tmp_path):
    keys = tmp_path / "spa.ini"
    keys.write_text(f"key = {K}\nhmac-key = {H}\n")
    r = run([str(VAGRANT / "gate-config.sh"), str(keys), "eth1"])
    assert r.returncode == 0, r.stderr
    cfg = parse_config(r.stdout, "/etc/spagate.ini")
    assert cfg.interfaces == ("eth1",)
    assert cfg.protected == (Port("tcp", 22),)
    assert cfg.xdp_mode == "native"
    assert cfg.identities[0].keys.key == bytes.fromhex(K)
    assert cfg.notes == ()


# --- ssh configs ------------------------------------------------------------------------------


def ssh_g(config: Path, host: str) -> dict[str, str]:
    r = run(["ssh", "-G", "-F", str(config), host])
    assert r.returncode == 0, r.stderr
    return dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)


def test_client_vm_ssh_config(tmp_path):
    r = run([str(VAGRANT / "client-ssh-config.sh"), "192.168.56.10"])
    assert r.returncode == 0, r.stderr
    conf = tmp_path / "config"
    conf.write_text(r.stdout)
    gate = ssh_g(conf, "gate")
    # the .deb's command
    assert gate["proxycommand"] == "/usr/bin/spagate connect -h %h -P %p --ip source"
    assert gate["proxyusefdpass"] == "yes"
    assert (gate["hostname"], gate["user"]) == ("192.168.56.10", "demo")
    direct = ssh_g(conf, "gate-direct")
    assert "proxycommand" not in direct and direct["hostname"] == "192.168.56.10"
    assert direct["connecttimeout"] == "5"

    conf.write_text(r.stdout.replace("ProxyUseFdpass", "ProxyUseFdpas"))
    assert run(["ssh", "-G", "-F", str(conf), "gate"]).returncode != 0


def test_ssh_config_doc_snippets_parse(tmp_path):
    blocks = re.findall(r"```ssh-config\n(.*?)```", (DOCS / "ssh_config.md").read_text(), re.S)
    assert len(blocks) >= 4
    seen_fdpass = set()
    for i, block in enumerate(blocks):
        conf = tmp_path / f"config{i}"
        conf.write_text(block)
        pattern = re.search(r"^(?:Host|Match host)\s+([^\s,]+)", block, re.M).group(1)
        host = pattern.replace("*", "x")
        opts = ssh_g(conf, host)
        assert "spagate connect -h %h -P %p" in opts["proxycommand"], block
        seen_fdpass.add(opts["proxyusefdpass"])
    assert seen_fdpass == {"yes", "no"}  # both the fd-passing and the relay form


# --- systemd unit -----------------------------------------------------------------------------


def fake_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / ".venv/bin").mkdir(parents=True)
    exe = repo / ".venv/bin/spagate"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return repo


def render(repo, unit: str = "spagate.service") -> subprocess.CompletedProcess:
    return run([str(PACKAGING / "render-unit"), str(repo), unit])


def verify(unit_text: str, tmp_path: Path, name: str = "spagate.service"):
    d = tmp_path / "units"
    d.mkdir(exist_ok=True)
    unit = d / name
    unit.write_text(unit_text)
    return run(["systemd-analyze", "verify", str(unit)])


UNITS = ("spagate.service", "spagate-monitor.service")


def test_units_render_and_verify_cleanly(tmp_path):
    for repo in (fake_repo(tmp_path), REPO):
        for unit in UNITS:
            r = render(repo, unit)
            assert r.returncode == 0, r.stderr
            assert "@SPAGATE@" not in r.stdout and "@DOC@" not in r.stdout
            assert f"{repo}/.venv/bin/spagate " in r.stdout
            v = verify(r.stdout, tmp_path, unit)
            # systemd-analyze warns about unknown keys but exits 0: any output is a failure
            assert v.returncode == 0 and v.stdout + v.stderr == "", v.stdout + v.stderr
    gate = render(REPO, "spagate.service").stdout
    assert re.search(r"^ExecStartPre=\+\S+/spagate load -c /etc/spagate.ini$", gate, re.M)
    assert re.search(
        r"^ExecStart=\S+/spagate worker -c /etc/spagate.ini --drop-privileges ", gate, re.M
    )


def test_unit_verify_catches_mistakes(tmp_path):
    good = render(fake_repo(tmp_path)).stdout
    typo = verify(good.replace("ProtectSystem=", "ProtectSistem="), tmp_path)
    assert "ProtectSistem" in typo.stdout + typo.stderr
    missing = verify(good.replace(str(tmp_path), "/nonexistent"), tmp_path)
    assert missing.returncode != 0 and "/nonexistent" in missing.stdout + missing.stderr


def test_unit_keeps_to_the_documented_privileges():
    text = (PACKAGING / "spagate.service").read_text()
    caps = re.search(r"^CapabilityBoundingSet=(.*)$", text, re.M).group(1).split()
    # exactly what the worker starts with: enough to drop to the spagate user, keeping CAP_BPF
    assert sorted(caps) == sorted(WORKER_START_CAPS)
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/sys/fs/bpf",
                 "RuntimeDirectory=spagate", "Group=spagate", "MemoryDenyWriteExecute=yes",
                 "PrivateDevices=yes", "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
                 "ProtectClock=yes", "ProtectProc=invisible", "AmbientCapabilities="):  # fmt: skip
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    assert re.search(r"^SystemCallFilter=@system-service bpf$", text, re.M)
    assert re.search(r"^RestrictAddressFamilies=", text, re.M)
    assert re.search(r"^MemoryMax=\d+M$", text, re.M)
    # the ring reader real-time (service.priority), nothing else of the unit: set by systemd
    # before the sandbox, reset on fork, and RestrictRealtime= forbids anything more
    for line in ("CPUSchedulingPolicy=fifo", "CPUSchedulingPriority=1",
                 "CPUSchedulingResetOnFork=yes", "RestrictRealtime=yes"):  # fmt: skip
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line


def test_unit_exposure_score_is_at_most_2_5(tmp_path):
    r = render(fake_repo(tmp_path))
    unit = tmp_path / "units" / "spagate.service"
    unit.parent.mkdir(exist_ok=True)
    unit.write_text(r.stdout)
    out = run(["systemd-analyze", "security", "--offline=yes", str(unit)])
    m = re.search(r"Overall exposure level for spagate.service: ([\d.]+)", out.stdout)
    assert m, out.stdout[-500:] + out.stderr
    assert float(m.group(1)) <= 2.5, out.stdout
    # and the check can fail: the same unit with the worker left as root with every capability
    loose = re.sub(r"^(CapabilityBoundingSet|Group|NoNewPrivileges|SystemCallFilter)=.*\n", "",
                   r.stdout, flags=re.M)  # fmt: skip
    unit.write_text(loose)
    out = run(["systemd-analyze", "security", "--offline=yes", str(unit)])
    assert float(re.search(r"exposure level for spagate.service: ([\d.]+)", out.stdout)[1]) > 2.5


def test_gate_unit_never_gives_up_but_does_not_spin():
    text = (PACKAGING / "spagate.service").read_text()
    unit = text.split("[Service]")[0]  # start limits belong in [Unit]
    # a unit that stops restarting locks every key holder out: no start limit, for either
    assert re.search(r"^StartLimitIntervalSec=0$", unit, re.M)
    monitor = (PACKAGING / "spagate-monitor.service").read_text().split("[Service]")[0]
    assert re.search(r"^StartLimitIntervalSec=0$", monitor, re.M)
    assert re.search(r"^Restart=always$", text, re.M)
    assert int(re.search(r"^RestartSec=(\d+)s$", text, re.M)[1]) >= 5


def test_monitor_unit_is_sandboxed_where_no_hook_can_care(tmp_path):
    r = render(fake_repo(tmp_path), "spagate-monitor.service")
    text = r.stdout
    for line in ("ProtectKernelLogs=yes", "ProtectClock=yes", "ProtectHostname=yes",
                 "LockPersonality=yes", "RestrictRealtime=yes", "SystemCallArchitectures=native",
                 "KeyringMode=private", "NoNewPrivileges=yes"):  # fmt: skip
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    # room for the 16 hooks the monitor runs at once (spagate.gate.service.hooks)
    assert int(re.search(r"^TasksMax=(\d+)$", text, re.M)[1]) >= 4 * 16
    assert int(re.search(r"^MemoryMax=(\d+)M$", text, re.M)[1]) >= 256
    # still root with every capability, for the hooks: nothing that could break nft or ip
    for key in ("User", "CapabilityBoundingSet", "SystemCallFilter", "ProtectSystem",
                "PrivateDevices", "PrivateNetwork", "RestrictAddressFamilies",
                "RestrictNamespaces", "ProtectKernelTunables", "ProtectKernelModules"):  # fmt: skip
        assert not re.search(rf"^{key}=", text, re.M), key
    unit = tmp_path / "units" / "spagate-monitor.service"
    unit.parent.mkdir(exist_ok=True)
    unit.write_text(text)
    out = run(["systemd-analyze", "security", "--offline=yes", str(unit)])
    m = re.search(r"Overall exposure level for spagate-monitor.service: ([\d.]+)", out.stdout)
    assert m, out.stdout[-500:] + out.stderr
    assert float(m[1]) <= 8.1, out.stdout  # 9.0 without the lines above


@pytest.mark.parametrize(
    ("repo", "message"),
    [
        ("relative/path", "absolute"),
        ("/with space", "characters"),
        ("/no/such/checkout", "run ./setup first"),
    ],
)
def test_render_unit_refuses_bad_paths(repo, message):
    r = render(repo)
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.startswith("render-unit: error:") and message in r.stderr
    assert r.stderr.count("\n") == 1


# --- the Python package ----------------------------------------------------------------------


def test_an_installed_package_finds_its_bpf_program(tmp_path):
    """pip install . from a copy of the tree (what a fresh clone holds) into a clean venv: the
    installed package carries bpf/gate.c and every header, and the loader finds them there."""
    tree = tmp_path / "clone"
    files = run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (tree / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, tree / f)
    venv = tmp_path / "venv"
    assert (
        run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)]).returncode == 0
    )
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-deps"]
    r = run([*pip, "--no-build-isolation", str(tree)])
    assert r.returncode == 0, r.stderr
    code = (
        "import spagate.gate.kernel.build as b, pathlib, sys\n"
        "assert 'site-packages' in str(b.GATE_SOURCE), b.GATE_SOURCE\n"
        "names = sorted(p.name for p in b.BPF_DIR.iterdir() if p.suffix in ('.c', '.h'))\n"
        "print(' '.join(names))\n"
    )
    r = run([str(venv / "bin/python"), "-c", code], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    shipped = {p.name for p in (REPO / "spagate/bpf").iterdir() if p.suffix in (".c", ".h")}
    assert "gate.c" in shipped and set(r.stdout.split()) == shipped


# --- shell scripts ----------------------------------------------------------------------------


def test_shell_scripts_pass_bash_n_and_shellcheck():
    for script in SCRIPTS:
        r = run(["bash", "-n", str(script)])
        assert r.returncode == 0, f"{script}: {r.stderr}"
    # setup predates this check and has a style note; warnings and errors count everywhere
    r = run(["shellcheck", "--severity=warning", *map(str, SCRIPTS)])
    assert r.returncode == 0, r.stdout
    r = run(["shellcheck", *(str(s) for s in SCRIPTS if s.name != "setup")])
    assert r.returncode == 0, r.stdout


def test_shell_checks_catch_broken_scripts(tmp_path):
    src = (VAGRANT / "provision-gate.sh").read_text()
    broken = tmp_path / "syntax.sh"
    broken.write_text(src.replace("done\n", "", 1))
    assert run(["bash", "-n", str(broken)]).returncode != 0
    unquoted = tmp_path / "unquoted.sh"
    unquoted.write_text(src.replace("chmod 0640 /etc/spagate.ini.new", "chmod 0640 $gate_ip"))
    r = run(["shellcheck", str(unquoted)])
    assert r.returncode != 0 and "SC2086" in r.stdout


# --- example configuration --------------------------------------------------------------------


def with_keys(text: str) -> str:
    text = re.sub(r"^key = .*$", f"key = {K}", text, flags=re.M)
    return re.sub(r"^hmac-key = .*$", f"hmac-key = {H}", text, flags=re.M)


def test_example_config_refuses_to_run_until_keys_are_filled_in():
    text = (PACKAGING / "spagate.ini.example").read_text()
    with pytest.raises(ConfigError) as e:
        parse_config(text, "/etc/spagate.ini")
    line = text.splitlines().index(next(x for x in text.splitlines() if x.startswith("key =")))
    assert str(e.value).startswith(f"/etc/spagate.ini:{line + 1}: key:")


def test_example_config_parses_and_its_shown_defaults_are_the_defaults():
    text = with_keys((PACKAGING / "spagate.ini.example").read_text())
    cfg = parse_config(text, "/etc/spagate.ini")
    assert cfg.interfaces == ("eth0",)
    assert cfg.protected == (Port("tcp", 22),)
    assert (cfg.spa_port, cfg.open_seconds, cfg.allow) == (8484, 15, ())
    assert [i.name for i in cfg.identities] == ["default"]

    optional = text.split("# Optional, defaults shown:")[1].split("\n\n")[0]
    settings = re.findall(r"^# ([a-z-]+ = .*)$", optional, re.M)
    assert len(settings) == 4
    uncommented = text.replace(optional, "\n" + "\n".join(settings) + "\n")
    assert parse_config(uncommented, "/etc/spagate.ini") == cfg

    section = text.split("# [alice-laptop]")[1]
    lines = "\n".join(line[2:] for line in section.splitlines() if line.startswith("# "))
    lines = lines.replace(
        "hmac-key = ...",
        "hmac-key = 9e4d2a7c1b3f5e8d0a6c4b2e9f1d3a5c7e0b8d6f4a2c1e3b5d7f9a0c2e4b6d8f",
    )
    named = (
        text
        + "\n[alice-laptop]\n"
        + lines.replace(
            "key = ...", "key = 2c7a9e1b4d6f8a0c3e5b7d9f1a2c4e6b8d0f3a5c7e9b1d4f6a8c0e2b5d7f9a1c"
        )
    )
    cfg2: GateConfig = parse_config(named, "/etc/spagate.ini")
    alice = cfg2.identities[1]
    assert (alice.name, alice.ports, alice.open_seconds) == ("alice-laptop", (Port("tcp", 22),), 30)


# --- the Debian package -----------------------------------------------------------------------

RUNTIME_DEPENDS = {
    "python3-bpfcc",
    "python3-cryptography",
    "python3-typer",
    "python3-pyroute2",
    "python3-prometheus-client",
    "python3-rich",
    "libbpf1",
    "adduser",
}


def tree_state() -> str:
    """What git sees in the checkout, ignored files included: a build must not change it."""
    r = run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=REPO)
    assert r.returncode == 0, r.stderr
    # .venv, caches and the lab's own files come and go with other tests and tools
    skip = (".venv/", ".pytest_cache/", ".ruff_cache/", ".hypothesis/", "vagrant/.")
    return "\n".join(
        line
        for line in r.stdout.splitlines()
        if not line[3:].startswith(skip) and "__pycache__" not in line
    )


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    before = tree_state()
    r = run([str(PACKAGING / "build-deb"), str(out)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "lintian" in r.stdout
    assert tree_state() == before, "make deb left files in the checkout"
    (built,) = out.glob("spagate_*_all.deb")
    return built


def deb_field(deb: Path, field: str) -> str:
    r = run(["dpkg-deb", "-f", str(deb), field])
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_deb_passes_lintian_without_errors(deb):
    r = run(["lintian", "--fail-on", "error", str(deb)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert not re.search(r"^E: ", r.stdout, re.M), r.stdout


def test_deb_depends_on_debians_python_packages(deb):
    version = re.search(r'^version = "(.*)"$', (REPO / "pyproject.toml").read_text(), re.M)
    assert deb.name == f"spagate_{version.group(1)}_all.deb"
    depends = [d.strip() for d in deb_field(deb, "Depends").split(",")]
    names = {re.sub(r"\s*\(.*\)", "", d) for d in depends}
    assert names >= RUNTIME_DEPENDS, depends
    # The kernel headers are the running kernel's, which no Depends of an arch-all package can
    # name: recommended (per arch, the first with a candidate), and the loader names the one to
    # install (tests/e2e/test_gate.py). A Depends on the amd64 metapackage made the package
    # uninstallable on arm64.
    assert not any(n.startswith("linux-headers") for n in names), depends
    recommends = deb_field(deb, "Recommends")
    assert recommends == "linux-headers-amd64 | linux-headers-arm64 | linux-headers-generic"
    assert not any(n == "bcc" or n.startswith("python3-pip") for n in names)


def test_deb_installs_the_command_bpf_sources_unit_config_and_docs(deb, tmp_path):
    root = tmp_path / "root"
    assert run(["dpkg-deb", "-x", str(deb), str(root)]).returncode == 0
    listing = run(["dpkg-deb", "-c", str(deb)]).stdout
    assert re.search(r"^-rwxr-xr-x root/root .* \./usr/bin/spagate$", listing, re.M)
    site = root / "usr/lib/python3/dist-packages/spagate"
    assert (site / "cli.py").is_file()
    # the XDP program's sources as package data, all of them
    bpf_src = REPO / "spagate" / "bpf"
    shipped = {p.name: p.read_bytes() for p in (site / "bpf").glob("*.[ch]")}
    assert shipped == {p.name: p.read_bytes() for p in bpf_src.glob("*.[ch]")}
    assert "gate.c" in shipped
    # the units, with the package's paths; systemd accepts them as installed
    units = sorted((root / "lib/systemd/system").glob("*.service"))
    assert [u.name for u in units] == sorted(p.name for p in PACKAGING.glob("*.service"))
    for unit in units:
        text = unit.read_text()
        assert not re.search(r"@[A-Z]+@", text), text  # every placeholder filled in
        assert re.search(r"^ExecStart=.*/usr/bin/spagate ", text, re.M), text
    # the configuration: a conffile, root-only but for the group (set by postinst), that the
    # gate refuses to run with until keys are filled in
    assert re.search(r"^-rw-r----- root/root .* \./etc/spagate\.ini$", listing, re.M)
    ctrl = tmp_path / "ctrl"
    assert run(["dpkg-deb", "-e", str(deb), str(ctrl)]).returncode == 0
    assert (ctrl / "conffiles").read_text().split() == ["/etc/spagate.ini"]
    with pytest.raises(ConfigError):
        parse_config((root / "etc/spagate.ini").read_text(), "/etc/spagate.ini")
    # the spagate user: made at configure, gone at purge; the unit neither enabled nor started
    postinst = (ctrl / "postinst").read_text()
    assert "adduser --system --group" in postinst and "chown root:spagate" in postinst
    assert "deluser --system" in (ctrl / "postrm").read_text()
    # (dh_installsystemd --no-enable: enable only what was enabled before an upgrade)
    assert "if deb-systemd-helper debian-installed 'spagate.service'" in postinst
    # docs and the man page, with every command
    docs = root / "usr/share/doc/spagate"
    assert (docs / "copyright").is_file() and list(docs.glob("getting-started.md*"))
    assert list(docs.glob("configuration.md*")) and list(docs.glob("operations.md*"))
    # the fail2ban filter and jail, the Grafana dashboard, as they are in the tree
    examples = docs / "examples"
    for rel in ("fail2ban/filter.d/spagate.conf", "fail2ban/jail.d/spagate.conf",
                "grafana/spagate-dashboard.json"):  # fmt: skip
        shipped = examples / rel
        if not shipped.exists():
            shipped = shipped.with_name(shipped.name + ".gz")
            assert shipped.exists(), rel
            continue
        assert shipped.read_bytes() == (PACKAGING / rel).read_bytes(), rel
    man = run(
        ["man", "-l", str(root / "usr/share/man/man1/spagate.1.gz")],
        env=dict(os.environ, MANWIDTH="100"),
    )
    assert man.returncode == 0, man.stderr
    for command in ("attach", "keygen", "send", "connect", "status", "top", "allow", "revoke"):
        assert f"spagate {command}" in man.stdout
    assert "Traceback" not in man.stdout


STUBS = {
    # name: what the stub does besides logging its arguments to $LOG
    "adduser": "",
    "py3compile": "",
    "chown": "",
    "chmod": "",
    "chgrp": "",
    "sleep": "",
    "stat": 'echo "$FAKE_OWNER"',
    "dpkg-statoverride": '[ -n "$FAKE_OVERRIDE" ] && echo "$FAKE_OVERRIDE"',
    "deb-systemd-helper": 'case "$*" in *is-enabled*) [ -n "$FAKE_ENABLED" ];; esac',
    "deb-systemd-invoke": "",
    "systemctl": 'case "$*" in *is-active*) [ -n "$FAKE_ACTIVE" ];; esac',
}


def run_postinst(deb: Path, tmp: Path, *args: str, conf: bool = True, systemd: bool = False,
                 **fake: str) -> tuple[subprocess.CompletedProcess, list[str]]:  # fmt: skip
    """The built postinst with its two host paths moved into tmp and every command it runs
    (adduser, chown, systemctl, ...) a stub that logs its arguments."""
    ctrl = tmp / "ctrl"
    if not ctrl.exists():
        assert run(["dpkg-deb", "-e", str(deb), str(ctrl)]).returncode == 0
    root = tmp / "root"
    shutil.rmtree(root, ignore_errors=True)
    (root / "etc").mkdir(parents=True)
    if conf:
        (root / "etc/spagate.ini").write_text("key = x\n")
    if systemd:
        (root / "run/systemd/system").mkdir(parents=True)
    script = (ctrl / "postinst").read_text()
    for path in ("/etc/spagate.ini", "/run/systemd/system"):
        assert path in script, path
        script = script.replace(path, f"{root}{path}")
    postinst = tmp / "postinst"
    postinst.write_text(script)
    stubs = tmp / "stubs"
    stubs.mkdir(exist_ok=True)
    for name, body in STUBS.items():
        (stubs / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "$LOG"\n{body}\n')
        (stubs / name).chmod(0o755)
    log = tmp / "log"
    log.write_text("")
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "LOG": str(log), "FAKE_OWNER": "root:spagate",
           "FAKE_OVERRIDE": "", "FAKE_ENABLED": "", "FAKE_ACTIVE": "", **fake}  # fmt: skip
    r = run(["sh", str(postinst), *args], env=env)
    return r, log.read_text().splitlines()


def perms(calls: list[str]) -> list[str]:
    return [c for c in calls if c.split()[0] in ("chown", "chmod", "chgrp")]


def test_postinst_sets_the_config_owner_only_where_it_should(deb, tmp_path):
    conf = f"{tmp_path}/root/etc/spagate.ini"
    # a fresh install: root:spagate 0640, and the user made with bookworm's adduser options
    r, calls = run_postinst(deb, tmp_path, "configure", "")
    assert r.returncode == 0, r.stderr
    assert perms(calls) == [f"chown root:spagate {conf}", f"chmod 0640 {conf}"]
    assert any(c.startswith("adduser --system --group") and "--comment" in c for c in calls)
    # the administrator deleted the conffile: configure still succeeds, touching nothing
    for version in ("", "0.0.9"):
        r, calls = run_postinst(deb, tmp_path, "configure", version, conf=False)
        assert r.returncode == 0, r.stderr
        assert perms(calls) == [], calls
    # an upgrade keeps the administrator's owner and mode (a chmod 0600 survives)
    r, calls = run_postinst(deb, tmp_path, "configure", "0.0.9")
    assert r.returncode == 0 and perms(calls) == [], calls
    # ... but a new root:root copy from the package gets its group back, not a mode
    r, calls = run_postinst(deb, tmp_path, "configure", "0.0.9", FAKE_OWNER="root:root")
    assert r.returncode == 0 and perms(calls) == [f"chgrp spagate {conf}"], calls
    # a dpkg-statoverride wins, on a fresh install too
    for version in ("", "0.0.9"):
        r, calls = run_postinst(deb, tmp_path, "configure", version, FAKE_OWNER="root:root",
                                FAKE_OVERRIDE=f"root root 0600 {conf}")  # fmt: skip
        assert r.returncode == 0 and perms(calls) == [], calls


def test_postinst_warns_of_a_gate_that_did_not_come_back(deb, tmp_path):
    warning = "spagate: warning: spagate.service is not running after the package restarted"
    # an upgrade with systemd, the gate enabled and failing after the restart: said, not fatal
    r, calls = run_postinst(deb, tmp_path, "configure", "0.0.9", systemd=True, FAKE_ENABLED="1")
    assert r.returncode == 0, r.stderr
    assert "deb-systemd-invoke restart spagate-monitor.service spagate.service" in calls
    assert calls.index("systemctl --quiet is-active spagate.service") > calls.index(
        "deb-systemd-invoke restart spagate-monitor.service spagate.service"
    )
    assert warning in r.stderr and "journalctl -u spagate.service" in r.stderr
    assert "spagate-monitor.service is not running" in r.stderr
    # running after the restart: quiet
    r, _ = run_postinst(deb, tmp_path, "configure", "0.0.9", systemd=True, FAKE_ENABLED="1",
                        FAKE_ACTIVE="1")  # fmt: skip
    assert r.returncode == 0 and r.stderr == "", r.stderr
    # not enabled (a fresh install), or no systemd running: no question asked
    for kw in ({"systemd": True}, {"FAKE_ENABLED": "1"}):
        r, calls = run_postinst(deb, tmp_path, "configure", "", **kw)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert not any("is-active" in c for c in calls), calls


def test_deb_build_fails_on_a_lintian_error(tmp_path):
    # A copy of the tree (not a git checkout) without the copyright file: lintian's error
    # no-copyright-file must fail the build.
    files = run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO
    ).stdout.split("\0")
    copy = tmp_path / "tree"
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (copy / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy / f)
    (copy / "packaging/debian/copyright").unlink()
    r = run([str(copy / "packaging/build-deb"), str(tmp_path / "out")])
    assert r.returncode != 0
    assert "lintian reports errors" in r.stderr and "no-copyright-file" in r.stderr
    assert not list(tmp_path.glob("out/*.deb"))


# --- the local Vagrant box and the accelerator ------------------------------------------------


def test_box_packaging_writes_libvirt_metadata(tmp_path):
    img = tmp_path / "disk.qcow2"
    assert run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "3G"]).returncode == 0
    box = tmp_path / "test.box"
    r = run([str(VAGRANT / "build-box"), "--package", str(img), str(box)])
    assert r.returncode == 0, r.stderr
    listing = run(["tar", "-tf", str(box)]).stdout.split()
    assert sorted(listing) == ["box.img", "metadata.json"]
    meta = json.loads(run(["tar", "-xOf", str(box), "metadata.json"]).stdout)
    assert meta == {"provider": "libvirt", "format": "qcow2", "virtual_size": 3}

    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\0" * 4096)
    bad = run([str(VAGRANT / "build-box"), "--package", str(raw), str(tmp_path / "bad.box")])
    assert bad.returncode != 0 and "not a qcow2 image" in bad.stderr
    assert not (tmp_path / "bad.box").exists()


def test_runtime_deps_lists_the_first_alternative_of_each_depends_and_recommends(tmp_path):
    r = run([str(PACKAGING / "runtime-deps")])
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == sorted(RUNTIME_DEPENDS | {"linux-headers-amd64"})
    # without the control file: one line, no empty list
    copy = tmp_path / "packaging" / "runtime-deps"
    copy.parent.mkdir()
    shutil.copy(PACKAGING / "runtime-deps", copy)
    r = run([str(copy)])
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "debian/control not found" in r.stderr


TEST_TOOLS = {"vagrant", "vagrant-libvirt", "nmap", "netsniff-ng", "shellcheck", "openssh-server",
              "fwknop-server", "etcd-server", "lintian", "debhelper", "python3-pip"}  # fmt: skip


def test_setup_service_installs_only_the_runtime_dependencies():
    full = run([str(REPO / "setup"), "--print-packages"])
    assert full.returncode == 0, full.stderr
    assert set(full.stdout.split()) >= RUNTIME_DEPENDS | TEST_TOOLS
    lean = run([str(REPO / "setup"), "--service", "--print-packages"])
    assert lean.returncode == 0, lean.stderr
    # the kernel headers: setup's own search (the running kernel's, or the newest flavour)
    assert sorted(lean.stdout.split()) == sorted(RUNTIME_DEPENDS | {"python3", "python3-venv"})
    bad = run([str(REPO / "setup"), "--servic"])
    assert bad.returncode != 0 and "usage: sudo ./setup [--service]" in bad.stderr


def test_box_bakes_the_runtime_dependencies_of_debian_control():
    # what build-box puts into the box: the first alternative of each Depends and Recommends
    r = run([str(VAGRANT / "build-box"), "--print-deps"])
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == sorted(RUNTIME_DEPENDS | {"linux-headers-amd64"})


@pytest.mark.parametrize(("env", "want"), [("kvm", "kvm"), ("tcg", "tcg")])
def test_accel_override(env, want):
    r = run([str(VAGRANT / "accel")], env=dict(os.environ, SPAGATE_VM_ACCEL=env))
    assert (r.returncode, r.stdout) == (0, want + "\n")


def test_accel_detects_and_refuses_a_bad_override():
    env = {k: v for k, v in os.environ.items() if k != "SPAGATE_VM_ACCEL"}
    r = run([str(VAGRANT / "accel")], env=env)
    assert r.returncode == 0 and r.stdout in ("kvm\n", "tcg\n")
    cpu = Path("/proc/cpuinfo").read_text()
    if not re.search(r"\b(vmx|svm)\b", cpu) or Path("/sys/module/kvm_pvm").exists():
        assert r.stdout == "tcg\n"  # no hardware virtualization for the guest: emulate
    bad = run([str(VAGRANT / "accel")], env=dict(env, SPAGATE_VM_ACCEL="hvf"))
    assert bad.returncode != 0 and "kvm or tcg" in bad.stderr and bad.stdout == ""
