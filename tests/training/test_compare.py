"""Champion/challenger comparison: the statistics against independent computations and hand
values, the promotion rule, and the whole loop on Give Me Some Credit with two real XGBoost
models in a real MLflow store (shadow predictions, outcomes from a CSV, compare, promote)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
import xgboost as xgb
from rich.console import Console
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score

from credit_core import RegistryError
from credit_core.evaluation import (
    MATCHED_SCHEMA,
    EvaluationLog,
    PredictionRecord,
    matched,
)
from credit_core.registry import ARCHIVED, CHALLENGER, CHAMPION, MlflowRegistry, ModelVersionRef
from feature_kernels import FeaturePipeline, load_spec
from tests.conftest import GMSC_DATA, GMSC_SPEC, ROOT
from training.__main__ import main
from training.compare import (
    Comparison,
    EvidenceRules,
    auc_delong,
    compare,
    evidence_failures,
    ks_statistic,
    midranks,
)
from training.dataset import labels, load_frame
from training.run import train_and_register
from training.settings import TrainingSettings
from training.train import TrainParams

# --- statistics --------------------------------------------------------------------------


def _random_case(seed: int, n: int = 600) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.15
    p = np.clip(0.25 * y + rng.uniform(0, 0.75, n), 0, 1).round(2)  # rounded: ties occur
    return y, p


def _delong_by_definition(
    y: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """DeLong's covariance straight from the definition: structural components over all
    (default, non-default) pairs, psi = 1 if ordered right, 1/2 on a tie."""
    v10, v01 = [], []
    for s in scores:
        x, z = s[y], s[~y]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    return np.asarray(
        np.atleast_2d(np.cov(v10)) / y.sum() + np.atleast_2d(np.cov(v01)) / (~y).sum()
    )


def test_midranks() -> None:
    assert midranks([0.3, 0.1, 0.3, 0.2, 0.3]).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_sklearn_and_ks_equals_scipy(seed: int) -> None:
    y, p = _random_case(seed)
    auc, _ = auc_delong(y, p)
    assert auc[0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert ks_statistic(y, p) == pytest.approx(ks_2samp(p[y], p[~y]).statistic, abs=1e-12)


def test_delong_on_a_hand_computed_case() -> None:
    # defaults score A = (0.8, 0.6), B = (0.9, 0.5); non-defaults A = (0.7, 0.2), B = (0.5, 0.1).
    # A: V10 = (1, 1/2), V01 = (1/2, 1) -> AUC 3/4, var = 1/8 / 2 + 1/8 / 2 = 1/8.
    # B: V10 = (1, 3/4) (0.5 ties 0.5), V01 = (3/4, 1) -> AUC 7/8, var = 1/32 / 2 * 2 = 1/32.
    # cov(A, B) = (1/16) / 2 + (1/16) / 2 = 1/16 -> var(B - A) = 1/8 + 1/32 - 1/8 = 1/32.
    y = np.array([1, 1, 0, 0])
    scores = np.array([[0.8, 0.6, 0.7, 0.2], [0.9, 0.5, 0.5, 0.1]])
    auc, cov = auc_delong(y, scores)
    assert auc.tolist() == [0.75, 0.875]
    assert cov.tolist() == [[1 / 8, 1 / 16], [1 / 16, 1 / 32]]


@pytest.mark.parametrize("seed", [3, 4])
def test_delong_covariance_equals_the_definition(seed: int) -> None:
    y, p = _random_case(seed, n=400)
    rng = np.random.default_rng(seed + 100)
    q = np.clip(p + rng.normal(0, 0.2, len(p)), 0, 1).round(3)
    scores = np.vstack([p, q])
    _, cov = auc_delong(y, scores)
    np.testing.assert_allclose(cov, _delong_by_definition(y, scores), rtol=1e-12, atol=1e-15)


def test_delong_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both"):
        auc_delong(np.array([1, 1]), np.array([0.2, 0.3]))
    _, cov = auc_delong(np.array([1, 0, 0]), np.array([0.9, 0.1, 0.2]))
    assert np.isnan(cov).all()  # one default: no variance


def _frame(
    y: npt.NDArray[np.bool_],
    pds: dict[str, npt.NDArray[np.float64]],
    *,
    paired: bool = True,
    versions: dict[str, str] | None = None,
) -> pl.DataFrame:
    """A matched frame; ``paired`` = shadow mode (both variants on every request), otherwise
    each variant gets its own requests (routing)."""
    versions = versions or {"champion": "1", "challenger": "2"}
    parts = []
    for variant, p in pds.items():
        prefix = "r" if paired else variant
        parts.append(
            pl.DataFrame(
                {
                    "request_id": [f"{prefix}{i}" for i in range(len(y))],
                    "applicant_id": "",
                    "variant": variant,
                    "model_name": "m",
                    "model_version": versions[variant],
                    "pd": p,
                    "served": variant == "champion",
                    "ts": np.arange(len(y), dtype=np.float64),
                    "defaulted": y,
                    "matched_by": "request_id",
                    "corrected_by": "",
                }
            )
        )
    return pl.concat(parts).cast(MATCHED_SCHEMA)


def _pair(
    seed: int, n: int, champion_signal: float, challenger_signal: float
) -> tuple[npt.NDArray[np.bool_], dict[str, npt.NDArray[np.float64]]]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.1
    base = rng.normal(0, 1, n)
    pds = {}
    for variant, signal in (("champion", champion_signal), ("challenger", challenger_signal)):
        margin = signal * y + 0.7 * base + 0.7 * rng.normal(0, 1, n) - 2.5
        pds[variant] = 1 / (1 + np.exp(-margin))
    return y, pds


def test_compare_paired_matches_direct_computation() -> None:
    y, pds = _pair(0, 2000, 1.5, 1.0)
    c = compare(_frame(y, pds), model_name="m", n_boot=300, seed=7)
    d = c.difference
    assert d is not None
    assert d.paired
    assert d.n_champion == d.n_challenger == 2000
    auc, cov = auc_delong(y, np.vstack([pds["champion"], pds["challenger"]]))
    assert d.champion_auc == pytest.approx(roc_auc_score(y, pds["champion"]))
    assert d.difference == pytest.approx(auc[1] - auc[0])
    se = math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert d.se == pytest.approx(se)
    assert d.p_value == pytest.approx(math.erfc(abs(d.difference / se) / math.sqrt(2)))
    assert d.ci.low == pytest.approx(d.difference - 1.959963984540054 * se)
    assert d.ci.high < 0
    assert d.p_value < 1e-3
    for variant in ("champion", "challenger"):
        s = c.variants[variant]
        assert s.n == 2000
        assert s.positives == int(y.sum())
        assert s.brier == pytest.approx(float(((pds[variant] - y) ** 2).mean()))
        assert s.brier_ci is not None
        assert s.brier_ci.low < s.brier < s.brier_ci.high
        assert s.ks_ci is not None
        assert s.ks is not None
        assert s.ks_ci.low <= s.ks <= s.ks_ci.high
        assert s.auc_ci is not None
        assert s.auc_se is not None
        assert s.auc_ci.high - s.auc_ci.low == pytest.approx(2 * 1.959963984540054 * s.auc_se)
    assert c.paired is not None
    assert c.paired["challenger"].served == 0
    again = compare(_frame(y, pds), model_name="m", n_boot=300, seed=7)
    assert again == c  # the bootstrap has a fixed seed
    other = compare(_frame(y, pds), model_name="m", n_boot=300, seed=8)
    assert other.variants["champion"].brier_ci != c.variants["champion"].brier_ci


def test_compare_unpaired_when_variants_see_different_requests() -> None:
    y, pds = _pair(1, 1500, 1.5, 1.5)
    c = compare(_frame(y, pds, paired=False), model_name="m", n_boot=100)
    d = c.difference
    assert d is not None
    assert not d.paired
    assert c.paired is None
    champ = c.variants["champion"]
    chall = c.variants["challenger"]
    assert champ.auc_se is not None
    assert chall.auc_se is not None
    assert d.se == pytest.approx(math.hypot(champ.auc_se, chall.auc_se))


def test_identical_variants_have_no_difference() -> None:
    y, pds = _pair(2, 500, 1.5, 1.5)
    pds["challenger"] = pds["champion"]
    d = compare(_frame(y, pds), model_name="m", n_boot=50).difference
    assert d is not None
    assert (d.difference, d.se, d.p_value) == (0.0, 0.0, 1.0)


def test_compare_keeps_only_the_given_versions() -> None:
    y, pds = _pair(3, 600, 1.5, 1.0)
    old = _frame(y, pds, versions={"champion": "1", "challenger": "2"})
    new = _frame(y, pds, versions={"champion": "2", "challenger": "3"}).with_columns(
        request_id=pl.lit("new-") + pl.col("request_id")
    )
    c = compare(
        pl.concat([old, new]),
        model_name="m",
        champion_version="2",
        challenger_version="3",
        n_boot=50,
    )
    assert c.variants["champion"].versions == ("2",)
    assert c.variants["champion"].n == 600
    unfiltered = compare(pl.concat([old, new]), model_name="m", n_boot=50)
    assert unfiltered.variants["champion"].versions == ("1", "2")


def _rules_fired(c: Comparison, **rules: float) -> list[str]:
    return [r.rule for r in evidence_failures(c, EvidenceRules(**rules))]  # type: ignore[arg-type]


def test_evidence_rules() -> None:
    worse = compare(_frame(*_pair(4, 3000, 2.0, 1.0)), model_name="m", n_boot=50)
    assert _rules_fired(worse) == ["significantly-worse", "not-better"]
    better = compare(_frame(*_pair(5, 3000, 1.0, 2.0)), model_name="m", n_boot=50)
    assert _rules_fired(better) == []
    few = compare(_frame(*_pair(6, 150, 1.0, 2.0)), model_name="m", n_boot=50)
    assert _rules_fired(few) == [
        "min-outcomes",
        "min-positives",
        "min-outcomes",
        "min-positives",
    ]
    assert _rules_fired(few, min_outcomes=100, min_positives=5) == []
    # slightly worse, not significantly (noise seed 1: -0.0025, p 0.16): refused only by the
    # at-least-as-good rule, which a tolerance relaxes
    y, pds = _pair(7, 2000, 1.5, 1.5)
    pds["challenger"] = np.clip(
        pds["champion"] + np.random.default_rng(1).normal(0, 0.01, 2000), 0, 1
    )
    close = compare(_frame(y, pds), model_name="m", n_boot=50)
    d = close.difference
    assert d is not None
    assert d.difference < 0
    assert d.p_value > 0.05
    assert _rules_fired(close) == ["not-better"]
    assert _rules_fired(close, max_auc_drop=0.01) == []
    one_class = compare(
        _frame(np.zeros(300, dtype=bool), pds=_pair(8, 300, 1, 1)[1]), model_name="m"
    )
    assert "no-auc-test" in _rules_fired(one_class)
    assert one_class.variants["champion"].auc is None
    json.dumps(one_class.to_dict(), allow_nan=False)  # JSON-safe without a class


# --- end to end on Give Me Some Credit ---------------------------------------------------

MODEL = "altscore-e2e"
TWO_FEATURE_SPEC = """\
name: gmsc_two_features
version: 1
description: Give Me Some Credit on age and debt ratio only (deliberately weak)
target:
  column: SeriousDlqin2yrs
  positive: [1]
