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
    None, "-c", "--config", help="Key file.", show_default="~/.spagate.ini, else ~/.sparoid.ini"
)
IP_OPT = typer.Option(
    None,
    "--ip",
    help="Address to open: an IP, or 'source' for the address the packet comes from.",
    show_default="the profile's ip, else 127.0.0.1/::1 for loopback targets, else the "
    "public address",
)


def _warn(text: str) -> None:
    print(text, file=sys.stderr)


NAME_OPT = typer.Option(
    None, "-n", "--name", help="Profile: a [NAME] section of the key file. Default: the "
    "first section whose host = matches HOST, else the top of the file.", show_default=False,
)  # fmt: skip


def _send(host: str, spa_port: Optional[int], config: Optional[Path], ip: Optional[str],
          name: Optional[str] = None, verbose: bool = False):  # fmt: skip
    """Shared by send and connect: returns the resolved targets."""
    from spagate.client import publicip
    from spagate.client.config import load_config
    from spagate.client.send import check_report, parse_ip_option, resolve, send_spa

    if ip is not None:
        parse_ip_option(ip)  # a bad --ip is reported before the files are read
    if spa_port is not None and not 0 < spa_port < 65536:
        raise SpagateError(f"SPA port {spa_port} is out of range 1-65535")
    cfg = load_config(config, host=host, name=name)
    ip_option = parse_ip_option(ip if ip is not None else cfg.ip)
    spa_port = spa_port or cfg.port or DEFAULT_SPA_PORT
    targets = resolve(host)

    def public(family: int):
        import socket

        url = cfg.public_ipv4_url if family == socket.AF_INET else cfg.public_ipv6_url
        return publicip.public_ip(family, url)

    report = send_spa(targets, spa_port, cfg.keys, ip_option, public)
    check_report(report, host, _warn)
    if verbose:
        for line in report.describe(spa_port, cfg.source):
            _warn(line)
    return report.sent


def register(app: typer.Typer) -> None:
    @app.command()
    def keygen(
        name: Optional[str] = typer.Option(
            None,
            "--name",
            help="Print as an [NAME] section: a named identity.",
            show_default=False,
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
        host: str = typer.Argument(
            ..., help="Host name or address of the gate.", show_default=False
        ),
        port: Optional[int] = typer.Option(
            None,
            "-p",
            "--port",
            help="SPA UDP port.",
            show_default=f"the profile's port, else {DEFAULT_SPA_PORT}",
        ),
        config: Optional[Path] = CONFIG_OPT,
        ip: Optional[str] = IP_OPT,
        name: Optional[str] = NAME_OPT,
        verbose: bool = typer.Option(
            False, "-v", "--verbose", help="Say what was sent where (on stderr)."
        ),
    ) -> None:
        """Send an SPA packet to every address of HOST."""
        _send(host, port, config, ip, name, verbose)

    @app.command(context_settings={"help_option_names": ["--help"]})
    def connect(
        host: str = typer.Option(
            ..., "-h", "--host", help="Host to connect to (%h).", show_default=False
        ),
        port: int = typer.Option(..., "-P", "--port", help="TCP port (%p).", show_default=False),
        spa_port: Optional[int] = typer.Option(
            None,
            "-p",
            "--spa-port",
            help="SPA UDP port.",
            show_default=f"the profile's port, else {DEFAULT_SPA_PORT}",
        ),
        config: Optional[Path] = CONFIG_OPT,
        ip: Optional[str] = IP_OPT,
        name: Optional[str] = NAME_OPT,
        timeout: float = typer.Option(5.0, "--timeout", help="Seconds to keep trying to connect."),
        verbose: bool = typer.Option(
            False, "-v", "--verbose", help="Say what was sent where (on stderr)."
        ),
    ) -> None:
        """ssh ProxyCommand: send SPA, connect, hand the socket to ssh (or relay bytes).

        In ~/.ssh/config: ProxyCommand spagate connect -h %h -P %p, and ProxyUseFdpass yes.
        """
        from spagate.client.connect import open_connection, pass_fd, relay, unix_socket_on

        if not 0 < port < 65536:
            raise SpagateError(f"port {port} is out of range 1-65535")
        if timeout <= 0:
            raise SpagateError(f"--timeout must be positive, got {timeout:g}")
        targets = _send(host, spa_port, config, ip, name, verbose)
        conn = open_connection(targets, port, timeout, host)
        channel = unix_socket_on(1)
        if channel is not None:
            with channel, conn:
                pass_fd(channel, conn)
            return
        relay(conn)
