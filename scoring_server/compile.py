"""Compiling a booster with TL2cgen, cached by model hash; the compiler runs in a child process.

``compiled_library`` returns the shared library of a bundle's booster, from the first of:

1. the cache: ``<cache>/<key>.so``, with a sidecar recording how long the compile took;
2. the bundle: a training run compiles the library and ships it as ``compiled/<key>.so`` with
   its sha256 in ``compiled/<key>.json`` (:func:`ship_library`); a library whose hash matches is
   copied into the cache, so a host without a C compiler (the runtime image) serves the model;
3. a compile now, by ``python -m scoring_server.compile`` in a child process, so Treelite and
   TL2cgen are never imported by the serving process (they hold tens of MB for its lifetime).

``<key>`` is ``<booster sha256>-tl2cgen<version>-<machine>``: a library is reused only for the
same trees, the same code generator and the same architecture. A library is written under a
temporary name and renamed: concurrent servers never see half a file. The hash guards against a
truncated or corrupted download, not against someone who can write to the registry's artifact
store (they could change the booster as well): that store's access control does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from credit_core import ModelBundle, ModelRejectedError

__all__ = ["Compiled", "compiled_library", "library_key", "ship_library"]

log = logging.getLogger(__name__)

COMPILE_TIMEOUT_SECONDS = 600.0
SHIPPED = "compiled"
"""The bundle folder holding the library a training run compiled."""


@dataclass(frozen=True)
class Compiled:
    library: Path
    source: Literal["cache", "bundle", "compiled"]
    """Where the library came from: this host's cache, the bundle, or a compile now."""
    compile_seconds: float
    """How long the compile took (recorded beside the library when reused; NaN when unknown)."""

    @property
    def cache_hit(self) -> bool:
        return self.source == "cache"


def library_key(bundle: ModelBundle) -> str:
    """The name of ``bundle``'s library: its trees, the code generator, the architecture."""
    return f"{bundle.model_hash}-tl2cgen{metadata.version('tl2cgen')}-{platform.machine()}"


def _read_sidecar(sidecar: Path) -> dict[str, object]:
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _seconds(sidecar: Path) -> float:
    value = _read_sidecar(sidecar).get("compile_seconds")
    return float(value) if isinstance(value, int | float) else float("nan")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run_compiler(booster: Path, library: Path, parallel_units: int) -> float:
    """Compile ``booster`` into ``library`` in a child process; the seconds it took. Raises
    ``ModelRejectedError`` when the compile fails or times out."""
    started = time.perf_counter()
    command = [
        sys.executable, "-m", "scoring_server.compile", "--booster", str(booster),
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
    return time.perf_counter() - started


def _shipped(bundle: ModelBundle, key: str) -> tuple[Path, float] | None:
    """The bundle's library for ``key`` and its compile time, when it ships one whose sha256
    matches its record (a mismatch is logged and ignored)."""
    library = bundle.path / SHIPPED / f"{key}.so"
    if not library.is_file():
        return None
    record = _read_sidecar(library.with_suffix(".json"))
    expected, actual = record.get("sha256"), _sha256(library)
    if expected != actual:
        log.warning(
            "the bundle's compiled library %s has sha256 %s, its record says %s: not used",
            library.name,
            actual[:12],
            str(expected)[:12],
        )
        return None
    return library, _seconds(library.with_suffix(".json"))


def compiled_library(
    bundle: ModelBundle, cache_dir: Path, parallel_units: int, *, use_shipped: bool = True
) -> Compiled:
    """The library of ``bundle``'s booster: from the cache, the bundle (unless
    ``use_shipped`` is false), or compiled now. Raises ``ModelRejectedError`` when none is
    usable and the compile fails."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = library_key(bundle)
    library = cache_dir / f"{key}.so"
    sidecar = cache_dir / f"{key}.json"
    if library.is_file():
        seconds = _seconds(sidecar)
        log.info(
            "compiled library cache hit: %s (compile skipped, saved ~%.1f s)", library, seconds
        )
        return Compiled(library, "cache", seconds)
    shipped = _shipped(bundle, key) if use_shipped else None
    if shipped is not None:
        source, seconds = shipped
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache_dir)
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, library)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        sidecar.write_text(json.dumps({"compile_seconds": seconds}))
        log.info("compiled library taken from the bundle (sha256 checked): %s", library)
        return Compiled(library, "bundle", seconds)
    try:
        seconds = _run_compiler(bundle.booster_path, library, parallel_units)
    except ModelRejectedError as e:
        raise ModelRejectedError(
            f"{e} (and the bundle ships no library for {platform.machine()}: train it on a "
            "host with a C compiler, or serve from one)"
        ) from e
    sidecar.write_text(json.dumps({"compile_seconds": seconds}))
    log.info("compiled %s in %.1f s -> %s", bundle.booster_path.name, seconds, library)
    return Compiled(library, "compiled", seconds)


def ship_library(bundle: ModelBundle, parallel_units: int) -> Compiled:
    """Compile ``bundle``'s library into the bundle itself (``compiled/<key>.so`` and its
    sha256), so that servers without a compiler can load it. Raises ``ModelRejectedError``."""
    key = library_key(bundle)
    folder = bundle.path / SHIPPED
    folder.mkdir(exist_ok=True)
    library = folder / f"{key}.so"
    seconds = _run_compiler(bundle.booster_path, library, parallel_units)
    record = {"sha256": _sha256(library), "compile_seconds": seconds}
    library.with_suffix(".json").write_text(json.dumps(record, indent=2))
    return Compiled(library, "compiled", seconds)


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
