"""Client configuration: profiles in ~/.spagate.ini (or ~/.sparoid.ini), or the environment.

A file holds one or more profiles. The lines above the first [section] are the default
profile (a sparoid client's ~/.sparoid.ini is exactly that: key and hmac-key); each [NAME]
section is a named profile. A section takes what it does not set from the top (keys, port,
URLs), so a section may hold only `host =` and `port =`. Which profile a command uses:

1. `-n NAME`: that section ("default": the top);
2. else the first section, in file order, whose `host =` patterns match the host as given on
   the command line, like ssh's Host: shell globs (* ?), case-insensitive, several separated
   by spaces or commas, `!PATTERN` excludes (a section with a matching `!` pattern never
   matches);
3. else the top, if it has keys;
4. else the one section with keys and no `host =` line, if there is exactly one (a file of
   one identity under a [section], as `spagate keygen --name` prints it);
5. else an error naming the profiles.

A profile may also hold fwknop keys (`protocol = fwknop`, the fwknop-* keys, as
`fwknop --key-gen` prints them) and how many copies `send` sends (`copies`, `copy-interval`).
Unknown keys are errors (file:line), as on the gate. Parsing is pure (text in, ClientFile out;
the grammar is spagate.inifile's); reading files is at the edge (inifile.read_key_file).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from spagate.client.send import DEFAULT_COPIES, DEFAULT_COPY_INTERVAL_S
from spagate.errors import ConfigError, SpagateError
from spagate.inifile import parse_ini, read_key_file
from spagate.protocol import KeyPair, parse_hex_key

DEFAULT_PUBLIC_IP_URL = "https://icanhazip.com/"
DEFAULT_NAME = "default"  # the profile of the lines above the first section
KEY_NAMES = ("key", "hmac-key")
URL_NAMES = ("public-ip-url", "public-ipv4-url", "public-ipv6-url")
# fwknop (spagate send --protocol fwknop): the keys as fwknop --key-gen prints them
FWKNOP_NAMES = (
    "protocol",
    "fwknop-key-base64",
    "fwknop-hmac-key-base64",
    "fwknop-hmac-digest-type",
    "fwknop-user",
    "fwknop-port",
)
PROTOCOLS = ("sparoid", "fwknop")
SEND_NAMES = ("copies", "copy-interval")
MAX_COPIES = 10
MAX_COPY_INTERVAL_S = 1.0
# Every key a client profile may hold (docs/configuration.md documents each; a test checks).
CLIENT_KEYS = (*KEY_NAMES, "host", "port", "ip", *URL_NAMES, *SEND_NAMES, *FWKNOP_NAMES)
# The environment: keys (when no file exists) and the public-address service.
ENV_PAIRS = (("SPAGATE_KEY", "SPAGATE_HMAC_KEY"), ("SPAROID_KEY", "SPAROID_HMAC_KEY"))
ENV_URL = "SPAGATE_PUBLIC_IP_URL"
FILES = (".spagate.ini", ".sparoid.ini")

NO_KEYS = (
    "no client keys. The keys are the gate's: get the two lines `key = ...` and "
    "`hmac-key = ...` from the gate's operator (a new `spagate keygen` pair cannot open it), "
    "put them in ~/.spagate.ini and run chmod 600 ~/.spagate.ini; or set SPAGATE_KEY and "
    "SPAGATE_HMAC_KEY (docs/configuration.md)"
)


def parse_copies(text: str) -> int:
    """copies = N (1..10): ValueError with a one-line reason otherwise."""
    t = text.strip()
    if not t.isdigit() or not 1 <= int(t) <= MAX_COPIES:
        raise ValueError(f"expected a whole number from 1 to {MAX_COPIES}, got {text!r}")
    return int(t)


def parse_interval(text: str) -> float:
    """copy-interval = 5ms | 0.01s | 0.01 (seconds, at most 1 s)."""
    t = text.strip().lower()
    scale = 1e-3 if t.endswith("ms") else 1.0
    t = t.removesuffix("ms").removesuffix("s").strip()
    try:
        v = float(t) * scale
    except ValueError:
        raise ValueError(f"expected a time like 5ms or 0.01s, got {text!r}") from None
    if not 0 <= v <= MAX_COPY_INTERVAL_S:
        raise ValueError(f"{text} is out of range (0 to {MAX_COPY_INTERVAL_S:g}s)")
    return v


@dataclass(frozen=True)
class ClientConfig:
    keys: KeyPair | None  # None: a profile with fwknop keys only
    source: str  # where the keys came from: "FILE", "FILE [NAME]" or "$VARIABLE"
    public_ipv4_url: str = DEFAULT_PUBLIC_IP_URL
    public_ipv6_url: str = DEFAULT_PUBLIC_IP_URL
    profile: str = DEFAULT_NAME
    port: int | None = None  # the SPA port, when the profile sets one
    ip: str | None = None  # what --ip defaults to, when the profile sets it
    protocol: str = "sparoid"  # what `spagate send` speaks unless told (--protocol)
    fwknop_key: object | None = None  # spagate.protocol.fwknop.FwknopKey
    fwknop_user: str | None = None
    fwknop_port: int | None = None
    copies: int = DEFAULT_COPIES  # copies of each packet (the gate admits one)
    copy_interval_s: float = DEFAULT_COPY_INTERVAL_S


@dataclass(frozen=True)
class Profile:
    name: str
    line: int  # of its [section] header (0: the top)
    values: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (value, line)
    hosts: tuple[str, ...] = ()

    def matches(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        hit = False
        for pattern in self.hosts:
            negated = pattern.startswith("!")
            if fnmatch.fnmatchcase(host, pattern.lstrip("!").lower()):
                if negated:
                    return False
                hit = True
        return hit


@dataclass(frozen=True)
class ClientFile:
    path: str
    top: Profile
    sections: tuple[Profile, ...]

    def names(self) -> list[str]:
        return [p.name for p in self.sections]

    def select(self, host: str | None, name: str | None = None) -> ClientConfig:
        """The profile for host (or the one named): see the module's rules."""
        if name is not None:
            if name == DEFAULT_NAME:
                return self._config(self.top)
            for p in self.sections:
                if p.name == name:
                    return self._config(p)
            known = ", ".join([DEFAULT_NAME, *self.names()])
            raise ConfigError(self.path, None, f"no profile [{name}] (profiles: {known})")
        for p in self.sections:
            if host is not None and p.matches(host):
                return self._config(p)
        if _has_keys(self.top.values):
            return self._config(self.top)
        lone = [p for p in self.sections if not p.hosts and _has_keys(p.values)]
        if len(lone) == 1:
            return self._config(lone[0])
        if not self.sections:
            raise ConfigError(self.path, None, NO_KEYS)
        listed = "; ".join(
            f"[{p.name}] host = {' '.join(p.hosts)}" if p.hosts else f"[{p.name}] (no host =)"
            for p in self.sections
        )
        raise ConfigError(
            self.path, None,
            f"no profile matches host {host!r} and there are no top-level keys: pass -n NAME, "
            f"or add the host to a profile's host = line ({listed})",
        )  # fmt: skip

    def _config(self, p: Profile) -> ClientConfig:
        vals = {**self.top.values, **p.values}
        where = self.path if p is self.top else f"{self.path} [{p.name}]"
        fw = _fwknop(vals, self.path)
        keys = None
        if fw is None or any(k in vals for k in KEY_NAMES):
            for k in KEY_NAMES:
                if k not in vals:
                    line = p.line or None
                    if p is self.top and not self.sections:
                        raise ConfigError(self.path, None, NO_KEYS)
                    raise ConfigError(self.path, line, f"profile {p.name} has no {k}")
            keys = KeyPair(parse_hex_key(vals["key"][0]), parse_hex_key(vals["hmac-key"][0]))
            if keys.key == keys.hmac_key:  # no gate takes such a pair: every knock would vanish
                why = "key and hmac-key must differ (the gate refuses the pair)"
                raise ConfigError(self.path, vals["hmac-key"][1] or None, why)
        # The profile's protocol: its own line, else what its own keys speak, else the top's.
        own = p.values
        if "protocol" in own:
            protocol = own["protocol"][0]
        elif any(k in own for k in KEY_NAMES):
            protocol = "sparoid"
        elif "fwknop-key-base64" in own:
            protocol = "fwknop"
        else:
            protocol = vals.get("protocol", ("fwknop" if keys is None else "sparoid", 0))[0]
        if protocol == "sparoid" and keys is None:
            line = vals.get("protocol", ("", p.line))[1] or None
            raise ConfigError(self.path, line, "protocol = sparoid needs key and hmac-key")
        both = vals.get("public-ip-url", (DEFAULT_PUBLIC_IP_URL, 0))[0]
        port, ip, fw_port = vals.get("port"), vals.get("ip"), vals.get("fwknop-port")
        copies, interval = vals.get("copies"), vals.get("copy-interval")
        return ClientConfig(
            keys, where,
            vals.get("public-ipv4-url", (both, 0))[0],
            vals.get("public-ipv6-url", (both, 0))[0],
            p.name, int(port[0]) if port else None, ip[0] if ip else None,
            protocol, fw, vals.get("fwknop-user", (None, 0))[0],
            int(fw_port[0]) if fw_port else None,
            parse_copies(copies[0]) if copies else DEFAULT_COPIES,
            parse_interval(interval[0]) if interval else DEFAULT_COPY_INTERVAL_S,
        )  # fmt: skip


