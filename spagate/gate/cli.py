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
from spagate.gate.core.config import DEFAULT_PATH, XDP_MODES, load_config, parse_port
from spagate.gate.kernel.pins import DEFAULT_PIN_DIR

PIN_DIR = typer.Option(str(DEFAULT_PIN_DIR), "--pin-dir", help="Where the gate's maps are pinned.")


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise SpagateError(f"{what} needs root (CAP_BPF and CAP_NET_ADMIN): run it with sudo")


def _open_maps(pin_dir: str):
    from spagate.gate.kernel.maps import GateMaps

    if not Path(pin_dir, "allow").exists():
        raise SpagateError(f"no gate state under {pin_dir}: is `spagate attach` running?")
    return GateMaps.from_pin_dir(pin_dir)


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
            False, "--keep-attached", help="Leave the program guarding after the daemon stops."
        ),
        pin_dir: str = PIN_DIR,
    ) -> None:
        """Guard interfaces with the XDP gate and open it for valid SPA packets (foreground)."""
        from spagate.gate.service.daemon import Daemon, DaemonOptions

        cfg = load_config(config)
        mode = mode or cfg.xdp_mode
        if mode not in XDP_MODES:
            raise SpagateError(f"--mode must be one of {', '.join(XDP_MODES)}, not {mode!r}")
        _need_root("spagate attach")
        ifaces = tuple(interfaces or ()) or cfg.interfaces
        Daemon(cfg, DaemonOptions(ifaces, mode, keep_attached, pin_dir)).run()

    @app.command()
    def detach(
        interfaces: List[str] = typer.Argument(..., help="Interfaces to remove the gate from."),
    ) -> None:
        """Remove an XDP program left on interfaces (recovery; needs no configuration)."""
        from spagate.gate.kernel.link import detach as detach_xdp

        _need_root("spagate detach")
        for name in interfaces:
            try:
                socket.if_nametoindex(name)
            except OSError:
                raise SpagateError(f"interface {name!r} does not exist") from None
            found = detach_xdp(name)
            typer.echo(f"detached {name}" if found else f"{name}: no XDP program was attached")

    @app.command()
    def status(pin_dir: str = PIN_DIR) -> None:
        """Attached interfaces, protected ports, open windows and counters."""
        from spagate.gate.service.state import read_state

        _need_root("spagate status")
        maps = _open_maps(pin_dir)
        state = read_state(pin_dir)
        if state is None:
            typer.echo("daemon: not running (maps are pinned; windows still close on time)")
        else:
            how = " (not running: stale state)" if state.get("stale") else ""
            ifs = ", ".join(f"{n} ({m})" for n, m in state["interfaces"].items())
            typer.echo(f"daemon: pid {state['pid']}{how}, attached to {ifs}")
            typer.echo(f"spa port: udp/{state['spa_port']}")
            spa = " ".join(f"{k}={v}" for k, v in sorted(state.get("spa", {}).items()))
            typer.echo(f"spa verdicts: {spa or 'none yet'}")
        prot = ", ".join(f"{p}/{n}" for p, n in sorted(maps.protected()))
        typer.echo(f"protected: {prot or 'none'}")
        static = ", ".join(map(str, maps.static()))
        typer.echo(f"static allow: {static or 'none'}")
        entries = maps.allowed()
        typer.echo(f"open windows: {len(entries)}")
        for e in entries:
            what = f"{e.proto}/{e.port}" if e.proto and e.port else (e.proto or "all") + " ports"
            typer.echo(f"  {e.ip!s:<39} {what:<12} {e.remaining_s:6.1f}s left")
        typer.echo("counters:")
        for reason, n in maps.counters().items():
            if n:
                typer.echo(f"  {reason:<24} {n}")

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
