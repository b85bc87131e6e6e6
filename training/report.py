"""Static HTML + PNG evaluation report for a probability-of-default model.

:func:`write_report` renders the plots a credit-risk reviewer expects (ROC,
KS, calibration, score distribution) with matplotlib's non-interactive Agg
backend and ties them together in a single ``report.html`` that references
the images by relative file name, so the output directory can be archived or
attached to a model-registry run as-is.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from sklearn.metrics import roc_curve

from training.evaluate import Evaluation
from training.quality import PSI_SHIFT, PSI_STABLE, Decile, Quality

__all__ = [
    "CALIBRATION_PNG",
    "GAINS_PNG",
    "IMPORTANCE_PNG",
    "KS_PNG",
    "PSI_PNG",
    "REPORT_HTML",
    "ROC_PNG",
    "SCORE_DISTRIBUTION_PNG",
    "SHAP_PNG",
    "write_report",
]

REPORT_HTML = "report.html"
ROC_PNG = "roc.png"
KS_PNG = "ks.png"
CALIBRATION_PNG = "calibration.png"
SCORE_DISTRIBUTION_PNG = "score_distribution.png"
GAINS_PNG = "gains.png"
IMPORTANCE_PNG = "importance.png"
SHAP_PNG = "shap_summary.png"
PSI_PNG = "psi.png"
_TOP = 20
"""Features shown in the importance and SHAP plots."""

_FIGSIZE = (6.0, 4.5)
_DPI = 100
_GOOD_COLOR = "tab:blue"
_BAD_COLOR = "tab:red"

_CALIBRATION_NOTE = (
    "Equal-count bins of predicted PD; the first bin is [lower, upper],"
    " later bins are (lower, upper]."
)
_CALIBRATION_HEADER = (
    "Bin",
    "Lower",
    "Upper",
    "Count",
    "Mean PD",
    "Observed rate",
    "PD - observed",
)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.6em; }
h2 { font-size: 1.2em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; }
figcaption { text-align: center; font-size: 0.9em; color: #555; }
"""


def _save(
    path: Path,
    draw: Callable[[Axes], None],
    subject: str = "",
    figsize: tuple[float, float] = _FIGSIZE,
) -> Path:
    """Create a figure, let ``draw`` fill its axes, save it as PNG and close it.

    Args:
        path: Destination file.
        draw: Callback that draws on the single axes of the figure.
        subject: Model and dataset, put above the plot's own title.
        figsize: Inches.

    Returns:
        ``path``.
    """
    fig, ax = plt.subplots(figsize=figsize)
    try:
        draw(ax)
        if subject:
            ax.set_title(f"{subject}\n{ax.get_title()}", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=_DPI)
    finally:
        plt.close(fig)
    return path


def _plot_roc(
    ax: Axes,
    y: npt.NDArray[np.int64],
    p: npt.NDArray[np.float64],
    evaluation: Evaluation,
) -> None:
    """Draw the ROC curve with the AUC in the legend and the chance diagonal."""
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, color=_BAD_COLOR, lw=2, label=f"ROC (AUC = {evaluation.auc:.4f})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="Chance")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("False positive rate (goods flagged)")
    ax.set_ylabel("True positive rate (bads caught)")
    ax.set_title(f"ROC curve (Gini = {evaluation.gini:.4f})")
    ax.legend(loc="lower right")


