"""Holdout AUC over several stratified splits: how much of a one-split figure is the split.

The README's AUC table uses one split (``random_state=42``, the protocol of ../shared/PEERS.md).
This script repeats the same protocol on ``--seeds`` other splits and prints each split's holdout
AUC (with its 95 % DeLong interval) and the mean ± standard deviation (ddof 1), for the spec's
default parameters and, optionally, a tuned configuration given as its parameters and rounds::

    uv run python -m benchmarks.splits --spec specs/gmsc.yaml \\
        --data ../shared/data/give_me_some_credit/cs-training.csv --seeds 0 1 2 3 4 \\
        --tuned '{"eta": 0.013465937827188294, "max_depth": 6,
                  "min_child_weight": 18.691768319304806, "subsample": 0.6107493561524395,
                  "colsample_bytree": 0.7097662836401373, "reg_lambda": 7.302697686691341,
                  "reg_alpha": 0.1740468618721144, "gamma": 3.4587315514507857}' \\
        --tuned-rounds 1034

(the README's GMSC five-split figures: the parameters and rounds of a ``--tune --trials 30
--timeout 900`` run on the PEERS split; about 7 minutes on 2 busy cores)

Per split, as ``python -m training train`` does it: ``train_test_split(test_size=0.2,
stratify=y, random_state=seed)`` over the rows in file order; ``frequency_rank`` features fitted
on that split's training part; the features from the Rust kernels; then

- **default**: the spec's ``model`` section, early stopping on a stratified 10 % of the training
  part (``training.train.fit``, seed ``ALTSCORE_SEED`` 42 for XGBoost and the early-stopping
  rows);
- **tuned**: the given parameters (over the spec's section) refit on the whole training part for
  exactly ``--tuned-rounds`` rounds (``training.train.fit_rounds``), as ``--tune``'s refit does.

A tuned configuration found by ``--tune`` on the ``random_state=42`` split saw (through its
cross-validation) most rows that are holdout rows of the other splits, so its mean is slightly
optimistic; the default's is not. No MLflow run, no report: nothing is registered. Not part of
the test suite (it takes minutes on GMSC).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from feature_kernels import FeaturePipeline, load_spec
from training.dataset import labels, learned_columns, load_frame, stratified_split
from training.quality import auc_interval
from training.settings import TrainingSettings
from training.train import TrainParams, fit, fit_rounds, predict_margin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--tuned", default=None, help="JSON object of XGBoost parameters")
    parser.add_argument("--tuned-rounds", type=int, default=None, help="rounds of the refit")
    ns = parser.parse_args(argv)
    if (ns.tuned is None) != (ns.tuned_rounds is None):
        parser.error("--tuned and --tuned-rounds go together")

    seed = TrainingSettings().seed
    source = load_spec(ns.spec)
    frame = load_frame(ns.data, source)
    y = labels(frame, source)
    configs: dict[str, tuple[TrainParams, int | None]] = {"default": (source.model, None)}
    if ns.tuned is not None:
        tuned = {**source.model.model_dump(), **json.loads(ns.tuned)}
        configs["tuned"] = (TrainParams.model_validate(tuned), ns.tuned_rounds)
    aucs: dict[str, list[float]] = {name: [] for name in configs}
    print(f"{source.name} v{source.version} on {ns.data.name}: {len(y):,} rows, "
          f"holdout {ns.test_size:.0%}, splits random_state={ns.seeds}")  # fmt: skip
    for split_seed in ns.seeds:
        split = stratified_split(y, ns.test_size, split_seed)
        spec = source.fitted(learned_columns(frame, source, split.train))
        pipeline = FeaturePipeline(spec)
        x = pipeline.transform_frame(frame)
        x_train, y_train = x[split.train], y[split.train]
        for name, (params, rounds) in configs.items():
            t0 = time.perf_counter()
            if rounds is None:
                result = fit(x_train, y_train, monotone=pipeline.monotone, params=params, seed=seed)
            else:
                result = fit_rounds(
                    x_train,
                    y_train,
                    monotone=pipeline.monotone,
                    params=params,
                    rounds=rounds,
                    seed=seed,
                )
            pd = 1.0 / (1.0 + np.exp(-predict_margin(result.booster, x[split.test])))
            auc, low, high = auc_interval(y[split.test], pd)
            aucs[name].append(auc)
            print(
                f"random_state={split_seed} {name:8s} AUC {auc:.4f} [{low:.4f}, {high:.4f}] "
                f"{result.best_iteration + 1} trees, {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    for name, values in aucs.items():
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"{name}: mean AUC {statistics.fmean(values):.4f} ± {sd:.4f} (sd, ddof 1) over "
              f"{len(values)} splits")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
