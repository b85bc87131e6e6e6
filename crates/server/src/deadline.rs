//! Every call's deadline, from the moment its headers arrive: the client's `grpc-timeout` (read
//! by [`parse_grpc_timeout`], the one reading of it) and the server's call timeout, whichever
//! ends first. A call still without its answer then (its request body still being read
//! included) is answered `DEADLINE_EXCEEDED` and its work dropped.
//!
//! tonic's own timer answers `CANCELLED` ("Timeout expired") when it fires, while the handlers
//! answered `DEADLINE_EXCEEDED`: one cause, two codes. The server's call timeout is therefore
//! this layer's alone (no `Server::timeout`); tonic still times every call by its
//! `grpc-timeout` (that timer cannot be removed), so this layer ends a call [`AHEAD`] of the
//! client's deadline, one tick of tokio's millisecond timer before tonic's fires. Streams are
//! bounded only until their response starts (a stream's handler answers at once);
//! `ScoreStream` ends itself at the client's deadline (`service`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use crate::errors::Failure;
use crate::service::parse_grpc_timeout;

/// How long before the client's deadline a call still unanswered is ended (tokio's timer
/// counts milliseconds): a call with less time than this is answered at once.
pub const AHEAD: Duration = Duration::from_millis(1);

/// The deadline layer; `call_timeout` None: only the client's deadline.
#[derive(Clone, Copy)]
pub struct DeadlineLayer {
    call_timeout: Option<Duration>,
}

impl DeadlineLayer {
    #[must_use]
    pub fn new(call_timeout: Option<Duration>) -> Self {
        Self { call_timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            call_timeout: self.call_timeout,
        }
    }
}

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    call_timeout: Option<Duration>,
}

/// Which limit a call has, and the message it gets when the limit passes.
fn limit(client: Option<Duration>, server: Option<Duration>) -> Option<(Duration, String)> {
    match (client, server) {
        (Some(c), Some(s)) if s < c.saturating_sub(AHEAD) => Some((s, server_message(s))),
        (Some(c), _) => Some((
            c.saturating_sub(AHEAD),
            format!("the call's deadline ({c:?}) passed before its answer was ready"),
        )),
        (None, Some(s)) => Some((s, server_message(s))),
        (None, None) => None,
    }
}

fn server_message(limit: Duration) -> String {
    format!(
        "the server's call timeout ({limit:?}, ALTSCORE_CALL_TIMEOUT_SECONDS) passed before the \
         call's answer was ready"
    )
}

impl<S, B> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let client = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let Some((limit, message)) = limit(client, self.call_timeout) else {
            return Box::pin(self.inner.call(req));
        };
        if limit.is_zero() {
            let status = Failure::DeadlineExceeded(message).to_status();
            return Box::pin(std::future::ready(Ok(
                status.into_http::<tonic::body::Body>()
            )));
        }
        let future = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(limit, future).await {
                Ok(answer) => answer,
                Err(_) => Ok(Failure::DeadlineExceeded(message)
                    .to_status()
                    .into_http::<tonic::body::Body>()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earlier_limit_wins_and_says_whose_it_is() {
        let s = Duration::from_secs(30);
        let c = Duration::from_millis(5);
        assert_eq!(limit(None, None), None);
        let (d, m) = limit(Some(c), Some(s)).unwrap_or_default();
        assert_eq!(Some(d), c.checked_sub(AHEAD));
        assert!(m.contains("call's deadline"));
        let (d, m) = limit(Some(Duration::from_secs(60)), Some(s)).unwrap_or_default();
        assert_eq!(d, s);
        assert!(m.contains("ALTSCORE_CALL_TIMEOUT_SECONDS"));
        let (d, _) = limit(None, Some(s)).unwrap_or_default();
        assert_eq!(d, s);
        let (d, _) = limit(Some(Duration::from_nanos(1)), Some(s)).unwrap_or_default();
        assert!(d.is_zero());
    }
}
