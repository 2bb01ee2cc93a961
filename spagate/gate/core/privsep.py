"""What the unprivileged worker may ask of the privileged monitor, and nothing else (sans-IO).

The worker parses untrusted packets; if an attacker ever owns it, these requests are all it can
send to root. Each is a small, typed message with a closed set of fields, checked here:

    Opened(ip, seconds)   a window opened: run open-cmd for ip, close-cmd when it ends
    Reattach(ifname)      the gate's link on ifname is gone: attach the pinned program again
    Repin(ifname)         the link pin vanished while the link lives (fd passed along): pin it

and the answers the monitor sends back (the worker cannot open pins once it dropped root,
and it exports the monitor's figures as metrics):

    Linked(ifname)        the new link of ifname, its fd passed along
    HookStats(...)        the hook queue and its counters, sent once a second

Wire form: one JSON object per datagram (SOCK_SEQPACKET), at most MAX_MESSAGE bytes. decode()
never raises: anything unexpected is a Malformed with a one-line reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from ipaddress import ip_address

from spagate.net import IPAddress, parse_address, window_refusal

MAX_MESSAGE = 512
MAX_SECONDS = 31_536_000  # a year: the longest window anything in spagate opens
_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")


@dataclass(frozen=True)
class Opened:
    ip: IPAddress
    seconds: int


@dataclass(frozen=True)
class Reattach:
    ifname: str


@dataclass(frozen=True)
class Repin:
    ifname: str


@dataclass(frozen=True)
class Linked:
    ifname: str


@dataclass(frozen=True)
class HookStats:
    queued: int  # hooks waiting for a free slot
    running: int
    started: int  # since the monitor started
    failed: int  # exited non-zero
    reattached: int  # links the monitor re-attached
    refused: int  # worker requests it refused


HOOK_STATS_FIELDS = ("queued", "running", "started", "failed", "reattached", "refused")


@dataclass(frozen=True)
class Malformed:
    reason: str


Request = Opened | Reattach | Repin
_OPS = {Reattach: "reattach", Repin: "repin", Linked: "linked"}


def encode(req: Request | Linked | HookStats) -> bytes:
    if isinstance(req, HookStats):
        return json.dumps(
            {"op": "hooks", **{f: getattr(req, f) for f in HOOK_STATS_FIELDS}}
        ).encode()
    if isinstance(req, Opened):
        return json.dumps({"op": "opened", "ip": str(req.ip), "seconds": req.seconds}).encode()
    return json.dumps({"op": _OPS[type(req)], "ifname": req.ifname}).encode()


def decode_answer(data: bytes) -> Linked | HookStats | Malformed:
    """What the worker accepts from the monitor: a Linked or HookStats answer, nothing else."""
    got = decode(data, answers=True)
    return got if isinstance(got, Linked | HookStats | Malformed) else Malformed("not an answer")


def decode(data: bytes, answers: bool = False) -> Request | Linked | HookStats | Malformed:
    try:
        return _decode(data, answers)
    except Exception as e:  # never raises: whatever was not foreseen is malformed
        return Malformed(f"undecodable ({type(e).__name__})")


def _decode(data: bytes, answers: bool) -> Request | Linked | HookStats | Malformed:
    if len(data) > MAX_MESSAGE:
        return Malformed(f"{len(data)} bytes, at most {MAX_MESSAGE}")
    try:
        msg = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return Malformed("not a JSON object")
    if not isinstance(msg, dict):
        return Malformed("not a JSON object")
    op = msg.get("op")
    if not isinstance(op, str):
        return Malformed("op is not a name")
    if op == "opened" and set(msg) == {"op", "ip", "seconds"}:
        return _opened(msg["ip"], msg["seconds"])
    if answers and op == "hooks" and set(msg) == {"op", *HOOK_STATS_FIELDS}:
        values = [msg[f] for f in HOOK_STATS_FIELDS]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            return Malformed("hook figures are whole numbers")
        return HookStats(*values)
    kinds = {"reattach": Reattach, "repin": Repin, **({"linked": Linked} if answers else {})}
    if op in kinds and set(msg) == {"op", "ifname"}:
        name = msg["ifname"]
        if not isinstance(name, str) or not _IFNAME.fullmatch(name):
            return Malformed("ifname is not an interface name")
        return kinds[op](name)
    return Malformed(f"unknown request {str(op)[:20]!r} or fields {sorted(msg)[:6]}")


def _opened(ip: object, seconds: object) -> Opened | Malformed:
    if not isinstance(ip, str) or not isinstance(seconds, int) or isinstance(seconds, bool):
        return Malformed("opened needs a text ip and whole seconds")
    try:
        addr = parse_address(ip)
    except ValueError:
        return Malformed("ip is not an address")
    # Rebuilt from its bytes: what reaches a hook is the address alone, in its canonical form
    addr = ip_address(addr.packed)
    if window_refusal(addr) is not None:
        return Malformed(f"{addr} is not an address a window opens for")
    if not 1 <= seconds <= MAX_SECONDS:
        return Malformed(f"seconds {seconds} is out of range")
    return Opened(addr, seconds)
