"""What the serving workers serve: the control process writes it, the workers follow it.

The control process is the only one that talks to the registry (MLflow is ~190 MB of imports);
it downloads, compiles and gates each version, then publishes the result in one small JSON file
(written to a temp name and renamed, so a reader never sees half of it). Workers poll the file's
stat and load what changed from the local bundle directory and the compiled-library cache.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from credit_core import Routing

__all__ = ["ManifestFollower", "ServingManifest", "Variant"]


@dataclass(frozen=True, slots=True)
class Variant:
    """One gated model version and where its bundle lies on local disk."""

    version: str
    bundle_dir: str


@dataclass(frozen=True, slots=True)
class ServingManifest:
    model_name: str
    generation: int
    champion: Variant | None
    challenger: Variant | None
    routing: Routing

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f)
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> ServingManifest:
        raw = json.loads(path.read_text())
        return cls(
            model_name=str(raw["model_name"]),
            generation=int(raw["generation"]),
            champion=Variant(**raw["champion"]) if raw["champion"] else None,
            challenger=Variant(**raw["challenger"]) if raw["challenger"] else None,
            routing=Routing(**raw["routing"]),
        )


class ManifestFollower:
    """Tells a worker when the manifest changed (one ``stat`` per poll)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None

    def changed(self) -> ServingManifest | None:
        """The manifest if it changed since the last call, else None (also when absent)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._seen:
            return None
        manifest = ServingManifest.read(self.path)
        self._seen = key
        return manifest
