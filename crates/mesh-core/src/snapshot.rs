//! The immutable, validated, revisioned [`Snapshot`] and what it compiles:
//! the route matcher and each route's typed policies.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderName, Method, StatusCode};

use crate::config::*;
use crate::error::{ConfigError, FieldError, GrpcCode};
use crate::matcher::{
    Conditions, HeaderCond, PathPattern, QueryCond, RequestView, RouteTable, parse_literal_path,
    parse_template,
};
use crate::policy::*;
use crate::units::{Period, Rate, parse_duration, parse_size, parse_timestamp};

/// The whole desired state at one revision: validated, compiled, immutable.
///
/// Backends build snapshots; layers read them. Everything the request path
/// needs (the route matcher, each route's typed policies, lookup maps) is
/// computed once in [`Snapshot::build`].
///
/// ```
/// use mesh_core::{Config, Snapshot};
/// let config = Config::from_toml(r#"
///     [[routes]]
///     id = "orders"
///     match = { path_template = "/orders/{id}", methods = ["GET"] }
/// "#).unwrap();
/// let snapshot = Snapshot::build(config, 1).unwrap();
/// let req = http::Request::get("/orders/42").body(()).unwrap();
/// assert_eq!(snapshot.match_request(&req).unwrap().id(), "orders");
/// ```
#[derive(Debug)]
pub struct Snapshot {
    revision: u64,
    config: Arc<Config>,
    routes: Vec<Arc<Route>>,
    table: RouteTable,
    outbound: RouteTable,
    outbound_routes: Vec<usize>,
    services: HashMap<String, Arc<Service>>,
    propagation: Propagation,
    gateway: GatewayPolicy,
    locality_spill: f64,
    apis: HashMap<String, usize>,
    consumers: HashMap<String, usize>,
    consumers_by_key: HashMap<[u8; 32], usize>,
    plans: HashMap<String, usize>,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    id: Arc<str>,
    index: usize,
    path_label: Arc<str>,
    api: Option<Arc<str>>,
    version: Option<Arc<str>>,
    destinations: Vec<Destination>,
    total_weight: u64,
    split: Option<Split>,
    mirror: Option<Mirror>,
    policy: RoutePolicy,
    spec: RouteSpec,
}

impl Route {
    /// The route's id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The route's id as a shared string (cheap to clone into labels).
    pub fn id_arc(&self) -> &Arc<str> {
        &self.id
    }
    /// Position in the config's `routes` list.
    pub fn index(&self) -> usize {
        self.index
    }
    /// A low-cardinality label for the path: the exact path, the template,
    /// or `<prefix>/*` (used as `http.route`).
    pub fn path_label(&self) -> &Arc<str> {
        &self.path_label
    }
    /// The API this route serves.
    pub fn api(&self) -> Option<&str> {
        self.api.as_deref()
    }
    /// The API version this route serves.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
    /// The API as a shared string (cheap to clone into labels and keys).
    pub fn api_arc(&self) -> Option<&Arc<str>> {
        self.api.as_ref()
    }
    /// The version as a shared string.
    pub fn version_arc(&self) -> Option<&Arc<str>> {
        self.version.as_ref()
    }
    /// Weighted destinations (empty: the local service).
    pub fn destinations(&self) -> &[Destination] {
        &self.destinations
    }
    /// The sum of the destinations' weights.
    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }
    /// Stickiness and overrides of the weighted split.
    pub fn split(&self) -> Option<&Split> {
        self.split.as_ref()
    }
    /// Traffic mirroring.
    pub fn mirror(&self) -> Option<&Mirror> {
        self.mirror.as_ref()
    }
    /// The compiled policies.
    pub fn policy(&self) -> &RoutePolicy {
        &self.policy
    }
    /// The route as configured.
    pub fn spec(&self) -> &RouteSpec {
        &self.spec
    }
    /// A metadata label.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.spec.metadata.get(key).map(String::as_str)
    }
}

/// A weighted destination of a route.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Destination {
    /// The service.
    pub service: Arc<str>,
    /// Relative weight.
    pub weight: u32,
    /// Endpoint labels the subset requires.
    pub subset: Vec<(String, String)>,
    /// Failover services, in order.
    pub failover: Vec<Arc<str>>,
}

/// A compiled service.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Service {
    /// Name.
    pub name: Arc<str>,
    /// Whether to speak HTTP/2 without TLS to it.
    pub h2c: bool,
    /// Bulkhead size.
    pub max_concurrent: Option<u32>,
    /// Outlier ejection.
    pub outlier: OutlierPolicy,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// A compiled endpoint.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Endpoint {
    /// Unique id within the service.
    pub id: Arc<str>,
    /// `host:port`.
    pub address: http::uri::Authority,
    /// Region.
    pub region: Option<Arc<str>>,
    /// Zone.
    pub zone: Option<Arc<str>>,
    /// Weight.
    pub weight: u32,
    /// Priority group (0 first).
    pub priority: u32,
    /// Labels.
    pub metadata: Vec<(String, String)>,
}

impl Snapshot {
    /// An empty snapshot at revision 0: no routes.
    pub fn empty() -> Snapshot {
        Snapshot {
            revision: 0,
            config: Arc::default(),
            routes: Vec::new(),
            table: RouteTable::default(),
            outbound: RouteTable::default(),
            outbound_routes: Vec::new(),
            services: HashMap::new(),
            propagation: Propagation::default(),
            gateway: GatewayPolicy::default(),
            locality_spill: DEFAULT_SPILL,
            apis: HashMap::new(),
            consumers: HashMap::new(),
            consumers_by_key: HashMap::new(),
            plans: HashMap::new(),
        }
    }

