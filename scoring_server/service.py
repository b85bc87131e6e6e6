"""The transport-agnostic scoring service: enrich from the feature store, validate, build
features, predict, decide."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter

from credit_core import (
    CreditError,
    Explanation,
    InvalidRequestError,
    ModelNotReady,
    ModelRef,
    Routing,
    ScoreResult,
    ScoringPolicy,
)
from credit_core.errors import FeatureStoreError
from credit_core.evaluation import OutcomeRecord, PredictionRecord
from credit_core.evaluation import Variant as EvalVariant
from credit_core.feature_store import FeatureStore
from scoring_server.loader import EntityLookup, LoadedModel
from scoring_server.metrics import ServerMetrics

__all__ = [
    "FeatureBatch",
    "OutcomeReport",
    "OutcomeSink",
    "PredictionSink",
    "RecentIds",
    "ScoredBatch",
    "ScoringRequest",
    "ScoringService",
    "Variants",
    "routing_bucket",
]

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
    numeric_values: Sequence[float] = ()
    """The numeric inputs as one vector (``Applicant.numeric_values``), instead of ``numeric``."""


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


class PredictionSink(Protocol):
    """Takes prediction records without blocking the caller for long (buffered)."""

    def write(self, records: Sequence[PredictionRecord]) -> None: ...


class OutcomeSink(Protocol):
    def write(self, records: Sequence[OutcomeRecord]) -> None: ...

    def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class OutcomeReport:
    """An observed outcome as reported by a caller (``observed_at`` 0: now)."""

    request_id: str
    applicant_id: str
    defaulted: bool
    observed_at: float = 0.0


def _by_model(
    variants: Variants, requests: Sequence[ScoringRequest]
) -> Iterator[tuple[LoadedModel, list[int]]]:
    """The requests' indexes grouped by the model that answers them (champion first)."""
    if variants.challenger is None or variants.routing.mode != "split":
        yield variants.champion, list(range(len(requests)))
        return
    groups: dict[int, list[int]] = {}
    models: dict[int, LoadedModel] = {}
    for i, r in enumerate(requests):
        m = variants.answering(r)
        groups.setdefault(id(m), []).append(i)
        models[id(m)] = m
    for key, idx in groups.items():
        yield models[key], idx


def _numeric_inputs(
    model: LoadedModel, request: ScoringRequest
) -> tuple[Mapping[str, float], list[tuple[str, str]]]:
    """The request's numeric inputs by name, from ``numeric`` or from ``numeric_values`` (the
    rule the native decoder applies too: ``dense_violation`` in ``feature_kernels``)."""
    values = request.numeric_values
    if not values:
        return request.numeric, []
    field = "applicant.numeric_values"
    if request.numeric:
        return request.numeric, [
            (field, "send the numeric inputs in `numeric` or in `numeric_values`, not both")
        ]
    names = model.pipeline.numeric_inputs
    if len(values) != len(names):
        return request.numeric, [
            (
                field,
                f"expected {len(names)} values (the numeric inputs in GetModelInfo order), "
                f"got {len(values)}",
            )
        ]
    return {n: v for n, v in zip(names, values, strict=True) if not math.isnan(v)}, []


def _violation_order(v: tuple[str, str]) -> int:
    """``requests[i].field`` violations back in request order after grouping by model (the sort
    is stable: a request's own violations keep their order)."""
    head, _, _ = v[0].partition("]")
    return int(head.removeprefix("requests["))


def _id_violations(request_id: str, seen: RecentIds) -> list[tuple[str, str]]:
    """An empty or repeated request id; a new one is remembered in ``seen``."""
    if not request_id:
        return [("request_id", "must not be empty")]
    if request_id in seen:
        return [("request_id", f"duplicate request id {request_id!r}")]
    seen.add(request_id)
    return []


