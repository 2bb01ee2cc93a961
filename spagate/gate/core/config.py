"""The gate's configuration (/etc/spagate.ini), parsed as pure code: text in, GateConfig out.

A sparoid server configuration works unchanged (key, hmac-key, bind, port, open-cmd, close-cmd;
nftables-cmd is reported as not needed). Top-level keys configure the gate; top-level key and
hmac-key form the identity "default"; each [section] is a named identity with its own keys and,
optionally, its own ports and window. Every problem is a ConfigError naming file:line.

Rule: no bcc, no maps, no sockets. The grammar is spagate.inifile's; defaults shared with the
XDP program come from spagate.gate.kernel.abi (a data module).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shlex
from dataclasses import dataclass, field

from spagate.errors import ConfigError
from spagate.gate.kernel import abi
from spagate.inifile import Section, parse_ini, read_key_file
from spagate.net import IPAddress, IPNetwork, not_an_address, parse_address
from spagate.protocol import KeyPair, parse_hex_key

DEFAULT_PATH = "/etc/spagate.ini"
DEFAULT_SPA_PORT = abi.DEFAULT_SPA_PORT
DEFAULT_OPEN_SECONDS = 15
XDP_MODES = ("auto", "native", "generic")
DISGUISES = ("auto", *abi.DISGUISES)  # auto: as the host's firewall treats an unused port
ALL_INTERFACES = "all"  # interface = all: every IP-carrying interface, new ones too
# IPv4 lives in the kernel's trie as ::ffff:a.b.c.d: an IPv6 network over it opens IPv4.
MAPPED_NET = ipaddress.IPv6Network("::ffff:0:0/96")
COMPAT_NET = ipaddress.IPv6Network("::/96")  # IPv4-compatible (deprecated): never on the wire
LOG_FORMATS = ("text", "json")
DEFAULT_METRICS_PORT = 9848
MAX_IDENTITIES = abi.SPA_KEYS_MAX  # the XDP program checks the MAC against at most this many


@dataclass(frozen=True, order=True)
class Port:
    proto: str  # "tcp" or "udp"
    port: int

    def __str__(self) -> str:
        return f"{self.proto}/{self.port}"


@dataclass(frozen=True)
class Rate:
    per_second: float = 1e9 / abi.DEFAULT_SPA_INTERVAL_NS
    burst: int = abi.DEFAULT_SPA_BURST


@dataclass(frozen=True)
class Identity:
    name: str
    keys: KeyPair = field(repr=False)
    ports: tuple[Port, ...] | None = None  # None: every protected port
    open_seconds: int | None = None  # None: the global open-seconds


@dataclass(frozen=True)
class FleetConfig:
    """Fleet mode (docs/fleet.md): grants and replay state shared through etcd."""

    endpoints: tuple[str, ...]  # http(s)://host:port
    name: str  # the cluster's name: its keys live under /spagate/<name>/
    member: str | None = None  # this gate's name (default: the host name)
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password_file: str | None = None
    fallback: str = "local"  # local | refuse (the store unreachable)
    timeout_s: float = 0.3
    # grants/o/ from the store (`spagate allow` fleet-wide): no packet proves them, so a gate
    # may refuse them all (docs/fleet.md, "Give the gates a role without write access")
    operator_grants: bool = True


FLEET_FIELDS = {
    "cluster-name": "name",
    "fleet-member": "member",
    "fleet-ca": "ca",
    "fleet-cert": "cert",
    "fleet-key": "key",
    "fleet-user": "user",
    "fleet-password-file": "password_file",
    "fleet-fallback": "fallback",
    "fleet-timeout": "timeout_s",
    "fleet-operator-grants": "operator_grants",
}


@dataclass(frozen=True)
class GateConfig:
    path: str
    identities: tuple[Identity, ...]
    interfaces: tuple[str, ...] = ()
    # IP-carrying interfaces left outside the gate on purpose (a management network): not an
    # error at start, in the monitor or in status, which still lists them.
    unguarded: tuple[str, ...] = ()
    spa_port: int = DEFAULT_SPA_PORT
    bind: IPAddress | None = None
    protected: tuple[Port, ...] = (Port("tcp", 22),)
    open_seconds: int = DEFAULT_OPEN_SECONDS
    allow: tuple[IPNetwork, ...] = ()
    max_skew_ms: int = 5000
    rate: Rate = Rate()
    spa_budget: int = abi.DEFAULT_SPA_BUDGET  # per identity and second
    untagged: abi.UntaggedMode = abi.DEFAULT_UNTAGGED_MODE
    untagged_budget: int = abi.DEFAULT_SPA_UNTAGGED_BUDGET  # untagged packets hashed per second
    udp_idle_seconds: int = abi.DEFAULT_UDP_IDLE_NS // 1_000_000_000
    xdp_mode: str = "auto"
    disguise: str = "auto"
    allow_everyone: bool = False
    require_source_match: bool = False
    open_cmd: str | None = None
    close_cmd: str | None = None
    fleet: FleetConfig | None = None
    fwknop_access: str | None = None  # fwknop's access.conf, read unchanged (docs/fwknop.md)
    fwknop_port: int = abi.DEFAULT_FWKNOP_PORT
    fwknop_max_age_ms: int = 120_000  # fwknopd's MAX_SPA_PACKET_AGE
    fwknop_budget: int = abi.DEFAULT_FWKNOP_BUDGET
    metrics: tuple[IPAddress, int] | None = None  # where the worker serves /metrics (None: off)
    log_format: str = "text"
    notes: tuple[str, ...] = ()  # things worth telling the operator at start

    def window(self, identity: Identity) -> int:
        return identity.open_seconds or self.open_seconds

    @property
    def all_interfaces(self) -> bool:
        return self.interfaces == (ALL_INTERFACES,)


# --- value parsers: each returns the value or raises ValueError(one-line reason) ---------------


def _int(text: str, lo: int, hi: int) -> int:
    if not re.fullmatch(r"[0-9]+", text):
        raise ValueError(f"expected a whole number from {lo} to {hi}, got {text!r}")
    n = int(text)
    if not lo <= n <= hi:
        raise ValueError(f"{n} is out of range ({lo} to {hi})")
    return n


def _seconds(text: str, lo: float, hi: float) -> float:
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s)?", text)
    if not m:
        raise ValueError(f"expected seconds (e.g. 5 or 500ms), got {text!r}")
    v = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    if not lo <= v <= hi:
        raise ValueError(f"{text} is out of range ({lo:g}s to {hi:g}s)")
    return v


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("yes", "true", "on", "1"):
        return True
    if low in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"expected yes or no, got {text!r}")


def _list(text: str) -> list[str]:
    return [p for p in re.split(r"[,\s]+", text.strip()) if p]


def parse_port(text: str) -> Port:
    m = re.fullmatch(r"(tcp|udp)/([0-9]+)", text.strip().lower())
    if not m:
        raise ValueError(f"expected PROTO/PORT like tcp/22 or udp/51820, got {text!r}")
    return Port(m.group(1), _int(m.group(2), 1, 65535))


def _ports(text: str) -> tuple[Port, ...]:
    ports = tuple(sorted({parse_port(p) for p in _list(text)}))
    if not ports:
        raise ValueError("expected at least one PROTO/PORT")
    return ports


def _networks(text: str) -> tuple[IPNetwork, ...]:
    nets = []
    for p in _list(text):
        try:
            net = ipaddress.ip_network(p, strict=False)
        except ValueError:
            raise ValueError(f"{p!r} is not an IP address or CIDR") from None
        if "%" in p:
            raise ValueError(f"{p}: a %zone has no place in allow (write the address alone)")
        if net.version == 6 and net.prefixlen and net.overlaps(MAPPED_NET):
            hint = ""
            if net.subnet_of(MAPPED_NET):
                v4 = ipaddress.IPv4Network(
                    (int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96)
                )
                hint = f": write it as {v4}"
            raise ValueError(
                f"{p} covers ::ffff:0:0/96, where IPv4 addresses live (IPv4-mapped): it would "
                f"open the protected ports to IPv4 sources{hint or '; write IPv4 networks as IPv4'}"
            )
        if net.version == 6 and net.prefixlen and net.overlaps(COMPAT_NET):
            raise ValueError(
                f"{p} covers ::/96 (IPv4-compatible addresses, deprecated, never a real "
                "source): write IPv4 networks as IPv4"
            )
        nets.append(net)
    return tuple(nets)


# allow = beyond a /8 of IPv4 or a /16 of IPv6 (public addresses, the entries taken together)
# needs allow-everyone = yes: no admin network is broader, and a typo (192.0.2.9/2) or a split
# 0/0 (0.0.0.0/1, 128.0.0.0/1) is. Private and link-local space does not count: no stranger on
# the internet is routed from there, and 10.0.0.0/8 or fc00::/7 are admin networks.
BROAD_PREFIX = {4: 8, 6: 16}
NOT_PUBLIC = {
    4: tuple(map(ipaddress.IPv4Network, ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                         "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8"))),
    6: tuple(map(ipaddress.IPv6Network, ("fc00::/7", "fe80::/10", "::1/128"))),
}  # fmt: skip


def _count(n: int) -> str:
    return f"{n:,}" if n <= 2**32 else f"about 2^{n.bit_length() - 1}"


def _broad(nets: tuple[IPNetwork, ...]) -> tuple[list[IPNetwork], int]:
    """(the public networks of nets, collapsed, and how many addresses they hold) for each
    family where that is more than BROAD_PREFIX allows; ([], 0) when none is."""
    out: list[IPNetwork] = []
    total = 0
    for version in (4, 6):
        fam = [n for n in ipaddress.collapse_addresses(n for n in nets if n.version == version)
               if not any(n.subnet_of(p) for p in NOT_PUBLIC[version])]  # fmt: skip
        count = sum(n.num_addresses for n in fam)
        if count > 2 ** ((32 if version == 4 else 128) - BROAD_PREFIX[version]):
            out += fam
            total += count
    return out, total


def _host_bits(path: str, line: int, text: str) -> list[str]:
    """Notes for allow entries with host bits set (192.0.2.9/24 is taken as 192.0.2.0/24)."""
    notes = []
    for p in _list(text):
        if "/" in p:
            with contextlib.suppress(ValueError):
                one = ipaddress.ip_interface(p)
                if one.ip != one.network.network_address:
                    notes.append(f"{path}:{line}: allow = {p} has host bits set: taken as "
                                 f"{one.network} ({_count(one.network.num_addresses)} "
                                 f"addresses), not {one.ip} alone")  # fmt: skip
    return notes


def _address(text: str) -> IPAddress:
    try:
        return parse_address(text)
    except ValueError:
        raise ValueError(not_an_address(text)) from None


def _bind(text: str) -> IPAddress:
    """The address knocks are sent to (0.0.0.0 or ::: any of the host's)."""
    ip = _address(text)
    if ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{ip} is not an address of a host: no knock would ever match")
    return ip


def _rate(text: str) -> Rate:
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*/\s*s(?:\s+burst\s+([0-9]+))?", text.strip())
    if not m:
        raise ValueError(f"expected N/s or N/s burst M (e.g. 1/s burst 8), got {text!r}")
    per_s = float(m.group(1))
    if not 0 < per_s <= 100_000:
        raise ValueError(f"rate {per_s:g}/s is out of range (more than 0, at most 100000)")
    burst = _int(m.group(2), 1, 100_000) if m.group(2) else Rate.burst
    return Rate(per_s, burst)


def _iface(text: str) -> tuple[str, ...]:
    names = tuple(_list(text))
    if ALL_INTERFACES in names:
        if len(names) > 1:
            raise ValueError("'all' stands alone (it already means every interface)")
        return names
    for n in names:
        if not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", n):
            raise ValueError(f"{n!r} is not an interface name")
    return names


def _unguarded(text: str) -> tuple[str, ...]:
    names = _iface(text)
    if ALL_INTERFACES in names:
        raise ValueError("name the interfaces left outside the gate, not 'all'")
    return names


# spagate keygen's keys are 32 random bytes: fewer distinct bytes than this is a placeholder
# (all zeros, 1111..., abab...) or a pattern, not a key (a random one has about 30).
MIN_DISTINCT_KEY_BYTES = 8


def _key(text: str) -> bytes:
    key = parse_hex_key(text)
    if len(set(key)) < MIN_DISTINCT_KEY_BYTES:
        raise ValueError(
            f"{len(set(key))} distinct bytes in 32: not a random key (spagate keygen prints one)"
        )
    return key


def _cmd(text: str) -> str | None:
    return text or None


def _parses(command: str) -> bool:
    try:
        shlex.split(command)
    except ValueError:
        return False
    return True


UNTAGGED_MODES = {
    "accept": abi.UntaggedMode.ACCEPT,
    "budget": abi.UntaggedMode.BOUNDED,
    "refuse": abi.UntaggedMode.REFUSE,
}


def _untagged(text: str) -> abi.UntaggedMode:
    if text.lower() not in UNTAGGED_MODES:
        raise ValueError(f"expected one of {', '.join(UNTAGGED_MODES)}, got {text!r}")
    return UNTAGGED_MODES[text.lower()]


def _mode(text: str) -> str:
    if text not in XDP_MODES:
        raise ValueError(f"expected one of {', '.join(XDP_MODES)}, got {text!r}")
    return text


def _fleet(check: str):
    """A parser of a fleet setting, by the fleet core's own rules (imported when used: the
    fleet core imports this module)."""

    def parse(text: str):
        from spagate.gate.core import fleet

        try:
            if check == "cluster":
                return fleet.parse_cluster(text)
            if check == "name":
                return fleet.check_cluster_name(text)
            if check == "member":
                return fleet.check_member_name(text)
            if check == "fallback":
                return str(fleet.parse_fallback(text))
        except fleet.FleetError as e:
            raise ValueError(str(e)) from None
        raise AssertionError(check)

    return parse


def _path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError(f"expected an absolute path, got {text!r}")
    return text


def _word(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.@+-]{1,64}", text):
        raise ValueError(f"expected a name of letters, digits and _ . @ + -, got {text!r}")
    return text


FLEET_KEYS = {
    "cluster": _fleet("cluster"),
    "cluster-name": _fleet("name"),
    "fleet-member": _fleet("member"),
    "fleet-ca": _path,
    "fleet-cert": _path,
    "fleet-key": _path,
    "fleet-user": _word,
    "fleet-password-file": _path,
    "fleet-fallback": _fleet("fallback"),
    "fleet-timeout": lambda t: _seconds(t, 0.01, 10),
    "fleet-operator-grants": _bool,
}


def _disguise(text: str) -> str:
    if text not in DISGUISES:
        raise ValueError(f"expected one of {', '.join(DISGUISES)}, got {text!r}")
    return text


def _metrics(text: str) -> tuple[IPAddress, int] | None:
    if text.lower() in ("", "no", "off"):
        return None
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]+)|([0-9.]+):([0-9]+)", text)
    if not m:
        raise ValueError(
            f"expected ADDRESS:PORT like 127.0.0.1:{DEFAULT_METRICS_PORT} or "
            f"[::1]:{DEFAULT_METRICS_PORT}, or off; got {text!r}"
        )
    addr = _address(m.group(1) or m.group(3))
    # The worker serves it after it dropped root: no privileged port.
    return addr, _int(m.group(2) or m.group(4), 1024, 65535)