    /// Validates and compiles a config. Every problem is reported at once,
    /// each with its field path; a config with any problem builds nothing.
    pub fn build(config: Config, revision: u64) -> Result<Snapshot, ConfigError> {
        let mut cx = Cx::default();
        let compiled = compile(&config, &mut cx);
        if !cx.errors.is_empty() {
            return Err(ConfigError::Invalid(cx.errors));
        }
        let Compiled {
            routes,
            table,
            outbound,
            outbound_routes,
            services,
            propagation,
            gateway,
            consumers_by_key,
        } = compiled;
        let index = |names: Vec<&String>| {
            names
                .into_iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i))
                .collect::<HashMap<_, _>>()
        };
        let locality_spill = config.mesh.locality_spill.unwrap_or(DEFAULT_SPILL);
        Ok(Snapshot {
            revision,
            apis: index(config.apis.iter().map(|a| &a.name).collect()),
            consumers: index(config.consumers.iter().map(|c| &c.id).collect()),
            plans: index(config.plans.iter().map(|p| &p.name).collect()),
            config: Arc::new(config),
            routes,
            table,
            outbound,
            outbound_routes,
            services,
            propagation,
            gateway,
            locality_spill,
            consumers_by_key,
        })
    }

    /// Parses TOML, then [`build`](Self::build)s.
    pub fn from_toml(text: &str, revision: u64) -> Result<Snapshot, ConfigError> {
        Snapshot::build(Config::from_toml(text)?, revision)
    }

    /// The revision; a newer snapshot always has a larger one.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The config this snapshot was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Routes in config order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// A route by id.
    pub fn route(&self, id: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| &*r.id == id)
    }

    /// The route a request matches, if any (see the module docs of
    /// `matcher` in `docs/configuration.md` for precedence).
    pub fn match_request<B>(&self, req: &http::Request<B>) -> Option<&Arc<Route>> {
        self.match_parts(req.method(), req.uri(), req.headers())
    }

    /// The route for a method, URI and headers.
    pub fn match_parts(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
    ) -> Option<&Arc<Route>> {
        let view = RequestView {
            method,
            uri,
            headers,
            host: None,
        };
        self.table.find(&view).and_then(|i| self.routes.get(i))
    }

    /// The mesh route for a call to `service`: among routes with
    /// destinations whose `match.hosts` name the service, the one that
    /// matches (the client then follows its destinations; with none, the
    /// call goes to `service` itself).
    pub fn match_outbound(
        &self,
        service: &str,
        method: &Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
    ) -> Option<&Arc<Route>> {
        if self.outbound_routes.is_empty() {
            return None;
        }
        let view = RequestView {
            method,
            uri,
            headers,
            host: Some(service),
        };
        self.outbound
            .find(&view)
            .and_then(|i| self.outbound_routes.get(i))
            .and_then(|&i| self.routes.get(i))
    }

    /// The compiled `[mesh.propagation]` headers.
    pub fn propagation(&self) -> &Propagation {
        &self.propagation
    }

    /// The service a version of an API sends gateway traffic to
    /// (`apis.versions.service`), if configured.
    pub fn version_service(&self, api: &str, version: &str) -> Option<&str> {
        self.api(api)?
            .versions
            .iter()
            .find(|v| v.version == version)?
            .service
            .as_deref()
    }

    /// The compiled `[gateway]` settings.
    pub fn gateway(&self) -> &GatewayPolicy {
        &self.gateway
    }

    /// `[mesh] locality_spill`: how much costlier the local zone may be
    /// before traffic spills further out.
    pub fn locality_spill(&self) -> f64 {
        self.locality_spill
    }

    /// A service by name.
    pub fn service(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.get(name)
    }

    /// An API by name.
    pub fn api(&self, name: &str) -> Option<&ApiSpec> {
        self.apis.get(name).and_then(|&i| self.config.apis.get(i))
    }

    /// A consumer by id.
    pub fn consumer(&self, id: &str) -> Option<&ConsumerSpec> {
        self.consumers
            .get(id)
            .and_then(|&i| self.config.consumers.get(i))
    }

    /// The consumer owning an API key, by the key's SHA-256 digest.
    pub fn consumer_by_key_digest(&self, digest: &[u8; 32]) -> Option<&ConsumerSpec> {
        self.consumers_by_key
            .get(digest)
            .and_then(|&i| self.config.consumers.get(i))
    }

    /// A plan by name.
    pub fn plan(&self, name: &str) -> Option<&PlanSpec> {
        self.plans.get(name).and_then(|&i| self.config.plans.get(i))
    }
}

#[derive(Default)]
struct Cx {
    errors: Vec<FieldError>,
}

impl Cx {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &str, v: &Option<String>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match parse_duration(s) {
                Ok(d) => d,
                Err(e) => {
                    self.err(path, e);
                    default
                }
            },
        }
    }

    fn opt_duration(&mut self, path: &str, v: &Option<String>) -> Option<Duration> {
        v.as_ref().and_then(|s| match parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(path, e);
                None
            }
        })
    }

    fn timestamp(&mut self, path: &str, v: &Option<String>) -> Option<SystemTime> {
        v.as_ref().and_then(|s| match parse_timestamp(s) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(path, e);
                None
            }
        })
    }

    fn percent(&mut self, path: &str, v: f64) -> f64 {
        if !(0.0..=100.0).contains(&v) {
            self.err(path, "must be between 0 and 100");
        }
        v.clamp(0.0, 100.0) / 100.0
    }

    fn unique<'a>(&mut self, what: &str, items: impl Iterator<Item = (String, &'a str)>) {
        let mut seen = HashSet::new();
        for (path, name) in items {
            if name.trim().is_empty() {
                self.err(path, format!("{what} must not be empty"));
            } else if !seen.insert(name) {
                self.err(path, format!("duplicate {what} `{name}`"));
            }
        }
    }

    fn header_name(&mut self, path: &str, name: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(path, format!("`{name}` is not a valid header name"));
                None
            }
        }
    }

    fn method(&mut self, path: &str, m: &str) -> Option<Method> {
        match Method::from_bytes(m.as_bytes()) {
            Ok(m) if !m.as_str().is_empty() => Some(m),
            _ => {
                self.err(path, format!("`{m}` is not a valid method"));
                None
            }
        }
    }
}

const DEFAULT_SPILL: f64 = 2.0;

struct Compiled {
    routes: Vec<Arc<Route>>,
    table: RouteTable,
    outbound: RouteTable,
    outbound_routes: Vec<usize>,
    services: HashMap<String, Arc<Service>>,
    propagation: Propagation,
    gateway: GatewayPolicy,
    consumers_by_key: HashMap<[u8; 32], usize>,
}

const ALGORITHMS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

