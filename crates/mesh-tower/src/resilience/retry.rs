//! Retries: which requests, when, how long to wait, and replayable bodies.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use mesh_core::GrpcCode;
use mesh_core::policy::RetryPolicy;
use pin_project_lite::pin_project;

use crate::outbound::BoxError;

// Looked up by name, not parsed from a string on every request.
const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");
const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
const GRPC_RETRY_PUSHBACK_MS: http::HeaderName =
    http::HeaderName::from_static("grpc-retry-pushback-ms");

/// Whether `req` may be retried under `policy`: its method is one of the
/// policy's (by default the idempotent ones), or it carries an
/// `Idempotency-Key`.
pub fn retryable_request(policy: &RetryPolicy, method: &Method, headers: &HeaderMap) -> bool {
    policy.methods.contains(method) || headers.contains_key(&IDEMPOTENCY_KEY)
}

/// Whether a response asks for a retry under `policy`: a listed status, or
/// a listed gRPC code in a trailers-only response's headers.
pub fn retryable_response<B>(policy: &RetryPolicy, resp: &Response<B>) -> bool {
    if policy.statuses.contains(&resp.status()) {
        return true;
    }
    grpc_status(resp.headers()).is_some_and(|c| policy.grpc_codes.contains(&c))
}

/// The `grpc-status` of a trailers-only response.
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<GrpcCode> {
    GrpcCode::parse(headers.get(&GRPC_STATUS)?.to_str().ok()?.trim())
}

/// The wait before retry number `retry` (1 for the first retry):
/// "full jitter", a uniform draw in `[0, min(max, base × 2^(retry-1))]`.
pub fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let cap = policy
        .backoff
        .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
        .min(policy.max_backoff);
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(..=nanos))
}

/// The server's own hint of when to retry: `grpc-retry-pushback-ms`, or
/// `Retry-After` (seconds or an HTTP date). A negative pushback means
/// "do not retry" (`Some(Duration::MAX)`).
pub fn server_pushback(headers: &HeaderMap) -> Option<Duration> {
    if let Some(v) = headers.get(&GRPC_RETRY_PUSHBACK_MS) {
        let s = v.to_str().ok()?.trim();
        return match s.parse::<i64>() {
            Ok(ms) if ms >= 0 => Some(Duration::from_millis(ms.unsigned_abs())),
            _ => Some(Duration::MAX),
        };
    }
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A request body held for replay, or not replayable.
#[derive(Debug)]
pub(crate) enum Replay {
    /// The whole body (and trailers) in memory: can be sent again.
    Whole(ReplayBody),
    /// Larger than the cap: what was read, then the rest; sent once.
    Once(PrefixedBody),
}

/// Reads `body` into memory up to `limit` bytes. A body that ends within
/// the limit is replayable; a larger one keeps streaming (sent once).
pub(crate) async fn buffer<B>(body: B, limit: u64) -> Result<Replay, BoxError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let mut body = body;
    let mut frames = VecDeque::new();
    let mut size: u64 = 0;
    if body.size_hint().lower() > limit {
        return Ok(Replay::Once(PrefixedBody::new(frames, body)));
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Into::into)?;
        if let Some(d) = frame.data_ref() {
            size += d.len() as u64;
        }
        frames.push_back(frame);
        if size > limit {
            return Ok(Replay::Once(PrefixedBody::new(frames, body)));
        }
    }
    let mut data = Vec::new();
    let mut trailers = None;
    for f in frames {
        match f.into_data() {
            Ok(d) => data.push(d),
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    Ok(Replay::Whole(ReplayBody {
        whole: std::sync::Arc::new(Whole { data, trailers }),
    }))
}

/// A body held in memory, cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub(crate) struct ReplayBody {
    whole: std::sync::Arc<Whole>,
}

#[derive(Debug)]
struct Whole {
    data: Vec<Bytes>,
    trailers: Option<HeaderMap>,
}

