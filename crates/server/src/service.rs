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
use crate::metrics::Metrics;
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
        finish(&self.plane.metrics, rpc, started, result)
    }
}

/// A unary call's answer or status, counted in `credit_scoring_requests_total` and its latency
/// histogram under `rpc`.
pub(crate) fn finish<T>(
    metrics: &Metrics,
    rpc: &str,
    started: Instant,
    result: Result<T, Failure>,
) -> Result<Response<T>, Status> {
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(t) => {
            metrics.observe(rpc, Code::Ok, seconds, 1);
            Ok(Response::new(t))
        }
        Err(f) => {
            metrics.observe(rpc, f.code(), seconds, 1);
            Err(f.to_status())
        }
    }
}

/// A `grpc-timeout` value as the gRPC spec writes it: 1 to 8 digits and a unit (`H` hours,
/// `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds). Anything else
/// is None: no deadline, as tonic's own reading of the header (so every RPC reads it alike).
#[must_use]
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit_at = value.len().checked_sub(1)?;
    if !value.is_char_boundary(unit_at) {
        return None;
    }
    let (digits, unit) = value.split_at(unit_at);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The call's deadline: `started` plus its `grpc-timeout`.
pub(crate) fn deadline_of<T>(request: &Request<T>, started: Instant) -> Option<Instant> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(value).and_then(|d| started.checked_add(d))
}

/// How long before the deadline a handler gives up itself (its message says what it was doing),
/// ahead of `DeadlineLayer`'s timer at the deadline; both answer `DEADLINE_EXCEEDED`.
const DEADLINE_MARGIN: Duration = Duration::from_micros(500);

/// Run `work` under `deadline`: not started once it has passed, ended before it (its work
/// dropped), both `DEADLINE_EXCEEDED`.
pub(crate) async fn within<T>(
    deadline: Option<Instant>,
    work: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    let Some(deadline) = deadline else {
        return work.await;
    };
    let stop = deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(deadline);
    if Instant::now() >= stop {
        return Err(Failure::DeadlineExceeded(
            "the call's deadline passed before it started".into(),
        ));
    }
    match tokio::time::timeout_at(tokio::time::Instant::from_std(stop), work).await {
        Ok(result) => result,
        Err(_) => Err(Failure::DeadlineExceeded(
            "the call's deadline passed before its answer was ready".into(),
        )),
    }
}

#[tonic::async_trait]
impl Scoring for ScoringService {
    async fn score(&self, request: Request<RawRequest>) -> Result<Response<Encoded>, Status> {
        let started = Instant::now();
        let deadline = deadline_of(&request, started);
        let work = self.plane.score_one(request.into_inner().0, deadline);
        let result = within(deadline, work).await;
        self.finish("Score", started, result.map(Encoded))
    }

    async fn score_batch(&self, request: Request<RawRequest>) -> Result<Response<Encoded>, Status> {
        let started = Instant::now();
        let deadline = deadline_of(&request, started);
        let work = self.plane.score_batch(request.into_inner().0, deadline);
        let result = within(deadline, work).await;
        self.finish("ScoreBatch", started, result.map(Encoded))
    }

    type ScoreStreamStream = ReceiverStream<Result<Encoded, Status>>;

    async fn score_stream(
        &self,
        request: Request<Streaming<RawRequest>>,
    ) -> Result<Response<Self::ScoreStreamStream>, Status> {
        let deadline = deadline_of(&request, Instant::now());
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
            let answers = answer_stream(plane, in_rx, out_tx.clone(), max, wait, window);
            let ended = match deadline {
                None => {
                    answers.await;
                    false
                }
                Some(d) => tokio::time::timeout_at(tokio::time::Instant::from_std(d), answers)
                    .await
                    .is_err(),
            };
            reader.abort();
            if ended {
                // The stream's deadline: it ends with that status, its work dropped.
                let status = Status::deadline_exceeded("the stream's deadline passed");
                let _ = out_tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }

    async fn get_model_info(
        &self,
        request: Request<proto::GetModelInfoRequest>,
    ) -> Result<Response<proto::GetModelInfoResponse>, Status> {
        let started = Instant::now();
        let deadline = deadline_of(&request, started);
        let info = within(deadline, async { Ok(self.plane.model_info()) }).await;
        self.finish("GetModelInfo", started, info)
    }

    async fn report_outcome(
        &self,
        request: Request<proto::ReportOutcomeRequest>,
    ) -> Result<Response<proto::ReportOutcomeResponse>, Status> {
        let started = Instant::now();
        let deadline = deadline_of(&request, started);
        let result = match self.caller("ReportOutcome", &request) {
            Ok(caller) => {
                // Not cut short once writing began: an outcome is on disk or reported not to be.
                match check_started(deadline) {
                    Ok(()) => {
                        self.plane
                            .record_outcomes(request.into_inner(), &caller)
                            .await
                    }
                    Err(f) => Err(f),
                }
            }
            Err(f) => Err(f),
        };
        self.finish("ReportOutcome", started, result)
    }
}

/// `DEADLINE_EXCEEDED` when `deadline` has (nearly) passed before the work starts.
fn check_started(deadline: Option<Instant>) -> Result<(), Failure> {
    match deadline {
        Some(d) if Instant::now() + DEADLINE_MARGIN >= d => Err(Failure::DeadlineExceeded(
            "the call's deadline passed before it started".into(),
        )),
        _ => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_is_read_per_the_spec() {
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_grpc_timeout("3H"),
            Some(Duration::from_secs(3 * 3600))
        );
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in [
            "",
            "S",
            "1",
            "123456789S",
            "1s",
            "-1S",
            "1.5S",
            "1 S",
            "1é",
            "１S",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn work_is_not_started_after_the_deadline_and_is_cut_before_it() {
        let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = started.clone();
        let past = Instant::now().checked_sub(Duration::from_millis(1));
        let r: Result<(), Failure> = within(past, async move {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
        .await;
        assert_eq!(r.map_err(|f| f.code()), Err(Code::DeadlineExceeded));
        assert!(!started.load(std::sync::atomic::Ordering::SeqCst));
        let soon = Instant::now() + Duration::from_millis(20);
        let slow = within(Some(soon), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        });
        let t = Instant::now();
        assert_eq!(
            slow.await.map_err(|f| f.code()),
            Err(Code::DeadlineExceeded)
        );
        assert!(t.elapsed() < Duration::from_millis(500));
        assert_eq!(within(None, async { Ok(1) }).await, Ok(1));
    }
}
