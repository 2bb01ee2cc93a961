"""A throwaway etcd cluster for the fleet tests, the fleet benchmark and the demo.

`EtcdCluster(3)` starts three real members of Debian's etcd (`/usr/bin/etcd`) on loopback
ports, each with its own data directory under one temporary directory, optionally with TLS
from a throwaway CA made with the openssl CLI (client and peer traffic, client certificates
required). Members can be killed and restarted (quorum-loss tests); `close()` kills every
member and removes every file, also after a failure. Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from spagate.errors import SpagateError

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
HOST = "127.0.0.1"


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all held open while choosing, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)
    if proc.returncode != 0:
        raise SpagateError(f"lab etcd: {' '.join(argv[:3])}...: {proc.stderr.strip()[-400:]}")
    return proc


@dataclass(frozen=True)
class ClientTLS:
    """Files a client needs: the CA that signed the members' certificates, and a client
    certificate the members accept."""

    ca: str
    cert: str
    key: str


class ThrowawayCA:
    """A CA and the certificates it signs, made with the openssl CLI in `directory`."""

    def __init__(self, directory: Path, name: str = "spagate-lab-ca"):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key, self.ca_cert = self.dir / f"{name}.key", self.dir / f"{name}.crt"
        _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", str(self.ca_key),
              "-out", str(self.ca_cert),
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"])  # fmt: skip

    def issue(self, name: str, server: bool) -> tuple[str, str]:
        """(cert, key) for `name`: a server certificate for 127.0.0.1/localhost (also usable
        as a client, as etcd peers need), or a client certificate."""
        key, csr, cert = (self.dir / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        ext = self.dir / f"{name}.ext"
        usage = "serverAuth,clientAuth" if server else "clientAuth"
        lines = [f"extendedKeyUsage={usage}", "keyUsage=critical,digitalSignature"]
        if server:
            lines.append(f"subjectAltName=IP:{HOST},DNS:localhost")
        ext.write_text("\n".join(lines) + "\n")
        _run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr)])  # fmt: skip
        _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert),
              "-CAkey", str(self.ca_key), "-CAcreateserial", "-days", "2",
              "-extfile", str(ext), "-out", str(cert)])  # fmt: skip
        return str(cert), str(key)

    def client(self, name: str = "client") -> ClientTLS:
        cert, key = self.issue(name, server=False)
        return ClientTLS(str(self.ca_cert), cert, key)


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class EtcdCluster:
    """`with EtcdCluster(3, tls=True) as c:` ... `c.endpoints`, `c.kill(0)`, `c.restart(0)`."""

    size: int = 3
    tls: bool = False
    # etcd's own default is 10 minutes; None keeps it (what production has).
    progress_notify_interval: str | None = None
    token: str = field(default_factory=lambda: f"sgetcd{os.getpid() % 100000}{os.urandom(2).hex()}")
    base_dir: str | None = None  # default: a fresh temporary directory, removed by close()
    # Where the members listen, and an argv prefix to run them and etcdctl there (e.g. inside
    # a lab namespace: ("nsenter", "--net=/run/netns/NS"), with host that namespace's address).
    host: str = HOST
    wrap: tuple[str, ...] = ()
    members: list[EtcdMember] = field(default_factory=list)
    ca: ThrowawayCA | None = None
    client_tls: ClientTLS | None = None
    _server_cert: tuple[str, str] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> EtcdCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, timeout: float = 30.0) -> None:
        if not os.access(ETCD, os.X_OK):
            raise SpagateError(f"lab etcd: {ETCD} is missing (apt-get install etcd-server)")
        self.root = Path(self.base_dir or tempfile.mkdtemp(prefix=f"{self.token}-"))
        if self.tls:
            self.ca = ThrowawayCA(self.root / "pki")
            self._server_cert = self.ca.issue("member", server=True)
            self.client_tls = self.ca.client("spagate-gate")
        ports = _free_ports(2 * self.size)
        for i in range(self.size):
            name = f"{self.token}-m{i}"
            client, peer = ports[2 * i], ports[2 * i + 1]
            self.members.append(
                EtcdMember(name, client, peer, self.root / name, self.root / f"{name}.log")
            )
        for i in range(self.size):
            self._spawn(i, state="new")
        self.wait_healthy(timeout=timeout)

    def close(self) -> None:
        for m in self.members:
            self._stop(m, signal.SIGKILL)
        root = getattr(self, "root", None)
        if root is not None and self.base_dir is None:
            shutil.rmtree(root, ignore_errors=True)

    # --- members -----------------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def url(self, i: int) -> str:
        return f"{self.scheme}://{self.host}:{self.members[i].client_port}"

    @property
    def endpoints(self) -> list[str]:
        return [self.url(i) for i in range(len(self.members))]

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}={self.scheme}://{self.host}:{m.peer_port}" for m in self.members)

    def _spawn(self, i: int, state: str) -> None:
        m = self.members[i]
        peer = f"{self.scheme}://{self.host}:{m.peer_port}"
        argv = [
            *self.wrap,
            ETCD, "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", self.url(i), "--advertise-client-urls", self.url(i),
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self._initial_cluster(), "--initial-cluster-token", self.token,
            "--initial-cluster-state", state, "--logger", "zap", "--log-level", "warn",
        ]  # fmt: skip
        if self.progress_notify_interval:
            argv += ["--experimental-watch-progress-notify-interval", self.progress_notify_interval]
        if self.tls:
            assert self.ca is not None and self._server_cert is not None
            cert, key = self._server_cert
            ca = str(self.ca.ca_cert)
            argv += ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca,
                     "--client-cert-auth", "--peer-cert-file", cert, "--peer-key-file", key,
                     "--peer-trusted-ca-file", ca, "--peer-client-cert-auth"]  # fmt: skip
        log = open(m.log_path, "ab")  # noqa: SIM115 (the child keeps it)
        try:
            m.proc = subprocess.Popen(
                argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        finally:
            log.close()

    def _stop(self, m: EtcdMember, sig: int) -> None:
        if m.proc is None:
            return
        if m.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(m.proc.pid, sig)
            try:
                m.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(m.proc.pid, signal.SIGKILL)
                m.proc.wait()
        m.proc = None

    def kill(self, i: int) -> None:
        """SIGKILL member i (its data directory stays, as after a crash)."""
        self._stop(self.members[i], signal.SIGKILL)

    def restart(self, i: int, wait: bool = True, timeout: float = 30.0) -> None:
        """Start a killed member again from its data directory."""
        if self.members[i].running:
            raise SpagateError(f"lab etcd: member {i} is running")
        self._spawn(i, state="existing")
        if wait:
            self.wait_healthy(timeout=timeout)

    def running(self) -> list[int]:
        return [i for i, m in enumerate(self.members) if m.running]

    def log(self, i: int) -> str:
        return self.members[i].log_path.read_text(errors="replace")

    # --- health and etcdctl ------------------------------------------------------------------

    def etcdctl(
        self,
        *args: str,
        user: str | None = None,
        endpoints: list[str] | None = None,
        check: bool = True,
        timeout: float = 20,
    ) -> subprocess.CompletedProcess:
        """Run etcdctl (v3 API) against the running members; user is "name:password"."""
        eps = endpoints or [self.url(i) for i in self.running()]
        argv = [*self.wrap, ETCDCTL, "--endpoints", ",".join(eps), "--dial-timeout", "2s",
                "--command-timeout", "5s"]  # fmt: skip
        if self.client_tls:
            t = self.client_tls
            argv += ["--cacert", t.ca, "--cert", t.cert, "--key", t.key]
        if user:
            argv += ["--user", user]
        proc = subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "ETCDCTL_API": "3"},
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise SpagateError(f"etcdctl {' '.join(args)}: {proc.stderr.strip()[-400:]}")
        return proc

    def healthy(self, i: int) -> bool:
        """Member i answers a linearizable read (so it has a leader and a quorum)."""
        if not self.members[i].running:
            return False
        proc = self.etcdctl("endpoint", "health", endpoints=[self.url(i)], check=False)
        return proc.returncode == 0 and "is healthy" in (proc.stdout + proc.stderr)

    def wait_healthy(self, timeout: float = 30.0, members: list[int] | None = None) -> None:
        end = time.monotonic() + timeout
        todo = list(self.running() if members is None else members)
        while todo:
            for i in list(todo):
                if not self.members[i].running:
                    raise SpagateError(f"lab etcd: member {i} exited:\n{self.log(i)[-2000:]}")
                if self.healthy(i):
                    todo.remove(i)
            if not todo:
                return
            if time.monotonic() > end:
                raise SpagateError(f"lab etcd: members {todo} not healthy after {timeout:g}s")
            time.sleep(0.2)

    def leader(self) -> int:
        """Index of the member that leads the cluster now."""
        import json

        out = self.etcdctl("endpoint", "status", "--write-out=json").stdout
        rows = json.loads(out)
        lead = rows[0]["Status"]["leader"]
        for row in rows:
            if row["Status"]["header"]["member_id"] == lead:
                return self.endpoints.index(row["Endpoint"])
        raise SpagateError("lab etcd: no leader")

    def enable_auth(self, root_password: str) -> None:
        """Create root (role root) and turn authentication on for the whole cluster."""
        self.etcdctl("user", "add", f"root:{root_password}")
        self.etcdctl("user", "grant-role", "root", "root")
        self.etcdctl("auth", "enable")

    def add_user(self, root: str, name: str, password: str, role: str,
                 grants: list[tuple[str, str]]) -> None:  # fmt: skip
        """A user with one role; grants are (permission, prefix): permission read, write or
        readwrite, on every key under prefix."""
        self.etcdctl("role", "add", role, user=root)
        for perm, prefix in grants:
            self.etcdctl("role", "grant-permission", "--prefix=true", role, perm, prefix,
                         user=root)  # fmt: skip
        self.etcdctl("user", "add", f"{name}:{password}", user=root)
        self.etcdctl("user", "grant-role", name, role, user=root)
