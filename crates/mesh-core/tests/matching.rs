//! Route matching through `Snapshot::match_request`: hosts, methods,
//! headers, query, the precedence rules documented in `matcher.rs`,
//! config-order tie-breaks, empty-segment normalization and a large table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{Method, Request};
use mesh_core::{Config, Snapshot};

#[track_caller]
fn snapshot(toml: &str) -> Snapshot {
    match Snapshot::from_toml(toml, 1) {
        Ok(s) => s,
        Err(e) => panic!("should build, got {e}\n{toml}"),
    }
}

/// A request; `headers` are `(name, value)` pairs.
fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

/// The id of the route `req` matches.
fn hit<'a>(s: &'a Snapshot, req: &Request<()>) -> Option<&'a str> {
    s.match_request(req).map(|r| r.id())
}

fn get<'a>(s: &'a Snapshot, uri: &str) -> Option<&'a str> {
    hit(s, &req("GET", uri, &[]))
}

fn get_host<'a>(s: &'a Snapshot, uri: &str, host: &str) -> Option<&'a str> {
    hit(s, &req("GET", uri, &[("host", host)]))
}

// ---------------------------------------------------------------------------
// Hosts
// ---------------------------------------------------------------------------

const HOSTS: &str = r#"
[[routes]]
id = "exact"
match = { path_prefix = "/", hosts = ["api.example.com"] }

[[routes]]
id = "wildcard"
match = { path_prefix = "/", hosts = ["*.example.com"] }

[[routes]]
id = "multi"
match = { path_prefix = "/", hosts = ["shop.example.org", "SHOP.example.net"] }

[[routes]]
id = "ipv6"
match = { path_prefix = "/", hosts = ["[::1]"] }

[[routes]]
id = "ip"
match = { path_prefix = "/", hosts = ["10.0.0.1"] }

[[routes]]
id = "dotted"
match = { path_prefix = "/", hosts = ["fqdn.example.org."] }
"#;

#[test]
fn exact_host_from_the_host_header() {
    let s = snapshot(HOSTS);
    assert_eq!(get_host(&s, "/x", "api.example.com"), Some("exact"));
    assert_eq!(
        get_host(&s, "/x", "API.Example.COM"),
        Some("exact"),
        "case-insensitive"
    );
    assert_eq!(get_host(&s, "/x", "shop.example.org"), Some("multi"));
    assert_eq!(
        get_host(&s, "/x", "shop.example.net"),
        Some("multi"),
        "patterns are lower-cased"
    );
    assert_eq!(get_host(&s, "/x", "10.0.0.1"), Some("ip"));
    assert_eq!(get_host(&s, "/x", "other.org"), None);
    assert_eq!(get_host(&s, "/x", "example.com"), None);
    // No host at all cannot match a route that names hosts.
    assert_eq!(get(&s, "/x"), None);
}

#[test]
fn host_with_port() {
    let s = snapshot(HOSTS);
    assert_eq!(get_host(&s, "/x", "api.example.com:8443"), Some("exact"));
    assert_eq!(get_host(&s, "/x", "a.example.com:80"), Some("wildcard"));
    assert_eq!(get_host(&s, "/x", "10.0.0.1:9000"), Some("ip"));
    assert_eq!(get_host(&s, "/x", "[::1]:8080"), Some("ipv6"));
    assert_eq!(get_host(&s, "/x", "[::1]"), Some("ipv6"));
}

#[test]
fn host_with_trailing_dot() {
    let s = snapshot(HOSTS);
    assert_eq!(get_host(&s, "/x", "api.example.com."), Some("exact"));
    assert_eq!(get_host(&s, "/x", "fqdn.example.org"), Some("dotted"));
    assert_eq!(get_host(&s, "/x", "fqdn.example.org."), Some("dotted"));
}

