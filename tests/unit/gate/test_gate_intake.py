"""The intake (core decisions) carried out by the service's Admission: verified packets open
the map, nonces persist first, pruning is incremental."""

import errno
import os
from ipaddress import ip_address

from spagate.gate.core.config import parse_config
from spagate.gate.core.eventlog import EventLog
from spagate.gate.kernel.abi import SpaPath
from spagate.gate.kernel.ringbuf import SpaRecord
from spagate.gate.service.admission import Admission
from spagate.gate.service.hooks import Hooks
from spagate.protocol import KeyPair, Message, encode

# random-looking keys: the gate refuses patterned ones (fewer than 8 distinct bytes)
KA = "5b0e0c7ad1e2f3a4958677a8b9cadbecfd0e1f20314253647586978a9bacbdce"
HA = "a1b2c3d4e5f60718293a4b5c6d7e8f90a2b4c6d8eaf1032547698badcfe13579"

KEYS = KeyPair(bytes.fromhex(KA), bytes.fromhex(HA))
CONF = parse_config(f"key = {KA}\nhmac-key = {HA}\nprotected = tcp/22, udp/53\n")


class Maps:
    """Records calls in order, as the worker's GateMaps would receive them (open_windows is
    GateMaps' extend-only batch write: a knock never shortens a longer window)."""

    def __init__(self, replay=None, born_ns=0):
        self.calls, self.replay, self.born_ns = [], dict(replay or {}), born_ns

    def open_windows(self, windows):
        for ip, until_ns, proto, port in windows:
            self.calls.append(("allow", str(ip), until_ns, proto, port))
        return len(windows)

    def replay_remember_many(self, items):
        for nonce, until_ms in items:
            self.calls.append(("remember", nonce))
            self.replay[nonce] = until_ms

    def replay_entries(self):
        return dict(self.replay)

    def replay_since(self):
        return self.born_ns

    def seen_expect_many(self, items):
        for key, _mac, ip, slot in items:
            self.calls.append(("expect", key, str(ip), slot))
        return len(items)

    def replay_forget_many(self, nonces):
        for nonce in nonces:
            self.calls.append(("forget", nonce))
        return sum(self.replay.pop(n, None) is not None for n in nonces)


def make(maps, now_ms):
    lines = []
    log = EventLog(lambda lvl, line: lines.append(line), lambda: 0.0)
    clock = {"ms": now_ms}
    intake = Admission(
        CONF, maps, log, Hooks(None, None, log),
        wall_ms=lambda: clock["ms"], mono_ns=lambda: 5_000_000_000,
    )  # fmt: skip
    return intake, clock, lines


def record(ts_ms, ip="203.0.113.7", src="198.51.100.9"):
    msg = Message(ts_ms=ts_ms, nonce=os.urandom(16), ip=ip_address(ip))
    payload = encode(KEYS, msg, os.urandom(16))
    return SpaRecord(payload, ip_address(src), ip_address("192.0.2.1"), 4000, 8484, 2, 96), msg


def test_accepted_packet_persists_its_nonce_before_opening():
    maps = Maps()
    intake, _, lines = make(maps, 1_000_000)
    rec, msg = record(1_000_000)
    assert intake.handle(rec)
    assert maps.calls == [
        ("remember", msg.nonce),
        ("allow", "203.0.113.7", 5_000_000_000 + 15 * 10**9, None, 0),
    ]
    assert "accept 203.0.113.7 identity=default ports=all window=15s" in lines[0]
    assert "third-party" in lines[0]
    assert not intake.handle(rec)  # the same packet again
    assert intake.counts == {"accepted": 1, "replay": 1}


