"""The model of the side-by-side gRPC benchmark (altscore vs MLServer), built deterministically.

    uv run --frozen python -m benchmarks.synthetic_model --state-dir var/bench --out var/bench/model

The shape PEERS.md measures with: 40 float features ``f00``..``f39`` (informative and noise ones,
some with missing values), a binary label, XGBoost ``binary:logistic``, 400 trees of depth 6,
no early stopping, one thread, a fixed seed. The command writes into ``--out``:

    spec.yaml            the feature spec (40 ``value`` features, type number)
    model.json           the same trees for MLServer (XGBoost JSON, tagged as a classifier)
    requests/*.json      ghz request bodies: ``score-1.json`` (Score, one applicant per call) and
                         ``score-batch-64.json`` (ScoreBatch, 64 applicants per call)
    scoring.protoset     our proto for ``ghz --protoset`` (``credit.scoring.v1.Scoring/Score``)

and registers the model in the MLflow store of ``--state-dir`` as ``altscore-bench@champion``
through the training code's own bundle and registry functions. A second run with the same trees
(same booster hash as the champion) registers nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb
import yaml

from credit_core import ModelBundle, ModelRejectedError, ReferenceSample
from credit_core.registry import ModelVersionRef
from feature_kernels import FeaturePipeline, load_spec
from training.evaluate import evaluate
from training.run import CHAMPION, bundle_metadata
from training.settings import TrainingSettings
from training.train import predict_margin

__all__ = [
    "FEATURE_NAMES",
    "MODEL_NAME",
    "BenchModel",
    "BenchModelParams",
    "build_booster",
    "ensure_bench_model",
    "make_dataset",
    "request_rows",
    "score_batch_requests",
    "score_requests",
    "scoring_protoset",
    "spec_document",
    "write_score_bodies",
    "write_spec",
]

MODEL_NAME = "altscore-bench"
EXPERIMENT = "altscore-bench"
N_FEATURES = 40
FEATURE_NAMES = [f"f{i:02d}" for i in range(N_FEATURES)]
INFORMATIVE = 16
"""``f00``..``f15`` drive the label; the others are noise."""
WITH_MISSING = frozenset(range(3, N_FEATURES, 4))
"""Features with missing values (NaN): f03, f07, ..., f39, both informative and noise."""
MISSING_SHARE = 0.08
REQUEST_SEED = 7
"""Seed of the benchmark's request rows (never the training seed: unseen applicants)."""


@dataclass(frozen=True)
class BenchModelParams:
    """How the benchmark model is built; the defaults are the benchmark's (PEERS.md shape)."""

    n_trees: int = 400
    max_depth: int = 6
    eta: float = 0.1
    train_rows: int = 20_000
    holdout_rows: int = 5_000
    reference_rows: int = 500
    seed: int = 42

    def booster_params(self) -> dict[str, Any]:
        return {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": "hist",
            "eta": self.eta,
            "max_depth": self.max_depth,
            "seed": self.seed,
            "nthread": 1,
            "verbosity": 0,
        }


@dataclass(frozen=True)
class BenchModel:
    """Where the benchmark model is and what it is."""

    version: ModelVersionRef
    booster_sha256: str
    registered: bool
    """False when the champion already had these trees (nothing was registered)."""
    spec_path: Path
    model_json: Path
    holdout_auc: float


_BLOCK = 1024
"""Rows are drawn in blocks of this many, each from its own seed: row ``i`` is the same
whatever ``n_rows`` is (``request_rows(256)`` is the start of ``request_rows(1024)``)."""


