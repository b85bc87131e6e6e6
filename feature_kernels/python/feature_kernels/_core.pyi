"""Native kernels (Rust, PyO3). Use the public API in ``feature_kernels`` instead."""

from typing import final

import numpy as np
import numpy.typing as npt

__version__: str
build_profile: str

class FeatureError(ValueError):
    """Input data broke the feature spec. args: (message, [(field, description), ...])."""

class PlanError(ValueError):
    """The feature plan is inconsistent."""

class ModelFormatError(ValueError):
    """A tree-ensemble model is malformed or uses something the native evaluator does not
    support (categorical splits, multi-class, dart, vector leaves, other objectives...)."""

@final
class FeaturePlan:
    def __new__(cls, plan_json: str) -> FeaturePlan: ...
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def schema_hash(self) -> str: ...
    @property
    def output_names(self) -> list[str]: ...
    @property
    def n_outputs(self) -> int: ...
    @property
    def input_names(self) -> tuple[list[str], list[str]]: ...
    def transform_row(
        self, numeric: dict[str, object], categorical: dict[str, object]
    ) -> tuple[npt.NDArray[np.float32], list[tuple[str, str]]]: ...
    def transform_rows(
        self, rows: list[tuple[dict[str, object], dict[str, object]]]
    ) -> tuple[npt.NDArray[np.float32], list[list[tuple[str, str]]]]: ...
    def decode_score_requests(
        self, data: bytes, batch: bool
    ) -> tuple[
        list[str],
        list[str],
        list[bool],
        npt.NDArray[np.float32],
        list[list[tuple[str, str]]],
    ]:
        """``ScoreBatchRequest`` (``batch``) or ``ScoreRequest`` wire bytes to ``(request_ids,
        applicant_ids, explain, matrix, violations)``; the matrix and violations are those of
        ``transform_rows`` on the applicants' maps. Malformed bytes raise ``ValueError``."""
    def transform_columns(
        self,
        numeric: dict[str, npt.NDArray[np.float64]],
        categorical: dict[str, list[str | None]],
        n_rows: int,
    ) -> npt.NDArray[np.float32]: ...

def input_kinds() -> list[str]: ...
def encode_score_responses(
    request_ids: list[str],
    pd: npt.NDArray[np.float64],
    score: npt.NDArray[np.int32],
    decision: npt.NDArray[np.int32],
    model_name: str,
    model_version: str,
    variant: int,
    batch: bool,
) -> bytes:
    """``ScoreBatchResponse`` (``batch``) or ``ScoreResponse`` (exactly one row) wire bytes;
    ``decision`` and ``variant`` are the proto enum numbers."""

@final
class TreeEnsemble:
    """An XGBoost ``binary:logistic`` gbtree model evaluated natively (GIL released)."""

    @staticmethod
    def from_json(text: str) -> TreeEnsemble: ...
    @property
    def n_features(self) -> int: ...
    @property
    def n_trees(self) -> int: ...
    @property
    def max_depth(self) -> int: ...
    @property
    def base_score(self) -> float: ...
    @property
    def memory_bytes(self) -> tuple[int, int]: ...
    @property
    def shap_method_counts(self) -> tuple[int, int]: ...
    def predict_margin(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]: ...
    def shap(self, x: npt.NDArray[np.float32]) -> tuple[float, npt.NDArray[np.float64]]: ...

def prediction_log_line(
    ts: float,
    request_id: str,
    applicant_id: str,
    model_name: str,
    variant: str,
    model_version: str,
    pd: float,
) -> bytes:
    """One evaluation-log line as the front end writes it (``credit_core.evaluation``'s format)."""

@final
class FrontEnd:
    """The native gRPC front end of a serving worker: answers ``Score`` / ``ScoreBatch``
    directly where it can and passes everything else to the Python server on the abstract Unix
    socket ``backend``; runs on its own threads."""

    def __init__(
        self,
        *,
        backend: str,
        max_message_bytes: int,
        log_predictions: bool,
        latency_bounds: list[float],
        threads: int = 1,
    ) -> None: ...
    def start(self, host: str, port: int) -> int: ...
    @property
    def port(self) -> int: ...
    def serve_directly(
        self,
        plan: FeaturePlan,
        ensemble: TreeEnsemble,
        *,
        model_name: str,
        model_version: str,
        variant: str,
        variant_code: int,
        offset: float,
        factor: float,
        approve_below: float,
        decline_from: float,
        max_batch: int,
    ) -> None: ...
    def serve_nothing_directly(self) -> None: ...
    @property
    def serving_directly(self) -> bool: ...
    def drain(
        self, timeout: float
    ) -> tuple[
        bytes,
        int,
        list[tuple[str, str, int, list[int], float]],
        list[tuple[str, str, int]],
    ]: ...
    def stop(self, grace: float) -> None: ...
