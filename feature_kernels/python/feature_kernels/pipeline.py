"""``FeaturePipeline``: a spec compiled into the Rust kernels, with its two call paths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from feature_kernels._core import FeatureError, FeaturePlan
from feature_kernels.spec import FeatureSpec

if TYPE_CHECKING:
    import polars as pl

__all__ = ["FeaturePipeline", "Violation", "feature_error_violations"]

Violation = tuple[str, str]
"""(field, description). Row path fields are ``numeric.<input>`` or ``categorical.<input>``."""

_MONOTONE = {"increasing": 1, "decreasing": -1, "none": 0}


class FeaturePipeline:
    """The transforms of one spec. Cheap to call; build once per spec.

    Example:
        >>> from feature_kernels import parse_spec, FeaturePipeline
        >>> spec = parse_spec({
        ...     "name": "demo", "version": 1,
        ...     "target": {"column": "y", "positive": [1]},
        ...     "inputs": {"income": {"type": "number", "range": [0, None]}},
        ...     "features": [{"name": "log_income", "op": "log1p", "input": "income",
        ...                   "reason": "Income is low"}],
        ... })
        >>> p = FeaturePipeline(spec)
        >>> vec, bad = p.transform_row({"income": 0.0}, {})
        >>> float(vec[0]), bad
        (0.0, [])
        >>> p.transform_row({"income": -1.0}, {})[1]
        [('numeric.income', 'value -1 is outside the allowed range [0, unbounded]')]
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._plan = FeaturePlan(spec.plan_json())
        outputs = spec.output_features()
        self.feature_names: list[str] = self._plan.output_names
        if [n for n, _ in outputs] != self.feature_names:  # both sides must agree on the layout
            raise RuntimeError("spec and kernel disagree on the feature layout")
        self.monotone: list[int] = [
            0 if f.op == "one_hot" else _MONOTONE[f.monotone] for _, f in outputs
        ]
        self.reasons: list[str] = [f.reason for _, f in outputs]
        numeric, categorical = self._plan.input_names
        self.numeric_inputs: list[str] = numeric
        self.categorical_inputs: list[str] = categorical

    @property
    def plan(self) -> FeaturePlan:
        """The compiled plan (the data plane evaluates it per request, without Python)."""
        return self._plan

    @property
    def schema_hash(self) -> str:
        """sha256 of the canonical plan; stored with every model trained on this spec."""
        return self._plan.schema_hash

    @property
    def n_features(self) -> int:
        return self._plan.n_outputs

    def transform_row(
        self, numeric: Mapping[str, float], categorical: Mapping[str, str]
    ) -> tuple[npt.NDArray[np.float32], list[Violation]]:
        """Row path: one request. A non-empty violation list means the vector is unusable."""
        return self._plan.transform_row(_as_dict(numeric), _as_dict(categorical))

    def transform_rows(
        self, rows: Sequence[tuple[Mapping[str, float], Mapping[str, str]]]
    ) -> tuple[npt.NDArray[np.float32], list[list[Violation]]]:
        """Row path over a micro-batch, one native call. Bad rows come back all-NaN."""
        return self._plan.transform_rows([(_as_dict(n), _as_dict(c)) for n, c in rows])

    def decode_score_requests(
        self, data: bytes, *, batch: bool
    ) -> tuple[list[str], list[str], list[bool], npt.NDArray[np.float32], list[list[Violation]]]:
        """The data plane's decoder on ``ScoreBatchRequest`` (``batch``) or ``ScoreRequest``
        protobuf bytes: ``(request_ids, applicant_ids, explain, matrix, violations)``; matrix and
        violations are exactly what ``transform_rows`` gives for the same maps. Raises
        ``ValueError`` for malformed bytes. (Tests tie the decoder to protobuf through it.)"""
        return self._plan.decode_score_requests(data, batch)

    def transform_columns(
        self,
        numeric: Mapping[str, npt.NDArray[np.float64]],
        categorical: Mapping[str, Sequence[str | None]],
        n_rows: int,
    ) -> npt.NDArray[np.float32]:
        """Column path, keyed by input name. Numeric NaN means missing. Raises ``FeatureError``."""
        return self._plan.transform_columns(
            {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in numeric.items()},
            {k: list(v) for k, v in categorical.items()},
            n_rows,
        )

    def transform_frame(self, frame: pl.DataFrame) -> npt.NDArray[np.float32]:
        """Column path from a Polars frame whose columns are named as the spec's ``column``s.

        Numeric nulls become NaN (missing); categorical values are read as strings.
        """
        import polars as pl

        numeric: dict[str, npt.NDArray[np.float64]] = {}
        categorical: dict[str, list[str | None]] = {}
        for name in self.numeric_inputs:
            col = self.spec.column_of(name)
            if col in frame.columns:
                numeric[name] = frame.get_column(col).cast(pl.Float64).fill_null(np.nan).to_numpy()
        for name in self.categorical_inputs:
            col = self.spec.column_of(name)
            if col in frame.columns:
                categorical[name] = frame.get_column(col).cast(pl.String).to_list()
        return self.transform_columns(numeric, categorical, frame.height)


def _as_dict(m: Mapping[str, object]) -> dict[str, object]:
    return m if type(m) is dict else dict(m)


def feature_error_violations(err: FeatureError) -> list[Violation]:
    """The (field, description) list carried by a ``FeatureError``."""
    return list(err.args[1]) if len(err.args) > 1 else []
