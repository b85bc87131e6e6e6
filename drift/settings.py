"""Settings of the drift worker, built once in ``__main__`` and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from credit_core.archive import LogStream, ParquetArchive

if TYPE_CHECKING:
    from credit_core.evaluation import EvaluationLog
from credit_core.domain import LOG_STREAM_MAX_LEN, LOG_STREAM_PREFIX

__all__ = ["DriftSettings"]


class DriftSettings(BaseSettings):
    """Environment variables use the prefix ``ALTSCORE_`` (``ALTSCORE_ARCHIVE_URL`` ...)."""

    model_config = SettingsConfigDict(env_prefix="ALTSCORE_", extra="ignore")

    state_dir: Path = Path("var")
    """Local state; the archive and the evaluation log default to folders in it."""
    evaluation_dir: Path | None = None
    """Local segment files (the source when ``log_redis_url`` is unset); default
    ``<state_dir>/evaluation``."""
    log_redis_url: str | None = None
    """The shared prediction log's Redis (streams ``<log_stream_prefix>:predictions`` and
    ``:outcomes``). Unset: the local segments of ``evaluation_dir`` are the source."""
    log_stream_prefix: str = Field(LOG_STREAM_PREFIX, min_length=1)
    """Key prefix of the prediction-log streams."""
    log_stream_max_len: int = Field(LOG_STREAM_MAX_LEN, ge=1)
    """Approximate cap of each stream (``XADD MAXLEN ~``) for what this process appends."""
    archive_url: str | None = None
    """The Parquet archive: a folder, or an object-store URL (``s3://bucket/prefix``); default
    ``<state_dir>/archive``."""
    archive_storage_options: dict[str, str] = Field(default_factory=dict)
    """Polars ``storage_options`` of an object-store archive, as JSON (endpoint, keys,
    region: ``{"aws_endpoint_url": "http://minio:9000", "aws_access_key_id": ...}``)."""
    archive_batch_size: int = Field(1000, ge=1)
    """Most records archived in one batch (one Parquet part per day, then one ``XACK``)."""
    archive_idle_seconds: float = Field(1.0, gt=0)
    """Wait between polls when the source has nothing new."""
    archive_claim_idle_seconds: float = Field(60.0, ge=0)
    """Entries another archiver left unacknowledged this long are claimed (``XAUTOCLAIM``)."""
    archive_consumer: str | None = None
    """Consumer name in the ``archiver`` group; default ``<host>-<pid>``."""
    model_name: str = "altscore-gmsc"
    """The registered model whose champion the drift worker watches."""
    mlflow_tracking_uri: str | None = None
    """MLflow; default: the local sqlite store in ``<state_dir>/mlflow``."""
    drift_metrics_port: int = Field(9465, ge=0, le=65535)
    """The drift worker's own ``/metrics`` (``python -m drift run``)."""
    drift_metrics_host: str = "127.0.0.1"
    drift_interval_seconds: float = Field(60.0, gt=0)
    """How often ``python -m drift run`` looks for closed windows."""
    drift_settle_seconds: float = Field(30.0, ge=0)
    """Predictions younger than this are not windowed yet (a replica's buffered records and the
    archiver's lag arrive within it), so a window's rows never change once it is closed."""
    retrain_command: str | None = None
    """Run (no shell; split like a shell would) once per model version when a window drifts
    or the estimated AUC drops: e.g. ``python -m training retrain``."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Level of the log lines."""

    @field_validator("log_redis_url", "archive_url", "archive_consumer", "retrain_command")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value or None

    def evaluation_path(self) -> Path:
        from credit_core.evaluation import default_directory

        return self.evaluation_dir or default_directory(self.state_dir)

    def tracking_uri(self) -> str:
        from credit_core.registry import local_tracking_uri

        return self.mlflow_tracking_uri or local_tracking_uri(self.state_dir / "mlflow")

    def evaluation_log(self) -> EvaluationLog:
        """The log as ``compare`` reads it: the archive (a local pass first without Redis)."""
        from credit_core.evaluation import EvaluationLog

        return EvaluationLog(self.evaluation_path(), self.archive(), stream=self.log_stream())

    def archive(self) -> ParquetArchive:
        return ParquetArchive(
            self.archive_url or self.state_dir / "archive", self.archive_storage_options
        )

    def log_stream(self) -> LogStream | None:
        if self.log_redis_url is None:
            return None
        return LogStream(self.log_redis_url, self.log_stream_prefix, self.log_stream_max_len)
