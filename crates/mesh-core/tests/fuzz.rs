//! Property tests: parsers and the snapshot builder never panic on any
//! input, unit formatting round-trips, and matching is total and ignores
//! empty path segments.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::LazyLock;
use std::time::Duration;

use mesh_core::units::{
    Period, Rate, format_duration, parse_duration, parse_size, parse_timestamp,
};
use mesh_core::{Config, Snapshot, parse_key_digest};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Keep the source tree clean; a failure prints its minimal input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Mostly strings shaped by `re`, sometimes anything at all.
fn text(re: &'static str) -> BoxedStrategy<String> {
    prop_oneof![4 => re, 1 => any::<String>()].boxed()
}

/// One of the `valid` strings if `clean`; otherwise mostly one of them,
/// sometimes one shaped by `re`, sometimes anything. Clean cases build, so
/// their snapshots get matched against; the others exercise the errors.
fn mostly(clean: bool, valid: &'static [&'static str], re: &'static str) -> BoxedStrategy<String> {
    let valid = proptest::sample::select(valid).prop_map(String::from);
    if clean {
        valid.boxed()
    } else {
        prop_oneof![8 => valid, 1 => re, 1 => any::<String>()].boxed()
    }
}

/// A TOML basic string literal for `s`, escaped.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn q_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    )
}

/// A TOML float literal (TOML spells the specials `nan` and `inf`).
fn f(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v:?}")
    }
}

// ---------------------------------------------------------------------------
// Parsers never panic
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn from_toml_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = Config::from_toml(&text);
    }

    #[test]
    fn from_json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = Config::from_json(&text);
    }

    #[test]
    fn toml_shaped_text_never_panics(text in text(r#"(\[\[?(routes|services|auth\.issuers|apis)\]\]?\n|[a-z_]{1,10} = ("[^"\n]{0,10}"|[0-9.e+-]{1,6}|\{ [a-z_]{1,8} = "[^"\n]{0,8}" \}|\[\])\n){0,12}"#)) {
        if let Ok(c) = Config::from_toml(&text) {
            let _ = Snapshot::build(c, 1);
        }
    }

    #[test]
    fn json_shaped_text_never_panics(text in text(r#"\{"(routes|services|plans|consumers|auth)": ?\[?\{("[a-z_]{1,8}": ?("[^"]{0,8}"|[0-9.e-]{1,5}|true|null|\[\]|\{\}),? ?){0,6}\}?\]?\}"#)) {
        if let Ok(c) = Config::from_json(&text) {
            let _ = Snapshot::build(c, 1);
        }
    }

    #[test]
    fn parse_duration_never_panics(s in text(r"\s?[0-9.]{0,22}(ns|us|µs|ms|s|m|h|d|x|sec|)\s?")) {
        if let Ok(d) = parse_duration(&s) {
            prop_assert!(d.as_nanos() <= 9_000_000_000_000_000_000);
        }
    }

    #[test]
    fn parse_size_never_panics(s in text(r"\s?[0-9]{0,22}\s?(B|KB|MB|GB|KiB|MiB|GiB|TiB|)\s?")) {
        let _ = parse_size(&s);
    }

    #[test]
    fn parse_timestamp_never_panics(s in text(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{0,12})?(Z|[+-][0-9]{2}:[0-9]{2}|é|)")) {
        let _ = parse_timestamp(&s);
    }

    #[test]
    fn rate_never_panics(s in text(r"\s?-?[0-9]{0,22}\s?/?\s?(s|sec|second|m|min|minute|h|hour|d|day|month|week|)")) {
        if let Ok(r) = s.parse::<Rate>() {
            prop_assert!(r.amount > 0);
            prop_assert!(r.interval() <= Duration::from_secs(30 * 86_400));
        }
    }

    #[test]
    fn key_digest_never_panics(s in text(r"(sha256:)?[0-9a-fA-Fé]{60,66}")) {
        if let Some(d) = parse_key_digest(&s) {
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(hex, s[7..].to_ascii_lowercase());
        }
    }
}

// ---------------------------------------------------------------------------
// Units round-trip
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn durations_round_trip(nanos in 0u64..(1 << 53)) {
        let d = Duration::from_nanos(nanos);
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }

    #[test]
    fn rates_round_trip(amount in 1u64..=u64::MAX, period in prop_oneof![
        Just(Period::Second), Just(Period::Minute), Just(Period::Hour), Just(Period::Day), Just(Period::Month)
    ]) {
        let r = Rate { amount, period };
        prop_assert_eq!(r.to_string().parse::<Rate>(), Ok(r));
    }

    #[test]
    fn bare_sizes_are_bytes(n in any::<u64>()) {
        prop_assert_eq!(parse_size(&n.to_string()), Ok(n));
    }
}

