//! API version lifecycle: `Deprecation` (RFC 9745), `Sunset` (RFC 8594)
//! and `Link` headers on deprecated versions, 410 Gone after retirement or
//! during a brown-out.
//!
//! [`VersionLayer`] reads the matched route's `api` and `version` and that
//! version's lifecycle from the same snapshot. A version is:
//!
//! - **active** or **preview**: untouched;
//! - **deprecated**, or with a `deprecated_at` or `sunset` date: served, and
//!   every response carries `Deprecation: @<unix seconds>`,
//!   `Sunset: <IMF-fixdate>` and `Link: <…>; rel="deprecation"` /
//!   `rel="successor-version"` as configured (a future `deprecated_at`
//!   announces an upcoming deprecation, as RFC 9745 allows);
//! - **retired**, or past its `sunset`: answered 410 Gone with a problem body
//!   naming the successor (gRPC: `UNIMPLEMENTED`, the code for a method the
//!   server no longer has), and the same headers;
//! - inside a **brown-out** window before the sunset: answered 410 as if
//!   retired, so clients notice while they can still fix it.
//!
//! Time is wall-clock time (UTC); tests give the layer a manual clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, Cache};
use http::{HeaderValue, Request, Response};
use mesh_core::config::Lifecycle as Status;
use mesh_core::units::parse_timestamp;
use mesh_core::{MeshError, Snapshot, is_grpc};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::MatchedRoute;
use crate::body::MeshBody;
use crate::ratelimit::WallClock;

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One version's lifecycle, compiled with its header values.
struct Lifecycle {
    api: String,
    version: String,
    retired: bool,
    sunset: Option<u64>,
    brownouts: Vec<(u64, u64)>,
    successor: Option<String>,
    /// `Deprecation`, `Sunset` and `Link` values, ready to append.
    headers: Vec<(http::HeaderName, HeaderValue)>,
}

impl Lifecycle {
    fn compile(api: &str, spec: &mesh_core::config::VersionSpec) -> Option<Lifecycle> {
        let deprecated_at = spec
            .deprecated_at
            .as_deref()
            .and_then(|t| parse_timestamp(t).ok());
        let sunset = spec.sunset.as_deref().and_then(|t| parse_timestamp(t).ok());
        let retired = spec.status == Status::Retired;
        let deprecated = spec.status == Status::Deprecated;
        if !retired && !deprecated && deprecated_at.is_none() && sunset.is_none() {
            return None;
        }
        let mut headers = Vec::new();
        if let Some(at) = deprecated_at
            && let Ok(v) = HeaderValue::from_str(&format!("@{}", secs(at)))
        {
            headers.push((http::HeaderName::from_static("deprecation"), v));
        }
        if let Some(at) = sunset
            && let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(at))
        {
            headers.push((http::HeaderName::from_static("sunset"), v));
        }
        for (link, rel) in [
            (&spec.deprecation_link, "deprecation"),
            (&spec.successor_link, "successor-version"),
        ] {
            if let Some(l) = link
                && let Ok(v) = HeaderValue::from_str(&format!("<{l}>; rel=\"{rel}\""))
            {
                headers.push((http::header::LINK, v));
            }
        }
        Some(Lifecycle {
            api: api.to_owned(),
            version: spec.version.clone(),
            retired,
            sunset: sunset.map(secs),
            brownouts: spec
                .brownouts
                .iter()
                .filter_map(|b| {
                    Some((
                        secs(parse_timestamp(&b.start).ok()?),
                        secs(parse_timestamp(&b.end).ok()?),
                    ))
                })
                .collect(),
            successor: spec.successor.clone(),
            headers,
        })
    }

    /// Why the version is gone at `now`, if it is.
    fn gone(&self, now: u64) -> Option<String> {
        let successor = self
            .successor
            .as_ref()
            .map(|s| format!("; use version {s}"))
            .unwrap_or_default();
        let what = format!("API {} version {}", self.api, self.version);
        if self.retired || self.sunset.is_some_and(|s| now >= s) {
            return Some(format!("{what} is retired{successor}"));
        }
        self.brownouts
            .iter()
            .any(|(start, end)| (*start..*end).contains(&now))
            .then(|| {
                format!(
                    "{what} is deprecated and unavailable during a scheduled brown-out{successor}"
                )
            })
    }
}

/// The lifecycles of one snapshot, by route index.
struct VersionState {
    revision: u64,
    routes: Vec<Option<Arc<Lifecycle>>>,
}

