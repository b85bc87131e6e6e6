"""The transport-agnostic scoring service: validate, build features, predict, decide."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from credit_core import (
    CreditError,
    InvalidRequestError,
    ModelNotReady,
    ScoreResult,
    ScoringPolicy,
)
from scoring_server.loader import LoadedModel
from scoring_server.metrics import ServerMetrics

__all__ = ["RecentIds", "ScoringRequest", "ScoringService"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScoringRequest:
    """One applicant to score, in domain terms."""

    request_id: str
    applicant_id: str
    numeric: Mapping[str, float]
    categorical: Mapping[str, str]
    explain: bool = False


class RecentIds:
    """The last ``capacity`` request ids seen (a stream's duplicate check, bounded memory)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._ids: dict[str, None] = {}

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._ids

    def add(self, request_id: str) -> None:
        self._ids[request_id] = None
        if len(self._ids) > self.capacity:
            del self._ids[next(iter(self._ids))]


class ScoringService:
    """Scores requests with the current model. ``set_model`` swaps the model atomically: a call
    takes one reference to the model at its start and finishes on it."""

    def __init__(
        self, policy: ScoringPolicy, *, max_batch_size: int, metrics: ServerMetrics
    ) -> None:
        self.policy = policy
        self.max_batch_size = max_batch_size
        self.metrics = metrics
        self._model: LoadedModel | None = None

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    def set_model(self, model: LoadedModel) -> None:
        old, self._model = self._model, model
        r = model.ref
        if old is not None:
            o = old.ref
            self.metrics.model_info.remove(o.name, o.version, o.variant, old.bundle.schema_hash)
        self.metrics.model_info.labels(r.name, r.version, r.variant, model.bundle.schema_hash).set(
            1
        )
        self.metrics.compile_seconds.set(model.runtime.compile_seconds)
        self.metrics.parity_diff.set(model.parity_max_abs_diff)

    def _current(self) -> LoadedModel:
        model = self._model
        if model is None:
            raise ModelNotReady("no model is loaded yet")
        return model

    def score(self, request: ScoringRequest) -> ScoreResult:
        """One applicant. Raises ``InvalidRequestError`` naming every bad field."""
        model = self._current()
        violations: list[tuple[str, str]] = []
        if not request.request_id:
            violations.append(("request_id", "must not be empty"))
        vector, bad = model.pipeline.transform_row(request.numeric, request.categorical)
        violations.extend((f"applicant.{f}", d) for f, d in bad)
        if violations:
            raise InvalidRequestError(violations)
        pd = model.runtime.predict(vector.reshape(1, -1))
        return self._result(model, request.request_id, float(pd[0]))

    def score_batch(self, requests: Sequence[ScoringRequest]) -> list[ScoreResult]:
        """All or nothing: any bad request fails the batch, naming ``requests[i].<field>``."""
        if not requests:
            raise InvalidRequestError([("requests", "must hold at least one request")])
        if len(requests) > self.max_batch_size:
            raise InvalidRequestError(
                [
                    (
                        "requests",
                        f"{len(requests)} requests exceed the limit of {self.max_batch_size}",
                    )
                ]
            )
        model = self._current()
        matrix, per_item = self._prepare(model, requests)
        violations = [(f"requests[{i}].{f}", d) for i, v in enumerate(per_item) for f, d in v]
        if violations:
            raise InvalidRequestError(violations)
        pds = model.runtime.predict(matrix)
        return [
            self._result(model, r.request_id, float(p)) for r, p in zip(requests, pds, strict=True)
        ]

    def score_each(
        self, requests: Sequence[ScoringRequest], seen_ids: RecentIds | None = None
    ) -> list[ScoreResult | CreditError]:
        """Per-item answers (streams): a bad item gets its own error, the others are scored.
        ``seen_ids``: request ids already used in this stream (a repeat is a violation)."""
        try:
            model = self._current()
        except ModelNotReady as e:
            return [e for _ in requests]
        matrix, per_item = self._prepare(model, requests, seen_ids)
        good = [i for i, v in enumerate(per_item) if not v]
        pds = iter(model.runtime.predict(matrix[good]) if good else ())
        out: list[ScoreResult | CreditError] = []
        for r, v in zip(requests, per_item, strict=True):
            if v:
                out.append(InvalidRequestError(v))
            else:
                out.append(self._result(model, r.request_id, float(next(pds))))
        return out

    def _prepare(
        self,
        model: LoadedModel,
        requests: Sequence[ScoringRequest],
        seen_ids: RecentIds | None = None,
    ) -> tuple[npt.NDArray[np.float32], list[list[tuple[str, str]]]]:
        matrix, row_violations = model.pipeline.transform_rows(
            [(r.numeric, r.categorical) for r in requests]
        )
        seen = RecentIds(len(requests)) if seen_ids is None else seen_ids
        per_item: list[list[tuple[str, str]]] = []
        for r, bad in zip(requests, row_violations, strict=True):
            v: list[tuple[str, str]] = []
            if not r.request_id:
                v.append(("request_id", "must not be empty"))
            elif r.request_id in seen:
                v.append(("request_id", f"duplicate request id {r.request_id!r}"))
            else:
                seen.add(r.request_id)
            v.extend((f"applicant.{f}", d) for f, d in bad)
            per_item.append(v)
        return matrix, per_item

    def _result(self, model: LoadedModel, request_id: str, pd: float) -> ScoreResult:
        self.metrics.applicants.labels(model.ref.version, model.ref.variant).inc()
        return ScoreResult(
            request_id=request_id,
            pd=pd,
            score=self.policy.score(pd),
            decision=self.policy.decide(pd),
            model=model.ref,
        )
