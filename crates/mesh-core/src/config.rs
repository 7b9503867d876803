//! The config file format: what an operator writes.
//!
//! These types mirror the TOML file (and the JSON objects stored in etcd)
//! one to one. Values with human units stay strings here so that the file
//! round-trips exactly; [`Snapshot::build`](crate::Snapshot::build) parses
//! and validates them, reporting every problem at once with its field path.
//! Unknown fields are errors.
//!
//! The reference for every field is `docs/configuration.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The whole desired state of a mesh: the catalog, services, plans,
/// consumers, routes and mesh-wide authentication settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The API catalog.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apis: Vec<ApiSpec>,
    /// Services and their endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceSpec>,
    /// Plans: the rates and quotas a consumer buys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<PlanSpec>,
    /// Consumers (partners, apps) and their credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerSpec>,
    /// Routes, tried in order of specificity (see `docs/configuration.md`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteSpec>,
    /// Mesh-wide authentication settings: token issuers and API-key lookup.
    #[serde(default, skip_serializing_if = "AuthSettings::is_default")]
    pub auth: AuthSettings,
    /// Mesh-wide settings: trusted proxies.
    #[serde(default, skip_serializing_if = "MeshSettings::is_default")]
    pub mesh: MeshSettings,
    /// Telemetry settings: labels and the access log.
    #[serde(default, skip_serializing_if = "ObservabilitySettings::is_default")]
    pub observability: ObservabilitySettings,
    /// Edge-gateway settings: request limits and path normalisation.
    #[serde(default, skip_serializing_if = "GatewaySettings::is_default")]
    pub gateway: GatewaySettings,
}

/// Telemetry settings (`[observability]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ObservabilitySettings {
    /// Label request metrics with `apimesh.consumer` (default false). The
    /// values are bounded by the consumers of the registry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub consumer_label: bool,
    /// Share of requests (0–1) that get an access-log event (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_sample: Option<f64>,
}

impl ObservabilitySettings {
    fn is_default(&self) -> bool {
        self == &ObservabilitySettings::default()
    }
}

/// Settings of the edge gateway (`examples/gateway.rs`, `Mesh::gateway`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GatewaySettings {
    /// Largest request body (default `10MiB`); larger → 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body: Option<String>,
    /// Largest request head, request line and headers (default `64KiB`);
    /// larger → 431. Read when the gateway starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_size: Option<String>,
    /// `%2F` and `%5C` in paths: `reject` (default, 400) or `keep`
    /// (left encoded, never treated as a separator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoded_slashes: Option<String>,
    /// `;` in paths: `reject` (default, 400) or `allow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semicolons: Option<String>,
}

impl GatewaySettings {
    fn is_default(&self) -> bool {
        self == &GatewaySettings::default()
    }
}

/// Mesh-wide settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MeshSettings {
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` and
    /// `Forwarded` headers are believed when finding the client address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// The one header the trusted proxies write: `x-forwarded-for`
    /// (default) or `forwarded`. The other is ignored, so a client cannot
    /// pass its own through a proxy that does not overwrite it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_header: Option<String>,
    /// How much costlier (peak-EWMA latency × load) the best endpoint in
    /// the caller's zone may be than the best one further away before
    /// traffic spills over (default 2.0; at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_spill: Option<f64>,
    /// The headers that carry context on outbound calls.
    #[serde(default, skip_serializing_if = "PropagationSpec::is_default")]
    pub propagation: PropagationSpec,
}

/// The headers the mesh client writes on every outbound call (and the
/// inbound layer reads). An empty string turns a header off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PropagationSpec {
    /// Carries the calling service's name (default `x-apimesh-caller`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_header: Option<String>,
    /// Carries the authenticated consumer's id (off unless named, e.g.
    /// `x-apimesh-consumer`; only trust it from peers inside the mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_header: Option<String>,
    /// Carries the remaining deadline in milliseconds on HTTP calls
    /// (default `x-apimesh-timeout-ms`; gRPC calls use `grpc-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_header: Option<String>,
}

impl PropagationSpec {
    fn is_default(&self) -> bool {
        self == &PropagationSpec::default()
    }
}

impl MeshSettings {
    fn is_default(&self) -> bool {
        self == &MeshSettings::default()
    }
}

