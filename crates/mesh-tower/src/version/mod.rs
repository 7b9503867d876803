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
//! A route that names an `api` but no `version` has its version
//! **resolved** from the request, per the API's `[apis.versioning]`: the
//! styles in order of precedence (`path`: a first path segment naming a
//! version, removed before the service sees the request when
//! `strip_prefix`; `header`: `Api-Version` or the configured header;
//! `media_type`: a `version` parameter of `Accept`, e.g.
//! `application/vnd.acme+json; version=2`; `query`: `?version=`), then the
//! `default`. A version that is named but unknown, or none at all without a
//! default, is answered 400 with a problem listing the supported versions.
//! The resolved (or fixed) version is an [`ApiVersion`] in the request's
//! extensions, an axum extractor.
//!
//! Time is wall-clock time (UTC); tests give the layer a manual clock.

mod dispatch;

pub use dispatch::PerVersion;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Request, Response};
use mesh_core::config::Lifecycle as Status;
use mesh_core::units::parse_timestamp;
use mesh_core::{MeshError, Snapshot, is_grpc};
use tower_layer::Layer;
use tower_service::Service;

use crate::MatchedRoute;
use crate::body::MeshBody;
use crate::compiled::{Compiled, PerRevision, StateCache};
use crate::future::AddHeaders;
use crate::ratelimit::WallClock;

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One version's lifecycle, compiled with its header values.
struct Lifecycle {
    retired: bool,
    sunset: Option<u64>,
    brownouts: Vec<(u64, u64)>,
    /// The 410 problem details, written once: a request never formats.
    retired_detail: String,
    brownout_detail: String,
    /// `Deprecation`, `Sunset` and `Link` values, ready to append.
    headers: Fields,
}

/// Header fields ready to append: static (interned) or, past the
/// interner's limit, shared. One thin pointer, moved cheaply with the
/// response future.
#[derive(Clone)]
enum Fields {
    Static(&'static Vec<(http::HeaderName, HeaderValue)>),
    Shared(Arc<Vec<(http::HeaderName, HeaderValue)>>),
}

impl Fields {
    fn as_slice(&self) -> &[(http::HeaderName, HeaderValue)] {
        match self {
            Fields::Static(f) => f,
            Fields::Shared(f) => f,
        }
    }
}

/// A header field before it is interned.
type Field = (http::HeaderName, String);

/// A lifecycle's header fields, kept for the life of the process.
///
/// Their bytes are static, so adding them to a response copies pointers:
/// no reference count is touched per response. One set is kept per
/// distinct combination of dates and links configured (a few hundred
/// bytes each; a snapshot that repeats a set reuses it), up to 1,024
/// sets; past that (a registry that rewrites dates on every change) they
/// are reference-counted and freed with their snapshot.
fn intern_headers(fields: Vec<Field>) -> Fields {
    static SETS: Interned<Vec<Field>, Vec<(http::HeaderName, HeaderValue)>> = Interned::new(1024);
    let build = |fields: &[Field], leak: bool| {
        fields
            .iter()
            .filter_map(|(name, value)| {
                // Checked first: only a valid value is leaked.
                let checked = HeaderValue::from_str(value).ok()?;
                if !leak {
                    return Some((name.clone(), checked));
                }
                let value: &'static str = Box::leak(value.clone().into_boxed_str());
                let value =
                    HeaderValue::from_maybe_shared(bytes::Bytes::from_static(value.as_bytes()));
                Some((name.clone(), value.ok()?))
            })
            .collect::<Vec<_>>()
    };
    match SETS.get_or_leak(&fields, |fields| Box::new(build(fields, true))) {
        Some(set) => Fields::Static(set),
        None => Fields::Shared(Arc::new(build(&fields, false))),
    }
}

/// An API's and a version's names: kept for the life of the process
/// (one copy per distinct pair, up to 16,384 of them), so that an
/// [`ApiVersion`] is one pointer and cloning or dropping one touches no
/// reference count; past the limit, reference-counted.
#[derive(Clone)]
enum Names {
    Static(&'static (String, String)),
    Shared(Arc<(String, String)>),
}

impl Names {
    fn new(api: &str, version: &str) -> Names {
        static NAMES: Interned<(String, String), (String, String)> = Interned::new(16 * 1024);
        let key = (api.to_owned(), version.to_owned());
        match NAMES.get_or_leak(&key, |key| Box::new(key.clone())) {
            Some(n) => Names::Static(n),
            None => Names::Shared(Arc::new(key)),
        }
    }

