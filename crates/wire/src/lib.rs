//! altscore's hot-message protobuf codec: `ScoreRequest` / `ScoreBatchRequest` bytes straight
//! into rows ([`decode`]), `ScoreResponse` / `ScoreBatchResponse` / `ScoreStreamResponse` bytes
//! straight from values ([`encode`]). Every other message goes through prost in the server.
//!
//! Hand-written for the hot path (measured in `benchmarks/RESULTS.md`): it is tied to protobuf
//! by tests (Python's upb on random messages, prost in the server), by [`fields::FIELDS`] (a test
//! compares it with `proto/`) and by a fuzz target (`fuzz/`).

pub mod decode;
pub mod encode;
pub mod fields;

pub use decode::{parse_batch, parse_request, ApplicantView, RequestView, WireError};
pub use encode::{Answer, ExplanationOut, ReasonOut};
