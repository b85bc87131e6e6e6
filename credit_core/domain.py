"""Domain types: the scoring policy (PD -> points -> decision) and the result of one score."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from feature_kernels import ScorePolicy

__all__ = [
    "DECISIONS",
    "LOG_STREAM_MAX_LEN",
    "LOG_STREAM_PREFIX",
    "ROUTING_MODES",
    "Decision",
    "Explanation",
    "ModelRef",
    "ReasonCode",
    "Routing",
    "RoutingMode",
    "ScoreResult",
    "ScoringPolicy",
]

LOG_STREAM_PREFIX = "altscore:log"
"""Default key prefix of the shared prediction log's Redis Streams (``<prefix>:predictions``,
``<prefix>:outcomes``): the data plane writes them, the archiver drains them."""
LOG_STREAM_MAX_LEN = 1_000_000
"""Default approximate cap of each stream (``XADD MAXLEN ~``)."""


class Decision(enum.Enum):
    APPROVE = "approve"
    REVIEW = "review"
    DECLINE = "decline"


DECISIONS: tuple[Decision, ...] = (Decision.APPROVE, Decision.REVIEW, Decision.DECLINE)
"""The order of ``ScoringPolicy.decision_codes``."""


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Which model answered: registered name, version and the variant it served as."""

    name: str
    version: str
    variant: str


@dataclass(frozen=True, slots=True)
class ScoringPolicy:
    """Turns a probability of default into points and a decision.

    Points use the standard points-to-double-odds scaling on the odds of *good* (non-default):
    ``score = offset + factor * ln((1 - pd) / pd)`` with ``factor = pdo / ln 2`` and
    ``offset = base_score - factor * ln(base_odds)``. Defaults: 600 points at 50:1 good:bad odds,
    20 points to double the odds (so PD 1.96 % -> 600, PD 3.85 % -> 580). PD is clamped to
    ``[1e-9, 1 - 1e-9]`` so the score is always finite; it is then rounded to the nearest integer.

    Decision by PD: ``pd < approve_below`` -> APPROVE, ``pd >= decline_from`` -> DECLINE, else
    REVIEW (defaults 8 % and 20 %).

    The rule itself is the data plane's (``feature_kernels.ScorePolicy``, Rust): this class holds
    the parameters and reads it, so training reports and served answers cannot disagree.
    """

    base_score: float = 600.0
    base_odds: float = 50.0
    pdo: float = 20.0
    approve_below: float = 0.08
    decline_from: float = 0.20
    _rule: ScorePolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rule = ScorePolicy(
            self.base_score, self.base_odds, self.pdo, self.approve_below, self.decline_from
        )  # raises ValueError for parameters that make no policy
        object.__setattr__(self, "_rule", rule)

    @property
    def rule(self) -> ScorePolicy:
        """The native policy (handed to the data plane)."""
        return self._rule

    @property
    def factor(self) -> float:
        return self._rule.factor

    @property
    def offset(self) -> float:
        return self._rule.offset

    def score(self, pd: float) -> int:
        """
        >>> ScoringPolicy().score(0.0196), ScoringPolicy().score(0.0385)
        (600, 580)
        """
        return self._rule.score(pd)

    def decide(self, pd: float) -> Decision:
        return Decision(self._rule.decide(pd))

    def scores(self, pd: npt.NDArray[np.float64]) -> npt.NDArray[np.int32]:
        """``score`` of many PDs at once.

        >>> ScoringPolicy().scores(np.array([0.0196, 0.0385, 0.5])).tolist()
        [600, 580, 487]
        """
        return self._rule.scores(np.ascontiguousarray(pd, dtype=np.float64))

    def decision_codes(self, pd: npt.NDArray[np.float64]) -> npt.NDArray[np.int8]:
        """``decide`` of many PDs at once, as indexes into ``DECISIONS``."""
        codes = self._rule.decision_codes(np.ascontiguousarray(pd, dtype=np.float64))
        return (codes - 1).astype(np.int8)


@dataclass(frozen=True, slots=True)
class ReasonCode:
    """A principal reason for the risk: a feature (or one-hot group) that raised it."""

    code: str
    """The feature's name in the spec: stable across model versions of that spec."""
    text: str
    """The spec's human text for adverse-action notices."""
    contribution: float
    """SHAP value in log-odds; always > 0."""


@dataclass(frozen=True, slots=True)
class Explanation:
    """Exact TreeSHAP on the log-odds scale: ``base_value + sum(contributions) = margin``."""

    base_value: float
    contributions: tuple[tuple[str, float], ...]
    """(model feature, SHAP value), in the model's feature order."""
    reasons: tuple[ReasonCode, ...]
    """Largest first; only features that raised the risk."""


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """One applicant's answer, before it is put on the wire."""

    request_id: str
    pd: float
    score: int
    decision: Decision
    model: ModelRef
    defaulted: tuple[str, ...] = ()
    """Entity inputs not found in the feature store (missing policy applied)."""
    degraded: bool = False
    """The feature store failed and the spec allowed scoring without it."""
    explanation: Explanation | None = None
    """When the request asked for one."""


RoutingMode = Literal["off", "split", "shadow"]
ROUTING_MODES: tuple[str, ...] = get_args(RoutingMode)


@dataclass(frozen=True, slots=True)
class Routing:
    """How traffic meets the challenger.

    ``off``: champion only. ``split``: applicants whose id hashes below ``challenger_share`` are
    answered by the challenger, the rest by the champion. ``shadow``: every request is scored by
    both; the caller always gets the champion's answer.
    """

    mode: RoutingMode = "off"
    challenger_share: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ROUTING_MODES:
            raise ValueError(f"routing mode {self.mode!r}: expected one of {ROUTING_MODES}")
        if not 0.0 <= self.challenger_share <= 1.0:
            raise ValueError(f"challenger share {self.challenger_share!r}: expected 0..1")
