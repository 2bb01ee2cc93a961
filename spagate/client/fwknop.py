"""Send fwknop access requests (what `fwknop -A tcp/22 -a IP -D host --use-hmac` sends)."""

from __future__ import annotations

import getpass
import os
import re
import socket
import time
from collections.abc import Sequence
from ipaddress import IPv4Address

from spagate.client.send import resolve
from spagate.errors import SpagateError
from spagate.protocol.fwknop import FwknopKey, ProtoPort, access_request, encode

DEFAULT_FWKNOP_PORT = 62201  # fwknopd's UDPSERV_PORT / PCAP_FILTER default
_USER_OK = re.compile(r"[A-Za-z0-9._@-]{1,48}")


def default_user() -> str:
    """The local user name, as fwknop puts it in the packet (spagate if it is unusable)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        return "spagate"
    return name if _USER_OK.fullmatch(name) else "spagate"


def parse_access(text: str) -> tuple[ProtoPort, ...]:
    """fwknop's -A argument: tcp/22,udp/53 -> ports; SpagateError with a reason otherwise."""
    ports: dict[ProtoPort, None] = {}
    for part in text.split(","):
        m = re.fullmatch(r"(tcp|udp)/([0-9]{1,5})", part.strip().lower())
        if m is None or not 1 <= int(m.group(2)) <= 65535:
            raise SpagateError(f"-A {text!r}: expected PROTO/PORT[,PROTO/PORT...] like tcp/22")
        ports.setdefault(ProtoPort(m.group(1), int(m.group(2))))
    return tuple(ports)


def make_packet(
    key: FwknopKey,
    ip: IPv4Address | str,
    ports: Sequence[ProtoPort],
    user: str | None = None,
    client_timeout: int = 0,
    now_s: int | None = None,
) -> bytes:
    """A fresh access request (new salt, new random value), stamped with the clock."""
    ts = int(time.time()) if now_s is None else now_s
    try:
        msg = access_request(ip, ports, user or default_user(), ts, client_timeout)
        return encode(key, msg, os.urandom(8))
    except ValueError as e:
        raise SpagateError(f"cannot build the fwknop packet: {e}") from None


def send_fwknop(host: str, port: int, packet: bytes) -> list[str]:
    """Send one packet to every address of host; returns the addresses it went to."""
    sent, failed = [], []
    for target in resolve(host):
        try:
            with socket.socket(target.family, socket.SOCK_DGRAM) as s:
                s.sendto(packet, target.sockaddr(port))
        except OSError as e:
            failed.append(f"{target}: {e.strerror or e}")
        else:
            sent.append(str(target))
    if not sent:
        raise SpagateError(f"could not send the fwknop packet to {host}: {'; '.join(failed)}")
    return sent
