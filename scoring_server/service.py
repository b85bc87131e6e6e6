"""The transport-agnostic scoring service: enrich from the feature store, validate, build
features, predict, decide."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from credit_core import (
    CreditError,
    InvalidRequestError,
    ModelNotReady,
    ScoreResult,
    ScoringPolicy,
)
from credit_core.errors import FeatureStoreError
from credit_core.feature_store import FeatureStore
from scoring_server.loader import EntityLookup, LoadedModel
from scoring_server.metrics import ServerMetrics

__all__ = ["RecentIds", "ScoringRequest", "ScoringService"]

log = logging.getLogger(__name__)

_FROM_STORE = "comes from the feature store; a request may not set it"


@dataclass(frozen=True, slots=True)
class ScoringRequest:
    """One applicant to score, in domain terms."""

    request_id: str
    applicant_id: str
    numeric: Mapping[str, float]
    categorical: Mapping[str, str]
    explain: bool = False


@dataclass(slots=True)
class _Prepared:
    """A request with its feature-store values merged in."""

    numeric: Mapping[str, float]
    categorical: Mapping[str, str]
    defaulted: tuple[str, ...] = ()
    degraded: bool = False
    violations: list[tuple[str, str]] = field(default_factory=list)


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
        self,
        policy: ScoringPolicy,
        *,
        max_batch_size: int,
        metrics: ServerMetrics,
        store: FeatureStore,
        store_timeout: float,
    ) -> None:
        self.policy = policy
        self.max_batch_size = max_batch_size
        self.metrics = metrics
        self.store = store
        self.store_timeout = store_timeout
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

    async def score(self, request: ScoringRequest) -> ScoreResult:
        """One applicant. Raises ``InvalidRequestError`` naming every bad field."""
        model = self._current()
        (prepared,) = await self._enrich(model, [request])
        violations = list(prepared.violations)
        if not request.request_id:
            violations.insert(0, ("request_id", "must not be empty"))
        vector, bad = model.pipeline.transform_row(prepared.numeric, prepared.categorical)
        violations.extend((f"applicant.{f}", d) for f, d in bad)
        if violations:
            raise InvalidRequestError(violations)
        pd = model.runtime.predict(vector.reshape(1, -1))
        return self._result(model, request.request_id, float(pd[0]), prepared)

    async def score_batch(self, requests: Sequence[ScoringRequest]) -> list[ScoreResult]:
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
        prepared = await self._enrich(model, requests)
        per_item = self._validate(model, requests, prepared, RecentIds(len(requests)))
        violations = [(f"requests[{i}].{f}", d) for i, v in enumerate(per_item[1]) for f, d in v]
        if violations:
            raise InvalidRequestError(violations)
        pds = model.runtime.predict(per_item[0])
        return [
            self._result(model, r.request_id, float(p), e)
            for r, p, e in zip(requests, pds, prepared, strict=True)
        ]

    async def score_each(
        self, requests: Sequence[ScoringRequest], seen_ids: RecentIds | None = None
    ) -> list[ScoreResult | CreditError]:
        """Per-item answers (streams): a bad item gets its own error, the others are scored.
        ``seen_ids``: request ids already used in this stream (a repeat is a violation)."""
        try:
            model = self._current()
            prepared = await self._enrich(model, requests)
        except (ModelNotReady, FeatureStoreError) as e:
            return [e for _ in requests]
        seen = RecentIds(len(requests)) if seen_ids is None else seen_ids
        matrix, per_item = self._validate(model, requests, prepared, seen)
        good = [i for i, v in enumerate(per_item) if not v]
        pds = iter(model.runtime.predict(matrix[good]) if good else ())
        out: list[ScoreResult | CreditError] = []
        for r, v, prep in zip(requests, per_item, prepared, strict=True):
            if v:
                out.append(InvalidRequestError(v))
            else:
                out.append(self._result(model, r.request_id, float(next(pds)), prep))
        return out

    async def _enrich(
        self, model: LoadedModel, requests: Sequence[ScoringRequest]
    ) -> list[_Prepared]:
        """Merge the feature store's values for each applicant (one round trip for all)."""
        lookup = model.entity
        if lookup is None:
            return [_Prepared(r.numeric, r.categorical) for r in requests]
        ids = list(dict.fromkeys(r.applicant_id for r in requests if r.applicant_id))
        degraded = False
        found: dict[str, dict[str, float | str] | None] = {}
        if ids:
            started = time.perf_counter()
            try:
                rows = await self.store.get_many(lookup.namespace, ids, self.store_timeout)
                found = dict(zip(ids, rows, strict=True))
            except FeatureStoreError as e:
                self.metrics.store_failures.inc()
                if not lookup.optional:
                    raise
                degraded = True
                log.warning("feature store failed, scoring degraded: %s", e)
            finally:
                self.metrics.store_latency.observe(time.perf_counter() - started)
        return [_merge(lookup, r, found.get(r.applicant_id), degraded) for r in requests]

    def _validate(
        self,
        model: LoadedModel,
        requests: Sequence[ScoringRequest],
        prepared: Sequence[_Prepared],
        seen: RecentIds,
    ) -> tuple[npt.NDArray[np.float32], list[list[tuple[str, str]]]]:
        matrix, row_violations = model.pipeline.transform_rows(
            [(p.numeric, p.categorical) for p in prepared]
        )
        per_item: list[list[tuple[str, str]]] = []
        for r, p, bad in zip(requests, prepared, row_violations, strict=True):
            v: list[tuple[str, str]] = []
            if not r.request_id:
                v.append(("request_id", "must not be empty"))
            elif r.request_id in seen:
                v.append(("request_id", f"duplicate request id {r.request_id!r}"))
            else:
                seen.add(r.request_id)
            v.extend(p.violations)
            v.extend((f"applicant.{f}", d) for f, d in bad)
            per_item.append(v)
        return matrix, per_item

    def _result(
        self, model: LoadedModel, request_id: str, pd: float, prepared: _Prepared
    ) -> ScoreResult:
        self.metrics.applicants.labels(model.ref.version, model.ref.variant).inc()
        if prepared.degraded:
            self.metrics.degraded.inc()
        return ScoreResult(
            request_id=request_id,
            pd=pd,
            score=self.policy.score(pd),
            decision=self.policy.decide(pd),
            model=model.ref,
            defaulted=prepared.defaulted,
            degraded=prepared.degraded,
        )


def _merge(
    lookup: EntityLookup,
    request: ScoringRequest,
    stored: Mapping[str, float | str] | None,
    degraded: bool,
) -> _Prepared:
    """Stored values fill the entity inputs; a request may set one only where the spec allows."""
    numeric = dict(request.numeric)
    categorical = dict(request.categorical)
    violations: list[tuple[str, str]] = []
    if not request.applicant_id:
        violations.append(
            ("applicant.applicant_id", "required: this model looks up features by applicant id")
        )
    for name in lookup.inputs:
        sent = name in numeric or name in categorical
        if sent:
            if name not in lookup.overridable:
                where = "numeric" if name in numeric else "categorical"
                violations.append((f"applicant.{where}.{name}", _FROM_STORE))
            continue
        if stored is not None and name in stored:
            value = stored[name]
            if name in lookup.categorical:
                categorical[name] = str(value)
            else:
                numeric[name] = value  # type: ignore[assignment]  # the kernel checks the type
    defaulted = tuple(n for n in lookup.inputs if n not in numeric and n not in categorical)
    return _Prepared(numeric, categorical, defaulted, degraded, violations)
