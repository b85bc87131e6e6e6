"""Settings of the scoring server, built once in ``__main__`` and passed down."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from credit_core import ScoringPolicy
from credit_core.domain import LOG_STREAM_MAX_LEN, LOG_STREAM_PREFIX

__all__ = ["ServerSettings"]

_POLICY = ScoringPolicy()


class ServerSettings(BaseSettings):
    """Environment variables use the prefix ``ALTSCORE_`` (``ALTSCORE_GRPC_PORT`` ...)."""

    model_config = SettingsConfigDict(env_prefix="ALTSCORE_", extra="ignore")

    host: str = "127.0.0.1"
    """Address the gRPC and metrics servers bind."""
    grpc_port: int = Field(50051, ge=0, le=65535)
    """gRPC port (0 = any free port)."""
    metrics_port: int = Field(9464, ge=0, le=65535)
    """Prometheus /metrics port (0 = any free port)."""
    state_dir: Path = Path("var")
    """Local state: the MLflow store (default), downloaded models, compiled-library cache."""
    mlflow_tracking_uri: str | None = None
    """MLflow store; default ``sqlite:///<state_dir>/mlflow/mlflow.db``."""
    model_name: str = "altscore-gmsc"
    """Registered model to serve (alias ``champion``)."""
    redis_url: str | None = Field(
        None, validation_alias=AliasChoices("ALTSCORE_REDIS_URL", "REDIS_URL")
    )
    """Online feature store (``REDIS_URL`` works too; with ``redis_cluster``, the seed nodes,
    comma-separated). Unset: the embedded in-process store, filled from the served model's
    entity snapshot."""
    redis_cluster: bool = False
    """``redis_url`` names the seed nodes of a Redis Cluster."""

    @field_validator("redis_url", "log_redis_url")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value or None

    feature_store_timeout_seconds: float = Field(0.025, gt=0)
    """Longest wait for one feature-store lookup; then the answer is degraded or UNAVAILABLE."""
    registry_poll_seconds: float = Field(5.0, gt=0)
    """How often the registry is asked for the aliases and the routing."""
    parity_tolerance: float = Field(1e-5, gt=0)
    """Largest |served PD - XGBoost PD| on the reference sample a model may show, for every
    predictor."""
    reason_codes: int = Field(4, ge=1, le=20)
    """Most reason codes in an explanation (adverse-action notices commonly give four)."""
    additivity_tolerance: float = Field(1e-4, gt=0)
    """Largest |base + sum(SHAP) - XGBoost margin| (log-odds) a model's explanations may show on
    the reference sample; above it the model is refused."""
    compile_parallel_units: int = Field(8, ge=1)
    """TL2cgen ``parallel_comp``: translation units the trees are split into."""
    predictor: Literal["native", "tl2cgen"] = "native"
    """What computes the PD: the native tree evaluator (the default: one kernel with TreeSHAP)
    or the TL2cgen-compiled library (faster in isolation for shallow models, no faster served:
    ``benchmarks/RESULTS.md``). Both pass the parity gate, so every load compiles the TL2cgen
    library (cached) whichever predictor serves, and the host needs a C compiler."""
    max_batch_size: int = Field(1000, ge=1)
    """Most applicants in one ScoreBatch call (and outcomes in one ReportOutcome)."""
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """Largest request message accepted (larger ones: RESOURCE_EXHAUSTED)."""
    stream_id_window: int = Field(65536, ge=1)
    """Request ids remembered per stream to reject duplicates."""
    stream_batch_max: int = Field(64, ge=1)
    """ScoreStream: most messages scored together (one kernel pass + one predict call)."""
    stream_batch_wait_seconds: float = Field(0.0, ge=0)
    """ScoreStream: after a batch's first message, how long to wait for more (0: what has
    arrived already)."""
    stream_queue_size: int = Field(256, ge=1)
    """ScoreStream: messages read ahead of scoring per stream; beyond, the server stops reading."""
    data_plane_threads: int = Field(default_factory=lambda: len(os.sched_getaffinity(0)), ge=1)
    """Threads of the data plane's runtime; default: the cores this process may run on."""
    max_concurrent_streams: int = Field(1024, ge=1)
    """Most concurrent calls on one HTTP/2 connection."""
    max_in_flight_calls: int = Field(2048, ge=1)
    """Unary scoring calls in flight at most, over every connection; beyond, a call is answered
    ``RESOURCE_EXHAUSTED`` at once with ``grpc-retry-pushback-ms``. Health and reflection are
    never shed."""
    max_open_streams: int = Field(4096, ge=1)
    """``ScoreStream`` streams open at most, over every connection (counted apart from unary
    calls: clients holding streams cannot starve unary calls); beyond, ``RESOURCE_EXHAUSTED``."""
    retry_pushback_ms: int = Field(100, ge=0)
    """The ``grpc-retry-pushback-ms`` a shed call is given (how long a client should wait)."""
    max_header_list_bytes: int = Field(16384, ge=1024, le=2**31 - 1)
    """Largest header list a client may send with one call (HTTP/2
    ``SETTINGS_MAX_HEADER_LIST_SIZE``)."""
    max_pending_reset_streams: int = Field(20, ge=1)
    """Streams a client may open and reset before the server accepts them; an RST flood beyond
    closes its connection (hyper's rapid-reset defence)."""
    max_local_error_resets: int = Field(1024, ge=1)
    """Streams the server may reset for a client's protocol errors before closing the
    connection."""
    tcp_keepalive_seconds: float = Field(60.0, gt=0)
    """TCP keepalive of accepted connections: a vanished peer's socket is reclaimed."""
    call_timeout_seconds: float | None = Field(30.0, gt=0)
    """Longest a unary call may take, reading its request included: a client that stalls its
    request body is cut off (``CANCELLED``, "Timeout expired") and its place freed. Streams are
    not limited by it. Empty: no limit."""
    max_connections: int | None = Field(None, ge=1)
    """Connections open at most on the gRPC port; one more closes the connection quiet the
    longest (an idle one goes before a client that calls), counted in
    ``credit_scoring_connections_evicted_total``. Unset: the open-file limit (raised to its hard
    limit at start) less 512."""
    max_connection_age_seconds: float | None = Field(None, gt=0)
    """Connections older than this are closed gracefully (clients reconnect and rebalance);
    unset: no limit."""
    keepalive_seconds: float = Field(30.0, gt=0)
    """HTTP/2 keepalive ping interval; a peer that does not answer within one more is dropped."""
    evaluation_dir_override: Path | None = Field(
        None, validation_alias=AliasChoices("ALTSCORE_EVALUATION_DIR")
    )
    """Where predictions and outcomes are logged; default ``<state_dir>/evaluation``."""
    log_predictions: bool = True
    """Record every prediction (served and shadow) in the evaluation log for ``compare``."""
    evaluation_max_bytes: int | None = Field(20 * 2**30, ge=1 << 20)
    """Local log (segment files): most bytes of prediction segments kept in ``evaluation_dir``
    (every writer's); beyond, the oldest are deleted and their records counted in
    ``credit_scoring_prediction_log_expired_total``. Outcome segments are never deleted.
    Empty: no cap."""
    evaluation_retention_days: float | None = Field(None, gt=0)
    """Local log: prediction segments last written longer ago are deleted (counted the same
    way). Unset: kept (up to ``evaluation_max_bytes``)."""

    @field_validator(
        "evaluation_max_bytes", "evaluation_retention_days", "call_timeout_seconds", mode="before"
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    log_redis_url: str | None = None
    """The shared prediction log: predictions and outcomes go to the Redis Streams
    ``<log_stream_prefix>:predictions`` / ``:outcomes`` (every replica the same), which
    ``python -m drift archive`` drains into Parquet. Unset: this process's segment files in
    ``evaluation_dir``."""
    log_stream_prefix: str = Field(LOG_STREAM_PREFIX, min_length=1)
    """Key prefix of the prediction-log streams."""
    log_stream_max_len: int = Field(LOG_STREAM_MAX_LEN, ge=1)
    """Approximate cap of each stream (``XADD MAXLEN ~``): what Redis keeps when the archiver
    falls behind; older entries beyond it are trimmed."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Level of the log lines (control plane and data plane)."""
    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object per line on stderr (both planes: ``time``, ``level``,
    ``logger``, ``process``, ``pid``, ``message`` and, where known, ``model_name``,
    ``model_version``, ``variant``, ``request_id``); ``text``: the laptop default."""
    shutdown_grace_seconds: float = Field(5.0, ge=0)
    """On SIGTERM: time in-flight calls get to finish."""
    tls_cert_file: Path | None = None
    """PEM certificate (chain) of the gRPC port; with ``tls_key_file``, the port speaks TLS."""
    tls_key_file: Path | None = None
    """PEM private key of ``tls_cert_file``."""
    tls_client_ca_file: Path | None = None
    """PEM CA bundle: when set, clients must present a certificate it signed (mTLS)."""
    tls_handshake_timeout_seconds: float = Field(10.0, gt=0)
    """Longest a TLS handshake may take; a client that stalls longer is disconnected."""
    outcome_writers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Who may call ``ReportOutcome`` by client certificate: subject common names or subject
    alternative names (DNS, URI, e-mail), comma-separated. Needs ``tls_client_ca_file``."""
    outcome_tokens_file: Path | None = None
    """Who may call ``ReportOutcome`` by bearer token: a file of ``<sha256 hex of the token>
    [name]`` lines (``python -m scoring_server token`` makes one), re-read when it changes.
    With neither this nor ``outcome_writers``, only loopback callers may report outcomes."""

    @field_validator("outcome_writers", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    base_score: float = _POLICY.base_score
    """Points at ``base_odds`` (odds of good)."""
    base_odds: float = _POLICY.base_odds
    """Odds of good (non-default : default) that earn ``base_score`` points."""
    pdo: float = _POLICY.pdo
    """Points to double the odds."""
    approve_below: float = _POLICY.approve_below
    """PD below this: APPROVE."""
    decline_from: float = _POLICY.decline_from
    """PD at or above this: DECLINE (between: REVIEW)."""

    @model_validator(mode="after")
    def _tls_pairs(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both ALTSCORE_TLS_CERT_FILE and ALTSCORE_TLS_KEY_FILE, or none")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("ALTSCORE_TLS_CLIENT_CA_FILE needs the server's own certificate")
        if self.outcome_writers and self.tls_client_ca_file is None:
            raise ValueError(
                "ALTSCORE_OUTCOME_WRITERS names client certificates: set"
                " ALTSCORE_TLS_CLIENT_CA_FILE (mTLS) too"
            )
        self.policy()  # the policy parameters must make a policy
        return self

    def tracking_uri(self) -> str:
        from credit_core.registry import local_tracking_uri

        return self.mlflow_tracking_uri or local_tracking_uri(self.state_dir / "mlflow")

    def evaluation_dir(self) -> Path:
        return self.evaluation_dir_override or self.state_dir / "evaluation"

    def policy(self) -> ScoringPolicy:
        return ScoringPolicy(
            base_score=self.base_score,
            base_odds=self.base_odds,
            pdo=self.pdo,
            approve_below=self.approve_below,
            decline_from=self.decline_from,
        )