    fn get(&self) -> &(String, String) {
        match self {
            Names::Static(n) => n,
            Names::Shared(n) => n,
        }
    }
}

/// Values leaked once per distinct key, for the life of the process, up
/// to `limit` of them.
struct Interned<K, V: ?Sized + 'static> {
    limit: usize,
    map: std::sync::Mutex<Option<std::collections::HashMap<K, &'static V>>>,
}

impl<K: std::hash::Hash + Eq + Clone, V: ?Sized + 'static> Interned<K, V> {
    const fn new(limit: usize) -> Self {
        Interned {
            limit,
            map: std::sync::Mutex::new(None),
        }
    }

    /// The value for `key`, made and leaked now if it is new; `None` when
    /// it is new and `limit` values are kept already.
    fn get_or_leak(&self, key: &K, make: impl FnOnce(&K) -> Box<V>) -> Option<&'static V> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let map = map.get_or_insert_with(Default::default);
        if let Some(v) = map.get(key) {
            return Some(v);
        }
        if map.len() >= self.limit {
            return None;
        }
        let v: &'static V = Box::leak(make(key));
        map.insert(key.clone(), v);
        Some(v)
    }
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
        if let Some(at) = deprecated_at {
            headers.push((
                http::HeaderName::from_static("deprecation"),
                format!("@{}", secs(at)),
            ));
        }
        if let Some(at) = sunset {
            headers.push((
                http::HeaderName::from_static("sunset"),
                httpdate::fmt_http_date(at),
            ));
        }
        // Both links in one field line (RFC 8288 §3 allows a list): one
        // header to append per response instead of two.
        let links: Vec<String> = [
            (&spec.deprecation_link, "deprecation"),
            (&spec.successor_link, "successor-version"),
        ]
        .into_iter()
        .filter_map(|(link, rel)| link.as_ref().map(|l| format!("<{l}>; rel=\"{rel}\"")))
        .collect();
        if !links.is_empty() {
            headers.push((http::header::LINK, links.join(", ")));
        }
        let successor = spec
            .successor
            .as_ref()
            .map(|s| format!("; use version {s}"))
            .unwrap_or_default();
        let what = format!("API {api} version {}", spec.version);
        Some(Lifecycle {
            retired_detail: format!("{what} is retired{successor}"),
            brownout_detail: format!(
                "{what} is deprecated and unavailable during a scheduled brown-out{successor}"
            ),
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
            headers: intern_headers(headers),
        })
    }

    /// Why the version is gone at `clock`'s time, if it is. Reads the
    /// clock only when the answer depends on it.
    fn gone(&self, clock: &WallClock) -> Option<&str> {
        if self.retired {
            return Some(&self.retired_detail);
        }
        if self.sunset.is_none() && self.brownouts.is_empty() {
            return None;
        }
        let now = clock();
        if self.sunset.is_some_and(|s| now >= s) {
            return Some(&self.retired_detail);
        }
        self.brownouts
            .iter()
            .any(|(start, end)| (*start..*end).contains(&now))
            .then_some(&*self.brownout_detail)
    }
}

/// The API version a request is served by. Cheap to clone: one pointer
/// to names kept for the life of the process.
#[derive(Clone)]
pub struct ApiVersion(Names);

impl ApiVersion {
    fn new(api: &str, version: &str) -> ApiVersion {
        ApiVersion(Names::new(api, version))
    }
    /// The API.
    pub fn api(&self) -> &str {
        &self.0.get().0
    }
    /// The version, e.g. `v2`.
    pub fn version(&self) -> &str {
        &self.0.get().1
    }
}

impl PartialEq for ApiVersion {
    fn eq(&self, other: &ApiVersion) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for ApiVersion {}

impl std::fmt::Debug for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiVersion")
            .field("api", &self.api())
            .field("version", &self.version())
            .finish()
    }
}

