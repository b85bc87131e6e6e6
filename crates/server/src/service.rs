//! The `credit.scoring.v1.Scoring` service: converts and delegates to the [`Plane`], and counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::auth::{Authorizer, Caller};
use crate::codec::{Encoded, RawRequest};
use crate::errors::{size_limit_status, Failure};
use crate::plane::{Plane, RecentIds};
use crate::proto;
use crate::proto::scoring_server::Scoring;

pub struct ScoringService {
    plane: Arc<Plane>,
    auth: Arc<Authorizer>,
}

impl ScoringService {
    #[must_use]
    pub fn new(plane: Arc<Plane>, auth: Arc<Authorizer>) -> Self {
        Self { plane, auth }
    }

    /// Who calls a state-changing `rpc`; a refusal is counted and logged (never the token).
    fn caller<T>(&self, rpc: &str, request: &Request<T>) -> Result<Caller, Failure> {
        let certs = request.peer_certs();
        let remote = request.remote_addr();
        self.auth
            .authorize(
                rpc,
                request.metadata(),
                certs.as_deref().map(Vec::as_slice),
                remote,
            )
            .inspect_err(|f| {
                let code = f.code();
                self.plane
                    .metrics
                    .auth_denied
                    .with_label_values(&[
                        rpc,
                        if code == Code::PermissionDenied {
                            "PERMISSION_DENIED"
                        } else {
                            "UNAUTHENTICATED"
                        },
                    ])
                    .inc();
                let peer = remote.map_or_else(|| "an unknown peer".to_string(), |a| a.to_string());
                log::warn!(
                    "{rpc} from {peer} refused ({code:?}): {}",
                    f.to_status_proto().message
                );
            })
    }

    fn finish<T>(
        &self,
        rpc: &str,
        started: Instant,
        result: Result<T, Failure>,
    ) -> Result<Response<T>, Status> {
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(t) => {
                self.plane.metrics.observe(rpc, Code::Ok, seconds, 1);
                Ok(Response::new(t))
            }
            Err(f) => {
                self.plane.metrics.observe(rpc, f.code(), seconds, 1);
                Err(f.to_status())
            }
        }
    }
}

#[tonic::async_trait]
impl Scoring for ScoringService {
    async fn score(&self, request: Request<RawRequest>) -> Result<Response<Encoded>, Status> {
        let started = Instant::now();
        let result = self.plane.score_one(request.into_inner().0).await;
        self.finish("Score", started, result.map(Encoded))
    }

    async fn score_batch(&self, request: Request<RawRequest>) -> Result<Response<Encoded>, Status> {
        let started = Instant::now();
        let result = self.plane.score_batch(request.into_inner().0).await;
        self.finish("ScoreBatch", started, result.map(Encoded))
    }

    type ScoreStreamStream = ReceiverStream<Result<Encoded, Status>>;

    async fn score_stream(
        &self,
        request: Request<Streaming<RawRequest>>,
    ) -> Result<Response<Self::ScoreStreamStream>, Status> {
        let config = &self.plane.config;
        let queue = config.stream_queue.max(1);
        let (max, wait, window) = (
            config.stream_batch_max.max(1),
            config.stream_batch_wait,
            config.stream_id_window,
        );
        let (out_tx, out_rx) = mpsc::channel(queue);
        let (in_tx, in_rx) = mpsc::channel(queue);
        let incoming = request.into_inner();
        let reader = tokio::spawn(read_ahead(incoming, in_tx));
        let plane = self.plane.clone();
        tokio::spawn(async move {
            answer_stream(plane, in_rx, out_tx, max, wait, window).await;
            reader.abort();
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }

    async fn get_model_info(
        &self,
        _request: Request<proto::GetModelInfoRequest>,
    ) -> Result<Response<proto::GetModelInfoResponse>, Status> {
        let started = Instant::now();
        let info = self.plane.model_info();
        self.finish("GetModelInfo", started, Ok(info))
    }

    async fn report_outcome(
        &self,
        request: Request<proto::ReportOutcomeRequest>,
    ) -> Result<Response<proto::ReportOutcomeResponse>, Status> {
        let started = Instant::now();
        let result = match self.caller("ReportOutcome", &request) {
            Ok(caller) => {
                self.plane
                    .record_outcomes(request.into_inner(), &caller)
                    .await
            }
            Err(f) => Err(f),
        };
        self.finish("ReportOutcome", started, result)
    }
}

/// Read a stream's messages into `queue` (bounded: when it is full this stops reading, and
/// HTTP/2 flow control stops the client). The stream's own error comes last.
async fn read_ahead(
    mut incoming: Streaming<RawRequest>,
    queue: mpsc::Sender<Result<Bytes, Status>>,
) {
    loop {
        let item = match incoming.message().await {
            Ok(Some(m)) => Ok(m.0),
            Ok(None) => return,
            Err(status) => Err(size_limit_status(status)),
        };
        let end = item.is_err();
        if queue.send(item).await.is_err() || end {
            return;
        }
    }
}

/// Score a stream in micro-batches of what is already read (up to `max`, waiting at most
/// `wait` after a batch's first message), answering every message in order.
async fn answer_stream(
    plane: Arc<Plane>,
    mut queue: mpsc::Receiver<Result<Bytes, Status>>,
    out: mpsc::Sender<Result<Encoded, Status>>,
    max: usize,
    wait: Duration,
    window: usize,
) {
    let labels = ["credit.scoring.v1.Scoring", "ScoreStream", "bidi_stream"];
    let received = plane.metrics.grpc_received.with_label_values(&labels);
    let sent = plane.metrics.grpc_sent.with_label_values(&labels);
    let mut seen = RecentIds::new(window);
    while let Some(first) = queue.recv().await {
        let mut batch = Vec::with_capacity(max);
        let mut end = None;
        match first {
            Ok(b) => batch.push(b),
            Err(s) => end = Some(s),
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut yielded = false;
        while end.is_none() && batch.len() < max {
            match queue.try_recv() {
                Ok(Ok(b)) => batch.push(b),
                Ok(Err(s)) => end = Some(s),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if !wait.is_zero() {
                        match tokio::time::timeout_at(deadline, queue.recv()).await {
                            Ok(Some(Ok(b))) => batch.push(b),
                            Ok(Some(Err(s))) => end = Some(s),
                            Ok(None) | Err(_) => break,
                        }
                    } else if !yielded {
                        // Let the reader run once: messages already on the connection join.
                        yielded = true;
                        tokio::task::yield_now().await;
                    } else {
                        break;
                    }
                }
            }
        }
        if !batch.is_empty() {
            let started = Instant::now();
            received.inc_by(batch.len() as u64);
            let answers = plane.score_stream_batch(batch, &mut seen).await;
            let seconds = started.elapsed().as_secs_f64();
            for (bytes, code) in answers {
                plane.metrics.observe("ScoreStream", code, seconds, 1);
                if out.send(Ok(Encoded(bytes))).await.is_err() {
                    return; // the client went away
                }
                sent.inc();
            }
        }
        if let Some(status) = end {
            let _ = out.send(Err(status)).await;
            return;
        }
    }
}