def _ecdf(
    values: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return ``(x, F(x))`` step points of the empirical CDF, starting at 0."""
    x = np.sort(values)
    f = np.arange(1, x.shape[0] + 1, dtype=np.float64) / x.shape[0]
    return np.concatenate(([0.0], x, [1.0])), np.concatenate(([0.0], f, [1.0]))


def _plot_ks(
    ax: Axes,
    y: npt.NDArray[np.int64],
    p: npt.NDArray[np.float64],
    evaluation: Evaluation,
) -> None:
    """Draw the empirical CDFs of PD for goods and bads and mark the KS gap."""
    goods, bads = p[y == 0], p[y == 1]
    for values, color, label in (
        (goods, _GOOD_COLOR, "Goods"),
        (bads, _BAD_COLOR, "Bads"),
    ):
        x, f = _ecdf(values)
        ax.step(
            x,
            f,
            where="post",
            color=color,
            lw=2,
            label=f"{label} (n = {values.shape[0]})",
        )
    # KS is reached when classifying pd >= t as bad, i.e. at the CDFs' left limits at t.
    t = evaluation.ks_threshold
    f_good = float(np.mean(goods < t))
    f_bad = float(np.mean(bads < t))
    ax.vlines(t, min(f_good, f_bad), max(f_good, f_bad), color="black", lw=2, ls=":")
    ax.plot(
        [t, t],
        [f_good, f_bad],
        "o",
        color="black",
        label=f"KS = {evaluation.ks:.4f} at PD = {t:.4g}",
    )
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("Predicted PD")
    ax.set_ylabel("Cumulative share")
    ax.set_title("Kolmogorov-Smirnov")
    ax.legend(loc="lower right")


def _plot_calibration(ax: Axes, evaluation: Evaluation) -> None:
    """Draw observed default rate against mean predicted PD per bin."""
    mean_pd = [b.mean_pd for b in evaluation.calibration]
    observed = [b.observed_rate for b in evaluation.calibration]
    hi = max([*mean_pd, *observed, 1e-6]) * 1.05
    ax.plot([0.0, hi], [0.0, hi], color="grey", ls="--", lw=1, label="Perfect calibration")
    ax.plot(mean_pd, observed, "o-", color=_BAD_COLOR, lw=2, label="Model")
    ax.set_xlim(0.0, hi)
    ax.set_ylim(0.0, hi)
    ax.set_xlabel("Mean predicted PD")
    ax.set_ylabel("Observed default rate")
    ax.set_title(
        f"Calibration ({len(evaluation.calibration)} bins, "
        f"max gap = {evaluation.calibration_max_gap:.4f})"
    )
    ax.legend(loc="upper left")


def _plot_scores(ax: Axes, y: npt.NDArray[np.int64], s: npt.NDArray[np.float64]) -> None:
    """Draw overlaid, density-normalised score histograms for goods and bads."""
    edges = np.histogram_bin_edges(s, bins="auto")
    if edges.shape[0] > 51:
        edges = np.histogram_bin_edges(s, bins=50)
    for values, color, label in (
        (s[y == 0], _GOOD_COLOR, "Goods"),
        (s[y == 1], _BAD_COLOR, "Bads"),
    ):
        ax.hist(
            values,
            bins=list(edges),
            density=True,
            alpha=0.5,
            color=color,
            label=f"{label} (n = {values.shape[0]})",
        )
    ax.set_xlabel("Score")
    ax.set_ylabel("Density")
    ax.set_title("Score distribution")
    ax.legend(loc="best")


def _plot_gains(ax: Axes, gains: Sequence[Decile]) -> None:
    """Cumulative share of bads caught against the share of applicants, riskiest first."""
    x = [0.0, *[g.cum_rows_share for g in gains]]
    yv = [0.0, *[g.cum_capture for g in gains]]
    ax.plot(x, yv, "o-", color=_BAD_COLOR, lw=2, label="Model")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="Random")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("Share of applicants (riskiest first)")
    ax.set_ylabel("Share of bads caught")
    ax.set_title("Gains by PD decile")
    ax.legend(loc="lower right")


def _plot_importance(ax: Axes, importance: Mapping[str, float]) -> None:
    top = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:_TOP][::-1]
    ax.barh([k for k, _ in top], [v for _, v in top], color=_GOOD_COLOR)
    ax.set_xlabel("Share of total gain")
    ax.set_title("Importance (gain)")
    ax.tick_params(axis="y", labelsize=8)


def _plot_shap(ax: Axes, quality: Quality, names: Sequence[str]) -> None:
    """Beeswarm-style summary: each dot a row's TreeSHAP value, coloured by the feature's
    value (rank within the sample), features ordered by mean |SHAP|."""
    order = sorted(range(len(names)), key=lambda j: quality.shap_mean_abs[names[j]])[-_TOP:]
    rng = np.random.default_rng(0)
    for pos, j in enumerate(order):
        values = quality.shap_values[:, j]
        feature = quality.shap_features[:, j].astype(np.float64)
        finite = np.isfinite(feature)
        colour = np.full(feature.shape, 0.5)
        if finite.sum() > 1:
            ranks = np.argsort(np.argsort(feature[finite]))
            colour[finite] = ranks / max(1, finite.sum() - 1)
        jitter = rng.uniform(-0.3, 0.3, size=values.shape)
        ax.scatter(values, pos + jitter, c=colour, cmap="coolwarm", s=4, alpha=0.6, lw=0)
    ax.set_yticks(range(len(order)), [names[j] for j in order], fontsize=8)
    ax.axvline(0.0, color="grey", lw=1)
    ax.set_xlabel("TreeSHAP value, log-odds (blue: low feature value, red: high)")
    ax.set_title("SHAP summary")


def _plot_psi(ax: Axes, psi: Mapping[str, float]) -> None:
    items = sorted(psi.items(), key=lambda kv: kv[1])[-_TOP:]
    colours = [
        _GOOD_COLOR if v < PSI_STABLE else ("tab:orange" if v < PSI_SHIFT else _BAD_COLOR)
        for _, v in items
    ]
    ax.barh([k for k, _ in items], [v for _, v in items], color=colours)
    for limit in (PSI_STABLE, PSI_SHIFT):
        ax.axvline(limit, color="grey", ls="--", lw=1)
    ax.set_xlabel("PSI, training part -> holdout")
    ax.set_title("Population stability")
    ax.tick_params(axis="y", labelsize=8)


def _fmt(value: str | float | int) -> str:
    """Format a details value for display; the result is HTML-escaped."""
    if isinstance(value, float):
        return html.escape(f"{value:.6g}")
    return html.escape(str(value))


def _fmt_num(value: float) -> str:
    """Format a metric with four decimals; the result is HTML-escaped."""
    return html.escape(f"{value:.4f}")


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], numeric_from: int) -> str:
    """Render an HTML table; cells are expected to be escaped already."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if i >= numeric_from else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else html.escape(f"{value:.1%}")


def _quality_html(quality: Quality, evaluation: Evaluation) -> str:
    """The committee's sections: discrimination with its interval, overfitting, gains, policy
    bands, stability, importance and SHAP, monotonicity."""
    auc, low, high = quality.auc_ci
    train, hold = quality.train.metrics(), evaluation.metrics()
    fit_rows = [
        (
            html.escape(k),
            _fmt_num(train[k]),
            _fmt_num(hold[k]),
            _fmt_num(hold[k] - train[k]),
        )
        for k in ("auc", "gini", "ks", "brier", "log_loss")
    ]
    gains_rows = [
        (
            str(g.decile),
            f"{g.rows:,}",
            f"{g.bads:,}",
            _fmt_num(g.min_pd),
            _fmt_num(g.max_pd),
            _pct(g.bad_rate),
            _pct(g.cum_rows_share),
            _pct(g.cum_capture),
            f"{g.lift:.2f}",
            f"{g.cum_lift:.2f}",
        )
        for g in quality.gains
    ]
    bands_rows = [
        (
            html.escape(b.decision),
            html.escape(b.pd_range),
            f"{b.rows:,}",
            _pct(b.share),
            f"{b.bads:,}",
            _pct(b.bad_rate),
            _pct(b.capture),
        )
        for b in quality.bands
    ]
    shares = {b.decision: b.share for b in quality.bands}
    p = quality.policy
    band_note = (
        f"Policy: approve below PD {p.approve_below:g}, decline from {p.decline_from:g} "
        "(ALTSCORE_APPROVE_BELOW / ALTSCORE_DECLINE_FROM, what the server answers). On this "
        f"holdout (base rate {evaluation.base_rate:.1%}) it approves {shares['approve']:.1%}, "
        f"sends {shares['review']:.1%} to review and declines {shares['decline']:.1%}."
    )
    warnings = []
    if shares["review"] > 0.3:
        warnings.append(f"{shares['review']:.0%} to manual review is a heavy load")
    if shares["decline"] > 0.5:
        warnings.append(f"it declines {shares['decline']:.0%} of applicants")
    if shares["approve"] < 0.2:
        warnings.append(f"it approves only {shares['approve']:.0%}")
    if warnings:
        band_note += (
            f" <strong>{html.escape('; '.join(warnings)).capitalize()}:</strong> set the "
            "thresholds for this portfolio before serving it."
        )
    psi_rows = [
        (
            html.escape(k),
            f"{v:.4f}",
            "stable" if v < PSI_STABLE else ("moderate shift" if v < PSI_SHIFT else "SHIFT"),
        )
        for k, v in sorted(quality.psi.items(), key=lambda kv: -kv[1])
    ]
    importance_rows = [
        (
            html.escape(k),
            _pct(quality.importance.get(k, 0.0)),
            f"{quality.shap_mean_abs[k]:.4f}",
        )
        for k in sorted(quality.shap_mean_abs, key=lambda n: -quality.shap_mean_abs[n])
    ]
    mono_rows = [
        (
            html.escape(m.feature),
            "increasing" if m.direction > 0 else "decreasing",
            f"{m.rows:,}",
            str(m.grid),
            str(m.violations),
            f"{m.worst:.2e}",
            "held" if m.violations == 0 else "<strong>BROKEN</strong>",
        )
        for m in quality.monotone
    ]
    mono = (
        _table(
            ("Feature", "Constraint", "Rows", "Grid points", "Steps against", "Worst", "Result"),
            mono_rows,
            numeric_from=2,
        )
        if mono_rows
        else "<p>The spec constrains no feature.</p>"
    )
    return f"""<h2>Discrimination</h2>
<p>Holdout AUC {auc:.4f}, 95 % DeLong interval [{low:.4f}, {high:.4f}] (n = {evaluation.n:,},
{evaluation.n_positive:,} defaults).</p>
<h2>Training part vs holdout (overfitting)</h2>
{_table(("Metric", "Training part", "Holdout", "Holdout - training"), fit_rows, numeric_from=1)}
<h2>Gains and lift by PD decile (holdout, riskiest first)</h2>
{
        _table(
            (
                "Decile",
                "Rows",
                "Bads",
                "Min PD",
                "Max PD",
                "Bad rate",
                "Cum. rows",
                "Cum. bads caught",
                "Lift",
                "Cum. lift",
            ),
            gains_rows,
            numeric_from=1,
        )
    }
<h2>Decision bands under the configured policy (holdout)</h2>
<p>{band_note}</p>
{
        _table(
            ("Decision", "PD", "Rows", "Share", "Bads", "Bad rate", "Share of all bads"),
            bands_rows,
            numeric_from=2,
        )
    }
<h2>Population stability, training part -> holdout</h2>
<p>PSI (Evidently's, as the drift worker computes it): below {PSI_STABLE} stable, up to
{PSI_SHIFT} a moderate shift, above it a significant one.</p>
{_table(("Column", "PSI", "Reading"), psi_rows, numeric_from=1)}
<h2>Importance and explanations</h2>
<p>Share of XGBoost's total gain, and mean |TreeSHAP| (log-odds) from the native TreeSHAP the
server explains with, on {len(quality.shap_values):,} holdout rows.</p>
{_table(("Feature", "Gain share", "Mean |SHAP|"), importance_rows, numeric_from=1)}
<h2>Monotone constraints</h2>
<p>Each constrained feature moved over a grid of its holdout values for every sampled row, the
other features held: the PD may never move against the constraint.</p>
{mono}
"""


def _render_html(
    title: str,
    evaluation: Evaluation,
    details: Mapping[str, str | float | int],
    quality: Quality | None = None,
) -> str:
    """Build the report page."""
    detail_rows = [(html.escape(str(k)), _fmt(v)) for k, v in details.items()]
    metrics = evaluation.metrics()
    metric_rows: list[tuple[str, str]] = []
    for key, value in metrics.items():
        shown = str(int(value)) if key in ("n", "n_positive") else _fmt_num(value)
        metric_rows.append((html.escape(key), shown))
        if key == "ks":
            metric_rows.append(("ks_threshold", _fmt_num(evaluation.ks_threshold)))
    calibration_rows = [
        (
            str(i),
            _fmt_num(b.lower),
            _fmt_num(b.upper),
            str(b.count),
            _fmt_num(b.mean_pd),
            _fmt_num(b.observed_rate),
            _fmt_num(b.mean_pd - b.observed_rate),
        )
        for i, b in enumerate(evaluation.calibration, start=1)
    ]
    plots = [
        (ROC_PNG, "ROC curve"),
        (KS_PNG, "Kolmogorov-Smirnov"),
        (CALIBRATION_PNG, "Calibration"),
        (SCORE_DISTRIBUTION_PNG, "Score distribution"),
    ]
    if quality is not None:
        plots += [
            (GAINS_PNG, "Gains by PD decile"),
            (PSI_PNG, "Population stability"),
            (IMPORTANCE_PNG, "Importance (gain)"),
            (SHAP_PNG, "SHAP summary"),
        ]
    figures = "\n".join(
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}"'
        ' width="600">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in plots
    )
    extra = "" if quality is None else _quality_html(quality, evaluation)
    t = html.escape(title)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{t}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{t}</h1>