/// The rejection when a handler asks for [`ApiVersion`] on a route without one.
#[derive(Debug, Clone, Copy)]
pub struct MissingApiVersion(());

impl axum::response::IntoResponse for MissingApiVersion {
    fn into_response(self) -> axum::response::Response {
        MeshError::Internal
            .to_problem_response()
            .map(axum::body::Body::from)
    }
}

crate::macros::extension_extractor!(ApiVersion, MissingApiVersion);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Path,
    Header,
    MediaType,
    Query,
}

/// How one API's version is read from requests.
struct Resolver {
    api: Arc<str>,
    styles: Vec<Style>,
    header: http::HeaderName,
    query: String,
    strip: bool,
    default: Option<Arc<str>>,
    versions: Vec<KnownVersion>,
    /// The length of the longest version name.
    longest: usize,
}

/// A version of an API, its extension value, and its lifecycle (if any).
type KnownVersion = (Arc<str>, ApiVersion, Option<Arc<Lifecycle>>);

/// What a route's version is.
enum RouteVersion {
    Fixed(ApiVersion, Option<Arc<Lifecycle>>),
    Resolve(Arc<Resolver>),
}

impl Resolver {
    fn find(&self, name: &str) -> Option<&KnownVersion> {
        let name = trim(name).as_bytes();
        // Most path segments and typos are longer than every version name:
        // one comparison rejects them.
        if name.len() > self.longest {
            return None;
        }
        self.versions.iter().find(|(v, _, _)| {
            let v = v.as_bytes();
            same(v, name)
                // `version=2` names `v2`.
                || v.split_first().is_some_and(|(&first, rest)| first == b'v' && same(rest, name))
        })
    }