#[test]
fn wildcard_hosts() {
    let s = snapshot(HOSTS);
    assert_eq!(get_host(&s, "/x", "a.example.com"), Some("wildcard"));
    assert_eq!(get_host(&s, "/x", "a.b.EXAMPLE.com"), Some("wildcard"));
    // The exact route comes first in the config.
    assert_eq!(get_host(&s, "/x", "api.example.com"), Some("exact"));
    // A wildcard needs at least one more label, on a label boundary.
    assert_eq!(get_host(&s, "/x", "example.com"), None);
    assert_eq!(get_host(&s, "/x", ".example.com"), None);
    assert_eq!(get_host(&s, "/x", "evilexample.com"), None);
    assert_eq!(get_host(&s, "/x", "example.com.evil.org"), None);
}

#[test]
fn host_from_the_uri_authority() {
    let s = snapshot(HOSTS);
    assert_eq!(get(&s, "http://api.example.com/x"), Some("exact"));
    assert_eq!(get(&s, "https://api.example.com:8443/x?y=1"), Some("exact"));
    assert_eq!(get(&s, "http://a.example.com/x"), Some("wildcard"));
    assert_eq!(get(&s, "http://[::1]:8080/x"), Some("ipv6"));
    // The authority wins over the Host header (HTTP/2 `:authority`).
    assert_eq!(
        get_host(&s, "http://a.example.com/x", "api.example.com"),
        Some("wildcard")
    );
    assert_eq!(get_host(&s, "http://other.org/x", "api.example.com"), None);
}

#[test]
fn routes_without_hosts_match_any_host() {
    let s = snapshot(
        r#"
[[routes]]
id = "scoped"
match = { path = "/x", hosts = ["api.example.com"] }
[[routes]]
id = "any"
match = { path = "/x" }
"#,
    );
    assert_eq!(get_host(&s, "/x", "api.example.com"), Some("scoped"));
    assert_eq!(get_host(&s, "/x", "other.example.com"), Some("any"));
    assert_eq!(get(&s, "/x"), Some("any"));
}

// ---------------------------------------------------------------------------
// Methods
// ---------------------------------------------------------------------------

#[test]
fn methods() {
    let s = snapshot(
        r#"
[[routes]]
id = "read"
match = { path = "/items", methods = ["get", "HEAD"] }
[[routes]]
id = "write"
match = { path = "/items", methods = ["POST", "PUT", "PURGE"] }
[[routes]]
id = "any"
match = { path_prefix = "/items" }
"#,
    );
    for (method, want) in [
        ("GET", "read"),
        ("HEAD", "read"),
        ("POST", "write"),
        ("PUT", "write"),
        ("PURGE", "write"),
        ("DELETE", "any"),
        ("OPTIONS", "any"),
    ] {
        assert_eq!(hit(&s, &req(method, "/items", &[])), Some(want), "{method}");
    }
    // Method names are case-sensitive on the wire.
    assert_eq!(hit(&s, &req("get", "/items", &[])), Some("any"));
    // And through match_parts.
    let uri: http::Uri = "/items".parse().unwrap();
    let r = s.match_parts(&Method::POST, &uri, &http::HeaderMap::new());
    assert_eq!(r.map(|r| r.id()), Some("write"));
}

// ---------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------

const HEADERS: &str = r#"
[[routes]]
id = "exact"
match = { path = "/h", headers = [{ name = "X-Tenant", value = "acme" }] }

[[routes]]
id = "prefix"
match = { path = "/h", headers = [{ name = "x-tenant", prefix = "t-" }] }

[[routes]]
id = "present"
match = { path = "/h", headers = [{ name = "x-debug" }, { name = "x-trace", present = true }] }

[[routes]]
id = "absent"
match = { path = "/h", headers = [{ name = "authorization", present = false }] }

[[routes]]
id = "fallback"
match = { path = "/h" }
"#;