// ---------------------------------------------------------------------------
// Structured random configs into Snapshot::build
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct RandomRoute {
    id: String,
    path_kind: u8,
    path: String,
    template: String,
    hosts: Vec<String>,
    methods: Vec<String>,
    header: Option<(String, String, u8)>,
    query: Option<(String, String)>,
    destination: Option<(String, u32)>,
    timeout: Option<(String, String)>,
    retry: Option<(u32, String, String)>,
    limit: Option<(String, Option<u32>)>,
    breaker: Option<(Option<u32>, Option<u32>, String)>,
    fault: Option<(String, f64, Option<u16>)>,
    overrides: Option<(String, usize)>,
}

fn percent(clean: bool) -> BoxedStrategy<f64> {
    if clean {
        (0.0..=100.0).boxed()
    } else {
        prop_oneof![4 => 0.0..=100.0, 1 => any::<f64>()].boxed()
    }
}

fn small_u32(clean: bool, valid: std::ops::RangeInclusive<u32>) -> BoxedStrategy<u32> {
    if clean {
        valid.boxed()
    } else {
        prop_oneof![4 => valid, 1 => any::<u32>()].boxed()
    }
}

fn random_route(clean: bool) -> impl Strategy<Value = RandomRoute> {
    let matching = (
        mostly(clean, &["r", "orders", "files"], "[a-z0-9-]{0,6}"),
        0u8..4,
        mostly(
            clean,
            &[
                "/",
                "/orders",
                "/orders/new",
                "/a/b",
                "//a//b/",
                "/files/x%2Fy",
                "/orders/",
            ],
            r"/?([a-z0-9._~-]{0,4}|\{|\}|\?|#|%2F)(/([a-z0-9._~-]{0,4}|\{|\}|\?|#|%2F)){0,5}/?",
        ),
        mostly(
            clean,
            &[
                "/orders/{id}",
                "/files/{*rest}",
                "/{a}/b",
                "/a/{b}/{*c}",
                "/{x}",
                "/orders/{id}/items",
            ],
            r"/?([a-z0-9._~-]{0,4}|\{\*?[a-z_-]{0,3}\}?|\{|\}|\?|#|%2F)(/([a-z0-9._~-]{0,4}|\{\*?[a-z_-]{0,3}\}?|\{|\}|\?|#|%2F)){0,5}/?",
        ),
        proptest::collection::vec(
            mostly(
                clean,
                &[
                    "api.example.com",
                    "*.example.com",
                    "[::1]",
                    "10.0.0.1",
                    "EXAMPLE.org.",
                ],
                r"(\*\.)?[a-zA-Z0-9.:\[\]*_-]{0,12}\.?",
            ),
            0..3,
        ),
        proptest::collection::vec(
            mostly(clean, &["GET", "post", "PURGE"], "[A-Za-z ()]{0,7}"),
            0..3,
        ),
        proptest::option::of((
            mostly(clean, &["x-a", "X-Tenant"], "[a-zA-Z0-9: _-]{0,8}"),
            any::<String>(),
            0u8..4,
        )),
        proptest::option::of((
            mostly(clean, &["q", "z"], "[a-z=&]{0,5}"),
            if clean {
                "[a-zA-Z0-9%._~-]{0,8}".boxed()
            } else {
                any::<String>().boxed()
            },
        )),
    );
    let policies = (
        proptest::option::of((
            mostly(clean, &["orders", "svc"], "[a-z]{0,4}"),
            small_u32(clean, 0..=100),
        )),
        proptest::option::of((
            mostly(clean, &["5s", "2m", "1.5s"], r"[0-9.]{0,5}(ms|s|m|h|d|x|)"),
            mostly(
                clean,
                &["1s", "250ms", "1.5s"],
                r"[0-9.]{0,5}(ms|s|m|h|d|x|)",
            ),
        )),
        proptest::option::of((
            small_u32(clean, 1..=10),
            mostly(clean, &["25ms", "100ms", "1s"], r"[0-9.]{0,5}(ms|s|)"),
            mostly(clean, &["64KiB", "1MB", "100"], r"[0-9]{0,6}(B|KiB|MB|x|)"),
        )),
        proptest::option::of((
            mostly(
                clean,
                &["10/s", "100/min", "5/h", "1000/d"],
                r"[0-9-]{0,6}/(s|min|h|d|month|x)",
            ),
            proptest::option::of(small_u32(clean, 1..=1000)),
        )),
        proptest::option::of((
            proptest::option::of(small_u32(clean, 20..=200)),
            proptest::option::of(small_u32(clean, 0..=20)),
            mostly(clean, &["rate", "consecutive"], "[a-z]{0,6}"),
        )),
        proptest::option::of((
            mostly(clean, &["x-chaos", "x-chaos: on"], "[a-zA-Z0-9: -]{0,10}"),
            percent(clean),
            proptest::option::of(if clean {
                (200u16..600).boxed()
            } else {
                prop_oneof![4 => 200u16..600, 1 => any::<u16>()].boxed()
            }),
        )),
        proptest::option::of((
            mostly(clean, &["canary", "stable"], "[a-z]{0,4}"),
            0usize..2,
        )),
    );
    (matching, policies).prop_map(
        |(
            (id, path_kind, path, template, hosts, methods, header, query),
            (destination, timeout, retry, limit, breaker, fault, overrides),
        )| RandomRoute {
            id,
            path_kind,
            path,
            template,
            hosts,
            methods,
            header,
            query,
            destination,
            timeout,
            retry,
            limit,
            breaker,
            fault,
            overrides,
        },
    )
}