def _log_format(text: str) -> str:
    if text not in LOG_FORMATS:
        raise ValueError(f"expected one of {', '.join(LOG_FORMATS)}, got {text!r}")
    return text


# key -> (parser, field name); global keys may stand only above the first section.
GLOBAL_KEYS = {
    "bind": (_bind, "bind"),
    "port": (lambda t: _int(t, 1, 65535), "spa_port"),
    "interface": (_iface, "interfaces"),  # names, or all (every IP-carrying one, new ones too)
    "unguarded": (_unguarded, "unguarded"),  # interfaces left outside the gate on purpose
    "protected": (_ports, "protected"),
    "open-seconds": (lambda t: _int(t, 1, 86400), "open_seconds"),
    "allow": (_networks, "allow"),  # never over ::ffff:0:0/96; 0/0 needs allow-everyone
    "allow-everyone": (_bool, "allow_everyone"),  # yes: allow = 0.0.0.0/0 or ::/0 is meant
    "max-skew": (lambda t: round(_seconds(t, 0.1, 300) * 1000), "max_skew_ms"),
    "rate": (_rate, "rate"),
    "spa-budget": (lambda t: _int(t, 1, 10_000_000), "spa_budget"),
    "untagged": (_untagged, "untagged"),
    "untagged-budget": (lambda t: _int(t, 1, 10_000_000), "untagged_budget"),
    "udp-idle": (lambda t: _int(t, 1, 86400), "udp_idle_seconds"),
    "xdp-mode": (_mode, "xdp_mode"),
    "disguise": (_disguise, "disguise"),  # closed (RST/ICMP as Linux), filtered (silence), auto
    "require-source-match": (_bool, "require_source_match"),
    "open-cmd": (_cmd, "open_cmd"),
    "close-cmd": (_cmd, "close_cmd"),
    **{k: (parser, f"fleet:{k}") for k, parser in FLEET_KEYS.items()},
    "fwknop-access": (_path, "fwknop_access"),
    "fwknop-port": (lambda t: _int(t, 1, 65535), "fwknop_port"),
    "fwknop-max-age": (lambda t: round(_seconds(t, 1, 600) * 1000), "fwknop_max_age_ms"),
    "fwknop-budget": (lambda t: _int(t, 1, 10_000), "fwknop_budget"),
    "metrics": (_metrics, "metrics"),
    "log-format": (_log_format, "log_format"),
}
IDENTITY_KEYS = {
    "key": _key,
    "hmac-key": _key,
    "protected": _ports,
    "open-seconds": GLOBAL_KEYS["open-seconds"][0],
}
IGNORED_KEYS = {
    "nftables-cmd": "nftables-cmd is not needed by spagate (XDP enforces): ignored",
    "nftablesv6-cmd": "nftablesv6-cmd is not needed by spagate (XDP enforces): ignored",
}


