//! Rate limits, plans, quotas and usage metering.
//!
//! [`RateLimitLayer`] applies, per route:
//!
//! - the route's own GCRA limits (governor), keyed by any compound of the
//!   consumer, the client IP, the route, the API version and a header;
//! - the consumer's plan: its rates (keyed by consumer, shared by every
//!   route that applies plans) and its quotas per API over UTC calendar
//!   periods (hour, day, month);
//! - and it meters usage per consumer, API, version and UTC day, for
//!   `GET /mesh/usage`.
//!
//! An admitted request's response carries the IETF `RateLimit-Policy` and
//! `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers-10); a refused
//! one gets 429 with `Retry-After`, the same fields and a problem body
//! (gRPC: `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`).
//!
//! The client IP is the socket peer (axum's `ConnectInfo`, or a
//! [`PeerAddr`] extension); `X-Forwarded-For` and `Forwarded` count only
//! when the peer is a trusted proxy (`[mesh] trusted_proxies`), and then the
//! rightmost address that is not a trusted proxy is the client. A client
//! can never choose its own key by sending a header.
//!
//! Limiter state survives config changes while a limit's rate and burst are
//! unchanged. Idle keys are evicted in the background (every minute), and
//! `apimesh.ratelimit.keys` gauges how many are held. See
//! `docs/rate-limits.md`.

pub(crate) mod client;
mod limiter;
#[cfg(feature = "redis")]
mod redis;

use std::hash::{BuildHasher, Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Request, Response};
use ipnet::IpNet;
use mesh_core::policy::KeyPart;
use mesh_core::units::{Period, Rate};
use mesh_core::{Config, ConfigError, MeshError, Route, Snapshot, is_grpc, parse_net};
use serde_json::json;
use tower_layer::Layer;
use tower_service::Service;

pub use client::PeerAddr;
use limiter::{Decision, Limit, LimiterPool, QuotaStore, UsageStore};
#[cfg(feature = "redis")]
pub use redis::RedisStore;

use crate::body::MeshBody;
use crate::compiled::{Compiled, PerRevision, StateCache};
use crate::{MatchedRoute, Principal};

/// Seconds since the Unix epoch, from a clock the layer is given (tests
/// use a manual one).
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock: usage rows' first and last seen are ordered with
/// every other reading of it (the coarse clock may be a tick behind).
fn system_clock() -> WallClock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

const ANONYMOUS: &str = "anonymous";
const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");

struct NamedLimit {
    name: Arc<str>,
    /// What the limit is (owner, index, rate, burst): its Redis key prefix.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    identity: String,
    limit: Arc<Limit>,
    /// The local stand-in when the shared store fails: the limit divided
    /// by the live replicas.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fallback: Arc<Limit>,
    key: Vec<KeyPart>,
}

struct RouteLimits {
    limits: Vec<Arc<NamedLimit>>,
    cost: NonZeroU32,
    plan: bool,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    cluster: bool,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    on_failure: mesh_core::policy::StoreFailureMode,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    store_timeout: Duration,
    /// Write the fields on admitted responses.
    headers: bool,
    /// The `RateLimit-Policy` field line of the route's own limits.
    policy: Option<HeaderValue>,
    allowed: metrics::Counter,
    limited: metrics::Counter,
}

struct PlanLimits {
    rates: Vec<Arc<NamedLimit>>,
    quotas: Vec<(Arc<str>, Rate)>,
    /// The `RateLimit-Policy` field line of the plan.
    policy: Option<HeaderValue>,
}

/// How the client address is found.
#[derive(Default)]
struct Net {
    trusted: Vec<IpNet>,
    /// Read `Forwarded` rather than `X-Forwarded-For` from trusted proxies.
    forwarded: bool,
}

/// The limits compiled from one snapshot.
struct RateState {
    revision: u64,
    routes: Vec<Option<RouteLimits>>,
    plans: foldhash::HashMap<String, PlanLimits>,
    net: Net,
    /// Live replicas of this service (1 if unknown), for local fallbacks.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    replicas: u64,
}

fn named(
    pool: &LimiterPool,
    name: String,
    identity: String,
    rate: Rate,
    burst: u32,
    key: Vec<KeyPart>,
    replicas: u64,
) -> NamedLimit {
    let share = |n: u64| (n / replicas.max(1)).max(1);
    let fallback_rate = Rate {
        amount: share(rate.amount),
        period: rate.period,
    };
    let fallback_burst = share(u64::from(burst)) as u32;
    NamedLimit {
        name: name.into(),
        limit: pool.get(identity.clone(), rate, burst),
        fallback: pool.get(
            format!("{identity}|fallback/{replicas}"),
            fallback_rate,
            fallback_burst,
        ),
        identity,
        key,
    }
}

fn policy_item(name: &str, q: u64, w: u64) -> String {
    format!("\"{name}\";q={q};w={w}")
}

fn gcra_policy(name: &str, rate: Rate, burst: u32) -> String {
    // q units per w seconds: the burst, over the time GCRA takes to refill it.
    let w = (rate.interval() * burst).as_secs_f64().ceil().max(1.0) as u64;
    policy_item(name, u64::from(burst), w)
}