fn compile(c: &Config, cx: &mut Cx) -> Compiled {
    // Catalog.
    cx.unique(
        "API name",
        c.apis
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("apis[{i}].name"), a.name.as_str())),
    );
    for (i, api) in c.apis.iter().enumerate() {
        check_api(cx, &format!("apis[{i}]"), api);
    }

    // Services.
    cx.unique(
        "service name",
        c.services
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("services[{i}].name"), s.name.as_str())),
    );
    let mut services = HashMap::new();
    for (i, s) in c.services.iter().enumerate() {
        let svc = compile_service(cx, &format!("services[{i}]"), s);
        services
            .entry(s.name.clone())
            .or_insert_with(|| Arc::new(svc));
    }

    // Versions that pick a destination service.
    for (i, api) in c.apis.iter().enumerate() {
        for (j, v) in api.versions.iter().enumerate() {
            if let Some(name) = &v.service
                && !services.contains_key(name)
            {
                cx.err(
                    format!("apis[{i}].versions[{j}].service"),
                    format!("unknown service `{name}`"),
                );
            }
        }
    }

    // Plans.
    cx.unique(
        "plan name",
        c.plans
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("plans[{i}].name"), p.name.as_str())),
    );
    for (i, p) in c.plans.iter().enumerate() {
        for (j, l) in p.rates.iter().enumerate() {
            compile_limit(cx, &format!("plans[{i}].rates[{j}]"), l, KeyPart::Consumer);
        }
        for (j, q) in p.quotas.iter().enumerate() {
            let path = format!("plans[{i}].quotas[{j}]");
            match q.parse::<Rate>() {
                Ok(r) if matches!(r.period, Period::Hour | Period::Day | Period::Month) => {}
                Ok(_) => cx.err(path, "a quota's period must be h, d or month"),
                Err(e) => cx.err(path, e),
            }
        }
    }

    // Consumers.
    cx.unique(
        "consumer id",
        c.consumers
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("consumers[{i}].id"), s.id.as_str())),
    );
    let plan_names: HashSet<&str> = c.plans.iter().map(|p| p.name.as_str()).collect();
    let mut consumers_by_key = HashMap::new();
    for (i, consumer) in c.consumers.iter().enumerate() {
        if let Some(plan) = &consumer.plan
            && !plan_names.contains(plan.as_str())
        {
            cx.err(
                format!("consumers[{i}].plan"),
                format!("unknown plan `{plan}`"),
            );
        }
        for (j, key) in consumer.api_keys.iter().enumerate() {
            let path = format!("consumers[{i}].api_keys[{j}]");
            match parse_key_digest(key) {
                Some(d) => {
                    if let Some(owner) = consumers_by_key.insert(d, i) {
                        let msg = if owner == i {
                            "duplicate key digest".to_owned()
                        } else {
                            format!("this key digest belongs to consumers[{owner}] too")
                        };
                        cx.err(path, msg);
                    }
                }
                None => cx.err(
                    path,
                    "must be `sha256:` followed by 64 hex digits (the digest of the key, never the key)",
                ),
            }
        }
    }

    // Auth settings.
    check_auth(cx, &c.auth);

    // Mesh settings.
    if let Some(h) = &c.mesh.forwarded_header
        && !matches!(
            h.to_ascii_lowercase().as_str(),
            "x-forwarded-for" | "forwarded"
        )
    {
        cx.err(
            "mesh.forwarded_header",
            format!("`{h}` is not `x-forwarded-for` or `forwarded`"),
        );
    }
    for (i, p) in c.mesh.trusted_proxies.iter().enumerate() {
        if parse_net(p).is_none() {
            cx.err(
                format!("mesh.trusted_proxies[{i}]"),
                format!("`{p}` is not an IP address or CIDR range like 10.0.0.0/8"),
            );
        }
    }

    if let Some(x) = c.observability.access_log_sample
        && !(0.0..=1.0).contains(&x)
    {
        cx.err("observability.access_log_sample", "must be between 0 and 1");
    }

    // Gateway settings.
    let g = &c.gateway;
    let mut gateway = GatewayPolicy {
        keep_encoded_slashes: g.encoded_slashes.as_deref() == Some("keep"),
        allow_semicolons: g.semicolons.as_deref() == Some("allow"),
        ..GatewayPolicy::default()
    };
    for (field, v, slot) in [
        ("max_body", &g.max_body, &mut gateway.max_body),
        (
            "max_header_size",
            &g.max_header_size,
            &mut gateway.max_header_size,
        ),
    ] {
        if let Some(v) = v {
            match parse_size(v) {
                Ok(0) => cx.err(format!("gateway.{field}"), "must be greater than 0"),
                Ok(n) => *slot = n,
                Err(e) => cx.err(format!("gateway.{field}"), e),
            }
        }
    }
    for (field, v, allowed) in [
        ("encoded_slashes", &g.encoded_slashes, ["reject", "keep"]),
        ("semicolons", &g.semicolons, ["reject", "allow"]),
    ] {
        if let Some(v) = v
            && !allowed.contains(&v.as_str())
        {
            cx.err(
                format!("gateway.{field}"),
                format!("`{v}` is not `{}` or `{}`", allowed[0], allowed[1]),
            );
        }
    }

    if let Some(f) = c.mesh.locality_spill
        && !(f.is_finite() && f >= 1.0)
    {
        cx.err("mesh.locality_spill", "must be a number of at least 1");
    }
    let prop = &c.mesh.propagation;
    let defaults = Propagation::default();
    let mut header = |field: &str, v: &Option<String>, default: Option<HeaderName>| match v {
        None => default,
        Some(v) if v.is_empty() => None,
        Some(v) => cx.header_name(&format!("mesh.propagation.{field}"), v),
    };
    let propagation = Propagation {
        caller: header("caller_header", &prop.caller_header, defaults.caller),
        consumer: header("consumer_header", &prop.consumer_header, None),
        deadline: header("deadline_header", &prop.deadline_header, defaults.deadline),
    };

    // Routes.
    cx.unique(
        "route id",
        c.routes
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("routes[{i}].id"), r.id.as_str())),
    );
    let mut routes = Vec::with_capacity(c.routes.len());
    let mut table = RouteTable::default();
    let mut outbound = RouteTable::default();
    let mut outbound_routes = Vec::new();
    for (i, r) in c.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if let Some((pattern, conditions, label)) =
            compile_match(cx, &format!("{path}.match"), &r.matches)
        {
            if !r.destinations.is_empty() && !r.matches.hosts.is_empty() {
                outbound.insert(&pattern, conditions.clone());
                outbound_routes.push(i);
            }
            table.insert(&pattern, conditions);
            let route = compile_route(cx, &path, i, r, c, label);
            routes.push(Arc::new(route));
        } else {
            // Keep indices aligned even when this route is invalid; the
            // snapshot is rejected anyway.
            table.insert(&PathPattern::Exact(Vec::new()), Conditions::default());
            routes.push(Arc::new(compile_route(cx, &path, i, r, c, "/".into())));
        }
    }

    Compiled {
        routes,
        table,
        outbound,
        outbound_routes,
        services,
        propagation,
        gateway,
        consumers_by_key,
    }
}