impl Config {
    /// Parses a TOML document. Syntax and type errors name the field path
    /// and line; semantic checks happen in [`Snapshot::build`](crate::Snapshot::build).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::syntax(text, &e))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::syntax_at(text, path, e.inner())
        })
    }

    /// Parses a JSON document.
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let inner = e.inner();
            let full = inner.to_string();
            // serde_json appends the position; it is reported as `line` instead.
            let suffix = format!(" at line {} column {}", inner.line(), inner.column());
            ConfigError::Syntax {
                path: e.path().to_string(),
                message: full.strip_suffix(&suffix).unwrap_or(&full).to_owned(),
                line: Some(inner.line()),
            }
        })
    }

    /// A copy with every secret (HMAC key material, API-key digests)
    /// replaced by `"[redacted]"`, for display.
    pub fn redacted(&self) -> Config {
        const R: &str = "[redacted]";
        let mut c = self.clone();
        for consumer in &mut c.consumers {
            for k in &mut consumer.api_keys {
                *k = R.to_owned();
            }
        }
        for issuer in &mut c.auth.issuers {
            for key in &mut issuer.keys {
                if key.secret.is_some() {
                    key.secret = Some(R.to_owned());
                }
                if let Some(jwk) = key.jwk.as_mut().and_then(|j| j.as_object_mut()) {
                    // Private or symmetric members of a JWK (`oth` holds
                    // the private values of further RSA primes).
                    for member in ["k", "d", "p", "q", "dp", "dq", "qi", "oth"] {
                        if jwk.contains_key(member) {
                            jwk.insert(member.to_owned(), R.into());
                        }
                    }
                }
            }
        }
        c
    }
}

/// An API in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ApiSpec {
    /// Unique name, e.g. `orders`.
    pub name: String,
    /// The owning team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// What the API is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A link to the API's documentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs: Option<String>,
    /// How a request names the version it wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioning: Option<VersioningSpec>,
    /// The versions and their lifecycle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionSpec>,
}

/// How the version of a request is resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VersioningSpec {
    /// Styles in order of precedence: `path`, `header`, `media_type`, `query`.
    #[serde(default = "default_version_styles")]
    pub styles: Vec<String>,
    /// Header for the `header` style.
    #[serde(default = "default_version_header")]
    pub header: String,
    /// Query parameter for the `query` style.
    #[serde(default = "default_version_query")]
    pub query: String,
    /// Whether the `/v2` path prefix is removed before the service sees the request.
    #[serde(default)]
    pub strip_prefix: bool,
    /// The version used when a request names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

fn default_version_styles() -> Vec<String> {
    vec!["path".into(), "header".into()]
}
fn default_version_header() -> String {
    "Api-Version".into()
}
fn default_version_query() -> String {
    "version".into()
}

/// One version of an API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VersionSpec {
    /// The version's name, e.g. `v2`.
    pub version: String,
    /// `preview`, `active` (default), `deprecated` or `retired`.
    #[serde(default)]
    pub status: Lifecycle,
    /// When the version was (or will be) deprecated, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_at: Option<String>,
    /// When the version stops answering, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunset: Option<String>,
    /// The version that replaces this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
    /// A link to the deprecation notice (`Link: rel="deprecation"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation_link: Option<String>,
    /// A link to the successor version (`Link: rel="successor-version"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor_link: Option<String>,
    /// Windows before the sunset in which the version answers 410.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brownouts: Vec<BrownoutSpec>,
    /// In the edge gateway, where requests resolved to this version go when
    /// their route has no `destinations` of its own (a service name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The OpenAPI document for this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openapi: Option<OpenApiSpec>,
}

/// The lifecycle stage of an API version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Lifecycle {
    /// Available for early adopters; may change.
    Preview,
    /// The normal state.
    #[default]
    Active,
    /// Still served, with `Deprecation`/`Sunset` headers.
    Deprecated,
    /// No longer served: 410 Gone.
    Retired,
}

/// A scheduled brown-out window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BrownoutSpec {
    /// Start, RFC 3339.
    pub start: String,
    /// End, RFC 3339.
    pub end: String,
}

/// Where an OpenAPI document comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum OpenApiSpec {
    /// A file path, relative to the working directory; read by the catalog when served.
    File(String),
    /// The document itself.
    Inline(String),
}

