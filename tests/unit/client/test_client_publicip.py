"""Public address lookup against an HTTP server started here on loopback (never the internet)."""

from __future__ import annotations

import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address, IPv6Address

import pytest

from spagate.client import publicip
from spagate.errors import SpagateError


class _Server(ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture
def http_server():
    """Start servers; returns a factory: (reply body, status, family) -> (url, request log)."""
    servers = []

    def start(body: str, status: int = 200, family: int = socket.AF_INET):
        hits: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        cls = type("S", (_Server,), {"address_family": family})
        srv = cls(("127.0.0.1" if family == socket.AF_INET else "::1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        host = "127.0.0.1" if family == socket.AF_INET else "[::1]"
        return f"http://{host}:{srv.server_address[1]}/ip?x=1", hits

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_ipv4_lookup_is_cached_for_a_minute(http_server, tmp_path):
    url, hits = http_server("203.0.113.5\n")
    assert publicip.public_ip(socket.AF_INET, url, tmp_path) == IPv4Address("203.0.113.5")
    assert hits == ["/ip?x=1"]
    cached = tmp_path / "public-ip-v4"
    assert cached.read_text() == "203.0.113.5\n"
    assert publicip.public_ip(socket.AF_INET, url, tmp_path) == IPv4Address("203.0.113.5")
    assert len(hits) == 1
    old = time.time() - 61
    os.utime(cached, (old, old))
    assert publicip.public_ip(socket.AF_INET, url, tmp_path) == IPv4Address("203.0.113.5")
    assert len(hits) == 2


def test_a_cache_file_others_could_have_written_is_ignored(http_server, tmp_path):
    url, hits = http_server("203.0.113.5\n")
    planted = tmp_path / "public-ip-v4"
    planted.write_text("198.51.100.66\n")  # someone else's address, planted in the cache
    os.chmod(planted, 0o666)
    assert publicip.public_ip(socket.AF_INET, url, tmp_path) == IPv4Address("203.0.113.5")
    assert len(hits) == 1
    assert planted.read_text() == "203.0.113.5\n"  # replaced by our own, mode 600
    assert planted.stat().st_mode & 0o777 == 0o600


def test_ipv6_lookup_separate_cache(http_server, tmp_path):
    url4, _ = http_server("203.0.113.5")
    url6, hits6 = http_server("2001:db8::5", family=socket.AF_INET6)
    assert publicip.public_ip(socket.AF_INET, url4, tmp_path) == IPv4Address("203.0.113.5")
    assert publicip.public_ip(socket.AF_INET6, url6, tmp_path) == IPv6Address("2001:db8::5")
    assert (tmp_path / "public-ip-v6").read_text().strip() == "2001:db8::5"
    assert publicip.public_ip(socket.AF_INET6, url6, tmp_path) == IPv6Address("2001:db8::5")
    assert len(hits6) == 1


def test_lookup_forces_the_family(http_server, tmp_path):
    url4, hits = http_server("203.0.113.5")
    with pytest.raises(SpagateError, match=r"public IPv6 address via .*; pass --ip ADDR"):
        publicip.public_ip(socket.AF_INET6, url4, tmp_path)
    assert hits == []


@pytest.mark.parametrize(
    "body, status, why",
    [
        ("<html>hello</html>", 200, "reply is not an IP address"),
        ("2001:db8::1", 200, "reply 2001:db8::1 is not an IPv4 address"),
        ("203.0.113.5", 503, "HTTP 503"),
    ],
)
def test_bad_replies(http_server, tmp_path, body, status, why):
    url, _ = http_server(body, status)
    with pytest.raises(SpagateError) as e:
        publicip.public_ip(socket.AF_INET, url, tmp_path)
    msg = str(e.value)
    assert why in msg and "--ip" in msg and url in msg and "\n" not in msg
    assert not (tmp_path / "public-ip-v4").exists()


def test_unreachable(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refuses
        with pytest.raises(SpagateError, match="Connection refused; pass --ip"):
            publicip.public_ip(socket.AF_INET, f"http://127.0.0.1:{port}/", tmp_path)


def test_not_a_url(tmp_path):
    with pytest.raises(SpagateError, match="not an http"):
        publicip.public_ip(socket.AF_INET, "file:///etc/passwd", tmp_path)