/// Parses an IP address (a single-address range) or a CIDR range.
pub fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// Parses `sha256:<64 hex>` into the digest bytes.
pub fn parse_key_digest(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn check_api(cx: &mut Cx, path: &str, api: &ApiSpec) {
    cx.unique(
        "version",
        api.versions
            .iter()
            .enumerate()
            .map(|(j, v)| (format!("{path}.versions[{j}].version"), v.version.as_str())),
    );
    let names: HashSet<&str> = api.versions.iter().map(|v| v.version.as_str()).collect();
    if let Some(vs) = &api.versioning {
        for (k, s) in vs.styles.iter().enumerate() {
            if !matches!(s.as_str(), "path" | "header" | "media_type" | "query") {
                cx.err(
                    format!("{path}.versioning.styles[{k}]"),
                    format!("unknown style `{s}` (use path, header, media_type or query)"),
                );
            }
        }
        if vs.styles.is_empty() {
            cx.err(
                format!("{path}.versioning.styles"),
                "must name at least one style",
            );
        }
        cx.header_name(&format!("{path}.versioning.header"), &vs.header);
        let mut seen_styles = HashSet::new();
        for (k, st) in vs.styles.iter().enumerate() {
            if !seen_styles.insert(st.as_str()) {
                cx.err(
                    format!("{path}.versioning.styles[{k}]"),
                    format!("duplicate style `{st}`"),
                );
            }
        }
        if vs.query.is_empty() || vs.query.contains(['&', '=', '#', ' ']) {
            cx.err(
                format!("{path}.versioning.query"),
                "must be a non-empty parameter name without `&`, `=`, `#` or spaces",
            );
        }
        if let Some(d) = &vs.default
            && !names.contains(d.as_str())
        {
            cx.err(
                format!("{path}.versioning.default"),
                format!("unknown version `{d}`"),
            );
        }
    }
    for (j, v) in api.versions.iter().enumerate() {
        let vp = format!("{path}.versions[{j}]");
        let deprecated = cx.timestamp(&format!("{vp}.deprecated_at"), &v.deprecated_at);
        let sunset = cx.timestamp(&format!("{vp}.sunset"), &v.sunset);
        if let (Some(d), Some(s)) = (deprecated, sunset)
            && s < d
        {
            cx.err(
                format!("{vp}.sunset"),
                "must not be earlier than deprecated_at",
            );
        }
        if let Some(succ) = &v.successor {
            if succ == &v.version {
                cx.err(format!("{vp}.successor"), "a version cannot succeed itself");
            } else if !names.contains(succ.as_str()) {
                cx.err(
                    format!("{vp}.successor"),
                    format!("unknown version `{succ}`"),
                );
            }
        }
        for (field, link) in [
            ("deprecation_link", &v.deprecation_link),
            ("successor_link", &v.successor_link),
        ] {
            if let Some(l) = link
                && (l.is_empty()
                    || l.chars()
                        .any(|c| c.is_whitespace() || c.is_control() || "<>\"".contains(c)))
            {
                cx.err(
                    format!("{vp}.{field}"),
                    "must be a URL without spaces, quotes or angle brackets",
                );
            }
        }
        for (k, b) in v.brownouts.iter().enumerate() {
            let bp = format!("{vp}.brownouts[{k}]");
            let start = cx.timestamp(&format!("{bp}.start"), &Some(b.start.clone()));
            let end = cx.timestamp(&format!("{bp}.end"), &Some(b.end.clone()));
            if let (Some(s), Some(e)) = (start, end) {
                if e <= s {
                    cx.err(format!("{bp}.end"), "must be later than start");
                }
                if sunset.is_some_and(|sun| s >= sun) {
                    cx.err(format!("{bp}.start"), "must be earlier than the sunset");
                }
            }
        }
        if let Some(OpenApiSpec::File(f) | OpenApiSpec::Inline(f)) = &v.openapi
            && f.trim().is_empty()
        {
            cx.err(format!("{vp}.openapi"), "must not be empty");
        }
    }
}

fn compile_service(cx: &mut Cx, path: &str, s: &ServiceSpec) -> Service {
    let h2c = match s.protocol.as_deref() {
        None | Some("http1") => false,
        Some("h2c") => true,
        Some(other) => {
            cx.err(
                format!("{path}.protocol"),
                format!("unknown protocol `{other}` (use http1 or h2c)"),
            );
            false
        }
    };
    if s.max_concurrent == Some(0) {
        cx.err(format!("{path}.max_concurrent"), "must be greater than 0");
    }
    let mut outlier = OutlierPolicy::default();
    if let Some(o) = &s.outlier {
        match o.consecutive_failures {
            Some(0) => cx.err(
                format!("{path}.outlier.consecutive_failures"),
                "must be greater than 0",
            ),
            Some(n) => outlier.consecutive_failures = n,
            None => {}
        }
        if let Some(d) = cx.opt_duration(&format!("{path}.outlier.base_ejection"), &o.base_ejection)
        {
            outlier.base_ejection = d;
        }
        if let Some(p) = o.max_ejection_percent {
            outlier.max_ejection = cx.percent(&format!("{path}.outlier.max_ejection_percent"), p);
        }
        if let Some(p) = o.failure_percent {
            let field = format!("{path}.outlier.failure_percent");
            let rate = cx.percent(&field, p);
            if rate > 0.0 {
                outlier.failure_rate = Some(rate);
            } else {
                cx.err(field, "must be greater than 0");
            }
        }
        match o.min_requests {
            Some(0) => cx.err(
                format!("{path}.outlier.min_requests"),
                "must be greater than 0",
            ),
            Some(n) => outlier.min_requests = n,
            None => {}
        }
        let interval = format!("{path}.outlier.interval");
        match cx.opt_duration(&interval, &o.interval) {
            Some(d) if d.is_zero() => cx.err(interval, "must be greater than 0"),
            Some(d) => outlier.interval = d,
            None => {}
        }
    }
    let mut ids = HashSet::new();
    let mut endpoints = Vec::with_capacity(s.endpoints.len());
    for (j, e) in s.endpoints.iter().enumerate() {
        let ep = format!("{path}.endpoints[{j}]");
        let address = match e.address.parse::<http::uri::Authority>() {
            Ok(a)
                if a.port_u16().is_some() && !a.host().is_empty() && !a.as_str().contains('@') =>
            {
                Some(a)
            }
            _ => {
                cx.err(
                    format!("{ep}.address"),
                    format!("`{}` is not a `host:port` address", e.address),
                );
                None
            }
        };
        let id = e.id.clone().unwrap_or_else(|| e.address.clone());
        if !ids.insert(id.clone()) {
            cx.err(format!("{ep}.id"), format!("duplicate endpoint id `{id}`"));
        }
        if let Some(address) = address {
            endpoints.push(Endpoint {
                id: id.into(),
                address,
                region: e.region.as_deref().map(Into::into),
                zone: e.zone.as_deref().map(Into::into),
                weight: e.weight,
                priority: e.priority,
                metadata: e
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            });
        }
    }
    Service {
        name: s.name.as_str().into(),
        h2c,
        max_concurrent: s.max_concurrent,
        outlier,
        endpoints,
    }
}

fn compile_limit(cx: &mut Cx, path: &str, l: &LimitSpec, default_key: KeyPart) -> Option<Limit> {
    let rate = match l.rate.parse::<Rate>() {
        Ok(r) if r.period == Period::Month => {
            cx.err(
                format!("{path}.rate"),
                "a rate's period must be s, min, h or d (use a plan quota for months)",
            );
            None
        }
        Ok(r) => Some(r),
        Err(e) => {
            cx.err(format!("{path}.rate"), e);
            None
        }
    };
    if l.burst == Some(0) {
        cx.err(format!("{path}.burst"), "must be greater than 0");
    }
    let mut key = Vec::new();
    for (k, part) in l.key.iter().enumerate() {
        let kp = format!("{path}.key[{k}]");
        let p = match KeyPart::parse(part) {
            Some(p) => Some(p),
            None => match part.strip_prefix("header:") {
                Some(h) => cx.header_name(&kp, h).map(KeyPart::Header),
                None => {
                    cx.err(
                        kp,
                        format!("unknown key part `{part}` (use consumer, ip, route, api_version or header:<name>)"),
                    );
                    None
                }
            },
        };
        key.extend(p);
    }
    if key.is_empty() {
        key.push(default_key);
    }
    let rate = rate?;
    let burst = l
        .burst
        .unwrap_or(rate.amount.min(u64::from(u32::MAX)) as u32)
        .max(1);
    Some(Limit { rate, burst, key })
}

fn check_auth(cx: &mut Cx, a: &AuthSettings) {
    cx.unique(
        "issuer",
        a.issuers
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("auth.issuers[{i}].issuer"), s.issuer.as_str())),
    );
    if let Some(l) = cx.opt_duration("auth.leeway", &a.leeway)
        && l > Duration::from_secs(300)
    {
        cx.err("auth.leeway", "must be at most 5m");
    }
    if let Some(s) = &a.max_token_size {
        match parse_size(s) {
            Ok(0) => cx.err("auth.max_token_size", "must be greater than 0"),
            Ok(_) => {}
            Err(e) => cx.err("auth.max_token_size", e),
        }
    }
    if let Some(h) = &a.api_key_header {
        cx.header_name("auth.api_key_header", h);
    }
    if a.api_key_query.as_deref().is_some_and(|q| q.is_empty()) {
        cx.err("auth.api_key_query", "must not be empty");
    }
    if let Some(r) = &a.realm
        && (r.contains(['"', '\\']) || r.chars().any(|c| c.is_control()))
    {
        cx.err(
            "auth.realm",
            "must not contain quotes, backslashes or control characters",
        );
    }
    for (i, iss) in a.issuers.iter().enumerate() {
        let p = format!("auth.issuers[{i}]");
        if iss.algorithms.is_empty() {
            cx.err(
                format!("{p}.algorithms"),
                "must list at least one algorithm",
            );
        }
        for (j, alg) in iss.algorithms.iter().enumerate() {
            check_algorithm(cx, &format!("{p}.algorithms[{j}]"), alg);
        }
        if let Some(u) = &iss.jwks_uri {
            check_url(cx, &format!("{p}.jwks_uri"), u);
        }
        if iss.discovery {
            check_url(cx, &format!("{p}.issuer"), &iss.issuer);
        }
        if iss.jwks_uri.is_none() && !iss.discovery && iss.keys.is_empty() {
            cx.err(
                p.clone(),
                "needs keys, a jwks_uri, or discovery = true to verify anything",
            );
        }
        for (j, k) in iss.keys.iter().enumerate() {
            let kp = format!("{p}.keys[{j}]");
            check_algorithm(cx, &format!("{kp}.algorithm"), &k.algorithm);
            if !iss.algorithms.contains(&k.algorithm) {
                cx.err(
                    format!("{kp}.algorithm"),
                    format!("`{}` is not in the issuer's algorithms", k.algorithm),
                );
            }
            let sources = [
                k.pem.is_some(),
                k.pem_file.is_some(),
                k.jwk.is_some(),
                k.secret.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if sources != 1 {
                cx.err(
                    kp.clone(),
                    "give exactly one of pem, pem_file, jwk or secret",
                );
            }
            let hmac = k.algorithm.starts_with("HS");
            if k.secret.is_some() && !hmac {
                cx.err(
                    format!("{kp}.secret"),
                    "a secret is only for HS256/HS384/HS512",
                );
            }
            if hmac && (k.pem.is_some() || k.pem_file.is_some()) {
                cx.err(
                    format!("{kp}.algorithm"),
                    "an HMAC algorithm cannot use a public key (that is the RS/HS confusion attack)",
                );
            }
            if let Some(s) = &k.secret
                && s.len() < 32
            {
                cx.err(
                    format!("{kp}.secret"),
                    "must be at least 32 bytes (RFC 7518 §3.2)",
                );
            }
            if let Some(j) = &k.jwk
                && !j.is_object()
            {
                cx.err(format!("{kp}.jwk"), "must be a JWK object");
            }
        }
        cx.opt_duration(&format!("{p}.refresh"), &iss.refresh);
        cx.opt_duration(
            &format!("{p}.unknown_kid_interval"),
            &iss.unknown_kid_interval,
        );
        cx.opt_duration(&format!("{p}.max_stale"), &iss.max_stale);
    }
}