    fn supported(&self) -> String {
        self.versions
            .iter()
            .map(|(v, _, _)| &**v)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The version and, for the path style with `strip_prefix`, the length
    /// of the path prefix to remove.
    fn resolve<B>(&self, req: &Request<B>) -> Result<(&KnownVersion, Option<usize>), String> {
        let unknown = |given: &str| {
            format!(
                "unknown version `{given}` of API {}; supported: {}",
                self.api,
                self.supported()
            )
        };
        for style in &self.styles {
            match style {
                Style::Path => {
                    let path = req.uri().path();
                    let trimmed = path.trim_start_matches('/');
                    // A byte loop: the segment is short, `split` sets up a
                    // searcher.
                    let seg = trimmed
                        .as_bytes()
                        .iter()
                        .position(|&b| b == b'/')
                        .map_or(trimmed, |end| &trimmed[..end]);
                    if let Some(found) = self.find(seg).filter(|_| !seg.is_empty()) {
                        let cut = path.len() - trimmed.len() + seg.len();
                        return Ok((found, self.strip.then_some(cut)));
                    }
                }
                Style::Header => {
                    if let Some(v) = crate::fields::get(req.headers(), &self.header) {
                        let given = v.to_str().unwrap_or("");
                        return self
                            .find(given)
                            .map(|f| (f, None))
                            .ok_or_else(|| unknown(given));
                    }
                }
                Style::MediaType => {
                    let accept = req
                        .headers()
                        .get_all(http::header::ACCEPT)
                        .iter()
                        .filter_map(|v| v.to_str().ok());
                    for range in accept.flat_map(|v| v.split(',')) {
                        for param in range.split(';').skip(1) {
                            if let Some((k, v)) = param.split_once('=')
                                && k.trim().eq_ignore_ascii_case("version")
                            {
                                let given = v.trim().trim_matches('"');
                                return self
                                    .find(given)
                                    .map(|f| (f, None))
                                    .ok_or_else(|| unknown(given));
                            }
                        }
                    }
                }
                Style::Query => {
                    let q = req.uri().query().unwrap_or("");
                    if let Some((_, given)) = q
                        .split('&')
                        .filter_map(|p| p.split_once('='))
                        .find(|(k, _)| *k == self.query)
                    {
                        return self
                            .find(given)
                            .map(|f| (f, None))
                            .ok_or_else(|| unknown(given));
                    }
                }
            }
        }
        match &self.default {
            Some(d) => self.find(d).map(|f| (f, None)).ok_or_else(|| unknown(d)),
            None => Err(format!(
                "API {} needs a version; supported: {}",
                self.api,
                self.supported()
            )),
        }
    }
}

/// `a == b` for the short strings version names are, without a call to
/// `memcmp`.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// `s.trim()`, skipping the Unicode scan when neither end can be
/// whitespace (the usual case: a header value or path segment).
fn trim(s: &str) -> &str {
    let clean = |b: Option<&u8>| b.is_some_and(|b| (b'!'..0x80).contains(b));
    if clean(s.as_bytes().first()) && clean(s.as_bytes().last()) {
        s
    } else {
        s.trim()
    }
}

/// The lifecycles of one snapshot, by route index.
struct VersionState {
    revision: u64,
    routes: Vec<Option<RouteVersion>>,
}

impl VersionState {
    fn build(snapshot: &Snapshot) -> VersionState {
        let mut resolvers: foldhash::HashMap<&str, Arc<Resolver>> = Default::default();
        let routes = snapshot
            .routes()
            .iter()
            .map(|r| {
                let api_name = r.api_arc()?;
                let api = snapshot.api(api_name)?;
                if let Some(version) = r.version_arc() {
                    let lifecycle = api
                        .versions
                        .iter()
                        .find(|v| *v.version == **version)
                        .and_then(|spec| Lifecycle::compile(api_name, spec))
                        .map(Arc::new);
                    return Some(RouteVersion::Fixed(
                        ApiVersion::new(api_name, version),
                        lifecycle,
                    ));
                }
                let vs = api.versioning.as_ref()?;
                let resolver = resolvers.entry(&api.name).or_insert_with(|| {
                    Arc::new(Resolver {
                        api: api_name.clone(),
                        styles: vs
                            .styles
                            .iter()
                            .filter_map(|s| match s.as_str() {
                                "path" => Some(Style::Path),
                                "header" => Some(Style::Header),
                                "media_type" => Some(Style::MediaType),
                                "query" => Some(Style::Query),
                                _ => None,
                            })
                            .collect(),
                        header: http::HeaderName::from_bytes(vs.header.as_bytes())
                            .unwrap_or(http::HeaderName::from_static("api-version")),
                        query: vs.query.clone(),
                        strip: vs.strip_prefix,
                        default: vs.default.as_deref().map(Arc::from),
                        versions: api
                            .versions
                            .iter()
                            .map(|spec| {
                                let version: Arc<str> = Arc::from(spec.version.as_str());
                                (
                                    version.clone(),
                                    ApiVersion::new(api_name, &version),
                                    Lifecycle::compile(api_name, spec).map(Arc::new),
                                )
                            })
                            .collect(),
                        longest: api
                            .versions
                            .iter()
                            .map(|v| v.version.len())
                            .max()
                            .unwrap_or(0),
                    })
                });
                Some(RouteVersion::Resolve(resolver.clone()))
            })
            .collect();
        VersionState {
            revision: snapshot.revision(),
            routes,
        }
    }
}

impl Compiled for VersionState {
    fn revision(&self) -> u64 {
        self.revision
    }
}

struct Shared {
    states: PerRevision<VersionState>,
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
        VersionLayer::with_clock(crate::clock::system())
    }

    /// Like [`from_routes`](Self::from_routes), with `clock` (seconds since
    /// the epoch) instead of the system clock.
    pub fn with_clock(clock: WallClock) -> VersionLayer {
        VersionLayer {
            shared: Arc::new(Shared {
                states: PerRevision::new(VersionState {
                    revision: 0,
                    routes: Vec::new(),
                }),
                clock,
            }),
        }
    }

    /// Compiles `snapshot`'s lifecycles now rather than on first use.
    pub fn prepare(&self, snapshot: &Snapshot) {
        self.shared.states.prepare(snapshot, VersionState::build);
    }
}

impl<S> Layer<S> for VersionLayer {
    type Service = Versioned<S>;