def _has_keys(values: Mapping[str, tuple[str, int]]) -> bool:
    return all(k in values for k in KEY_NAMES) or "fwknop-key-base64" in values


def _fwknop(values: Mapping[str, tuple[str, int]], path: str):
    """The fwknop keys of a profile, or None when it has none."""
    k, h = values.get("fwknop-key-base64"), values.get("fwknop-hmac-key-base64")
    if k is None and h is None:
        return None
    if k is None or h is None:
        line = (k or h)[1]
        raise ConfigError(
            path, line, "fwknop needs both fwknop-key-base64 and fwknop-hmac-key-base64"
        )
    from spagate.protocol.fwknop import FwknopKey

    kind = values.get("fwknop-hmac-digest-type", ("sha256", 0))[0].lower()
    try:
        return FwknopKey.from_base64(k[0], h[0], kind)
    except ValueError as e:
        raise ConfigError(path, k[1], f"fwknop keys: {e}") from None


def _check(path: str, name: str, value: str, line: int) -> None:
    """Refuse a bad value with file:line (the value is never echoed: it may be a key)."""
    if name in KEY_NAMES:
        try:
            parse_hex_key(value)
        except ValueError as err:
            raise ConfigError(path, line, f"invalid {name}: {err}") from None
    elif name in URL_NAMES:
        if not value.startswith(("http://", "https://")):
            raise ConfigError(path, line, f"{name} must be an http:// or https:// URL")
    elif name in ("port", "fwknop-port"):
        if not re.fullmatch(r"[0-9]{1,5}", value) or not 0 < int(value) < 65536:
            raise ConfigError(path, line, f"{name}: expected a UDP port from 1 to 65535")
    elif name in SEND_NAMES:
        try:
            (parse_copies if name == "copies" else parse_interval)(value)
        except ValueError as err:
            raise ConfigError(path, line, f"{name}: {err}") from None
    elif name == "protocol":
        if value not in PROTOCOLS:
            raise ConfigError(path, line, f"protocol: expected sparoid or fwknop, not {value!r}")
    elif name == "ip":
        from spagate.client.send import parse_ip_option

        try:
            parse_ip_option(value)
        except SpagateError:
            raise ConfigError(path, line, "ip: expected an IP address or 'source'") from None


