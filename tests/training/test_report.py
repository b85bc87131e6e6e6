"""Tests for training.report."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import pytest

from training.evaluate import Evaluation, evaluate
from training.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_NAMES = ("roc.png", "ks.png", "calibration.png", "score_distribution.png")

Case = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]


@pytest.fixture
def case() -> Case:
    rng = np.random.default_rng(11)
    n = 400
    y = (rng.uniform(size=n) < 0.2).astype(np.int64)
    logit = -1.5 + 1.8 * y + rng.normal(0.0, 1.0, n)
    pd = 1.0 / (1.0 + np.exp(-logit))
    score = np.round(600.0 - 50.0 * logit)  # higher score = safer
    return y, pd, score


def _write(out_dir: Path, case: Case, title: str = "Model v1") -> tuple[list[Path], Evaluation]:
    y, pd, score = case
    ev = evaluate(y, pd)
    paths = write_report(
        out_dir,
        title=title,
        y_true=y,
        pd=pd,
        score=score,
        evaluation=ev,
        details={"model": "xgb <baseline>", "train_rows": 1234, "learning_rate": 0.05},
    )
    return paths, ev


def test_writes_all_files(tmp_path: Path, case: Case) -> None:
    out = tmp_path / "nested" / "report"
    paths, _ = _write(out, case)
    assert [p.name for p in paths] == ["report.html", *PNG_NAMES]
    assert all(p.parent == out for p in paths)
    for p in paths:
        assert p.is_file()
        assert p.stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)


def test_pngs_are_valid_images(tmp_path: Path, case: Case) -> None:
    paths, _ = _write(tmp_path, case)
    for p in paths[1:]:
        assert p.read_bytes()[:8] == PNG_MAGIC
        img = mpimg.imread(p)
        assert img.ndim == 3
        assert img.shape[0] > 100
        assert img.shape[1] > 100
        # Not a blank canvas: something was drawn.
        assert float(img[..., :3].std()) > 0.01


def test_html_contents(tmp_path: Path, case: Case) -> None:
    paths, ev = _write(tmp_path, case, title="Q3 <scorecard> & friends")
    text = paths[0].read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert f"{ev.auc:.4f}" in text
    assert f"{ev.ks:.4f}" in text
    assert f"{ev.gini:.4f}" in text
    for name in PNG_NAMES:
        assert f'src="{name}"' in text
    # Self-contained: no absolute paths or remote resources.
    assert str(tmp_path) not in text
    assert "http://" not in text
    assert "https://" not in text
    # Title and details are escaped.
    assert "Q3 &lt;scorecard&gt; &amp; friends" in text
    assert "<scorecard>" not in text
    assert "xgb &lt;baseline&gt;" in text
    assert "train_rows" in text
    assert "1234" in text
    assert "learning_rate" in text
    assert "0.05" in text
    # Every scalar metric is listed, and the calibration table has a row per bin.
    for key in ev.metrics():
        assert f"<td>{key}</td>" in text
    calibration_section = text.split("<h2>Calibration</h2>", 1)[1].split("<h2>", 1)[0]
    assert calibration_section.count("<tr>") == len(ev.calibration) + 1
    for b in ev.calibration:
        assert f'<td class="num">{b.count}</td>' in calibration_section


def test_no_figures_leak(tmp_path: Path, case: Case) -> None:
    before = set(plt.get_fignums())
    _write(tmp_path, case)
    assert set(plt.get_fignums()) == before


def test_overwrites_existing_report(tmp_path: Path, case: Case) -> None:
    _write(tmp_path, case, title="Run-AAA")
    paths, _ = _write(tmp_path, case, title="Run-BBB")
    text = paths[0].read_text(encoding="utf-8")
    assert "Run-BBB" in text
    assert "Run-AAA" not in text


def test_length_mismatch_raises(tmp_path: Path, case: Case) -> None:
    y, pd, score = case
    ev = evaluate(y, pd)
    with pytest.raises(ValueError, match="length"):
        write_report(
            tmp_path,
            title="t",
            y_true=y,
            pd=pd,
            score=score[:-1],
            evaluation=ev,
            details={},
        )
    assert not (tmp_path / "report.html").exists()


def test_non_finite_score_raises(tmp_path: Path, case: Case) -> None:
    y, pd, score = case
    score = score.copy()
    score[3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        write_report(
            tmp_path,
            title="t",
            y_true=y,
            pd=pd,
            score=score,
            evaluation=evaluate(y, pd),
            details={},
        )
