"""A real MinIO server for tests: a child process on a free loopback port, data in a temporary
folder, one bucket created through the S3 API (boto3).

``make minio`` installs the pinned server with ``go install``; ``make test`` depends on it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

ACCESS_KEY = "altscore-test"
SECRET_KEY = "altscore-test-secret"  # a throwaway server on 127.0.0.1, gone with the test
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary() -> str:
    found = shutil.which("minio")
    if found:
        return found
    gopath = subprocess.run(
        ["go", "env", "GOPATH"], capture_output=True, text=True, check=False
    ).stdout.strip()
    candidate = Path(gopath or Path.home() / "go") / "bin" / "minio"
    if candidate.is_file():
        return str(candidate)
    raise RuntimeError("the minio server is not installed: run `make minio`")


class MinioServer:
    """``with MinioServer() as s:`` a MinIO on ``s.endpoint`` with ``s.bucket`` created."""

    def __init__(self, bucket: str = "altscore") -> None:
        self.binary = _binary()
        self.port = _free_port()
        self.console_port = _free_port()
        self.bucket = bucket
        self._tmp = tempfile.TemporaryDirectory(prefix="altscore-minio-")
        self.workdir = Path(self._tmp.name)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage_options(self) -> dict[str, str]:
        """What Polars (object_store) needs to reach the bucket."""
        return {
            "aws_endpoint_url": self.endpoint,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            "aws_region": REGION,
            "aws_allow_http": "true",
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(str(o["Key"]) for o in listed.get("Contents", []))

    def start(self) -> MinioServer:
        env = {
            **os.environ,
            "MINIO_ROOT_USER": ACCESS_KEY,
            "MINIO_ROOT_PASSWORD": SECRET_KEY,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
        }
        log = (self.workdir / "minio.log").open("wb")
        command = [
            self.binary, "server", str(self.workdir / "data"), "--quiet",
            "--address", f"127.0.0.1:{self.port}",
            "--console-address", f"127.0.0.1:{self.console_port}",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"minio exited: {(self.workdir / 'minio.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=1):
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError("minio did not become ready in 60 s")
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self._tmp.cleanup()

    def __enter__(self) -> MinioServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