def parse_config(text: str, path: str = DEFAULT_PATH) -> GateConfig:
    """Parse the gate configuration; raise ConfigError(path, line, reason) on any problem."""
    # sparoid takes several key/hmac-key lines (key rotation): pairs, in order.
    top, *sections = parse_ini(text, path, repeatable=frozenset({"key", "hmac-key"}))
    settings: dict[str, object] = {}  # GateConfig field -> value
    notes: list[str] = []
    values: dict[str, dict[str, tuple[object, int]]] = {}  # section -> key -> (value, line)
    fleet_settings: dict[str, tuple[object, int]] = {}
    extra_pairs: dict[str, list[tuple[object, int]]] = {}  # more top-level key/hmac-key lines
    lines: dict[str, int] = {}  # global key -> its line

    for sec in (top, *sections):
        if sec.name == "default":
            raise ConfigError(path, sec.line, "identity [default] is defined twice")
        ident = values.setdefault(sec.name or "default", {})
        for e in sec.entries:
            k, n = e.name, e.line
            if k in IGNORED_KEYS:
                notes.append(f"{path}:{n}: {IGNORED_KEYS[k]}")
                continue
            if sec is top and k in GLOBAL_KEYS:
                parser, fname = GLOBAL_KEYS[k]
            elif sec is not top and k in IDENTITY_KEYS:
                parser, fname = IDENTITY_KEYS[k], ""
            elif k in ("key", "hmac-key"):
                parser, fname = _key, ""
            elif k in GLOBAL_KEYS:
                raise ConfigError(
                    path, n, f"{k} is a gate-wide setting: move it above the first [section]"
                )
            else:
                known = sorted({*GLOBAL_KEYS, *IDENTITY_KEYS, *IGNORED_KEYS})
                raise ConfigError(path, n, f"unknown key {k!r} (known keys: {', '.join(known)})")
            try:
                value = parser(e.value)
            except ValueError as err:
                raise ConfigError(path, n, f"{k}: {err}") from None
            cut = k in ("open-cmd", "close-cmd") and e.uncut is not None
            if cut and _parses(e.uncut) and not _parses(e.value):  # type: ignore[arg-type]
                # Said, not refused: the hook fails at each window (said then too), and a
                # refusal would stop the whole gate at the upgrade that brought the check.
                notes.append(f"{path}:{n}: {k}: a ' #' after a value starts a comment, inside "
                             "quotes too, and cut this command's quotes: the hook will fail; "
                             "write the # without a space before it")  # fmt: skip
            if k == "allow":
                notes += _host_bits(path, n, e.value)
            if fname.startswith("fleet:"):
                fleet_settings[k] = (value, n)
            elif fname:
                settings[fname] = value
                lines[k] = n
            elif k in ident and sec is top:  # another key/hmac-key pair (sparoid rotation)
                extra_pairs.setdefault(k, []).append((value, n))
            elif k in ident:
                raise ConfigError(path, n, f"{k} set twice (first on line {ident[k][1]})")
            else:
                ident[k] = (value, n)

    protected: tuple[Port, ...] = settings.get("protected", GateConfig.protected)  # type: ignore[assignment]
    if "protected" not in settings:
        notes.append(f"{path}: no 'protected' key: guarding tcp/22 (ssh)")
    identities = []
    identity_lines: dict[str, int] = {}  # identity -> the line that made it
    for sec in ([top] if values["default"] else []) + sections:
        identities.append(_identity(path, sec, values[sec.name or "default"], protected))
        identity_lines[identities[-1].name] = sec.line or min(
            n for _, n in values[sec.name or "default"].values()
        )
    keys, hmacs = extra_pairs.get("key", []), extra_pairs.get("hmac-key", [])
    if len(keys) != len(hmacs):
        line = (keys or hmacs)[-1][1]
        raise ConfigError(path, line, "top-level key and hmac-key lines must come in pairs")
    for i, (k, h) in enumerate(zip(keys, hmacs, strict=True), start=2):
        name = f"default-{i}"
        if name.lower() in (sec.name.lower() for sec in sections):
            raise ConfigError(path, k[1], f"this key pair is identity [{name}], and so is a "
                              "section: rename the section")  # fmt: skip
        vals = {"key": k, "hmac-key": h}
        identities.insert(i - 1, _identity(path, Section(name, k[1]), vals, protected))
        identity_lines[name] = k[1]
    if not identities:
        raise ConfigError(path, None, "no keys: set key and hmac-key (spagate keygen prints them)")
    if len(identities) > MAX_IDENTITIES:
        raise ConfigError(
            path,
            identity_lines[identities[MAX_IDENTITIES].name],
            f"{len(identities)} identities: at most {MAX_IDENTITIES} are supported",
        )
    names: dict[str, str] = {}
    for ident in identities:  # [a] and [A] would be two identities in logs, metrics, the store
        if ident.name.lower() in names:
            raise ConfigError(
                path, identity_lines[ident.name] or None,
                f"identity [{ident.name}] and [{names[ident.name.lower()]}]: names must differ "
                "in more than case",
            )  # fmt: skip
        names[ident.name.lower()] = ident.name
    # A shared hmac-key makes two identities one to the kernel's MAC check; a key that is
    # another identity's hmac-key (two lines swapped when pasting) gives its holder both halves
    # of that identity. (A key shared with a different hmac-key, sparoid's hmac-only rotation,
    # forges nothing.)
    hmacs: dict[bytes, str] = {}
    for ident in identities:
        if ident.keys.hmac_key in hmacs:
            raise ConfigError(path, identity_lines[ident.name] or None,
                              f"identities [{hmacs[ident.keys.hmac_key]}] and [{ident.name}] "
                              "share an hmac-key (spagate keygen prints a fresh pair)")  # fmt: skip
        hmacs[ident.keys.hmac_key] = ident.name
    for ident in identities:
        other = hmacs.get(ident.keys.key)
        if other is not None and other != ident.name:
            raise ConfigError(path, identity_lines[ident.name] or None,
                              f"the key of [{ident.name}] is the hmac-key of [{other}]: its "
                              f"holder could knock as [{other}] (lines swapped?)")  # fmt: skip
    for name in settings.get("unguarded", ()):  # type: ignore[attr-defined]
        if name in settings.get("interfaces", ()):  # type: ignore[operator]
            raise ConfigError(
                path, lines["unguarded"],
                f"{name} is in both interface = and unguarded =: say whether the gate guards it",
            )  # fmt: skip
    fw_port = settings.get("fwknop_port", abi.DEFAULT_FWKNOP_PORT)
    for s in protected:
        if s.proto == "udp" and s.port == settings.get("spa_port", DEFAULT_SPA_PORT):
            raise ConfigError(path, None, f"protected {s} is also the SPA port")
        if s.proto == "udp" and s.port == fw_port and settings.get("fwknop_access"):
            raise ConfigError(path, None, f"protected {s} is also the fwknop port")

    if str(settings.get("bind")) == "0.0.0.0":
        notes.append(f"{path}: bind = 0.0.0.0 takes IPv4 knocks only, as sparoid does "
                     "(bind = :: takes IPv4 and IPv6)")  # fmt: skip
    if fleet_settings:
        if "cluster" not in fleet_settings or "cluster-name" not in fleet_settings:
            line = min(n for _, n in fleet_settings.values())
            raise ConfigError(path, line, "fleet mode needs both cluster = and cluster-name =")
        settings["fleet"] = FleetConfig(
            endpoints=fleet_settings["cluster"][0],  # type: ignore[arg-type]
            **{FLEET_FIELDS[k]: v for k, (v, _) in fleet_settings.items() if k != "cluster"},
        )
    broad, total = _broad(settings.get("allow", ()))  # type: ignore[arg-type]
    if broad and not settings.get("allow_everyone"):
        whom = ("lets everyone in" if any(n.prefixlen == 0 for n in broad)
                else f"opens the protected ports to {_count(total)} addresses")  # fmt: skip
        raise ConfigError(
            path,
            lines["allow"],
            f"allow = {', '.join(map(str, broad))} {whom} without SPA: if that is meant, "
            f"add allow-everyone = yes (needed beyond a /{BROAD_PREFIX[4]} of public IPv4 or "
            f"a /{BROAD_PREFIX[6]} of public IPv6, the entries taken together)",
        )
    metrics = settings.get("metrics")
    if metrics is not None and not metrics[0].is_loopback:  # type: ignore[index]
        notes.append(
            f"{path}: metrics on {metrics[0]}, not a loopback address: whoever reaches it "  # type: ignore[index]
            "reads the gate's counters and identity names"
        )

    return GateConfig(path=path, identities=tuple(identities), notes=tuple(notes), **settings)


