"""The committed generated code is what scripts/gen_proto.sh makes from proto/ today."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import ROOT


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run(["bash", "scripts/gen_proto.sh", str(tmp_path)], cwd=ROOT, check=True)
    committed = ROOT / "scoring_server" / "grpc" / "_proto"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if p.name != "__pycache__")
    stale = [n for n in names if (tmp_path / n).read_bytes() != (committed / n).read_bytes()]
    assert not stale, f"stale generated code: {stale}; run `make proto`"
