"""Gate commands: attach, detach, status, allow, revoke, demo. bcc is imported lazily, only by
attach (status/allow/revoke/detach work on the pinned maps and netlink, without compiling).
Its one concern is the operator's command line: parse, check, call the service or the maps."""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from pathlib import Path
from typing import List, Optional

import typer

from spagate.errors import SpagateError
from spagate.gate.core.config import DEFAULT_PATH, XDP_MODES, parse_port
from spagate.gate.core.config import load_config as _load_config
from spagate.gate.kernel.pins import DEFAULT_PIN_DIR
from spagate.gate.service.account import config_readers

PIN_DIR = typer.Option(str(DEFAULT_PIN_DIR), "--pin-dir", help="Where the gate's maps are pinned.")


def load_config(path: str):
    """The gate's configuration: root's file, readable by root's and the spagate group."""
    return _load_config(path, group_readers=config_readers())


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise SpagateError(f"{what} needs root (CAP_BPF and CAP_NET_ADMIN): run it with sudo")


def _open_maps(pin_dir: str):
    from spagate.gate.kernel.maps import GateMaps

    if not Path(pin_dir, "allow").exists():
        raise SpagateError(f"no gate state under {pin_dir}: is `spagate attach` running?")
    return GateMaps.from_pin_dir(pin_dir)


def _mode(mode: str) -> str:
    if mode not in XDP_MODES:
        raise SpagateError(f"--mode must be one of {', '.join(XDP_MODES)}, not {mode!r}")
    return mode


