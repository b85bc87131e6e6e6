"""Settings of the training worker, built once in ``__main__`` and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from credit_core.domain import LOG_STREAM_MAX_LEN, LOG_STREAM_PREFIX

if TYPE_CHECKING:
    from credit_core.evaluation import EvaluationLog
    from credit_core.registry import MlflowRegistry

__all__ = ["TrainingSettings"]


class TrainingSettings(BaseSettings):
    """Environment variables use the prefix ``ALTSCORE_`` (``ALTSCORE_DATA_DIR`` ...)."""

    model_config = SettingsConfigDict(env_prefix="ALTSCORE_", extra="ignore")

    data_dir: Path = Path("../shared/data")
    """Folder of the shared credit datasets."""
    state_dir: Path = Path("var")
    """Local state: the MLflow store, reports, compiled-model cache."""
    mlflow_tracking_uri: str | None = None
    """MLflow store; default ``sqlite:///<state_dir>/mlflow/mlflow.db``."""
    experiment: str = "altscore-training"
    """MLflow experiment the runs go to."""
    model_name: str = "altscore-gmsc"
    """Registered model name."""
    seed: int = 42
    """Seed of the holdout split, the early-stopping split and XGBoost."""
    test_size: float = Field(0.2, gt=0, lt=1)
    """Share of rows held out for evaluation (stratified)."""
    reference_rows: int = Field(2000, ge=10)
    """Holdout rows stored with the model for parity gates and drift."""
    compile_parallel_units: int = Field(8, ge=1)
    """TL2cgen ``parallel_comp`` of the library compiled into every bundle (what servers
    without a C compiler load)."""
    redis_url: str | None = Field(
        None, validation_alias=AliasChoices("ALTSCORE_REDIS_URL", "REDIS_URL")
    )
    """Online feature store for ``publish`` (``REDIS_URL`` works too; with ``redis_cluster``,
    the seed nodes, comma-separated)."""
    redis_cluster: bool = False
    """``redis_url`` names the seed nodes of a Redis Cluster."""

    @field_validator("redis_url")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value or None

    evaluation_dir: Path | None = None
    """Evaluation log (predictions and outcomes); default ``<state_dir>/evaluation``."""
    log_redis_url: str | None = None
    """The shared prediction log's Redis: ``outcomes`` appends to its outcomes stream, and
    ``compare``/``promote`` read what ``python -m drift archive`` archived of it. Unset: the
    local segments of ``evaluation_dir`` (archived by those commands before they read)."""
    log_stream_prefix: str = Field(LOG_STREAM_PREFIX, min_length=1)
    """Key prefix of the prediction-log streams."""
    log_stream_max_len: int = Field(LOG_STREAM_MAX_LEN, ge=1)
    """Approximate cap of each stream (``XADD MAXLEN ~``)."""
    archive_url: str | None = None
    """The Parquet archive of the prediction log: a folder or an ``s3://`` URL; default
    ``<state_dir>/archive``."""
    archive_storage_options: dict[str, str] = Field(default_factory=dict)
    """Polars ``storage_options`` of an object-store archive (JSON)."""

    @field_validator("log_redis_url", "archive_url")
    @classmethod
    def _empty_log_setting_is_unset(cls, value: str | None) -> str | None:
        return value or None

    min_auc: float = Field(0.6, ge=0, le=1)
    """Gate: a model below this holdout AUC is registered but never given an alias."""

    @property
    def mlflow_root(self) -> Path:
        return self.state_dir / "mlflow"

    def artifact_root(self) -> Path | None:
        """Artifact folder of new experiments in the default local store; a remote MLflow server
        (``mlflow_tracking_uri`` set) chooses its own."""
        return None if self.mlflow_tracking_uri else self.mlflow_root / "artifacts"

    def registry(self) -> MlflowRegistry:
        from credit_core.registry import MlflowRegistry

        return MlflowRegistry(self.tracking_uri(), self.artifact_root())

    def tracking_uri(self) -> str:
        from credit_core.registry import local_tracking_uri

        return self.mlflow_tracking_uri or local_tracking_uri(self.mlflow_root)

    def evaluation_path(self) -> Path:
        from credit_core.evaluation import default_directory

        return self.evaluation_dir or default_directory(self.state_dir)

    def evaluation_log(self) -> EvaluationLog:
        """The evaluation log as ``compare``, ``promote`` and ``outcomes`` read and write it:
        through the Parquet archive (see :class:`credit_core.evaluation.EvaluationLog`)."""
        from credit_core.archive import LogStream, ParquetArchive
        from credit_core.evaluation import EvaluationLog

        archive = ParquetArchive(
            self.archive_url or self.state_dir / "archive", self.archive_storage_options
        )
        stream = (
            None
            if self.log_redis_url is None
            else LogStream(self.log_redis_url, self.log_stream_prefix, self.log_stream_max_len)
        )
        return EvaluationLog(self.evaluation_path(), archive, stream=stream)