def _hosts(path: str, value: str, line: int) -> tuple[str, ...]:
    pats = tuple(p for p in re.split(r"[,\s]+", value) if p)
    if not pats or any(not re.fullmatch(r"!?[A-Za-z0-9*?._:%\[\]-]+", p) for p in pats):
        raise ConfigError(path, line, "host: expected host name patterns like *.example.com")
    return pats


def parse_config(text: str, path: str) -> ClientFile:
    """Parse a client file: the top (default profile) and its [NAME] sections."""
    top_sec, *secs = parse_ini(text, path)
    profiles = []
    for sec in (top_sec, *secs):
        if sec.name == DEFAULT_NAME:
            raise ConfigError(path, sec.line, "[default] is the top of the file: rename it")
        values: dict[str, tuple[str, int]] = {}
        hosts: tuple[str, ...] = ()
        for e in sec.entries:
            if e.name not in CLIENT_KEYS:
                raise ConfigError(
                    path, e.line, f"unknown key {e.name!r} (known keys: {', '.join(CLIENT_KEYS)})"
                )
            if e.name == "host":
                if sec.name is None:
                    raise ConfigError(path, e.line, "host = belongs in a [section] (a profile)")
                hosts = _hosts(path, e.value, e.line)
                continue
            _check(path, e.name, e.value, e.line)
            values[e.name] = (e.value, e.line)
        if sum(k in values for k in KEY_NAMES) == 1:
            missing = next(k for k in KEY_NAMES if k not in values)
            who = sec.name or "the top"
            raise ConfigError(path, sec.line or None, f"{who} has a key without its {missing}")
        profiles.append(Profile(sec.name or DEFAULT_NAME, sec.line, values, hosts))
    return ClientFile(path, profiles[0], tuple(profiles[1:]))


