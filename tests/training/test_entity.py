"""Entity features from history tables: point in time, and the value of the alternative data."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from feature_kernels import load_spec, parse_spec
from tests.conftest import DATA_DIR, ROOT
from training.dataset import load_frame
from training.entity import entity_features
from training.run import train_and_register
from training.settings import TrainingSettings
from training.train import TrainParams

SUPERLENDER = DATA_DIR / "zindi_superlender"
APPS = SUPERLENDER / "trainperf.csv"


def _copy_superlender(tmp: Path) -> Path:
    folder = tmp / "superlender"
    shutil.copytree(SUPERLENDER, folder)
    return folder


def test_loan_closed_after_application_never_counts(tmp_path: Path) -> None:
    """Append, for every scored loan, an earlier-loan row that closed one second AFTER its
    approval (and a wild one much later): no application's features change."""
    spec = load_spec(ROOT / "specs" / "superlender.yaml")
    before = load_frame(APPS, spec)
    folder = _copy_superlender(tmp_path)
    prev = pl.read_csv(folder / "trainprevloans.csv", infer_schema_length=0)
    apps = pl.read_csv(APPS, infer_schema_length=0)
    approved = apps.get_column("approveddate").str.to_datetime("%Y-%m-%d %H:%M:%S%.f")
    leak = pl.DataFrame(
        {
            "customerid": apps.get_column("customerid"),
            "systemloanid": "999",
            "loannumber": "99",
            "approveddate": (approved - timedelta(days=40)).dt.strftime("%Y-%m-%d %H:%M:%S"),
            "creationdate": (approved - timedelta(days=40)).dt.strftime("%Y-%m-%d %H:%M:%S"),
            "loanamount": "999999.0",
            "totaldue": "9999999.0",
            "termdays": "90",
            "closeddate": (approved + timedelta(seconds=1)).dt.strftime("%Y-%m-%d %H:%M:%S"),
            "referredby": None,
            "firstduedate": (approved - timedelta(days=30)).dt.strftime("%Y-%m-%d %H:%M:%S"),
            "firstrepaiddate": (approved).dt.strftime("%Y-%m-%d %H:%M:%S"),
        }
    ).select(prev.columns)
    pl.concat([prev, leak]).write_csv(folder / "trainprevloans.csv")
    after = load_frame(folder / "trainperf.csv", spec)
    entity_cols = spec.entity_inputs()
    assert after.select(entity_cols).equals(before.select(entity_cols))
    # the same loans, closed one second BEFORE approval, do count: the test can fail
    early = leak.with_columns(
        closeddate=(approved - timedelta(seconds=1)).dt.strftime("%Y-%m-%d %H:%M:%S")
    )
    pl.concat([prev, early]).write_csv(folder / "trainprevloans.csv")
    counted = load_frame(folder / "trainperf.csv", spec)
    assert (counted.get_column("prev_loans") == before.get_column("prev_loans") + 1).all()


def test_aggregates_and_windows_by_hand(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text(
        "cid,t,amount,late\n"
        "a,2020-01-01,10,0\n"
        "a,2020-01-20,30,5\n"
        "a,2020-03-01,50,1\n"  # after the as_of of the first application
        "b,2019-06-01,7,2\n"
    )
    (tmp_path / "static.csv").write_text("cid,kind\na,gold\na,silver\nb,basic\n")
    inputs = {
        n: {"type": "number", "required": False, "source": "entity"}
        for n in ("n", "total", "avg", "lo", "hi", "late_rate", "n_30d")
    }
    inputs["kind"] = {"type": "categorical", "required": False, "source": "entity"}
    inputs["day"] = {"type": "number"}
    spec = parse_spec(
        {
            "name": "hand",
            "version": 1,
            "target": {"column": "y", "positive": [1]},
            "dates": ["day"],
            "inputs": inputs,
            "features": [{"name": "f", "op": "value", "input": "n", "reason": "R"}],
            "entity": {
                "name": "c",
                "key": "cid",
                "as_of": "day",
                "tables": {
                    "ev": {"file": "events.csv", "key": "cid", "time": "t", "dates": ["t"]},
                    "st": {"file": "static.csv", "key": "cid"},
                },
                "features": [
                    {"name": "n", "table": "ev", "agg": "count"},
                    {"name": "total", "table": "ev", "agg": "sum", "column": "amount"},
                    {"name": "avg", "table": "ev", "agg": "mean", "column": "amount"},
                    {"name": "lo", "table": "ev", "agg": "min", "column": "amount"},
                    {"name": "hi", "table": "ev", "agg": "max", "column": "amount"},
                    {"name": "late_rate", "table": "ev", "agg": "rate", "column": "late"},
                    {"name": "n_30d", "table": "ev", "agg": "count", "window_days": 45},
                    {"name": "kind", "table": "st", "agg": "attribute", "column": "kind"},
                ],
            },
        }
    )
    day = 18_322.0  # 2020-03-01 00:00 UTC: the 2020-03-01 event is not strictly before
    assert spec.entity is not None
    out = entity_features(
        pl.Series(["a", "b", "zz"]), pl.Series([day, day, day]), spec.entity, tmp_path
    )
    assert out.row(0) == (2.0, 40.0, 20.0, 10.0, 30.0, 0.5, 1.0, "gold")
    assert out.row(1) == (1.0, 7.0, 7.0, 7.0, 7.0, 1.0, 0.0, "basic")
    assert out.row(2) == (0.0, None, None, None, None, None, 0.0, None)


@pytest.mark.slow
def test_alternative_data_beats_application_fields(tmp_path: Path) -> None:
    """Acceptance: holdout AUC with entity features vs application fields only (same split)."""
    quiet = Console(stderr=True, quiet=True)
    aucs = {}
    for name in ("superlender_application", "superlender"):
        outcome = train_and_register(
            TrainingSettings(state_dir=tmp_path, model_name=f"altscore-{name}"),
            spec_path=ROOT / "specs" / f"{name}.yaml",
            data_path=APPS,
            params=TrainParams(),
            console=quiet,
        )
        aucs[name] = outcome.evaluation.auc
    assert aucs["superlender_application"] > 0.6
    assert aucs["superlender"] > aucs["superlender_application"] + 0.05
