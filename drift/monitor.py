"""The drift worker: windows over the champion's served predictions, drift per feature and of
the PD against the reference sample stored with the model version (Evidently), the label-free
AUC estimate (:mod:`credit_core.performance`), and the retrain signal.

Windows. The champion's served predictions (the archive, so every replica's), ordered by ``ts``,
cut from the first one on: a window closes at ``monitoring.window_rows`` rows, or, with
``monitoring.window_seconds``, once that long passed since its first row and it holds
``monitoring.min_rows``. Only predictions older than ``drift_settle_seconds`` are windowed, so a
closed window's rows never change (a replica's buffered records and the archiver's lag arrive
within that time; a record later than that is left out of windows already closed).

Per window: one Evidently report (a ``ValueDrift`` test per output feature and one for the PD,
each with the spec's test and threshold) saved as HTML and JSON and logged to MLflow under the
model version's run (``drift/window-NNNNN/``) with the window's metrics; the estimated AUC (with
the holdout calibration the bundle carries) and, where outcomes already matched the window's
requests, the realised AUC; gauges on the worker's own ``/metrics``.

Restart safety. A window is acknowledged in ``<archive>/_state/drift-<model>.parquet`` after its
report is logged: an acknowledged window is never computed again, one that was not is computed
again from scratch (its MLflow artifacts are overwritten). The retrain signal (a window with a
drifted feature or PD, or an estimate ``monitoring.auc_drop`` below the holdout AUC) runs
``ALTSCORE_RETRAIN_COMMAND`` once per model version: the version is recorded as signalled right
after the command starts; a crash between the two can start it a second time, never zero times.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import polars as pl
from prometheus_client import CollectorRegistry, Counter, Gauge

from credit_core import ModelBundle
from credit_core.drift import value_drift
from credit_core.evaluation import matched
from credit_core.performance import estimated_auc, realised_auc
from credit_core.registry import CHAMPION, MlflowRegistry, ModelVersionRef
from drift.settings import DriftSettings
from feature_kernels import load_spec, logistic
from feature_kernels.spec import MonitoringDef

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

__all__ = ["DriftWorker", "WindowResult", "closed_windows"]

log = logging.getLogger("drift.monitor")

PD: Final = "pd"
"""The prediction's column in the drift report."""
_STATE_FIELDS: dict[str, PolarsDataType] = {
    "model_version": pl.String,
    "window": pl.Int64,
    "rows": pl.Int64,
    "first_ts": pl.Float64,
    "last_ts": pl.Float64,
    "scores": pl.String,
    "drifted": pl.List(pl.String),
    "estimated_auc": pl.Float64,
    "realised_auc": pl.Float64,
    "signal": pl.Boolean,
    "acknowledged_at": pl.Float64,
}
STATE_SCHEMA: Final = pl.Schema(_STATE_FIELDS)


def closed_windows(ts: npt.NDArray[np.float64], m: MonitoringDef, horizon: float) -> list[range]:
    """Row ranges of the windows closed by ``horizon`` over sorted times ``ts`` (see the module
    docs); the rows after the last one wait for more."""
    out: list[range] = []
    start, n = 0, len(ts)
    while start < n:
        full = start + m.window_rows
        if m.window_seconds is not None and horizon >= ts[start] + m.window_seconds:
            cut = int(np.searchsorted(ts, ts[start] + m.window_seconds, side="left"))
            if cut < full and cut - start >= m.min_rows:
                out.append(range(start, cut))
                start = cut
                continue
        if full > n:
            break
        out.append(range(start, full))
        start = full
    return out


@dataclass(frozen=True)
class WindowResult:
    """One window's checks."""

    index: int
    rows: int
    first_ts: float
    last_ts: float
    tests: dict[str, tuple[str, float, float, bool]]
    """Column (an output feature, or ``pd``) -> (test, threshold, score, drifted)."""
    estimated_auc: float
    realised_auc: float
    """NaN until the window's outcomes hold both classes."""
    holdout_auc: float
    auc_drop: float
    decisions: dict[str, float] = field(default_factory=dict)
    """Share of the window's answers per decision."""
    pd_quantiles: dict[str, float] = field(default_factory=dict)
    score_quantiles: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, float] = field(default_factory=dict)
    """Share of the window's explained answers that carry each reason code."""

    @property
    def drifted(self) -> list[str]:
        return [c for c, (_, _, _, d) in self.tests.items() if d]

    @property
    def signal(self) -> bool:
        return bool(self.drifted) or self.estimated_auc < self.holdout_auc - self.auc_drop


QUANTILES: Final = (0.1, 0.5, 0.9)