#[test]
fn header_exact() {
    let s = snapshot(HEADERS);
    let h = |hs: &[(&str, &str)]| hit(&s, &req("GET", "/h", hs)).map(str::to_owned);
    assert_eq!(h(&[("x-tenant", "acme")]).as_deref(), Some("exact"));
    assert_eq!(
        h(&[("X-TENANT", "acme")]).as_deref(),
        Some("exact"),
        "names are case-insensitive"
    );
    // Values are compared exactly.
    assert_eq!(
        h(&[("x-tenant", "ACME"), ("authorization", "x")]).as_deref(),
        Some("fallback")
    );
    assert_eq!(
        h(&[("x-tenant", "acme2"), ("authorization", "x")]).as_deref(),
        Some("fallback")
    );
    // Any one of several values is enough.
    assert_eq!(
        h(&[("x-tenant", "other"), ("x-tenant", "acme")]).as_deref(),
        Some("exact")
    );
}

#[test]
fn header_prefix() {
    let s = snapshot(HEADERS);
    let h = |hs: &[(&str, &str)]| hit(&s, &req("GET", "/h", hs)).map(str::to_owned);
    assert_eq!(h(&[("x-tenant", "t-42")]).as_deref(), Some("prefix"));
    assert_eq!(h(&[("x-tenant", "t-")]).as_deref(), Some("prefix"));
    assert_eq!(
        h(&[("x-tenant", "T-42"), ("authorization", "x")]).as_deref(),
        Some("fallback")
    );
    assert_eq!(
        h(&[("x-tenant", "xt-42"), ("authorization", "x")]).as_deref(),
        Some("fallback")
    );
}

#[test]
fn header_present_and_absent() {
    let s = snapshot(HEADERS);
    let h = |hs: &[(&str, &str)]| hit(&s, &req("GET", "/h", hs)).map(str::to_owned);
    // Both conditions of `present` must hold.
    assert_eq!(
        h(&[("x-debug", ""), ("x-trace", "1"), ("authorization", "x")]).as_deref(),
        Some("present")
    );
    assert_eq!(
        h(&[("x-debug", "1"), ("authorization", "x")]).as_deref(),
        Some("fallback")
    );
    // `absent` matches when authorization is missing.
    assert_eq!(h(&[]).as_deref(), Some("absent"));
    assert_eq!(h(&[("x-debug", "1")]).as_deref(), Some("absent"));
    assert_eq!(
        h(&[("Authorization", "Bearer x")]).as_deref(),
        Some("fallback")
    );
}

// ---------------------------------------------------------------------------
// Query
// ---------------------------------------------------------------------------

const QUERY: &str = r#"
[[routes]]
id = "exact"
match = { path = "/q", query = [{ name = "format", value = "json" }] }

[[routes]]
id = "present"
match = { path = "/q", query = [{ name = "debug" }] }

[[routes]]
id = "absent"
match = { path = "/q", query = [{ name = "legacy", present = false }] }

[[routes]]
id = "fallback"
match = { path = "/q" }
"#;

#[test]
fn query_exact() {
    let s = snapshot(QUERY);
    assert_eq!(get(&s, "/q?format=json"), Some("exact"));
    assert_eq!(get(&s, "/q?a=1&format=json&b"), Some("exact"));
    assert_eq!(
        get(&s, "/q?format=xml&format=json"),
        Some("exact"),
        "any occurrence"
    );
    // Values are raw and case-sensitive; names too.
    assert_eq!(get(&s, "/q?format=JSON&legacy"), Some("fallback"));
    assert_eq!(get(&s, "/q?format=js%6Fn&legacy"), Some("fallback"));
    assert_eq!(get(&s, "/q?Format=json&legacy"), Some("fallback"));
    assert_eq!(get(&s, "/q?format&legacy"), Some("fallback"));
}

#[test]
fn query_present_and_absent() {
    let s = snapshot(QUERY);
    assert_eq!(get(&s, "/q?debug"), Some("present"));
    assert_eq!(get(&s, "/q?debug="), Some("present"));
    assert_eq!(get(&s, "/q?x=1&&debug=0"), Some("present"));
    assert_eq!(get(&s, "/q?debugging=1&legacy"), Some("fallback"));
    assert_eq!(get(&s, "/q"), Some("absent"));
    assert_eq!(get(&s, "/q?"), Some("absent"));
    assert_eq!(get(&s, "/q?other=1"), Some("absent"));
    assert_eq!(get(&s, "/q?legacy=1"), Some("fallback"));
    assert_eq!(get(&s, "/q?legacy"), Some("fallback"));
}