<h2>Details</h2>
{_table(("Key", "Value"), detail_rows, numeric_from=2)}
<h2>Metrics</h2>
{_table(("Metric", "Value"), metric_rows, numeric_from=1)}
<h2>Calibration</h2>
<p>{_CALIBRATION_NOTE}</p>
{_table(_CALIBRATION_HEADER, calibration_rows, numeric_from=1)}
{extra}
<h2>Plots</h2>
<div class="plots">
{figures}
</div>
</body>
</html>
"""


def write_report(
    out_dir: Path,
    *,
    title: str,
    y_true: npt.NDArray[np.integer] | npt.NDArray[np.floating],
    pd: npt.NDArray[np.floating],
    score: npt.NDArray[np.floating] | npt.NDArray[np.integer],
    evaluation: Evaluation,
    details: Mapping[str, str | float | int],
    quality: Quality | None = None,
    feature_names: Sequence[str] = (),
) -> list[Path]:
    """Write PNG plots and an HTML page summarising a model evaluation.

    Files written to ``out_dir`` (created if missing, existing files of the
    same name are overwritten): ``report.html``, ``roc.png``, ``ks.png``,
    ``calibration.png`` and ``score_distribution.png``.

    Args:
        out_dir: Directory to write into.
        title: Page title (escaped).
        y_true: Observed outcomes, 1 = default (bad), 0 = good.
        pd: Predicted probabilities of default, aligned with ``y_true``.
        score: Scorecard score (any scale), aligned with ``y_true``.
        evaluation: Result of :func:`training.evaluate.evaluate` on
            ``(y_true, pd)``.
        details: Free-form key/value pairs shown at the top of the page
            (model name, dataset, split, ...). Keys and values are escaped.
        quality: The committee's sections (:mod:`training.quality`): with it the page adds
            them and four more plots (gains, PSI, importance, SHAP summary), and every plot
            title carries ``quality.subject``.
        feature_names: The model's inputs in vector order (needed with ``quality``).

    Returns:
        The written paths, ``report.html`` first, then the four PNGs.

    Raises:
        ValueError: If the arrays are not 1-D, differ in length, do not match
            ``evaluation.n``, ``y_true`` is not 0/1 or ``score`` is not finite.
    """
    y_arr = np.asarray(y_true)
    p = np.asarray(pd, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    if y_arr.ndim != 1 or p.ndim != 1 or s.ndim != 1:
        raise ValueError("y_true, pd and score must be 1-D arrays")
    if not (y_arr.shape[0] == p.shape[0] == s.shape[0] == evaluation.n):
        raise ValueError(
            "y_true, pd, score and evaluation.n must agree in length, got "
            f"{y_arr.shape[0]}, {p.shape[0]}, {s.shape[0]} and {evaluation.n}"
        )
    if not np.isin(y_arr, (0, 1)).all():
        raise ValueError("y_true must contain only 0 (good) and 1 (bad)")
    if not np.isfinite(s).all():
        raise ValueError("score must be finite")
    y = y_arr.astype(np.int64)

    out_dir.mkdir(parents=True, exist_ok=True)
    subject = quality.subject if quality is not None else ""
    pngs = [
        _save(out_dir / ROC_PNG, lambda ax: _plot_roc(ax, y, p, evaluation), subject),
        _save(out_dir / KS_PNG, lambda ax: _plot_ks(ax, y, p, evaluation), subject),
        _save(out_dir / CALIBRATION_PNG, lambda ax: _plot_calibration(ax, evaluation), subject),
        _save(out_dir / SCORE_DISTRIBUTION_PNG, lambda ax: _plot_scores(ax, y, s), subject),
    ]
    if quality is not None:
        if len(feature_names) != quality.shap_values.shape[1]:
            raise ValueError("feature_names must name every column of the SHAP values")
        tall = (_FIGSIZE[0] + 1.5, _FIGSIZE[1] + 1.5)
        q = quality
        pngs += [
            _save(out_dir / GAINS_PNG, lambda ax: _plot_gains(ax, q.gains), subject),
            _save(out_dir / PSI_PNG, lambda ax: _plot_psi(ax, q.psi), subject, tall),
            _save(
                out_dir / IMPORTANCE_PNG,
                lambda ax: _plot_importance(ax, q.importance),
                subject,
                tall,
            ),
            _save(out_dir / SHAP_PNG, lambda ax: _plot_shap(ax, q, feature_names), subject, tall),
        ]
    html_path = out_dir / REPORT_HTML
    html_path.write_text(_render_html(title, evaluation, details, quality), encoding="utf-8")
    return [html_path, *pngs]
