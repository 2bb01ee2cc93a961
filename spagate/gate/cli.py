"""Gate commands: attach, detach, status, top, allow, revoke, demo. bcc is imported lazily, only by
attach (status/allow/revoke/detach work on the pinned maps and netlink, without compiling).
Its one concern is the operator's command line: parse, check, call the service or the maps."""

from __future__ import annotations

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
from spagate.net import not_an_address, parse_address, window_refusal

PIN_DIR = typer.Option(str(DEFAULT_PIN_DIR), "--pin-dir", help="Where the gate's maps are pinned.")
CONFIG = typer.Option(DEFAULT_PATH, "-c", "--config", help="Gate configuration.")
MODE = typer.Option(
    None, "--mode", help="XDP mode: native, generic or auto.", show_default="the config's xdp-mode"
)
FORCE = typer.Option(False, "--force", help="Replace another XDP program already on an interface.")

INTERFACES = typer.Argument(
    None, help="Interfaces to guard.", show_default="the config's interface ="
)
GUARDED = typer.Argument(None, help="Guarded interfaces.", show_default="the config's interface =")


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


FLEET_CONFIG = typer.Option(
    None,
    "-c",
    "--config",
    help="Gate configuration: with cluster =, act on the whole fleet.",
    show_default="none: this gate only",
)


def _fleet_store(config: str | None):
    """The fleet's store when the configuration names a cluster, else None."""
    if config is None:
        return None
    cfg = load_config(config)
    if cfg.fleet is None:
        return None
    from spagate.gate.service.fleet import FleetStore
    from spagate.gate.service.fleetgate import fleet_options

    return FleetStore(fleet_options(cfg))


def _mode(mode: str) -> str:
    if mode not in XDP_MODES:
        raise SpagateError(f"--mode must be one of {', '.join(XDP_MODES)}, not {mode!r}")
    return mode


def _ip(text: str):
    try:
        return parse_address(text)
    except ValueError:
        raise SpagateError(not_an_address(text)) from None


def _interfaces(given, all_ifaces: bool, cfg) -> tuple[tuple[str, ...], bool]:
    """(names, every): names from the command line, else the config; --all or
    interface = all means every IP-carrying interface (names come from the loader then)."""
    names = tuple(given or ())
    if all_ifaces or (not names and cfg.all_interfaces):
        if names:
            raise SpagateError("--all guards every interface: name none")
        return (), True
    return names or cfg.interfaces, False


def _window_ip(text: str):
    """An address a window may open for: never 0.0.0.0, ::, multicast or broadcast."""
    addr = _ip(text)
    why = window_refusal(addr)
    if why is not None:
        raise SpagateError(f"{why}; no window opened")
    return addr


def _links_here(link, pin_dir: Path, name: str) -> bool:
    """Whether pin_dir's link for name runs the program on the interface of that name in this
    network namespace: another namespace's eth0 (another gate on the host) is not ours."""
    there = link.xdp_attached(name)
    fd = link.pinned_link(pin_dir, name)
    if fd is None:
        return False
    try:
        return there is not None and link.link_state(fd).prog_id == there[0]
    finally:
        os.close(fd)


