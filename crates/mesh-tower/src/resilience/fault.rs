//! Fault injection for chaos testing: delays and aborts on a share of a
//! route's requests, optionally only for requests carrying a header, with
//! seedable randomness so a test run can be repeated exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use mesh_core::policy::FaultPolicy;
use mesh_core::{MeshError, is_grpc};
use tower_layer::Layer;
use tower_service::Service;

use crate::MatchedRoute;
use crate::future::StageFuture;

/// A lock-free, seedable source of uniform numbers (SplitMix64 over an
/// atomic counter): the same seed gives the same sequence of draws.
#[derive(Debug)]
pub(crate) struct SeededRng(AtomicU64);

impl SeededRng {
    pub(crate) fn new(seed: u64) -> SeededRng {
        SeededRng(AtomicU64::new(seed))
    }

    /// A uniform number in [0, 1).
    pub(crate) fn unit(&self) -> f64 {
        let mut z = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What a fault policy decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FaultAction {
    pub(crate) delay: Option<Duration>,
    pub(crate) abort: Option<(http::StatusCode, mesh_core::GrpcCode)>,
}

pub(crate) fn decide(policy: &FaultPolicy, headers: &HeaderMap, rng: &SeededRng) -> FaultAction {
    if let Some((name, value)) = &policy.only_with_header {
        let hit = match value {
            None => headers.contains_key(name),
            Some(v) => headers
                .get_all(name)
                .iter()
                .any(|x| x.as_bytes() == v.as_bytes()),
        };
        if !hit {
            return FaultAction::default();
        }
    }
    let mut action = FaultAction::default();
    if let Some((d, share)) = policy.delay
        && rng.unit() < share
    {
        action.delay = Some(d);
    }
    if let Some((status, grpc, share)) = policy.abort
        && rng.unit() < share
    {
        action.abort = Some((status, grpc));
    }
    action
}

#[derive(Debug)]
enum Source {
    /// Each request's matched route's `fault` block.
    Routes,
    /// One policy for every request.
    Fixed(FaultPolicy),
}

/// Injects faults: per route (`FaultLayer::from_routes()`, the last stage
/// of `mesh.inbound()`), or one policy for everything
/// (`FaultLayer::new(policy)`, e.g. on a tonic `Channel`). A delayed
/// request waits before reaching the service; an aborted one never
/// reaches it and is answered with the configured status (a problem, or
/// a gRPC status for gRPC requests).
#[derive(Debug, Clone)]
pub struct FaultLayer {
    source: Arc<Source>,
    rng: Arc<SeededRng>,
}

impl FaultLayer {
    /// Faults from each request's matched route.
    pub fn from_routes() -> FaultLayer {
        FaultLayer {
            source: Arc::new(Source::Routes),
            rng: Arc::new(SeededRng::new(fastrand::u64(..))),
        }
    }

    /// The same faults for every request.
    pub fn new(policy: FaultPolicy) -> FaultLayer {
        FaultLayer {
            source: Arc::new(Source::Fixed(policy)),
            rng: Arc::new(SeededRng::new(fastrand::u64(..))),
        }
    }

    /// Seeds the draws, so a chaos test injects the same faults each run.
    pub fn seed(mut self, seed: u64) -> FaultLayer {
        self.rng = Arc::new(SeededRng::new(seed));
        self
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = Fault<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fault {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`FaultLayer`].
#[derive(Debug, Clone)]
pub struct Fault<S> {
    inner: S,
    layer: FaultLayer,
}

impl<S, B, RB> Service<Request<B>> for Fault<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<crate::MeshBody<RB>>;
    type Error = S::Error;
    type Future = StageFuture<S::Future, RB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let action = match &*self.layer.source {
            Source::Fixed(p) => decide(p, req.headers(), &self.layer.rng),
            Source::Routes => match req
                .extensions()
                .get::<MatchedRoute>()
                .and_then(|m| m.route().policy().fault.as_ref())
            {
                Some(p) => decide(p, req.headers(), &self.layer.rng),
                None => FaultAction::default(),
            },
        };
        if action == FaultAction::default() {
            return StageFuture::inner(self.inner.call(req), None);
        }
        metrics::counter!(
            "apimesh.fault.injected",
            "kind" => if action.abort.is_some() { "abort" } else { "delay" }
        )
        .increment(1);
        let grpc = is_grpc(req.headers());
        let abort = action.abort.map(|(status, grpc_code)| {
            MeshError::FaultInjected {
                status,
                grpc: grpc_code,
            }
            .to_response(grpc)
        });
        match (action.delay, abort) {
            (None, Some(resp)) => StageFuture::ready(resp),
            (Some(d), abort) => {
                // Take the service that was made ready; leave a clone.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                StageFuture::boxed(Box::pin(async move {
                    tokio::time::sleep(d).await;
                    match abort {
                        Some(resp) => Ok(resp.map(crate::MeshBody::full)),
                        None => inner.call(req).await.map(|r| r.map(crate::MeshBody::inner)),
                    }
                }))
            }
            (None, None) => StageFuture::inner(self.inner.call(req), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_draws_repeat_and_are_uniform() {
        let a = SeededRng::new(7);
        let b = SeededRng::new(7);
        let xs: Vec<f64> = (0..100).map(|_| a.unit()).collect();
        let ys: Vec<f64> = (0..100).map(|_| b.unit()).collect();
        assert_eq!(xs, ys);
        let r = SeededRng::new(1);
        let below = (0..100_000).filter(|_| r.unit() < 0.25).count();
        assert!((24_000..26_000).contains(&below), "{below}");
    }
}
