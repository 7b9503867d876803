//! Compiled, typed policies: what a route's policy blocks become once a
//! snapshot is built. Durations are `Duration`s, rates are [`Rate`]s and
//! names are resolved, so the request path never parses anything.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::error::GrpcCode;
use crate::units::Rate;

/// The policies attached to one route.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RoutePolicy {
    /// Authentication and authorization.
    pub auth: Option<AuthRequirement>,
    /// Rate limits.
    pub rate_limit: Option<RateLimitPolicy>,
    /// Retries.
    pub retry: Option<RetryPolicy>,
    /// Timeouts.
    pub timeout: Option<TimeoutPolicy>,
    /// Circuit breaking.
    pub circuit_breaker: Option<CircuitBreakerPolicy>,
    /// Fault injection.
    pub fault: Option<FaultPolicy>,
}

/// A credential kind a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthMethod {
    /// A JWT bearer token from a configured issuer.
    Jwt,
    /// An API key of a configured consumer.
    ApiKey,
}

/// What a route requires of the caller.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AuthRequirement {
    /// Accepted methods (any of them); empty means anonymous access.
    pub methods: Vec<AuthMethod>,
    /// Scopes that must all be present.
    pub scopes: Vec<String>,
    /// Claims that must have these exact values.
    pub claims: Vec<(String, String)>,
    /// Audience override.
    pub audience: Option<String>,
    /// Allowed issuers; empty means every configured issuer.
    pub issuers: Vec<String>,
}

impl AuthRequirement {
    /// A requirement built in code (standalone layers); routes get theirs
    /// from the config.
    pub fn new(
        methods: Vec<AuthMethod>,
        scopes: Vec<String>,
        claims: Vec<(String, String)>,
        audience: Option<String>,
        issuers: Vec<String>,
    ) -> AuthRequirement {
        AuthRequirement {
            methods,
            scopes,
            claims,
            audience,
            issuers,
        }
    }
}

/// What a limit is counted by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyPart {
    /// The authenticated consumer.
    Consumer,
    /// The client IP (socket peer, or forwarded from a trusted proxy).
    ClientIp,
    /// The matched route.
    Route,
    /// The resolved API version.
    ApiVersion,
    /// A request header's value.
    Header(http::HeaderName),
}

impl KeyPart {
    /// Parses `consumer`, `ip`, `route`, `api_version` or `header:<name>`.
    pub fn parse(s: &str) -> Option<KeyPart> {
        match s {
            "consumer" => Some(KeyPart::Consumer),
            "ip" => Some(KeyPart::ClientIp),
            "route" => Some(KeyPart::Route),
            "api_version" => Some(KeyPart::ApiVersion),
            other => other
                .strip_prefix("header:")
                .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
                .map(KeyPart::Header),
        }
    }
}

/// One GCRA limit.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Limit {
    /// Steady rate.
    pub rate: Rate,
    /// Burst size.
    pub burst: u32,
    /// Key parts.
    pub key: Vec<KeyPart>,
}

/// What happens when the shared limit store fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreFailureMode {
    /// Admit everything.
    FailOpen,
    /// Reject everything with 429.
    FailClosed,
    /// Fall back to a local limiter at limit ÷ live replicas.
    #[default]
    Local,
}

/// A route's rate limits.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RateLimitPolicy {
    /// Limits that all apply.
    pub limits: Vec<Limit>,
    /// Units per request.
    pub cost: u32,
    /// Apply the consumer's plan too.
    pub plan: bool,
    /// Count in the shared store.
    pub cluster: bool,
    /// Shared-store failure mode.
    pub on_store_failure: StoreFailureMode,
    /// Shared-store timeout.
    pub store_timeout: Duration,
    /// Whether admitted responses carry the rate-limit fields.
    pub headers: bool,
}

/// Retries.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all.
    pub attempts: u32,
    /// Retried statuses.
    pub statuses: Vec<StatusCode>,
    /// Retried gRPC codes.
    pub grpc_codes: Vec<GrpcCode>,
    /// Retried methods.
    pub methods: Vec<Method>,
    /// First backoff.
    pub backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
    /// Budget: retries as a share of requests.
    pub budget_ratio: f64,
    /// Budget: retries always allowed per second.
    pub budget_min_per_second: u32,
    /// Largest replayable body.
    pub replay_limit: u64,
    /// Hedge delay.
    pub hedge_after: Option<Duration>,
}

impl Default for RetryPolicy {
    /// The defaults of `retry = {}`: 3 attempts; 502, 503, 504 and
    /// `UNAVAILABLE`; the idempotent methods; 25 ms backoff up to 1 s; a
    /// budget of 20% plus 10 per second; 64 KiB replay; no hedging.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            statuses: vec![
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::GATEWAY_TIMEOUT,
            ],
            grpc_codes: vec![GrpcCode::Unavailable],
            methods: vec![
                Method::GET,
                Method::HEAD,
                Method::OPTIONS,
                Method::PUT,
                Method::DELETE,
            ],
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
            budget_ratio: 0.2,
            budget_min_per_second: 10,
            replay_limit: 64 * 1024,
            hedge_after: None,
        }
    }
}

/// Timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimeoutPolicy {
    /// Whole request.
    pub total: Option<Duration>,
    /// Each attempt.
    pub per_try: Option<Duration>,
}

