//! Types generated from `proto/` (see `build.rs`).
#![allow(clippy::pedantic, clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/credit.scoring.v1.rs"));
include!(concat!(env!("OUT_DIR"), "/credit.scoring.v1.Scoring.rs"));

/// The descriptor set server reflection serves: `credit/scoring/v1/scoring.proto` and what it
/// imports, plus `google/rpc/error_details.proto` (the details of every error).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/scoring_descriptor.bin"));
