"""Domain types: the scoring policy (PD -> points -> decision) and the result of one score."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = ["Decision", "ModelRef", "ScoreResult", "ScoringPolicy"]


class Decision(enum.Enum):
    APPROVE = "approve"
    REVIEW = "review"
    DECLINE = "decline"


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
    """

    base_score: float = 600.0
    base_odds: float = 50.0
    pdo: float = 20.0
    approve_below: float = 0.08
    decline_from: float = 0.20

    def __post_init__(self) -> None:
        if self.pdo <= 0 or self.base_odds <= 0:
            raise ValueError("pdo and base_odds must be positive")
        if not 0.0 < self.approve_below <= self.decline_from < 1.0:
            raise ValueError("need 0 < approve_below <= decline_from < 1")

    @property
    def factor(self) -> float:
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        return self.base_score - self.factor * math.log(self.base_odds)

    def score(self, pd: float) -> int:
        p = min(max(pd, 1e-9), 1.0 - 1e-9)
        return round(self.offset + self.factor * math.log((1.0 - p) / p))

    def decide(self, pd: float) -> Decision:
        if pd < self.approve_below:
            return Decision.APPROVE
        if pd >= self.decline_from:
            return Decision.DECLINE
        return Decision.REVIEW


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