/// The TOML of route number `i`; the index keeps ids mostly unique.
fn route_toml(i: usize, r: &RandomRoute) -> String {
    let mut m = vec![];
    match r.path_kind {
        0 => m.push(format!("path = {}", q(&r.path))),
        1 => m.push(format!("path_prefix = {}", q(&r.path))),
        2 => m.push(format!("path_template = {}", q(&r.template))),
        _ => {}
    }
    if !r.hosts.is_empty() {
        m.push(format!("hosts = {}", q_list(&r.hosts)));
    }
    if !r.methods.is_empty() {
        m.push(format!("methods = {}", q_list(&r.methods)));
    }
    if let Some((name, value, kind)) = &r.header {
        let cond = match kind {
            0 => format!("value = {}", q(value)),
            1 => format!("prefix = {}", q(value)),
            2 => "present = false".to_owned(),
            _ => "present = true".to_owned(),
        };
        m.push(format!("headers = [{{ name = {}, {cond} }}]", q(name)));
    }
    if let Some((name, value)) = &r.query {
        m.push(format!(
            "query = [{{ name = {}, value = {} }}]",
            q(name),
            q(value)
        ));
    }
    let id = format!("{}-{i}", r.id);
    let mut t = format!(
        "[[routes]]\nid = {}\nmatch = {{ {} }}\n",
        q(&id),
        m.join(", ")
    );
    if let Some((svc, weight)) = &r.destination {
        t.push_str(&format!(
            "destinations = [{{ service = {}, weight = {weight} }}, {{ service = \"orders\", weight = 1, failover = [\"svc\"] }}]\n",
            q(svc)
        ));
    }
    if let Some((total, per_try)) = &r.timeout {
        t.push_str(&format!(
            "timeout = {{ total = {}, per_try = {} }}\n",
            q(total),
            q(per_try)
        ));
    }
    if let Some((attempts, backoff, replay)) = &r.retry {
        t.push_str(&format!(
            "retry = {{ attempts = {attempts}, backoff = {}, replay_limit = {} }}\n",
            q(backoff),
            q(replay)
        ));
    }
    if let Some((rate, burst)) = &r.limit {
        let burst = burst.map(|b| format!(", burst = {b}")).unwrap_or_default();
        t.push_str(&format!(
            "rate_limit = {{ limits = [{{ rate = {}{burst}, key = [\"ip\", \"header:x-k\"] }}] }}\n",
            q(rate)
        ));
    }
    if let Some((window, min_calls, mode)) = &r.breaker {
        let mut b = vec![format!("mode = {}", q(mode))];
        // Window fields belong to the rate mode; elsewhere they are errors.
        if mode != "consecutive" {
            if let Some(w) = window {
                b.push(format!("window = {w}"));
            }
            if let Some(mc) = min_calls {
                b.push(format!("min_calls = {mc}"));
            }
        }
        t.push_str(&format!("circuit_breaker = {{ {} }}\n", b.join(", ")));
    }
    if let Some((header, percent, status)) = &r.fault {
        let status = status
            .map(|s| format!("status = {s}, "))
            .unwrap_or_else(|| "grpc = \"UNAVAILABLE\", ".into());
        t.push_str(&format!(
            "fault = {{ only_with_header = {}, abort = {{ {status}percent = {} }} }}\n",
            q(header),
            f(*percent)
        ));
    }
    if let (Some((value, idx)), Some(_)) = (&r.overrides, &r.destination) {
        t.push_str(&format!(
            "split = {{ override_header = \"x-o\", overrides = {{ {} = {idx} }} }}\n",
            q(value)
        ));
    }
    t
}

