"""Send SPA packets: one (in a few copies) to every resolved address of a host."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from spagate.errors import SpagateError
from spagate.net import not_an_address, parse_address, unmap, window_refusal
from spagate.protocol import KeyPair
from spagate.protocol import make_packet as _make_packet

IP = IPv4Address | IPv6Address
SOURCE = "source"  # --ip source: "open for the address the packet arrives from"
SPA_SIZE = 96


@dataclass(frozen=True)
class Target:
    """One resolved address of a host (scope id kept for link-local IPv6)."""

    ip: IP
    scope: int = 0

    @property
    def family(self) -> int:
        return socket.AF_INET if self.ip.version == 4 else socket.AF_INET6

    def sockaddr(self, port: int) -> tuple:
        if self.ip.version == 4:
            return (str(self.ip), port)
        return (str(self.ip), port, 0, self.scope)

    def __str__(self) -> str:
        return str(self.ip)


def resolve(host: str) -> list[Target]:
    """Every A and AAAA address of host, in resolver order, without duplicates."""
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise SpagateError(f"cannot resolve {host}: {e.strerror}") from None
    except UnicodeError:
        raise SpagateError(f"cannot resolve {host}: not a valid host name") from None
    seen: dict[Target, None] = {}
    for family, _, _, _, sa in infos:
        if family == socket.AF_INET:
            seen.setdefault(Target(IPv4Address(sa[0])))
        elif family == socket.AF_INET6:
            seen.setdefault(Target(IPv6Address(sa[0].split("%")[0]), sa[3]))
    if not seen:
        raise SpagateError(f"cannot resolve {host}: no IPv4 or IPv6 address")
    return list(seen)


def parse_ip_option(value: str | None) -> IP | str | None:
    """--ip: an address, 'source', or None (choose per target)."""
    if value is None or value == SOURCE:
        return value
    try:
        ip = parse_address(value)
    except ValueError:
        raise SpagateError("--ip " + not_an_address(value, "an IP address or 'source'")) from None
    why = None if ip.is_unspecified else window_refusal(ip)  # 0.0.0.0: sparoid's "the source"
    if why is not None:  # the gate would refuse the knock; say so here, not by silence
        raise SpagateError(f"--ip {why}")
    return ip


def packet_ip(target: Target, ip_option: IP | str | None, public: Callable[[int], IP]) -> IP:
    """The address to open, as put in the packet for this target."""
    if isinstance(ip_option, IPv4Address | IPv6Address):
        return ip_option
    v4 = target.ip.version == 4
    if ip_option == SOURCE:
        return IPv4Address(0) if v4 else IPv6Address(0)
    if unmap(target.ip).is_loopback:
        return IPv4Address("127.0.0.1") if v4 else IPv6Address("::1")
    return public(target.family)


# Copies of each packet: the gate admits the first that arrives and drops the others at the
# cost of a lookup; a sparoid server logs them as replays. 3 copies 5 ms apart: a knock is lost
# only if all three are (docs/admission.md has the loss figures behind the default).
DEFAULT_COPIES = 3
DEFAULT_COPY_INTERVAL_S = 0.005


def make_packet(keys: KeyPair, ip: IP, now_ms: int | None = None) -> bytes:
    """A fresh tagged packet opening ip, stamped now (the wall clock) unless now_ms is given."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return _make_packet(keys, ip, now, tagged=True)


@dataclass
class SendReport:
    sent: list[Target] = field(default_factory=list)
    failed: list[tuple[Target, str]] = field(default_factory=list)
    opened: dict[Target, IP] = field(default_factory=dict)  # the address each packet names

    def describe(self, port: int, keys_from: str, copies: int = 1) -> list[str]:
        """What `send -v` prints: one line per packet sent."""
        out = []
        what_sent = f"{SPA_SIZE} bytes" if copies == 1 else f"{copies} copies of {SPA_SIZE} bytes"
        for t in self.sent:
            what = self.opened.get(t)
            asks = "its source address" if what is not None and what.is_unspecified else what
            out.append(f"sent {what_sent} to {t} udp/{port}, opening {asks} "
                       f"(keys: {keys_from})")  # fmt: skip
        return out


def _memo(public: Callable[[int], IP]) -> Callable[[int], IP]:
    """One lookup per family per run, failures included."""
    done: dict[int, IP | SpagateError] = {}

    def lookup(family: int) -> IP:
        if family not in done:
            try:
                done[family] = public(family)
            except SpagateError as e:
                done[family] = e
        result = done[family]
        if isinstance(result, SpagateError):
            raise result
        return result

    return lookup


def send_spa(
    targets: list[Target],
    port: int,
    keys: KeyPair,
    ip_option: IP | str | None,
    public: Callable[[int], IP],
    copies: int = DEFAULT_COPIES,
    interval_s: float = DEFAULT_COPY_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> SendReport:
    """One fresh packet for each target, sent `copies` times interval_s apart (every target
    once per round); failures are collected, not raised. A target is sent to when its first
    copy left."""
    report = SendReport()
    lookup = _memo(public)
    out: list[tuple[Target, bytes, socket.socket]] = []
    try:
        for target in targets:
            try:
                ip = packet_ip(target, ip_option, lookup)
                packet = make_packet(keys, ip)
                s = socket.socket(target.family, socket.SOCK_DGRAM)
                try:
                    s.sendto(packet, target.sockaddr(port))
                except OSError:
                    s.close()
                    raise
            except SpagateError as e:
                report.failed.append((target, str(e)))
            except OSError as e:
                report.failed.append((target, e.strerror or str(e)))
            else:
                report.sent.append(target)
                report.opened[target] = ip
                out.append((target, packet, s))
        for _ in range(copies - 1):
            if not out:
                break
            sleep(interval_s)
            for target, packet, s in out:
                with contextlib.suppress(OSError):  # the first copy left: a copy is a bonus
                    s.sendto(packet, target.sockaddr(port))
    finally:
        for _, _, s in out:
            s.close()
    return report


def check_report(report: SendReport, host: str, warn: Callable[[str], None]) -> None:
    """Warn about failed addresses if one succeeded; raise if all failed."""
    if not report.sent:
        detail = "; ".join(f"{t}: {why}" for t, why in report.failed)
        raise SpagateError(f"could not send the SPA packet to {host}: {detail}")
    for target, why in report.failed:
        warn(f"spagate: warning: could not send the SPA packet to {target} ({host}): {why}")
