"""Champion against challenger on the matched outcomes of the evaluation log, and the rule that
decides whether the challenger may be promoted.

Statistics (pure numpy; the normal quantiles come from the standard library):

- AUC is the Mann-Whitney statistic (ties count one half). Its variance is DeLong's
  (DeLong, DeLong & Clarke-Pearson 1988), computed with the midrank algorithm of Sun & Xu (2014):
  ``var = S10 / m + S01 / n`` over the ``m`` defaults and ``n`` non-defaults. The confidence
  interval is ``auc ± z * se``, clipped to [0, 1].
- KS is ``max |F_default(t) - F_nondefault(t)|`` over the PDs (the two-sample KS statistic);
  Brier is the mean of ``(pd - defaulted)²``. Their intervals are percentile bootstrap intervals
  from ``n_boot`` resamples of the matched outcomes (the default rate varies with the sample, as
  it would in another period) with a fixed seed, so the same log gives the same report.
- The AUC difference ``challenger - champion``: when requests were scored by both variants
  (shadow mode) and those paired requests hold at least two defaults and two non-defaults, the
  test is DeLong's paired test on them (``var = var_a + var_b - 2 cov_ab``; the bootstrap resamples
  the same requests for both variants); otherwise the two variants' own samples are taken as
  independent (``var = var_a + var_b``). Two-sided p-value of ``z = diff / se``.

Only the predictions of the versions that hold the aliases now are compared (when the versions
are given), so records of an earlier champion or challenger do not count.

Promotion rule (:func:`evidence_failures`, thresholds in :class:`EvidenceRules`): the outcomes
behind the AUC test (the paired requests when the test is paired, else each variant's own) must
number at least ``min_outcomes`` per variant with at least ``min_positives`` defaults, and the
challenger must be at least as good: refused when the challenger is significantly worse (upper
bound of the difference's interval below 0, or ``p < alpha`` with the challenger lower), and
when its AUC is below the champion's by more than ``max_auc_drop`` (default 0: any deficit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from rich.console import Console
from rich.table import Table

from credit_core.evaluation import VARIANTS

__all__ = [
    "AucDifference",
    "Comparison",
    "EvidenceRules",
    "Interval",
    "Refusal",
    "VariantStats",
    "auc_delong",
    "compare",
    "evidence_failures",
    "ks_statistic",
    "midranks",
    "render",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class VariantStats:
    """One variant on one sample. AUC and KS are None when the sample lacks a class; the
    intervals are None when a class has fewer than two members."""

    variant: str
    versions: tuple[str, ...]
    n: int
    positives: int
    served: int
    """Rows that were the answer the caller got (the rest are shadow predictions)."""
    brier: float
    brier_ci: Interval | None
    auc: float | None
    auc_se: float | None
    auc_ci: Interval | None
    ks: float | None
    ks_ci: Interval | None


@dataclass(frozen=True, slots=True)
class AucDifference:
    """``challenger - champion`` AUC with its interval and two-sided p-value."""

    paired: bool
    n_champion: int
    n_challenger: int
    champion_auc: float
    challenger_auc: float
    difference: float
    se: float
    ci: Interval
    z: float
    p_value: float


@dataclass(frozen=True)
class Comparison:
    model_name: str
    champion_version: str | None
    challenger_version: str | None
    level: float
    n_boot: int
    seed: int
    variants: dict[str, VariantStats]
    """Every matched outcome of each variant."""
    paired: dict[str, VariantStats] | None
    """Both variants on the requests both scored (shadow mode), when there are such requests."""
    difference: AucDifference | None
    """None when the AUCs cannot be compared (a sample lacks defaults or non-defaults)."""
    corrections: dict[str, int] = field(default_factory=dict)
    """Requests whose standing outcome is a correction, by who sent it."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON; non-finite numbers become None."""
        clean = _finite(asdict(self))
        assert isinstance(clean, dict)
        return clean


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class EvidenceRules:
    min_outcomes: int = 200
    """Matched outcomes each variant needs."""
    min_positives: int = 20
    """Defaults each variant needs among them."""
    alpha: float = 0.05
    """Significance level of the 'significantly worse' rule."""
    max_auc_drop: float = 0.0
    """How far the challenger's AUC may sit below the champion's."""


