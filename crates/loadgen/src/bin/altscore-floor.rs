//! The transport floor: altscore's `Scoring` service on tonic, with altscore's codec and the
//! gRPC port's transport settings (`altscore_server::server::transport`), answering every call
//! with fixed, pre-encoded bytes and doing no other work.
//!
//!     altscore-floor --port 50061 --threads 2

use std::sync::Arc;

use altscore_server::codec::{Encoded, RawRequest};
use altscore_server::config::Config;
use altscore_server::proto::scoring_server::{Scoring, ScoringServer};
use altscore_server::proto::{
    GetModelInfoRequest, GetModelInfoResponse, ReportOutcomeRequest, ReportOutcomeResponse,
};
use altscore_wire::encode::{model_ref, put_batch_item, put_stream_answer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

struct Floor {
    one: Arc<Vec<u8>>,
    batch: Arc<Vec<u8>>,
    stream: Arc<Vec<u8>>,
}

#[tonic::async_trait]
impl Scoring for Floor {
    async fn score(&self, _r: Request<RawRequest>) -> Result<Response<Encoded>, Status> {
        Ok(Response::new(Encoded(self.one.to_vec())))
    }

    async fn score_batch(&self, _r: Request<RawRequest>) -> Result<Response<Encoded>, Status> {
        Ok(Response::new(Encoded(self.batch.to_vec())))
    }

    type ScoreStreamStream = ReceiverStream<Result<Encoded, Status>>;

    async fn score_stream(
        &self,
        request: Request<Streaming<RawRequest>>,
    ) -> Result<Response<Self::ScoreStreamStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let answer = self.stream.clone();
        tokio::spawn(async move {
            while let Some(Ok(_)) = incoming.next().await {
                if tx.send(Ok(Encoded(answer.to_vec()))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_model_info(
        &self,
        _r: Request<GetModelInfoRequest>,
    ) -> Result<Response<GetModelInfoResponse>, Status> {
        Ok(Response::new(GetModelInfoResponse::default()))
    }

    async fn report_outcome(
        &self,
        _r: Request<ReportOutcomeRequest>,
    ) -> Result<Response<ReportOutcomeResponse>, Status> {
        Ok(Response::new(ReportOutcomeResponse::default()))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = altscore_loadgen::arg(&args, "--port")
        .unwrap_or_else(|| "50061".into())
        .parse()?;
    let threads: usize = altscore_loadgen::arg(&args, "--threads")
        .unwrap_or_else(|| "2".into())
        .parse()?;
    let model = model_ref("altscore-bench", "1", 1);
    let answer = altscore_loadgen::example_answer("bench-000000", &model);
    let mut one = Vec::new();
    answer.put(&mut one);
    let mut batch = Vec::new();
    for _ in 0..64 {
        put_batch_item(&mut batch, &answer);
    }
    let mut stream = Vec::new();
    put_stream_answer(&mut stream, answer.request_id, &answer);
    let floor = Floor {
        one: Arc::new(one),
        batch: Arc::new(batch),
        stream: Arc::new(stream),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        eprintln!("floor on 127.0.0.1:{port}");
        let config = Config::default();
        // the server's per-call timer too (its call timeout, 30 s by default)
        altscore_server::server::transport(&config)
            .layer(altscore_server::deadline::DeadlineLayer::new(
                config.call_timeout,
            ))
            .add_service(ScoringServer::new(floor))
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
