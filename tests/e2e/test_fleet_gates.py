"""Fleet mode end to end: two real gates (lab namespaces) and a real three-member etcd cluster
(in a third namespace). A knock to one opens the other, a replay to the other is refused,
revoke on one closes both, and the gates keep guarding through member and quorum loss."""

from __future__ import annotations

import time

import pytest

from spagate.lab.etcd import EtcdCluster
from spagate.lab.gate import LabGate
from spagate.lab.netns import Lab
from spagate.lab.util import spa_verdicts, wait_for
from spagate.protocol import generate_keypair, make_packet

KEYS = generate_keypair()


@pytest.fixture
def fleet(tmp_path):
    with Lab(("store", "gatea", "gateb", "client")) as lab:
        cluster = EtcdCluster(3, host=lab["store"].v4, wrap=tuple(lab.argv("store", [], False)))
        with cluster:
            gates = {}
            try:
                for name in ("gatea", "gateb"):
                    (tmp_path / name).mkdir()
                    gates[name] = LabGate(lab, tmp_path / name, keys=KEYS, host=name)
                yield lab, cluster, gates
            finally:
                for g in gates.values():
                    g.cleanup()


def configure(g: LabGate, cluster: EtcdCluster, seconds: int = 4) -> None:
    eps = ",".join(u.removeprefix("http://") for u in cluster.endpoints)
    g.configure(
        f"open-seconds = {seconds}\ncluster = etcd://{eps}\ncluster-name = lab\n"
        f"fleet-member = {g.host}\nfleet-fallback = local\n"
    )


def probe(g: LabGate, timeout: float = 0.5) -> str:
    return g.probe("client", timeout=timeout)


def knock(g: LabGate, packet: bytes) -> None:
    out = g.lab.run(
        "client",
        ["python3", "-c", "import socket,sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
         f".sendto(bytes.fromhex(sys.argv[1]), ('{g.ip()}', 8484))", packet.hex()],
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_a_knock_on_one_gate_opens_the_fleet_and_a_replay_is_refused(fleet):
    lab, cluster, gates = fleet
    a, b = gates["gatea"], gates["gateb"]
    for g in (a, b):
        configure(g, cluster)
        g.service()
        g.start()
    client = lab["client"].v4
    assert probe(a) == probe(b) == "timeout"

    packet = make_packet(KEYS, client, time.time_ns() // 1_000_000)
    t0 = time.monotonic()
    knock(a, packet)
    assert wait_for(lambda: probe(b, 0.2).startswith("connected"), timeout=1.0, step=0.02)
    remote = time.monotonic() - t0
    assert remote < 1.0, remote
    assert probe(a).startswith("connected")
    # The same packet replayed to B: B learned the nonce from the fleet (refused locally as a
    # replay), or the fleet's claim refuses it (fleet-replay) if that had not arrived yet.
    knock(b, packet)

    def refused_on_b() -> bool:
        v = spa_verdicts(b)
        return v.get("replay", 0) + v.get("fleet-replay", 0) == 1 and not v.get("accepted")

    assert wait_for(refused_on_b), spa_verdicts(b)
    assert spa_verdicts(a).get("fleet-claimed") == 1
    # Both windows close on time, each by its own expiry.
    time.sleep(4.5)
    assert probe(a) == probe(b) == "timeout"

    # revoke on B closes A
    knock(b, make_packet(KEYS, client, time.time_ns() // 1_000_000))
    assert wait_for(lambda: probe(a, 0.2).startswith("connected"), timeout=2.0)
    out = b.spagate("revoke", client, "-c", str(b.conf))
    assert out.returncode == 0 and "removed from fleet lab" in out.stdout, out.stderr
    assert wait_for(lambda: probe(a, 0.2) == "timeout", timeout=2.0)
    assert probe(b) == "timeout"
    st = a.spagate("status", "-c", str(a.conf))
    assert "fleet lab: 2 member(s)" in st.stdout and "gateb" in st.stdout, st.stdout


def test_the_fleet_survives_member_and_quorum_loss_and_a_gate_restart(fleet):
    lab, cluster, gates = fleet
    a, b = gates["gatea"], gates["gateb"]
    for g in (a, b):
        configure(g, cluster, seconds=60)
        g.service()
        g.start()
    client = lab["client"].v4

    def fresh() -> bytes:
        return make_packet(KEYS, client, time.time_ns() // 1_000_000)

    def revoke_everywhere() -> None:
        assert a.spagate("revoke", client, "-c", str(a.conf)).returncode == 0
        assert wait_for(lambda: probe(b, 0.2) == "timeout", timeout=3.0)
        assert probe(a) == "timeout"

    cluster.kill(cluster.leader())  # one member down: still one fleet
    cluster.wait_healthy(timeout=30)
    knock(a, fresh())
    assert wait_for(lambda: probe(b, 0.2).startswith("connected"), timeout=3.0)
    revoke_everywhere()

    cluster.kill(cluster.running()[0])  # no quorum: the gates keep guarding
    knock(a, fresh())
    assert wait_for(lambda: probe(a, 0.2).startswith("connected"), timeout=3.0)  # local
    assert probe(b) == "timeout"  # the store cannot carry it now
    for g in (a, b):
        assert g.probe("store", timeout=0.5) == "timeout"  # a stranger: still dropped
    assert wait_for(lambda: spa_verdicts(a).get("fleet-fallback-local", 0) >= 1)
    assert any("store unreachable" in x for x in a.log), a.log[-10:]

    for i in range(3):  # quorum back: the journal is published, B opens the window too
        if i not in cluster.running():
            cluster.restart(i, wait=False)
    cluster.wait_healthy(timeout=30)
    assert wait_for(lambda: probe(b, 0.2).startswith("connected"), timeout=15.0)

    # A gate restarted from nothing (no pins, no maps) comes up with the fleet's windows.
    b.cleanup()
    b.start()
    assert probe(b).startswith("connected")
    assert any("fleet lab: member gateb, synced" in x for x in b.log), b.log[-5:]
