//! Deadlines are read alike on every RPC (issue 13, point 4), against a real data plane on
//! 127.0.0.1 with no model loaded (an in-time scoring call is then UNAVAILABLE): a call whose
//! `grpc-timeout` has passed is not started (DEADLINE_EXCEEDED; tonic's client times the call by
//! the same header and may end it first, CANCELLED "Timeout expired", on its side), a call whose
//! body is still being read at the server's call timeout is answered DEADLINE_EXCEEDED, a stream
//! ends with DEADLINE_EXCEEDED at its deadline, and a malformed `grpc-timeout` is no deadline
//! for any RPC. (A body still being read at the client's deadline: tests/scoring_server/
//! test_limits.py, over raw HTTP/2, where no client-side timer competes.)

use std::time::{Duration, Instant};

use altscore_server::config::Config;
use altscore_server::proto;
use altscore_server::server::DataPlane;
use altscore_server::store::{Backend, EmbeddedStore, FeatureStore};
use http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};
use tonic_prost::ProstCodec;

/// The server's call timeout in these tests.
const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

fn start() -> Result<DataPlane, String> {
    let config = Config {
        evaluation_dir: std::env::temp_dir()
            .join(format!("altscore-deadlines-{}", std::process::id())),
        call_timeout: Some(CALL_TIMEOUT),
        ..Config::default()
    };
    let plane = DataPlane::start(config, || {
        Ok(FeatureStore::new(Backend::Embedded(
            EmbeddedStore::default(),
        )))
    })
    .map_err(|e| e.to_string())?;
    plane.serve().map_err(|e| e.to_string())?;
    Ok(plane)
}

async fn unary<Q, A>(channel: Channel, path: &'static str, message: Q, timeout: &str) -> Code
where
    Q: prost::Message + Send + Sync + 'static,
    A: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    if grpc.ready().await.is_err() {
        return Code::Unknown;
    }
    let mut request = Request::new(message);
    if let Ok(v) = timeout.parse() {
        request.metadata_mut().insert("grpc-timeout", v);
    }
    let codec: ProstCodec<Q, A> = ProstCodec::default();
    match grpc
        .unary(request, PathAndQuery::from_static(path), codec)
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[test]
fn deadlines_are_read_alike_on_every_rpc() -> Result<(), String> {
    let plane = start()?;
    let port = plane.grpc_port();
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let info = "/credit.scoring.v1.Scoring/GetModelInfo";
        let score = "/credit.scoring.v1.Scoring/Score";
        let request = proto::ScoreRequest {
            request_id: "r".into(),
            ..Default::default()
        };
        for (timeout, info_code, score_code) in [
            ("1n", Code::DeadlineExceeded, Code::DeadlineExceeded), // passed on arrival
            ("5S", Code::Ok, Code::Unavailable),                    // in time: the answer
            ("abc", Code::Ok, Code::Unavailable),                   // malformed: no deadline
            ("123456789S", Code::Ok, Code::Unavailable),            // 9 digits: malformed
        ] {
            let got = unary::<_, proto::GetModelInfoResponse>(
                channel.clone(),
                info,
                proto::GetModelInfoRequest {},
                timeout,
            )
            .await;
            let expired = info_code == Code::DeadlineExceeded && got == Code::Cancelled;
            assert!(
                got == info_code || expired,
                "GetModelInfo, grpc-timeout {timeout}: {got:?}"
            );
            let got =
                unary::<_, proto::ScoreResponse>(channel.clone(), score, request.clone(), timeout)
                    .await;
            let expired = score_code == Code::DeadlineExceeded && got == Code::Cancelled;
            assert!(
                got == score_code || expired,
                "Score, grpc-timeout {timeout}: {got:?}"
            );
        }

        // A unary call whose body never comes: DEADLINE_EXCEEDED at the server's call timeout
        // (tonic's own timer answered CANCELLED "Timeout expired").
        for (timeout, limit, says) in
            [(None::<&str>, CALL_TIMEOUT, "ALTSCORE_CALL_TIMEOUT_SECONDS")]
        {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready().await.map_err(|e| e.to_string())?;
            let (_keep_open, rx) = tokio::sync::mpsc::channel::<proto::ScoreRequest>(1);
            let mut request = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            if let Some(t) = timeout {
                request
                    .metadata_mut()
                    .insert("grpc-timeout", t.parse().map_err(|_| "header")?);
            }
            let codec: ProstCodec<proto::ScoreRequest, proto::ScoreResponse> =
                ProstCodec::default();
            let started = Instant::now();
            let answer = tokio::time::timeout(
                Duration::from_secs(5),
                grpc.client_streaming(request, PathAndQuery::from_static(score), codec),
            )
            .await;
            let status = match answer {
                Ok(Err(status)) => status,
                Ok(Ok(_)) => tonic::Status::ok(""),
                Err(_) => tonic::Status::unknown("no answer within 5 s"),
            };
            let took = started.elapsed();
            assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
            assert!(status.message().contains(says), "{status:?}");
            assert!(
                took >= limit && took < limit + Duration::from_secs(1),
                "{took:?}"
            );
        }

        // A stream that sends nothing ends at its deadline, from the server (this client has
        // no timer of its own).
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.map_err(|e| e.to_string())?;
        let (_keep_open, rx) = tokio::sync::mpsc::channel::<proto::ScoreRequest>(1);
        let mut request = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("grpc-timeout", "300m".parse().map_err(|_| "header")?);
        let codec: ProstCodec<proto::ScoreRequest, proto::ScoreStreamResponse> =
            ProstCodec::default();
        let started = Instant::now();
        let response = grpc
            .streaming(
                request,
                PathAndQuery::from_static("/credit.scoring.v1.Scoring/ScoreStream"),
                codec,
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut answers = response.into_inner();
        let end = tokio::time::timeout(Duration::from_secs(5), answers.message()).await;
        let code = match end {
            Ok(Err(status)) => status.code(),
            Ok(Ok(_)) => Code::Ok,
            Err(_) => Code::Unknown, // no end within 5 s
        };
        assert_eq!(code, Code::DeadlineExceeded);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "{took:?}"
        );
        Ok::<(), String>(())
    })?;
    plane.shutdown(Duration::from_secs(1));
    Ok(())
}