inputs:
  age:
    type: integer
    range: [18, 120]
    missing_codes: [0]
  debt_ratio:
    column: DebtRatio
    type: number
    range: [0, 10000000]
features:
  - name: age
    op: value
    input: age
    reason: Applicant age is in a higher-risk band
  - name: debt_ratio_log
    op: log1p
    input: debt_ratio
    reason: Debt payments are high relative to income
"""


@dataclass
class Gmsc:
    state: Path
    registry: MlflowRegistry
    log: EvaluationLog
    good_run: str
    ids: list[str]
    y: npt.NDArray[np.int8]
    pd: dict[str, npt.NDArray[np.float64]]
    """PDs of the scoring rows by registered version."""


def _score(
    registry: MlflowRegistry, version: str, rows: Path, tmp: Path
) -> npt.NDArray[np.float64]:
    """What a server answers: the registered bundle's spec builds the features, its booster
    predicts."""
    mv = registry.client.get_model_version(MODEL, version)
    ref = ModelVersionRef(MODEL, version, str(mv.source), mv.run_id)
    bundle = registry.download(ref, tmp / f"v{version}")
    spec = load_spec(bundle / "spec.yaml")
    x = FeaturePipeline(spec).transform_frame(load_frame(rows, spec))
    booster = xgb.Booster(model_file=str(bundle / "booster.json"))
    return np.asarray(booster.inplace_predict(x, missing=np.nan), dtype=np.float64)


@pytest.fixture(scope="module")
def gmsc(tmp_path_factory: pytest.TempPathFactory) -> Gmsc:
    """A good model (full GMSC spec) as champion and a weak one (two features) as challenger,
    trained on 12,000 GMSC rows; the next 3,000 rows are the applicants scored in shadow."""
    tmp = tmp_path_factory.mktemp("gmsc-e2e")
    frame = pl.read_csv(GMSC_DATA, null_values=["NA"]).rename({"": "row"})
    frame[:12_000].write_csv(tmp / "train.csv")
    scoring = frame[12_000:15_000]
    scoring.write_csv(tmp / "score.csv")
    weak_spec = tmp / "two_features.yaml"
    weak_spec.write_text(TWO_FEATURE_SPEC)

    settings = TrainingSettings(state_dir=tmp / "state", model_name=MODEL, min_auc=0.55)
    quiet = Console(stderr=True, quiet=True)
    params = TrainParams(eta=0.1, max_rounds=80, early_stopping_rounds=20)
    good = train_and_register(
        settings, spec_path=GMSC_SPEC, data_path=tmp / "train.csv", params=params, console=quiet
    )
    weak = train_and_register(
        settings,
        spec_path=weak_spec,
        data_path=tmp / "train.csv",
        params=params,
        champion="always",
        alias=CHALLENGER,  # the training CLI's --alias challenger
        console=quiet,
    )
    assert good.champion_set
    assert weak.champion_set
    registry = settings.registry()
    assert registry.get_alias(MODEL, CHAMPION).version == good.version.version  # type: ignore[union-attr]
    assert registry.get_alias(MODEL, CHALLENGER).version == weak.version.version  # type: ignore[union-attr]
    spec = load_spec(GMSC_SPEC)
    y = labels(load_frame(tmp / "score.csv", spec), spec)
    pd = {
        v.version.version: _score(registry, v.version.version, tmp / "score.csv", tmp)
        for v in (good, weak)
    }
    return Gmsc(
        state=tmp / "state",
        registry=registry,
        log=EvaluationLog(settings.evaluation_path()),
        good_run=good.run_id,
        ids=[str(i) for i in scoring["row"].to_list()],
        y=y,
        pd=pd,
    )


def _log_shadow(g: Gmsc, prefix: str, champion: str, challenger: str, ts: float) -> None:
    """The server in shadow mode: every applicant scored by both, the champion answers."""
    with g.log.predictions_writer() as w:
        for i, row in enumerate(g.ids):
            t = ts + i * 0.001
            w.write(
                [
                    PredictionRecord(
                        t,
                        f"{prefix}-{row}",
                        f"gmsc-{row}",
                        MODEL,
                        "champion",
                        champion,
                        float(g.pd[champion][i]),
                        True,
                    ),
                    PredictionRecord(
                        t + 0.0001,
                        f"{prefix}-{row}",
                        f"gmsc-{row}",
                        MODEL,
                        "challenger",
                        challenger,
                        float(g.pd[challenger][i]),
                        False,
                    ),
                ]
            )


def _cli(args: list[str], g: Gmsc, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    fast = ["--n-boot", "300"] if args[0] in ("compare", "promote") else []
    code = main([*args, *fast, "--state-dir", str(g.state), "--model-name", MODEL])
    out = capsys.readouterr()
    return code, out.out, out.err


def _aliases(g: Gmsc) -> dict[str, str]:
    return {k: str(v) for k, v in g.registry.client.get_registered_model(MODEL).aliases.items()}


def test_gmsc_compare_and_promote_end_to_end(
    gmsc: Gmsc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    g = gmsc
    good, weak = sorted(g.pd, key=int)
    _log_shadow(g, "a", champion=good, challenger=weak, ts=1.70e9)

    # outcomes: half by request id, half by applicant id observed before the next wave
    labels_csv = tmp_path / "labels.csv"
    lines = ["request_id,applicant_id,defaulted,observed_at"]
    for i, row in enumerate(g.ids):
        if i % 2:
            lines.append(f"a-{row},,{int(g.y[i])},")
        else:
            lines.append(f",gmsc-{row},{'true' if g.y[i] else 'false'},2023-11-20T00:00:00Z")
    labels_csv.write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "outcomes",
            "--file",
            str(labels_csv),
            "--state-dir",
            str(g.state),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"recorded {len(g.ids)} outcomes" in done.stdout

    m = matched(g.log, MODEL)
    assert m.height == 2 * len(g.ids)
    assert m["matched_by"].value_counts().sort("matched_by")["count"].to_list() == [3000, 3000]

    code, out, _ = _cli(["compare", "--json"], g, capsys)
    assert code == 0
    report = json.loads(out)
    d = report["difference"]
    assert d["paired"]
    assert d["n_champion"] == 3000
    assert d["champion_auc"] == pytest.approx(roc_auc_score(g.y, g.pd[good]))
    assert d["challenger_auc"] == pytest.approx(roc_auc_score(g.y, g.pd[weak]))
    assert d["ci"]["high"] < 0
    assert d["p_value"] < 1e-6
    for variant, version in (("champion", good), ("challenger", weak)):
        s = report["variants"][variant]
        assert s["versions"] == [version]
        assert s["n"] == 3000
        assert s["positives"] == int(g.y.sum())
    with capsys.disabled():  # the measured figures, for the issue note
        print("\nGMSC e2e:", json.dumps(report["difference"]), json.dumps(report["variants"]))

    code, table, _ = _cli(["compare"], g, capsys)
    assert code == 0
    assert "AUC challenger - champion" in table
    assert "paired DeLong" in table

    before = _aliases(g)
    code, out, err = _cli(["promote"], g, capsys)
    assert code == 1
    assert "refused (significantly-worse,not-better)" in out
    assert _aliases(g) == before == {CHAMPION: good, CHALLENGER: weak}

    code, out, err = _cli(["promote", "--force"], g, capsys)
    assert code == 0, err
    assert "FORCED" in err
    assert "[forced]" in out
    assert _aliases(g) == {CHAMPION: weak, ARCHIVED: good}
    tags = g.registry.client.get_model_version(MODEL, weak).tags
    assert tags["promotion_forced"] == "true"
    assert tags["promotion_overrode"] == "significantly-worse,not-better"

    code, out, err = _cli(["promote"], g, capsys)
    assert code == 2
    assert "no 'challenger' alias" in err

    # a better challenger: the good model registered again, scored in shadow of the weak one
    again = g.registry.register(MODEL, g.good_run, "model", tags={})
    g.registry.set_alias(MODEL, CHALLENGER, again.version)
    g.pd[again.version] = g.pd[good]
    _log_shadow(g, "b", champion=weak, challenger=again.version, ts=1.71e9)
    wave_b = tmp_path / "labels-b.parquet"
    pl.DataFrame({"request_id": [f"b-{r}" for r in g.ids], "defaulted": g.y}).write_parquet(wave_b)
    assert _cli(["outcomes", "--file", str(wave_b)], g, capsys)[0] == 0

    code, out, _ = _cli(["compare", "--json"], g, capsys)
    report_b = json.loads(out)
    with capsys.disabled():
        print("\nGMSC e2e, better challenger:", json.dumps(report_b["difference"]))
    assert report_b["variants"]["champion"]["versions"] == [weak]  # wave a is not counted
    assert report_b["variants"]["challenger"]["versions"] == [again.version]
    assert report_b["difference"]["n_champion"] == 3000
    assert report_b["difference"]["ci"]["low"] > 0

    code, out, err = _cli(["promote"], g, capsys)
    assert code == 0, err
    assert "FORCED" not in err
    assert _aliases(g) == {CHAMPION: again.version, ARCHIVED: weak}
    assert g.registry.client.get_model_version(MODEL, again.version).tags["promotion_forced"] == (
        "false"
    )


def test_registry_promote_moves_aliases_without_a_gap(gmsc: Gmsc) -> None:
    """Alias moves on the real store: errors first, then repeated promotions while another
    thread watches the champion alias as a server would."""
    reg, name = gmsc.registry, "altscore-e2e-registry"
    versions = [reg.register(name, gmsc.good_run, "model", tags={}).version for _ in range(3)]
    with pytest.raises(RegistryError, match="no 'challenger' alias"):
        reg.promote(name)
    reg.set_alias(name, CHALLENGER, versions[0])
    with pytest.raises(RegistryError, match="not 9 as expected"):
        reg.promote(name, expected_version="9")
    first = reg.promote(name, expected_version=versions[0])  # no champion yet
    assert first.archived is None
    assert first.champion.version == versions[0]
    assert reg.get_alias(name, CHALLENGER) is None
    assert reg.get_alias(name, ARCHIVED) is None
    reg.set_alias(name, CHALLENGER, versions[0])
    with pytest.raises(RegistryError, match="already the champion"):
        reg.promote(name)
    reg.delete_alias(name, CHALLENGER)
    reg.delete_alias(name, CHALLENGER)  # absent: nothing happens

    seen: list[str | None] = []
    stop = threading.Event()

    def watch() -> None:
        watcher = MlflowRegistry(reg.tracking_uri)
        while not stop.is_set():
            ref = watcher.get_alias(name, CHAMPION)
            seen.append(ref.version if ref else None)

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        for k in range(1, 9):
            new, old = versions[k % 3], versions[(k - 1) % 3]
            reg.set_alias(name, CHALLENGER, new)
            done = reg.promote(name, tags={"round": str(k)})
            assert done.champion.version == new
            assert done.archived is not None
            assert done.archived.version == old
            aliases = reg.client.get_registered_model(name).aliases
            assert {a: str(v) for a, v in aliases.items()} == {CHAMPION: new, ARCHIVED: old}
    finally:
        stop.set()
        thread.join()
    assert len(seen) > 10
    assert None not in seen