def register(app: typer.Typer) -> None:
    @app.command()
    def attach(
        interfaces: Optional[List[str]] = INTERFACES,
        config: str = CONFIG,
        mode: Optional[str] = MODE,
        keep_attached: bool = typer.Option(
            False, "--keep-attached", help="Leave the gate guarding after this command stops."
        ),
        force: bool = FORCE,
        all_ifaces: bool = typer.Option(
            False, "--all", help="Guard every IP-carrying interface, new ones too."
        ),
        realtime: bool = typer.Option(
            True,
            "--realtime/--no-realtime",
            help="Run the worker's ring reader at SCHED_FIFO 1 (a knock never waits for a "
            "busy CPU's next tick).",
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
        ifaces, every = _interfaces(interfaces, all_ifaces, cfg)
        opts = LoadOptions(ifaces, mode, force, pin_dir, every)
        raise typer.Exit(Supervisor(cfg, text, opts, keep_attached, realtime=realtime).run())

    @app.command()
    def load(
        interfaces: Optional[List[str]] = INTERFACES,
        config: str = CONFIG,
        mode: Optional[str] = MODE,
        force: bool = FORCE,
        all_ifaces: bool = typer.Option(False, "--all", help="Every IP-carrying interface."),
        pin_dir: str = PIN_DIR,
        lock_fd: Optional[int] = typer.Option(None, "--lock-fd", hidden=True),
    ) -> None:
        """Compile, pin and attach the gate, then exit (systemd: ExecStartPre=+). The
        unprivileged `spagate worker` then takes the knocks."""
        from spagate.gate.service.account import service_account
        from spagate.gate.service.journal import event_log
        from spagate.gate.service.loader import LoadOptions, load_gate
        from spagate.gate.service.state import make_run_dir, take_lock, write_attached

        _need_root("spagate load")
        from spagate.gate.service.priority import leave_realtime

        cfg = load_config(config)
        log = event_log(cfg.log_format)
        if (why := leave_realtime()) is not None:  # the unit's CPUSchedulingPolicy is the worker's
            log.error(f"the loader cannot leave real-time scheduling ({why}); loading anyway")
        ifaces, every = _interfaces(interfaces, all_ifaces, cfg)
        opts = LoadOptions(ifaces, _mode(mode or cfg.xdp_mode), force, pin_dir, every)
        account = service_account()
        make_run_dir(account.uid, account.gid)
        lock = take_lock(pin_dir) if lock_fd is None else None  # else the caller holds it
        try:
            modes = load_gate(cfg, opts, log=log.info, error=log.error)
            write_attached(pin_dir, modes)
        finally:
            if lock is not None:
                os.close(lock)
        log.info("loaded; " + ", ".join(f"{n} ({m})" for n, m in modes.items()))

    @app.command(hidden=True)
    def worker() -> None:
        """The unprivileged worker (started without this command-line layer: spagate.cli)."""

    @app.command()
    def monitor(
        config: str = CONFIG,
        socket_path: str = typer.Option(
            "/run/spagate-monitor/monitor.sock", "--socket", help="Where the worker connects."
        ),
        interfaces: Optional[List[str]] = GUARDED,
        mode: Optional[str] = MODE,
        pin_dir: str = PIN_DIR,
    ) -> None:
        """The privileged monitor for systemd (spagate-monitor.service): runs open-cmd and
        close-cmd, re-attaches the gate when its link is removed."""
        import signal

        from spagate.gate.service.account import service_account
        from spagate.gate.service.journal import event_log
        from spagate.gate.service.monitor import Monitor, serve_forever

        _need_root("spagate monitor")
        from spagate.gate.kernel.link import pinned_interfaces

        cfg = load_config(config)
        ifaces, every = _interfaces(interfaces, False, cfg)
        if every:
            ifaces = tuple(pinned_interfaces(pin_dir))
        log = event_log(cfg.log_format)
        mon = Monitor(cfg, pin_dir, ifaces, _mode(mode or cfg.xdp_mode), log, service_account(),
                      all_interfaces=every)  # fmt: skip
        mon.start()
        stop = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.append(1))
        log.info(f"monitor listening on {socket_path} for {', '.join(ifaces)}")
        serve_forever(mon, socket_path, lambda: bool(stop))

    @app.command()
    def detach(
        interfaces: List[str] = typer.Argument(
            ..., help="Interfaces to remove the gate from.", show_default=False
        ),
        force: bool = typer.Option(
            False, "--force", help="Also while a worker is guarding (and a foreign program)."
        ),
        pin_dir: Optional[str] = typer.Option(
            None,
            "--pin-dir",
            help="The gate's pin directory.",
            show_default="every spagate pin directory",
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
            if pin_dir is None:  # a scan: only the gates whose link is on this name here
                mine = [d for d in mine if _links_here(link, d, name)]
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
        config: Optional[str] = FLEET_CONFIG,
    ) -> None:
        """Whether each interface is really guarded (asked of the kernel), the worker, the
        protected ports, open windows and counters. Exit status: 0 guarded and taking knocks,
        1 an interface is unguarded, 2 an error (no gate state, not root), 3 guarded but no
        worker takes knocks."""
        import json

        from spagate.gate.service.status import gate_status

        _need_root("spagate status")
        maps = _open_maps(pin_dir)
        st = gate_status(pin_dir)
        entries = maps.allowed()
        store = _fleet_store(config)
        members = store.members() if store is not None else None
        if json_out:
            out = st.as_dict()
            out["protected"] = [f"{p}/{n}" for p, n in sorted(maps.protected())]
            out["static_allow"] = [str(n) for n in maps.static()]
            out["windows"] = [
                {"ip": str(e.ip), "proto": e.proto, "port": e.port, "remaining_s": e.remaining_s}
                for e in entries
            ]
            out["counters"] = maps.counters()
            if members is not None:
                import dataclasses

                out["fleet_members"] = [dataclasses.asdict(m) for m in members]
            typer.echo(json.dumps(out, indent=1, default=str))
            raise typer.Exit(st.exit_code)
        ifs = ", ".join(f"{i.name} ({i.mode or 'not attached'})" for i in st.interfaces)
        if st.worker_running:
            typer.echo(
                f"gate: running (pid {st.pid}, worker pid {st.worker_pid}), attached to {ifs}"
            )
        else:
            typer.echo(f"gate: NOT RUNNING (no worker takes knocks: {st.worker_why}); "
                       f"interfaces: {ifs or 'none'}")  # fmt: skip
        for i in st.interfaces:
            if not i.guarded:
                typer.echo(f"UNGUARDED: {i.name}: {i.why}")
        for other in st.others_unguarded:
            typer.echo(f"UNGUARDED: {other}: delivers IP to this host around the gate")
        if st.unguarded_by_config:
            typer.echo("outside the gate on purpose (unguarded =): "
                       + ", ".join(st.unguarded_by_config))  # fmt: skip
        if st.links_lost:
            typer.echo(f"links lost and re-attached since start: {st.links_lost}")
        if st.metrics:
            typer.echo(f"metrics: {st.metrics}")
        if st.hooks and (st.hooks.get("started") or st.hooks.get("queued")):
            h = st.hooks
            typer.echo(f"hooks: {h['queued']} queued, {h['running']} running, "
                       f"{h['started']} started, {h['failed']} failed")  # fmt: skip
        spa = " ".join(f"{k}={v}" for k, v in sorted(st.spa.items()))
        typer.echo(f"spa verdicts: {spa or 'none yet'}")
        if members is not None:
            typer.echo(f"fleet {store.opts.cluster}: {len(members)} member(s)")
            for m in members:
                r = m.record
                typer.echo(f"  {r.name:<16} {r.state:<9} {','.join(r.interfaces) or '-':<12} "
                           f"store {r.store}, last seen {m.last_seen_s:.1f}s ago")  # fmt: skip
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
        ip: str = typer.Argument(..., help="Address to let in.", show_default=False),
        port: Optional[List[str]] = typer.Option(
            None,
            "--port",
            help="A protected port, tcp/22 or udp/51820 (repeatable).",
            show_default="every protected port",
        ),
        seconds: int = typer.Option(
            60, "--for", min=1, max=31_536_000, help="Seconds the window stays open (1 year max)."
        ),
        pin_dir: str = PIN_DIR,
        config: Optional[str] = FLEET_CONFIG,
    ) -> None:
        """Open the gate for an address by hand (fleet mode: on every gate of the fleet)."""
        addr = _window_ip(ip)
        try:
            ports = [parse_port(p) for p in port or ()]
        except ValueError as e:
            raise SpagateError(f"--port: {e}") from None
        _need_root("spagate allow")
        maps = _open_maps(pin_dir)
        protected = {f"{p}/{n}" for p, n in maps.protected()}
        for p in ports:
            if str(p) not in protected:
                raise SpagateError(
                    f"--port {p} is not a protected port (protected: "
                    f"{', '.join(sorted(protected)) or 'none'}): a window there opens nothing"
                )
        until = time.monotonic_ns() + seconds * 1_000_000_000
        for p in ports or [None]:
            if p is None:
                maps.allow(addr, until)
            else:
                maps.allow(addr, until, p.proto, p.port)
        what = ", ".join(map(str, ports)) if ports else "every protected port"
        store = _fleet_store(config)
        if store is not None:
            import secrets

            principal = store.opts.user or "operator"
            for p in ports or [None]:
                proto, pnum = (p.proto, p.port) if p else (None, 0)
                store.allow(addr, proto, pnum, seconds, principal, secrets.token_hex(8))
            what += f", on every gate of fleet {store.opts.cluster}"
        typer.echo(f"allowed {addr} on {what} for {seconds}s")

    @app.command()
    def revoke(
        ip: Optional[str] = typer.Argument(
            None, help="Address whose windows to close.", show_default=False
        ),
        everything: bool = typer.Option(
            False, "--all", help="Close every open window (and every UDP flow)."
        ),
        pin_dir: str = PIN_DIR,
        config: Optional[str] = FLEET_CONFIG,
    ) -> None:
        """Close the open windows of an address now (its UDP flows too), or all of them
        (fleet mode: on every gate of the fleet)."""
        if everything == (ip is not None):
            raise SpagateError("name an address to revoke, or pass --all (not both)")
        addr = _ip(ip) if ip is not None else None
        _need_root("spagate revoke")
        store = _fleet_store(config)
        fleetwide = ""
        if store is not None:
            gone = store.revoke_all() if addr is None else store.revoke(addr)
            fleetwide = f"; {gone} grant(s) removed from fleet {store.opts.cluster}"
        maps = _open_maps(pin_dir)
        done = maps.revoke_all() if addr is None else maps.revoke_ip(addr)
        flows = f" and {done.flows} UDP flow(s)" if done.flows else ""
        whose = "" if addr is None else f" of {addr}"
        typer.echo(f"revoked {done.windows} open window(s){flows}{whose}{fleetwide}")

    @app.command()
    def top(
        pin_dir: str = PIN_DIR,
        once: bool = typer.Option(
            False, "--once", help="Print one screen as plain text and exit (no terminal needed)."
        ),
    ) -> None:
        """A live view of the gate (1 Hz): packets per second by verdict, open windows, the
        latest accepts and refusals with their sources, each interface's guard. q quits."""
        from spagate.gate.service.top import run_top

        _need_root("spagate top")
        raise typer.Exit(run_top(pin_dir, once))

    @app.command()
    def demo() -> None:
        """Show the gate working between two network namespaces (root, no configuration)."""
        from spagate.lab.demo import run_demo

        _need_root("spagate demo")
        run_demo()
