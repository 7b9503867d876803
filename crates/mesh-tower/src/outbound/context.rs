//! The call context: what an inbound request hands to the outbound calls
//! its handler makes — the deadline, the W3C trace context, the consumer.
//!
//! [`ContextLayer`] (part of `mesh.inbound()`) reads it from the request
//! and sets it as a task-local for the handler's future, so a handler's
//! `mesh.client(..)` calls propagate it without passing anything along.
//! Work spawned onto other tasks can carry it explicitly with
//! [`CallContext::current`] and [`CallContext::scope`].

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request};
use mesh_core::Snapshot;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::LiveSnapshot;
use crate::auth::Principal;

tokio::task_local! {
    static CONTEXT: CallContext;
}

/// What an enclosing service's `call` tells the services it calls.
#[derive(Debug, Clone, Copy)]
struct Calling {
    now: Instant,
    deadline: Option<Instant>,
}

std::thread_local! {
    static CALLING: std::cell::Cell<Option<Calling>> = const { std::cell::Cell::new(None) };
    static POLLING: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A W3C trace context (`traceparent`, plus `tracestate` passed through).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id (16 bytes, never all zero).
    pub trace_id: [u8; 16],
    /// The span id of the caller (8 bytes, never all zero).
    pub parent_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
    /// The opaque `tracestate` value, passed on unchanged.
    pub state: Option<HeaderValue>,
}

impl TraceContext {
    /// A new trace with a random id, sampled.
    pub fn new_root() -> TraceContext {
        TraceContext {
            trace_id: nonzero_bytes(),
            parent_id: nonzero_bytes(),
            flags: 1,
            state: None,
        }
    }

