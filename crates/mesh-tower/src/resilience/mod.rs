//! Resilience: timeouts and deadlines, budgeted retries with backoff and
//! hedging, circuit breakers, bulkheads and fault injection.
//!
//! The mesh client applies each route's `retry`, `timeout` and
//! `circuit_breaker` blocks and each service's `max_concurrent` itself
//! (endpoint-aware: a retry prefers another endpoint); `mesh.inbound()`
//! applies `fault`. Each piece is also a standalone tower layer over HTTP
//! services: [`TimeoutLayer`], [`RetryLayer`], [`CircuitBreakerLayer`],
//! [`BulkheadLayer`], [`FaultLayer`]. See `docs/resilience.md`.

mod breaker;
mod budget;
mod bulkhead;
mod fault;
mod layers;
pub(crate) mod retry;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

pub use breaker::{BreakerPermit, BreakerState, BreakerStatus, CircuitBreaker, Outcome};
pub use budget::{BudgetStatus, RetryBudget};
pub use bulkhead::{Bulkhead, BulkheadPermit};
pub use fault::{Fault, FaultLayer};
pub(crate) use layers::response_failed;
pub use layers::{
    Breaker, BreakerFuture, BulkheadFuture, BulkheadLayer, BulkheadService, CircuitBreakerLayer,
    Retry, RetryFuture, RetryLayer, Timeout, TimeoutFuture, TimeoutLayer,
};
pub use retry::{backoff, retryable_request, retryable_response, server_pushback};

use crate::outbound::BoxError;

/// The request body an inner service of [`RetryLayer`] receives: a
/// buffered body (sent again on each attempt) or the original one, once.
#[derive(Debug)]
pub struct RetryBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Replay(retry::ReplayStream),
    Once(retry::PrefixedBody),
    Empty,
}

impl RetryBody {
    pub(crate) fn replay(b: retry::ReplayStream) -> RetryBody {
        RetryBody {
            kind: Kind::Replay(b),
        }
    }
    pub(crate) fn once(b: retry::PrefixedBody) -> RetryBody {
        RetryBody {
            kind: Kind::Once(b),
        }
    }
    pub(crate) fn empty() -> RetryBody {
        RetryBody { kind: Kind::Empty }
    }
}

impl Body for RetryBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.kind {
            Kind::Replay(b) => Pin::new(b).poll_frame(cx),
            Kind::Once(b) => Pin::new(b).poll_frame(cx),
            Kind::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Replay(b) => b.is_end_stream(),
            Kind::Once(b) => b.is_end_stream(),
            Kind::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Replay(b) => b.size_hint(),
            Kind::Once(b) => b.size_hint(),
            Kind::Empty => SizeHint::with_exact(0),
        }
    }
}