fn check_algorithm(cx: &mut Cx, path: &str, alg: &str) {
    if alg.eq_ignore_ascii_case("none") {
        cx.err(path, "`none` is never allowed (RFC 8725 §3.1)");
    } else if !ALGORITHMS.contains(&alg) {
        cx.err(
            path,
            format!(
                "unknown algorithm `{alg}` (use one of {})",
                ALGORITHMS.join(", ")
            ),
        );
    }
}

fn check_url(cx: &mut Cx, path: &str, u: &str) {
    match u.parse::<http::Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http") | Some("https"))
                && uri.authority().is_some() => {}
        _ => cx.err(path, format!("`{u}` is not an http(s) URL")),
    }
}

fn compile_match(
    cx: &mut Cx,
    path: &str,
    m: &MatchSpec,
) -> Option<(PathPattern, Conditions, Arc<str>)> {
    let given = [
        m.path.is_some(),
        m.path_prefix.is_some(),
        m.path_template.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    let mut ok = true;
    if given > 1 {
        cx.err(
            path,
            "give at most one of path, path_prefix and path_template",
        );
        ok = false;
    }
    let parsed = if let Some(p) = &m.path {
        Some((
            "path",
            parse_literal_path(p).map(|s| (PathPattern::Exact(s), Arc::from(p.as_str()))),
        ))
    } else if let Some(p) = &m.path_prefix {
        let label = format!(
            "/{}/*",
            p.split('/')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("/")
        )
        .replace("//*", "/*");
        Some((
            "path_prefix",
            parse_literal_path(p).map(|s| (PathPattern::Prefix(s), Arc::from(label))),
        ))
    } else {
        m.path_template.as_ref().map(|p| {
            (
                "path_template",
                parse_template(p).map(|s| (s, Arc::from(p.as_str()))),
            )
        })
    };
    let pattern = match parsed {
        None => Some((PathPattern::Prefix(Vec::new()), Arc::from("/*"))),
        Some((_, Ok(x))) => Some(x),
        Some((field, Err(e))) => {
            cx.err(format!("{path}.{field}"), e);
            None
        }
    };
    let mut cond = Conditions::default();
    for (i, h) in m.hosts.iter().enumerate() {
        // Normalize as `matcher::request_host` normalizes the request's host
        // (no IPv6 brackets, no trailing dot), or the pattern could never
        // match. A port is never part of the matched host, so one is an error.
        let lower = h.to_ascii_lowercase();
        let unbracketed = lower.strip_prefix('[').and_then(|x| x.strip_suffix(']'));
        let host = unbracketed
            .unwrap_or(&lower)
            .trim_end_matches('.')
            .to_owned();
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        let colons = bare.matches(':').count();
        let valid = !bare.is_empty()
            && bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
            && !bare.contains('*')
            // A single colon is `host:port`; an IPv6 literal has at least two.
            && (colons == 0 || (colons >= 2 && bare.len() == host.len()));
        if valid {
            cond.hosts.push(host.into());
        } else {
            cx.err(
                format!("{path}.hosts[{i}]"),
                format!("`{h}` is not a host name, IPv6 address or `*.suffix` (without a port)"),
            );
            ok = false;
        }
    }
    for (i, meth) in m.methods.iter().enumerate() {
        match cx.method(&format!("{path}.methods[{i}]"), &meth.to_ascii_uppercase()) {
            Some(x) => cond.methods.push(x),
            None => ok = false,
        }
    }
    for (i, h) in m.headers.iter().enumerate() {
        let hp = format!("{path}.headers[{i}]");
        let Some(name) = cx.header_name(&format!("{hp}.name"), &h.name) else {
            ok = false;
            continue;
        };
        let c = match (&h.value, &h.prefix, h.present) {
            (Some(v), None, None) => HeaderCond::Exact(name, v.as_str().into()),
            (None, Some(p), None) => HeaderCond::Prefix(name, p.as_str().into()),
            (None, None, Some(b)) => HeaderCond::Present(name, b),
            (None, None, None) => HeaderCond::Present(name, true),
            _ => {
                cx.err(hp, "give at most one of value, prefix and present");
                ok = false;
                continue;
            }
        };
        cond.headers.push(c);
    }
    for (i, q) in m.query.iter().enumerate() {
        let qp = format!("{path}.query[{i}]");
        if q.name.is_empty() || q.name.contains(['&', '=', '#', ' ']) {
            cx.err(
                format!("{qp}.name"),
                "must be a non-empty raw parameter name without `&`, `=`, `#` or spaces",
            );
            ok = false;
            continue;
        }
        if q.value
            .as_deref()
            .is_some_and(|v| v.contains(['&', '#', ' ']))
        {
            cx.err(
                format!("{qp}.value"),
                "is compared before percent-decoding and must not contain `&`, `#` or spaces",
            );
            ok = false;
            continue;
        }
        let c = match (&q.value, q.present) {
            (Some(v), None) => QueryCond::Exact(q.name.as_str().into(), v.as_str().into()),
            (None, Some(b)) => QueryCond::Present(q.name.as_str().into(), b),
            (None, None) => QueryCond::Present(q.name.as_str().into(), true),
            _ => {
                cx.err(qp, "give at most one of value and present");
                ok = false;
                continue;
            }
        };
        cond.query.push(c);
    }
    let (pattern, label) = pattern?;
    ok.then_some((pattern, cond, label))
}

fn compile_route(
    cx: &mut Cx,
    path: &str,
    index: usize,
    r: &RouteSpec,
    c: &Config,
    path_label: Arc<str>,
) -> Route {
    // Catalog references.
    let api = match &r.api {
        Some(name) => match c.apis.iter().find(|a| &a.name == name) {
            Some(api) => {
                if let Some(v) = &r.version
                    && !api.versions.iter().any(|x| &x.version == v)
                {
                    cx.err(
                        format!("{path}.version"),
                        format!("API `{name}` has no version `{v}`"),
                    );
                }
                Some(Arc::from(name.as_str()))
            }
            None => {
                cx.err(format!("{path}.api"), format!("unknown API `{name}`"));
                None
            }
        },
        None => {
            if r.version.is_some() {
                cx.err(format!("{path}.version"), "a version needs an `api`");
            }
            None
        }
    };
    let service_exists = |name: &str| c.services.iter().any(|s| s.name == name);

    // Destinations.
    let mut destinations = Vec::with_capacity(r.destinations.len());
    let mut total: u64 = 0;
    for (j, d) in r.destinations.iter().enumerate() {
        let dp = format!("{path}.destinations[{j}]");
        if !service_exists(&d.service) {
            cx.err(
                format!("{dp}.service"),
                format!("unknown service `{}`", d.service),
            );
        }
        for (k, f) in d.failover.iter().enumerate() {
            if !service_exists(f) {
                cx.err(
                    format!("{dp}.failover[{k}]"),
                    format!("unknown service `{f}`"),
                );
            } else if f == &d.service {
                cx.err(
                    format!("{dp}.failover[{k}]"),
                    "a service cannot be its own failover",
                );
            }
        }
        total += u64::from(d.weight);
        destinations.push(Destination {
            service: d.service.as_str().into(),
            weight: d.weight,
            subset: d
                .subset
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            failover: d.failover.iter().map(|f| Arc::from(f.as_str())).collect(),
        });
    }
    if !r.destinations.is_empty() && total == 0 {
        cx.err(
            format!("{path}.destinations"),
            "weights sum to 0; at least one must be greater than 0",
        );
    }
    let split = r.split.as_ref().map(|s| Split {
        sticky: s.sticky.as_deref().and_then(|st| {
            if st == "consumer" {
                Some(Sticky::Consumer)
            } else if let Some(h) = st.strip_prefix("header:") {
                HeaderName::from_bytes(h.as_bytes())
                    .ok()
                    .map(Sticky::Header)
            } else {
                st.strip_prefix("cookie:")
                    .filter(|c| !c.is_empty())
                    .map(|c| Sticky::Cookie(c.into()))
            }
        }),
        override_header: s
            .override_header
            .as_deref()
            .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
        overrides: s
            .overrides
            .iter()
            .map(|(v, i)| (v.as_str().into(), *i))
            .collect(),
    });
    let mirror = r.mirror.as_ref().map(|m| Mirror {
        service: m.service.as_str().into(),
        per_million: (m.percent.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        max_in_flight: m.max_in_flight.unwrap_or(64).max(1),
    });
    if let Some(s) = &r.split {
        if r.destinations.is_empty() {
            cx.err(format!("{path}.split"), "a split needs destinations");
        }
        if let Some(st) = &s.sticky {
            let ok = st == "consumer"
                || st
                    .strip_prefix("header:")
                    .is_some_and(|h| HeaderName::from_bytes(h.as_bytes()).is_ok())
                || st.strip_prefix("cookie:").is_some_and(|c| !c.is_empty());
            if !ok {
                cx.err(
                    format!("{path}.split.sticky"),
                    format!("`{st}` is not `consumer`, `header:<name>` or `cookie:<name>`"),
                );
            }
        }
        if let Some(h) = &s.override_header {
            cx.header_name(&format!("{path}.split.override_header"), h);
        } else if !s.overrides.is_empty() {
            cx.err(format!("{path}.split.overrides"), "needs override_header");
        }
        for (value, idx) in &s.overrides {
            if *idx >= r.destinations.len() {
                cx.err(
                    format!("{path}.split.overrides.{value}"),
                    format!(
                        "destination {idx} does not exist (there are {})",
                        r.destinations.len()
                    ),
                );
            }
        }
    }
    if let Some(m) = &r.mirror {
        if !service_exists(&m.service) {
            cx.err(
                format!("{path}.mirror.service"),
                format!("unknown service `{}`", m.service),
            );
        }
        cx.percent(&format!("{path}.mirror.percent"), m.percent);
        if m.max_in_flight == Some(0) {
            cx.err(
                format!("{path}.mirror.max_in_flight"),
                "must be greater than 0",
            );
        }
    }

    let policy = RoutePolicy {
        auth: r
            .auth
            .as_ref()
            .map(|a| compile_auth(cx, &format!("{path}.auth"), a, c)),
        rate_limit: r
            .rate_limit
            .as_ref()
            .map(|rl| compile_rate_limit(cx, &format!("{path}.rate_limit"), rl)),
        retry: r
            .retry
            .as_ref()
            .map(|x| compile_retry(cx, &format!("{path}.retry"), x)),
        timeout: r
            .timeout
            .as_ref()
            .map(|t| compile_timeout(cx, &format!("{path}.timeout"), t)),
        circuit_breaker: r
            .circuit_breaker
            .as_ref()
            .map(|b| compile_breaker(cx, &format!("{path}.circuit_breaker"), b)),
        fault: r
            .fault
            .as_ref()
            .map(|f| compile_fault(cx, &format!("{path}.fault"), f)),
    };

    Route {
        id: r.id.as_str().into(),
        index,
        path_label,
        api,
        version: r.version.as_deref().map(Into::into),
        destinations,
        total_weight: total,
        split,
        mirror,
        policy,
        spec: r.clone(),
    }
}

fn compile_auth(cx: &mut Cx, path: &str, a: &RouteAuthSpec, c: &Config) -> AuthRequirement {
    let mut methods = Vec::new();
    let mut none = false;
    if a.require.is_empty() {
        cx.err(format!("{path}.require"), "must list jwt, api_key, or none");
    }
    for (i, m) in a.require.iter().enumerate() {
        match m.as_str() {
            "jwt" => methods.push(AuthMethod::Jwt),
            "api_key" => methods.push(AuthMethod::ApiKey),
            "none" => none = true,
            other => cx.err(
                format!("{path}.require[{i}]"),
                format!("unknown method `{other}` (use jwt, api_key or none)"),
            ),
        }
    }
    if none && !methods.is_empty() {
        cx.err(
            format!("{path}.require"),
            "`none` cannot be combined with other methods",
        );
    }
    if methods.contains(&AuthMethod::Jwt) && c.auth.issuers.is_empty() {
        cx.err(
            format!("{path}.require"),
            "jwt needs at least one entry in auth.issuers",
        );
    }
    if (!a.scopes.is_empty() || !a.claims.is_empty()) && !methods.contains(&AuthMethod::Jwt) {
        cx.err(
            format!("{path}.scopes"),
            "scopes and claims are checked on tokens: `require` must include jwt",
        );
    }
    for (i, iss) in a.issuers.iter().enumerate() {
        if !c.auth.issuers.iter().any(|x| &x.issuer == iss) {
            cx.err(
                format!("{path}.issuers[{i}]"),
                format!("unknown issuer `{iss}`"),
            );
        }
    }
    for (i, s) in a.scopes.iter().enumerate() {
        if s.is_empty() || s.contains(' ') || s.contains('"') || s.contains('\\') {
            cx.err(
                format!("{path}.scopes[{i}]"),
                "a scope is one non-empty token without spaces, quotes or backslashes",
            );
        }
    }
    AuthRequirement {
        methods,
        scopes: a.scopes.clone(),
        claims: a
            .claims
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        audience: a.audience.clone(),
        issuers: a.issuers.clone(),
    }
}

fn compile_rate_limit(cx: &mut Cx, path: &str, r: &RateLimitSpec) -> RateLimitPolicy {
    let limits = r
        .limits
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            compile_limit(cx, &format!("{path}.limits[{i}]"), l, KeyPart::ClientIp)
        })
        .collect();
    if r.cost == 0 {
        cx.err(format!("{path}.cost"), "must be greater than 0");
    }
    if r.limits.is_empty() && !r.plan {
        cx.err(
            format!("{path}.limits"),
            "needs at least one limit, or plan = true",
        );
    }
    let on_store_failure = match r.on_store_failure.as_deref() {
        None | Some("local") => StoreFailureMode::Local,
        Some("fail_open") => StoreFailureMode::FailOpen,
        Some("fail_closed") => StoreFailureMode::FailClosed,
        Some(other) => {
            cx.err(
                format!("{path}.on_store_failure"),
                format!("unknown mode `{other}` (use local, fail_open or fail_closed)"),
            );
            StoreFailureMode::Local
        }
    };
    RateLimitPolicy {
        headers: r.headers,
        limits,
        cost: r.cost.max(1),
        plan: r.plan,
        cluster: r.cluster,
        on_store_failure,
        store_timeout: cx.duration(
            &format!("{path}.store_timeout"),
            &r.store_timeout,
            Duration::from_millis(5),
        ),
    }
}