impl RateState {
    fn build(snapshot: &Snapshot, pool: &LimiterPool, service: Option<&str>) -> RateState {
        let replicas = service
            .and_then(|n| snapshot.service(n))
            .map(|s| s.endpoints.len() as u64)
            .filter(|n| *n > 0)
            .unwrap_or(1);
        let mesh = &snapshot.config().mesh;
        let net = Net {
            trusted: mesh
                .trusted_proxies
                .iter()
                .filter_map(|p| parse_net(p))
                .collect(),
            forwarded: mesh
                .forwarded_header
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case("forwarded")),
        };
        let routes = snapshot
            .routes()
            .iter()
            .map(|route| {
                let rl = route.policy().rate_limit.as_ref()?;
                let limits: Vec<Arc<NamedLimit>> = rl
                    .limits
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        Arc::new(named(
                            pool,
                            format!("{}-{i}", route.id()),
                            format!("route|{}|{i}|{}|{}", route.id(), l.rate, l.burst),
                            l.rate,
                            l.burst,
                            l.key.clone(),
                            replicas,
                        ))
                    })
                    .collect();
                let policy = limits
                    .iter()
                    .map(|n| gcra_policy(&n.name, n.limit.rate, n.limit.burst))
                    .collect::<Vec<_>>()
                    .join(", ");
                let label = route.id().to_owned();
                Some(RouteLimits {
                    limits,
                    cost: NonZeroU32::new(rl.cost).unwrap_or(NonZeroU32::MIN),
                    plan: rl.plan,
                    cluster: rl.cluster,
                    on_failure: rl.on_store_failure,
                    store_timeout: rl.store_timeout,
                    headers: rl.headers,
                    policy: (!policy.is_empty()).then(|| header(&policy)).flatten(),
                    allowed: metrics::counter!("apimesh.ratelimit.decisions", "route" => label.clone(), "outcome" => "allowed"),
                    limited: metrics::counter!("apimesh.ratelimit.decisions", "route" => label, "outcome" => "limited"),
                })
            })
            .collect();
        let mut plans = foldhash::HashMap::default();
        for plan in &snapshot.config().plans {
            let rates: Vec<Arc<NamedLimit>> = plan
                .rates
                .iter()
                .enumerate()
                .filter_map(|(i, spec)| {
                    let rate: Rate = spec.rate.parse().ok()?;
                    let burst = spec
                        .burst
                        .unwrap_or(rate.amount.min(u64::from(u32::MAX)) as u32)
                        .max(1);
                    let mut key: Vec<KeyPart> =
                        spec.key.iter().filter_map(|k| KeyPart::parse(k)).collect();
                    if key.is_empty() {
                        key.push(KeyPart::Consumer);
                    }
                    Some(Arc::new(named(
                        pool,
                        format!("plan-{}-{i}", plan.name),
                        format!("plan|{}|{i}|{rate}|{burst}|{:?}", plan.name, spec.key),
                        rate,
                        burst,
                        key,
                        replicas,
                    )))
                })
                .collect();
            let quotas: Vec<(Arc<str>, Rate)> = plan
                .quotas
                .iter()
                .filter_map(|q| q.parse::<Rate>().ok())
                .enumerate()
                .map(|(i, r)| (Arc::from(format!("quota-{}-{i}", plan.name)), r))
                .collect();
            let policy =
                rates
                    .iter()
                    .map(|n| gcra_policy(&n.name, n.limit.rate, n.limit.burst))
                    .chain(quotas.iter().map(|(n, r)| {
                        policy_item(n, r.amount, r.period.approx_duration().as_secs())
                    }))
                    .collect::<Vec<_>>()
                    .join(", ");
            plans.insert(
                plan.name.clone(),
                PlanLimits {
                    rates,
                    quotas,
                    policy: (!policy.is_empty()).then(|| header(&policy)).flatten(),
                },
            );
        }
        RateState {
            revision: snapshot.revision(),
            routes,
            plans,
            net,
            replicas,
        }
    }
}

impl Compiled for RateState {
    fn revision(&self) -> u64 {
        self.revision
    }
}

enum Mode {
    Routes,
    Fixed { snapshot: Arc<Snapshot> },
}

struct Shared {
    mode: Mode,
    pool: LimiterPool,
    quotas: QuotaStore,
    usage: UsageStore,
    states: PerRevision<RateState>,
    clock: WallClock,
    hasher: foldhash::fast::RandomState,
    eviction: std::sync::Once,
    eviction_interval: Duration,
    /// The service whose replica count divides local fallbacks.
    service: Option<String>,
    #[cfg(feature = "redis")]
    store: Option<Arc<redis::RedisStore>>,
}

impl Shared {
    fn build(&self, snapshot: &Snapshot) -> RateState {
        RateState::build(snapshot, &self.pool, self.service.as_deref())
    }

    fn start_eviction(self: &Arc<Self>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Shared> = Arc::downgrade(self);
        let every = self.eviction_interval;
        self.eviction.call_once(|| {
            handle.spawn(async move {
                let gauge = metrics::gauge!("apimesh.ratelimit.keys");
                loop {
                    tokio::time::sleep(every).await;
                    let Some(shared) = weak.upgrade() else { return };
                    let keys = shared.evict();
                    gauge.set(keys as f64);
                }
            });
        });
    }

