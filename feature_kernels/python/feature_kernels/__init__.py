"""altscore feature kernels: every feature transform, implemented once in Rust.

Training calls the column path (``FeaturePipeline.transform_frame`` / ``transform_columns``);
serving calls the row path (``transform_row`` / ``transform_rows``). Both evaluate the same
compiled plan, so they agree bit for bit. ``TreeEnsemble`` evaluates the trained XGBoost model
itself: margins and exact TreeSHAP contributions.
"""

from feature_kernels._core import (
    FeatureError,
    FeaturePlan,
    FrontEnd,
    ModelFormatError,
    PlanError,
    TreeEnsemble,
    __version__,
    build_profile,
    encode_score_responses,
    prediction_log_line,
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
    SpecError,
    TargetDef,
    load_spec,
    parse_spec,
)

__all__ = [
    "DeriveDef",
    "EntityDef",
    "EntityFeatureDef",
    "FeatureDef",
    "FeatureError",
    "FeaturePipeline",
    "FeaturePlan",
    "FeatureSpec",
    "FrontEnd",
    "HistoryTable",
    "InputDef",
    "ModelFormatError",
    "PlanError",
    "SpecError",
    "TargetDef",
    "TreeEnsemble",
    "Violation",
    "__version__",
    "build_profile",
    "encode_score_responses",
    "feature_error_violations",
    "load_spec",
    "parse_spec",
    "prediction_log_line",
]