    fn layer(&self, inner: S) -> Versioned<S> {
        Versioned {
            inner,
            cache: self.shared.states.cache(),
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`VersionLayer`].
pub struct Versioned<S> {
    inner: S,
    shared: Arc<Shared>,
    cache: StateCache<VersionState>,
}

crate::macros::stage_service!(Versioned);

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Versioned<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<MeshBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // One call of the inner service, below: every other path answers
        // itself, so the request is moved once.
        match self.prepare_request(&mut req) {
            Ok(headers) => ResponseFuture::inner(self.inner.call(req), headers),
            Err(res) => ResponseFuture::ready_boxed(res),
        }
    }
}

impl<S> Versioned<S> {
    /// Resolves the request's version and puts it in its extensions
    /// (stripping the path prefix if so configured); the lifecycle headers
    /// to add to the response, or the response to answer with (400, 410).
    ///
    /// Works on the request in place: the version goes from the compiled
    /// state straight into the extensions, nothing is moved around.
    #[inline]
    fn prepare_request<B>(
        &mut self,
        req: &mut Request<B>,
    ) -> Result<Option<LifecycleHeaders>, Box<Response<bytes::Bytes>>> {
        let Some(matched) = req.extensions().get::<MatchedRoute>() else {
            return Ok(None);
        };
        let index = matched.index();
        let state = self.shared.states.for_snapshot(
            self.cache.load(),
            matched.snapshot(),
            VersionState::build,
        );
        // Everything below borrows the compiled state: no reference count
        // is touched for the lifecycle, and its headers are static.
        let (version, lifecycle, strip) = match state.routes.get(index).and_then(Option::as_ref) {
            None => return Ok(None),
            Some(RouteVersion::Fixed(v, lifecycle)) => (v, lifecycle.as_deref(), None),
            Some(RouteVersion::Resolve(resolver)) => match resolver.resolve(req) {
                Ok(((_, v, lifecycle), strip)) => (v, lifecycle.as_deref(), strip),
                Err(detail) => {
                    let grpc = is_grpc(req.headers());
                    return Err(Box::new(MeshError::BadRequest { detail }.to_response(grpc)));
                }
            },
        };
        let mut headers = None;
        if let Some(lifecycle) = lifecycle {
            if let Some(detail) = lifecycle.gone(&self.shared.clock) {
                let detail = detail.to_owned();
                let mut res = MeshError::Gone { detail }.to_response(is_grpc(req.headers()));
                LifecycleHeaders(lifecycle.headers.clone()).add_to(res.headers_mut());
                return Err(Box::new(res));
            }
            headers = Some(LifecycleHeaders(lifecycle.headers.clone()));
        }
        if let Some(cut) = strip {
            strip_prefix(req, cut);
        }
        req.extensions_mut().insert(version.clone());
        Ok(headers)
    }
}