#[test]
fn all_conditions_must_hold() {
    let s = snapshot(
        r#"
[[routes]]
id = "all"
match = { path = "/a", hosts = ["api.example.com"], methods = ["POST"], headers = [{ name = "x-a", value = "1" }], query = [{ name = "q", value = "1" }] }
"#,
    );
    let ok = [("host", "api.example.com"), ("x-a", "1")];
    assert_eq!(hit(&s, &req("POST", "/a?q=1", &ok)), Some("all"));
    assert_eq!(hit(&s, &req("GET", "/a?q=1", &ok)), None);
    assert_eq!(hit(&s, &req("POST", "/a?q=2", &ok)), None);
    assert_eq!(
        hit(&s, &req("POST", "/a?q=1", &[("host", "api.example.com")])),
        None
    );
    assert_eq!(
        hit(
            &s,
            &req("POST", "/a?q=1", &[("host", "x.example.com"), ("x-a", "1")])
        ),
        None
    );
    assert_eq!(hit(&s, &req("POST", "/b?q=1", &ok)), None);
}

// ---------------------------------------------------------------------------
// Precedence
// ---------------------------------------------------------------------------

const PRECEDENCE: &str = r#"
[[routes]]
id = "root"
match = { path_prefix = "/" }

[[routes]]
id = "orders-prefix"
match = { path_prefix = "/orders" }

[[routes]]
id = "order"
match = { path_template = "/orders/{id}" }

[[routes]]
id = "order-new"
match = { path = "/orders/new" }

[[routes]]
id = "order-items"
match = { path_template = "/orders/{id}/items" }

[[routes]]
id = "order-rest"
match = { path_template = "/orders/{id}/{*rest}" }

[[routes]]
id = "files"
match = { path_template = "/files/{*path}" }

[[routes]]
id = "files-readme"
match = { path = "/files/README" }

[[routes]]
id = "v-prefix"
match = { path_prefix = "/v1/orders" }
"#;

#[test]
fn longest_match_wins() {
    let s = snapshot(PRECEDENCE);
    // `/orders/{id}` beats the prefix `/orders` (rule 1).
    assert_eq!(get(&s, "/orders/42"), Some("order"));
    assert_eq!(get(&s, "/orders/42/items"), Some("order-items"));
    assert_eq!(get(&s, "/orders"), Some("orders-prefix"));
    // The deeper prefix beats the root prefix.
    assert_eq!(get(&s, "/v1/orders/7"), Some("v-prefix"));
    assert_eq!(get(&s, "/v1/other"), Some("root"));
}

#[test]
fn literal_beats_param_beats_catch_all_and_prefix() {
    let s = snapshot(PRECEDENCE);
    // Rule 2: at the same depth a literal beats a param...
    assert_eq!(get(&s, "/orders/new"), Some("order-new"));
    assert_eq!(get(&s, "/files/README"), Some("files-readme"));
    // ...which beats a catch-all...
    assert_eq!(get(&s, "/orders/42/items"), Some("order-items"));
    assert_eq!(get(&s, "/orders/42/history"), Some("order-rest"));
    assert_eq!(get(&s, "/orders/42/a/b/c"), Some("order-rest"));
    // ...and the catch-all beats the prefix anchored at the same place.
    assert_eq!(get(&s, "/files/a/b"), Some("files"));
}

#[test]
fn catch_all_needs_at_least_one_segment() {
    let s = snapshot(PRECEDENCE);
    assert_eq!(get(&s, "/files"), Some("root"));
    assert_eq!(get(&s, "/files/"), Some("root"));
    assert_eq!(get(&s, "/files/x"), Some("files"));
}