impl ReplayBody {
    /// An empty body.
    pub(crate) fn empty() -> ReplayBody {
        ReplayBody {
            whole: std::sync::Arc::new(Whole {
                data: Vec::new(),
                trailers: None,
            }),
        }
    }

    /// A fresh body to send.
    pub(crate) fn body(&self) -> ReplayStream {
        ReplayStream {
            whole: self.whole.clone(),
            next: 0,
            trailers_sent: false,
        }
    }
}

/// One sending of a [`ReplayBody`] (small: it sits in every attempt's
/// request).
#[derive(Debug)]
pub(crate) struct ReplayStream {
    whole: std::sync::Arc<Whole>,
    /// The next data chunk.
    next: usize,
    trailers_sent: bool,
}

impl ReplayStream {
    fn trailers(&self) -> Option<&HeaderMap> {
        self.whole.trailers.as_ref().filter(|_| !self.trailers_sent)
    }
}

impl Body for ReplayStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(d) = self.whole.data.get(self.next).cloned() {
            self.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        let trailers = self.trailers().cloned();
        self.trailers_sent = true;
        Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.whole.data.len() && self.trailers().is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let rest: u64 = self
            .whole
            .data
            .get(self.next..)
            .map_or(0, |r| r.iter().map(|d| d.len() as u64).sum());
        SizeHint::with_exact(rest)
    }
}

pin_project! {
    /// Frames already read, then the rest of the original body.
    pub(crate) struct PrefixedBody {
        prefix: VecDeque<Frame<Bytes>>,
        #[pin]
        rest: Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>,
    }
}

impl std::fmt::Debug for PrefixedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixedBody").finish_non_exhaustive()
    }
}

impl PrefixedBody {
    pub(crate) fn new<B>(prefix: VecDeque<Frame<Bytes>>, rest: B) -> PrefixedBody
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        PrefixedBody {
            prefix,
            rest: Box::pin(rest.map_err(Into::into)),
        }
    }
}

impl Body for PrefixedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Some(f) = this.prefix.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        this.rest.poll_frame(cx)
    }
}

