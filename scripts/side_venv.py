"""Side environments: a tool the project runs but never imports (MLServer for the benchmark,
Apache Airflow for the DAG check) gets a virtualenv of its own, installed with uv from a
hash-locked requirements file, never from the project's lock.

``ensure_venv(lock_file, venv)`` is idempotent: nothing happens when the venv's stamp already
holds the lock file's sha256; otherwise the venv is recreated and synced (``--require-hashes``).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["ensure_venv", "venv_python"]

_STAMP = ".altscore-lock-sha256"


def _uv() -> list[str]:
    uv = shutil.which("uv")
    return [uv] if uv else [sys.executable, "-m", "uv"]


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(lock_file: Path, venv: Path, python: str = "3.11") -> Path:
    """The virtualenv at ``venv`` with exactly ``lock_file`` installed (absolute path)."""
    venv = venv.resolve()
    stamp = venv / _STAMP
    lock_sha = hashlib.sha256(lock_file.read_bytes()).hexdigest()
    if venv_python(venv).is_file() and stamp.is_file() and stamp.read_text().strip() == lock_sha:
        return venv
    create = [*_uv(), "venv", "--quiet", "--clear", "--python", python, str(venv)]
    subprocess.run(create, check=True)
    sync = [
        *_uv(), "pip", "sync", "--quiet", "--require-hashes",
        "--python", str(venv_python(venv)), str(lock_file),
    ]  # fmt: skip
    subprocess.run(sync, check=True)
    stamp.write_text(lock_sha + "\n")
    return venv
