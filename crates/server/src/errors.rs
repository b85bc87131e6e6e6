//! One table from the data plane's errors to gRPC statuses, and the rich status they travel in.
//!
//! Bad input is `INVALID_ARGUMENT` with a `google.rpc.BadRequest` naming each bad field with a
//! machine-readable `reason`. What a client gets back is bounded: at most [`MAX_LISTED`]
//! violations are listed, then one `TOO_MANY_VIOLATIONS` entry counts the rest, echoed values
//! were already cut by the kernels, and the message is cut at [`MAX_MESSAGE_BYTES`]; so the
//! trailers of any error stay well under the 8 KiB a standard client accepts. Anything unexpected
//! is `INTERNAL` with an opaque message; the cause goes to the log only.

use altscore_kernels::{Violation, ViolationKind};
use bytes::Bytes;
use prost::Message as _;
use tonic::Code;
use tonic_types::pb;

/// Most violations listed in one error.
pub const MAX_LISTED: usize = 16;
/// Most bytes of listed violations in one error (before base64 in the trailers).
pub const MAX_DETAILS_BYTES: usize = 4096;
/// Longest status message (bytes; cut at a character boundary).
pub const MAX_MESSAGE_BYTES: usize = 512;
/// `google.rpc.ErrorInfo.domain` of every error this service answers.
pub const ERROR_DOMAIN: &str = "scoring.altscore.dev";
/// The only text a client sees for an unexpected error.
pub const INTERNAL_MESSAGE: &str = "internal error";

/// Why a call (or one stream message) was not answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Bad input: every bad field.
    Invalid(Vec<Violation>),
    /// No model yet, or a required dependency (the feature store) failed.
    Unavailable(String),
    /// The call's deadline passed.
    DeadlineExceeded(String),
    /// The call contradicts what is recorded: (subject, description) of each problem.
    FailedPrecondition(Vec<(String, String)>),
    /// A state-changing call without acceptable credentials.
    Unauthenticated(String),
    /// A state-changing call from an identity not allowed to make it.
    PermissionDenied(String),
    /// A model (name or version) that is not served (the Open Inference Protocol names one).
    NotFound(String),
    /// Something unexpected; the cause was logged.
    Internal,
}

impl Failure {
    /// Malformed protobuf bytes of a `what` message.
    #[must_use]
    pub fn malformed(what: &str, error: impl std::fmt::Display) -> Self {
        Failure::Invalid(vec![Violation::new(
            "request",
            ViolationKind::Malformed,
            format!("not a valid {what} message: {error}"),
        )])
    }

    #[must_use]
    pub fn code(&self) -> Code {
        match self {
            // Values built for another model's input order: the request is well formed, the
            // server's state (its model) is not what the client built it for.
            Failure::Invalid(v)
                if v.iter()
                    .any(|v| v.kind == ViolationKind::NumericLayoutMismatch) =>
            {
                Code::FailedPrecondition
            }
            Failure::Invalid(_) => Code::InvalidArgument,
            Failure::Unavailable(_) => Code::Unavailable,
            Failure::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Failure::FailedPrecondition(_) => Code::FailedPrecondition,
            Failure::Unauthenticated(_) => Code::Unauthenticated,
            Failure::PermissionDenied(_) => Code::PermissionDenied,
            Failure::NotFound(_) => Code::NotFound,
            Failure::Internal => Code::Internal,
        }
    }