/// Sets `grpc-previous-rpc-attempts` on a retried gRPC request.
pub(crate) fn mark_attempt<B>(req: &mut Request<B>, previous: u32) {
    if previous > 0 && mesh_core::is_grpc(req.headers()) {
        req.headers_mut().insert(
            "grpc-previous-rpc-attempts",
            http::HeaderValue::from(previous),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn policy() -> RetryPolicy {
        mesh_core::Snapshot::from_toml(
            r#"
            [[routes]]
            id = "r"
            match = { path_prefix = "/" }
            retry = { backoff = "100ms", max_backoff = "1s" }
            "#,
            1,
        )
        .unwrap()
        .routes()[0]
            .policy()
            .retry
            .clone()
            .unwrap()
    }

    #[test]
    fn backoff_is_full_jitter_within_the_cap() {
        let p = policy();
        for retry in 1..8u32 {
            let cap = Duration::from_millis(100)
                .saturating_mul(1 << (retry - 1))
                .min(Duration::from_secs(1));
            let draws: Vec<_> = (0..500).map(|_| backoff(&p, retry)).collect();
            assert!(draws.iter().all(|d| *d <= cap));
            // Full jitter: some draws land in the lower half of the range.
            assert!(draws.iter().any(|d| *d < cap / 2));
        }
    }

    #[test]
    fn idempotent_methods_by_default_and_idempotency_keys() {
        let p = policy();
        let mut h = HeaderMap::new();
        assert!(retryable_request(&p, &Method::GET, &h));
        assert!(retryable_request(&p, &Method::PUT, &h));
        assert!(!retryable_request(&p, &Method::POST, &h));
        h.insert("idempotency-key", http::HeaderValue::from_static("k1"));
        assert!(retryable_request(&p, &Method::POST, &h));
    }

    #[test]
    fn pushback_headers() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", http::HeaderValue::from_static("3"));
        assert_eq!(server_pushback(&h), Some(Duration::from_secs(3)));
        h.insert(
            "grpc-retry-pushback-ms",
            http::HeaderValue::from_static("250"),
        );
        assert_eq!(server_pushback(&h), Some(Duration::from_millis(250)));
        h.insert(
            "grpc-retry-pushback-ms",
            http::HeaderValue::from_static("-1"),
        );
        assert_eq!(server_pushback(&h), Some(Duration::MAX));
    }

    #[tokio::test]
    async fn small_bodies_replay_large_ones_stream_once() {
        let small = buffer(Full::new(Bytes::from_static(b"hello")), 16)
            .await
            .unwrap();
        let Replay::Whole(r) = small else {
            panic!("small body not replayable")
        };
        for _ in 0..2 {
            let b = r.body().collect().await.unwrap().to_bytes();
            assert_eq!(b, "hello");
        }
        let big = buffer(Full::new(Bytes::from(vec![7u8; 100])), 16)
            .await
            .unwrap();
        let Replay::Once(b) = big else {
            panic!("large body replayable")
        };
        assert_eq!(b.collect().await.unwrap().to_bytes().len(), 100);
    }
}

/// How one attempt ended.
#[derive(Debug)]
pub(crate) enum Attempt<RB> {
    /// An answer from the upstream (retried when the policy lists its status).
    Response(Response<RB>),
    /// Nothing was sent (no connection): always safe to retry.
    NotSent(mesh_core::MeshError),
    /// Failed after sending (a broken connection, a per-try timeout):
    /// retried only for retryable requests.
    Failed(mesh_core::MeshError),
    /// Refused by the mesh itself (no endpoint, an open breaker, a full
    /// bulkhead, a body over the cap): not retried.
    Refused(mesh_core::MeshError),
}

/// What the retry loop does after an attempt.
#[derive(Debug)]
pub(crate) enum Next<RB> {
    /// This is the answer.
    Done(Result<Response<RB>, mesh_core::MeshError>),
    /// Another attempt, after this wait (the budget has paid for it).
    Again(Duration),
}

/// Whether attempt `n` (1 for the first) is the answer or is retried:
/// the policy, the body, the server's pushback, the deadline and the
/// budget decide. A retry is taken from the budget and counted here.
pub(crate) fn next<RB>(
    policy: Option<&RetryPolicy>,
    budget: Option<&super::RetryBudget>,
    retryable: bool,
    replayable: bool,
    deadline: Option<tokio::time::Instant>,
    n: u32,
    outcome: Attempt<RB>,
) -> Next<RB> {
    let max = policy.map_or(1, |p| p.attempts.max(1));
    let (retry, result) = match outcome {
        Attempt::Response(resp) => {
            let again = retryable && policy.is_some_and(|p| retryable_response(p, &resp));
            // The server's hint matters only for a retry.
            (again.then(|| server_pushback(resp.headers())), Ok(resp))
        }
        Attempt::NotSent(e) => (Some(None), Err(e)),
        Attempt::Refused(e) => return Next::Done(Err(e)),
        Attempt::Failed(e) => (retryable.then_some(None), Err(e)),
    };
    let Some(pushback) = retry else {
        return Next::Done(result);
    };
    if n >= max || !replayable {
        return Next::Done(result);
    }
    let wait = match (pushback, policy) {
        (Some(p), _) => p,
        (None, Some(pol)) => backoff(pol, n),
        (None, None) => Duration::ZERO,
    };
    let now = tokio::time::Instant::now();
    if wait == Duration::MAX
        || deadline.is_some_and(|d| now.checked_add(wait).is_none_or(|t| t >= d))
    {
        // The server said not to, or the wait would outlive the deadline.
        return Next::Done(result);
    }
    if budget.is_some_and(|b| !b.try_withdraw()) {
        metrics::counter!("apimesh.retry.budget_exhausted").increment(1);
        return Next::Done(result);
    }
    drop(result);
    metrics::counter!("apimesh.retry.attempts").increment(1);
    Next::Again(wait)
}

/// The retry loop shared by the mesh client and [`RetryLayer`](super::RetryLayer):
/// attempts while the policy, the budget, the body and the deadline allow,
/// with full-jitter backoff or the server's pushback, and a hedged second
/// attempt when the policy asks for one. `attempt(n)` starts attempt `n`
/// (0 first) and must own what it needs (hedged attempts overlap).
pub(crate) async fn run<F, Fut, RB>(
    policy: Option<&RetryPolicy>,
    budget: Option<&super::RetryBudget>,
    retryable: bool,
    replayable: bool,
    deadline: Option<tokio::time::Instant>,
    mut attempt: F,
) -> Result<Response<RB>, mesh_core::MeshError>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Attempt<RB>> + Send + 'static,
    RB: Send + 'static,
{
    if let Some(b) = budget {
        b.deposit();
    }
    let max = policy.map_or(1, |p| p.attempts.max(1));
    let hedge = policy
        .and_then(|p| p.hedge_after)
        .filter(|_| retryable && replayable && max > 1);
    // Whether an outcome ends a hedged race: anything but a retryable
    // answer, a failure or a refusal (the other attempt may still win).
    let settles = |outcome: &Attempt<RB>| match outcome {
        Attempt::Response(resp) => !policy.is_some_and(|p| retryable_response(p, resp)),
        _ => false,
    };
    let mut n = 0u32;
    let outcome = match hedge {
        Some(delay) => hedged(&mut attempt, delay, budget, &mut n, settles).await,
        None => attempt(0).await,
    };
    n += 1;
    match next(policy, budget, retryable, replayable, deadline, n, outcome) {
        Next::Done(result) => result,
        Next::Again(wait) => {
            resume(
                policy, budget, retryable, replayable, deadline, attempt, n, wait,
            )
            .await
        }
    }
}

/// The retry loop after `n` attempts, [`next`] having decided on another
/// one after `wait` (never hedged: only a first attempt is).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn resume<F, Fut, RB>(
    policy: Option<&RetryPolicy>,
    budget: Option<&super::RetryBudget>,
    retryable: bool,
    replayable: bool,
    deadline: Option<tokio::time::Instant>,
    mut attempt: F,
    mut n: u32,
    mut wait: Duration,
) -> Result<Response<RB>, mesh_core::MeshError>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Attempt<RB>> + Send + 'static,
    RB: Send + 'static,
{
    loop {
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let outcome = attempt(n).await;
        n += 1;
        match next(policy, budget, retryable, replayable, deadline, n, outcome) {
            Next::Done(result) => return result,
            Next::Again(w) => wait = w,
        }
    }
}