    /// Parses `traceparent` (version 00, or a later version's first four
    /// fields as the spec asks) and `tracestate`; `None` when invalid.
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceContext> {
        let tp = headers.get("traceparent")?.to_str().ok()?;
        let mut parts = tp.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let parent = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !lower_hex(version) || !lower_hex(trace) || !lower_hex(parent) || !lower_hex(flags) {
            return None;
        }
        let trace_id: [u8; 16] = hex_decode(trace)?;
        let parent_id: [u8; 8] = hex_decode(parent)?;
        let [flags] = hex_decode::<1>(flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            parent_id,
            flags,
            state: headers.get("tracestate").cloned(),
        })
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// A child of this context: same trace, a new span id.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            parent_id: nonzero_bytes(),
            flags: self.flags,
            state: self.state.clone(),
        }
    }

    /// The `traceparent` header value.
    pub fn traceparent(&self) -> HeaderValue {
        // `00-<32 hex>-<16 hex>-<2 hex>`, written in place (one per call).
        let mut v = [b'-'; 55];
        v[..2].copy_from_slice(b"00");
        hex_into(&mut v[3..35], &self.trace_id);
        hex_into(&mut v[36..52], &self.parent_id);
        hex_into(&mut v[53..], &[self.flags]);
        // Only hex digits and dashes.
        HeaderValue::from_bytes(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

fn nonzero_bytes<const N: usize>() -> [u8; N] {
    loop {
        let mut b = [0u8; N];
        for chunk in b.chunks_mut(8) {
            let r = fastrand::u64(..).to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        if b != [0; N] {
            return b;
        }
    }
}

fn hex(b: &[u8]) -> String {
    let mut v = vec![0; b.len() * 2];
    hex_into(&mut v, b);
    String::from_utf8(v).unwrap_or_default()
}

/// Lower-case hex of `b` into `out` (twice as long).
fn hex_into(out: &mut [u8], b: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, x) in out.chunks_exact_mut(2).zip(b) {
        pair[0] = DIGITS[usize::from(x >> 4)];
        pair[1] = DIGITS[usize::from(x & 0xf)];
    }
}

fn hex_decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// What outbound calls inherit from the request being served.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CallContext {
    /// When the caller stops waiting; outbound calls get the remainder.
    pub deadline: Option<Instant>,
    /// The trace this request belongs to.
    pub trace: Option<TraceContext>,
    /// The authenticated consumer.
    pub consumer: Option<Arc<str>>,
}

impl CallContext {
    /// The context of the task's current request, if it runs inside one.
    ///
    /// Its deadline is the earlier of the task's context's and that of
    /// any `TimeoutLayer` polling the request (a context with just that
    /// deadline when the task has none).
    pub fn current() -> Option<CallContext> {
        let polling = POLLING.get();
        match CONTEXT.try_with(Clone::clone) {
            Ok(mut c) => {
                c.deadline = earliest(c.deadline, polling);
                Some(c)
            }
            Err(_) => polling.map(|d| CallContext {
                deadline: Some(d),
                ..CallContext::default()
            }),
        }
    }

    /// The current deadline (as [`current`](Self::current)'s), without
    /// cloning the context.
    pub(crate) fn current_deadline() -> Option<Instant> {
        earliest(
            CONTEXT.try_with(|c| c.deadline).ok().flatten(),
            POLLING.get(),
        )
    }

    /// Runs `f` (a `TimeoutLayer` polling its inner future) with
    /// `deadline` as the polling deadline: [`current`](Self::current)
    /// and the retry layer see it. A thread-local cell set and restored
    /// around the poll (also if it panics): cheaper than a task-local
    /// scope, which clones the context and swaps it in and out.
    pub(crate) fn polling<R>(deadline: Option<Instant>, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Instant>);
        impl Drop for Restore {
            fn drop(&mut self) {
                POLLING.set(self.0);
            }
        }
        let prev = POLLING.get();
        let _restore = Restore(prev);
        POLLING.set(earliest(prev, deadline));
        f()
    }

    /// Runs `fut` with this context as the current one.
    pub fn scope<F: Future>(self, fut: F) -> TaskLocalFuture<CallContext, F> {
        CONTEXT.scope(self, fut)
    }

    /// Runs `f` (an inner service's synchronous `call`) with `deadline`
    /// as the calling deadline and `now` as the time the call started: a
    /// layer that starts its work in `call` (a retry layer's first
    /// attempt, under it a per-try timeout) sees the deadline before the
    /// task-local scope exists, and need not read the clock again. A
    /// thread-local cell, restored even if `f` panics: cheaper than a
    /// task-local scope.
    pub(crate) fn calling<R>(now: Instant, deadline: Option<Instant>, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Calling>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CALLING.set(self.0);
            }
        }
        let _restore = Restore(CALLING.replace(Some(Calling { now, deadline })));
        f()
    }

    /// The deadline of an enclosing `call` (see [`calling`](Self::calling)).
    pub(crate) fn calling_deadline() -> Option<Instant> {
        CALLING.get().and_then(|c| c.deadline)
    }

    /// When an enclosing `call` started (see [`calling`](Self::calling)).
    pub(crate) fn calling_now() -> Option<Instant> {
        CALLING.get().map(|c| c.now)
    }

    /// A context with a deadline `timeout` from now.
    pub fn with_timeout(mut self, timeout: Duration) -> CallContext {
        let d = Instant::now() + timeout;
        self.deadline = Some(self.deadline.map_or(d, |old| old.min(d)));
        self
    }

    /// Reads the context from an inbound request: `traceparent` /
    /// `tracestate`, `grpc-timeout`, the mesh's deadline header (see
    /// `[mesh.propagation]`) and the authenticated consumer.
    pub fn from_request<B>(req: &Request<B>, snapshot: &Snapshot) -> CallContext {
        let headers = req.headers();
        let now = Instant::now();
        let grpc = headers
            .get("grpc-timeout")
            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
        let http = snapshot
            .propagation()
            .deadline
            .as_ref()
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_millis);
        let timeout = match (grpc, http) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        CallContext {
            deadline: timeout.and_then(|t| now.checked_add(t)),
            trace: TraceContext::from_headers(headers),
            consumer: req
                .extensions()
                .get::<Principal>()
                .and_then(|p| p.consumer.clone()),
        }
    }
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H M S m u n).
pub fn parse_grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.saturating_mul(3600)),
        b'M' => Duration::from_secs(n.saturating_mul(60)),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a `grpc-timeout` value (at most 8 digits, the finest unit that fits).
