from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_APPROVE: _ClassVar[Decision]
    DECISION_REVIEW: _ClassVar[Decision]
    DECISION_DECLINE: _ClassVar[Decision]

class Variant(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VARIANT_UNSPECIFIED: _ClassVar[Variant]
    VARIANT_CHAMPION: _ClassVar[Variant]
    VARIANT_CHALLENGER: _ClassVar[Variant]

class InputType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INPUT_TYPE_UNSPECIFIED: _ClassVar[InputType]
    INPUT_TYPE_NUMBER: _ClassVar[InputType]
    INPUT_TYPE_INTEGER: _ClassVar[InputType]
    INPUT_TYPE_CATEGORICAL: _ClassVar[InputType]
DECISION_UNSPECIFIED: Decision
DECISION_APPROVE: Decision
DECISION_REVIEW: Decision
DECISION_DECLINE: Decision
VARIANT_UNSPECIFIED: Variant
VARIANT_CHAMPION: Variant
VARIANT_CHALLENGER: Variant
INPUT_TYPE_UNSPECIFIED: InputType
INPUT_TYPE_NUMBER: InputType
INPUT_TYPE_INTEGER: InputType
INPUT_TYPE_CATEGORICAL: InputType

class Applicant(_message.Message):
    __slots__ = ("applicant_id", "numeric", "categorical", "numeric_values", "numeric_values_layout")
    class NumericEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class CategoricalEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    APPLICANT_ID_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_VALUES_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_VALUES_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    applicant_id: str
    numeric: _containers.ScalarMap[str, float]
    categorical: _containers.ScalarMap[str, str]
    numeric_values: _containers.RepeatedScalarFieldContainer[float]
    numeric_values_layout: str
    def __init__(self, applicant_id: _Optional[str] = ..., numeric: _Optional[_Mapping[str, float]] = ..., categorical: _Optional[_Mapping[str, str]] = ..., numeric_values: _Optional[_Iterable[float]] = ..., numeric_values_layout: _Optional[str] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("request_id", "applicant", "explain")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICANT_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    applicant: Applicant
    explain: bool
    def __init__(self, request_id: _Optional[str] = ..., applicant: _Optional[_Union[Applicant, _Mapping]] = ..., explain: _Optional[bool] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name", "version", "variant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    variant: Variant
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., variant: _Optional[_Union[Variant, str]] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("request_id", "pd", "score", "decision", "model", "defaulted_features", "degraded", "explanation")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PD_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEFAULTED_FEATURES_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    pd: float
    score: int
    decision: Decision
    model: ModelRef
    defaulted_features: _containers.RepeatedScalarFieldContainer[str]
    degraded: bool
    explanation: Explanation
    def __init__(self, request_id: _Optional[str] = ..., pd: _Optional[float] = ..., score: _Optional[int] = ..., decision: _Optional[_Union[Decision, str]] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ..., defaulted_features: _Optional[_Iterable[str]] = ..., degraded: _Optional[bool] = ..., explanation: _Optional[_Union[Explanation, _Mapping]] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("base_value", "contributions", "reasons")
    BASE_VALUE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    base_value: float
    contributions: _containers.RepeatedCompositeFieldContainer[FeatureContribution]
    reasons: _containers.RepeatedCompositeFieldContainer[ReasonCode]
    def __init__(self, base_value: _Optional[float] = ..., contributions: _Optional[_Iterable[_Union[FeatureContribution, _Mapping]]] = ..., reasons: _Optional[_Iterable[_Union[ReasonCode, _Mapping]]] = ...) -> None: ...

class FeatureContribution(_message.Message):
    __slots__ = ("feature", "contribution")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    feature: str
    contribution: float
    def __init__(self, feature: _Optional[str] = ..., contribution: _Optional[float] = ...) -> None: ...

class ReasonCode(_message.Message):
    __slots__ = ("code", "text", "contribution")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    code: str
    text: str
    contribution: float
    def __init__(self, code: _Optional[str] = ..., text: _Optional[str] = ..., contribution: _Optional[float] = ...) -> None: ...

class ScoreBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ScoreRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ScoreRequest, _Mapping]]] = ...) -> None: ...

class ScoreBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ScoreResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[ScoreResponse, _Mapping]]] = ...) -> None: ...

class ScoreStreamResponse(_message.Message):
    __slots__ = ("request_id", "response", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    response: ScoreResponse
    error: _status_pb2.Status
    def __init__(self, request_id: _Optional[str] = ..., response: _Optional[_Union[ScoreResponse, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("request_id", "applicant_id", "defaulted", "observed_at", "correction")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICANT_ID_FIELD_NUMBER: _ClassVar[int]
    DEFAULTED_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    applicant_id: str
    defaulted: bool
    observed_at: float
    correction: bool
    def __init__(self, request_id: _Optional[str] = ..., applicant_id: _Optional[str] = ..., defaulted: _Optional[bool] = ..., observed_at: _Optional[float] = ..., correction: _Optional[bool] = ...) -> None: ...

class ReportOutcomeRequest(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[Outcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[Outcome, _Mapping]]] = ...) -> None: ...

class ReportOutcomeResponse(_message.Message):
    __slots__ = ("recorded", "unchanged")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    unchanged: int
    def __init__(self, recorded: _Optional[int] = ..., unchanged: _Optional[int] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InputInfo(_message.Message):
    __slots__ = ("name", "type", "required", "min", "max", "description", "categories")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: InputType
    required: bool
    min: float
    max: float
    description: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[InputType, str]] = ..., required: _Optional[bool] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., description: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ...) -> None: ...

class ScorePolicy(_message.Message):
    __slots__ = ("base_score", "base_odds", "pdo", "approve_below", "decline_from")
    BASE_SCORE_FIELD_NUMBER: _ClassVar[int]
    BASE_ODDS_FIELD_NUMBER: _ClassVar[int]
    PDO_FIELD_NUMBER: _ClassVar[int]
    APPROVE_BELOW_FIELD_NUMBER: _ClassVar[int]
    DECLINE_FROM_FIELD_NUMBER: _ClassVar[int]
    base_score: float
    base_odds: float
    pdo: float
    approve_below: float
    decline_from: float
    def __init__(self, base_score: _Optional[float] = ..., base_odds: _Optional[float] = ..., pdo: _Optional[float] = ..., approve_below: _Optional[float] = ..., decline_from: _Optional[float] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model", "spec_name", "spec_version", "schema_hash", "inputs", "features", "metrics", "numeric_values_layout")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SPEC_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_HASH_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_VALUES_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    spec_name: str
    spec_version: int
    schema_hash: str
    inputs: _containers.RepeatedCompositeFieldContainer[InputInfo]
    features: _containers.RepeatedScalarFieldContainer[str]
    metrics: _containers.ScalarMap[str, float]
    numeric_values_layout: str
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., spec_name: _Optional[str] = ..., spec_version: _Optional[int] = ..., schema_hash: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[InputInfo, _Mapping]]] = ..., features: _Optional[_Iterable[str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., numeric_values_layout: _Optional[str] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("models", "policy")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    policy: ScorePolicy
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., policy: _Optional[_Union[ScorePolicy, _Mapping]] = ...) -> None: ...