/// Removes the first `cut` bytes of the path (`/v2`), keeping the query.
///
/// One copy of what is left (the rest of the path and the query are one
/// slice already); the scheme and authority, if any, are kept.
fn strip_prefix<B>(req: &mut Request<B>, cut: usize) {
    let uri = req.uri();
    let Some(pq) = uri.path_and_query() else {
        return;
    };
    let rest = pq.as_str().get(cut..).unwrap_or("");
    let stripped = if rest.is_empty() || rest.starts_with('?') {
        // `/v2` or `/v2?x=1`: the path that is left is `/`.
        http::uri::PathAndQuery::try_from(format!("/{rest}"))
    } else {
        http::uri::PathAndQuery::try_from(rest)
    };
    let Ok(stripped) = stripped else {
        return;
    };
    if uri.scheme().is_none() && uri.authority().is_none() {
        // Origin form, as HTTP/1.1 requests come.
        *req.uri_mut() = http::Uri::from(stripped);
        return;
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(stripped);
    if let Ok(u) = http::Uri::from_parts(parts) {
        *req.uri_mut() = u;
    }
}

/// The lifecycle headers of a deprecated version's response.
pub struct LifecycleHeaders(Fields);

impl AddHeaders for LifecycleHeaders {
    fn add_to(self, headers: &mut http::HeaderMap) {
        for (name, value) in self.0.as_slice() {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// Response future of [`Versioned`].
pub type ResponseFuture<F, B, E> = crate::future::StageFuture<F, B, E, LifecycleHeaders>;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn the_interner_keeps_at_most_its_limit() {
        let interned: Interned<String, str> = Interned::new(2);
        let make = |k: &String| k.clone().into_boxed_str();
        let a = interned.get_or_leak(&"a".to_owned(), make).unwrap();
        assert_eq!(a, "a");
        assert!(interned.get_or_leak(&"b".to_owned(), make).is_some());
        assert!(
            interned.get_or_leak(&"c".to_owned(), make).is_none(),
            "full"
        );
        let again = interned.get_or_leak(&"a".to_owned(), make).unwrap();
        assert!(std::ptr::eq(a, again), "a kept value is reused");
        // Past the limit names are shared, and equal all the same.
        let kept = ApiVersion::new("orders", "v1");
        let pair = ("orders".to_owned(), "v1".to_owned());
        let shared = ApiVersion(Names::Shared(Arc::new(pair)));
        assert_eq!(kept, shared);
        assert_eq!(
            format!("{shared:?}"),
            r#"ApiVersion { api: "orders", version: "v1" }"#
        );
        assert_ne!(kept, ApiVersion::new("orders", "v2"));
    }

    #[test]
    fn strip_prefix_keeps_the_rest_and_the_query() {
        for (uri, cut, want) in [
            ("/v2/orders", 3, "/orders"),
            ("/v2/orders?x=1&y", 3, "/orders?x=1&y"),
            ("/v2", 3, "/"),
            ("/v2/", 3, "/"),
            ("/v2?x=1", 3, "/?x=1"),
            ("//v2/orders", 4, "/orders"),
            (
                "http://h.example:8080/v2/a?b",
                3,
                "http://h.example:8080/a?b",
            ),
        ] {
            let mut req = Request::get(uri).body(()).unwrap();
            strip_prefix(&mut req, cut);
            assert_eq!(req.uri().to_string(), want, "{uri}");
        }
    }

    #[test]
    fn same_is_byte_equality() {
        for (a, b) in [
            ("", ""),
            ("v1", "v1"),
            ("v1", "v2"),
            ("v1", "v10"),
            ("", "v"),
        ] {
            assert_eq!(same(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
        }
    }

    #[test]
    fn trim_matches_str_trim() {
        for s in [
            "",
            "v2",
            " v2",
            "v2 ",
            "\tv2\t",
            "\u{b}v2",
            "v2\u{b}",
            "\u{a0}v2",
            "v2\u{a0}",
            "\u{3000}v2\u{3000}",
            "é",
            "\u{7f}v2",
            "v",
            " ",
        ] {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
    }

    fn lifecycle(spec: serde_json::Value) -> Lifecycle {
        let spec: mesh_core::config::VersionSpec = serde_json::from_value(spec).unwrap();
        Lifecycle::compile("orders", &spec).unwrap()
    }

    /// A clock that counts its reads.
    fn counting(now: u64) -> (WallClock, Arc<AtomicU64>) {
        let reads = Arc::new(AtomicU64::new(0));
        let r = reads.clone();
        let clock: WallClock = Arc::new(move || {
            r.fetch_add(1, Ordering::Relaxed);
            now
        });
        (clock, reads)
    }

    #[test]
    fn gone_reads_the_clock_only_when_the_answer_depends_on_it() {
        let (clock, reads) = counting(4_100_000_000);
        let deprecated = lifecycle(serde_json::json!({"version": "v1", "status": "deprecated"}));
        assert_eq!(deprecated.gone(&clock), None);
        let retired = lifecycle(serde_json::json!({
            "version": "v0",
            "status": "retired",
            "successor": "v2",
        }));
        assert_eq!(
            retired.gone(&clock),
            Some("API orders version v0 is retired; use version v2")
        );
        assert_eq!(reads.load(Ordering::Relaxed), 0);

        let sunset = lifecycle(serde_json::json!({
            "version": "v1",
            "sunset": "2099-01-01T00:00:00Z",
        }));
        assert_eq!(
            sunset.gone(&clock),
            Some("API orders version v1 is retired")
        );
        assert_eq!(reads.load(Ordering::Relaxed), 1);
    }
}