def config_from_env(env: Mapping[str, str]) -> ClientConfig | None:
    for key_var, hmac_var in ENV_PAIRS:
        key, hmac_key = env.get(key_var), env.get(hmac_var)
        if key is None and hmac_key is None:
            continue
        if key is None or hmac_key is None:
            missing = key_var if key is None else hmac_var
            present = hmac_var if key is None else key_var
            raise ConfigError(f"${present}", None, f"is set but ${missing} is not")
        parsed = []
        for var, value in ((key_var, key), (hmac_var, hmac_key)):
            try:
                parsed.append(parse_hex_key(value))
            except ValueError as e:
                raise ConfigError(f"${var}", None, f"invalid key: {e}") from None
        url = env.get(ENV_URL, DEFAULT_PUBLIC_IP_URL)
        return ClientConfig(KeyPair(*parsed), f"${key_var}", url, url)
    return None


def read_config_file(path: Path) -> ClientFile:
    """Read a key file, refusing one that group or others can access (as OpenSSH does)."""
    return parse_config(read_key_file(path), str(path))


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
    host: str | None = None,
    name: str | None = None,
) -> ClientConfig:
    """-c FILE, else ~/.spagate.ini, else ~/.sparoid.ini, else the environment; then the
    profile for host (or the one named)."""
    env = os.environ if env is None else env
    if path is not None:
        return read_config_file(Path(path)).select(host, name)
    home = Path.home() if home is None else home
    for fname in FILES:
        candidate = home / fname
        if candidate.exists():
            return read_config_file(candidate).select(host, name)
    found = config_from_env(env)
    if found is None:
        raise ConfigError(str(home / ".spagate.ini"), None, "not found: " + NO_KEYS)
    if name is not None and name != DEFAULT_NAME:
        raise ConfigError(f"${found.source[1:]}", None, f"-n {name}: profiles live in a file")
    return found
