"""Client configuration: keys and settings from ~/.spagate.ini, ~/.sparoid.ini or the
environment. Parsing is pure (text in, ClientConfig out, grammar: spagate.inifile); reading
files is at the edge (inifile.read_key_file)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from spagate.client.send import DEFAULT_COPIES, DEFAULT_COPY_INTERVAL_S
from spagate.errors import ConfigError
from spagate.inifile import parse_ini, read_key_file
from spagate.protocol import KeyPair, parse_hex_key

DEFAULT_PUBLIC_IP_URL = "https://icanhazip.com/"
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


ENV_PAIRS = (("SPAGATE_KEY", "SPAGATE_HMAC_KEY"), ("SPAROID_KEY", "SPAROID_HMAC_KEY"))


@dataclass(frozen=True)
class ClientConfig:
    keys: KeyPair | None  # None: an fwknop-only configuration
    source: str  # where the keys came from (file path or environment variable)
    public_ipv4_url: str = DEFAULT_PUBLIC_IP_URL
    public_ipv6_url: str = DEFAULT_PUBLIC_IP_URL
    protocol: str = "sparoid"  # what `spagate send` speaks unless told (--protocol)
    fwknop_key: object | None = None  # spagate.protocol.fwknop.FwknopKey
    fwknop_user: str | None = None
    fwknop_port: int | None = None
    copies: int = DEFAULT_COPIES  # copies of each packet (the gate admits one)
    copy_interval_s: float = DEFAULT_COPY_INTERVAL_S


def parse_config(text: str, path: str) -> ClientConfig:
    """Parse sparoid-style `name = value` lines, optionally under one [section]."""
    values: dict[str, tuple[str, int]] = {}
    key_section: tuple[str | None, int] | None = None
    for sec in parse_ini(text, path):
        for e in sec.entries:
            name, value, lineno = e.name, e.value, e.line
            if name in KEY_NAMES:
                if key_section is not None and key_section[0] != sec.name:
                    raise ConfigError(
                        path,
                        lineno,
                        f"keys in more than one section (also line {key_section[1]}); "
                        "a client config holds one identity",
                    )
                key_section = (sec.name, lineno)
                try:
                    parse_hex_key(value)
                except ValueError as err:
                    raise ConfigError(path, lineno, f"invalid {name}: {err}") from None
            if name in SEND_NAMES:
                try:
                    (parse_copies if name == "copies" else parse_interval)(value)
                except ValueError as err:
                    raise ConfigError(path, lineno, f"{name}: {err}") from None
            if name in KEY_NAMES or name in URL_NAMES or name in SEND_NAMES or name in FWKNOP_NAMES:
                if name in values:
                    raise ConfigError(
                        path, lineno, f"{name} set twice (first on line {values[name][1]})"
                    )
                if name in URL_NAMES and not value.startswith(("http://", "https://")):
                    raise ConfigError(path, lineno, f"{name} must be an http:// or https:// URL")
                values[name] = (value, lineno)
            # other names are ignored: sparoid config files may carry more settings
    fw = _fwknop(values, path)
    keys = None
    if fw is None or any(n in values for n in KEY_NAMES):
        for name in KEY_NAMES:
            if name not in values:
                raise ConfigError(path, None, f"no `{name} = <64 hex characters>` line")
        keys = KeyPair(parse_hex_key(values["key"][0]), parse_hex_key(values["hmac-key"][0]))
    protocol = values.get("protocol", ("fwknop" if keys is None else "sparoid", 0))
    if protocol[0] not in PROTOCOLS:
        raise ConfigError(
            path, protocol[1], f"protocol: expected sparoid or fwknop, not {protocol[0]!r}"
        )
    both = values.get("public-ip-url", (DEFAULT_PUBLIC_IP_URL, 0))[0]
    port = values.get("fwknop-port")
    if port and not (port[0].isdigit() and 0 < int(port[0]) < 65536):
        raise ConfigError(path, port[1], f"fwknop-port: expected 1-65535, not {port[0]!r}")
    return ClientConfig(
        keys,
        path,
        values.get("public-ipv4-url", (both, 0))[0],
        values.get("public-ipv6-url", (both, 0))[0],
        protocol[0],
        fw,
        values.get("fwknop-user", (None, 0))[0],
        int(port[0]) if port else None,
        parse_copies(values["copies"][0]) if "copies" in values else DEFAULT_COPIES,
        parse_interval(values["copy-interval"][0])
        if "copy-interval" in values
        else DEFAULT_COPY_INTERVAL_S,
    )


def _fwknop(values: dict[str, tuple[str, int]], path: str):
    """The fwknop keys of a client config, or None when it has none."""
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
        url = env.get("SPAGATE_PUBLIC_IP_URL", DEFAULT_PUBLIC_IP_URL)
        return ClientConfig(KeyPair(*parsed), f"${key_var}", url, url)
    return None


def read_config_file(path: Path) -> ClientConfig:
    """Read a key file, refusing one that group or others can access (as OpenSSH does)."""
    return parse_config(read_key_file(path), str(path))


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> ClientConfig:
    """-c FILE, else ~/.spagate.ini, else ~/.sparoid.ini, else the environment."""
    env = os.environ if env is None else env
    if path is not None:
        return read_config_file(Path(path))
    home = Path.home() if home is None else home
    for name in (".spagate.ini", ".sparoid.ini"):
        candidate = home / name
        if candidate.exists():
            return read_config_file(candidate)
    found = config_from_env(env)
    if found is None:
        raise ConfigError(
            str(home / ".spagate.ini"),
            None,
            "no client keys: create it with `spagate keygen > ~/.spagate.ini && "
            "chmod 600 ~/.spagate.ini`, or set SPAGATE_KEY and SPAGATE_HMAC_KEY",
        )
    return found