/// A service and its endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServiceSpec {
    /// Unique name, e.g. `inventory`.
    pub name: String,
    /// `http1` (default) or `h2c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Concurrent requests allowed to this service (bulkhead); none means unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Per-endpoint outlier ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierSpec>,
    /// The endpoints (instances).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointSpec>,
}

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EndpointSpec {
    /// Unique within the service; defaults to the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `host:port`.
    pub address: String,
    /// Region, e.g. `eu-west`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Zone, e.g. `eu-west-1a`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Relative weight (default 1); 0 drains the endpoint (no new requests).
    #[serde(default = "one")]
    pub weight: u32,
    /// Priority group: 0 is primary, higher numbers are used on failover.
    #[serde(default)]
    pub priority: u32,
    /// Free-form labels, e.g. `version = "v2"`, used by subsets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// Outlier ejection for a service's endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OutlierSpec {
    /// Consecutive failures that eject an endpoint (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// First ejection time, doubled for repeat ejections (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection: Option<String>,
    /// Largest share of endpoints ejected at once, percent (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<f64>,
    /// Eject an endpoint whose failures reach this percentage of its
    /// requests within one `interval` (off when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_percent: Option<f64>,
    /// Requests an endpoint must have had in the `interval` before
    /// `failure_percent` applies (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
    /// The window `failure_percent` is counted over (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

/// A plan: the rates and quotas a consumer gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PlanSpec {
    /// Unique name, e.g. `gold`.
    pub name: String,
    /// What the plan offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Short-term rate limits per consumer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rates: Vec<LimitSpec>,
    /// Long-term quotas per consumer and API, e.g. `1000000/month`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<String>,
}

/// A consumer of APIs: a partner, an app, a team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ConsumerSpec {
    /// Unique id.
    pub id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The plan, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// SHA-256 digests of the consumer's API keys: `sha256:<64 hex digits>`.
    /// Plain keys are never stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// Mesh-wide authentication settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthSettings {
    /// Trusted token issuers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<IssuerSpec>,
    /// Clock skew allowed on `exp`/`nbf` (default `60s`, at most `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<String>,
    /// Largest token accepted, checked before decoding (default `8KiB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_token_size: Option<String>,
    /// The claim whose value is a consumer id (e.g. `azp` or `client_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_claim: Option<String>,
    /// The realm in `WWW-Authenticate` (default `apimesh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// Header carrying an API key (default `x-api-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_header: Option<String>,
    /// Query parameter carrying an API key; off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_query: Option<String>,
}

impl AuthSettings {
    fn is_default(&self) -> bool {
        self == &AuthSettings::default()
    }
}

/// A trusted token issuer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct IssuerSpec {
    /// The exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values; a route may narrow them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Allowed algorithms, e.g. `["RS256"]`. `none` is never allowed.
    pub algorithms: Vec<String>,
    /// Where to fetch the key set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Find `jwks_uri` by OIDC discovery at `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    /// Static keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeySpec>,
    /// Required `typ` header, e.g. `at+jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Background JWKS refresh interval (default `5m`; `Cache-Control` may shorten it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
    /// Least time between refetches caused by unknown `kid`s (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_kid_interval: Option<String>,
    /// How long keys keep verifying while the JWKS cannot be fetched (default `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stale: Option<String>,
}

/// A static verification key. Give exactly one of `pem`, `pem_file`,
/// `jwk` or `secret`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeySpec {
    /// The `kid` this key answers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The one algorithm this key verifies.
    pub algorithm: String,
    /// A PEM public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
    /// A path to a PEM public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem_file: Option<String>,
    /// A JWK (RFC 7517) object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<serde_json::Value>,
    /// An HMAC secret (HS256/384/512 only). Redacted in every display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A route: which requests it matches, what serves them, and the policies on the way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RouteSpec {
    /// Unique id.
    pub id: String,
    /// The API this route serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// The API version this route serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What the request must look like.
    #[serde(default, rename = "match")]
    pub matches: MatchSpec,
    /// Where requests go (gateway and client mode); empty means the local service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<DestinationSpec>,
    /// Sticky cohorts and override headers for weighted splits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitSpec>,
    /// Traffic mirroring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorSpec>,
    /// Authentication and authorization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RouteAuthSpec>,
    /// Rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeoutSpec>,
    /// Circuit breaking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    /// Fault injection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultSpec>,
    /// Free-form labels, visible to handlers through the matched route.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// The request conditions of a route. Every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MatchSpec {
    /// Host names (`api.example.com`, or `*.example.com`); empty matches any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Exact path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Path prefix on segment boundaries (`/orders` matches `/orders/1`, not `/ordersx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Path template: `/orders/{id}`, with an optional final `{*rest}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_template: Option<String>,
    /// Methods; empty matches any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatchSpec>,
    /// Query-parameter conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<QueryMatchSpec>,
}

/// A header condition: `value` (exact), `prefix`, or `present`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HeaderMatchSpec {
    /// Header name (case-insensitive).
    pub name: String,
    /// The exact value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A prefix of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// `true`: the header must be there; `false`: it must not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// A query-parameter condition: `value` (exact) or `present`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct QueryMatchSpec {
    /// Parameter name (case-sensitive, compared before percent-decoding).
    pub name: String,
    /// The exact raw value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `true`: the parameter must be there; `false`: it must not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// A weighted destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DestinationSpec {
    /// The service, by name.
    pub service: String,
    /// Relative weight (default 100); 0 sends nothing here, but the
    /// weights of a route must not all be 0.
    #[serde(default = "hundred")]
    pub weight: u32,
    /// Only endpoints whose metadata has all these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subset: BTreeMap<String, String>,
    /// Services tried in order when this one has no healthy endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<String>,
}