    fn evict(&self) -> usize {
        self.quotas.evict_expired((self.clock)());
        self.pool.evict_idle() + self.quotas.len()
    }
}

/// Applies rate limits, plans and quotas; see the [module docs](self).
#[derive(Clone)]
#[must_use]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer").finish_non_exhaustive()
    }
}

fn shared(mode: Mode, clock: WallClock, eviction_interval: Duration) -> Arc<Shared> {
    Arc::new(Shared {
        mode,
        pool: LimiterPool::default(),
        quotas: QuotaStore::default(),
        usage: UsageStore::default(),
        states: PerRevision::new(RateState {
            revision: 0,
            routes: Vec::new(),
            plans: Default::default(),
            net: Net::default(),
            replicas: 1,
        }),
        clock,
        hasher: foldhash::fast::RandomState::default(),
        eviction: std::sync::Once::new(),
        eviction_interval,
        service: None,
        #[cfg(feature = "redis")]
        store: None,
    })
}

impl RateLimitLayer {
    /// A layer that applies each matched route's `rate_limit` policy and the
    /// consumer's plan, from the snapshot the route was matched in. Put it
    /// inside an [`InboundLayer`](crate::InboundLayer), after authentication.
    pub fn from_routes() -> RateLimitLayer {
        RateLimitLayer {
            shared: shared(Mode::Routes, system_clock(), Duration::from_secs(60)),
        }
    }

    /// A standalone layer with the same limits for every request.
    pub fn builder() -> RateLimitLayerBuilder {
        RateLimitLayerBuilder {
            limits: Vec::new(),
            cost: 1,
            headers: true,
            trusted_proxies: Vec::new(),
            clock: None,
        }
    }

    fn rebuilt(self, f: impl FnOnce(&mut Shared)) -> RateLimitLayer {
        let old = &self.shared;
        let mode = match &old.mode {
            Mode::Routes => Mode::Routes,
            Mode::Fixed { snapshot } => Mode::Fixed {
                snapshot: snapshot.clone(),
            },
        };
        let mut fresh = shared(mode, old.clock.clone(), old.eviction_interval);
        if let Some(s) = Arc::get_mut(&mut fresh) {
            s.service = old.service.clone();
            #[cfg(feature = "redis")]
            {
                s.store = old.store.clone();
            }
            f(s);
        }
        if let Mode::Fixed { snapshot } = &fresh.mode {
            let snapshot = snapshot.clone();
            let layer = RateLimitLayer { shared: fresh };
            layer.prepare(&snapshot);
            return layer;
        }
        RateLimitLayer { shared: fresh }
    }

    /// Uses `clock` for quota windows and usage days (tests). Call it before
    /// the layer is used: it starts from empty counters.
    pub fn with_clock(self, clock: WallClock) -> RateLimitLayer {
        self.rebuilt(|s| s.clock = clock)
    }

    /// Divides local fallback limits by the live replicas of `service`
    /// (its endpoint count in the registry; 1 if unknown). The mesh sets
    /// its own service name.
    pub fn for_service(self, service: &str) -> RateLimitLayer {
        let service = service.to_owned();
        self.rebuilt(|s| s.service = Some(service))
    }

    /// Counts `cluster = true` routes in Redis, shared by every instance.
    #[cfg(feature = "redis")]
    pub fn with_redis(self, store: Arc<redis::RedisStore>) -> RateLimitLayer {
        self.rebuilt(|s| s.store = Some(store))
    }

    /// Compiles `snapshot`'s limits now rather than on its first request.
    pub fn prepare(&self, snapshot: &Snapshot) {
        self.shared
            .states
            .prepare(snapshot, |s| self.shared.build(s));
    }

    /// Evicts idle limiter keys and ended quota windows now; returns the
    /// keys still held. The layer also does this every minute.
    pub fn evict_idle(&self) -> usize {
        self.shared.evict()
    }

    /// Limiter keys and quota cells held.
    pub fn keys(&self) -> usize {
        self.shared.pool.keys() + self.shared.quotas.len()
    }

    /// `GET /mesh/usage` (per consumer, API, version and UTC day; filter with
    /// `?api=`, `?version=`, `?consumer=`) and `GET /mesh/limits`.
    pub fn admin_router(&self) -> axum::Router {
        let usage = self.shared.clone();
        let limits = self.shared.clone();
        axum::Router::new()
            .route(
                "/mesh/usage",
                axum::routing::get(
                    move |q: axum::extract::Query<std::collections::HashMap<String, String>>| {
                        let s = usage.clone();
                        async move {
                            #[allow(unused_mut)]
                            let mut rows = s.usage.report();
                            #[cfg(feature = "redis")]
                            if let Some(store) = &s.store {
                                match store.usage().await {
                                    Ok(shared) => rows.extend(shared.into_iter().filter_map(
                                        |(field, day, n, l, f, last)| {
                                            let mut parts = field.split('\u{1f}');
                                            let (consumer, api, version) =
                                                (parts.next()?, parts.next()?, parts.next()?);
                                            Some((
                                                limiter::UsageKey {
                                                    consumer: consumer.into(),
                                                    api: api.into(),
                                                    version: (!version.is_empty())
                                                        .then(|| version.into()),
                                                    day,
                                                },
                                                n,
                                                l,
                                                f,
                                                last,
                                            ))
                                        },
                                    )),
                                    Err(e) => {
                                        tracing::warn!(error = %e, "shared usage unavailable; reporting this instance only");
                                    }
                                }
                            }
                            axum::Json(usage_report(rows, &q.0))
                        }
                    },
                ),
            )
            .route(
                "/mesh/limits",
                axum::routing::get(move || {
                    let s = limits.clone();
                    async move {
                        axum::Json(json!({
                            "keys": s.pool.keys(),
                            "quota_cells": s.quotas.len(),
                            "revision": s.states.latest().revision,
                        }))
                    }
                }),
            )
    }
}