fn compile_retry(cx: &mut Cx, path: &str, r: &RetrySpec) -> RetryPolicy {
    let attempts = r.attempts.unwrap_or(3);
    if attempts == 0 || attempts > 10 {
        cx.err(format!("{path}.attempts"), "must be between 1 and 10");
    }
    let statuses = match &r.statuses {
        None => vec![
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::GATEWAY_TIMEOUT,
        ],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match StatusCode::from_u16(*s) {
                Ok(st) if (100..600).contains(s) => Some(st),
                _ => {
                    cx.err(
                        format!("{path}.statuses[{i}]"),
                        format!("`{s}` is not an HTTP status"),
                    );
                    None
                }
            })
            .collect(),
    };
    let grpc_codes = match &r.grpc_codes {
        None => vec![GrpcCode::Unavailable],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let c = GrpcCode::parse(s);
                if c.is_none() {
                    cx.err(
                        format!("{path}.grpc_codes[{i}]"),
                        format!("`{s}` is not a gRPC code"),
                    );
                }
                c
            })
            .collect(),
    };
    let methods = match &r.methods {
        None => vec![
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                cx.method(&format!("{path}.methods[{i}]"), &m.to_ascii_uppercase())
            })
            .collect(),
    };
    let backoff = cx.duration(
        &format!("{path}.backoff"),
        &r.backoff,
        Duration::from_millis(25),
    );
    let max_backoff = cx.duration(
        &format!("{path}.max_backoff"),
        &r.max_backoff,
        Duration::from_secs(1),
    );
    if max_backoff < backoff {
        cx.err(
            format!("{path}.max_backoff"),
            "must not be less than backoff",
        );
    }
    let budget_ratio = r.budget_ratio.unwrap_or(0.2);
    if !(0.0..=10.0).contains(&budget_ratio) {
        cx.err(format!("{path}.budget_ratio"), "must be between 0 and 10");
    }
    let replay_limit = match &r.replay_limit {
        None => 64 * 1024,
        Some(s) => parse_size(s).unwrap_or_else(|e| {
            cx.err(format!("{path}.replay_limit"), e);
            0
        }),
    };
    RetryPolicy {
        attempts: attempts.clamp(1, 10),
        statuses,
        grpc_codes,
        methods,
        backoff,
        max_backoff,
        budget_ratio,
        budget_min_per_second: r.budget_min_per_second.unwrap_or(10),
        replay_limit,
        hedge_after: cx.opt_duration(&format!("{path}.hedge_after"), &r.hedge_after),
    }
}

