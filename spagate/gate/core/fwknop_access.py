"""fwknop's access.conf, read unchanged, and what an accepted fwknop request is granted.

parse_access is pure: text in, an AccessConfig (stanzas with their keys and rules, plus
warnings) out; every problem is a ConfigError naming file:line. The %include directives read
other files through an injected AccessFiles; load_access, like config.load_config, is the one
edge that reads the disk, through inifile's key-file check. The grant functions take a verified
message and the packet's addresses and say which ports open for how long.

Parsing follows fwknopd's access.c: one `NAME value` per line (a trailing ':' on the name is
dropped, the value ends at ';'), lines starting with '#' or ';' are comments, every stanza
starts with SOURCE, and the first stanza whose SOURCE matches and whose keys authenticate the
packet decides. Where fwknopd would silently ignore a line whose absence could let in more
than the operator meant (an unknown or misspelt name, a line before the first SOURCE, a
non-key line in an %include_keys file), spagate refuses the file. docs/fwknop.md has the table.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_network
from typing import Protocol

from spagate.errors import ConfigError
from spagate.gate.core.reasons import PolicyReason
from spagate.inifile import read_key_file, split_lines
from spagate.net import unmap, window_refusal
from spagate.protocol.fwknop import FwknopKey, FwknopMessage, ProtoPort, b64_decode
from spagate.protocol.fwknop.keys import HMAC_KEY_MAX, KEY_MAX, hmac_type

IPAddress = IPv4Address | IPv6Address

DEFAULT_PATH = "/etc/fwknop/access.conf"
DEF_FW_ACCESS_TIMEOUT = 30  # fwknopd_common.h
DEF_MAX_FW_TIMEOUT = 300
MAX_TIMEOUT = 2 << 22  # RCHK_MAX_FW_TIMEOUT
MAX_DEPTH = 3  # access.h: an access.conf, an included file, a file it includes
CHANGEME = "__changeme__"

# Names fwknopd knows that spagate reads, ignores with a warning, or refuses (docs/fwknop.md).
_GPG = [
    "GPG_HOME_DIR",
    "GPG_EXE",
    "GPG_DECRYPT_ID",
    "GPG_DECRYPT_PW",
    "GPG_ALLOW_NO_PW",
    "GPG_REQUIRE_SIG",
    "GPG_DISABLE_SIG",
    "GPG_IGNORE_SIG_VERIFY_ERROR",
    "GPG_REMOTE_ID",
    "GPG_FINGERPRINT_ID",
]
_CMD_EXEC = [
    "ENABLE_CMD_SUDO_EXEC",
    "CMD_SUDO_EXEC_USER",
    "CMD_SUDO_EXEC_GROUP",
    "CMD_EXEC_USER",
    "CMD_EXEC_GROUP",
]
_CMD_CYCLE = ("CMD_CYCLE_OPEN", "CMD_CYCLE_CLOSE", "CMD_CYCLE_TIMER")
_NAT_ALWAYS = ("FORCE_NAT", "FORCE_SNAT")
_NAT_FLAGS = ("FORCE_MASQUERADE", "DISABLE_DNAT", "FORWARD_ALL")
_KEY_NAMES = ("KEY", "KEY_BASE64", "HMAC_KEY", "HMAC_KEY_BASE64")
MIN_KEY_BYTES = 8  # shorter is said (fwknopd takes 1); fwknop --key-gen makes 32 and 64
_ENC_MODES = ("ECB", "CFB", "PCBC", "OFB", "CTR", "ASYMMETRIC")
_SUPPORTED = [
    "SOURCE",
    "DESTINATION",
    "OPEN_PORTS",
    "RESTRICT_PORTS",
    "HMAC_DIGEST_TYPE",
    "ENCRYPTION_MODE",
    "FW_ACCESS_TIMEOUT",
    "MAX_FW_TIMEOUT",
    "REQUIRE_USERNAME",
    "REQUIRE_SOURCE_ADDRESS",
    "REQUIRE_SOURCE",
    "ACCESS_EXPIRE",
    "ACCESS_EXPIRE_EPOCH",
    "ENABLE_CMD_EXEC",
]
KNOWN = frozenset(
    [*_SUPPORTED, *_KEY_NAMES, *_GPG, *_CMD_EXEC, *_CMD_CYCLE, *_NAT_ALWAYS, *_NAT_FLAGS]
)
DIRECTIVES = ("%include", "%include_folder", "%include_keys")


class AccessFiles(Protocol):
    """How the parser reads the files an access.conf includes (OSError or ConfigError)."""

    def read(self, path: str) -> str: ...
    def listdir(self, path: str) -> Sequence[str]: ...


def local_midnight(day: date) -> int:
    """ACCESS_EXPIRE MM/DD/YYYY means that day's 00:00 local time, as fwknopd's mktime()."""
    return int(time.mktime(day.timetuple()))


@dataclass(frozen=True)
class AccessStanza:
    where: str  # file:line of its SOURCE line: its name in logs
    key: FwknopKey = field(repr=False)
    sources: tuple[IPv4Network, ...] | None = None  # None: ANY
    destinations: tuple[IPv4Network, ...] | None = None  # None: ANY (DESTINATION unset)
    open_ports: tuple[ProtoPort, ...] | None = None  # None: any port the client asks for
    restrict_ports: tuple[ProtoPort, ...] = ()
    fw_access_timeout: int = DEF_FW_ACCESS_TIMEOUT
    max_fw_timeout: int = DEF_MAX_FW_TIMEOUT
    require_username: str | None = None
    require_source_address: bool = False
    expires: int | None = None  # unix seconds: refused after this


@dataclass(frozen=True)
class AccessConfig:
    path: str
    stanzas: tuple[AccessStanza, ...]
    warnings: tuple[str, ...] = ()  # "file:line: ..." lines worth telling the operator

    def keys(self) -> tuple[FwknopKey, ...]:
        """The key list for FwknopVerifier: index i is stanza i."""
        return tuple(s.key for s in self.stanzas)

    def candidates(
        self, source: IPAddress, destination: IPAddress | None = None
    ) -> tuple[int, ...]:
        """The stanzas worth trying for a packet (fwknopd: SOURCE, DESTINATION), in order."""
        src = unmap(source)
        dst = None if destination is None else unmap(destination)
        return tuple(
            i
            for i, s in enumerate(self.stanzas)
            if _matches(s.sources, src) and (dst is None or _matches(s.destinations, dst))
        )


# --- value parsers: each returns the value or raises ValueError(one-line reason) -------------


def _networks(text: str) -> tuple[IPv4Network, ...] | None:
    nets: list[IPv4Network] = []
    for part in text.split(","):
        item = part.strip()
        if item.upper() == "ANY":
            return None
        try:
            net = ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IPv4 address, network or ANY") from None
        if not isinstance(net, IPv4Network):
            raise ValueError(f"{item!r}: fwknop addresses are IPv4 (ANY also matches IPv6)")
        nets.append(net)
    return tuple(nets)


def _port_list(text: str) -> tuple[ProtoPort, ...]:
    ports: dict[ProtoPort, None] = {}
    for part in text.split(","):
        m = re.fullmatch(r"(tcp|udp)/([0-9]{1,5})", part.strip().lower())
        if not m or int(m.group(2)) > 65535:
            raise ValueError(f"{part.strip()!r} is not tcp/PORT or udp/PORT")
        ports.setdefault(ProtoPort(m.group(1), int(m.group(2))))
    return tuple(ports)


def _timeout(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text) or int(text) > MAX_TIMEOUT:
        raise ValueError(f"expected seconds from 0 to {MAX_TIMEOUT}, got {text!r}")
    return int(text)


def _yes_no(text: str) -> bool:
    # fwknopd reads any value starting with Y as yes and anything else as no; spagate refuses
    # what is neither, so that `true` is not silently read as no.
    low = text.lower()
    if low in ("y", "yes"):
        return True
    if low in ("n", "no"):
        return False
    raise ValueError(f"expected Y or N, got {text!r}")


def _date(text: str, midnight: Callable[[date], int]) -> int:
    m = re.fullmatch(r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})", text)
    try:
        if m is None:
            raise ValueError
        return midnight(date(int(m.group(3)), int(m.group(1)), int(m.group(2))))
    except (ValueError, OverflowError):
        raise ValueError(f"expected a date as MM/DD/YYYY, got {text!r}") from None


def _epoch(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,12}", text):
        raise ValueError(f"expected unix seconds, got {text!r}")
    return int(text)


# --- the parser -----------------------------------------------------------------------------


@dataclass
class _Value:
    value: object
    path: str
    line: int


@dataclass
class _Draft:
    path: str
    line: int
    values: dict[str, _Value] = field(default_factory=dict)
    gpg: bool = False

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


class _Parser:
    def __init__(self, files: AccessFiles | None, midnight: Callable[[date], int]):
        self.files, self.midnight = files, midnight
        self.drafts: list[_Draft] = []
        self.warnings: list[str] = []

    def warn(self, path: str, line: int, text: str) -> None:
        self.warnings.append(f"{path}:{line}: {text}")

    def read(self, path: str, by: str, line: int, what: str) -> str:
        if not path.startswith("/"):
            raise ConfigError(by, line, f"{what} {path!r}: use an absolute path")
        if self.files is None:
            raise ConfigError(by, line, f"{what} {path!r}: no file access here")
        try:
            return self.files.read(path)
        except ConfigError as e:
            raise ConfigError(by, line, f"{what} {path}: {e.message}") from None
        except OSError as e:
            raise ConfigError(by, line, f"{what} {path}: {e.strerror or e}") from None

    def file(self, text: str, path: str, depth: int) -> None:
        current: _Draft | None = None
        for lineno, name, value in _lines(text, path):
            if name == "%include" or name == "%include_folder":
                if depth >= MAX_DEPTH:
                    raise ConfigError(path, lineno, f"{name}: more than {MAX_DEPTH} levels deep")
                if name == "%include":
                    self.file(self.read(value, path, lineno, name), value, depth + 1)
                else:
                    self.folder(value.rstrip("/") or "/", path, lineno, depth)
            elif name == "SOURCE":
                current = _Draft(path, lineno)
                self.drafts.append(current)
                self.set(current, name, value, path, lineno)
            elif current is None:
                raise ConfigError(
                    path, lineno, f"{name} before the first SOURCE: every stanza starts with one"
                )
            elif name == "%include_keys":
                self.keys_file(current, self.read(value, path, lineno, name), value)
            else:
                self.set(current, name, value, path, lineno)

    def folder(self, folder: str, by: str, line: int, depth: int) -> None:
        if not folder.startswith("/"):
            raise ConfigError(by, line, f"%include_folder {folder!r}: use an absolute path")
        if self.files is None:
            raise ConfigError(by, line, f"%include_folder {folder!r}: no file access here")
        try:
            names = sorted(n for n in self.files.listdir(folder) if n.endswith(".conf"))
        except OSError as e:
            raise ConfigError(by, line, f"%include_folder {folder}: {e.strerror or e}") from None
        for n in names:
            sub = f"{folder.rstrip('/')}/{n}"
            self.file(self.read(sub, by, line, "%include_folder"), sub, depth + 1)

    def keys_file(self, draft: _Draft, text: str, path: str) -> None:
        for lineno, name, value in _lines(text, path):
            if name in _KEY_NAMES or name in _GPG:
                self.set(draft, name, value, path, lineno)
            else:
                raise ConfigError(
                    path,
                    lineno,
                    f"{name} in an %include_keys file: only KEY, KEY_BASE64, HMAC_KEY and "
                    "HMAC_KEY_BASE64 are read there (fwknopd would ignore it)",
                )

    def set(self, d: _Draft, name: str, text: str, path: str, line: int) -> None:
        try:
            slot, value = self.value(d, name, text, path, line)
        except ValueError as e:
            raise ConfigError(path, line, f"{name}: {e}") from None
        if slot is None:
            return
        old = d.values.get(slot)
        if old is not None:
            self.warn(
                path,
                line,
                f"{name} replaces the value from {old.path}:{old.line} (the last one counts, "
                "as in fwknopd)",
            )
        d.values[slot] = _Value(value, path, line)

    def value(self, d: _Draft, name: str, text: str, path: str, line: int):
        """(slot, parsed value), or (None, None) for a name that is ignored."""
        if name in ("SOURCE", "DESTINATION"):
            return name, _networks(text)
        if name in ("OPEN_PORTS", "RESTRICT_PORTS"):
            return name, _port_list(text)
        if name in _KEY_NAMES:
            if text.lower() == CHANGEME:
                raise ValueError("still __CHANGEME__: set a key (fwknop --key-gen)")
            raw = b64_decode(text) if name.endswith("_BASE64") else text.encode("utf-8")
            hi = KEY_MAX if name.startswith("KEY") else HMAC_KEY_MAX
            if not 1 <= len(raw) <= hi:
                raise ValueError(f"{len(raw)} bytes, fwknop takes 1 to {hi}")
            if len(set(raw)) == 1 and len(raw) > 1:  # all zeros, AAAA...: a placeholder
                raise ValueError(
                    "one byte repeated: not a key (fwknop --key-gen prints random ones)"
                )
            if len(raw) < MIN_KEY_BYTES:  # refusing it would lock its holders out on upgrade
                self.warn(path, line, f"{name} of {len(raw)} bytes: one captured knock lets "
                          "anyone guess a key this short offline (fwknop --key-gen prints "
                          "random ones)")  # fmt: skip
            return ("KEY" if name.startswith("KEY") else "HMAC_KEY"), raw
        if name == "HMAC_DIGEST_TYPE":
            kind = hmac_type(text)
            if kind == "sha1":
                self.warn(path, line, "HMAC_DIGEST_TYPE sha1: accepted for existing clients; "
                          "sha256 is fwknop's default and the better choice")  # fmt: skip
            return name, kind
        if name == "ENCRYPTION_MODE":
            mode = text.upper()
            if mode == "CBC":
                return None, None
            if mode == "LEGACY":
                raise ValueError(
                    "legacy IV mode is refused: it weakens the key (a passphrase padded with "
                    "'0') and fwknop deprecates it; re-key the client with CBC and an HMAC key"
                )
            if mode in _ENC_MODES:
                raise ValueError(f"{text} is not supported (CBC, fwknop's default, only)")
            raise ValueError(f"unknown mode {text!r} (CBC only)")
        if name in ("FW_ACCESS_TIMEOUT", "MAX_FW_TIMEOUT"):
            return name, _timeout(text)
        if name == "REQUIRE_USERNAME":
            return name, text
        if name in ("REQUIRE_SOURCE_ADDRESS", "REQUIRE_SOURCE"):
            return "REQUIRE_SOURCE_ADDRESS", _yes_no(text)
        if name == "ACCESS_EXPIRE":
            return "EXPIRES", _date(text, self.midnight)
        if name == "ACCESS_EXPIRE_EPOCH":
            return "EXPIRES", _epoch(text)
        if name == "ENABLE_CMD_EXEC":
            if _yes_no(text):
                self.warn(path, line, "ENABLE_CMD_EXEC Y ignored: spagate never runs commands "
                          "from packets; command messages are refused")  # fmt: skip
            return None, None
        if name in _CMD_EXEC:
            self.warn(path, line, f"{name} ignored: spagate never runs commands from packets")
            return None, None
        if name in _GPG:
            d.gpg = True
            self.warn(path, line, f"{name} ignored: GPG-encrypted packets are not supported, "
                      "this stanza accepts Rijndael (KEY) packets only")  # fmt: skip
            return None, None
        if name in _CMD_CYCLE:
            raise ValueError(
                "command cycles are not supported: spagate opens the requested ports itself "
                "(use open-cmd/close-cmd in the gate config to run a command as well)"
            )
        if name in _NAT_ALWAYS:
            raise ValueError("NAT is not supported: spagate opens its own ports only")
        if name in _NAT_FLAGS:
            if _yes_no(text):
                raise ValueError("NAT is not supported: spagate opens its own ports only")
            return None, None
        hint = f" (names are upper case: {name.upper()})" if name.upper() in KNOWN else ""
        raise ValueError(
            f"unknown name{hint}; spagate refuses what it does not understand, where "
            "fwknopd would ignore it"
        )

    def stanza(self, d: _Draft) -> AccessStanza:
        v = {k: x.value for k, x in d.values.items()}
        if "KEY" not in v:
            why = " (GPG-only stanzas are not supported)" if d.gpg else ""
            raise ConfigError(d.path, d.line, f"stanza has no KEY or KEY_BASE64{why}")
        if "HMAC_KEY" not in v:
            raise ConfigError(
                d.path,
                d.line,
                "stanza has no HMAC_KEY or HMAC_KEY_BASE64: spagate refuses fwknop's no-HMAC "
                "mode, where a packet is decrypted before anything authenticates it",
            )
        kind = v.get("HMAC_DIGEST_TYPE", "sha256")
        try:
            key = FwknopKey(v["KEY"], v["HMAC_KEY"], kind)
        except ValueError as e:
            at = d.values["HMAC_KEY"]
            raise ConfigError(at.path, at.line, str(e)) from None
        fw = v.get("FW_ACCESS_TIMEOUT", 0) or DEF_FW_ACCESS_TIMEOUT
        mx = v.get("MAX_FW_TIMEOUT", 0) or DEF_MAX_FW_TIMEOUT
        if fw > mx:
            self.warn(d.path, d.line, f"FW_ACCESS_TIMEOUT {fw} > MAX_FW_TIMEOUT {mx}: "
                      f"access is capped at {mx} s")  # fmt: skip
        return AccessStanza(
            where=d.where,
            key=key,
            sources=v["SOURCE"],
            destinations=v.get("DESTINATION"),
            open_ports=v.get("OPEN_PORTS"),
            restrict_ports=v.get("RESTRICT_PORTS", ()),
            fw_access_timeout=fw,
            max_fw_timeout=mx,
            require_username=v.get("REQUIRE_USERNAME"),
            require_source_address=v.get("REQUIRE_SOURCE_ADDRESS", False),
            expires=v.get("EXPIRES"),
        )


def _lines(text: str, path: str):
    """(line number, name, value) for each line that is not blank or a comment."""
    for lineno, raw in enumerate(split_lines(text, path), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        parts = line.split(None, 1)
        name = parts[0]
        if name.endswith(":"):
            name = name[:-1]
        value = parts[1].split(";", 1)[0].strip() if len(parts) > 1 else ""
        if not value:  # never echo the line: it may hold a key
            raise ConfigError(path, lineno, f"{name or parts[0]}: expected `NAME value`")
        yield lineno, name, value


def parse_access(
    text: str,
    path: str = DEFAULT_PATH,
    files: AccessFiles | None = None,
    midnight: Callable[[date], int] = local_midnight,
) -> AccessConfig:
    """Parse an access.conf (and what it includes, through files)."""
    p = _Parser(files, midnight)
    p.file(text, path, 1)
    if not p.drafts:
        raise ConfigError(path, None, "no SOURCE stanza: an access.conf needs at least one")
    stanzas = tuple(p.stanza(d) for d in p.drafts)
    return AccessConfig(path, stanzas, tuple(p.warnings))


class DiskFiles:
    """Every file access.conf pulls in gets the gate's one key-file check (regular, owned by root
    or the gate's user, not accessible by group or others): whoever can read one has keys,
    whoever owns one chooses them. fwknopd only warns about such files."""

    def read(self, path: str) -> str:
        return read_key_file(path)

    def listdir(self, path: str) -> Sequence[str]:
        return os.listdir(path)


def load_access(path: str = DEFAULT_PATH) -> AccessConfig:
    """Read and parse an access.conf and what it includes; ConfigError naming file[:line]."""
    return parse_access(read_key_file(path), path, DiskFiles())


# --- policy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FwknopGrant:
    stanza_index: int
    ip: IPAddress  # the address to open
    ports: tuple[ProtoPort, ...]  # what opens, in the order asked
    denied: tuple[ProtoPort, ...]  # asked for but not allowed by this stanza
    seconds: int
    third_party: bool  # the message names another address than the packet's source


class FwknopPolicyReason(StrEnum):
    """Why a stanza refused an authenticated fwknop request (names unique among the gate's
    outcomes, see gate/core/reasons.py; wrong-destination and unusable-ip are PolicyReason's)."""

    SOURCE_NOT_ALLOWED = "source-not-allowed"
    STANZA_EXPIRED = "stanza-expired"
    WRONG_USER = "wrong-user"
    NO_SOURCE_ADDRESS = "no-source-address"
    PORTS_NOT_ALLOWED = "ports-not-allowed"
    PORTS_NOT_PROTECTED = "ports-not-protected"  # allowed by the stanza, not guarded here


@dataclass(frozen=True)
class FwknopRefusal:
    reason: str  # a FwknopPolicyReason, or PolicyReason's wrong-destination / unusable-ip
    detail: str


def _matches(nets: tuple[IPv4Network, ...] | None, ip: IPAddress) -> bool:
    return nets is None or (ip.version == 4 and any(ip in n for n in nets))


def _allowed(stanza: AccessStanza, port: ProtoPort) -> bool:
    if port in stanza.restrict_ports:
        return False
    return stanza.open_ports is None or port in stanza.open_ports


def grant(
    stanza: AccessStanza,
    msg: FwknopMessage,
    source: IPAddress,
    now_s: float,
    destination: IPAddress | None = None,
    index: int = 0,
) -> FwknopGrant | FwknopRefusal:
    """What one stanza grants an authenticated request from `source` (pure)."""
    src = unmap(source)
    if not _matches(stanza.sources, src):
        return FwknopRefusal(
            FwknopPolicyReason.SOURCE_NOT_ALLOWED, f"{src} is not in SOURCE of {stanza.where}"
        )
    if destination is not None and not _matches(stanza.destinations, unmap(destination)):
        return FwknopRefusal(
            PolicyReason.WRONG_DESTINATION,
            f"sent to {destination}, not in DESTINATION of {stanza.where}",
        )
    if stanza.expires is not None and now_s > stanza.expires:
        return FwknopRefusal(
            FwknopPolicyReason.STANZA_EXPIRED, f"{stanza.where} expired at {stanza.expires}"
        )
    if stanza.require_username is not None and msg.user != stanza.require_username:
        return FwknopRefusal(
            FwknopPolicyReason.WRONG_USER, f"user {msg.user!r} is not REQUIRE_USERNAME"
        )
    if msg.ip.is_unspecified:
        if stanza.require_source_address:
            return FwknopRefusal(
                FwknopPolicyReason.NO_SOURCE_ADDRESS,
                "message names 0.0.0.0 and REQUIRE_SOURCE_ADDRESS is set",
            )
        ip = src
    else:
        ip = msg.ip
    if (why := window_refusal(ip)) is not None:
        return FwknopRefusal(PolicyReason.UNUSABLE_IP, why)
    ports = tuple(p for p in msg.ports if _allowed(stanza, p))
    denied = tuple(p for p in msg.ports if p not in ports)
    if not ports:
        asked = ",".join(map(str, msg.ports))
        return FwknopRefusal(
            FwknopPolicyReason.PORTS_NOT_ALLOWED, f"{stanza.where} allows none of {asked}"
        )
    asked_s = msg.client_timeout if msg.client_timeout > 0 else stanza.fw_access_timeout
    return FwknopGrant(
        stanza_index=index,
        ip=ip,
        ports=ports,
        denied=denied,
        seconds=min(asked_s, stanza.max_fw_timeout),
        third_party=ip != src,
    )


def decide(
    config: AccessConfig,
    key_index: int,
    msg: FwknopMessage,
    source: IPAddress,
    now_s: float,
    destination: IPAddress | None = None,
) -> FwknopGrant | FwknopRefusal:
    """The grant for a request authenticated by stanza key_index's keys.

    Like fwknopd, a refusal falls through to the next stanza that would have accepted the same
    packet (same keys), so stanzas with one key and different rules keep their meaning.
    """
    first: FwknopRefusal | None = None
    key = config.stanzas[key_index].key
    for i in range(key_index, len(config.stanzas)):
        stanza = config.stanzas[i]
        if stanza.key != key:
            continue
        res = grant(stanza, msg, source, now_s, destination, i)
        if isinstance(res, FwknopGrant):
            return res
        first = first or res
    assert first is not None
    return first
