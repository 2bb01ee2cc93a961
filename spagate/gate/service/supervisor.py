"""`spagate attach` in the foreground: loader, then monitor and worker, as one command.

    supervisor (root) ── runs ──▶ loader (subprocess: bcc lives and dies there)
        │ is the monitor (hooks, re-attach) on a socketpair
        └── runs ──▶ worker (drops to the spagate user, CAP_BPF only), restarted if it dies

The supervisor holds the gate's lock and hands it to both children (a shared open file: the
lock lasts while any of them lives). It reads the configuration as root and hands it to the
worker as a sealed memfd. On SIGINT/SIGTERM it stops the worker and, unless --keep-attached,
detaches the gate; the systemd units run the same three roles as separate processes instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import signal
import socket
import subprocess
import sys
import time

from spagate.errors import SpagateError
from spagate.gate.core.config import GateConfig
from spagate.gate.core.eventlog import EventLog
from spagate.gate.kernel import link
from spagate.gate.service.journal import event_log, journal_emit
from spagate.gate.service.loader import LoadOptions, expand_interfaces, preflight
from spagate.gate.service.monitor import Monitor
from spagate.gate.service.state import make_run_dir, read_attached, remove_state, take_lock

RESTART_AFTER_S = 1.0


def _config_memfd(text: str) -> int:
    fd = os.memfd_create("spagate.ini", os.MFD_ALLOW_SEALING)
    os.write(fd, text.encode())
    os.lseek(fd, 0, os.SEEK_SET)
    seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


class Supervisor:
    def __init__(self, config: GateConfig, config_text: str, opts: LoadOptions,
                 keep_attached: bool = False, emit=journal_emit,
                 realtime: bool = True):  # fmt: skip
        self.config, self.config_text, self.opts = config, config_text, opts
        self.keep_attached = keep_attached
        self.realtime = realtime  # the worker's ring reader at SCHED_FIFO 1 (service.priority)
        self.log: EventLog = event_log(config.log_format, emit)
        self.stopping = False
        self.worker: subprocess.Popen | None = None

    def _stop(self, _signum, _frame) -> None:
        self.stopping = True

    def run(self) -> int:
        cfg, opts = self.config, self.opts
        for note in cfg.notes:
            self.log.info(note)
        opts = self.opts = expand_interfaces(opts, cfg.unguarded, self.log.error)
        account = preflight(cfg, opts)
        make_run_dir(account.uid, account.gid)
        lock_fd = take_lock(opts.pin_dir)
        os.set_inheritable(lock_fd, True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal must not stop the gate
        self._load(lock_fd)
        if opts.all_interfaces:  # what the loader found and attached
            names = tuple(read_attached(opts.pin_dir)) or opts.interfaces
            opts = self.opts = LoadOptions(names, opts.mode, opts.force, opts.pin_dir, True)
        monitor = Monitor(cfg, opts.pin_dir, opts.interfaces, opts.mode, self.log, account,
                          all_interfaces=opts.all_interfaces)  # fmt: skip
        monitor.start()
        orderly = False  # stopped by a signal; an error on the way out leaves the gate guarding
        try:
            while not self.stopping:
                rc = self._run_worker(monitor, account, lock_fd)
                if self.stopping:
                    break
                self.log.error(
                    f"the worker stopped (exit status {rc}): restarting it in "
                    f"{RESTART_AFTER_S:g}s; {', '.join(opts.interfaces)} stay guarded meanwhile"
                )
                time.sleep(RESTART_AFTER_S)
            orderly = True
        finally:
            self._stop_worker()
            ifaces = ", ".join(opts.interfaces)
            if self.keep_attached:
                self.log.info(f"stopping; {ifaces} stay guarded (--keep-attached)")
            elif not orderly:  # fail closed: the pinned program keeps the ports shut
                self.log.error(
                    f"stopping on an error; {ifaces} stay guarded: nobody takes knocks "
                    "until spagate runs again (spagate detach removes it)"
                )
            else:
                if opts.all_interfaces:  # the monitor guarded new ones meanwhile
                    opts.interfaces = tuple(link.pinned_interfaces(opts.pin_dir))
                    ifaces = ", ".join(opts.interfaces)
                for name in opts.interfaces:
                    try:
                        link.detach_link(opts.pin_dir, name)
                    except Exception as e:  # keep detaching the others
                        self.log.error(f"detach {name} failed: {e}")
                self.log.info(f"stopped; detached {ifaces}")
            monitor.hooks.shutdown()
            monitor.close()
            remove_state(opts.pin_dir)
            os.close(lock_fd)
        return 0

    def _load(self, lock_fd: int) -> None:
        opts = self.opts
        argv = [sys.executable, "-m", "spagate", "load", "-c", self.config.path, "--pin-dir",
                opts.pin_dir, "--mode", opts.mode, "--lock-fd", str(lock_fd),
                *(["--force"] if opts.force else []),
                *(["--all"] if opts.all_interfaces else opts.interfaces)]  # fmt: skip
        t0 = time.monotonic()
        r = subprocess.run(argv, pass_fds=(lock_fd,), stdout=None, stderr=subprocess.PIPE,
                           text=True)  # fmt: skip
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["the loader failed"])[-1]
            raise SpagateError(last.removeprefix("spagate: error: "))
        if r.stderr:  # its warnings and errors (unguarded interfaces...), as it wrote them
            sys.stderr.write(r.stderr)
            sys.stderr.flush()
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the loader's
        self.log.info(
            f"loader done in {time.monotonic() - t0:.1f}s, peak RSS {peak / 1024:.0f} MiB"
        )

    def _run_worker(self, monitor: Monitor, account, lock_fd: int) -> int:
        opts = self.opts
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cfd = _config_memfd(self.config_text)
        # Started as root, it imports what it needs, then drops to the spagate user with
        # CAP_BPF alone (spagate.gate.service.privdrop) before it reads a packet.
        argv = [sys.executable, "-m", "spagate", "worker", "-c", self.config.path,
                "--pin-dir", opts.pin_dir, "--config-fd", str(cfd), "--monitor-fd",
                str(theirs.fileno()), "--lock-fd", str(lock_fd), "--drop-privileges",
                *(["--realtime"] if self.realtime else []),
                *(["--all"] if opts.all_interfaces else []), *opts.interfaces]  # fmt: skip
        try:
            self.worker = subprocess.Popen(argv, pass_fds=(cfd, theirs.fileno(), lock_fd))
        finally:
            os.close(cfd)
            theirs.close()
        mine.setblocking(False)
        try:
            while self.worker.poll() is None and not self.stopping:
                if monitor.serve([mine], 0.2):
                    break  # the worker closed its end
            return self.worker.wait() if not self.stopping else 0
        finally:
            with contextlib.suppress(OSError):
                monitor.serve([mine], 0)  # requests sent just before the worker stopped
            mine.close()

    def _stop_worker(self) -> None:
        w = self.worker
        if w is None or w.poll() is not None:
            return
        w.send_signal(signal.SIGTERM)
        try:
            w.wait(15)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()
