//! A `ScoreStream` load generator that keeps streams full: each of `--streams` streams keeps up
//! to `--window` messages in flight (ghz's bidirectional client waits for each answer before the
//! next message). Every message is the same pre-serialized `ScoreRequest` (`--body`); with
//! `--unique-ids yes` each gets its own `request_id` (a stream rejects repeated ids), written in
//! front of the body (protobuf reads fields in any order). Prints one JSON object: answers,
//! errors, seconds, rate, latency percentiles (send to answer, ms).
//!
//!     altscore-stream-load --target 127.0.0.1:50051 --body score-1.bin --streams 16 \
//!         --window 64 --duration 10 --warmup 1 --connections 16

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use altscore_loadgen::{arg, percentiles, seconds};
use bytes::{Buf, Bytes};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

/// Bytes out, bytes in: the client sends the body as is and keeps each answer's bytes.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Whether a `ScoreStreamResponse` carries an error (field 3) rather than a response.
fn is_error(answer: &[u8]) -> bool {
    let mut i = 0;
    while i < answer.len() {
        let tag = answer[i];
        if tag == (3 << 3) | 2 {
            return true;
        }
        if tag & 7 != 2 {
            return false;
        }
        // length-delimited: skip the varint length and the body
        let (mut len, mut shift) = (0usize, 0);
        i += 1;
        while i < answer.len() {
            let b = answer[i];
            len |= usize::from(b & 0x7f) << shift;
            i += 1;
            shift += 7;
            if b < 0x80 {
                break;
            }
        }
        i += len;
    }
    false
}

struct Totals {
    measuring: AtomicBool,
    stop: AtomicBool,
    answers: AtomicU64,
    errors: AtomicU64,
}

/// `body` with `request_id` (field 1) set to `id` in front.
fn with_id(body: &[u8], id: &str) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + id.len() + 2);
    out.push(0x0a);
    altscore_wire::encode::put_varint(&mut out, id.len() as u64);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(body);
    Bytes::from(out)
}

async fn one_stream(
    channel: Channel,
    body: Bytes,
    unique: Option<usize>,
    window: usize,
    totals: Arc<Totals>,
) -> Result<Vec<u32>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let (tx, rx) = mpsc::channel::<Bytes>(window);
    let permits = Arc::new(Semaphore::new(window));
    let sent_at = Arc::new(std::sync::Mutex::new(VecDeque::<Instant>::with_capacity(
        window,
    )));
    let path = http::uri::PathAndQuery::from_static("/credit.scoring.v1.Scoring/ScoreStream");
    let request = tonic::Request::new(ReceiverStream::new(rx));
    let sender = {
        let (permits, sent_at, totals) = (permits.clone(), sent_at.clone(), totals.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !totals.stop.load(Ordering::Relaxed) {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                permit.forget();
                let message = match unique {
                    Some(stream) => with_id(&body, &format!("s{stream}-{n}")),
                    None => body.clone(),
                };
                n += 1;
                if let Ok(mut q) = sent_at.lock() {
                    q.push_back(Instant::now());
                }
                if tx.send(message).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut answers = grpc.streaming(request, path, RawCodec).await?.into_inner();
    let mut latencies = Vec::new();
    while let Some(answer) = answers.next().await {
        let answer = answer?;
        let sent = sent_at.lock().ok().and_then(|mut q| q.pop_front());
        permits.add_permits(1);
        if totals.measuring.load(Ordering::Relaxed) {
            totals.answers.fetch_add(1, Ordering::Relaxed);
            if is_error(&answer) {
                totals.errors.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(t) = sent {
                latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
        }
        if totals.stop.load(Ordering::Relaxed) {
            break;
        }
    }
    sender.abort();
    Ok(latencies)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str, default: &str| arg(&args, name).unwrap_or_else(|| default.to_string());
    let target = get("--target", "127.0.0.1:50051");
    let body = Bytes::from(std::fs::read(get("--body", "score-1.bin"))?);
    let streams: usize = get("--streams", "16").parse()?;
    let window: usize = get("--window", "64").parse()?;
    let connections: usize = get("--connections", &streams.to_string()).parse()?;
    let duration: f64 = get("--duration", "10").parse()?;
    let warmup: f64 = get("--warmup", "1").parse()?;
    let threads: usize = get("--threads", "1").parse()?;
    let unique = get("--unique-ids", "no") == "yes";
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let endpoint = Endpoint::from_shared(format!("http://{target}"))?
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(1 << 20))
            .initial_connection_window_size(Some(4 << 20));
        let mut channels = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            channels.push(endpoint.connect().await?);
        }
        let totals = Arc::new(Totals {
            measuring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            answers: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        });
        let tasks: Vec<_> = (0..streams)
            .map(|i| {
                let channel = channels[i % channels.len()].clone();
                let id = unique.then_some(i);
                tokio::spawn(one_stream(
                    channel,
                    body.clone(),
                    id,
                    window,
                    totals.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(seconds(warmup)).await;
        totals.measuring.store(true, Ordering::Relaxed);
        let started = Instant::now();
        tokio::time::sleep(seconds(duration)).await;
        totals.measuring.store(false, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        totals.stop.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        let mut failures = Vec::new();
        for t in tasks {
            match tokio::time::timeout(seconds(10.0), t).await {
                Ok(Ok(Ok(l))) => latencies.extend(l),
                Ok(Ok(Err(status))) if status.code() == tonic::Code::Cancelled => {}
                Ok(Ok(Err(status))) => failures.push(status.to_string()),
                Ok(Err(e)) => failures.push(e.to_string()),
                Err(_) => failures.push("a stream did not end".into()),
            }
        }
        latencies.sort_unstable();
        let p = percentiles(&latencies, &[0.5, 0.9, 0.99]);
        let answers = totals.answers.load(Ordering::Relaxed);
        println!(
            "{{\"answers\": {answers}, \"errors\": {}, \"seconds\": {elapsed:.3}, \"rate\": {:.1}, \
             \"p50_ms\": {:.3}, \"p90_ms\": {:.3}, \"p99_ms\": {:.3}, \"stream_failures\": {}}}",
            totals.errors.load(Ordering::Relaxed),
            answers as f64 / elapsed,
            p[0],
            p[1],
            p[2],
            failures.len()
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