pub fn format_grpc_timeout(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let s = if nanos <= MAX {
        format!("{nanos}n")
    } else if nanos / 1_000 <= MAX {
        format!("{}u", nanos / 1_000)
    } else if nanos / 1_000_000 <= MAX {
        format!("{}m", nanos / 1_000_000)
    } else if d.as_secs() as u128 <= MAX {
        format!("{}S", d.as_secs())
    } else {
        format!("{}M", (d.as_secs() / 60).min(99_999_999))
    };
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static("1S"))
}

/// Sets each request's [`CallContext`] as the task-local of the inner
/// service's future, so outbound calls made while serving it inherit the
/// deadline, the trace and the consumer. Place it after authentication
/// (`mesh.inbound()` does).
#[derive(Debug, Clone)]
pub struct ContextLayer {
    live: LiveSnapshot,
}

impl ContextLayer {
    /// A layer reading `[mesh.propagation]` from `live`.
    pub fn new(live: LiveSnapshot) -> ContextLayer {
        ContextLayer { live }
    }
}

impl<S> Layer<S> for ContextLayer {
    type Service = ContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ContextService {
            inner,
            live: self.live.clone(),
        }
    }
}

/// The service made by [`ContextLayer`].
#[derive(Debug, Clone)]
pub struct ContextService<S> {
    inner: S,
    live: LiveSnapshot,
}

impl<S, B> Service<Request<B>> for ContextService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<CallContext, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(o) = req.extensions().get::<Arc<crate::observe::Observed>>() {
            if let Some(c) = req
                .extensions()
                .get::<Principal>()
                .and_then(|p| p.consumer.clone())
            {
                let _ = o.consumer.set(c);
            }
            if let Some(v) = req.extensions().get::<crate::ApiVersion>() {
                let _ = o.version.set(v.clone());
            }
        }
        let ctx = match req.extensions().get::<crate::MatchedRoute>() {
            Some(m) => CallContext::from_request(&req, m.snapshot()),
            None => CallContext::from_request(&req, &self.live.load()),
        };
        ctx.scope(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let t = TraceContext::from_headers(&h).unwrap();
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.traceparent(), h["traceparent"]);
        let c = t.child();
        assert_eq!(c.trace_id, t.trace_id);
        assert_ne!(c.parent_id, t.parent_id);
    }

    #[test]
    fn new_traces_are_valid_traceparents() {
        for _ in 0..100 {
            let t = TraceContext::new_root().child();
            let mut h = HeaderMap::new();
            h.insert("traceparent", t.traceparent());
            assert_eq!(h["traceparent"].len(), 55);
            assert_eq!(TraceContext::from_headers(&h), Some(t));
        }
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
            "",
        ] {
            let mut h = HeaderMap::new();
            h.insert("traceparent", HeaderValue::from_static(bad));
            assert!(TraceContext::from_headers(&h).is_none(), "{bad}");
        }
    }

    #[test]
    fn grpc_timeout_parsing_and_formatting() {
        assert_eq!(
            parse_grpc_timeout(b"100m"),
            Some(Duration::from_millis(100))
        );
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"123456789m"), None);
        assert_eq!(parse_grpc_timeout(b"m"), None);
        assert_eq!(parse_grpc_timeout(b"10x"), None);
        assert_eq!(parse_grpc_timeout(b"-1m"), None);
        for d in [
            Duration::from_millis(250),
            Duration::from_secs(30),
            Duration::from_secs(86_400 * 400),
        ] {
            let v = format_grpc_timeout(d);
            let back = parse_grpc_timeout(v.as_bytes()).unwrap();
            assert!(back <= d && d - back < Duration::from_secs(60), "{v:?}");
        }
    }
}