/// The first attempt, and a second one if the first has not answered
/// after `delay`: the first outcome that `settles` wins and the other
/// attempt is dropped (cancelled). A failure, a retryable answer or a
/// refusal (a full bulkhead, an open breaker) waits for the other attempt
/// instead: it may still succeed. The hedge takes from the retry budget.
async fn hedged<F, Fut, RB>(
    attempt: &mut F,
    delay: Duration,
    budget: Option<&super::RetryBudget>,
    n: &mut u32,
    settles: impl Fn(&Attempt<RB>) -> bool,
) -> Attempt<RB>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Attempt<RB>> + Send + 'static,
{
    let mut first = Box::pin(attempt(0));
    tokio::select! {
        out = &mut first => return out,
        () = tokio::time::sleep(delay) => {}
    }
    if budget.is_some_and(|b| !b.try_withdraw()) {
        return first.await;
    }
    metrics::counter!("apimesh.retry.hedges").increment(1);
    *n += 1;
    let mut second = Box::pin(attempt(1));
    let (out, first_won) = tokio::select! {
        out = &mut first => (out, true),
        out = &mut second => (out, false),
    };
    if settles(&out) {
        return out;
    }
    let later = if first_won { second.await } else { first.await };
    // Both failed: go on with a failure rather than a refusal, so the
    // retry loop may still try again.
    if !settles(&later) && matches!(later, Attempt::Refused(_)) {
        out
    } else {
        later
    }
}