/// How a breaker decides to open.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum BreakerMode {
    /// After this many consecutive failures.
    Consecutive(u32),
    /// When the failure share over the last `window` of time reaches
    /// `rate` (0–1), once at least `min_calls` were seen in it.
    RateOverTime {
        /// Failure share, 0–1.
        rate: f64,
        /// The time window.
        window: Duration,
        /// Calls needed first.
        min_calls: u32,
    },
    /// When the failure share over the last `window` calls reaches `rate` (0–1),
    /// once at least `min_calls` were seen.
    Rate {
        /// Failure share, 0–1.
        rate: f64,
        /// Calls in the window.
        window: u32,
        /// Calls needed first.
        min_calls: u32,
    },
}

/// Circuit breaking.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CircuitBreakerPolicy {
    /// The mode.
    pub mode: BreakerMode,
    /// First open duration.
    pub open: Duration,
    /// Longest open duration.
    pub max_open: Duration,
    /// Half-open probes.
    pub half_open_probes: u32,
    /// Slow-call threshold.
    pub slow_call: Option<Duration>,
    /// Statuses that count as failures; empty means every 5xx.
    pub failure_statuses: Vec<StatusCode>,
}

impl CircuitBreakerPolicy {
    /// Whether a response status counts as a failure.
    pub fn is_failure(&self, status: StatusCode) -> bool {
        if self.failure_statuses.is_empty() {
            status.is_server_error()
        } else {
            self.failure_statuses.contains(&status)
        }
    }
}

impl Default for CircuitBreakerPolicy {
    fn default() -> Self {
        CircuitBreakerPolicy {
            mode: BreakerMode::Consecutive(5),
            open: Duration::from_secs(5),
            max_open: Duration::from_secs(60),
            half_open_probes: 1,
            slow_call: None,
            failure_statuses: Vec::new(),
        }
    }
}

/// Fault injection.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FaultPolicy {
    /// Delay and its share (0–1).
    pub delay: Option<(Duration, f64)>,
    /// Abort: status, gRPC code and share (0–1).
    pub abort: Option<(StatusCode, GrpcCode, f64)>,
    /// Only requests with this header (and value, if given).
    pub only_with_header: Option<(http::HeaderName, Option<String>)>,
}

/// How a weighted split keeps one user on one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sticky {
    /// The authenticated consumer's id.
    Consumer,
    /// A request header's value.
    Header(http::HeaderName),
    /// A cookie's value.
    Cookie(Arc<str>),
}

/// A compiled weighted split: stickiness and a tester's override.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Split {
    /// What keeps one user on one destination.
    pub sticky: Option<Sticky>,
    /// The header whose value forces a destination.
    pub override_header: Option<http::HeaderName>,
    /// Override header value → destination index.
    pub overrides: Vec<(Box<str>, usize)>,
}

/// Compiled traffic mirroring.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Mirror {
    /// The shadow service.
    pub service: Arc<str>,
    /// Share of requests copied, in parts per million.
    pub per_million: u32,
    /// Copies in flight at most.
    pub max_in_flight: u32,
}

/// The compiled `[mesh.propagation]` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Propagation {
    /// Carries the calling service's name.
    pub caller: Option<http::HeaderName>,
    /// Carries the authenticated consumer's id.
    pub consumer: Option<http::HeaderName>,
    /// Carries the remaining deadline in milliseconds (HTTP calls).
    pub deadline: Option<http::HeaderName>,
}

impl Default for Propagation {
    fn default() -> Self {
        Propagation {
            caller: Some(http::HeaderName::from_static("x-apimesh-caller")),
            consumer: None,
            deadline: Some(http::HeaderName::from_static("x-apimesh-timeout-ms")),
        }
    }
}

/// Per-endpoint outlier ejection of a service (`services.outlier`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct OutlierPolicy {
    /// Consecutive failures that eject an endpoint.
    pub consecutive_failures: u32,
    /// First ejection time; the n-th ejection in a row lasts n times this.
    pub base_ejection: Duration,
    /// Largest share (0–1) of the service's endpoints ejected at once;
    /// one endpoint may always be ejected.
    pub max_ejection: f64,
    /// Failure share (0–1) of an endpoint's requests in one `interval`
    /// that ejects it; `None`: only consecutive failures eject.
    pub failure_rate: Option<f64>,
    /// Requests in the `interval` before `failure_rate` applies.
    pub min_requests: u32,
    /// The window `failure_rate` is counted over.
    pub interval: Duration,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        OutlierPolicy {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: 0.5,
            failure_rate: None,
            min_requests: 20,
            interval: Duration::from_secs(10),
        }
    }
}

/// The compiled `[gateway]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GatewayPolicy {
    /// Largest request body in bytes.
    pub max_body: u64,
    /// Largest request head in bytes (read when the gateway starts).
    pub max_header_size: u64,
    /// Keep `%2F` / `%5C` encoded instead of refusing them.
    pub keep_encoded_slashes: bool,
    /// Allow `;` in paths instead of refusing it.
    pub allow_semicolons: bool,
}

impl Default for GatewayPolicy {
    fn default() -> Self {
        GatewayPolicy {
            max_body: 10 * 1024 * 1024,
            max_header_size: 64 * 1024,
            keep_encoded_slashes: false,
            allow_semicolons: false,
        }
    }
}
