"""A real ``redis-server`` for tests: a child process on a free loopback port, persistence off.

``make redis`` installs the Debian package; ``make test`` depends on it.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_cluster_port() -> int:
    """A free port for a cluster node: Redis also listens on port + 10000 (the cluster bus), so
    the port must be at most 55535 and both must be free (the kernel's ephemeral ports go up to
    60999: a plain free port failed one start in six)."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(20_000, 55_535)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free port pair (p, p + 10000) for a Redis cluster node")


def ping(port: int, timeout: float = 0.5) -> bool:
    """True when a Redis on 127.0.0.1:``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``start()`` / ``stop()`` (SIGTERM) / ``kill()`` (SIGKILL) / ``restart()`` (same port) /
    ``paused()`` (SIGSTOP ... SIGCONT). Data lives in memory only: a restart starts empty."""

    def __init__(
        self, port: int | None = None, workdir: Path | None = None, *, cluster: bool = False
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make redis`")
        self.binary = binary
        self.port = port or (_free_cluster_port() if cluster else _free_port())
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="altscore-redis-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.log_path = workdir / f"redis-{self.port}.log"
        self.cluster = cluster
        self.proc: subprocess.Popen[bytes] | None = None

    def version(self) -> str:
        """The server's version (``redis-server --version``)."""
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        word = next((w for w in out.split() if w.startswith("v=")), "v=?")
        return word.removeprefix("v=")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("redis-server is not running")
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"redis-server already runs on port {self.port}")
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.proc.returncode}:\n{self.log()}"
                )
            if ping(self.port):
                return self
            time.sleep(0.01)
        self.kill()
        raise TimeoutError(f"redis-server did not answer PING in {timeout} s:\n{self.log()}")

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a paused server cannot act on SIGTERM
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        self._end(signal.SIGKILL, 10.0)

    def restart(self) -> RedisServer:
        """Stop and start again on the same port (empty: persistence is off)."""
        self.stop()
        return self.start()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze the server (SIGSTOP): connections are accepted by the kernel, never answered."""
        pid = self.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RedisCluster:
    """A Redis Cluster of ``size`` masters (no replicas) on free loopback ports, each a
    ``RedisServer`` in cluster mode, joined with ``redis-cli --cluster create``."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.nodes = [RedisServer(workdir=workdir, cluster=True) for _ in range(size)]

    @property
    def urls(self) -> str:
        """The seed nodes, comma-separated (``ALTSCORE_REDIS_CLUSTER`` mode)."""
        return ",".join(n.url for n in self.nodes)

    def start(self, timeout: float = 30.0) -> RedisCluster:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed: run `make redis`")
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = subprocess.run(
                [cli, "-p", str(self.nodes[0].port), "cluster", "info"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            if "cluster_state:ok" in info:
                return self
            time.sleep(0.1)
        raise TimeoutError("the Redis Cluster did not reach cluster_state:ok")

    def close(self) -> None:
        for node in self.nodes:
            node.close()
