"""The gate end to end: real packets over veth, the daemon as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from spagate.lab.util import spa_verdicts, wait_for, xdp_counters
from spagate.protocol import generate_keypair, make_packet

PY = sys.executable


def craft(keys, ip: str, ts_ms: int | None = None) -> str:
    ts = time.time_ns() // 1_000_000 if ts_ms is None else ts_ms
    return make_packet(keys, ip, ts).hex()


def raw(gate, host: str, *payloads: str, port: int = 8484) -> str:
    out = gate.lab.run(
        host, [PY, "-m", "spagate.lab.probe", "raw", gate.ip(), str(port), *payloads, "-t", "1"]
    )
    return out.stdout.strip()


@pytest.mark.parametrize("family", [4, 6])
def test_the_story_invisible_opened_kept_closed(gate, family):
    gate.family = family
    gate.configure("protected = tcp/22\nopen-seconds = 3\n")
    gate.service()
    gate.start()
    assert gate.probe() == "timeout"

    sent = gate.send("client", "--ip", "source")
    assert sent.returncode == 0, sent.stderr
    hold = gate.hold()
    assert hold.stdout.readline().startswith("connected: hello")

    time.sleep(4)  # the window closes; the open connection must keep working
    hold.stdin.write("after the window\n")
    hold.stdin.flush()
    assert hold.stdout.readline().strip() == "echo after the window"
    assert gate.probe() == "timeout"

    c = xdp_counters(gate)
    assert c["tcp_dropped_new"] >= 2 and c["protected_allowed"] >= 1
    assert c["tcp_established"] >= 1
    assert spa_verdicts(gate) == {"accepted": 1}


def test_udp_service_outlives_the_window_while_packets_keep_coming(gate):
    gate.configure("protected = udp/5353\nopen-seconds = 2\nudp-idle = 2\n")
    gate.service("udp", 5353)
    gate.start()
    probe = gate.lab.spawn(
        "client",
        [PY, "-m", "spagate.lab.probe", "udp", gate.ip(), "5353", "-t", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def ask(text):
        probe.stdin.write(text + "\n")
        probe.stdin.flush()
        return probe.stdout.readline().strip()

    assert ask("before") == "timeout"
    assert gate.send("client", "--ip", "source").returncode == 0
    for i in range(6):  # 3 s past the 2 s window, a packet every 0.5 s
        assert ask(f"ping {i}") == f"echo ping {i}"
        time.sleep(0.5)
    time.sleep(3)  # idle longer than udp-idle, window long closed
    assert ask("late") == "timeout"
    assert xdp_counters(gate)["udp_flow"] >= 1


def test_the_spa_port_answers_nothing(gate):
    gate.configure()
    gate.start()
    assert raw(gate, "client", os.urandom(96).hex()) == "silent"
    # The same probe does see the kernel's ICMP port-unreachable of an ordinary closed port.
    assert raw(gate, "client", os.urandom(96).hex(), port=9999) == "icmp"


def test_replay_stale_and_wrong_key_are_rejected_and_counted(gate):
    gate.configure("open-seconds = 30\n")
    gate.service()
    gate.start()
    client = gate.lab["client"].v4
    stale = craft(gate.keys, client, ts_ms=time.time_ns() // 1_000_000 - 60_000)
    wrong = craft(generate_keypair(), client)
    for p in (stale, wrong):
        raw(gate, "client", p)
    assert gate.probe() == "timeout"
    good = craft(gate.keys, client)  # replayed below, well inside its 5 s window
    raw(gate, "client", good)
    assert wait_for(lambda: gate.probe() != "timeout")
    raw(gate, "client", good)
    # The replay is dropped in the kernel (spa_seen), a wrong key fails the MAC there: neither
    # reaches the daemon (its replay cache is covered across a restart below).
    assert wait_for(lambda: xdp_counters(gate)["spa_replay_dup"] == 1), "\n".join(gate.log)
    assert spa_verdicts(gate) == {"accepted": 1, "stale": 1}
    assert xdp_counters(gate)["spa_bad_mac"] == 1


def test_third_party_open_and_require_source_match(gate):
    gate.configure("open-seconds = 30\n")
    gate.service()
    gate.start()
    flood_ip = gate.lab["flood"].v4
    assert gate.send("client", "--ip", flood_ip).returncode == 0
    assert wait_for(lambda: gate.probe("flood").startswith("connected"))
    assert gate.probe("client") == "timeout"
    gate.stop()

    gate.configure("open-seconds = 30\nrequire-source-match = yes\n")
    gate.spagate("revoke", flood_ip)
    gate.start()
    assert gate.send("client", "--ip", flood_ip).returncode == 0
    assert wait_for(lambda: spa_verdicts(gate).get("source-mismatch")) == 1
    assert gate.probe("flood") == "timeout"
    assert gate.send("client", "--ip", "source").returncode == 0  # names no address: refused
    assert wait_for(lambda: spa_verdicts(gate).get("source-mismatch") == 2)
    assert gate.send("client", "--ip", gate.lab["client"].v4).returncode == 0
    assert wait_for(lambda: gate.probe("client").startswith("connected"))


def test_a_wrong_source_copy_first_does_not_burn_the_real_knock(gate):
    """require-source-match: an on-path copy sent first from elsewhere is refused without
    consuming the nonce, the kernel then lets only a copy from the named address through."""
    from spagate.gate.service.state import read_state

    # A wide skew: the three probe processes below take seconds on a loaded machine.
    gate.configure("open-seconds = 30\nrequire-source-match = yes\nmax-skew = 30\n")
    gate.service()
    gate.start()
    client = gate.lab["client"].v4
    knock = make_packet(gate.keys, client, time.time_ns() // 1_000_000, tagged=True).hex()
    raw(gate, "flood", knock)
    assert wait_for(lambda: spa_verdicts(gate).get("source-mismatch") == 1), "\n".join(gate.log)
    # Another wrong source now: a duplicate in the kernel (only the client's may pass).
    gate.lab.run(
        "flood", [PY, "-m", "spagate.lab.probe", "raw", gate.lab["gate"].v6, "8484", knock]
    )
    assert wait_for(lambda: xdp_counters(gate)["spa_replay_dup"] == 1)
    raw(gate, "client", knock)
    assert wait_for(lambda: gate.probe("client").startswith("connected")), "\n".join(gate.log)
    assert spa_verdicts(gate) == {"source-mismatch": 1, "accepted": 1}
    # The kernel sampled the duplicate with its source for the log.
    assert wait_for(lambda: (read_state(gate.pin_dir) or {}).get("drop_samples", 0) >= 1)


def test_static_allow_list_needs_no_spa(gate):
    gate.configure(f"allow = {gate.lab['flood'].v4}/32, {gate.lab['flood'].v6}/128\n")
    gate.service()
    gate.start()
    assert gate.probe("flood").startswith("connected")
    assert gate.probe("client") == "timeout"
    gate.family = 6
    assert gate.probe("flood").startswith("connected")
    assert xdp_counters(gate)["protected_static"] >= 2


def test_key_rotation_with_two_identities(gate):
    old, new = generate_keypair(), generate_keypair()
    gate.configure(
        "open-seconds = 30\n"
        f"[old]\nkey = {old.key.hex()}\nhmac-key = {old.hmac_key.hex()}\n"
        f"[new]\nkey = {new.key.hex()}\nhmac-key = {new.hmac_key.hex()}\n",
        keys=False,
    )
    gate.service()
    gate.start()
    stranger = gate.send("flood", "--ip", "source", env=gate.client_env(generate_keypair()))
    assert stranger.returncode == 0
    assert gate.send("client", "--ip", "source", env=gate.client_env(new)).returncode == 0
    assert wait_for(lambda: gate.probe("client").startswith("connected"))
    assert gate.send("flood", "--ip", "source", env=gate.client_env(old)).returncode == 0
    assert wait_for(lambda: gate.probe("flood").startswith("connected"))
    assert any("identity=new" in line for line in gate.log)
    assert any("identity=old" in line for line in gate.log)
    assert wait_for(lambda: spa_verdicts(gate) == {"accepted": 2}), spa_verdicts(gate)
    # The stranger's key (its 3 copies: untagged to the gate), dropped in the kernel.
    assert xdp_counters(gate)["spa_bad_mac"] == 3


def test_restart_keeps_windows_and_still_refuses_the_replay(gate):
    # A wide skew keeps the replayed packet fresh across three restarts (each compiles the
    # program, about 12 s each here: 30 s was not enough), so only the pinned spa_seen and
    # the restored replay cache can refuse it.
    gate.configure("open-seconds = 60\nmax-skew = 120\n")
    gate.service()
    gate.start()
    packet = craft(gate.keys, gate.lab["client"].v4)
    raw(gate, "client", packet)
    assert wait_for(lambda: gate.probe().startswith("connected"))

    # Stop with the program left guarding: the window and the guard both hold meanwhile.
    gate.stop()
    gate.start("--keep-attached")
    assert gate.stop() == 0
    assert gate.probe("client").startswith("connected")
    assert gate.probe("flood") == "timeout"

    gate.start()
    assert gate.probe("client").startswith("connected")
    # The kernel kept spa_seen (pinned) across the restarts: the replay is a duplicate there.
    raw(gate, "client", packet)
    assert wait_for(lambda: xdp_counters(gate)["spa_replay_dup"] == 1)
    # Without it (a new pin dir, a flushed map) the daemon's restored cache refuses it.
    from spagate.gate.kernel.maps import GateMaps

    with GateMaps.from_pin_dir(gate.pin_dir) as maps:
        maps.clear("spa_seen")
    raw(gate, "client", packet)
    assert wait_for(lambda: spa_verdicts(gate).get("replay")) == 1, "\n".join(gate.log)
    assert any("nonces restored" in line for line in gate.log)


def test_after_a_reboot_a_packet_stamped_before_the_gate_started_is_refused(gate):
    # A reboot empties bpffs: the replay map starts empty. A packet captured before (still
    # fresh under a wide skew) must not open the gate again; a knock sent afterwards does.
    gate.configure("open-seconds = 2\nmax-skew = 120\n")
    gate.service()
    gate.start()
    packet = craft(gate.keys, gate.lab["client"].v4)
    raw(gate, "client", packet)
    assert wait_for(lambda: gate.probe().startswith("connected"))
    assert gate.stop() == 0
    import shutil

    shutil.rmtree(gate.pin_dir)  # what a reboot does to bpffs
    time.sleep(2.5)  # the window is over
    gate.start()
    assert any("replay memory begins now" in line for line in gate.log), gate.log
    raw(gate, "client", packet)
    assert wait_for(lambda: spa_verdicts(gate).get("before-replay-memory") == 1), gate.log
    assert gate.probe("client") == "timeout"
    raw(gate, "client", craft(gate.keys, gate.lab["client"].v4))
    assert wait_for(lambda: gate.probe().startswith("connected"))


def test_a_flood_does_not_lock_the_client_out(gate):
    """100,000+ junk packets from the flood host and from spoofed sources; a valid (tagged)
    knock sent in the middle still opens the gate within 1 s."""
    gate.configure("open-seconds = 30\n")
    gate.service()
    gate.start()
    flooders = [
        gate.lab.spawn(
            "flood",
            [
                PY,
                "-m",
                "spagate.lab.probe",
                "flood",
                gate.ip(),
                "8484",
                "--count",
                "100000",
                *spoof,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for spoof in ([], ["--spoof", "198.18.0.0/15"])
    ]

    def unhashed() -> int:  # junk dropped before any HMAC: over its bucket or the budget
        c = xdp_counters(gate)
        return c.get("spa_rate_source", 0) + c.get("spa_untagged_budget", 0)

    assert wait_for(lambda: unhashed() > 1000, timeout=10)
    sent = gate.send("client", "--ip", "source")
    t0 = time.monotonic()
    assert sent.returncode == 0, sent.stderr
    opened = wait_for(lambda: gate.probe(timeout=0.2).startswith("connected"), timeout=1.0)
    elapsed = time.monotonic() - t0
    running = [f.poll() is None for f in flooders]
    for f in flooders:
        f.wait(120)
    assert any(running), "the flood was over before the client's knock landed"
    assert opened, f"the gate did not open within 1s during the flood ({elapsed:.2f}s)"
    assert unhashed() > 10_000  # the floods hit the bucket and the untagged budget
    assert wait_for(lambda: spa_verdicts(gate) == {"accepted": 1}), spa_verdicts(gate)


def test_detach_leaves_the_interface_clean(gate):
    gate.configure()
    gate.start()

    def xdp_on_eth0():
        return "xdp" in gate.lab.sh("gate", "ip -d link show eth0").stdout

    assert xdp_on_eth0()
    assert gate.stop() == 0
    assert not xdp_on_eth0()
    gate.start("--keep-attached")
    gate.stop()
    assert xdp_on_eth0()
    out = gate.lab.run("gate", [PY, "-m", "spagate", "detach", "eth0"], mounts=False)
    assert out.returncode == 0 and "detached eth0" in out.stdout
    assert not xdp_on_eth0()


def test_operator_commands_from_another_shell(gate):
    gate.configure("protected = tcp/22, udp/5353\n")
    gate.service()
    gate.start()
    flood = gate.lab["flood"].v4
    out = gate.spagate("allow", flood, "--port", "tcp/22", "--for", "30")
    assert out.returncode == 0 and f"allowed {flood} on tcp/22 for 30s" in out.stdout
    assert gate.probe("flood").startswith("connected")
    status = gate.spagate("status").stdout
    assert "attached to eth0 (native)" in status or "attached to eth0 (generic)" in status
    assert "protected: tcp/22, udp/5353" in status
    line = next(x for x in status.splitlines() if x.strip().startswith(flood))
    assert "tcp/22" in line and 25 < float(line.split()[-2].rstrip("s")) <= 30
    # A port that is not protected would open nothing: refused, and no window shows.
    bad = gate.spagate("allow", flood, "--port", "tcp/23")
    assert bad.returncode == 2 and "tcp/23 is not a protected port" in bad.stderr
    assert "tcp/23" not in gate.spagate("status").stdout
    out = gate.spagate("revoke", flood)
    assert out.returncode == 0 and f"revoked 1 open window(s) of {flood}" in out.stdout
    assert gate.probe("flood") == "timeout"
    # revoke counts only windows still open; --all closes every one
    client = gate.lab["client"].v4
    assert gate.spagate("allow", client, "--for", "1").returncode == 0
    time.sleep(1.1)
    assert "revoked 0 open window(s)" in gate.spagate("revoke", client).stdout
    for ip in (client, flood):
        assert gate.spagate("allow", ip, "--port", "udp/5353").returncode == 0
    out = gate.spagate("revoke", "--all")
    assert out.returncode == 0 and out.stdout.strip() == "revoked 2 open window(s)"
    assert "open windows: 0" in gate.spagate("status").stdout
    bad = gate.spagate("allow", "not-an-ip")
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == "spagate: error: 'not-an-ip' is not an IP address"
    )
    bad = gate.spagate("allow", flood, "--port", "sctp/1")
    assert bad.returncode == 2 and "--port" in bad.stderr and "Traceback" not in bad.stderr


def test_a_knock_never_shortens_a_longer_manual_window(gate):
    gate.configure("open-seconds = 5\n")
    gate.start()
    client = gate.lab["client"].v4
    assert gate.spagate("allow", client, "--for", "3600").returncode == 0
    assert gate.send("client", "--ip", "source").returncode == 0
    assert wait_for(lambda: spa_verdicts(gate).get("accepted") == 1)
    line = next(x for x in gate.spagate("status").stdout.splitlines() if client in x)
    assert float(line.split()[-2].rstrip("s")) > 3500, line


def test_a_second_daemon_on_the_same_maps_is_refused(gate):
    gate.configure()
    gate.start()
    out = gate.lab.run(
        "gate",
        [PY, "-m", "spagate", "attach", "eth0", "-c", str(gate.conf), "--pin-dir", gate.pin_dir],
        mounts=False,
        timeout=60,
    )
    assert out.returncode == 2
    assert f"already running (pid {gate.proc.pid}, eth0)" in out.stderr
    assert gate.proc.poll() is None  # the first one is untouched and still guarding
    assert gate.probe() == "timeout"


def test_a_closed_terminal_does_not_stop_the_gate(gate):
    gate.configure()
    gate.service()
    gate.start()
    gate.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert gate.proc.poll() is None
    assert gate.send("client", "--ip", "source").returncode == 0
    assert wait_for(lambda: gate.probe().startswith("connected"))


def test_a_kernel_without_headers_is_one_line_naming_the_package(gate):
    """bcc compiles the gate at start against the running kernel's headers, which no Debian
    Depends can name (the flavour and version are the host's): without them, the loader
    says which package to install, in one line, and leaves the interface untouched."""
    gate.configure()
    release = os.uname().release
    argv = [PY, "-m", "spagate", "load", "eth0", "-c", str(gate.conf), "--pin-dir", gate.pin_dir]
    env = {k: v for k, v in os.environ.items() if k != "BCC_KERNEL_SOURCE"}
    # A private mount namespace where /lib/modules is empty: no build or source tree.
    hide = 'mount -t tmpfs spagate-no-headers /lib/modules && exec "$@"'
    out = gate.lab.run(
        "gate", ["unshare", "-m", "sh", "-c", hide, "sh", *argv], mounts=False, env=env, timeout=60
    )
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode == 2, out.stderr
    assert lines[-1] == (
        f"spagate: error: no kernel headers for the running kernel {release} (bcc looks in "
        f"/lib/modules/{release}/build): install linux-headers-{release}"
    ), out.stderr
    assert "Traceback" not in out.stderr
    assert "xdp" not in gate.lab.sh("gate", "ip -d link show eth0").stdout
    # The same command with the headers in place loads the gate: the test hid them, not more.
    ok = gate.lab.run("gate", argv, mounts=False, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "xdp" in gate.lab.sh("gate", "ip -d link show eth0").stdout
    gate.lab.run("gate", [PY, "-m", "spagate", "detach", "eth0", "--pin-dir", gate.pin_dir],
                 mounts=False)  # fmt: skip


ATTACH_TUN = """
import sys
from pathlib import Path
from spagate.gate.kernel import bpfsys, link, pins
pin_dir = Path(sys.argv[1])
fd = bpfsys.obj_get(pin_dir / pins.PROG_PIN)
print(link.attach_link(pin_dir, "tun1", fd, link.XdpMode.GENERIC))
"""


def test_an_interface_without_ethernet_framing_is_never_called_guarded_nor_locks_anyone_out(
    gate,
):
    """On a tun, PPP or WireGuard device a packet starts with its IP header: the program read
    it as Ethernet and passed everything (verdict pass_not_ip) to the protected ports, while
    status said "attached to tun1" and exited 0. Now such a name is left unguarded, said at
    error level and by status, and the gate guards the rest and takes knocks: a refusal would
    lock every key holder out at the upgrade that brought it."""
    gate.configure()
    gate.service()
    gate.lab.sh("gate", "ip tuntap add dev tun1 mode tun && ip link set tun1 up")

    def load(*names):
        argv = [PY, "-m", "spagate", "load", *names, "-c", str(gate.conf), "--pin-dir",
                gate.pin_dir]  # fmt: skip
        return gate.lab.run("gate", argv, mounts=False, timeout=60)

    alone = load("tun1")
    assert alone.returncode == 2, alone.stderr
    assert alone.stderr.strip().splitlines()[-1] == (
        "spagate: error: tun1 (tun): not Ethernet-framed, the gate cannot read its packets: "
        "name an Ethernet interface (docs/threat-model.md)"
    )
    assert "xdp" not in gate.lab.sh("gate", "ip -d link show eth0").stdout
    gate.interfaces = ["eth0", "tun1"]
    gate.start()
    said = "tun1 (tun) is not Ethernet-framed: the gate cannot read its packets, so it does not "
    assert any(said + "guard it; tun1 stays UNGUARDED" in line for line in gate.log), gate.log
    assert "xdp" in gate.lab.sh("gate", "ip -d link show eth0").stdout
    assert "xdp" not in gate.lab.sh("gate", "ip -d link show tun1").stdout
    st = gate.spagate("status")
    assert st.returncode == 1 and "tun1 (tun) (not Ethernet-framed" in st.stdout, st.stdout
    assert gate.probe() == "timeout"  # eth0 guarded
    assert gate.send("client", "--ip", "source").returncode == 0
    assert wait_for(lambda: gate.probe().startswith("connected"))  # knocks taken
    # A gate that has such a link anyway (put there by hand, or by an older spagate):
    # status counts the interface as unguarded, whatever the kernel says is attached.
    put = gate.lab.run("gate", [PY, "-c", ATTACH_TUN, gate.pin_dir], mounts=False)
    assert put.returncode == 0 and put.stdout.strip() == "generic", put.stderr
    st = gate.spagate("status")
    assert st.returncode == 1, st.stdout
    assert "tun is not Ethernet-framed: the program passes all its packets" in st.stdout
    js = json.loads(gate.spagate("status", "--json").stdout)
    (tun,) = [i for i in js["interfaces"] if i["name"] == "tun1"]
    assert tun["guarded"] is False


def test_a_guarded_bridge_warns_until_its_ports_drop_ip_in_l2_multicast(gate):
    """A frame to 01:80:c2:00:00:0X is delivered on the bridge's port, never through the
    bridge's XDP program, and UDP takes the unicast datagram inside. The loader names the
    sysctls that make IP drop it, and is silent once they are set."""
    gate.configure()
    gate.lab.sh(
        "gate",
        "ip link add brx type bridge && ip link add dp0 type veth peer name "
        "dp1 && ip link set dp0 master brx && ip link set dp0 up && ip link set brx up",
    )
    argv = [PY, "-m", "spagate", "load", "eth0", "brx", "-c", str(gate.conf),
            "--pin-dir", gate.pin_dir]  # fmt: skip
    knobs = ["net.ipv4.conf.all.drop_unicast_in_l2_multicast",
             "net.ipv6.conf.default.drop_unicast_in_l2_multicast",
             "net.ipv6.conf.dp0.drop_unicast_in_l2_multicast"]  # fmt: skip
    gate.lab.sh("gate", " && ".join(f"sysctl -qw {k}=0" for k in knobs))
    out = gate.lab.run("gate", argv, mounts=False, timeout=60)
    assert out.returncode == 0, out.stderr
    said = out.stdout + out.stderr
    assert ("brx: a frame to a reserved group MAC (01:80:c2:00:00:0X) reaches this host on a "
            "port, around the gate (UDP services answer it): set " +
            ", ".join(f"{k}=1" for k in knobs)) in said, said  # fmt: skip
    gate.lab.sh("gate", " && ".join(f"sysctl -qw {k}=1" for k in knobs))
    again = gate.lab.run("gate", argv, mounts=False, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "reserved group MAC" not in again.stdout + again.stderr
    gate.lab.run("gate", [PY, "-m", "spagate", "detach", "--all", "--pin-dir", gate.pin_dir],
                 mounts=False)  # fmt: skip


def test_a_guarded_name_that_comes_back_without_ethernet_framing_is_not_re_attached(gate):
    """vp0 is guarded; it is deleted and a tun device takes its name (a VPN restarted): the
    worker asks the monitor to put the gate back, and the monitor refuses, at error level,
    instead of attaching a program that would pass every packet of it."""
    gate.configure()
    gate.lab.sh("gate", "ip link add vp0 type veth peer name vp1 && ip link set vp0 up && "
                "ip link set vp1 up")  # fmt: skip
    gate.interfaces = ["eth0", "vp0"]
    gate.start()
    assert "xdp" in gate.lab.sh("gate", "ip -d link show vp0").stdout
    gate.lab.sh("gate", "ip link del vp0 && ip tuntap add dev vp0 mode tun && ip link set vp0 up")
    said = "monitor: vp0 (tun) is not Ethernet-framed now: not re-attached; vp0 is UNGUARDED"
    assert wait_for(lambda: any(said in line for line in gate.log), timeout=10), gate.log[-8:]
    assert "xdp" not in gate.lab.sh("gate", "ip -d link show vp0").stdout
    st = gate.spagate("status")
    assert st.returncode == 1, st.stdout
    assert gate.proc.poll() is None  # still guarding eth0 and taking knocks