def _identity(
    path: str, sec: Section, vals: dict[str, tuple[object, int]], protected: tuple[Port, ...]
) -> Identity:
    where = sec.line or None
    label = f"[{sec.name}]" if sec.name else "top-level"
    for k in ("key", "hmac-key"):
        if k not in vals:
            raise ConfigError(path, where, f"{label} identity has no {k}")
    key, hmac_key = vals["key"][0], vals["hmac-key"][0]
    if key == hmac_key:
        raise ConfigError(path, vals["hmac-key"][1], "key and hmac-key must differ")
    ports = vals.get("protected", (None, 0))
    if ports[0] is not None:
        outside = [str(p) for p in ports[0] if p not in protected]  # type: ignore[union-attr]
        if outside:
            raise ConfigError(
                path, ports[1], f"{', '.join(outside)} not in the gate's protected ports"
            )
    seconds = vals.get("open-seconds", (None, 0))[0]
    return Identity(
        name=sec.name or "default",
        keys=KeyPair(key, hmac_key),  # type: ignore[arg-type]
        ports=ports[0],  # type: ignore[arg-type]
        open_seconds=seconds,  # type: ignore[arg-type]
    )


def service_group_readers() -> frozenset[int]:
    """The groups that may read the configuration besides its owner: root's, and the spagate
    service group (the worker's; /etc/spagate.ini is root:spagate 0640, sparoid's 0650 too)."""
    import grp

    try:
        return frozenset({0, grp.getgrnam("spagate").gr_gid})
    except KeyError:
        return frozenset({0})


def load_config(
    path: str = DEFAULT_PATH, group_readers: frozenset[int] | None = None
) -> GateConfig:
    """Read and parse the configuration file; refuse one that others can read (it holds keys)
    or that is not owned by root (or us): whoever owns it chooses the keys and the hooks.
    Group read is fine for root's group and the spagate service group (service_group_readers)."""
    if group_readers is None:
        group_readers = service_group_readers()
    try:
        text = read_key_file(path, group_readers=group_readers)
    except ConfigError as e:
        if e.message == "not found":
            raise ConfigError(path, None, "not found (see docs/getting-started.md)") from None
        raise
    return parse_config(text, path)
