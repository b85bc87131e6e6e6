//! Code from `proto/`: prost types for the messages the server builds with prost, the `Scoring`
//! service with the hot messages on altscore's own codec, the Open Inference Protocol v2
//! `inference.GRPCInferenceService` (prost messages on the same codec, which answers malformed
//! bytes `INVALID_ARGUMENT`), and the descriptor set that server reflection serves. `protox`
//! compiles the protos in Rust (no `protoc` needed).

use std::error::Error;
use std::path::PathBuf;
use std::{env, fs};

use prost::Message as _;
use tonic_build::manual::{Builder, Method, Service};

fn method(
    name: &str,
    route: &str,
    input: &str,
    output: &str,
) -> tonic_build::manual::MethodBuilder {
    Method::builder()
        .name(name)
        .route_name(route)
        .input_type(input)
        .output_type(output)
        .codec_path("crate::codec::WireCodec")
}

fn main() -> Result<(), Box<dyn Error>> {
    let proto = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let files = protox::compile(
        [
            "credit/scoring/v1/scoring.proto",
            "google/rpc/error_details.proto",
            "inference/grpc_predict_v2.proto",
        ],
        [&proto],
    )?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("scoring_descriptor.bin"), files.encode_to_vec())?;
    prost_build::Config::new()
        .extern_path(".google.rpc", "::tonic_types::pb")
        .compile_fds(files)?;

    let raw = "crate::codec::RawRequest";
    let encoded = "crate::codec::Encoded";
    let scoring = Service::builder()
        .name("Scoring")
        .package("credit.scoring.v1")
        .method(method("score", "Score", raw, encoded).build())
        .method(method("score_batch", "ScoreBatch", raw, encoded).build())
        .method(
            method("score_stream", "ScoreStream", raw, encoded)
                .client_streaming()
                .server_streaming()
                .build(),
        )
        .method(
            method(
                "get_model_info",
                "GetModelInfo",
                "crate::proto::GetModelInfoRequest",
                "crate::proto::GetModelInfoResponse",
            )
            .build(),
        )
        .method(
            method(
                "report_outcome",
                "ReportOutcome",
                "crate::proto::ReportOutcomeRequest",
                "crate::proto::ReportOutcomeResponse",
            )
            .build(),
        )
        .build();
    let oip = |name: &str, route: &str, message: &str| {
        method(
            name,
            route,
            &format!("crate::proto::inference::{message}Request"),
            &format!("crate::proto::inference::{message}Response"),
        )
        .build()
    };
    let inference = Service::builder()
        .name("GRPCInferenceService")
        .package("inference")
        .method(oip("server_live", "ServerLive", "ServerLive"))
        .method(oip("server_ready", "ServerReady", "ServerReady"))
        .method(oip("model_ready", "ModelReady", "ModelReady"))
        .method(oip("server_metadata", "ServerMetadata", "ServerMetadata"))
        .method(oip("model_metadata", "ModelMetadata", "ModelMetadata"))
        .method(oip("model_infer", "ModelInfer", "ModelInfer"))
        .build();
    Builder::new()
        .build_client(false)
        .compile(&[scoring, inference]);
    Ok(())
}