def test_prune_forgets_expired_nonces_never_early_at_most_a_step_late():
    maps = Maps()
    intake, clock, _ = make(maps, 1_000_000)
    for i in range(10):  # remembered until 1,005,000 + 100 i (max-skew 5 s)
        clock["ms"] = 1_000_000 + 100 * i
        assert intake.handle(record(clock["ms"])[0])
    clock["ms"] = 1_005_400  # four windows are over; the 250 ms step holding the 4th is not
    assert intake.prune() == 3
    assert len(maps.replay) == 7
    clock["ms"] = 1_005_501  # the step ending at 1,005,500 is over: the 4th to 6th go
    assert intake.prune() == 3
    assert intake.prune() == 0
    assert len(maps.replay) == 4


def test_a_failing_prune_is_said_once_and_never_stops_intake():
    class Failing(Maps):
        fail = True

        def replay_forget_many(self, nonces):
            if self.fail:
                raise OSError(errno.EPERM, "Operation not permitted")
            return super().replay_forget_many(nonces)

    maps = Failing()
    intake, clock, lines = make(maps, 1_000_000)
    assert intake.handle(record(clock["ms"])[0])
    clock["ms"] = 1_010_000
    assert intake.prune() == 0 and intake.prune() == 0  # kept longer: the safe way
    assert sum("cannot prune the replay map" in x for x in lines) == 1, lines
    assert intake.handle(record(clock["ms"])[0])  # still taking knocks
    maps.fail = False
    clock["ms"] = 1_020_000
    assert intake.prune() == 1  # the second nonce; the first stays until the LRU drops it


def test_restore_refuses_replays_of_packets_accepted_before_a_restart():
    maps = Maps()
    first, _, _ = make(maps, 1_000_000)
    rec, _ = record(1_000_000)
    assert first.handle(rec)
    again, _, _ = make(maps, 1_001_000)
    assert again.restore() == 1
    assert not again.handle(rec)
    assert again.counts == {"replay": 1}


# --- fwknop records: access.conf's rules, then the gate's protected ports --------------------

FW_KEY_B64 = "P5ocDnstT2qMHjtdf5osTmuNDxo8XnudL0psjgsdP1o="
FW_HMAC_B64 = "fB6aO10vTmqLDB0+X3qbLE1ujwobPF1+nypLbI0OHzp8"
# (random-looking: access.conf refuses one byte repeated)


def fwknop_admission(maps, now_ms, conf=CONF):
    from spagate.gate.core.fwknop_access import parse_access

    access = parse_access(
        "SOURCE ANY\nOPEN_PORTS tcp/22, tcp/80\nFW_ACCESS_TIMEOUT 7\n"
        f"KEY_BASE64 {FW_KEY_B64}\nHMAC_KEY_BASE64 {FW_HMAC_B64}\n",
        "access.conf",
    )
    lines = []
    log = EventLog(lambda lvl, line: lines.append(line), lambda: 0.0)
    adm = Admission(
        conf, maps, log, Hooks(None, None, log), wall_ms=lambda: now_ms,
        mono_ns=lambda: 5_000_000_000, fwknop_access=access,
    )  # fmt: skip
    return adm, access, lines


def fw_record(access, ports: str, ip="203.0.113.7", now_s=1_000):
    from spagate.client.fwknop import make_packet, parse_access
    from spagate.gate.kernel.ringbuf import FwknopRecord

    packet = make_packet(access.stanzas[0].key, ip, parse_access(ports), "alice", 0, now_s)
    src, dst = ip_address("198.51.100.9"), ip_address("192.0.2.1")
    return FwknopRecord(packet, src, dst, 4000, 62201, 2)


def test_fwknop_opens_the_asked_allowed_and_protected_ports_for_the_stanzas_seconds():
    maps = Maps()
    adm, access, lines = fwknop_admission(maps, 1_000_000)
    rec = fw_record(access, "tcp/22,udp/53,tcp/80")  # udp/53 not allowed; tcp/80 not guarded
    assert adm.handle_fwknop(rec)
    remember, *allows = maps.calls
    assert remember[0] == "remember" and len(remember[1]) == 16
    assert allows == [("allow", "203.0.113.7", 5_000_000_000 + 7 * 10**9, "tcp", 22)]
    assert "accept 203.0.113.7 identity=fwknop:access.conf:1" in lines[0], lines
    assert not adm.handle_fwknop(rec)  # the same packet again
    assert adm.counts == {"accepted": 1, "replay": 1}


