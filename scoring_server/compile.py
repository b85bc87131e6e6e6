"""Compiling a booster with TL2cgen, cached by model hash; the compiler runs in a child process.

``compiled_library`` returns the shared library of a bundle's booster: from the cache
(``<cache>/<model hash>-tl2cgen<version>.so``, with a sidecar recording how long the compile took)
or compiled now by ``python -m scoring_server.compile`` in a child process, so Treelite and TL2cgen
are never imported by the serving process (they hold tens of MB for the process's lifetime). A
library is written under a temporary name and renamed: concurrent servers never see half a file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from credit_core import ModelBundle, ModelRejectedError

__all__ = ["Compiled", "compiled_library"]

log = logging.getLogger(__name__)

COMPILE_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True)
class Compiled:
    library: Path
    cache_hit: bool
    compile_seconds: float
    """How long the compile took (recorded in the cache on a hit; NaN when unknown)."""


def _read_seconds(sidecar: Path) -> float:
    try:
        return float(json.loads(sidecar.read_text())["compile_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return float("nan")


def compiled_library(bundle: ModelBundle, cache_dir: Path, parallel_units: int) -> Compiled:
    """The library of ``bundle``'s booster (compiled now, or from the cache). Raises
    ``ModelRejectedError`` when the compile fails."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = f"{bundle.model_hash}-tl2cgen{metadata.version('tl2cgen')}"
    library = cache_dir / f"{key}.so"
    sidecar = cache_dir / f"{key}.json"
    if library.is_file():
        seconds = _read_seconds(sidecar)
        log.info(
            "compiled library cache hit: %s (compile skipped, saved ~%.1f s)", library, seconds
        )
        return Compiled(library, True, seconds)
    started = time.perf_counter()
    command = [
        sys.executable, "-m", "scoring_server.compile", "--booster", str(bundle.booster_path),
        "--out", str(library), "--parallel-units", str(parallel_units),
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise ModelRejectedError(f"compilation took longer than {e.timeout:g} s") from e
    if done.returncode != 0 or not library.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise ModelRejectedError(f"compilation failed: {' / '.join(tail) or done.returncode}")
    seconds = time.perf_counter() - started
    sidecar.write_text(json.dumps({"compile_seconds": seconds}))
    log.info("compiled %s in %.1f s -> %s", bundle.booster_path.name, seconds, library)
    return Compiled(library, False, seconds)


def _compile(booster: Path, out: Path, parallel_units: int) -> None:
    import tl2cgen
    import treelite

    model = treelite.frontend.load_xgboost_model(str(booster))
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        tl2cgen.export_lib(
            model,
            toolchain="gcc",
            libpath=tmp,
            params={"parallel_comp": parallel_units},
            nthread=os.cpu_count() or 1,
        )
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scoring_server.compile")
    parser.add_argument("--booster", type=Path, required=True, help="XGBoost model (JSON)")
    parser.add_argument("--out", type=Path, required=True, help="shared library to write")
    parser.add_argument("--parallel-units", type=int, default=8)
    ns = parser.parse_args(argv)
    try:
        _compile(ns.booster, ns.out, ns.parallel_units)
    except Exception as e:  # the parent reports it as the model's refusal
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
