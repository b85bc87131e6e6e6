"""Native core (Rust, PyO3). Use the public API in ``feature_kernels`` instead."""

from os import PathLike
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

class StoreError(OSError):
    """The online feature store failed, timed out or has no active version."""

class LogWriteError(OSError):
    """The evaluation log could not be written. args: (message, records written, records in
    all)."""

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
        """The data plane's decoder: ``ScoreBatchRequest`` (``batch``) or ``ScoreRequest`` wire
        bytes to ``(request_ids, applicant_ids, explain, matrix, violations)``; the matrix and
        violations are those of ``transform_rows`` on the applicants' maps. Malformed bytes
        raise ``ValueError``."""
    def transform_columns(
        self,
        numeric: dict[str, npt.NDArray[np.float64]],
        categorical: dict[str, list[str | None]],
        n_rows: int,
    ) -> npt.NDArray[np.float32]: ...

def input_kinds() -> list[str]: ...
def fold_case(values: list[str | None]) -> list[str | None]:
    """The kernels' case folding (``case_fold: true`` in a spec) of each value, ``None`` kept:
    what training counts ``frequency_rank`` categories on, by the rule the plan matches rows
    with."""

def init_logging(level: str, *, json: bool = False) -> None:
    """Send the Rust side's log lines to stderr at ``level`` (error, warning, info, debug), as
    text or (``json``) one JSON object per line."""

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

@final
class ScorePolicy:
    """PD -> points and decision (the one implementation; ``credit_core.ScoringPolicy`` wraps
    it). Raises ``ValueError`` for parameters that make no policy."""

    def __new__(
        cls,
        base_score: float,
        base_odds: float,
        pdo: float,
        approve_below: float,
        decline_from: float,
    ) -> ScorePolicy: ...
    @property
    def factor(self) -> float: ...
    @property
    def offset(self) -> float: ...
    def score(self, pd: float) -> int: ...
    def decide(self, pd: float) -> str:
        """ "approve", "review" or "decline"."""
    def scores(self, pd: npt.NDArray[np.float64]) -> npt.NDArray[np.int32]: ...
    def decision_codes(self, pd: npt.NDArray[np.float64]) -> npt.NDArray[np.int32]:
        """``credit.scoring.v1.Decision`` numbers: APPROVE 1, REVIEW 2, DECLINE 3."""