#[test]
fn prefix_on_segment_boundaries() {
    let s = snapshot(PRECEDENCE);
    assert_eq!(get(&s, "/ordersx"), Some("root"));
    assert_eq!(get(&s, "/orders/"), Some("orders-prefix"));
    assert_eq!(get(&s, "/v1/ordersx"), Some("root"));
    assert_eq!(get(&s, "/"), Some("root"));
}

#[test]
fn a_literal_whose_conditions_fail_falls_back_to_a_param() {
    let s = snapshot(
        r#"
[[routes]]
id = "new-post-only"
match = { path = "/orders/new", methods = ["POST"] }

[[routes]]
id = "order"
match = { path_template = "/orders/{id}" }

[[routes]]
id = "deep-literal"
match = { path = "/a/b/c", headers = [{ name = "x-deep" }] }

[[routes]]
id = "deep-param"
match = { path_template = "/a/{x}/c" }

[[routes]]
id = "shallow-prefix"
match = { path_prefix = "/a" }
"#,
    );
    assert_eq!(
        hit(&s, &req("POST", "/orders/new", &[])),
        Some("new-post-only")
    );
    assert_eq!(get(&s, "/orders/new"), Some("order"));
    assert_eq!(
        hit(&s, &req("GET", "/a/b/c", &[("x-deep", "1")])),
        Some("deep-literal")
    );
    assert_eq!(get(&s, "/a/b/c"), Some("deep-param"));
    assert_eq!(get(&s, "/a/b/d"), Some("shallow-prefix"));
}

/// Pins the current behaviour where the documented rule 1 ("the longest
/// match wins") and the implementation part ways: the trie walk tries the
/// literal branch first and takes any match found there, even a shorter
/// prefix, before trying a `{param}` branch that would cover more segments.
/// So precedence is decided at the first segment where two routes differ
/// (literal > param > catch-all/prefix), not by total length.
#[test]
fn an_earlier_literal_beats_a_longer_match_through_a_param() {
    let s = snapshot(
        r#"
[[routes]]
id = "short-literal-prefix"
match = { path_prefix = "/a/b" }

[[routes]]
id = "long-template"
match = { path_template = "/{x}/b/c" }
"#,
    );
    assert_eq!(get(&s, "/a/b/c"), Some("short-literal-prefix"));
    assert_eq!(get(&s, "/z/b/c"), Some("long-template"));
}

#[test]
fn config_order_breaks_ties() {
    let routes = |first: &str, second: &str| {
        format!(
            "[[routes]]\nid = \"{first}\"\nmatch = {{ path_template = \"/t/{{id}}\" }}\n[[routes]]\nid = \"{second}\"\nmatch = {{ path_template = \"/t/{{key}}\" }}\n"
        )
    };
    let s = snapshot(&routes("one", "two"));
    assert_eq!(get(&s, "/t/1"), Some("one"));
    let s = snapshot(&routes("two", "one"));
    assert_eq!(get(&s, "/t/1"), Some("two"));

    // The first whose other conditions hold wins.
    let s = snapshot(
        r#"
[[routes]]
id = "a"
match = { path = "/x", headers = [{ name = "x-a" }] }
[[routes]]
id = "b"
match = { path = "/x", headers = [{ name = "x-b" }] }
[[routes]]
id = "c"
match = { path = "/x" }
[[routes]]
id = "d"
match = { path = "/x" }
"#,
    );
    assert_eq!(
        hit(&s, &req("GET", "/x", &[("x-a", "1"), ("x-b", "1")])),
        Some("a")
    );
    assert_eq!(hit(&s, &req("GET", "/x", &[("x-b", "1")])), Some("b"));
    assert_eq!(get(&s, "/x"), Some("c"));
    // Prefixes anchored at the same node tie-break the same way.
    let s = snapshot(
        "[[routes]]\nid = \"p1\"\nmatch = { path_prefix = \"/p\" }\n[[routes]]\nid = \"p2\"\nmatch = { path_prefix = \"/p/\" }\n",
    );
    assert_eq!(get(&s, "/p/q"), Some("p1"));
}

