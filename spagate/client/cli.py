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
PROTOCOL_OPT = typer.Option(
    None,
    "--protocol",
    help="sparoid or fwknop.",
    show_default="the profile's protocol, else sparoid",
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


COPIES_OPT = typer.Option(
    None,
    "--copies",
    help="Copies of each packet, a few ms apart (default 3, or the profile's copies =).",
    show_default=False,
)
NAME_OPT = typer.Option(
    None, "-n", "--name", help="Profile: a [NAME] section of the key file. Default: the "
    "first section whose host = matches HOST, else the top of the file.", show_default=False,
)  # fmt: skip
VERBOSE_OPT = typer.Option(False, "-v", "--verbose", help="Say what was sent where (on stderr).")


def _send(
    host: str,
    spa_port: Optional[int],
    config: Optional[Path],
    ip: Optional[str],
    protocol: Optional[str] = None,
    access: Optional[str] = None,
    timeout: int = 0,
    default_access: str = "tcp/22",
    copies: Optional[int] = None,
    name: Optional[str] = None,
    verbose: bool = False,
):
    """Shared by send and connect: returns the resolved targets."""
    from spagate.client import publicip
    from spagate.client.config import MAX_COPIES, load_config
    from spagate.client.send import check_report, parse_ip_option, resolve, send_spa

    if ip is not None:
        parse_ip_option(ip)  # a bad --ip is reported before the files are read
    if spa_port is not None and not 0 < spa_port < 65536:
        raise SpagateError(f"SPA port {spa_port} is out of range 1-65535")
    if copies is not None and not 1 <= copies <= MAX_COPIES:
        raise SpagateError(f"--copies {copies} is out of range 1-{MAX_COPIES}")
    cfg = load_config(config, host=host, name=name)
    ip_option = parse_ip_option(ip if ip is not None else cfg.ip)
    protocol = protocol or cfg.protocol
    if protocol == "fwknop":
        return _send_fwknop(host, spa_port, cfg, ip_option, access or default_access, timeout,
                            verbose)  # fmt: skip
    if protocol != "sparoid":
        raise SpagateError(f"--protocol must be sparoid or fwknop, not {protocol!r}")
    if access or timeout:
        raise SpagateError("-A and --timeout need --protocol fwknop: a sparoid packet opens "
                           "the gate's ports for its window, it cannot ask for them")  # fmt: skip
    if cfg.keys is None:
        raise SpagateError(f"{cfg.source} holds fwknop keys only: pass --protocol fwknop")
    spa_port = spa_port or cfg.port or DEFAULT_SPA_PORT
    targets = resolve(host)

    def public(family: int):
        import socket

        url = cfg.public_ipv4_url if family == socket.AF_INET else cfg.public_ipv6_url
        return publicip.public_ip(family, url)

    n = cfg.copies if copies is None else copies
    report = send_spa(targets, spa_port, cfg.keys, ip_option, public, n, cfg.copy_interval_s)
    check_report(report, host, _warn)
    if verbose:
        for line in report.describe(spa_port, cfg.source, n):
            _warn(line)
    return report.sent


def _send_fwknop(host, port, cfg, ip_option, access, timeout, verbose=False):
    """fwknop access request (-A, --timeout) to every address of host."""
    from ipaddress import IPv4Address

    from spagate.client import fwknop, publicip
    from spagate.client.send import SOURCE, Target, resolve

    if cfg.fwknop_key is None:
        raise SpagateError(f"{cfg.source}: no fwknop-key-base64 / fwknop-hmac-key-base64")
    port = port or cfg.fwknop_port or fwknop.DEFAULT_FWKNOP_PORT
    if not 0 < port < 65536:
        raise SpagateError(f"SPA port {port} is out of range 1-65535")
    ports = fwknop.parse_access(access)
    if not 0 <= timeout <= 65536:
        raise SpagateError(f"--timeout {timeout}: 0 (the gate's) to 65536 seconds")
    targets = resolve(host)
    if ip_option == SOURCE:
        ip = IPv4Address(0)  # fwknop -s: the packet's source
    elif ip_option is not None:
        ip = ip_option
    elif all(t.ip.is_loopback for t in targets):
        ip = IPv4Address("127.0.0.1")
    else:
        import socket

        ip = publicip.public_ip(socket.AF_INET, cfg.public_ipv4_url)
    if ip.version != 4:
        raise SpagateError(f"fwknop access requests carry IPv4 addresses only, not {ip}")
    packet = fwknop.make_packet(cfg.fwknop_key, ip, ports, cfg.fwknop_user, timeout)
    sent = fwknop.send_fwknop(host, port, packet)
    if verbose:
        for t in sent:
            _warn(f"sent a {len(packet)}-byte fwknop request to {t} udp/{port}, asking "
                  f"{access} for {ip} (keys: {cfg.source})")  # fmt: skip
    return [Target(t.ip, t.scope) for t in targets if str(t) in sent]


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
            show_default=f"the profile's port, else {DEFAULT_SPA_PORT} (fwknop: 62201)",
        ),
        config: Optional[Path] = CONFIG_OPT,
        ip: Optional[str] = IP_OPT,
        name: Optional[str] = NAME_OPT,
        verbose: bool = VERBOSE_OPT,
        protocol: Optional[str] = PROTOCOL_OPT,
        access: Optional[str] = typer.Option(
            None,
            "-A",
            "--access",
            help="fwknop: ports to ask for, e.g. tcp/22,udp/53.",
            show_default=False,
        ),
        timeout: int = typer.Option(
            0, "--timeout", help="fwknop: seconds to ask for (0: the gate's default)."
        ),
        copies: Optional[int] = COPIES_OPT,
    ) -> None:
        """Send an SPA packet to every address of HOST."""
        if ip == "source":
            _warn(
                "spagate: note: --ip source names no address: a spagate gate opens the packet's "
                "source; a sparoid server would open 0.0.0.0, which lets nobody in"
            )
        _send(host, port, config, ip, protocol, access, timeout, copies=copies, name=name,
              verbose=verbose)  # fmt: skip

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
            show_default=f"the profile's port, else {DEFAULT_SPA_PORT} (fwknop: 62201)",
        ),
        config: Optional[Path] = CONFIG_OPT,
        ip: Optional[str] = IP_OPT,
        name: Optional[str] = NAME_OPT,
        timeout: float = typer.Option(5.0, "--timeout", help="Seconds to keep trying to connect."),
        protocol: Optional[str] = PROTOCOL_OPT,
        verbose: bool = VERBOSE_OPT,
    ) -> None:
        """ssh ProxyCommand: send SPA, connect, hand the socket to ssh (or relay bytes).

        In ~/.ssh/config: ProxyCommand spagate connect -h %h -P %p, and ProxyUseFdpass yes.
        """
        from spagate.client.connect import open_connection, pass_fd, relay, unix_socket_on

        if not 0 < port < 65536:
            raise SpagateError(f"port {port} is out of range 1-65535")
        if not 0 < timeout <= 3600:  # nan and inf too: they never time out
            raise SpagateError(f"--timeout must be more than 0 and at most 3600 s, got {timeout:g}")
        targets = _send(host, spa_port, config, ip, protocol, default_access=f"tcp/{port}",
                        name=name, verbose=verbose)  # fmt: skip
        conn = open_connection(targets, port, timeout, host)
        channel = unix_socket_on(1)
        if channel is not None:
            with channel, conn:
                pass_fd(channel, conn)
            return
        relay(conn)
