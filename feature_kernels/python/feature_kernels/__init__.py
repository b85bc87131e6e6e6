"""altscore feature kernels: every rule a score depends on, implemented once in Rust.

Training calls the column path (``FeaturePipeline.transform_frame`` / ``transform_columns``);
the data plane (Rust) evaluates the same compiled plan per request, so they agree bit for bit.
``TreeEnsemble`` evaluates the trained XGBoost model itself: margins and exact TreeSHAP.
``ScorePolicy``, ``logistic`` and ``routing_bucket`` are the serving rules, read from Python.
The extension also carries the data plane's handle (``DataPlane``, ``ServingModel``), the
feature-store client and the evaluation log's writer; the scoring server and ``credit_core``
use those.
"""

from feature_kernels._core import (
    DataPlane,
    FeatureError,
    FeaturePlan,
    FeatureStoreClient,
    LogWriteError,
    LogWriter,
    ModelFormatError,
    PlanError,
    ScorePolicy,
    ServingModel,
    StoreError,
    TreeEnsemble,
    __version__,
    build_profile,
    init_logging,
    logistic,
    outcome_line,
    prediction_line,
    routing_bucket,
    store_key,
)
from feature_kernels.pipeline import FeaturePipeline, Violation, feature_error_violations
from feature_kernels.spec import (
    DeriveDef,
    EntityDef,
    EntityFeatureDef,
    FeatureDef,
    FeatureSpec,
    HistoryTable,
    InputDef,
    ModelDef,
    SpecError,
    TargetDef,
    load_spec,
    parse_spec,
)

__all__ = [
    "DataPlane",
    "DeriveDef",
    "EntityDef",
    "EntityFeatureDef",
    "FeatureDef",
    "FeatureError",
    "FeaturePipeline",
    "FeaturePlan",
    "FeatureSpec",
    "FeatureStoreClient",
    "HistoryTable",
    "InputDef",
    "LogWriteError",
    "LogWriter",
    "ModelDef",
    "ModelFormatError",
    "PlanError",
    "ScorePolicy",
    "ServingModel",
    "SpecError",
    "StoreError",
    "TargetDef",
    "TreeEnsemble",
    "Violation",
    "__version__",
    "build_profile",
    "feature_error_violations",
    "init_logging",
    "load_spec",
    "logistic",
    "outcome_line",
    "parse_spec",
    "prediction_line",
    "routing_bucket",
    "store_key",
]