#[derive(Debug, Clone)]
struct RandomService {
    name: String,
    address: String,
    id: Option<String>,
    percent: f64,
}

fn random_service(clean: bool) -> impl Strategy<Value = RandomService> {
    (
        mostly(clean, &["shadow", "backup", "dr", "mirror"], "[a-z]{0,3}"),
        mostly(
            clean,
            &["10.0.0.2:80", "svc.internal:8080", "[::1]:9000"],
            r"(\[[0-9a-f:]{0,8}\]|[a-z0-9.@]{0,8}):?[0-9]{0,6}",
        ),
        proptest::option::of(text("[a-z0-9:.]{0,4}")),
        percent(clean),
    )
        .prop_map(|(name, address, id, percent)| RandomService {
            name,
            address,
            id,
            percent,
        })
}

/// The TOML of service number `i`; the index keeps names mostly unique.
fn service_toml(i: usize, s: &RandomService) -> String {
    let id =
        s.id.as_ref()
            .map(|i| format!("id = {}, ", q(i)))
            .unwrap_or_default();
    format!(
        "[[services]]\nname = {}\noutlier = {{ max_ejection_percent = {} }}\nendpoints = [{{ {id}address = {} }}]\n",
        q(&format!("{}-{i}", s.name)),
        f(s.percent),
        q(&s.address)
    )
}

