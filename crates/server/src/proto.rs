//! Types generated from `proto/` (see `build.rs`).
#![allow(clippy::pedantic, clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/credit.scoring.v1.rs"));
include!(concat!(env!("OUT_DIR"), "/credit.scoring.v1.Scoring.rs"));

/// The Open Inference Protocol v2 (`proto/inference/grpc_predict_v2.proto`): its messages and
/// the `GRPCInferenceService` server.
pub mod inference {
    #![allow(clippy::pedantic, clippy::all, missing_docs, non_camel_case_types)]

    include!(concat!(env!("OUT_DIR"), "/inference.rs"));
    include!(concat!(
        env!("OUT_DIR"),
        "/inference.GRPCInferenceService.rs"
    ));

    pub use g_r_p_c_inference_service_server::{GRPCInferenceService, GRPCInferenceServiceServer};
}

/// The descriptor set server reflection serves: `credit/scoring/v1/scoring.proto` and what it
/// imports, `google/rpc/error_details.proto` (the details of every error) and
/// `inference/grpc_predict_v2.proto` (the Open Inference Protocol v2).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/scoring_descriptor.bin"));