type UsageRow = (limiter::UsageKey, u64, u64, u64, u64);

fn usage_report(
    rows: Vec<UsageRow>,
    filter: &std::collections::HashMap<String, String>,
) -> serde_json::Value {
    let fmt = rfc3339;
    let mut rows: Vec<_> = rows
        .into_iter()
        .filter(|(k, ..)| {
            filter.get("api").is_none_or(|a| **a == *k.api)
                && filter
                    .get("version")
                    .is_none_or(|v| k.version.as_deref() == Some(v.as_str()))
                && filter.get("consumer").is_none_or(|c| **c == *k.consumer)
        })
        .collect();
    rows.sort_by(|a, b| {
        (&a.0.api, &a.0.version, &a.0.consumer, a.0.day).cmp(&(
            &b.0.api,
            &b.0.version,
            &b.0.consumer,
            b.0.day,
        ))
    });
    let usage: Vec<_> = rows
        .into_iter()
        .map(|(k, requests, limited, first, last)| {
            json!({
                "consumer": &*k.consumer,
                "api": &*k.api,
                "version": k.version.as_deref(),
                "day": fmt(k.day * 86_400).get(..10).unwrap_or_default(),
                "requests": requests,
                "limited": limited,
                "first_seen": fmt(first),
                "last_seen": fmt(last),
            })
        })
        .collect();
    json!({ "usage": usage })
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(t: u64) -> String {
    let (start, _) = limiter::window(Period::Day, t);
    let (y, m, d) = limiter::civil_from_days((start / 86_400) as i64);
    let secs = t - start;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Builds a standalone [`RateLimitLayer`].
///
/// ```
/// use mesh_tower::ratelimit::RateLimitLayer;
///
/// let layer = RateLimitLayer::builder()
///     .limit("10/s", Some(20), &["ip"])
///     .limit("1000/h", None, &["ip"])
///     .trusted_proxy("10.0.0.0/8")
///     .build()?;
/// # Ok::<(), mesh_core::ConfigError>(())
/// ```
#[must_use]
pub struct RateLimitLayerBuilder {
    limits: Vec<(String, Option<u32>, Vec<String>)>,
    cost: u32,
    headers: bool,
    trusted_proxies: Vec<String>,
    clock: Option<WallClock>,
}

impl std::fmt::Debug for RateLimitLayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayerBuilder")
            .field("limits", &self.limits)
            .field("cost", &self.cost)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayerBuilder {
    /// Adds a limit: a rate like `10/s`, a burst (default: the rate's
    /// amount), and key parts (`ip`, `route`, `header:<name>`, `consumer`).
    pub fn limit(mut self, rate: &str, burst: Option<u32>, key: &[&str]) -> Self {
        self.limits.push((
            rate.to_owned(),
            burst,
            key.iter().map(|k| (*k).to_owned()).collect(),
        ));
        self
    }

    /// Units each request costs (default 1).
    pub fn cost(mut self, cost: u32) -> Self {
        self.cost = cost;
        self
    }

    /// Whether admitted responses carry `RateLimit-Policy` and `RateLimit`
    /// (default true; refusals always do).
    pub fn headers(mut self, send: bool) -> Self {
        self.headers = send;
        self
    }

    /// Trusts `X-Forwarded-For`/`Forwarded` from this address or range.
    pub fn trusted_proxy(mut self, net: &str) -> Self {
        self.trusted_proxies.push(net.to_owned());
        self
    }

    /// Uses `clock` for quota windows and usage days (tests).
    pub fn clock(mut self, clock: WallClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the limits (as a config would be) and builds the layer.
    pub fn build(self) -> Result<RateLimitLayer, ConfigError> {
        let q = |s: &str| serde_json::Value::from(s).to_string();
        let limits = self
            .limits
            .iter()
            .map(|(rate, burst, key)| {
                let burst = burst.map(|b| format!(", burst = {b}")).unwrap_or_default();
                let key = key.iter().map(|k| q(k)).collect::<Vec<_>>().join(", ");
                format!("{{ rate = {}{burst}, key = [{key}] }}", q(rate))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let proxies = self
            .trusted_proxies
            .iter()
            .map(|p| q(p))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            "[mesh]\ntrusted_proxies = [{proxies}]\n\n[[routes]]\nid = \"limit\"\nrate_limit = {{ limits = [{limits}], cost = {}, plan = false, headers = {} }}\n",
            self.cost, self.headers
        );
        let snapshot = Arc::new(Snapshot::build(Config::from_toml(&text)?, 1)?);
        let layer = RateLimitLayer {
            shared: shared(
                Mode::Fixed {
                    snapshot: snapshot.clone(),
                },
                self.clock.unwrap_or_else(system_clock),
                Duration::from_secs(60),
            ),
        };
        layer.prepare(&snapshot);
        Ok(layer)
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        self.shared.start_eviction();
        RateLimit {
            inner,
            cache: self.shared.states.cache(),
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
    cache: StateCache<RateState>,
}

crate::macros::stage_service!(RateLimit);

/// Why a request was refused; the problem `detail` is only written then.
#[derive(Clone, Copy)]
enum Refusal {
    Rate(Rate),
    Plan(Rate),
    Quota(Rate),
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    StoreDown,
}

impl Refusal {
    fn detail(self) -> String {
        match self {
            Refusal::Rate(r) => format!("rate limit {r} exceeded"),
            Refusal::Plan(r) => format!("plan rate {r} exceeded"),
            Refusal::Quota(r) => format!("quota {r} exhausted"),
            Refusal::StoreDown => "the shared rate-limit store is unavailable".into(),
        }
    }
}

/// The `RateLimit-Policy` field lines that apply: the route's, the plan's.
type Policies = (Option<HeaderValue>, Option<HeaderValue>);

/// What the limits decided for one request.
enum Verdict {
    Allow {
        /// The most constrained limit: name, remaining, seconds to full.
        tightest: Option<(Arc<str>, u64, u64)>,
    },
    Deny {
        name: Arc<str>,
        retry_after: Duration,
        why: Refusal,
    },
}

fn key_hash<B>(
    hasher: &foldhash::fast::RandomState,
    parts: &[KeyPart],
    req: &Request<B>,
    route: &Route,
    consumer: Option<&str>,
    net: &Net,
) -> u64 {
    let mut h = hasher.build_hasher();
    for part in parts {
        match part {
            KeyPart::Consumer => (0u8, consumer.unwrap_or(ANONYMOUS)).hash(&mut h),
            KeyPart::ClientIp => {
                (1u8, client::client_ip(req, &net.trusted, net.forwarded)).hash(&mut h)
            }
            KeyPart::Route => (2u8, route.id()).hash(&mut h),
            KeyPart::ApiVersion => (3u8, route.api(), route.version()).hash(&mut h),
            KeyPart::Header(name) => {
                4u8.hash(&mut h);
                crate::fields::for_each(req.headers(), name, |v| v.as_bytes().hash(&mut h));
            }
            _ => 255u8.hash(&mut h),
        }
    }
    h.finish()
}

/// Tracks the most constrained policy for the `RateLimit` field.
#[derive(Default)]
struct Tightest(Option<(Arc<str>, u64, u64)>);

impl Tightest {
    fn consider(&mut self, name: &Arc<str>, remaining: u64, to_full: u64) {
        if self.0.as_ref().is_none_or(|t| remaining < t.1) {
            self.0 = Some((name.clone(), remaining, to_full));
        }
    }
}

fn gcra_allowed(limit: &Limit, remaining: u32) -> (u64, u64) {
    let used = limit.burst.saturating_sub(remaining);
    let to_full = (limit.rate.interval() * used).as_secs_f64().ceil() as u64;
    (u64::from(remaining), to_full)
}

/// The consumer's plan, if the route applies plans.
fn plan_of<'a>(
    state: &'a RateState,
    snapshot: &Snapshot,
    rl: &RouteLimits,
    consumer: Option<&str>,
) -> Option<&'a PlanLimits> {
    if !rl.plan {
        return None;
    }
    let plan = snapshot.consumer(consumer?)?.plan.as_ref()?;
    state.plans.get(plan)
}

/// The in-process path: every limit checked in place, no allocation unless
/// a header is written.
#[allow(clippy::too_many_arguments)]
fn decide_local<B>(
    shared: &Shared,
    state: &RateState,
    rl: &RouteLimits,
    plan: Option<&PlanLimits>,
    req: &Request<B>,
    route: &Route,
    consumer: Option<&str>,
    now: u64,
) -> Verdict {
    let mut tightest = Tightest::default();
    // The route's limits, then the plan's rates: the same GCRA step.
    let plan_rates = match (plan, consumer) {
        (Some(plan), Some(_)) => &plan.rates[..],
        _ => &[],
    };
    let limits = rl.limits.iter().map(|n| (n, false));
    for (n, of_plan) in limits.chain(plan_rates.iter().map(|n| (n, true))) {
        let key = key_hash(&shared.hasher, &n.key, req, route, consumer, &state.net);
        match n.limit.check(key, rl.cost) {
            Decision::Allow { remaining } => {
                let (r, t) = gcra_allowed(&n.limit, remaining);
                tightest.consider(&n.name, r, t);
            }
            Decision::Deny { retry_after } => {
                let why = if of_plan {
                    Refusal::Plan(n.limit.rate)
                } else {
                    Refusal::Rate(n.limit.rate)
                };
                return Verdict::Deny {
                    name: n.name.clone(),
                    retry_after,
                    why,
                };
            }
        }
    }
    if let (Some(plan), Some(consumer)) = (plan, consumer) {
        // Quotas last, so a request refused above does not use quota; and
        // one refused by a quota gives back what it took from the others.
        let cost = u64::from(rl.cost.get());
        for (i, (name, quota)) in plan.quotas.iter().enumerate() {
            let qkey = shared.hasher.hash_one((5u8, consumer, route.api(), i));
            match shared
                .quotas
                .take(qkey, quota.period, quota.amount, cost, now)
            {
                Ok(remaining) => {
                    let (_, end) = limiter::window(quota.period, now);
                    tightest.consider(name, remaining, end - now);
                }
                Err(reset) => {
                    for (j, (_, taken)) in plan.quotas.iter().enumerate().take(i) {
                        let qkey = shared.hasher.hash_one((5u8, consumer, route.api(), j));
                        shared.quotas.give_back(qkey, taken.period, cost, now);
                    }
                    return Verdict::Deny {
                        name: name.clone(),
                        retry_after: Duration::from_secs(reset),
                        why: Refusal::Quota(*quota),
                    };
                }
            }
        }
    }
    Verdict::Allow {
        tightest: tightest.0,
    }
}

/// A limit to check in Redis: its shared key and its local fallback key.
#[cfg(feature = "redis")]
struct ClusterCheck {
    limit: Arc<NamedLimit>,
    shared_key: String,
    local_key: u64,
    plan: bool,
}

/// A quota to count in Redis.
#[cfg(feature = "redis")]
struct ClusterQuota {
    name: Arc<str>,
    quota: Rate,
    shared_key: String,
    local_key: u64,
    /// The local fallback's share of the quota.
    local_limit: u64,
}

/// A stable key for Redis: the same on every instance (unlike the
/// per-process seeded hash used locally).
#[cfg(feature = "redis")]
fn cluster_key(prefix: &str, material: &[u8]) -> String {
    let digest = crate::auth::sha256(material);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("apimesh:{prefix}:{hex}")
}

/// The key parts as bytes, for a key that must be equal on every instance.
#[cfg(feature = "redis")]
fn key_material<B>(
    parts: &[KeyPart],
    req: &Request<B>,
    route: &Route,
    consumer: Option<&str>,
    net: &Net,
) -> String {
    let mut out = String::new();
    for part in parts {
        match part {
            KeyPart::Consumer => out.push_str(consumer.unwrap_or(ANONYMOUS)),
            KeyPart::ClientIp => out.push_str(
                &client::client_ip(req, &net.trusted, net.forwarded)
                    .map_or_else(String::new, |ip| ip.to_string()),
            ),
            KeyPart::Route => out.push_str(route.id()),
            KeyPart::ApiVersion => {
                out.push_str(route.api().unwrap_or(""));
                out.push('/');
                out.push_str(route.version().unwrap_or(""));
            }
            KeyPart::Header(name) => crate::fields::for_each(req.headers(), name, |v| {
                out.push_str(&String::from_utf8_lossy(v.as_bytes()));
                out.push(',');
            }),
            _ => {}
        }
        out.push('\u{1f}');
    }
    out
}

/// Everything a cluster route must check, computed from the request up
/// front so that the remote evaluation needs no borrow of it.
#[cfg(feature = "redis")]
#[allow(clippy::too_many_arguments)]
fn cluster_checks<B>(
    shared: &Shared,
    state: &RateState,
    rl: &RouteLimits,
    plan: Option<&PlanLimits>,
    req: &Request<B>,
    route: &Route,
    consumer: Option<&str>,
    now: u64,
) -> (Vec<ClusterCheck>, Vec<ClusterQuota>) {
    let mut gcra = Vec::new();
    let mut quotas = Vec::new();
    for n in &rl.limits {
        let material = key_material(&n.key, req, route, consumer, &state.net);
        gcra.push(ClusterCheck {
            limit: n.clone(),
            shared_key: cluster_key(&format!("rl:{}", n.identity), material.as_bytes()),
            local_key: key_hash(&shared.hasher, &n.key, req, route, consumer, &state.net),
            plan: false,
        });
    }
    if let (Some(plan), Some(consumer)) = (plan, consumer) {
        for n in &plan.rates {
            let material = key_material(&n.key, req, route, Some(consumer), &state.net);
            gcra.push(ClusterCheck {
                limit: n.clone(),
                shared_key: cluster_key(&format!("rl:{}", n.identity), material.as_bytes()),
                local_key: key_hash(
                    &shared.hasher,
                    &n.key,
                    req,
                    route,
                    Some(consumer),
                    &state.net,
                ),
                plan: true,
            });
        }
        for (i, (name, quota)) in plan.quotas.iter().enumerate() {
            let qkey = shared.hasher.hash_one((5u8, consumer, route.api(), i));
            let (start, _) = limiter::window(quota.period, now);
            let material = format!("{consumer}|{}|{start}", route.api().unwrap_or(""));
            quotas.push(ClusterQuota {
                name: name.clone(),
                quota: *quota,
                shared_key: cluster_key(&format!("q:{name}"), material.as_bytes()),
                local_key: qkey,
                local_limit: quota.amount.div_ceil(state.replicas.max(1)),
            });
        }
    }
    (gcra, quotas)
}

/// Evaluates a cluster route in Redis; each check that Redis cannot answer
/// in time falls back as the route's `on_store_failure` says.
#[cfg(feature = "redis")]
#[allow(clippy::too_many_arguments)]
async fn decide_cluster(
    shared: Arc<Shared>,
    store: Arc<redis::RedisStore>,
    gcra: Vec<ClusterCheck>,
    quotas: Vec<ClusterQuota>,
    cost: NonZeroU32,
    mode: mesh_core::policy::StoreFailureMode,
    timeout: Duration,
    now: u64,
) -> Verdict {
    use mesh_core::policy::StoreFailureMode;
    let mut tightest = Tightest::default();
    let down = |name: &Arc<str>| Verdict::Deny {
        name: name.clone(),
        retry_after: Duration::from_secs(1),
        why: Refusal::StoreDown,
    };
    for c in &gcra {
        let n = &c.limit;
        let decision = match store
            .gcra(
                &c.shared_key,
                n.limit.rate.interval(),
                n.limit.burst,
                cost.get(),
                timeout,
            )
            .await
        {
            Some(d) => Some((d, &n.limit)),
            None => match mode {
                StoreFailureMode::FailOpen => None,
                StoreFailureMode::FailClosed => return down(&n.name),
                _ => Some((n.fallback.check(c.local_key, cost), &n.fallback)),
            },
        };
        match decision {
            None => {}
            Some((Decision::Allow { remaining }, limit)) => {
                let (r, t) = gcra_allowed(limit, remaining);
                tightest.consider(&n.name, r, t);
            }
            Some((Decision::Deny { retry_after }, _)) => {
                let why = if c.plan {
                    Refusal::Plan(n.limit.rate)
                } else {
                    Refusal::Rate(n.limit.rate)
                };
                return Verdict::Deny {
                    name: n.name.clone(),
                    retry_after,
                    why,
                };
            }
        }
    }
    // A request refused by a quota gives back what it took from the others.
    let cost = u64::from(cost.get());
    let mut taken: Vec<(&ClusterQuota, bool)> = Vec::new();
    for q in &quotas {
        let (_, end) = limiter::window(q.quota.period, now);
        let result = match store
            .quota(&q.shared_key, q.quota.amount, cost, end, timeout)
            .await
        {
            Some(r) => Some((r.map_err(|()| end - now), true)),
            None => match mode {
                StoreFailureMode::FailOpen => None,
                StoreFailureMode::FailClosed => return down(&q.name),
                _ => Some((
                    shared
                        .quotas
                        .take(q.local_key, q.quota.period, q.local_limit, cost, now),
                    false,
                )),
            },
        };
        match result {
            None => {}
            Some((Ok(remaining), in_redis)) => {
                taken.push((q, in_redis));
                tightest.consider(&q.name, remaining, end - now);
            }
            Some((Err(reset), _)) => {
                for (t, in_redis) in taken {
                    if in_redis {
                        store.give_back(&t.shared_key, cost, timeout).await;
                    } else {
                        shared
                            .quotas
                            .give_back(t.local_key, t.quota.period, cost, now);
                    }
                }
                return Verdict::Deny {
                    name: q.name.clone(),
                    retry_after: Duration::from_secs(reset),
                    why: Refusal::Quota(q.quota),
                };
            }
        }
    }
    Verdict::Allow {
        tightest: tightest.0,
    }
}

fn header(v: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(v).ok()
}

fn put_policies(h: &mut http::HeaderMap, policies: &Policies) {
    for p in [&policies.0, &policies.1].into_iter().flatten() {
        h.append(RATELIMIT_POLICY, p.clone());
    }
}

/// The 429 for a refused request, with the rate-limit fields.
fn refused(
    policies: &Policies,
    name: &str,
    retry_after: Duration,
    why: Refusal,
    grpc: bool,
) -> Response<bytes::Bytes> {
    let mut res = MeshError::RateLimited {
        retry_after,
        detail: why.detail(),
    }
    .to_response(grpc);
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    put_policies(res.headers_mut(), policies);
    if let Some(r) = header(&format!("\"{name}\";r=0;t={secs}")) {
        res.headers_mut().insert(RATELIMIT, r);
    }
    res
}

/// The `RateLimit` field for an admitted request: `"name";r=R;t=T`,
/// written without the formatting machinery (it is on every response).
fn admitted(tightest: Option<(Arc<str>, u64, u64)>) -> Option<HeaderValue> {
    let (name, r, t) = tightest?;
    let mut out = Vec::with_capacity(name.len() + 32);
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\";r=");
    out.extend_from_slice(itoa::Buffer::new().format(r).as_bytes());
    out.extend_from_slice(b";t=");
    out.extend_from_slice(itoa::Buffer::new().format(t).as_bytes());
    HeaderValue::from_maybe_shared(bytes::Bytes::from(out)).ok()
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<MeshBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (snapshot, route) = match &self.shared.mode {
            // A standalone layer has one catch-all route.
            Mode::Fixed { snapshot } => match snapshot.routes().first() {
                Some(r) => (snapshot, &**r),
                None => return ResponseFuture::inner(self.inner.call(req), None),
            },
            Mode::Routes => match req.extensions().get::<MatchedRoute>() {
                Some(m) => (m.snapshot(), m.route()),
                None => return ResponseFuture::inner(self.inner.call(req), None),
            },
        };
        let shared = &self.shared;
        let state_ref = shared
            .states
            .for_snapshot(self.cache.load(), snapshot, |s| shared.build(s));
        let state: &RateState = &state_ref;
        let consumer = req
            .extensions()
            .get::<Principal>()
            .and_then(|p| p.consumer.as_deref());
        let rl = state.routes.get(route.index()).and_then(Option::as_ref);
        if rl.is_none() && route.api().is_none() {
            return ResponseFuture::inner(self.inner.call(req), None);
        }
        // The wall clock is read only when quotas or usage need it.
        let needs_clock =
            route.api().is_some() || rl.is_some_and(|rl| rl.plan && consumer.is_some());
        let now = if needs_clock {
            (self.shared.clock)()
        } else {
            0
        };
        let usage = route.api_arc().map(|api| {
            (
                consumer.map_or_else(|| Arc::from(ANONYMOUS), Arc::from),
                api.clone(),
                route.version_arc().cloned(),
            )
        });
        let Some(rl) = rl else {
            if let Some((who, api, version)) = &usage {
                self.shared
                    .usage
                    .record(who, api, version.as_ref(), now, false);
            }
            return ResponseFuture::inner(self.inner.call(req), None);
        };
        let plan = plan_of(state, snapshot, rl, consumer);
        let policies: Policies = (rl.policy.clone(), plan.and_then(|p| p.policy.clone()));

        #[cfg(feature = "redis")]
        if rl.cluster
            && let Some(store) = self.shared.store.clone()
        {
            let (gcra, quotas) =
                cluster_checks(&self.shared, state, rl, plan, &req, route, consumer, now);
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            let shared = self.shared.clone();
            let (cost, mode, timeout) = (rl.cost, rl.on_failure, rl.store_timeout);
            let (allowed, limited) = (rl.allowed.clone(), rl.limited.clone());
            let send_headers = rl.headers;
            let grpc = is_grpc(req.headers());
            return ResponseFuture::boxed(Box::pin(async move {
                let verdict = decide_cluster(
                    shared.clone(),
                    store.clone(),
                    gcra,
                    quotas,
                    cost,
                    mode,
                    timeout,
                    now,
                )
                .await;
                if let Some((who, api, version)) = &usage {
                    // Cluster routes are metered in Redis, so the report
                    // covers every instance.
                    let refused = matches!(verdict, Verdict::Deny { .. });
                    let field =
                        format!("{who}\u{1f}{api}\u{1f}{}", version.as_deref().unwrap_or(""));
                    store
                        .record_usage(field, now / 86_400, now, refused, timeout)
                        .await;
                }
                match verdict {
                    Verdict::Allow { tightest } => {
                        allowed.increment(1);
                        let mut res = inner.call(req).await?;
                        if send_headers {
                            crate::future::AddHeaders::add_to(
                                LimitHeaders {
                                    policies,
                                    limit: admitted(tightest),
                                },
                                res.headers_mut(),
                            );
                        }
                        Ok(res.map(MeshBody::inner))
                    }
                    Verdict::Deny {
                        name,
                        retry_after,
                        why,
                    } => {
                        limited.increment(1);
                        Ok(refused(&policies, &name, retry_after, why, grpc).map(MeshBody::full))
                    }
                }
            }));
        }

        let verdict = decide_local(&self.shared, state, rl, plan, &req, route, consumer, now);
        if let Some((who, api, version)) = &usage {
            let refused = matches!(verdict, Verdict::Deny { .. });
            self.shared
                .usage
                .record(who, api, version.as_ref(), now, refused);
        }
        match verdict {
            Verdict::Allow { tightest } => {
                rl.allowed.increment(1);
                let headers = rl.headers.then(|| LimitHeaders {
                    policies,
                    limit: admitted(tightest),
                });
                ResponseFuture::inner(self.inner.call(req), headers)
            }
            Verdict::Deny {
                name,
                retry_after,
                why,
            } => {
                rl.limited.increment(1);
                let grpc = is_grpc(req.headers());
                ResponseFuture::ready(refused(&policies, &name, retry_after, why, grpc))
            }
        }
    }
}

/// The rate-limit fields of an admitted response.
pub struct LimitHeaders {
    policies: Policies,
    limit: Option<HeaderValue>,
}

impl crate::future::AddHeaders for LimitHeaders {
    fn add_to(self, headers: &mut http::HeaderMap) {
        put_policies(headers, &self.policies);
        if let Some(limit) = self.limit {
            headers.insert(RATELIMIT, limit);
        }
    }
}

/// Response future of [`RateLimit`].
pub type ResponseFuture<F, B, E> = crate::future::StageFuture<F, B, E, LimitHeaders>;
