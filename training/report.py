"""Static HTML + PNG evaluation report for a probability-of-default model.

:func:`write_report` renders the plots a credit-risk reviewer expects (ROC,
KS, calibration, score distribution) with matplotlib's non-interactive Agg
backend and ties them together in a single ``report.html`` that references
the images by relative file name, so the output directory can be archived or
attached to a model-registry run as-is.
"""

from __future__ import annotations

import html
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

__all__ = [
    "CALIBRATION_PNG",
    "KS_PNG",
    "REPORT_HTML",
    "ROC_PNG",
    "SCORE_DISTRIBUTION_PNG",
    "write_report",
]

REPORT_HTML = "report.html"
ROC_PNG = "roc.png"
KS_PNG = "ks.png"
CALIBRATION_PNG = "calibration.png"
SCORE_DISTRIBUTION_PNG = "score_distribution.png"

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


def _save(path: Path, draw: Callable[[Axes], None]) -> Path:
    """Create a figure, let ``draw`` fill its axes, save it as PNG and close it.

    Args:
        path: Destination file.
        draw: Callback that draws on the single axes of the figure.

    Returns:
        ``path``.
    """
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    try:
        draw(ax)
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


def _render_html(
    title: str, evaluation: Evaluation, details: Mapping[str, str | float | int]
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
    figures = "\n".join(
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}"'
        ' width="600">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in (
            (ROC_PNG, "ROC curve"),
            (KS_PNG, "Kolmogorov-Smirnov"),
            (CALIBRATION_PNG, "Calibration"),
            (SCORE_DISTRIBUTION_PNG, "Score distribution"),
        )
    )
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
    pngs = [
        _save(out_dir / ROC_PNG, lambda ax: _plot_roc(ax, y, p, evaluation)),
        _save(out_dir / KS_PNG, lambda ax: _plot_ks(ax, y, p, evaluation)),
        _save(out_dir / CALIBRATION_PNG, lambda ax: _plot_calibration(ax, evaluation)),
        _save(out_dir / SCORE_DISTRIBUTION_PNG, lambda ax: _plot_scores(ax, y, s)),
    ]
    html_path = out_dir / REPORT_HTML
    html_path.write_text(_render_html(title, evaluation, details), encoding="utf-8")
    return [html_path, *pngs]