def _block(seed: int, index: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int8]]:
    rng = np.random.default_rng([seed, index])
    z = rng.standard_normal((_BLOCK, N_FEATURES))
    u = rng.uniform(size=(_BLOCK, N_FEATURES))
    draw = rng.uniform(size=_BLOCK)
    holes = rng.uniform(size=(_BLOCK, N_FEATURES))
    kind = np.arange(N_FEATURES) % 3
    x = np.where(kind == 0, z, np.where(kind == 1, np.exp(0.75 * z), 100.0 * u))
    logit = (
        0.9 * x[:, 0]
        - 0.6 * np.log(x[:, 1])
        + 0.02 * (x[:, 2] - 50.0)
        + 0.8 * (x[:, 3] > 0.5)
        + 0.5 * x[:, 4] * (x[:, 6] > 0.0)
        - 0.01 * (x[:, 5] - 50.0) * (x[:, 9] > 0.0)
        + 0.6 * np.sin(x[:, 7])
        + 0.4 * np.abs(x[:, 8] - 50.0) / 25.0
        + 0.3 * x[:, 10] * x[:, 12]
        + 0.5 * (x[:, 11] > 60.0)
        - 0.4 * np.log(x[:, 13])
        + 0.2 * np.tanh(x[:, 14] - 50.0)
        + 0.3 * x[:, 15]
        - 3.2
    )
    y = (draw < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    missing = np.zeros(N_FEATURES, dtype=bool)
    missing[sorted(WITH_MISSING)] = True
    x[(holes < MISSING_SHARE) & missing] = np.nan
    return x, y


def make_dataset(n_rows: int, seed: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int8]]:
    """``n_rows`` synthetic applicants (float32 ``[n, 40]``, NaN = missing) and their labels.

    Columns are normal, log-normal or uniform on [0, 100] in turn. The label's log-odds mix
    linear, threshold and interaction terms of ``f00``..``f15`` (about 24 % defaults); the
    missing values are punched out after the label is drawn (missing at random)."""
    blocks = [_block(seed, b) for b in range(-(-n_rows // _BLOCK))]
    x = np.concatenate([b[0] for b in blocks])[:n_rows]
    y = np.concatenate([b[1] for b in blocks])[:n_rows]
    # float32 values with short decimal forms, so a JSON body carries exactly these numbers
    return np.round(x, 4).astype(np.float32), y


def request_rows(n: int, seed: int = REQUEST_SEED) -> npt.NDArray[np.float32]:
    """``n`` benchmark applicants (float32 ``[n, 40]``, NaN = missing), the same on every call."""
    return make_dataset(n, seed)[0]


def build_booster(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int8], params: BenchModelParams
) -> xgb.Booster:
    """Exactly ``params.n_trees`` rounds, no validation split and no early stopping."""
    dtrain = xgb.DMatrix(x, label=y, missing=np.nan)
    return xgb.train(params.booster_params(), dtrain, num_boost_round=params.n_trees)


def spec_document() -> dict[str, Any]:
    """The feature spec of the benchmark model: one number input and one ``value`` feature
    per column; the columns with missing values are optional inputs."""
    inputs: dict[str, Any] = {}
    features: list[dict[str, Any]] = []
    for j, name in enumerate(FEATURE_NAMES):
        role = "informative" if j < INFORMATIVE else "noise"
        inputs[name] = {
            "type": "number",
            "required": j not in WITH_MISSING,
            "description": f"Synthetic {role} attribute {j}"
            + (" (may be missing)" if j in WITH_MISSING else ""),
        }
        features.append(
            {
                "name": name,
                "op": "value",
                "input": name,
                "reason": f"Synthetic attribute {name} is in a higher-risk range",
            }
        )
    return {
        "name": "bench_synthetic",
        "version": 1,
        "description": "Synthetic 40-feature applicant of the side-by-side gRPC benchmark",
        "target": {"column": "default", "positive": [1]},
        "inputs": inputs,
        "features": features,
    }


def write_spec(path: Path) -> Path:
    """Write the spec YAML (validated by reading it back) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# Generated by benchmarks/synthetic_model.py; do not edit.\n" + yaml.safe_dump(
        spec_document(), sort_keys=False
    )
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    load_spec(path)
    return path


def _number(v: np.float32) -> float:
    """The shortest decimal that reads back as this float32 (as a Python float for JSON)."""
    return float(str(v))


def score_requests(
    rows: npt.NDArray[np.float32], prefix: str = "bench", *, values: bool = False
) -> list[dict[str, Any]]:
    """``credit.scoring.v1.ScoreRequest`` messages (proto JSON), one per row; a missing value
    (NaN) is left out of the applicant's ``numeric`` map. ``values``: the row goes in
    ``numeric_values`` instead (every input is numeric, in spec order; NaN as proto JSON's
    ``"NaN"``)."""
    out = []
    for i, row in enumerate(rows):
        applicant: dict[str, Any] = {"applicant_id": f"applicant-{i}"}
        if values:
            applicant["numeric_values"] = [_number(v) if v == v else "NaN" for v in row]
        else:
            applicant["numeric"] = {
                n: _number(v) for n, v in zip(FEATURE_NAMES, row, strict=True) if v == v
            }
        out.append({"request_id": f"{prefix}-{i}", "applicant": applicant})
    return out


def score_batch_requests(
    rows: npt.NDArray[np.float32], batch: int, *, values: bool = False
) -> list[dict[str, Any]]:
    """``ScoreBatchRequest`` messages of ``batch`` applicants each (``len(rows)`` must divide)."""
    if batch < 1 or len(rows) % batch:
        raise ValueError(f"{len(rows)} rows do not split into batches of {batch}")
    return [
        {"requests": score_requests(rows[i : i + batch], f"bench-{i // batch}", values=values)}
        for i in range(0, len(rows), batch)
    ]


def write_score_bodies(
    dst: Path, *, single_messages: int = 256, batch: int = 64, batch_messages: int = 16
) -> dict[str, Path]:
    """ghz ``--data-file`` bodies for our proto: a JSON array of messages that ghz sends in
    turn (round robin). ``score-1.json``: ``Score``, one applicant per call;
    ``score-batch-<batch>.json``: ``ScoreBatch``, ``batch`` applicants per call; the
    ``-values`` twins send the same rows as ``numeric_values``. The rows are ``request_rows``:
    the first ``single_messages`` / ``batch * batch_messages`` of them."""
    dst.mkdir(parents=True, exist_ok=True)
    rows = request_rows(max(single_messages, batch * batch_messages))
    singles, batches = rows[:single_messages], rows[: batch * batch_messages]
    bodies = {
        "score-1.json": score_requests(singles),
        f"score-batch-{batch}.json": score_batch_requests(batches, batch),
        "score-1-values.json": score_requests(singles, values=True),
        f"score-batch-{batch}-values.json": score_batch_requests(batches, batch, values=True),
    }
    paths = {}
    for name, body in bodies.items():
        paths[name] = dst / name
        paths[name].write_text(json.dumps(body, separators=(",", ":"), allow_nan=False))
    return paths


def scoring_protoset(dst: Path) -> Path:
    """``credit.scoring.v1`` (with ``google/rpc/status.proto``) as a protoset file for
    ``ghz --protoset`` / ``grpcurl -protoset``: ghz cannot resolve our methods through the
    server's reflection ("Symbol not found"), and a protoset needs no include paths."""
    from google.protobuf import descriptor_pb2
    from google.protobuf.descriptor import FileDescriptor

    from scoring_server.grpc._proto import scoring_pb2

    files = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(fd: FileDescriptor) -> None:
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            add(dep)
        fd.CopyToProto(files.file.add())

    add(scoring_pb2.DESCRIPTOR)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(files.SerializeToString())
    return dst


def _mlserver_json(booster: xgb.Booster) -> bytes:
    """The booster as MLServer's XGBoost runtime wants it: ``model.json`` that its scikit-learn
    loader opens as a classifier (``predict_proba``); the trees are unchanged."""
    clf = xgb.XGBClassifier()
    clf.load_model(bytearray(booster.save_raw(raw_format="json")))
    with tempfile.TemporaryDirectory(prefix="altscore-bench-") as tmp:
        path = Path(tmp) / "model.json"
        clf.save_model(path)
        return path.read_bytes()


def _champion_hash(settings: TrainingSettings, ref: ModelVersionRef) -> str | None:
    """sha256 of the champion's booster; None when its bundle cannot be read (then replace it)."""
    with tempfile.TemporaryDirectory(prefix="altscore-bench-") as tmp:
        try:
            return ModelBundle.read(settings.registry().download(ref, Path(tmp))).model_hash
        except ModelRejectedError:
            return None


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)


def ensure_bench_model(
    state_dir: Path, out: Path, params: BenchModelParams | None = None
) -> BenchModel:
    """Build the benchmark model, write ``out``/spec.yaml, model.json and the request bodies,
    and make it the champion of ``altscore-bench`` in ``state_dir``'s MLflow store (unless the
    champion already has the same booster)."""
    params = params or BenchModelParams()
    out.mkdir(parents=True, exist_ok=True)
    spec_path = write_spec(out / "spec.yaml")
    pipeline = FeaturePipeline(load_spec(spec_path))
    if pipeline.feature_names != FEATURE_NAMES:
        raise RuntimeError("the benchmark spec's feature layout is not f00..f39")

    x, y = make_dataset(params.train_rows, params.seed)
    booster = build_booster(x, y, params)
    booster_json = bytes(booster.save_raw(raw_format="json"))
    booster_sha = hashlib.sha256(booster_json).hexdigest()
    model_json = out / "model.json"
    _write_if_changed(model_json, _mlserver_json(booster))
    write_score_bodies(out / "requests")
    scoring_protoset(out / "scoring.protoset")

    x_hold, y_hold = make_dataset(params.holdout_rows, params.seed + 1)
    margin_hold = predict_margin(booster, x_hold)
    evaluation = evaluate(y_hold, 1.0 / (1.0 + np.exp(-margin_hold)))

    settings = TrainingSettings(state_dir=state_dir, model_name=MODEL_NAME, experiment=EXPERIMENT)
    registry = settings.registry()
    current = registry.get_alias(MODEL_NAME, CHAMPION)
    if current is not None and _champion_hash(settings, current) == booster_sha:
        return BenchModel(current, booster_sha, False, spec_path, model_json, evaluation.auc)

    n_ref = min(params.reference_rows, params.holdout_rows)
    reference = ReferenceSample(features=x_hold[:n_ref], margin=margin_hold[:n_ref])
    booster_params = {f"bench.{k}": v for k, v in asdict(params).items()}
    metadata = bundle_metadata(
        pipeline,
        metrics=evaluation.metrics(),
        training={
            "data": f"synthetic (benchmarks.synthetic_model, seed {params.seed})",
            "rows": params.train_rows,
            "holdout": f"{params.holdout_rows} fresh synthetic rows, seed {params.seed + 1}",
            "best_iteration": params.n_trees - 1,
            "schema_hash": pipeline.schema_hash,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "params": booster_params,
            "booster_sha256": booster_sha,
        },
    )
    with tempfile.TemporaryDirectory(prefix="altscore-bench-") as tmp:
        bundle_dir = Path(tmp) / "model"
        ModelBundle.write(
            bundle_dir,
            booster_json=booster_json,
            spec_file=spec_path,
            reference=reference,
            metadata=metadata,
        )
        run_id = registry.log_run(
            EXPERIMENT,
            run_name=f"bench-{params.n_trees}x{params.max_depth}-{booster_sha[:12]}",
            params=booster_params,
            metrics={f"holdout_{k}": v for k, v in evaluation.metrics().items()},
            artifacts={"model": bundle_dir},
            tags={"spec": pipeline.spec.name, "schema_hash": pipeline.schema_hash},
        )
        version = registry.register(
            MODEL_NAME,
            run_id,
            "model",
            tags={"schema_hash": pipeline.schema_hash, "booster_sha256": booster_sha},
        )
    registry.set_alias(MODEL_NAME, CHAMPION, version.version)
    return BenchModel(version, booster_sha, True, spec_path, model_json, evaluation.auc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.synthetic_model")
    parser.add_argument("--state-dir", type=Path, default=Path("var/bench"))
    parser.add_argument("--out", type=Path, default=Path("var/bench/model"))
    parser.add_argument("--trees", type=int, default=BenchModelParams.n_trees)
    ns = parser.parse_args(argv)
    model = ensure_bench_model(ns.state_dir, ns.out, BenchModelParams(n_trees=ns.trees))
    state = "registered" if model.registered else "already champion"
    print(
        f"{MODEL_NAME}@{CHAMPION} = version {model.version.version} ({state}); "
        f"booster sha256 {model.booster_sha256[:12]}; holdout AUC {model.holdout_auc:.4f}; "
        f"spec {model.spec_path}; MLServer model {model.model_json}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
