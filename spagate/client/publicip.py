"""This host's public IPv4/IPv6 address, from a plain-text HTTP endpoint (like icanhazip.com),
looked up per address family and cached for a minute in a file."""

from __future__ import annotations

import http.client
import os
import socket
import tempfile
import time
import urllib.parse
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from spagate.errors import SpagateError

CACHE_TTL_S = 60
_NAMES = {socket.AF_INET: ("IPv4", "v4", 4), socket.AF_INET6: ("IPv6", "v6", 6)}


def cache_dir(env=None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spagate"


def _connector(family: int):
    """A socket.create_connection restricted to one address family."""

    def create(address, timeout=None, source_address=None, **_kw):
        host, port = address
        err: OSError | None = None
        for af, kind, proto, _, sa in socket.getaddrinfo(host, port, family, socket.SOCK_STREAM):
            s = socket.socket(af, kind, proto)
            try:
                s.settimeout(timeout)
                s.connect(sa)
                return s
            except OSError as e:
                err = e
                s.close()
        raise err or OSError(f"no {_NAMES[family][0]} address for {host}")

    return create


def fetch(family: int, url: str, timeout: float = 5.0) -> IPv4Address | IPv6Address:
    """GET url over the given family; the reply body is the address as text."""
    label = _NAMES[family][0]
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise SpagateError(f"public IP URL {url!r} is not an http:// or https:// URL")
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    try:
        conn = cls(u.hostname, u.port, timeout=timeout)
        conn._create_connection = _connector(family)
        try:
            conn.request(
                "GET",
                (u.path or "/") + (f"?{u.query}" if u.query else ""),
                headers={"User-Agent": "spagate", "Accept": "text/plain"},
            )
            resp = conn.getresponse()
            body = resp.read(256)
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise _lookup_error(label, url, reason) from None
    if resp.status != 200:
        raise _lookup_error(label, url, f"HTTP {resp.status} {resp.reason}")
    text = body.decode("ascii", "replace").strip()
    try:
        addr = ip_address(text)
    except ValueError:
        raise _lookup_error(label, url, f"reply is not an IP address: {text[:40]!r}") from None
    if addr.version != _NAMES[family][2]:
        raise _lookup_error(label, url, f"reply {addr} is not an {label} address")
    return addr


def _lookup_error(label: str, url: str, reason: str) -> SpagateError:
    return SpagateError(
        f"cannot find this host's public {label} address via {url}: {reason}; "
        "pass --ip ADDR (or --ip source)"
    )


def public_ip(
    family: int, url: str, cache: Path | None = None, now: float | None = None
) -> IPv4Address | IPv6Address:
    """The cached address if younger than CACHE_TTL_S, else a fresh lookup (then cached)."""
    cache = cache_dir() if cache is None else cache
    now = time.time() if now is None else now
    path = cache / f"public-ip-{_NAMES[family][1]}"
    try:
        st = path.stat()
        # Only a cache file we wrote ourselves is trusted: the address in it is what we open.
        ours = st.st_uid == os.geteuid() and not st.st_mode & 0o022
        if ours and 0 <= now - st.st_mtime < CACHE_TTL_S:
            addr = ip_address(path.read_text().strip())
            if addr.version == _NAMES[family][2]:
                return addr
    except (OSError, ValueError):
        pass
    addr = fetch(family, url)
    try:  # a cache we cannot write only costs a lookup next time
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=path.name)
        with os.fdopen(fd, "w") as f:
            f.write(f"{addr}\n")
        os.replace(tmp, path)
    except OSError:
        pass
    return addr