fn compile_timeout(cx: &mut Cx, path: &str, t: &TimeoutSpec) -> TimeoutPolicy {
    let total = cx.opt_duration(&format!("{path}.total"), &t.total);
    let per_try = cx.opt_duration(&format!("{path}.per_try"), &t.per_try);
    for (field, d) in [("total", total), ("per_try", per_try)] {
        if d == Some(Duration::ZERO) {
            cx.err(format!("{path}.{field}"), "must be greater than 0");
        }
    }
    if let (Some(tot), Some(p)) = (total, per_try)
        && p > tot
    {
        cx.err(format!("{path}.per_try"), "must not exceed total");
    }
    if t.total.is_none() && t.per_try.is_none() {
        cx.err(path, "give total, per_try or both");
    }
    TimeoutPolicy { total, per_try }
}

fn compile_breaker(cx: &mut Cx, path: &str, b: &CircuitBreakerSpec) -> CircuitBreakerPolicy {
    // Fields of the other mode are mistakes, not silently ignored settings.
    let rate_mode = b.mode.as_deref() == Some("rate");
    if rate_mode && b.failures.is_some() {
        cx.err(
            format!("{path}.failures"),
            "only applies to mode = \"consecutive\"",
        );
    }
    if !rate_mode {
        for (field, set) in [
            ("failure_rate", b.failure_rate.is_some()),
            ("window", b.window.is_some()),
            ("min_calls", b.min_calls.is_some()),
            ("window_duration", b.window_duration.is_some()),
        ] {
            if set {
                cx.err(format!("{path}.{field}"), "only applies to mode = \"rate\"");
            }
        }
    }
    let mode = match b.mode.as_deref() {
        None | Some("consecutive") => {
            let n = b.failures.unwrap_or(5);
            if n == 0 {
                cx.err(format!("{path}.failures"), "must be greater than 0");
            }
            BreakerMode::Consecutive(n.max(1))
        }
        Some("rate") => {
            let rate = b.failure_rate.unwrap_or(50.0);
            if !(rate > 0.0 && rate <= 100.0) {
                cx.err(
                    format!("{path}.failure_rate"),
                    "must be greater than 0 and at most 100",
                );
            }
            let window = b.window.unwrap_or(100);
            let min_calls = b.min_calls.unwrap_or(20);
            if window == 0 {
                cx.err(format!("{path}.window"), "must be greater than 0");
            }
            if b.window_duration.is_none() && min_calls > window {
                cx.err(format!("{path}.min_calls"), "must not exceed window");
            }
            match cx.opt_duration(&format!("{path}.window_duration"), &b.window_duration) {
                Some(d) => {
                    if b.window.is_some() {
                        cx.err(
                            format!("{path}.window"),
                            "give either window (calls) or window_duration (time)",
                        );
                    }
                    if d < Duration::from_secs(1) {
                        cx.err(format!("{path}.window_duration"), "must be at least 1s");
                    }
                    BreakerMode::RateOverTime {
                        rate: rate.clamp(0.0, 100.0) / 100.0,
                        window: d.max(Duration::from_secs(1)),
                        min_calls,
                    }
                }
                None => BreakerMode::Rate {
                    rate: rate.clamp(0.0, 100.0) / 100.0,
                    window: window.max(1),
                    min_calls,
                },
            }
        }
        Some(other) => {
            cx.err(
                format!("{path}.mode"),
                format!("unknown mode `{other}` (use consecutive or rate)"),
            );
            BreakerMode::Consecutive(5)
        }
    };
    let open = cx.duration(&format!("{path}.open"), &b.open, Duration::from_secs(5));
    let max_open = cx.duration(
        &format!("{path}.max_open"),
        &b.max_open,
        Duration::from_secs(60),
    );
    if open.is_zero() {
        cx.err(format!("{path}.open"), "must be greater than 0");
    }
    if max_open < open {
        cx.err(format!("{path}.max_open"), "must not be less than open");
    }
    let probes = b.half_open_probes.unwrap_or(1);
    if probes == 0 {
        cx.err(format!("{path}.half_open_probes"), "must be greater than 0");
    }
    CircuitBreakerPolicy {
        mode,
        open,
        max_open,
        half_open_probes: probes.max(1),
        slow_call: cx.opt_duration(&format!("{path}.slow_call"), &b.slow_call),
        failure_statuses: b
            .failure_statuses
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, s)| match StatusCode::from_u16(*s) {
                Ok(st) if (100..600).contains(s) => Some(st),
                _ => {
                    cx.err(
                        format!("{path}.failure_statuses[{i}]"),
                        format!("`{s}` is not an HTTP status"),
                    );
                    None
                }
            })
            .collect(),
    }
}