def _distributions(window: pl.DataFrame) -> dict[str, dict[str, float]]:
    """What the window's answers were: decision shares, PD and score quantiles, and the share of
    explained answers carrying each reason code."""
    n = window.height
    decisions = {str(d): c / n for d, c in window["decision"].value_counts().iter_rows() if n and d}
    explained = window.filter(pl.col("reasons").list.len() > 0)
    codes = explained["reasons"].explode().value_counts() if explained.height else None
    reasons = (
        {} if codes is None else {str(code): c / explained.height for code, c in codes.iter_rows()}
    )

    def quantiles(column: str) -> dict[str, float]:
        found = {q: window[column].quantile(q, "linear") for q in QUANTILES}
        return {f"{q:g}": math.nan if v is None else float(v) for q, v in found.items()}

    return {
        "decisions": decisions,
        "pd_quantiles": quantiles("pd"),
        "score_quantiles": quantiles("score"),
        "reasons": reasons,
    }


@dataclass
class _Served:
    """What the worker knows of the champion version it watches."""

    ref: ModelVersionRef
    bundle: ModelBundle
    monitoring: MonitoringDef
    reference: Any  # pandas.DataFrame: the reference features and PDs
    names: list[str]


@dataclass
class DriftWorker:
    settings: DriftSettings
    after_window: Callable[[WindowResult], None] | None = None
    """Called after a window's report is logged and before it is acknowledged (tests crash
    here)."""
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _served: _Served | None = None
    _children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        r = self.registry
        labels = ["model_name", "model_version"]
        self.g_score = Gauge(
            "altscore_drift_score",
            "Drift score of the last window per column (p-value or distance: see `stattest`)",
            [*labels, "column", "stattest"],
            registry=r,
        )
        self.g_drifted = Gauge(
            "altscore_drift_detected",
            "1 when the column drifted in the last window",
            [*labels, "column"],
            registry=r,
        )
        self.g_est = Gauge(
            "altscore_estimated_auc",
            "Label-free AUC estimate of the last window",
            labels,
            registry=r,
        )
        self.g_real = Gauge(
            "altscore_realised_auc",
            "AUC of the last window from the outcomes matched so far (NaN: too few)",
            labels,
            registry=r,
        )
        self.g_holdout = Gauge(
            "altscore_holdout_auc", "The model version's holdout AUC", labels, registry=r
        )
        self.g_floor = Gauge(
            "altscore_estimated_auc_floor",
            "Holdout AUC minus the spec's monitoring.auc_drop: an estimate below it signals",
            labels,
            registry=r,
        )
        self.c_windows = Counter("altscore_drift_windows", "Windows checked", labels, registry=r)
        self.c_signals = Counter(
            "altscore_retrain_signals", "Retrain signals raised", labels, registry=r
        )
        self.g_decision = Gauge(
            "altscore_window_decision_share",
            "Share of the last window's answers per decision",
            [*labels, "decision"],
            registry=r,
        )
        self.g_pd_q = Gauge(
            "altscore_window_pd_quantile",
            "PD quantiles of the last window",
            [*labels, "quantile"],
            registry=r,
        )
        self.g_score_q = Gauge(
            "altscore_window_score_quantile",
            "Score quantiles of the last window",
            [*labels, "quantile"],
            registry=r,
        )
        self.g_reason = Gauge(
            "altscore_window_reason_code_share",
            "Share of the last window's explained answers that carry the reason code",
            [*labels, "code"],
            registry=r,
        )
        self.g_last = Gauge(
            "altscore_drift_last_window_timestamp_seconds",
            "Time of the last prediction of the last window checked",
            labels,
            registry=r,
        )

    # --- state -------------------------------------------------------------------------

    def _state_file(self) -> str:
        return f"_state/drift-{self.settings.model_name}.parquet"

    def _load_state(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        archive = self.settings.archive()
        windows = archive.read_file(self._state_file())
        fired = archive.read_file(self._state_file().replace(".parquet", "-signals.parquet"))
        return (
            pl.DataFrame(schema=STATE_SCHEMA) if windows is None else windows,
            pl.DataFrame(schema={"model_version": pl.String, "started_at": pl.Float64})
            if fired is None
            else fired,
        )

    def _save(self, windows: pl.DataFrame, fired: pl.DataFrame) -> None:
        archive = self.settings.archive()
        archive.write(self._state_file(), windows)
        archive.write(self._state_file().replace(".parquet", "-signals.parquet"), fired)

    # --- the champion ------------------------------------------------------------------

    def _champion(self, registry: MlflowRegistry) -> _Served | None:
        ref = registry.get_alias(self.settings.model_name, CHAMPION)
        if ref is None:
            return None
        if self._served is not None and self._served.ref.version == ref.version:
            return self._served
        import pandas as pd

        target = self.settings.state_dir / "drift" / f"{ref.name}-v{ref.version}"
        if not (target / "model" / "metadata.json").is_file():
            registry.download(ref, target)
        bundle = ModelBundle.read(target / "model")
        spec = load_spec(bundle.spec_path)
        sample = bundle.reference()
        names = bundle.feature_names
        reference = pd.DataFrame(sample.features.astype(np.float64), columns=names)
        reference[PD] = logistic(sample.margin)
        self._served = _Served(ref, bundle, spec.monitoring, reference, names)
        return self._served

    # --- one pass ----------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> list[WindowResult]:
        """Check every window closed since the last acknowledged one; returns them."""
        s = self.settings
        registry = MlflowRegistry(s.tracking_uri())
        served = self._champion(registry)
        if served is None:
            log.warning("no %s of %s: nothing to watch", CHAMPION, s.model_name)
            return []
        version = served.ref.version
        windows_state, fired = self._load_state()
        self._fire_pending(windows_state, fired)
        windows_state, fired = self._load_state()
        done = set(windows_state.filter(pl.col("model_version") == version)["window"].to_list())
        evaluation = s.evaluation_log()
        horizon = (time.time() if now is None else now) - s.drift_settle_seconds
        preds = evaluation.read_predictions().filter(
            (pl.col("model_name") == s.model_name)
            & (pl.col("model_version") == version)
            & pl.col("served")
            & (pl.col("variant") == CHAMPION)
            & (pl.col("ts") <= horizon)
            & (pl.col("features").list.len() == len(served.names))
        )
        ranges = closed_windows(preds["ts"].to_numpy(), served.monitoring, horizon)
        todo = [(i, r) for i, r in enumerate(ranges) if i not in done]
        if not todo:
            return []
        labels = self._labels(evaluation, version)
        results = []
        for index, rows in todo:
            window = preds.slice(rows.start, len(rows))
            result, report = self._check(served, index, window, labels)
            self._publish(registry, served, result, report)
            if self.after_window is not None:
                self.after_window(result)
            windows_state = pl.concat([windows_state, self._state_row(version, result)])
            self._save(windows_state, fired)  # acknowledged
            if result.signal and version not in set(fired["model_version"].to_list()):
                fired = self._fire(version, fired, windows_state)
            results.append(result)
        return results

    def _labels(self, evaluation: Any, version: str) -> dict[str, bool]:
        rows = matched(evaluation, self.settings.model_name).filter(
            (pl.col("model_version") == version) & (pl.col("variant") == CHAMPION)
        )
        return dict(zip(rows["request_id"].to_list(), rows["defaulted"].to_list(), strict=True))

    def _check(
        self, served: _Served, index: int, window: pl.DataFrame, labels: dict[str, bool]
    ) -> tuple[WindowResult, Any]:
        """The window's checks, and the Evidently snapshot they came from (for the report)."""
        import pandas as pd

        m = served.monitoring
        features = np.array(
            [[math.nan if v is None else v for v in row] for row in window["features"].to_list()],
            dtype=np.float64,
        )
        current = pd.DataFrame(features, columns=served.names)
        pd_values = window[PD].to_numpy()
        current[PD] = pd_values
        columns = [*served.names, PD]
        tests = {c: m.test_of(None if c == PD else c) for c in columns}
        drift = value_drift(served.reference, current, tests)
        scores, failed, snapshot = drift.scores, drift.drifted, drift.snapshot
        calibration = served.bundle.calibration()
        p_default = None if calibration is None else calibration(pd_values)
        ids = window["request_id"].to_list()
        known = [i for i, r in enumerate(ids) if r in labels]
        real = (
            realised_auc(pd_values[known], np.array([labels[ids[i]] for i in known]))
            if known
            else math.nan
        )
        ts = window["ts"]
        result = WindowResult(
            index=index,
            rows=window.height,
            first_ts=float(ts.min()),  # type: ignore[arg-type]
            last_ts=float(ts.max()),  # type: ignore[arg-type]
            tests={c: (t, th, scores[c], failed[c]) for c, (t, th) in tests.items()},
            estimated_auc=estimated_auc(pd_values, p_default),
            realised_auc=real,
            holdout_auc=float(served.bundle.metadata.get("metrics", {}).get("auc", math.nan)),
            auc_drop=m.auc_drop,
            **_distributions(window),
        )
        return result, snapshot

    def _publish(
        self,
        registry: MlflowRegistry,
        served: _Served,
        result: WindowResult,
        report: Any,
    ) -> None:
        ref = served.ref
        summary = {
            "model": ref.name,
            "model_version": ref.version,
            "window": result.index,
            "rows": result.rows,
            "first_ts": result.first_ts,
            "last_ts": result.last_ts,
            "tests": {
                c: {"stattest": t, "threshold": th, "score": sc, "drifted": d}
                for c, (t, th, sc, d) in result.tests.items()
            },
            "drifted": result.drifted,
            "estimated_auc": result.estimated_auc,
            "realised_auc": None if math.isnan(result.realised_auc) else result.realised_auc,
            "holdout_auc": result.holdout_auc,
            "decisions": result.decisions,
            "pd_quantiles": result.pd_quantiles,
            "score_quantiles": result.score_quantiles,
            "reason_codes": result.reasons,
            "retrain_signal": result.signal,
        }
        if ref.run_id:
            with tempfile.TemporaryDirectory(prefix="altscore-drift-") as tmp:
                folder = Path(tmp)
                report.save_html(str(folder / "drift.html"))
                report.save_json(str(folder / "evidently.json"))
                (folder / "summary.json").write_text(json.dumps(summary, indent=2))
                client = registry.client
                client.log_artifacts(ref.run_id, tmp, f"drift/window-{result.index:05d}")
                step = result.index
                client.log_metric(
                    ref.run_id, "drift_estimated_auc", result.estimated_auc, step=step
                )
                client.log_metric(
                    ref.run_id, "drift_features_drifted", len(result.drifted), step=step
                )
        labels = {"model_name": ref.name, "model_version": ref.version}
        for c, (t, _, sc, d) in result.tests.items():
            self.g_score.labels(**labels, column=c, stattest=t).set(sc)
            self.g_drifted.labels(**labels, column=c).set(1.0 if d else 0.0)
        self.g_est.labels(**labels).set(result.estimated_auc)
        self.g_real.labels(**labels).set(result.realised_auc)
        self.g_holdout.labels(**labels).set(result.holdout_auc)
        self.g_floor.labels(**labels).set(result.holdout_auc - result.auc_drop)
        self.g_last.labels(**labels).set(result.last_ts)
        for decision, share in result.decisions.items():
            self.g_decision.labels(**labels, decision=decision).set(share)
        for q, v in result.pd_quantiles.items():
            self.g_pd_q.labels(**labels, quantile=q).set(v)
        for q, v in result.score_quantiles.items():
            self.g_score_q.labels(**labels, quantile=q).set(v)
        self.g_reason.clear()  # codes absent from the last window are not carried over
        for code, share in result.reasons.items():
            self.g_reason.labels(**labels, code=code).set(share)
        self.c_windows.labels(**labels).inc()
        log.info(
            "window %d of %s v%s (%d rows): drifted %s, estimated AUC %.4f (holdout %.4f)%s",
            result.index,
            ref.name,
            ref.version,
            result.rows,
            result.drifted or "nothing",
            result.estimated_auc,
            result.holdout_auc,
            ", RETRAIN SIGNAL" if result.signal else "",
        )

    def _state_row(self, version: str, r: WindowResult) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "model_version": [version],
                "window": [r.index],
                "rows": [r.rows],
                "first_ts": [r.first_ts],
                "last_ts": [r.last_ts],
                "scores": [json.dumps({c: sc for c, (_, _, sc, _) in r.tests.items()})],
                "drifted": [r.drifted],
                "estimated_auc": [r.estimated_auc],
                "realised_auc": [r.realised_auc],
                "signal": [r.signal],
                "acknowledged_at": [time.time()],
            },
            schema=STATE_SCHEMA,
        )

    # --- the retrain signal ------------------------------------------------------------

    def _fire_pending(self, windows_state: pl.DataFrame, fired: pl.DataFrame) -> None:
        """Versions whose windows signalled but whose command never started (a crash)."""
        signalled = set(windows_state.filter(pl.col("signal"))["model_version"].to_list())
        for version in sorted(signalled - set(fired["model_version"].to_list())):
            fired = self._fire(version, fired, windows_state)

    def _fire(self, version: str, fired: pl.DataFrame, windows_state: pl.DataFrame) -> pl.DataFrame:
        name = self.settings.model_name
        self.c_signals.labels(model_name=name, model_version=version).inc()
        command = self.settings.retrain_command
        if command is None:
            log.warning("retrain signal for %s v%s: no ALTSCORE_RETRAIN_COMMAND set", name, version)
        else:
            log.warning("retrain signal for %s v%s: running %s", name, version, command)
            self._children.append(subprocess.Popen(shlex.split(command)))
        fired = pl.concat(
            [
                fired,
                pl.DataFrame(
                    {"model_version": [version], "started_at": [time.time()]},
                    schema=fired.schema,
                ),
            ]
        )
        self._save(windows_state, fired)
        return fired

    def reap(self, wait: bool = False) -> None:
        """Collect finished retrain commands (all of them with ``wait``), logging their exit."""
        for child in list(self._children):
            code = child.wait() if wait else child.poll()
            if code is not None:
                self._children.remove(child)
                level = logging.INFO if code == 0 else logging.ERROR
                log.log(level, "retrain command (pid %d) exited %d", child.pid, code)