#[test]
fn a_route_without_a_path_matches_everything() {
    let s = snapshot("[[routes]]\nid = \"all\"\n");
    for uri in ["/", "/a", "/a/b/c?x=1", "http://h/z", "//"] {
        assert_eq!(get(&s, uri), Some("all"), "{uri}");
    }
    assert_eq!(&**s.route("all").unwrap().path_label(), "/*");
}

// ---------------------------------------------------------------------------
// Paths: normalization, case, encoding
// ---------------------------------------------------------------------------

#[test]
fn empty_segments_are_ignored() {
    let s = snapshot(
        r#"
[[routes]]
id = "a"
match = { path = "/a" }
[[routes]]
id = "ab"
match = { path = "/a//b/" }
[[routes]]
id = "t"
match = { path_template = "/t/{id}/" }
[[routes]]
id = "root"
match = { path = "/" }
"#,
    );
    for uri in ["/a", "//a", "/a/", "//a//", "/a///"] {
        assert_eq!(get(&s, uri), Some("a"), "{uri}");
    }
    for uri in ["/a/b", "/a//b", "//a/b/", "/a/b//"] {
        assert_eq!(get(&s, uri), Some("ab"), "{uri}");
    }
    for uri in ["/t/1", "/t//1", "/t/1/"] {
        assert_eq!(get(&s, uri), Some("t"), "{uri}");
    }
    assert_eq!(get(&s, "/t"), None);
    assert_eq!(get(&s, "/t//"), None);
    for uri in ["/", "//", "///"] {
        assert_eq!(get(&s, uri), Some("root"), "{uri}");
    }
}

#[test]
fn matching_is_case_sensitive_and_raw() {
    let s = snapshot(
        r#"
[[routes]]
id = "a"
match = { path = "/Orders/a b" }
[[routes]]
id = "enc"
match = { path = "/x%2Fy" }
"#,
    );
    assert_eq!(get(&s, "/Orders/a%20b"), None, "not percent-decoded");
    assert_eq!(get(&s, "/x%2Fy"), Some("enc"));
    assert_eq!(get(&s, "/x/y"), None);
    assert_eq!(get(&s, "/x%2fy"), None);
}

#[test]
fn the_query_is_not_part_of_the_path() {
    let s = snapshot("[[routes]]\nid = \"a\"\nmatch = { path = \"/a\" }\n");
    assert_eq!(get(&s, "/a?b=/c"), Some("a"));
    assert_eq!(get(&s, "http://host/a?x"), Some("a"));
}

// ---------------------------------------------------------------------------
// Scale
// ---------------------------------------------------------------------------

#[test]
fn a_thousand_routes_each_match_their_own_path() {
    let mut text = String::new();
    for i in 0..1000 {
        let (kind, pattern) = match i % 4 {
            0 => ("path", format!("/svc{i}/items")),
            1 => ("path_template", format!("/svc{i}/items/{{id}}")),
            2 => ("path_prefix", format!("/svc{i}")),
            _ => ("path_template", format!("/shared/{i}/{{*rest}}")),
        };
        text.push_str(&format!(
            "[[routes]]\nid = \"r{i}\"\nmatch = {{ {kind} = \"{pattern}\" }}\n"
        ));
    }
    let config = Config::from_toml(&text).unwrap();
    let s = Snapshot::build(config, 1).unwrap();
    assert_eq!(s.routes().len(), 1000);
    for i in 0..1000 {
        let uri = match i % 4 {
            0 => format!("/svc{i}/items"),
            1 => format!("/svc{i}/items/{}", i * 7),
            2 => format!("/svc{i}/anything/below"),
            _ => format!("/shared/{i}/a/b"),
        };
        let want = format!("r{i}");
        assert_eq!(get(&s, &uri), Some(want.as_str()), "{uri}");
        assert_eq!(s.route(&want).unwrap().index(), i);
    }
    assert_eq!(get(&s, "/svc0/other"), None);
    assert_eq!(get(&s, "/svc1/items"), None);
    assert_eq!(get(&s, "/shared/3"), None);
    assert_eq!(get(&s, "/nothing"), None);
}