def test_fwknop_refusals_consume_no_replay_entry():
    maps = Maps()
    adm, access, _ = fwknop_admission(maps, 1_000_000)
    only_unguarded = fw_record(access, "tcp/80")
    assert not adm.handle_fwknop(only_unguarded)
    assert not adm.handle_fwknop(fw_record(access, "udp/53"))
    assert maps.calls == []
    assert adm.counts == {"ports-not-protected": 1, "ports-not-allowed": 1}
    stale = fw_record(access, "tcp/22", now_s=1_000 - 600)
    assert not adm.handle_fwknop(stale) and adm.counts["stale"] == 1


def test_fwknop_digests_survive_a_restart_as_replays():
    maps = Maps()
    first, access, _ = fwknop_admission(maps, 1_000_000)
    rec = fw_record(access, "tcp/22")
    assert first.handle_fwknop(rec)
    again, _, _ = fwknop_admission(maps, 1_001_000)
    again.restore()
    assert not again.handle_fwknop(rec)
    assert again.counts == {"replay": 1}


def test_fwknop_keeps_bind_and_require_source_match():
    base = f"key = {KA}\nhmac-key = {HA}\nprotected = tcp/22\n"
    strict = parse_config(base + "require-source-match = yes\n")
    adm, access, _ = fwknop_admission(Maps(), 1_000_000, strict)
    assert not adm.handle_fwknop(fw_record(access, "tcp/22", ip="0.0.0.0"))
    assert not adm.handle_fwknop(fw_record(access, "tcp/22", ip="10.9.9.9"))
    assert adm.handle_fwknop(fw_record(access, "tcp/22", ip="198.51.100.9"))  # its source
    assert adm.counts == {"source-mismatch": 2, "accepted": 1}
    bound = parse_config(base + "bind = 192.0.2.7\n")
    adm, access, _ = fwknop_admission(Maps(), 1_000_000, bound)
    assert not adm.handle_fwknop(fw_record(access, "tcp/22"))  # sent to 192.0.2.1
    assert adm.counts == {"wrong-destination": 1}


def test_pruning_follows_expiry_whatever_the_order_of_acceptance():
    maps = Maps()
    adm, access, _ = fwknop_admission(maps, 1_000_000)
    assert adm.handle_fwknop(fw_record(access, "tcp/22"))  # kept 120 s past its stamp
    clock = {"ms": 1_000_000}
    adm.wall_ms = lambda: clock["ms"]
    for _i in range(5):
        rec, _ = record(clock["ms"])
        assert adm.handle(rec)  # sparoid nonces: 5 s
    clock["ms"] += 6_000
    assert adm.prune() == 5  # not held back by the older, longer-lived fwknop digest


def test_a_fleet_peers_fwknop_digest_is_a_replay_here():
    import hashlib

    maps = Maps()
    adm, access, _ = fwknop_admission(maps, 1_000_000)
    rec = fw_record(access, "tcp/22")
    adm.remember(hashlib.sha256(rec.payload).digest(), 1_100_000, "fwknop")
    assert not adm.handle_fwknop(rec)
    assert adm.counts == {"replay": 1} and len(next(iter(maps.replay))) == 16


