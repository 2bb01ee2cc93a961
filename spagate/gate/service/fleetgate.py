"""Fleet mode inside the worker: the bridge between the fleet's threads and the worker's maps.

FleetSync (spagate.gate.service.fleet) watches the store and claims knocks in its own threads;
none of them touches a map. What they decide (a peer's grant to open, a revocation, a nonce
claimed elsewhere, the answer to a claim) is queued here and an eventfd wakes the worker's
loop, which applies it: the maps keep one writer. Only the worker talks to the store, never
the XDP program, and never on the per-packet path in the kernel.

    knock: Admit (verified, policy passed, nonce persisted) -> claim + grants in one etcd
           transaction -> claimed: open here (the watch opens it on the peers) | replay:
           refused here (fleet-replay) | store away: the fallback (local: open, journalled)
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

from spagate.gate.core.config import GateConfig
from spagate.gate.core.fleet import (
    Allow,
    ClaimRecord,
    GrantRecord,
    Keys,
    KnockDecision,
    MemberRecord,
    Mirror,
    Remember,
    Revoke,
    Trust,
    claim_id_fwknop,
    claim_id_sparoid,
    parse_fallback,
)
from spagate.gate.core.intake import Admit, OpenWindow, RememberNonce
from spagate.inifile import read_key_file

NS = 1_000_000_000


def fleet_options(config: GateConfig):
    from spagate.gate.service.fleet import FleetOptions

    f = config.fleet
    assert f is not None
    password = None
    if f.password_file:
        password = read_key_file(f.password_file).strip()
    return FleetOptions(
        cluster=f.name,
        endpoints=f.endpoints,
        member=f.member or socket.gethostname().split(".")[0],
        ca=f.ca,
        cert=f.cert,
        key=f.key,
        user=f.user,
        password=password,
        timeout_s=f.timeout_s,
        fallback=parse_fallback(f.fallback),
    )


class FleetBridge:
    """The worker's fleet: the LocalGate FleetSync calls (from its threads) and the queue the
    worker drains (from its loop)."""

    def __init__(
        self,
        config: GateConfig,
        maps,
        admission,
        log,
        interfaces: tuple[str, ...],
        store=None,
        mono_ns: Callable[[], int] = time.monotonic_ns,
    ):
        from spagate.gate.service import fleet as service_fleet

        self.config, self.maps, self.admission, self.log = config, maps, admission, log
        self.mono_ns = mono_ns
        opts = fleet_options(config)
        self.store = store or service_fleet.FleetStore(opts)
        self.member = opts.member
        self.interfaces = interfaces
        trust = Trust.for_config(config, operator_grants=config.fleet.operator_grants)
        self.mirror = Mirror(Keys(opts.cluster), trust)
        self._queue: deque = deque()
        self._lock = threading.Lock()
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.state = "starting"
        sync = service_fleet.FleetSync(self.store, self.mirror, self, self._member_record)
        sync._log = self._from_fleet  # its lines go to the worker's log
        self.sync = sync

    # -- LocalGate: called from the fleet's threads ------------------------------------------

    def allow(self, ip, proto, port, remaining_s: float) -> None:
        self._put(Allow(ip, proto, port, remaining_s))

    def revoke(self, ip, proto, port, flows: bool = False) -> None:
        self._put(Revoke(ip, proto, port, flows))

    def remember(self, kind: str, key: bytes, remaining_s: float) -> None:
        self._put(Remember(kind, key, remaining_s))

    def _put(self, item) -> None:
        with self._lock:
            self._queue.append(item)
        os.eventfd_write(self._efd, 1)

    def _from_fleet(self, level: str, msg: str) -> None:
        getattr(self.log, "error" if level == "error" else "warning")(msg)

    def _member_record(self) -> MemberRecord:
        return MemberRecord(self.member, self.state, self.interfaces, self.sync.opts.fallback.value,
                            "up" if self.sync.health.up else "down")  # fmt: skip

    # -- the worker's side --------------------------------------------------------------------

    def fileno(self) -> int:
        return self._efd

    def start(self) -> bool:
        """Load the fleet's grants into the maps before the first knock (FleetSync.start
        resyncs synchronously; the queue it filled is applied here)."""
        try:
            synced = self.sync.start()
        except Exception as e:  # never stop the gate for its fleet: one line, the fallback
            self.log.error(f"fleet: start: {type(e).__name__}: {str(e)[:200]}")
            synced = False
        self.drain()
        self.state = "attached"
        if not synced:
            self.log.error("fleet: the store is not reachable at start; fallback "
                           f"{self.sync.opts.fallback.value}")  # fmt: skip
        return synced

    def admit(self) -> bool:
        return self.sync.admit()

    def stop(self) -> None:
        self.state = "stopping"
        self.sync.stop(leave=True)
        os.close(self._efd)

    def knock(self, out: Admit, payload: bytes) -> None:
        """Claim an admitted knock fleet-wide; its windows open when the answer comes."""
        nonce = next(w for w in out.writes if isinstance(w, RememberNonce))
        # fwknop: the claim makes it exactly-once fleet-wide; peers cannot re-verify it yet
        # (no fwknop re-verifier: they ignore its grants, counted reverify-failed; a peer with
        # fwknop remembers its digest for at most 2 x fwknop-max-age).
        fw = out.protocol == "fwknop"
        cid = claim_id_fwknop(payload) if fw else claim_id_sparoid(nonce.nonce)
        now_ms = time.time_ns() // 1_000_000
        horizon = max(0.0, (nonce.until_ms - now_ms) / 1000)
        mono = self.mono_ns()
        grants = [
            GrantRecord(
                w.ip,
                w.proto,
                w.port,
                max(0.0, (w.until_ns - mono) / NS),
                f"claim:{cid}",
                self.member,
            )  # fmt: skip
            for w in out.writes
            if isinstance(w, OpenWindow)
        ]
        claim = ClaimRecord(self.member, out.protocol, payload, out.src, horizon)
        self.sync.knock_async(cid, claim, grants, horizon, lambda d: self._put((out, d)))

    def drain(self) -> int:
        """Apply what the fleet's threads queued; returns how many items."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._efd)
        with self._lock:
            items, self._queue = list(self._queue), deque()
        windows, decided, flows = [], [], []
        now = self.mono_ns()
        for item in items:
            try:
                if isinstance(item, Allow):
                    until = now + int(item.remaining_s * NS)
                    windows.append((item.ip, until, item.proto, item.port))
                elif isinstance(item, Revoke):
                    self.maps.revoke(item.ip, item.proto, item.port or 0)
                    if item.flows:  # revoked, not ended: its UDP flows go too
                        flows.append((item.ip, item.proto, item.port or 0))
                elif isinstance(item, Remember):
                    until_ms = time.time_ns() // 1_000_000 + int(item.remaining_s * 1000)
                    self.admission.remember(item.key, until_ms, item.kind)
                elif isinstance(item, tuple):
                    decided.append(item)
            except Exception as e:  # a map error must not stop the worker's loop
                self.log.error(f"fleet: {type(item).__name__}: {type(e).__name__}: {e}")
        if flows:
            try:
                self.maps.revoke_flows(flows)
            except Exception as e:  # said; the allow entries are gone already
                self.log.error(f"fleet: closing the UDP flows of {len(flows)} revocation(s): {e}")
        if windows:
            try:
                self.maps.open_windows(windows)
            except Exception as e:  # fail closed: the peers' windows stay shut here
                self.log.error(f"fleet: opening {len(windows)} peer window(s): {e}")
        for out, d in decided:
            self._decided(out, d)
        return len(items)

    def _decided(self, out: Admit, d: KnockDecision) -> None:
        if d.admit:
            self.admission.counts[d.reason] += 1  # how it was admitted (fleet-claimed ...)
            self.admission.open_now([out])
        else:  # counted there, once
            self.admission.refuse_admitted(out, d.reason)
