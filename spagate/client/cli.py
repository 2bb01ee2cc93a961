"""Client commands: keygen, send, connect."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Optional

import typer

from spagate.errors import SpagateError

DEFAULT_SPA_PORT = 8484
_NAME = re.compile(r"^[A-Za-z0-9._@+-]+$")

# Typer signatures in the default-value style, with Optional[...]: Debian's python3-typer (0.7)
# knows neither Annotated nor `X | None` there.
CONFIG_OPT = typer.Option(
    None, "-c", "--config", help="Key file (default ~/.spagate.ini, ~/.sparoid.ini)."
)
IP_OPT = typer.Option(
    None,
    "--ip",
    help="Address to open: an IP, or 'source' for the address the packet comes from. "
    "Default: 127.0.0.1/::1 for loopback targets, else the public address.",
)


def _warn(text: str) -> None:
    print(text, file=sys.stderr)


COPIES_OPT = typer.Option(
    None,
    "--copies",
    help="Copies of each packet, a few ms apart (default 3, or `copies =` in the key file).",
)


def _send(
    host: str,
    spa_port: int,
    config: Optional[Path],
    ip: Optional[str],
    copies: Optional[int] = None,
):
    """Shared by send and connect: returns the resolved targets."""
    from spagate.client import publicip
    from spagate.client.config import MAX_COPIES, load_config
    from spagate.client.send import check_report, parse_ip_option, resolve, send_spa

    ip_option = parse_ip_option(ip)
    if not 0 < spa_port < 65536:
        raise SpagateError(f"SPA port {spa_port} is out of range 1-65535")
    if copies is not None and not 1 <= copies <= MAX_COPIES:
        raise SpagateError(f"--copies {copies} is out of range 1-{MAX_COPIES}")
    cfg = load_config(config)
    targets = resolve(host)

    def public(family: int):
        import socket

        url = cfg.public_ipv4_url if family == socket.AF_INET else cfg.public_ipv6_url
        return publicip.public_ip(family, url)

    n = cfg.copies if copies is None else copies
    report = send_spa(targets, spa_port, cfg.keys, ip_option, public, n, cfg.copy_interval_s)
    check_report(report, host, _warn)
    return report.sent


def register(app: typer.Typer) -> None:
    @app.command()
    def keygen(
        name: Optional[str] = typer.Option(
            None, "--name", help="Print as an [NAME] section: a named identity."
        ),
    ) -> None:
        """Print a new key and hmac-key (sparoid format)."""
        from spagate.protocol import generate_keypair

        if name is not None and not _NAME.match(name):
            raise SpagateError(f"--name {name!r}: use letters, digits and . _ @ + - only")
        kp = generate_keypair()
        if name is not None:
            print(f"[{name}]")
        print(f"key = {kp.key.hex()}")
        print(f"hmac-key = {kp.hmac_key.hex()}")

    @app.command()
    def send(
        host: str = typer.Argument(..., help="Host name or address of the gate."),
        port: int = typer.Option(DEFAULT_SPA_PORT, "-p", "--port", help="SPA UDP port."),
        config: Optional[Path] = CONFIG_OPT,
        ip: Optional[str] = IP_OPT,
        copies: Optional[int] = COPIES_OPT,
    ) -> None:
        """Send an SPA packet to every address of HOST."""
        _send(host, port, config, ip, copies)

    @app.command(context_settings={"help_option_names": ["--help"]})
    def connect(
        host: str = typer.Option(..., "-h", "--host", help="Host to connect to (%h)."),
        port: int = typer.Option(..., "-P", "--port", help="TCP port (%p)."),
        spa_port: int = typer.Option(DEFAULT_SPA_PORT, "-p", "--spa-port", help="SPA UDP port."),
        config: Optional[Path] = CONFIG_OPT,
        ip: Optional[str] = IP_OPT,
        timeout: float = typer.Option(5.0, "--timeout", help="Seconds to keep trying to connect."),
    ) -> None:
        """ssh ProxyCommand: send SPA, connect, hand the socket to ssh (or relay bytes).

        In ~/.ssh/config: ProxyCommand spagate connect -h %h -P %p, and ProxyUseFdpass yes.
        """
        from spagate.client.connect import open_connection, pass_fd, relay, unix_socket_on

        if not 0 < port < 65536:
            raise SpagateError(f"port {port} is out of range 1-65535")
        if timeout <= 0:
            raise SpagateError(f"--timeout must be positive, got {timeout:g}")
        targets = _send(host, spa_port, config, ip)
        conn = open_connection(targets, port, timeout, host)
        channel = unix_socket_on(1)
        if channel is not None:
            with channel, conn:
                pass_fd(channel, conn)
            return
        relay(conn)