def _explanations(
    model: LoadedModel, requests: Sequence[ScoringRequest], matrix: npt.NDArray[np.float32]
) -> dict[int, Explanation]:
    """Explanations of the rows whose request asked for one (one native call for all)."""
    rows = [i for i, r in enumerate(requests) if r.explain]
    if not rows:
        return {}
    return dict(zip(rows, model.explainer.explain(matrix[rows]), strict=True))


def routing_bucket(key: str) -> float:
    """A stable point in [0, 1) for an id (the same on every process, host and restart)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True, slots=True)
class Variants:
    """What is served, swapped as one object: a call takes it once and finishes on it."""

    champion: LoadedModel
    challenger: LoadedModel | None = None
    routing: Routing = field(default_factory=Routing)

    def answering(self, request: ScoringRequest) -> LoadedModel:
        """The model whose answer the caller gets. In ``split`` mode an applicant always meets
        the same variant (hash of ``applicant_id``; of ``request_id`` when it has none)."""
        if self.challenger is None or self.routing.mode != "split":
            return self.champion
        key = request.applicant_id or request.request_id
        return (
            self.challenger
            if routing_bucket(key) < self.routing.challenger_share
            else self.champion
        )

    @property
    def shadow(self) -> LoadedModel | None:
        """In ``shadow`` mode, the model that scores every request beside the champion."""
        return self.challenger if self.routing.mode == "shadow" else None

    @property
    def models(self) -> tuple[LoadedModel, ...]:
        return (self.champion,) if self.challenger is None else (self.champion, self.challenger)


@dataclass(frozen=True, slots=True)
class FeatureBatch:
    """Requests already turned into the model's feature matrix by the wire layer (the native
    decoder): ids, and per row the kernel's violations (``numeric.age``, ...)."""

    request_ids: Sequence[str]
    applicant_ids: Sequence[str]
    matrix: npt.NDArray[np.float32]
    violations: Sequence[Sequence[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    """Answers of a ``FeatureBatch``, as columns."""

    request_ids: Sequence[str]
    pd: npt.NDArray[np.float64]
    score: npt.NDArray[np.int32]
    decision: npt.NDArray[np.int8]
    """Indexes into ``credit_core.domain.DECISIONS``."""
    model: ModelRef


class ScoringService:
    """Scores requests with the models being served. ``set_variants`` swaps them atomically: a
    call takes one reference at its start and finishes on it."""

    def __init__(
        self,
        policy: ScoringPolicy,
        *,
        max_batch_size: int,
        metrics: ServerMetrics,
        store: FeatureStore,
        store_timeout: float,
        predictions: PredictionSink | None = None,
        outcomes: OutcomeSink | None = None,
    ) -> None:
        self.policy = policy
        self.max_batch_size = max_batch_size
        self.metrics = metrics
        self.store = store
        self.store_timeout = store_timeout
        self.predictions = predictions
        """Where every prediction (served and shadow) is recorded for evaluation."""
        self.outcomes = outcomes
        """Where reported outcomes are recorded (written through before the call returns)."""
        self._variants: Variants | None = None
        self._counters: dict[tuple[str, str], Counter] = {}

    @property
    def variants(self) -> Variants | None:
        return self._variants

    def set_model(self, model: LoadedModel) -> None:
        """Serve ``model`` alone."""
        self.set_variants(Variants(model))

    def set_variants(self, variants: Variants) -> None:
        old, self._variants = self._variants, variants
        if old is not None:
            for m in old.models:
                r = m.ref
                self.metrics.model_info.remove(r.name, r.version, r.variant, m.bundle.schema_hash)
                self.metrics.parity_diff.remove(r.variant)
        for m in variants.models:
            r = m.ref
            self.metrics.model_info.labels(r.name, r.version, r.variant, m.bundle.schema_hash).set(
                1
            )
            self.metrics.parity_diff.labels(r.variant).set(m.parity_max_abs_diff)
        self.metrics.compile_seconds.set(variants.champion.runtime.compile_seconds)

    def _current(self) -> Variants:
        variants = self._variants
        if variants is None:
            raise ModelNotReady("no model is loaded yet")
        return variants

    def direct_model(self) -> LoadedModel | None:
        """The model that answers every request when an answer needs nothing but the request's
        own features: no feature-store lookup, no challenger in the traffic (split or shadow).
        The wire layer then may hand over a ``FeatureBatch`` (``score_features``)."""
        variants = self._variants
        if variants is None or variants.challenger is not None or variants.champion.entity:
            return None
        return variants.champion

    def score_features(
        self, model: LoadedModel, batch: FeatureBatch, *, prefix: bool
    ) -> ScoredBatch:
        """All or nothing, like ``score_batch`` (``prefix``: name fields ``requests[i].``, as a
        batch does; without it, as one ``Score`` does)."""
        n = len(batch.request_ids)
        if prefix:
            self._check_batch_size(n)
        seen = RecentIds(n)
        violations: list[tuple[str, str]] = []
        for i, (rid, bad) in enumerate(zip(batch.request_ids, batch.violations, strict=True)):
            head = f"requests[{i}]." if prefix else ""
            violations.extend((head + f, d) for f, d in _id_violations(rid, seen))
            violations.extend((f"{head}applicant.{f}", d) for f, d in bad)
        if violations:
            raise InvalidRequestError(violations)
        pd = model.runtime.predict(batch.matrix)
        self._counter(model).inc(n)
        if self.predictions is not None:
            now = time.time()
            ref = model.ref
            variant: EvalVariant = "challenger" if ref.variant == "challenger" else "champion"
            self.predictions.write(
                [
                    PredictionRecord(now, rid, aid, ref.name, variant, ref.version, p, True)
                    for rid, aid, p in zip(
                        batch.request_ids, batch.applicant_ids, pd.tolist(), strict=True
                    )
                ]
            )
        return ScoredBatch(
            batch.request_ids,
            pd,
            self.policy.scores(pd),
            self.policy.decision_codes(pd),
            model.ref,
        )

    def _check_batch_size(self, n: int) -> None:
        if n == 0:
            raise InvalidRequestError([("requests", "must hold at least one request")])
        if n > self.max_batch_size:
            raise InvalidRequestError(
                [("requests", f"{n} requests exceed the limit of {self.max_batch_size}")]
            )

    def _counter(self, model: LoadedModel) -> Counter:
        r = model.ref
        key = (r.version, r.variant)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = self.metrics.applicants.labels(r.version, r.variant)
        return child

    async def score(self, request: ScoringRequest) -> ScoreResult:
        """One applicant. Raises ``InvalidRequestError`` naming every bad field."""
        variants = self._current()
        model = variants.answering(request)
        (prepared,) = await self._enrich(model, [request])
        violations = _id_violations(request.request_id, RecentIds(1)) + prepared.violations
        vector, bad = model.pipeline.transform_row(prepared.numeric, prepared.categorical)
        violations.extend((f"applicant.{f}", d) for f, d in bad)
        if violations:
            raise InvalidRequestError(violations)
        x = vector.reshape(1, -1)
        pd = model.runtime.predict(x)
        explanation = model.explainer.explain(x)[0] if request.explain else None
        result = self._result(model, request, float(pd[0]), prepared, explanation)
        self._record([result], [request])
        if variants.shadow is not None:
            await self._score_shadow(variants.shadow, [request])
        return result

    async def score_batch(self, requests: Sequence[ScoringRequest]) -> list[ScoreResult]:
        """All or nothing: any bad request fails the batch, naming ``requests[i].<field>``."""
        self._check_batch_size(len(requests))
        variants = self._current()
        seen = RecentIds(len(requests))
        violations: list[tuple[str, str]] = []
        groups = []
        for model, idx in _by_model(variants, requests):
            group = [requests[i] for i in idx]
            prepared = await self._enrich(model, group)
            matrix, per_item = self._validate(model, group, prepared, seen)
            violations.extend(
                (f"requests[{i}].{f}", d) for i, v in zip(idx, per_item, strict=True) for f, d in v
            )
            groups.append((model, idx, group, prepared, matrix))
        if violations:
            violations.sort(key=_violation_order)
            raise InvalidRequestError(violations)
        out: list[ScoreResult | None] = [None] * len(requests)
        for model, idx, group, prepared, matrix in groups:
            pds = model.runtime.predict(matrix)
            explained = _explanations(model, group, matrix)
            for j, (i, r, p, e) in enumerate(zip(idx, group, pds, prepared, strict=True)):
                out[i] = self._result(model, r, float(p), e, explained.get(j))
        results = [r for r in out if r is not None]
        self._record(results, requests)
        if variants.shadow is not None:
            await self._score_shadow(variants.shadow, requests)
        return results

    async def score_each(
        self, requests: Sequence[ScoringRequest], seen_ids: RecentIds | None = None
    ) -> list[ScoreResult | CreditError]:
        """Per-item answers (streams): a bad item gets its own error, the others are scored.
        ``seen_ids``: request ids already used in this stream (a repeat is a violation)."""
        try:
            variants = self._current()
        except ModelNotReady as e:
            return [e for _ in requests]
        seen = RecentIds(len(requests)) if seen_ids is None else seen_ids
        out: list[ScoreResult | CreditError | None] = [None] * len(requests)
        scored: list[ScoringRequest] = []
        results: list[ScoreResult] = []
        for model, idx in _by_model(variants, requests):
            group = [requests[i] for i in idx]
            for i, answer in zip(idx, await self._score_group(model, group, seen), strict=True):
                out[i] = answer
                if isinstance(answer, ScoreResult):
                    scored.append(requests[i])
                    results.append(answer)
        self._record(results, scored)
        if variants.shadow is not None and scored:
            await self._score_shadow(variants.shadow, scored)
        return [a for a in out if a is not None]  # every slot was filled by its group

    async def _score_group(
        self, model: LoadedModel, requests: Sequence[ScoringRequest], seen: RecentIds
    ) -> list[ScoreResult | CreditError]:
        """One model, per-item answers: one store round trip, one kernel call, one predict."""
        try:
            prepared = await self._enrich(model, requests)
        except FeatureStoreError as e:
            return [e for _ in requests]
        matrix, per_item = self._validate(model, requests, prepared, seen)
        good = [i for i, v in enumerate(per_item) if not v]
        pds = iter(model.runtime.predict(matrix[good]) if good else ())
        explained = _explanations(model, [requests[i] for i in good], matrix[good])
        out: list[ScoreResult | CreditError] = []
        k = 0
        for r, v, prep in zip(requests, per_item, prepared, strict=True):
            if v:
                out.append(InvalidRequestError(v))
            else:
                out.append(self._result(model, r, float(next(pds)), prep, explained.get(k)))
                k += 1
        return out

    async def _score_shadow(self, model: LoadedModel, requests: Sequence[ScoringRequest]) -> None:
        """Score what the champion answered with the challenger too, for evaluation only: its
        outcome never changes the answer, and its failures are counted, not raised."""
        try:
            answers = await self._score_group(model, requests, RecentIds(len(requests)))
        except Exception:  # a shadow must never fail a served call
            log.exception("shadow scoring failed")
            self.metrics.shadow_failures.inc(len(requests))
            return
        ok = [(r, a) for r, a in zip(requests, answers, strict=True) if isinstance(a, ScoreResult)]
        if len(ok) < len(requests):
            self.metrics.shadow_failures.inc(len(requests) - len(ok))
        self._record([a for _, a in ok], [r for r, _ in ok], served=False)

    async def record_outcomes(self, reports: Sequence[OutcomeReport]) -> int:
        """All or nothing: every outcome is validated, then all are written to disk before this
        returns. Raises ``InvalidRequestError`` naming ``outcomes[i].<field>``."""
        if self.outcomes is None:
            raise ModelNotReady("this server records no outcomes (no evaluation log)")
        if not reports:
            raise InvalidRequestError([("outcomes", "must hold at least one outcome")])
        if len(reports) > self.max_batch_size:
            raise InvalidRequestError(
                [("outcomes", f"{len(reports)} outcomes exceed the limit of {self.max_batch_size}")]
            )
        violations: list[tuple[str, str]] = []
        for i, r in enumerate(reports):
            if not r.request_id and not r.applicant_id:
                violations.append((f"outcomes[{i}]", "needs a request_id or an applicant_id"))
            if not (math.isfinite(r.observed_at) and r.observed_at >= 0):
                violations.append(
                    (f"outcomes[{i}].observed_at", "must be a Unix time in seconds (0: now)")
                )
        if violations:
            raise InvalidRequestError(violations)
        now = time.time()
        self.outcomes.write(
            [
                OutcomeRecord(
                    ts=now,
                    request_id=r.request_id,
                    applicant_id=r.applicant_id,
                    defaulted=r.defaulted,
                    observed_at=r.observed_at or now,
                )
                for r in reports
            ]
        )
        await asyncio.to_thread(self.outcomes.flush)
        return len(reports)

    def _record(
        self,
        results: Sequence[ScoreResult],
        requests: Sequence[ScoringRequest],
        *,
        served: bool = True,
    ) -> None:
        sink = self.predictions
        if sink is None or not results:
            return
        now = time.time()
        sink.write(
            [
                PredictionRecord(
                    ts=now,
                    request_id=res.request_id,
                    applicant_id=req.applicant_id,
                    model_name=res.model.name,
                    variant="challenger" if res.model.variant == "challenger" else "champion",
                    model_version=res.model.version,
                    pd=res.pd,
                    served=served,
                )
                for res, req in zip(results, requests, strict=True)
            ]
        )

    async def _enrich(
        self, model: LoadedModel, requests: Sequence[ScoringRequest]
    ) -> list[_Prepared]:
        """Merge the feature store's values for each applicant (one round trip for all)."""
        lookup = model.entity
        if lookup is None:
            prepared = []
            for r in requests:
                numeric, bad = _numeric_inputs(model, r)
                prepared.append(_Prepared(numeric, r.categorical, violations=bad))
            return prepared
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
        return [
            _merge(lookup, r, found.get(r.applicant_id), degraded, _numeric_inputs(model, r))
            for r in requests
        ]

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
            v = _id_violations(r.request_id, seen)
            v.extend(p.violations)
            v.extend((f"applicant.{f}", d) for f, d in bad)
            per_item.append(v)
        return matrix, per_item

    def _result(
        self,
        model: LoadedModel,
        request: ScoringRequest,
        pd: float,
        prepared: _Prepared,
        explanation: Explanation | None = None,
    ) -> ScoreResult:
        self._counter(model).inc()
        if prepared.degraded:
            self.metrics.degraded.inc()
        return ScoreResult(
            request_id=request.request_id,
            pd=pd,
            score=self.policy.score(pd),
            decision=self.policy.decide(pd),
            model=model.ref,
            defaulted=prepared.defaulted,
            degraded=prepared.degraded,
            explanation=explanation,
        )


def _merge(
    lookup: EntityLookup,
    request: ScoringRequest,
    stored: Mapping[str, float | str] | None,
    degraded: bool,
    numeric_sent: tuple[Mapping[str, float], list[tuple[str, str]]] | None = None,
) -> _Prepared:
    """Stored values fill the entity inputs; a request may set one only where the spec allows.
    ``numeric_sent``: the request's numeric inputs and their violations (``_numeric_inputs``;
    default: its ``numeric`` map)."""
    given, violations = numeric_sent or (request.numeric, [])
    numeric = dict(given)
    categorical = dict(request.categorical)
    violations = list(violations)
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