def _ip(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise SpagateError(f"{text!r} is not an IP address") from None


def register(app: typer.Typer) -> None:
    @app.command()
    def attach(
        interfaces: Optional[List[str]] = typer.Argument(
            None, help="Interfaces to guard (else config)."
        ),
        config: str = typer.Option(DEFAULT_PATH, "-c", "--config", help="Gate configuration."),
        mode: Optional[str] = typer.Option(
            None, "--mode", help="XDP mode: native, generic or auto (default: the config's)."
        ),
        keep_attached: bool = typer.Option(
            False, "--keep-attached", help="Leave the gate guarding after this command stops."
        ),
        force: bool = typer.Option(
            False, "--force", help="Replace another XDP program already on an interface."
        ),
        pin_dir: str = PIN_DIR,
    ) -> None:
        """Guard interfaces with the XDP gate and open it for valid SPA packets (foreground):
        loader, privileged monitor and unprivileged worker in one command."""
        from spagate.gate.service.loader import LoadOptions
        from spagate.gate.service.supervisor import Supervisor
        from spagate.inifile import read_key_file

        _need_root("spagate attach")
        cfg = load_config(config)
        text = read_key_file(config, group_readers=config_readers())
        mode = _mode(mode or cfg.xdp_mode)
        ifaces = tuple(interfaces or ()) or cfg.interfaces
        opts = LoadOptions(ifaces, mode, force, pin_dir)
        raise typer.Exit(Supervisor(cfg, text, opts, keep_attached).run())

    @app.command()
    def load(
        interfaces: Optional[List[str]] = typer.Argument(
            None, help="Interfaces to guard (else config)."
        ),
        config: str = typer.Option(DEFAULT_PATH, "-c", "--config", help="Gate configuration."),
        mode: Optional[str] = typer.Option(None, "--mode", help="native, generic or auto."),
        force: bool = typer.Option(
            False, "--force", help="Replace another XDP program already on an interface."
        ),
        pin_dir: str = PIN_DIR,
        lock_fd: Optional[int] = typer.Option(None, "--lock-fd", hidden=True),
    ) -> None:
        """Compile, pin and attach the gate, then exit (systemd: ExecStartPre=+). The
        unprivileged `spagate worker` then takes the knocks."""
        from spagate.gate.service.account import service_account
        from spagate.gate.service.journal import journal_emit
        from spagate.gate.service.loader import LoadOptions, load_gate
        from spagate.gate.service.state import make_run_dir, take_lock, write_attached

        _need_root("spagate load")
        cfg = load_config(config)
        ifaces = tuple(interfaces or ()) or cfg.interfaces
        opts = LoadOptions(ifaces, _mode(mode or cfg.xdp_mode), force, pin_dir)
        account = service_account()
        make_run_dir(account.uid, account.gid)
        lock = take_lock(pin_dir) if lock_fd is None else None  # else the caller holds it
        try:
            modes = load_gate(cfg, opts, log=lambda line: journal_emit(6, line))
            write_attached(pin_dir, modes)
        finally:
            if lock is not None:
                os.close(lock)
        journal_emit(6, "loaded; " + ", ".join(f"{n} ({m})" for n, m in modes.items()))

    @app.command(hidden=True)
    def worker() -> None:
        """The unprivileged worker (started without this command-line layer: spagate.cli)."""

    @app.command()
    def monitor(
        config: str = typer.Option(DEFAULT_PATH, "-c", "--config", help="Gate configuration."),
        socket_path: str = typer.Option(
            "/run/spagate-monitor/monitor.sock", "--socket", help="Where the worker connects."
        ),
        interfaces: Optional[List[str]] = typer.Argument(None, help="Guarded interfaces."),
        mode: Optional[str] = typer.Option(None, "--mode", help="native, generic or auto."),
        pin_dir: str = PIN_DIR,
    ) -> None:
        """The privileged monitor for systemd (spagate-monitor.service): runs open-cmd and
        close-cmd, re-attaches the gate when its link is removed."""
        import signal
        import time

        from spagate.gate.core.eventlog import EventLog
        from spagate.gate.service.account import service_account
        from spagate.gate.service.journal import journal_emit
        from spagate.gate.service.monitor import Monitor, serve_forever

        _need_root("spagate monitor")
        cfg = load_config(config)
        ifaces = tuple(interfaces or ()) or cfg.interfaces
        log = EventLog(journal_emit, time.monotonic)
        mon = Monitor(cfg, pin_dir, ifaces, _mode(mode or cfg.xdp_mode), log, service_account())
        stop = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.append(1))
        log.info(f"monitor listening on {socket_path} for {', '.join(ifaces)}")
        serve_forever(mon, socket_path, lambda: bool(stop))

    @app.command()
    def detach(
        interfaces: List[str] = typer.Argument(..., help="Interfaces to remove the gate from."),
        force: bool = typer.Option(
            False, "--force", help="Also while a worker is guarding (and a foreign program)."
        ),
        pin_dir: Optional[str] = typer.Option(
            None, "--pin-dir", help="The gate's pin directory (default: every spagate one)."
        ),
    ) -> None:
        """Stop guarding interfaces: remove the gate's link (refused while its worker runs,
        unless --force), or any XDP program left there (recovery)."""
        from spagate.gate.kernel import link
        from spagate.gate.service.state import lock_held, read_state, stop_gate
        from spagate.gate.service.status import find_pin_dirs

        _need_root("spagate detach")
        dirs = [Path(pin_dir)] if pin_dir else find_pin_dirs()
        for name in interfaces:
            try:
                socket.if_nametoindex(name)
            except OSError:
                raise SpagateError(f"interface {name!r} does not exist") from None
            mine = [d for d in dirs if link.pinned_link(d, name) is not None]
            stopped = []
            for d in mine:
                if not lock_held(d):
                    continue
                pid = (read_state(d) or {}).get("pid")
                who = f"pid {pid}, " if pid else ""
                if not force:
                    raise SpagateError(
                        f"{name} is guarded by a running gate ({who}pin dir {d}): "
                        "stop it first, or pass --force (which stops it)"
                    )
                # A running gate would re-attach at once: stop it first (under systemd,
                # `systemctl stop spagate` is the way: it would be restarted).
                if not stop_gate(d):
                    raise SpagateError(f"the gate ({who}pin dir {d}) did not stop within 20 s")
                typer.echo(f"stopped the gate ({who}pin dir {d})")
                stopped.append(d)
            found = bool(stopped)  # a gate that stops detaches what it attached
            for d in mine:
                found |= link.detach_link(d, name)
            there = link.xdp_attached(name)
            if there is not None:
                name_of = link.program_name(there[0])
                if name_of != link.GATE_PROG_NAME and not force:
                    raise SpagateError(
                        f"{name}: XDP program id {there[0]} ({name_of}) is not spagate's: "
                        "pass --force to remove it"
                    )
                link.remove_program(name, link.ifindex_of(name), there[1])
                found = True
            typer.echo(f"detached {name}" if found else f"{name}: no XDP program was attached")

    @app.command()
    def status(
        pin_dir: str = PIN_DIR,
        json_out: bool = typer.Option(False, "--json", help="One JSON object, for scripts."),
    ) -> None:
        """Whether each interface is really guarded (asked of the kernel), the worker, the
        protected ports, open windows and counters. Exit status: 0 guarded and taking knocks,
        1 an interface is unguarded, 3 guarded but no worker takes knocks."""
        import json

        from spagate.gate.service.status import gate_status

        _need_root("spagate status")
        maps = _open_maps(pin_dir)
        st = gate_status(pin_dir)
        entries = maps.allowed()
        if json_out:
            out = st.as_dict()
            out["protected"] = [f"{p}/{n}" for p, n in sorted(maps.protected())]
            out["static_allow"] = [str(n) for n in maps.static()]
            out["windows"] = [
                {"ip": str(e.ip), "proto": e.proto, "port": e.port, "remaining_s": e.remaining_s}
                for e in entries
            ]
            out["counters"] = maps.counters()
            typer.echo(json.dumps(out, indent=1))
            raise typer.Exit(st.exit_code)
        ifs = ", ".join(f"{i.name} ({i.mode or 'not attached'})" for i in st.interfaces)
        if st.worker_running:
            typer.echo(
                f"gate: running (pid {st.pid}, worker pid {st.worker_pid}), attached to {ifs}"
            )
        else:
            typer.echo(f"gate: NOT RUNNING (no worker takes knocks); interfaces: {ifs or 'none'}")
        for i in st.interfaces:
            if not i.guarded:
                typer.echo(f"UNGUARDED: {i.name}: {i.why}")
        if st.links_lost:
            typer.echo(f"links lost and re-attached since start: {st.links_lost}")
        spa = " ".join(f"{k}={v}" for k, v in sorted(st.spa.items()))
        typer.echo(f"spa verdicts: {spa or 'none yet'}")
        prot = ", ".join(f"{p}/{n}" for p, n in sorted(maps.protected()))
        typer.echo(f"protected: {prot or 'none'}")
        static = ", ".join(map(str, maps.static()))
        typer.echo(f"static allow: {static or 'none'}")
        typer.echo(f"open windows: {len(entries)}")
        for e in entries:
            what = f"{e.proto}/{e.port}" if e.proto and e.port else (e.proto or "all") + " ports"
            typer.echo(f"  {e.ip!s:<39} {what:<12} {e.remaining_s:6.1f}s left")
        typer.echo("counters:")
        for reason, n in maps.counters().items():
            if n:
                typer.echo(f"  {reason:<24} {n}")
        raise typer.Exit(st.exit_code)

    @app.command()
    def allow(
        ip: str = typer.Argument(..., help="Address to let in."),
        port: Optional[List[str]] = typer.Option(
            None, "--port", help="tcp/22 or udp/51820 (repeatable)."
        ),
        seconds: int = typer.Option(
            60, "--for", min=1, max=31_536_000, help="Seconds the window stays open (1 year max)."
        ),
        pin_dir: str = PIN_DIR,
    ) -> None:
        """Open the gate for an address by hand."""
        addr = _ip(ip)
        try:
            ports = [parse_port(p) for p in port or ()]
        except ValueError as e:
            raise SpagateError(f"--port: {e}") from None
        _need_root("spagate allow")
        maps = _open_maps(pin_dir)
        until = time.monotonic_ns() + seconds * 1_000_000_000
        for p in ports or [None]:
            if p is None:
                maps.allow(addr, until)
            else:
                maps.allow(addr, until, p.proto, p.port)
        what = ", ".join(map(str, ports)) if ports else "every protected port"
        typer.echo(f"allowed {addr} on {what} for {seconds}s")

    @app.command()
    def revoke(
        ip: str = typer.Argument(..., help="Address whose windows to close."),
        pin_dir: str = PIN_DIR,
    ) -> None:
        """Close every open window of an address now."""
        addr = _ip(ip)
        _need_root("spagate revoke")
        n = _open_maps(pin_dir).revoke_ip(addr)
        typer.echo(f"revoked {n} window(s) of {addr}")

    @app.command()
    def demo() -> None:
        """Show the gate working between two network namespaces (root, no configuration)."""
        from spagate.lab.demo import run_demo

        _need_root("spagate demo")
        run_demo()