impl VersionState {
    fn build(snapshot: &Snapshot) -> VersionState {
        let routes = snapshot
            .routes()
            .iter()
            .map(|r| {
                let (api, version) = (r.api()?, r.version()?);
                let spec = snapshot
                    .api(api)?
                    .versions
                    .iter()
                    .find(|v| v.version == version)?;
                Lifecycle::compile(api, spec).map(Arc::new)
            })
            .collect();
        VersionState {
            revision: snapshot.revision(),
            routes,
        }
    }
}

struct Shared {
    current: Arc<ArcSwap<VersionState>>,
    clock: WallClock,
}

/// Applies API version lifecycles; see the [module docs](self).
#[derive(Clone)]
#[must_use]
pub struct VersionLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for VersionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionLayer").finish_non_exhaustive()
    }
}

impl VersionLayer {
    /// A layer that applies the lifecycle of each matched route's version.
    pub fn from_routes() -> VersionLayer {
        VersionLayer::with_clock(Arc::new(|| secs(SystemTime::now())))
    }

    /// Like [`from_routes`](Self::from_routes), with `clock` (seconds since
    /// the epoch) instead of the system clock.
    pub fn with_clock(clock: WallClock) -> VersionLayer {
        VersionLayer {
            shared: Arc::new(Shared {
                current: Arc::new(ArcSwap::from_pointee(VersionState {
                    revision: 0,
                    routes: Vec::new(),
                })),
                clock,
            }),
        }
    }

    /// Compiles `snapshot`'s lifecycles now rather than on first use.
    pub fn prepare(&self, snapshot: &Snapshot) {
        if self.shared.current.load().revision < snapshot.revision() {
            self.shared
                .current
                .store(Arc::new(VersionState::build(snapshot)));
        }
    }
}

impl<S> Layer<S> for VersionLayer {
    type Service = Versioned<S>;

    fn layer(&self, inner: S) -> Versioned<S> {
        Versioned {
            inner,
            cache: Cache::new(self.shared.current.clone()),
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`VersionLayer`].
pub struct Versioned<S> {
    inner: S,
    shared: Arc<Shared>,
    cache: Cache<Arc<ArcSwap<VersionState>>, Arc<VersionState>>,
}

impl<S: Clone> Clone for Versioned<S> {
    fn clone(&self) -> Self {
        Versioned {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Versioned<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Versioned")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Versioned<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<MeshBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(matched) = req.extensions().get::<MatchedRoute>() else {
            return ResponseFuture::inner(self.inner.call(req), None);
        };
        let snapshot = matched.snapshot();
        let index = matched.route().index();
        let current = self.cache.load();
        let state = if current.revision == snapshot.revision() {
            current.clone()
        } else {
            let built = Arc::new(VersionState::build(snapshot));
            if built.revision > self.shared.current.load().revision {
                self.shared.current.store(built.clone());
            }
            built
        };
        let Some(lifecycle) = state.routes.get(index).and_then(Option::clone) else {
            return ResponseFuture::inner(self.inner.call(req), None);
        };
        if let Some(detail) = lifecycle.gone((self.shared.clock)()) {
            let mut res = MeshError::Gone { detail }.to_response(is_grpc(req.headers()));
            for (name, value) in &lifecycle.headers {
                res.headers_mut().append(name.clone(), value.clone());
            }
            return ResponseFuture::ready(res);
        }
        ResponseFuture::inner(self.inner.call(req), Some(lifecycle))
    }
}

pin_project! {
    /// Response future of [`Versioned`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F, lifecycle: Option<Arc<Lifecycle>> },
        Ready { response: Option<Response<bytes::Bytes>> },
    }
}

impl<F> ResponseFuture<F> {
    fn inner(future: F, lifecycle: Option<Arc<Lifecycle>>) -> Self {
        ResponseFuture {
            kind: Kind::Inner { future, lifecycle },
        }
    }
    fn ready(response: Response<bytes::Bytes>) -> Self {
        ResponseFuture {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<MeshBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, lifecycle } => {
                let mut res = ready!(future.poll(cx))?;
                if let Some(l) = lifecycle.take() {
                    for (name, value) in &l.headers {
                        res.headers_mut().append(name.clone(), value.clone());
                    }
                }
                Poll::Ready(Ok(res.map(MeshBody::inner)))
            }
            KindProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| MeshError::Internal.to_response(false))
                .map(MeshBody::full))),
        }
    }
}