def logistic(margin: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The PD of each margin (log-odds), as the data plane computes it."""

def routing_bucket(key: str) -> float:
    """The sticky routing point of an id in [0, 1)."""

@final
class LogWriter:
    """Buffered appender of one record kind to its own evaluation-log segment files in
    ``directory``, or to the Redis Stream ``stream`` = ``(url, key, max_len)`` (one of them)."""

    def __new__(
        cls,
        directory: str | PathLike[str] | None,
        kind: str,
        *,
        flush_records: int,
        flush_seconds: float,
        max_segment_bytes: int,
        max_pending: int,
        fsync: bool,
        stream: tuple[str, str, int] | None = None,
    ) -> LogWriter: ...
    def write(self, lines: bytes, count: int, whole: bool) -> int:
        """Buffer ``count`` whole lines; returns how many were taken (the rest were dropped
        and counted). Raises ``RuntimeError`` once closed."""
    def flush(self) -> None:
        """Append what is buffered now; raises ``LogWriteError`` (nothing written twice)."""
    def close(self) -> None: ...
    @property
    def dropped(self) -> int: ...
    @property
    def written(self) -> int: ...
    @property
    def segment(self) -> str | None: ...

def prediction_line(
    ts: float,
    request_id: str,
    applicant_id: str,
    model_name: str,
    variant: str,
    model_version: str,
    pd: float,
    served: bool,
    score: int,
    decision: str,
    reasons: list[str],
    degraded: bool,
    imputed: list[str],
    features: list[float],
    predictor: str = "native",
) -> bytes:
    """One prediction's evaluation-log line, as the data plane writes it."""

def outcome_line(
    ts: float,
    request_id: str,
    applicant_id: str,
    defaulted: bool,
    observed_at: float | None,
    correction: bool = False,
    reporter: str = "",
) -> bytes:
    """One outcome's evaluation-log line, as the data plane writes it."""

@final
class ServingModel:
    """A gated model, ready to hand to the data plane."""

    def __new__(
        cls,
        plan: FeaturePlan,
        ensemble: TreeEnsemble,
        *,
        name: str,
        version: str,
        variant: str,
        reasons: list[tuple[str, str, list[int]]],
        top_k: int,
        entity: tuple[str, list[tuple[str, bool]], bool] | None,
        model_info: bytes,
        compiled_library: str | PathLike[str] | None,
        predictor: str,
    ) -> ServingModel: ...
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def variant(self) -> str: ...
    def predict(
        self, x: npt.NDArray[np.float32], predictor: str | None = None
    ) -> npt.NDArray[np.float64]:
        """PD of each row by ``predictor`` ("native" or "tl2cgen"; default: the model's)."""
    def reason_codes(self, x: npt.NDArray[np.float32]) -> list[list[str]]:
        """Reason codes of each row, most adverse first (what an explained answer carries)."""

@final
class FeatureStoreClient:
    """The data plane's feature-store client (``url`` None: an embedded store)."""

    def __new__(
        cls, url: str | None = None, *, cluster: bool = False, connect_timeout: float = 2.0
    ) -> FeatureStoreClient: ...
    def get_many(
        self, namespace: str, ids: list[str], timeout: float
    ) -> list[dict[str, float | str] | None]: ...
    def publish(
        self,
        namespace: str,
        version: str,
        rows: list[tuple[str, dict[str, float | str]]],
        *,
        ttl_seconds: float | None = None,
    ) -> int: ...
    def activate(self, namespace: str, version: str) -> None: ...
    def active_version(self, namespace: str) -> str | None: ...

@final
class DataPlane:
    """The data plane of this process: tonic on its own runtime, every scoring RPC."""

    def __new__(
        cls,
        *,
        host: str,
        grpc_port: int,
        metrics_host: str,
        metrics_port: int,
        threads: int,
        max_message_bytes: int,
        max_batch: int,
        stream_batch_max: int,
        stream_batch_wait: float,
        stream_queue: int,
        stream_id_window: int,
        store_url: str | None,
        store_cluster: bool,
        store_timeout: float,
        policy: ScorePolicy,
        predictor: str,
        evaluation_dir: str | PathLike[str],
        log_predictions: bool,
        shutdown_grace: float,
        tls_cert: str | PathLike[str] | None = None,
        tls_key: str | PathLike[str] | None = None,
        tls_client_ca: str | PathLike[str] | None = None,
        keepalive: float = 30.0,
        max_concurrent_streams: int = 1024,
        max_shadow_in_flight: int = 1024,
        log_stream: tuple[str, str, int] | None = None,
        handshake_timeout: float = 10.0,
        outcome_writers: list[str] | None = None,
        outcome_tokens_file: str | PathLike[str] | None = None,
        log_max_bytes: int | None = None,
        log_max_age: float | None = None,
        max_in_flight: int = 2048,
        max_open_streams: int = 4096,
        retry_pushback: float = 0.1,
        max_header_list_bytes: int = 16384,
        max_pending_reset_streams: int = 20,
        max_local_error_resets: int = 1024,
        tcp_keepalive: float = 60.0,
        max_connection_age: float | None = None,
        call_timeout: float | None = None,
        max_connections: int | None = None,
    ) -> DataPlane: ...
    @property
    def grpc_port(self) -> int: ...
    @property
    def metrics_port(self) -> int: ...
    def serve(self) -> None: ...
    @property
    def running(self) -> bool: ...
    def set_models(
        self,
        champion: ServingModel | None,
        challenger: ServingModel | None = None,
        mode: str = "off",
        share: float = 0.0,
    ) -> None: ...
    def publish_embedded(
        self, namespace: str, version: str, rows: list[tuple[str, dict[str, float | str]]]
    ) -> int: ...
    @property
    def embedded_store(self) -> bool: ...
    def warm_up_store(self, namespace: str, timeout: float) -> str | None: ...
    def count_model_load(self, outcome: str) -> None: ...
    def set_compile_seconds(self, seconds: float) -> None: ...
    def set_parity(self, variant: str, max_abs_diff: float) -> None: ...
    def clear_parity(self, variant: str) -> None: ...
    def shutdown(self, grace: float) -> None: ...

def store_key(namespace: str, version: str | None = None) -> str:
    """The active-version pointer key of ``namespace``, or with ``version`` the prefix of its
    rows' keys (``ValueError`` for a name that is empty or holds ``:``)."""