    /// The machine-readable reason of this failure (`google.rpc.ErrorInfo.reason`): the first
    /// violation's reason for bad input, else one per cause.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Invalid(v) => v
                .iter()
                .find(|v| v.kind == ViolationKind::NumericLayoutMismatch)
                .or_else(|| v.first())
                .map_or("INVALID_ARGUMENT", |v| v.kind.reason()),
            Failure::Unavailable(_) => "UNAVAILABLE",
            Failure::DeadlineExceeded(_) => "DEADLINE_EXCEEDED",
            Failure::FailedPrecondition(_) => "OUTCOME_CONFLICT",
            Failure::Unauthenticated(_) => "UNAUTHENTICATED",
            Failure::PermissionDenied(_) => "PERMISSION_DENIED",
            Failure::NotFound(_) => "MODEL_NOT_FOUND",
            Failure::Internal => "INTERNAL",
        }
    }

    /// The `google.rpc.Status` of this failure (what a stream message's error carries, and what
    /// a unary call's `grpc-status-details-bin` holds): its specific details (`BadRequest`,
    /// `PreconditionFailure`) first, then a `google.rpc.ErrorInfo` with [`ERROR_DOMAIN`] and
    /// [`Self::reason`].
    #[must_use]
    pub fn to_status_proto(&self) -> pb::Status {
        let mut status = self.status_core();
        let mut metadata = std::collections::HashMap::new();
        match self {
            Failure::Invalid(v) => {
                metadata.insert("violations".to_string(), v.len().to_string());
            }
            Failure::FailedPrecondition(v) => {
                metadata.insert("violations".to_string(), v.len().to_string());
            }
            _ => {}
        }
        status.details.push(prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
            value: pb::ErrorInfo {
                reason: self.reason().into(),
                domain: ERROR_DOMAIN.into(),
                metadata,
            }
            .encode_to_vec(),
        });
        status
    }

    fn status_core(&self) -> pb::Status {
        let code = self.code() as i32;
        match self {
            Failure::Invalid(violations) => {
                let mut field_violations = Vec::new();
                let mut bytes = 0;
                for v in violations.iter().take(MAX_LISTED) {
                    let fv = pb::bad_request::FieldViolation {
                        field: v.field.clone(),
                        description: v.description.to_string(),
                        reason: v.kind.reason().to_string(),
                        localized_message: None,
                    };
                    bytes += fv.encoded_len() + 3;
                    if bytes > MAX_DETAILS_BYTES && !field_violations.is_empty() {
                        break;
                    }
                    field_violations.push(fv);
                }
                let (listed, more) = violations.split_at(field_violations.len());
                if !more.is_empty() {
                    field_violations.push(pb::bad_request::FieldViolation {
                        field: "request".into(),
                        description: format!("{} more violations not listed", more.len()),
                        reason: ViolationKind::TooManyViolations.reason().to_string(),
                        localized_message: None,
                    });
                }
                let text = listed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                let more_text = if more.is_empty() {
                    String::new()
                } else {
                    format!("; and {} more", more.len())
                };
                let message = cut(&format!("invalid request: {text}{more_text}"));
                let bad = pb::BadRequest { field_violations };
                pb::Status {
                    code,
                    message,
                    details: vec![prost_types::Any {
                        type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
                        value: bad.encode_to_vec(),
                    }],
                }
            }
            Failure::Unavailable(m)
            | Failure::DeadlineExceeded(m)
            | Failure::Unauthenticated(m)
            | Failure::PermissionDenied(m)
            | Failure::NotFound(m) => pb::Status {
                code,
                message: cut(m),
                details: Vec::new(),
            },
            Failure::FailedPrecondition(problems) => {
                let listed = &problems[..problems.len().min(MAX_LISTED)];
                let violations = listed
                    .iter()
                    .map(
                        |(subject, description)| pb::precondition_failure::Violation {
                            r#type: "OUTCOME_CONFLICT".into(),
                            subject: subject.clone(),
                            description: cut(description),
                        },
                    )
                    .collect();
                let more = problems.len() - listed.len();
                let text = listed
                    .iter()
                    .map(|(s, d)| format!("{s}: {d}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                let more_text = if more == 0 {
                    String::new()
                } else {
                    format!("; and {more} more")
                };
                pb::Status {
                    code,
                    message: cut(&format!("{text}{more_text}")),
                    details: vec![prost_types::Any {
                        type_url: "type.googleapis.com/google.rpc.PreconditionFailure".into(),
                        value: pb::PreconditionFailure { violations }.encode_to_vec(),
                    }],
                }
            }
            Failure::Internal => pb::Status {
                code,
                message: INTERNAL_MESSAGE.into(),
                details: Vec::new(),
            },
        }
    }

    /// The status of a failed unary call.
    #[must_use]
    pub fn to_status(&self) -> tonic::Status {
        let proto = self.to_status_proto();
        tonic::Status::with_details(
            self.code(),
            proto.message.clone(),
            Bytes::from(proto.encode_to_vec()),
        )
    }
}

/// Whether a status message is tonic's "message above the size limit".
fn is_size_limit(message: &str) -> bool {
    message.contains("message length too large") || message.contains("length%20too%20large")
}

/// tonic answers a message above the size limit `OUT_OF_RANGE`; gRPC (and this API) answer
/// `RESOURCE_EXHAUSTED`. For a stream's status.
#[must_use]
pub fn size_limit_status(status: tonic::Status) -> tonic::Status {
    if status.code() == Code::OutOfRange && is_size_limit(status.message()) {
        tonic::Status::resource_exhausted(status.message().to_string())
    } else {
        status
    }
}

/// The same for a unary call's trailers-only answer (a tower response map on the port).
pub fn size_limit_response<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let limit = headers.get("grpc-status").map(http::HeaderValue::as_bytes) == Some(b"11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(is_size_limit);
    if limit {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

/// `text` cut to [`MAX_MESSAGE_BYTES`] at a character boundary.
fn cut(text: &str) -> String {
    if text.len() <= MAX_MESSAGE_BYTES {
        return text.to_string();
    }
    let mut end = MAX_MESSAGE_BYTES - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        let bad = Failure::Invalid(vec![
            Violation::new("x", ViolationKind::OutOfRange, "bad"),
            Violation::new("y", ViolationKind::UnknownFeature, "worse"),
        ]);
        let s = bad.to_status_proto();
        assert_eq!(s.code, Code::InvalidArgument as i32);
        assert_eq!(s.message, "invalid request: x: bad; y: worse");
        let detail = pb::BadRequest::decode(s.details[0].value.as_slice());
        let fields: Vec<_> = detail
            .map(|d| d.field_violations)
            .unwrap_or_default()
            .into_iter()
            .map(|v| (v.field, v.description, v.reason))
            .collect();
        assert_eq!(
            fields,
            [
                ("x".into(), "bad".into(), "OUT_OF_RANGE".into()),
                ("y".into(), "worse".into(), "UNKNOWN_FEATURE".into())
            ]
        );
        assert_eq!(Failure::Internal.to_status().message(), INTERNAL_MESSAGE);
        assert_eq!(
            Failure::Unavailable("no model".into()).to_status().code(),
            Code::Unavailable
        );
    }

    #[test]
    fn error_trailers_stay_small() {
        // 100 applicants each missing an input, with long fields: listed 16, counted the rest.
        let violations: Vec<Violation> = (0..100)
            .map(|i| {
                Violation::new(
                    format!("requests[{i}].applicant.numeric.{}", "k".repeat(64)),
                    ViolationKind::MissingRequired,
                    "é".repeat(100),
                )
            })
            .collect();
        let status = Failure::Invalid(violations).to_status();
        // grpc-message is percent-encoded (3 bytes per non-ASCII byte at most), the details
        // base64 (4 per 3).
        let bytes = status.message().len() * 3 + status.details().len().div_ceil(3) * 4 + 100;
        assert!(bytes < 8 * 1024, "{bytes} bytes of trailers");
        let proto = Failure::Invalid(vec![]).to_status_proto();
        assert_eq!(proto.code, Code::InvalidArgument as i32);
    }
}