@dataclass(frozen=True, slots=True)
class Refusal:
    rule: str
    message: str


def midranks(x: npt.ArrayLike) -> FloatArray:
    """1-based ranks of ``x``, tied values sharing the mean of their ranks."""
    values = np.asarray(x, dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid = ends - (counts - 1) / 2.0
    return np.asarray(mid[inverse.reshape(-1)], dtype=np.float64)


def auc_delong(y: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """AUCs of ``k`` score rows on the same labels and DeLong's covariance matrix of them.

    Args:
        y: ``n`` labels, 1 = default.
        scores: ``[k, n]`` (or ``[n]``) scores, higher = riskier.

    Returns:
        ``(auc[k], cov[k, k])``; the covariance is NaN when a class has fewer than 2 members.

    Raises:
        ValueError: when a class is missing or the shapes disagree.
    """
    labels = np.asarray(y).astype(bool)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if labels.ndim != 1 or s.shape[1] != labels.shape[0]:
        raise ValueError(f"scores {s.shape} do not fit labels {labels.shape}")
    pos, neg = s[:, labels], s[:, ~labels]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise ValueError("AUC needs both defaults and non-defaults")
    tx = np.vstack([midranks(r) for r in pos])
    ty = np.vstack([midranks(r) for r in neg])
    tz = np.vstack([midranks(r) for r in np.hstack([pos, neg])])
    auc = tz[:, :m].sum(axis=1) / (m * n) - (m + 1) / (2.0 * n)
    k = s.shape[0]
    if m < 2 or n < 2:
        return auc, np.full((k, k), np.nan)
    v10 = (tz[:, :m] - tx) / n  # per default: share of non-defaults scored lower
    v01 = 1.0 - (tz[:, m:] - ty) / m  # per non-default: share of defaults scored higher
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return auc, cov


def ks_statistic(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Two-sample Kolmogorov-Smirnov statistic between the PDs of defaults and non-defaults."""
    labels = np.asarray(y).astype(bool)
    values = np.asarray(p, dtype=np.float64)
    pos, neg = np.sort(values[labels]), np.sort(values[~labels])
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("KS needs both defaults and non-defaults")
    grid = np.unique(values)
    gap = np.searchsorted(pos, grid, side="right") / len(pos)
    gap -= np.searchsorted(neg, grid, side="right") / len(neg)
    return float(np.abs(gap).max())


def z_value(level: float) -> float:
    """The two-sided normal quantile of a ``level`` interval (1.96 for 0.95)."""
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def _resample_counts(rng: np.random.Generator, b: int, n: int) -> npt.NDArray[np.int64]:
    """``[b, n]``: how often each of ``n`` items is drawn in each of ``b`` resamples of size n."""
    draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=b * n).reshape(b, n)


def _bootstrap(
    y: npt.NDArray[np.bool_], pds: FloatArray, n_boot: int, seed: int, level: float
) -> tuple[list[Interval], list[Interval]] | None:
    """Percentile intervals of KS and Brier for each row of ``pds`` from the same resamples of
    the rows (paired when there are several); None when a class has fewer than two members. A
    resample is a vector of draw counts per row, so each statistic is a weighted sum over the
    rows sorted once. Resamples that miss a class do not count towards the KS interval."""
    m = int(y.sum())
    size = len(y)
    if m < 2 or size - m < 2 or n_boot < 1:
        return None
    k = pds.shape[0]
    rng = np.random.default_rng(seed)
    squared = (pds - y.astype(np.float64)) ** 2
    orders = [np.argsort(p, kind="stable") for p in pds]
    ends = []
    for p, order in zip(pds, orders, strict=True):
        sorted_p = p[order]
        ends.append(np.append(np.flatnonzero(np.diff(sorted_p) != 0), size - 1))
    ks = np.empty((n_boot, k))
    brier = np.empty((n_boot, k))
    chunk = max(1, 2_000_000 // size)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        counts = _resample_counts(rng, b, size).astype(np.float64)
        brier[start : start + b] = counts @ squared.T / size
        defaults = counts[:, y].sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(y, 1.0 / defaults, -1.0 / (size - defaults))
            signed = counts * step
        for j in range(k):
            gap = np.cumsum(signed[:, orders[j]], axis=1)[:, ends[j]]
            ks[start : start + b, j] = np.abs(gap).max(axis=1)
        missing = ((defaults == 0) | (defaults == size))[:, 0]
        ks[start : start + b][missing] = np.nan
    q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    ks_q, brier_q = np.nanquantile(ks, q, axis=0), np.quantile(brier, q, axis=0)
    return (
        [Interval(float(ks_q[0, j]), float(ks_q[1, j])) for j in range(k)],
        [Interval(float(brier_q[0, j]), float(brier_q[1, j])) for j in range(k)],
    )


def _stats(
    variants: Sequence[str],
    versions: Sequence[tuple[str, ...]],
    served: Sequence[int],
    y: npt.NDArray[np.bool_],
    pds: FloatArray,
    *,
    n_boot: int,
    seed: int,
    level: float,
) -> tuple[list[VariantStats], FloatArray | None, FloatArray | None]:
    """Stats of the rows of ``pds`` on the labels ``y``, plus the DeLong AUCs and covariance."""
    n, positives = len(y), int(y.sum())
    both = 0 < positives < n
    auc, cov = auc_delong(y, pds) if both else (None, None)
    boot = _bootstrap(y, pds, n_boot, seed, level) if n else None
    z = z_value(level)
    out = []
    for j, variant in enumerate(variants):
        auc_j = se = None
        auc_ci = None
        if auc is not None and cov is not None:
            auc_j = float(auc[j])
            if math.isfinite(cov[j, j]):
                se = math.sqrt(max(float(cov[j, j]), 0.0))
                auc_ci = Interval(max(auc_j - z * se, 0.0), min(auc_j + z * se, 1.0))
        out.append(
            VariantStats(
                variant=variant,
                versions=versions[j],
                n=n,
                positives=positives,
                served=served[j],
                brier=float(((pds[j] - y) ** 2).mean()) if n else math.nan,
                brier_ci=boot[1][j] if boot else None,
                auc=auc_j,
                auc_se=se,
                auc_ci=auc_ci,
                ks=ks_statistic(y, pds[j]) if both else None,
                ks_ci=boot[0][j] if boot else None,
            )
        )
    return out, auc, cov


def _difference(
    champion: float,
    challenger: float,
    variance: float,
    *,
    paired: bool,
    n: tuple[int, int],
    level: float,
) -> AucDifference:
    diff = challenger - champion
    se = math.sqrt(max(variance, 0.0))
    if se > 0:
        z = diff / se
        p = math.erfc(abs(z) / math.sqrt(2.0))
    else:  # identical rankings: no uncertainty about a zero difference
        z, p = (0.0, 1.0) if diff == 0 else (math.copysign(math.inf, diff), 0.0)
    half = z_value(level) * se
    return AucDifference(
        paired=paired,
        n_champion=n[0],
        n_challenger=n[1],
        champion_auc=champion,
        challenger_auc=challenger,
        difference=diff,
        se=se,
        ci=Interval(diff - half, diff + half),
        z=z,
        p_value=p,
    )


def _versions(column: pl.Series) -> tuple[str, ...]:
    return tuple(sorted(column.unique().to_list()))


def compare(
    matched: pl.DataFrame,
    *,
    model_name: str,
    champion_version: str | None = None,
    challenger_version: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Comparison:
    """Compare the variants on ``matched`` (the frame of :func:`credit_core.evaluation.matched`).

    A variant whose version is given keeps only that version's predictions.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    wanted = {"champion": champion_version, "challenger": challenger_version}
    frames: dict[str, pl.DataFrame] = {}
    for variant in VARIANTS:
        rows = matched.filter(pl.col("variant") == variant)
        if wanted[variant] is not None:
            rows = rows.filter(pl.col("model_version") == wanted[variant])
        frames[variant] = rows.sort("request_id")
    options: dict[str, Any] = {"n_boot": n_boot, "seed": seed, "level": level}

    variants: dict[str, VariantStats] = {}
    delong: dict[str, tuple[float, float]] = {}
    for variant, rows in frames.items():
        y = rows.get_column("defaulted").to_numpy().astype(bool)
        pds = rows.get_column("pd").to_numpy().astype(np.float64)[None, :]
        versions = [_versions(rows.get_column("model_version"))]
        served = [int(rows.get_column("served").sum())]
        single, auc, cov = _stats([variant], versions, served, y, pds, **options)
        variants[variant] = single[0]
        if auc is not None and cov is not None and math.isfinite(cov[0, 0]):
            delong[variant] = (float(auc[0]), float(cov[0, 0]))

    both = frames["champion"].join(
        frames["challenger"], on="request_id", how="inner", suffix="_challenger"
    )
    paired: dict[str, VariantStats] | None = None
    difference: AucDifference | None = None
    if both.height:
        y = both.get_column("defaulted").to_numpy().astype(bool)
        pds = np.vstack(
            [
                both.get_column("pd").to_numpy().astype(np.float64),
                both.get_column("pd_challenger").to_numpy().astype(np.float64),
            ]
        )
        pair_served = [int(both["served"].sum()), int(both["served_challenger"].sum())]
        pair_versions = [
            _versions(both.get_column("model_version")),
            _versions(both.get_column("model_version_challenger")),
        ]
        pair, auc, cov = _stats(list(VARIANTS), pair_versions, pair_served, y, pds, **options)
        paired = dict(zip(VARIANTS, pair, strict=True))
        positives = int(y.sum())
        if auc is not None and cov is not None and min(positives, len(y) - positives) >= 2:
            difference = _difference(
                float(auc[0]),
                float(auc[1]),
                float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]),
                paired=True,
                n=(len(y), len(y)),
                level=level,
            )
    if difference is None and len(delong) == 2:
        (a0, v0), (a1, v1) = delong["champion"], delong["challenger"]
        difference = _difference(
            a0,
            a1,
            v0 + v1,
            paired=False,
            n=(variants["champion"].n, variants["challenger"].n),
            level=level,
        )
    return Comparison(
        model_name=model_name,
        champion_version=champion_version,
        challenger_version=challenger_version,
        level=level,
        n_boot=n_boot,
        seed=seed,
        variants=variants,
        paired=paired,
        difference=difference,
        corrections=_corrections(matched),
    )


def _corrections(matched: pl.DataFrame) -> dict[str, int]:
    """Requests whose standing outcome is a correction, by who sent it."""
    if "corrected_by" not in matched.columns:
        return {}
    rows = matched.filter(pl.col("corrected_by") != "").unique("request_id")
    counts = rows.group_by("corrected_by").len().sort("corrected_by")
    return dict(zip(counts["corrected_by"].to_list(), counts["len"].to_list(), strict=True))


def evidence_failures(comparison: Comparison, rules: EvidenceRules) -> list[Refusal]:
    """Every rule of the promotion rule (module docstring) that refuses the challenger."""
    diff = comparison.difference
    basis = comparison.paired if diff is not None and diff.paired else comparison.variants
    assert basis is not None
    where = " (requests scored by both)" if basis is comparison.paired else ""
    refusals: list[Refusal] = []
    for variant in VARIANTS:
        stats = basis[variant]
        if stats.n < rules.min_outcomes:
            refusals.append(
                Refusal(
                    "min-outcomes",
                    f"{variant} has {stats.n} matched outcomes{where}, needs {rules.min_outcomes}",
                )
            )
        if stats.positives < rules.min_positives:
            refusals.append(
                Refusal(
                    "min-positives",
                    f"{variant} has {stats.positives} defaults among its matched outcomes{where}, "
                    f"needs {rules.min_positives}",
                )
            )
    if diff is None:
        refusals.append(
            Refusal("no-auc-test", "the AUCs cannot be compared (defaults or non-defaults missing)")
        )
        return refusals
    text = (
        f"challenger - champion AUC = {diff.difference:+.4f} "
        f"[{comparison.level:.0%} CI {diff.ci.low:+.4f}, {diff.ci.high:+.4f}], "
        f"p = {diff.p_value:.3g}"
    )
    if diff.ci.high < 0 or (diff.p_value < rules.alpha and diff.difference < 0):
        refusals.append(Refusal("significantly-worse", f"{text} (alpha {rules.alpha})"))
    if diff.difference < -rules.max_auc_drop:
        refusals.append(
            Refusal(
                "not-better",
                f"challenger AUC {diff.challenger_auc:.4f} < champion AUC "
                f"{diff.champion_auc:.4f} (allowed drop {rules.max_auc_drop:.4f})",
            )
        )
    return refusals


def _ci(value: float | None, ci: Interval | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    return text if ci is None else f"{text} [{ci.low:.{digits}f}, {ci.high:.{digits}f}]"


def _table(title: str, stats: Mapping[str, VariantStats], level: float) -> Table:
    table = Table(title=title)
    for name in ("variant", "version", "n", "defaults", "served"):
        table.add_column(name, justify="left" if name in ("variant", "version") else "right")
    for metric in ("AUC", "KS", "Brier"):
        table.add_column(f"{metric} [{level:.0%} CI]", justify="right")
    for variant, s in stats.items():
        table.add_row(
            variant,
            ",".join(s.versions) or "-",
            f"{s.n:,}",
            f"{s.positives:,}",
            f"{s.served:,}",
            _ci(s.auc, s.auc_ci),
            _ci(s.ks, s.ks_ci),
            _ci(s.brier if s.n else None, s.brier_ci, 5),
        )
    return table


def render(comparison: Comparison, console: Console) -> None:
    """The comparison as rich tables and a line on the AUC difference."""
    c = comparison
    versions = f"champion v{c.champion_version or '?'}, challenger v{c.challenger_version or '?'}"
    console.print(_table(f"{c.model_name}: matched outcomes ({versions})", c.variants, c.level))
    if c.paired is not None and any(c.paired[v].n != c.variants[v].n for v in VARIANTS):
        console.print(_table("requests scored by both (shadow)", c.paired, c.level))
    if c.corrections:
        who = ", ".join(f"{n:,} by {name}" for name, n in c.corrections.items())
        console.print(f"outcomes that are corrections of an earlier report: {who}")
    d = c.difference
    if d is None:
        console.print("AUC difference: not computable (a sample lacks defaults or non-defaults)")
        return
    how = (
        f"paired DeLong, n={d.n_champion:,}"
        if d.paired
        else (f"unpaired DeLong, n={d.n_champion:,} / {d.n_challenger:,}")
    )
    console.print(
        f"AUC challenger - champion: {d.difference:+.4f} "
        f"[{c.level:.0%} CI {d.ci.low:+.4f}, {d.ci.high:+.4f}], z = {d.z:.2f}, "
        f"p = {d.p_value:.3g} ({how}; bootstrap {c.n_boot} resamples, seed {c.seed})"
    )