def test_a_wrong_source_copy_neither_consumes_the_nonce_nor_opens():
    from spagate.gate.core.config import parse_config as parse

    conf = parse(f"key = {KA}\nhmac-key = {HA}\nrequire-source-match = yes\n")
    maps = Maps()
    lines = []
    log = EventLog(lambda lvl, line: lines.append(line), lambda: 0.0)
    adm = Admission(conf, maps, log, Hooks(None, None, log), wall_ms=lambda: 1_000_000,
                    mono_ns=lambda: 5_000_000_000)  # fmt: skip
    copy, msg = record(1_000_000, ip="203.0.113.7", src="198.51.100.9")
    assert not adm.handle(copy)  # the on-path copy, sent first from elsewhere
    # Nothing remembered, nothing opened; the kernel is told the one source still welcome.
    assert maps.calls == [("expect", copy.payload[:16], "203.0.113.7", 0)]
    real = copy._replace(src=ip_address("203.0.113.7"))
    assert adm.handle(real)
    assert maps.calls[1:] == [
        ("remember", msg.nonce),
        ("allow", "203.0.113.7", 5_000_000_000 + 15 * 10**9, None, 0),
    ]
    assert adm.counts == {"source-mismatch": 1, "accepted": 1}
    assert not adm.handle(real)  # and now it is a replay
    # A message naming no address under require-source-match: refused for good, no expect.
    none, _ = record(1_000_000, ip="0.0.0.0", src="203.0.113.8")
    assert not adm.handle(none)
    assert [c for c in maps.calls if c[0] == "expect"] == [maps.calls[0]]


def test_refusals_after_the_mac_name_the_identity_and_are_tallied():
    maps = Maps()
    intake, _, lines = make(maps, 1_000_000)
    stale, _ = record(1_000_000 - 60_000)
    assert not intake.handle(stale)
    assert lines[-1] == (
        "refuse stale from 198.51.100.9:4000 via 2 identity=default: "
        "sent 60000 ms ago, window is 5000 ms"
    )
    rec, _ = record(1_000_000)
    assert intake.handle(rec._replace(ts_ns=4_999_000_000))
    latencies = []
    intake.on_latency = latencies.append
    assert intake.handle(record(1_000_000)[0]._replace(ts_ns=4_999_000_000, path=SpaPath.TAGGED))
    assert latencies == [1_000_000]  # the clock says 5 s: 1 ms from the ring to the window
    assert intake.intake.tally == {
        ("stale", "default", ""): 1,
        ("accepted", "default", "untagged"): 1,
        ("accepted", "default", "tagged"): 1,
    }
    kinds = [ev.event for _, ev in intake.recent]
    assert kinds == ["refuse", "accept", "accept"]


BORN = 10**12  # CLOCK_BOOTTIME ns when the replay map was created afresh


def test_a_packet_stamped_before_the_replay_memory_begins_is_refused_both_protocols():
    # The replay map was created afresh 2 s ago (a reboot emptied bpffs): a packet stamped
    # before may have been accepted already; one stamped after cannot have been.
    maps = Maps(born_ns=BORN)
    adm, clock, lines = make(maps, 1_002_000)
    boot = {"ns": BORN + 2_000 * 10**6}
    adm.boot_ns = lambda: boot["ns"]
    adm.restore()
    old, _ = record(999_000)  # fresh by the clock (3 s of a 5 s skew), older than the memory
    assert not adm.handle(old)
    assert adm.counts == {"before-replay-memory": 1} and maps.calls == []
    assert "refuse before-replay-memory" in lines[-1] and "identity=default" in lines[-1]
    assert adm.handle(record(1_001_000)[0])  # stamped after: a knock
    # The wall clock stepped back an hour (NTP after a bad RTC): the memory's start moves
    # with it (it is measured on the boot clock), a knock stamped now still opens.
    clock["ms"] -= 3_600_000
    adm.prune()
    assert adm.handle(record(clock["ms"])[0])
    # Past the horizon (max(max-skew, fwknop-max-age)) the check is off: nothing that old
    # is fresh anyway.
    boot["ns"] += 121 * 10**9
    adm.prune()
    assert adm.intake.memory_since_ms == 0
    fw, access, _ = fwknop_admission(Maps(born_ns=BORN), 1_010_000)
    fw.boot_ns = lambda: BORN + 10_000 * 10**6  # created at 1,000 s
    fw.restore()
    assert not fw.handle_fwknop(fw_record(access, "tcp/22", now_s=999))
    assert fw.handle_fwknop(fw_record(access, "tcp/22", now_s=1_001))
    assert fw.counts == {"before-replay-memory": 1, "accepted": 1}
