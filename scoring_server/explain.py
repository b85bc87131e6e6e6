"""Explanations at serve time: exact TreeSHAP (native, ``feature_kernels.TreeEnsemble``) turned
into per-feature contributions and adverse-action reason codes.

Reason codes follow the feature spec: a code is a spec feature's name and its text is the spec's
``reason``. The columns of one spec feature (the one-hot columns of a category) are summed into
one reason. Only features whose total raised the risk (SHAP value > 0 in log-odds) can be reasons,
largest first, ties in spec order, at most ``top_k``: a feature that lowered the risk is never
named.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from credit_core import Explanation, ReasonCode
from feature_kernels import FeaturePipeline, TreeEnsemble

__all__ = ["Explainer"]


@dataclass(frozen=True, slots=True)
class _Group:
    code: str
    text: str
    columns: npt.NDArray[np.intp]


class Explainer:
    def __init__(self, ensemble: TreeEnsemble, pipeline: FeaturePipeline, top_k: int) -> None:
        self.ensemble = ensemble
        self.top_k = top_k
        self.feature_names = tuple(pipeline.feature_names)
        columns: dict[str, list[int]] = {}
        texts: dict[str, str] = {}
        for i, (_, feature) in enumerate(pipeline.spec.output_features()):
            columns.setdefault(feature.name, []).append(i)
            texts[feature.name] = feature.reason
        self._groups = [
            _Group(code, texts[code], np.array(cols, dtype=np.intp))
            for code, cols in columns.items()
        ]
        self._single = all(len(g.columns) == 1 for g in self._groups)

    def contributions(self, x: npt.NDArray[np.float32]) -> tuple[float, npt.NDArray[np.float64]]:
        """(base value, SHAP values [rows, features]) in log-odds."""
        base, values = self.ensemble.shap(np.ascontiguousarray(x, dtype=np.float32))
        return float(base), values

    def explain(self, x: npt.NDArray[np.float32]) -> list[Explanation]:
        """One explanation per row of ``x`` (the model's feature matrix)."""
        base, values = self.contributions(x)
        if self._single:
            grouped = values[:, [int(g.columns[0]) for g in self._groups]]
        else:
            grouped = np.stack([values[:, g.columns].sum(axis=1) for g in self._groups], axis=1)
        out = []
        for row, totals in zip(values, grouped, strict=True):
            raised = [j for j in np.argsort(-totals, kind="stable") if totals[j] > 0.0]
            out.append(
                Explanation(
                    base_value=base,
                    contributions=tuple(zip(self.feature_names, row.tolist(), strict=True)),
                    reasons=tuple(
                        ReasonCode(self._groups[j].code, self._groups[j].text, float(totals[j]))
                        for j in raised[: self.top_k]
                    ),
                )
            )
        return out