fn random_auth(clean: bool) -> impl Strategy<Value = String> {
    (
        mostly(clean, &["HS256", "HS384", "HS512"], "(none|NONE|RS256|[A-Za-z0-9]{0,5})"),
        mostly(clean, &["0123456789abcdef0123456789abcdef"], "[a-zA-Z0-9]{0,40}"),
        if clean { Just(0u8).boxed() } else { prop_oneof![6 => Just(0u8), 1 => 1u8..4].boxed() },
        mostly(clean, &["30s", "5m", "0"], r"[0-9.]{0,4}(ms|s|m|h|)"),
        mostly(clean, &["https://id.example.com"], "(https?://)?[a-z.]{0,8}(/[a-z]{0,4})?"),
    )
        .prop_map(|(alg, secret, source, leeway, url)| {
            let source = match source {
                0 => format!("secret = {}", q(&secret)),
                1 => format!("pem = {}", q(&secret)),
                2 => format!("secret = {}, pem = {}", q(&secret), q(&secret)),
                _ => format!("jwk = {{ kty = \"oct\", k = {} }}", q(&secret)),
            };
            format!(
                "[auth]\nleeway = {}\n[[auth.issuers]]\nissuer = {}\ndiscovery = true\nalgorithms = [{}]\nkeys = [{{ algorithm = {}, {source} }}]\n",
                q(&leeway),
                q(&url),
                q(&alg),
                q(&alg)
            )
        })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn random_route_tables_never_panic(
        (clean, services, routes, auth) in any::<bool>().prop_flat_map(|clean| (
            Just(clean),
            proptest::collection::vec(random_service(clean), 0..3),
            proptest::collection::vec(random_route(clean), 1..5),
            random_auth(clean),
        )),
        probe in path(),
    ) {
        let mut text = String::from(
            "[[services]]\nname = \"orders\"\nendpoints = [{ address = \"10.0.0.1:80\" }]\n\
             [[services]]\nname = \"svc\"\nendpoints = [{ address = \"10.0.0.2:80\" }]\n",
        );
        for (i, s) in services.iter().enumerate() {
            text.push_str(&service_toml(i, s));
        }
        for (i, r) in routes.iter().enumerate() {
            text.push_str(&route_toml(i, r));
        }
        text.push_str(&auth);
        // The generator writes well-typed TOML, so it always parses; only
        // the snapshot builder may reject it.
        let config = match Config::from_toml(&text) {
            Ok(c) => c,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n{text}"))),
        };
        match Snapshot::build(config.clone(), 1) {
            Ok(snapshot) => {
                prop_assert_eq!(snapshot.routes().len(), routes.len());
                if let Ok(req) = http::Request::get(probe.as_str()).header("host", "api.example.com").body(()) {
                    let _ = snapshot.match_request(&req);
                }
                // A route without conditions other than its path always
                // matches a request for that path (perhaps shadowed by an
                // earlier or more specific route, but something matches).
                for r in routes.iter().filter(|r| {
                    r.hosts.is_empty() && r.methods.is_empty() && r.header.is_none() && r.query.is_none()
                }) {
                    let concrete = match r.path_kind {
                        0 => r.path.clone(),
                        1 => format!("{}/extra", r.path.trim_end_matches('/')),
                        2 => r
                            .template
                            .split('/')
                            .map(|seg| match seg.strip_prefix('{') {
                                Some(p) if p.starts_with('*') => "a/b",
                                Some(_) => "x",
                                None => seg,
                            })
                            .collect::<Vec<_>>()
                            .join("/"),
                        _ => "/anything".to_owned(),
                    };
                    if let Ok(req) = http::Request::get(concrete.as_str()).body(()) {
                        prop_assert!(snapshot.match_request(&req).is_some(), "{} for {:?}", concrete, r);
                    }
                }
                // What builds still builds after a JSON round-trip. (Not
                // compared for equality: serde_json's default float parsing
                // may be off by one ULP.)
                let json = serde_json::to_string(&config).unwrap();
                let back = Config::from_json(&json).unwrap();
                prop_assert!(Snapshot::build(back, 2).is_ok());
            }
            Err(e) => {
                prop_assert!(!clean, "a clean config should build: {}\n{}", e, text);
                let errors = e.errors();
                prop_assert!(!errors.is_empty());
                for err in errors {
                    prop_assert!(!err.message.is_empty(), "{:?}", err);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Arbitrary requests against a built snapshot
// ---------------------------------------------------------------------------

static SNAPSHOT: LazyLock<Snapshot> = LazyLock::new(|| {
    Snapshot::from_toml(
        r#"
[[routes]]
id = "order"
match = { path_template = "/orders/{id}", methods = ["GET"] }
[[routes]]
id = "order-items"
match = { path_template = "/orders/{id}/items/{item}" }
[[routes]]
id = "files"
match = { path_template = "/files/{*rest}", hosts = ["*.example.com"] }
[[routes]]
id = "exact"
match = { path = "/a/b", hosts = ["api.example.com", "[::1]", "10.0.0.1"] }
[[routes]]
id = "hdr"
match = { path_prefix = "/a", headers = [{ name = "x-a", prefix = "1" }], query = [{ name = "q", value = "1" }] }
[[routes]]
id = "ab-param"
match = { path_template = "/{x}/b/{y}", query = [{ name = "z", present = false }] }
[[routes]]
id = "root"
match = { path_prefix = "/", methods = ["POST"] }
"#,
        1,
    )
    .unwrap()
});

fn segment() -> BoxedStrategy<String> {
    mostly(
        false,
        &["a", "b", "orders", "files", "items", "42", ""],
        "[a-z0-9{}*%.~-]{0,5}",
    )
}

fn path() -> BoxedStrategy<String> {
    prop_oneof![
        3 => proptest::collection::vec(segment(), 0..6).prop_map(|s| format!("/{}", s.join("/"))),
        1 => text(r"/[/a-z0-9{}*%.~?&=#-]{0,40}"),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn matching_arbitrary_requests_never_panics(
        path in path(),
        query in mostly(false, &["", "?q=1", "?z", "?q=1&z=2", "?"], "[?&=a-z0-9%]{0,8}"),
        host in mostly(false,
            &["api.example.com", "x.example.com:8080", "[::1]:80", "10.0.0.1", "other.org."],
            r"(\[[0-9a-f:]{0,6}\]|[a-zA-Z0-9.*-]{0,16})(:[0-9]{0,6})?\.?",
        ),
        method in mostly(false, &["GET", "POST", "get"], "[A-Z]{1,6}"),
        header in text("[ -~]{0,6}"),
        absolute in any::<bool>(),
    ) {
        let uri = if absolute { format!("http://{host}{path}{query}") } else { format!("{path}{query}") };
        let req = http::Request::builder()
            .method(method.as_str())
            .uri(uri.as_str())
            .header("host", host.as_str())
            .header("x-a", header.as_str())
            .body(());
        if let Ok(req) = req {
            let first = SNAPSHOT.match_request(&req).map(|r| r.id().to_owned());
            let again = SNAPSHOT.match_request(&req).map(|r| r.id().to_owned());
            prop_assert_eq!(&first, &again);
            // The unconditional POST catch-all means no POST goes unmatched.
            if req.method() == http::Method::POST {
                prop_assert!(first.is_some(), "{}", uri);
            }
        }
    }

    #[test]
    fn empty_segments_never_change_the_match(
        segments in proptest::collection::vec(segment(), 0..6),
        query in mostly(false, &["q=1", "z", "z=0", "q=2&z", ""], "[&=a-z0-9]{0,6}"),
        host in mostly(false,
            &["api.example.com", "x.example.com", "[::1]:80", "10.0.0.1:8080", "other"],
            "[a-z.:]{0,10}",
        ),
        post in any::<bool>(),
    ) {
        let plain = format!("/{}", segments.join("/"));
        let padded = format!("//{}/", segments.join("//"));
        let method = if post { "POST" } else { "GET" };
        let build = |path: &str| {
            http::Request::builder()
                .method(method)
                .uri(format!("{path}?{query}"))
                .header("host", host.as_str())
                .header("x-a", "1")
                .body(())
        };
        if let (Ok(a), Ok(b)) = (build(&plain), build(&padded)) {
            let ra = SNAPSHOT.match_request(&a).map(|r| r.id().to_owned());
            let rb = SNAPSHOT.match_request(&b).map(|r| r.id().to_owned());
            prop_assert_eq!(ra, rb, "{} vs {}", plain, padded);
        }
    }
}