fn compile_fault(cx: &mut Cx, path: &str, f: &FaultSpec) -> FaultPolicy {
    let delay = f.delay.as_ref().map(|d| {
        let dur = cx.duration(
            &format!("{path}.delay.duration"),
            &Some(d.duration.clone()),
            Duration::ZERO,
        );
        (dur, cx.percent(&format!("{path}.delay.percent"), d.percent))
    });
    let abort = f.abort.as_ref().map(|a| {
        let status = match a.status {
            Some(s) => match StatusCode::from_u16(s) {
                Ok(st) if (200..600).contains(&s) => st,
                _ => {
                    cx.err(
                        format!("{path}.abort.status"),
                        format!("`{s}` is not an HTTP status from 200 to 599"),
                    );
                    StatusCode::SERVICE_UNAVAILABLE
                }
            },
            None => StatusCode::SERVICE_UNAVAILABLE,
        };
        let grpc = match &a.grpc {
            Some(g) => GrpcCode::parse(g).unwrap_or_else(|| {
                cx.err(
                    format!("{path}.abort.grpc"),
                    format!("`{g}` is not a gRPC code"),
                );
                GrpcCode::Unavailable
            }),
            None => GrpcCode::from_http_status(status),
        };
        if a.status.is_none() && a.grpc.is_none() {
            cx.err(format!("{path}.abort"), "give status, grpc or both");
        }
        (
            status,
            grpc,
            cx.percent(&format!("{path}.abort.percent"), a.percent),
        )
    });
    if f.delay.is_none() && f.abort.is_none() {
        cx.err(path, "give delay, abort or both");
    }
    let only_with_header = f.only_with_header.as_ref().and_then(|h| {
        let (name, value) = match h.split_once(':') {
            Some((n, v)) => (n.trim(), Some(v.trim().to_owned())),
            None => (h.trim(), None),
        };
        cx.header_name(&format!("{path}.only_with_header"), name)
            .map(|n| (n, value))
    });
    FaultPolicy {
        delay,
        abort,
        only_with_header,
    }
}