fn hundred() -> u32 {
    100
}

/// Stickiness and overrides for a weighted split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SplitSpec {
    /// What keeps one user on one destination: `consumer`, `header:<name>` or `cookie:<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<String>,
    /// Header that forces a destination, e.g. `x-canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_header: Option<String>,
    /// Override header value → destination index.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, usize>,
}

/// Traffic mirroring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MirrorSpec {
    /// The shadow service, by name.
    pub service: String,
    /// Share of requests copied, percent.
    pub percent: f64,
    /// Copies in flight at most (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
}

/// A route's authentication requirements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RouteAuthSpec {
    /// Accepted methods, any of: `jwt`, `api_key`; or just `none`.
    pub require: Vec<String>,
    /// Scopes the token must carry (all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Claims that must have these values (an array claim must contain the value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, String>,
    /// The audience this route accepts (overrides the issuers' lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Only these issuers (by `issuer` value); empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<String>,
}

/// A route's rate limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimitSpec {
    /// The limits; all apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<LimitSpec>,
    /// Units one request costs (default 1).
    #[serde(default = "one")]
    pub cost: u32,
    /// Also apply the consumer's plan (rates and quotas); default true.
    #[serde(default = "yes")]
    pub plan: bool,
    /// Count in Redis across instances.
    #[serde(default)]
    pub cluster: bool,
    /// When the shared store fails: `local` (default), `fail_open`, `fail_closed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_store_failure: Option<String>,
    /// How long to wait for the shared store (default `5ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_timeout: Option<String>,
    /// Send the `RateLimit-Policy` and `RateLimit` fields on admitted
    /// responses (default true; refusals always carry them).
    #[serde(default = "yes")]
    pub headers: bool,
}

fn yes() -> bool {
    true
}

/// One limit: a rate, a burst and what it is keyed by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LimitSpec {
    /// E.g. `10/s` or `1000/h`.
    pub rate: String,
    /// Requests allowed at once above the steady rate (default: the amount of `rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Key parts: `consumer`, `ip`, `route`, `api_version`, `header:<name>`.
    /// Default `["consumer"]` for plans, `["ip"]` otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
}

/// Retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetrySpec {
    /// Attempts in all, first included (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Statuses that are retried (default 502, 503, 504).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statuses: Option<Vec<u16>>,
    /// gRPC codes that are retried (default `UNAVAILABLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_codes: Option<Vec<String>>,
    /// Methods retried (default the idempotent ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// First backoff, before jitter (default `25ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    /// Largest backoff (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<String>,
    /// Retries allowed as a share of requests (default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_ratio: Option<f64>,
    /// Retries always allowed per second (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_min_per_second: Option<u32>,
    /// Largest request body kept for replay (default `64KiB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_limit: Option<String>,
    /// Send a hedged second attempt after this delay (off unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge_after: Option<String>,
}

/// Timeouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TimeoutSpec {
    /// The whole request, retries included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<String>,
    /// Each attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try: Option<String>,
}

/// Circuit breaking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CircuitBreakerSpec {
    /// `consecutive` (default) or `rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Consecutive failures that open the breaker (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// Failure share that opens the breaker in `rate` mode, percent (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    /// Calls in the sliding window (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    /// Judge the rate over this much time (e.g. `30s`) instead of over
    /// the last `window` calls (rate mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_duration: Option<String>,
    /// Statuses that count as failures (default: every 5xx). Timeouts and
    /// connect errors always count; 429 does not unless listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_statuses: Option<Vec<u16>>,
    /// Calls needed before the rate is judged (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_calls: Option<u32>,
    /// First open duration (default `5s`), doubled on each reopening.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<String>,
    /// Longest open duration (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open: Option<String>,
    /// Probe requests admitted while half-open (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_probes: Option<u32>,
    /// Calls slower than this count as failures (off unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_call: Option<String>,
}

/// Fault injection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FaultSpec {
    /// Added delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelaySpec>,
    /// Injected errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbortSpec>,
    /// Only requests carrying this header (`name` or `name: value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_with_header: Option<String>,
}

/// An injected delay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FaultDelaySpec {
    /// How long.
    pub duration: String,
    /// Share of requests, percent.
    pub percent: f64,
}

/// An injected error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FaultAbortSpec {
    /// HTTP status to answer with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// gRPC code to answer gRPC requests with (default derived from `status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    /// Share of requests, percent.
    pub percent: f64,
}
