"""The gate daemon: load and attach the XDP program, configure its maps, consume SPA records.

Start-up is all or nothing: the configuration and interfaces are checked before anything is
loaded, and a failure while attaching detaches what was attached. Maps are pinned, so a restart
keeps open windows, the static list and the replay nonces. SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from spagate.errors import SpagateError
from spagate.gate.core.config import GateConfig
from spagate.gate.core.eventlog import EventLog
from spagate.gate.kernel.pins import DEFAULT_PIN_DIR
from spagate.gate.service.admission import Admission, set_tag_hints
from spagate.gate.service.hooks import Hooks
from spagate.gate.service.journal import journal_emit
from spagate.gate.service.preflight import check_interfaces, missing_capabilities
from spagate.gate.service.state import read_state, remove_state, write_state

PUBLISH_EVERY_S = 1.0


@dataclass
class DaemonOptions:
    interfaces: tuple[str, ...]
    mode: str = "auto"
    keep_attached: bool = False
    pin_dir: str = str(DEFAULT_PIN_DIR)


class Daemon:
    def __init__(self, config: GateConfig, opts: DaemonOptions, emit=journal_emit):
        self.config, self.opts = config, opts
        self.log = EventLog(emit, time.monotonic)
        self.stopping = False
        self.started = int(time.time())

    def _stop(self, signum, _frame) -> None:
        self.stopping = True

    def run(self) -> None:
        from spagate.gate.kernel.build import load  # bcc: imported only here
        from spagate.gate.service.loader import gate_options

        cfg, opts = self.config, self.opts
        ifindex = check_interfaces(opts.interfaces)
        missing = missing_capabilities()
        if missing:
            raise SpagateError(f"spagate attach needs {', '.join(missing)} (run it as root)")
        other = read_state(opts.pin_dir)
        if other and not other.get("stale") and other.get("pid") != os.getpid():
            raise SpagateError(
                f"spagate attach is already running (pid {other['pid']}, "
                f"{', '.join(other.get('interfaces', {}))}) with {opts.pin_dir}: stop it first"
            )
        names = {i: n for n, i in ifindex.items()}
        for note in cfg.notes:
            self.log.info(note)
        prog = load(gate_options(cfg), pin_dir=opts.pin_dir)
        maps = prog.maps
        maps.set_protected((p.proto, p.port) for p in cfg.protected)
        maps.set_static(cfg.allow)
        maps.set_spa_keys([i.keys.hmac_key for i in cfg.identities])
        set_tag_hints(cfg, maps, time.time_ns() // 1_000_000)
        hooks = Hooks(cfg.open_cmd, cfg.close_cmd, self.log)
        intake = Admission(cfg, maps, self.log, hooks, ifnames=lambda i: names.get(i, str(i)))
        restored = intake.restore()

        attached: dict[str, str] = {}
        running = False
        failed = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)
        # Closing the terminal of a foreground gate must not take it down (and with it every
        # knock): only SIGINT/SIGTERM stop it.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            for name in opts.interfaces:
                attached[name] = prog.attach(name, opts.mode)
            self._write_state(attached, {})
            prog.on_spa(intake.handle)
            running = True
            self.log.info(
                "attached "
                + ", ".join(f"{n} ({m})" for n, m in attached.items())
                + f"; protecting {', '.join(map(str, cfg.protected))}"
                + f"; SPA on udp/{cfg.spa_port}; identities "
                + ", ".join(i.name for i in cfg.identities)
                + (f"; static allow {', '.join(map(str, cfg.allow))}" if cfg.allow else "")
                + (f"; {restored} nonces restored" if restored else "")
            )
            published = dict(intake.counts)
            next_publish = 0.0
            while not self.stopping:
                prog.poll(200)
                hooks.poll()
                self.log.tick()
                now = time.monotonic()
                if now >= next_publish and intake.counts != published:
                    # What `spagate status` shows of the daemon; at most once a second.
                    published = dict(intake.counts)
                    self._write_state(attached, published)
                    next_publish = now + PUBLISH_EVERY_S
                intake.prune()
        except BaseException as e:
            # Fail closed: once guarding, an unexpected error leaves the program attached (the
            # ports stay shut, windows still close on time) rather than opening them to all.
            failed = running and not isinstance(e, KeyboardInterrupt)
            if failed:
                self.log.error(
                    f"stopping on an error: {type(e).__name__}: {e}; "
                    f"{', '.join(attached)} stay guarded with no SPA intake until spagate "
                    f"restarts (recovery: spagate detach {' '.join(attached)})"
                )
            raise
        finally:
            if (opts.keep_attached and running) or failed:
                if attached and not failed:
                    self.log.info(f"stopping; {', '.join(attached)} stay guarded (--keep-attached)")
            else:
                for name in attached:
                    try:
                        prog.detach(name)
                    except Exception as e:  # keep detaching the others
                        self.log.error(f"detach {name} failed: {e}")
                if attached:
                    self.log.info(f"stopped; detached {', '.join(attached)}")
            hooks.shutdown()
            remove_state(opts.pin_dir)

    def _write_state(self, attached: dict[str, str], counts: dict[str, int]) -> None:
        write_state(
            self.opts.pin_dir,
            {
                "pid": os.getpid(),
                "interfaces": attached,
                "pin_dir": self.opts.pin_dir,
                "config": self.config.path,
                "spa_port": self.config.spa_port,
                "started": self.started,
                "spa": counts,
            },
        )
