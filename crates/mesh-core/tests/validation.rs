//! Validation of configs: every error path of `Config::from_toml`,
//! `Config::from_json` and `Snapshot::build`, each asserted by its exact
//! field path and a distinctive part of its message; a full, realistic config
//! and its compiled, typed policies; JSON round-trips; redaction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use http::{HeaderName, Method, StatusCode};
use mesh_core::policy::{AuthMethod, BreakerMode, KeyPart, StoreFailureMode};
use mesh_core::units::{Period, Rate};
use mesh_core::{Config, ConfigError, FieldError, GrpcCode, Snapshot, parse_key_digest};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Services every route-level test can point at.
const SERVICES: &str = r#"
[[services]]
name = "orders"
endpoints = [{ address = "10.0.0.1:8080" }]

[[services]]
name = "orders-canary"
endpoints = [{ address = "10.0.0.2:8080" }]
"#;

fn with_services(rest: &str) -> String {
    format!("{SERVICES}\n{rest}")
}

/// A route `r` to `orders` with `extra` TOML lines appended to its table.
fn route(extra: &str) -> String {
    with_services(&format!(
        "[[routes]]\nid = \"r\"\ndestinations = [{{ service = \"orders\" }}]\n{extra}\n"
    ))
}

/// An issuer with one static key (an inline table body).
fn issuer_with_key(algorithms: &str, key: &str) -> String {
    format!(
        "[[auth.issuers]]\nissuer = \"https://id.example.com\"\nalgorithms = {algorithms}\nkeys = [{{ {key} }}]\n"
    )
}

const SECRET_32: &str = "0123456789abcdef0123456789abcdef";

/// The syntax error of a TOML document that must not parse.
#[track_caller]
fn toml_syntax(text: &str) -> FieldError {
    let err = Config::from_toml(text).expect_err("the TOML should not parse");
    assert!(
        matches!(err, ConfigError::Syntax { .. }),
        "expected a syntax error, got {err:?}"
    );
    let errors = err.errors();
    assert_eq!(errors.len(), 1, "a syntax error is one error: {errors:#?}");
    errors.into_iter().next().unwrap()
}

/// The syntax error of a JSON document that must not parse.
#[track_caller]
fn json_syntax(text: &str) -> FieldError {
    let err = Config::from_json(text).expect_err("the JSON should not parse");
    assert!(
        matches!(err, ConfigError::Syntax { .. }),
        "expected a syntax error, got {err:?}"
    );
    let errors = err.errors();
    assert_eq!(errors.len(), 1, "a syntax error is one error: {errors:#?}");
    errors.into_iter().next().unwrap()
}

/// The validation errors of a TOML document that parses but must not build.
#[track_caller]
fn invalid(text: &str) -> Vec<FieldError> {
    let config = match Config::from_toml(text) {
        Ok(c) => c,
        Err(e) => panic!("the TOML should parse, got {e}\n{text}"),
    };
    match Snapshot::build(config, 1) {
        Ok(_) => panic!("the config should not build:\n{text}"),
        Err(e @ ConfigError::Invalid(_)) => e.errors(),
        Err(e) => panic!("expected validation errors, got {e:?}"),
    }
}

/// Asserts that `text` fails with exactly one error, at `path`, whose
/// message contains `fragment`.
#[track_caller]
fn expect_one(text: &str, path: &str, fragment: &str) {
    let errors = invalid(text);
    assert_eq!(
        errors.len(),
        1,
        "expected exactly one error at {path}, got {errors:#?}\n{text}"
    );
    assert_eq!(errors[0].path, path, "{errors:#?}");
    assert!(
        errors[0].message.contains(fragment),
        "message `{}` should contain `{fragment}`",
        errors[0].message
    );
}

/// Asserts that `errors` has one at `path` whose message contains `fragment`.
#[track_caller]
fn expect_has(errors: &[FieldError], path: &str, fragment: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.path == path && e.message.contains(fragment)),
        "no error at {path} containing `{fragment}` in {errors:#?}"
    );
}

#[track_caller]
fn builds(text: &str) -> Snapshot {
    match Snapshot::from_toml(text, 1) {
        Ok(s) => s,
        Err(e) => panic!("should build, got {e}\n{text}"),
    }
}

// ---------------------------------------------------------------------------
// Syntax: unknown fields, wrong types, missing fields
// ---------------------------------------------------------------------------

#[test]
fn unknown_field_in_inline_match_table() {
    let text = "[[routes]]\nid = \"a\"\nmatch = { pathh = \"/x\" }\n";
    let e = toml_syntax(text);
    assert_eq!(e.path, "routes[0].match.pathh");
    assert!(e.message.contains("unknown field `pathh`"), "{}", e.message);
    assert!(
        e.message.contains("`path_template`"),
        "lists the fields: {}",
        e.message
    );
    // The display names the line as well.
    let shown = Config::from_toml(text).unwrap_err().to_string();
    assert!(
        shown.starts_with("line 3: routes[0].match.pathh: unknown field `pathh`"),
        "{shown}"
    );
}

#[test]
fn unknown_field_in_nested_table_header() {
    let e = toml_syntax("[[routes]]\nid = \"a\"\n[routes.retry]\nattemps = 3\n");
    assert_eq!(e.path, "routes[0].retry.attemps");
    assert!(
        e.message.contains("unknown field `attemps`"),
        "{}",
        e.message
    );
}

#[test]
fn unknown_field_at_top_level() {
    let e = toml_syntax("bogus = 1\n");
    assert_eq!(e.path, "bogus");
    assert!(e.message.contains("unknown field `bogus`"), "{}", e.message);
}

#[test]
fn unknown_field_deep_in_auth() {
    let e = toml_syntax(
        "[[auth.issuers]]\nissuer = \"i\"\nalgorithms = [\"RS256\"]\nkeys = [{ algorithm = \"RS256\", pem = \"x\", passphrase = \"y\" }]\n",
    );
    assert_eq!(e.path, "auth.issuers[0].keys[0].passphrase");
    assert!(
        e.message.contains("unknown field `passphrase`"),
        "{}",
        e.message
    );
}

#[test]
fn unknown_field_in_json() {
    let e = json_syntax(r#"{"routes":[{"id":"a","match":{"pathh":"/x"}}]}"#);
    assert_eq!(e.path, "routes[0].match.pathh");
    assert!(e.message.contains("unknown field `pathh`"), "{}", e.message);
}

#[test]
fn wrong_type_string_for_integer() {
    let e = toml_syntax("[[services]]\nname = \"s\"\nmax_concurrent = \"ten\"\n");
    assert_eq!(e.path, "services[0].max_concurrent");
    assert!(
        e.message
            .contains("invalid type: string \"ten\", expected u32"),
        "{}",
        e.message
    );
}

#[test]
fn wrong_type_negative_weight() {
    let e =
        toml_syntax("[[routes]]\nid = \"a\"\ndestinations = [{ service = \"s\", weight = -1 }]\n");
    assert_eq!(e.path, "routes[0].destinations[0].weight");
    assert!(e.message.contains("expected u32"), "{}", e.message);
}

#[test]
fn wrong_type_table_for_list() {
    let e = toml_syntax("[[routes]]\nid = \"a\"\nmatch = { methods = \"GET\" }\n");
    assert_eq!(e.path, "routes[0].match.methods");
    assert!(e.message.contains("invalid type"), "{}", e.message);
}

#[test]
fn wrong_type_in_json() {
    let e = json_syntax(r#"{"services":[{"name":"s","max_concurrent":"x"}]}"#);
    assert_eq!(e.path, "services[0].max_concurrent");
    assert!(
        e.message
            .contains("invalid type: string \"x\", expected u32"),
        "{}",
        e.message
    );
}

#[test]
fn unknown_lifecycle_variant() {
    let e = toml_syntax(
        "[[apis]]\nname = \"a\"\nversions = [{ version = \"v1\", status = \"dead\" }]\n",
    );
    assert_eq!(e.path, "apis[0].versions[0].status");
    assert!(
        e.message.contains("unknown variant `dead`"),
        "{}",
        e.message
    );
}

#[test]
fn missing_required_field() {
    let e = toml_syntax("[[routes]]\nmatch = { path = \"/\" }\n");
    assert_eq!(e.path, "routes[0]");
    assert!(e.message.contains("missing field `id`"), "{}", e.message);
}

#[test]
fn malformed_toml_has_no_path_but_a_line() {
    let text = "[[services]]\nname = \"s\"\n[[routes]\n";
    let e = toml_syntax(text);
    assert_eq!(e.path, "");
    let err = Config::from_toml(text).unwrap_err();
    match &err {
        ConfigError::Syntax { line, .. } => assert_eq!(*line, Some(3)),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().starts_with("line 3: "), "{err}");
}

#[test]
fn malformed_json() {
    let e = json_syntax(r#"{"routes":["#);
    assert_eq!(e.path, "routes");
    assert!(e.message.contains("EOF while parsing"), "{}", e.message);
}

// ---------------------------------------------------------------------------
// Duplicates and empty names
// ---------------------------------------------------------------------------

#[test]
fn duplicate_api_names() {
    expect_one(
        "[[apis]]\nname = \"orders\"\n[[apis]]\nname = \"orders\"\n",
        "apis[1].name",
        "duplicate API name `orders`",
    );
}

#[test]
fn duplicate_service_names() {
    expect_one(
        &with_services("[[services]]\nname = \"orders\"\n"),
        "services[2].name",
        "duplicate service name `orders`",
    );
}

#[test]
fn duplicate_plan_names() {
    expect_one(
        "[[plans]]\nname = \"gold\"\n[[plans]]\nname = \"silver\"\n[[plans]]\nname = \"gold\"\n",
        "plans[2].name",
        "duplicate plan name `gold`",
    );
}

#[test]
fn duplicate_consumer_ids() {
    expect_one(
        "[[consumers]]\nid = \"acme\"\n[[consumers]]\nid = \"acme\"\n",
        "consumers[1].id",
        "duplicate consumer id `acme`",
    );
}

#[test]
fn duplicate_route_ids() {
    expect_one(
        &with_services(
            "[[routes]]\nid = \"r\"\nmatch = { path = \"/a\" }\n[[routes]]\nid = \"r\"\nmatch = { path = \"/b\" }\n",
        ),
        "routes[1].id",
        "duplicate route id `r`",
    );
}

#[test]
fn duplicate_issuers() {
    let one = "[[auth.issuers]]\nissuer = \"https://id.example.com\"\nalgorithms = [\"RS256\"]\njwks_uri = \"https://id.example.com/jwks\"\n";
    expect_one(
        &format!("{one}{one}"),
        "auth.issuers[1].issuer",
        "duplicate issuer `https://id.example.com`",
    );
}

#[test]
fn duplicate_versions() {
    expect_one(
        "[[apis]]\nname = \"orders\"\nversions = [{ version = \"v1\" }, { version = \"v2\" }, { version = \"v1\" }]\n",
        "apis[0].versions[2].version",
        "duplicate version `v1`",
    );
}

#[test]
fn duplicate_endpoint_ids_defaulted_from_address() {
    expect_one(
        "[[services]]\nname = \"s\"\nendpoints = [{ address = \"10.0.0.1:80\" }, { address = \"10.0.0.1:80\" }]\n",
        "services[0].endpoints[1].id",
        "duplicate endpoint id `10.0.0.1:80`",
    );
}

#[test]
fn duplicate_explicit_endpoint_ids() {
    expect_one(
        "[[services]]\nname = \"s\"\nendpoints = [{ id = \"a\", address = \"10.0.0.1:80\" }, { id = \"a\", address = \"10.0.0.2:80\" }]\n",
        "services[0].endpoints[1].id",
        "duplicate endpoint id `a`",
    );
}

#[test]
fn same_endpoint_id_in_two_services_is_fine() {
    builds(
        "[[services]]\nname = \"s\"\nendpoints = [{ id = \"a\", address = \"10.0.0.1:80\" }]\n[[services]]\nname = \"t\"\nendpoints = [{ id = \"a\", address = \"10.0.0.1:80\" }]\n",
    );
}

#[test]
fn empty_names() {
    expect_one(
        "[[services]]\nname = \"  \"\n",
        "services[0].name",
        "service name must not be empty",
    );
    expect_one(
        "[[routes]]\nid = \"\"\n",
        "routes[0].id",
        "route id must not be empty",
    );
}

// ---------------------------------------------------------------------------
// Destinations, splits, mirrors
// ---------------------------------------------------------------------------

#[test]
fn destination_weights_summing_to_zero() {
    expect_one(
        &with_services(
            "[[routes]]\nid = \"r\"\ndestinations = [{ service = \"orders\", weight = 0 }, { service = \"orders-canary\", weight = 0 }]\n",
        ),
        "routes[0].destinations",
        "weights sum to 0",
    );
}

#[test]
fn one_zero_weight_is_fine() {
    builds(&with_services(
        "[[routes]]\nid = \"r\"\ndestinations = [{ service = \"orders\", weight = 0 }, { service = \"orders-canary\", weight = 1 }]\n",
    ));
}

#[test]
fn unknown_destination_service() {
    expect_one(
        &with_services("[[routes]]\nid = \"r\"\ndestinations = [{ service = \"nowhere\" }]\n"),
        "routes[0].destinations[0].service",
        "unknown service `nowhere`",
    );
}

#[test]
fn unknown_failover_service() {
    expect_one(
        &with_services(
            "[[routes]]\nid = \"r\"\ndestinations = [{ service = \"orders\", failover = [\"orders-canary\", \"dr\"] }]\n",
        ),
        "routes[0].destinations[0].failover[1]",
        "unknown service `dr`",
    );
}

#[test]
fn failover_to_itself() {
    expect_one(
        &with_services(
            "[[routes]]\nid = \"r\"\ndestinations = [{ service = \"orders\", failover = [\"orders\"] }]\n",
        ),
        "routes[0].destinations[0].failover[0]",
        "cannot be its own failover",
    );
}

#[test]
fn unknown_mirror_service() {
    expect_one(
        &route("mirror = { service = \"shadow\", percent = 10.0 }"),
        "routes[0].mirror.service",
        "unknown service `shadow`",
    );
}

#[test]
fn mirror_percent_out_of_range_and_zero_in_flight() {
    let errors = invalid(&route(
        "mirror = { service = \"orders-canary\", percent = 120.0, max_in_flight = 0 }",
    ));
    assert_eq!(errors.len(), 2, "{errors:#?}");
    expect_has(
        &errors,
        "routes[0].mirror.percent",
        "must be between 0 and 100",
    );
    expect_has(
        &errors,
        "routes[0].mirror.max_in_flight",
        "must be greater than 0",
    );
}

#[test]
fn override_index_out_of_range() {
    expect_one(
        &with_services(
            "[[routes]]\nid = \"r\"\ndestinations = [{ service = \"orders\" }, { service = \"orders-canary\" }]\nsplit = { override_header = \"x-canary\", overrides = { yes = 1, bogus = 2 } }\n",
        ),
        "routes[0].split.overrides.bogus",
        "destination 2 does not exist (there are 2)",
    );
}

#[test]
fn overrides_without_override_header() {
    expect_one(
        &route("split = { overrides = { yes = 0 } }"),
        "routes[0].split.overrides",
        "needs override_header",
    );
}

#[test]
fn bad_sticky_and_override_header() {
    let errors = invalid(&route(
        "split = { sticky = \"session\", override_header = \"x canary\" }",
    ));
    assert_eq!(errors.len(), 2, "{errors:#?}");
    expect_has(
        &errors,
        "routes[0].split.sticky",
        "`session` is not `consumer`, `header:<name>` or `cookie:<name>`",
    );
    expect_has(
        &errors,
        "routes[0].split.override_header",
        "`x canary` is not a valid header name",
    );
}

// ---------------------------------------------------------------------------
// Catalog references and lifecycle
// ---------------------------------------------------------------------------

const API: &str =
    "[[apis]]\nname = \"orders\"\nversions = [{ version = \"v1\" }, { version = \"v2\" }]\n";

#[test]
fn unknown_api() {
    expect_one(
        &format!("{API}{}", route("api = \"payments\"")),
        "routes[0].api",
        "unknown API `payments`",
    );
}

#[test]
fn unknown_version() {
    expect_one(
        &format!("{API}{}", route("api = \"orders\"\nversion = \"v9\"")),
        "routes[0].version",
        "API `orders` has no version `v9`",
    );
}

#[test]
fn version_without_api() {
    expect_one(
        &format!("{API}{}", route("version = \"v1\"")),
        "routes[0].version",
        "a version needs an `api`",
    );
}

#[test]
fn unknown_default_version_and_style() {
    let errors = invalid(&format!(
        "{API}versioning = {{ styles = [\"path\", \"cookie\"], default = \"v7\", header = \"bad header\" }}\n"
    ));
    assert_eq!(errors.len(), 3, "{errors:#?}");
    expect_has(
        &errors,
        "apis[0].versioning.styles[1]",
        "unknown style `cookie`",
    );
    expect_has(
        &errors,
        "apis[0].versioning.default",
        "unknown version `v7`",
    );
    expect_has(
        &errors,
        "apis[0].versioning.header",
        "is not a valid header name",
    );
}

#[test]
fn sunset_earlier_than_deprecation() {
    expect_one(
        "[[apis]]\nname = \"a\"\n[[apis.versions]]\nversion = \"v1\"\ndeprecated_at = \"2026-06-30T00:00:00Z\"\nsunset = \"2026-01-01T00:00:00Z\"\n",
        "apis[0].versions[0].sunset",
        "must not be earlier than deprecated_at",
    );
}

#[test]
fn unparsable_timestamp() {
    expect_one(
        "[[apis]]\nname = \"a\"\n[[apis.versions]]\nversion = \"v1\"\ndeprecated_at = \"June 30\"\n",
        "apis[0].versions[0].deprecated_at",
        "`June 30` is not an RFC 3339 UTC timestamp",
    );
    // An offset other than Z is not accepted either.
    expect_one(
        "[[apis]]\nname = \"a\"\n[[apis.versions]]\nversion = \"v1\"\nsunset = \"2026-06-30T00:00:00+02:00\"\n",
        "apis[0].versions[0].sunset",
        "is not an RFC 3339 UTC timestamp",
    );
}

#[test]
fn unknown_successor() {
    expect_one(
        "[[apis]]\nname = \"a\"\nversions = [{ version = \"v1\", successor = \"v3\" }, { version = \"v2\" }]\n",
        "apis[0].versions[0].successor",
        "unknown version `v3`",
    );
}

#[test]
fn successor_is_itself() {
    expect_one(
        "[[apis]]\nname = \"a\"\nversions = [{ version = \"v1\", successor = \"v1\" }]\n",
        "apis[0].versions[0].successor",
        "cannot succeed itself",
    );
}

#[test]
fn brownout_end_before_start() {
    expect_one(
        "[[apis]]\nname = \"a\"\n[[apis.versions]]\nversion = \"v1\"\nbrownouts = [{ start = \"2026-03-01T12:00:00Z\", end = \"2026-03-01T11:00:00Z\" }]\n",
        "apis[0].versions[0].brownouts[0].end",
        "must be later than start",
    );
}

#[test]
fn brownout_after_sunset() {
    expect_one(
        "[[apis]]\nname = \"a\"\n[[apis.versions]]\nversion = \"v1\"\nsunset = \"2026-03-01T00:00:00Z\"\nbrownouts = [{ start = \"2026-03-02T12:00:00Z\", end = \"2026-03-02T13:00:00Z\" }]\n",
        "apis[0].versions[0].brownouts[0].start",
        "must be earlier than the sunset",
    );
}

#[test]
fn empty_openapi() {
    expect_one(
        "[[apis]]\nname = \"a\"\nversions = [{ version = \"v1\", openapi = { file = \" \" } }]\n",
        "apis[0].versions[0].openapi",
        "must not be empty",
    );
}

// ---------------------------------------------------------------------------
// Services and endpoints
// ---------------------------------------------------------------------------

#[test]
fn unparsable_addresses() {
    for (address, ok) in [
        ("localhost", false),
        ("10.0.0.1", false),
        (":8080", false),
        ("user@host:8080", false),
        ("host:port", false),
        ("host:99999", false),
        ("", false),
        ("host:8080", true),
        ("[2001:db8::1]:443", true),
    ] {
        let text =
            format!("[[services]]\nname = \"s\"\nendpoints = [{{ address = \"{address}\" }}]\n");
        if ok {
            builds(&text);
        } else {
            expect_one(
                &text,
                "services[0].endpoints[0].address",
                &format!("`{address}` is not a `host:port` address"),
            );
        }
    }
}

#[test]
fn service_protocol_bulkhead_and_outlier() {
    let errors = invalid(
        "[[services]]\nname = \"s\"\nprotocol = \"h3\"\nmax_concurrent = 0\noutlier = { consecutive_failures = 0, base_ejection = \"soon\", max_ejection_percent = 101.0 }\n",
    );
    assert_eq!(errors.len(), 5, "{errors:#?}");
    expect_has(&errors, "services[0].protocol", "unknown protocol `h3`");
    expect_has(
        &errors,
        "services[0].max_concurrent",
        "must be greater than 0",
    );
    expect_has(
        &errors,
        "services[0].outlier.consecutive_failures",
        "must be greater than 0",
    );
    expect_has(&errors, "services[0].outlier.base_ejection", "`soon`");
    expect_has(
        &errors,
        "services[0].outlier.max_ejection_percent",
        "must be between 0 and 100",
    );
}

// ---------------------------------------------------------------------------
// Plans, consumers, API keys
// ---------------------------------------------------------------------------

#[test]
fn quota_with_period_seconds() {
    expect_one(
        "[[plans]]\nname = \"p\"\nquotas = [\"1000/d\", \"10/s\"]\n",
        "plans[0].quotas[1]",
        "a quota's period must be h, d or month",
    );
    expect_one(
        "[[plans]]\nname = \"p\"\nquotas = [\"100/min\"]\n",
        "plans[0].quotas[0]",
        "a quota's period must be h, d or month",
    );
}

#[test]
fn unparsable_quota() {
    expect_one(
        "[[plans]]\nname = \"p\"\nquotas = [\"lots\"]\n",
        "plans[0].quotas[0]",
        "`lots` is not a rate",
    );
}

#[test]
fn plan_rate_with_period_month() {
    expect_one(
        "[[plans]]\nname = \"p\"\nrates = [{ rate = \"1000000/month\" }]\n",
        "plans[0].rates[0].rate",
        "a rate's period must be s, min, h or d",
    );
}

#[test]
fn route_rate_with_period_month() {
    expect_one(
        &route("rate_limit = { limits = [{ rate = \"10/s\" }, { rate = \"5/month\" }] }"),
        "routes[0].rate_limit.limits[1].rate",
        "use a plan quota for months",
    );
}

#[test]
fn unparsable_rates() {
    for (rate, fragment) in [
        ("10/fortnight", "`fortnight` is not a period"),
        ("ten/s", "`ten` is not a whole number"),
        ("0/s", "must allow at least 1 per period"),
        ("100", "is not a rate"),
        ("-1/s", "is not a whole number"),
    ] {
        expect_one(
            &format!("[[plans]]\nname = \"p\"\nrates = [{{ rate = \"{rate}\" }}]\n"),
            "plans[0].rates[0].rate",
            fragment,
        );
    }
}

#[test]
fn limit_burst_and_key_parts() {
    let errors = invalid(&route(
        "rate_limit = { limits = [{ rate = \"10/s\", burst = 0, key = [\"ip\", \"user\", \"header:bad name\"] }] }",
    ));
    assert_eq!(errors.len(), 3, "{errors:#?}");
    expect_has(
        &errors,
        "routes[0].rate_limit.limits[0].burst",
        "must be greater than 0",
    );
    expect_has(
        &errors,
        "routes[0].rate_limit.limits[0].key[1]",
        "unknown key part `user`",
    );
    expect_has(
        &errors,
        "routes[0].rate_limit.limits[0].key[2]",
        "`bad name` is not a valid header name",
    );
}

#[test]
fn rate_limit_cost_store_mode_and_timeout() {
    let errors = invalid(&route(
        "rate_limit = { cost = 0, plan = false, on_store_failure = \"panic\", store_timeout = \"5\" }",
    ));
    assert_eq!(errors.len(), 4, "{errors:#?}");
    expect_has(
        &errors,
        "routes[0].rate_limit.cost",
        "must be greater than 0",
    );
    expect_has(
        &errors,
        "routes[0].rate_limit.limits",
        "needs at least one limit, or plan = true",
    );
    expect_has(
        &errors,
        "routes[0].rate_limit.on_store_failure",
        "unknown mode `panic`",
    );
    expect_has(
        &errors,
        "routes[0].rate_limit.store_timeout",
        "`5` has no unit",
    );
}

#[test]
fn unknown_plan_of_consumer() {
    expect_one(
        "[[plans]]\nname = \"gold\"\n[[consumers]]\nid = \"acme\"\nplan = \"platinum\"\n",
        "consumers[0].plan",
        "unknown plan `platinum`",
    );
}

const DIGEST_A: &str = "sha256:d1cf9c5cffcb718f754b7ecb1ed23efdb5a654b4b20c2fc42759db5903209f76";
const DIGEST_B: &str = "sha256:67bf062ab4a4e04eba3c42e3987d1a27ac39e1a1658c5a3fda2d25d6e22ab44d";

#[test]
fn invalid_api_key_digests() {
    for bad in [
        "partner-key-1",
        "d1cf9c5cffcb718f754b7ecb1ed23efdb5a654b4b20c2fc42759db5903209f76",
        "sha256:",
        "sha256:d1cf9c5c",
        "sha256:d1cf9c5cffcb718f754b7ecb1ed23efdb5a654b4b20c2fc42759db5903209f7",
        "sha256:d1cf9c5cffcb718f754b7ecb1ed23efdb5a654b4b20c2fc42759db5903209f766",
        "sha256:z1cf9c5cffcb718f754b7ecb1ed23efdb5a654b4b20c2fc42759db5903209f76",
        "sha512:d1cf9c5cffcb718f754b7ecb1ed23efdb5a654b4b20c2fc42759db5903209f76",
        // 64 bytes, but not 64 hex digits.
        "sha256:ééééééééééééééééééééééééééééééééd1cf9c5cffcb718f754b7ecb1ed23efd",
    ] {
        assert_eq!(parse_key_digest(bad), None, "{bad}");
        expect_one(
            &format!("[[consumers]]\nid = \"acme\"\napi_keys = [\"{DIGEST_A}\", \"{bad}\"]\n"),
            "consumers[0].api_keys[1]",
            "must be `sha256:` followed by 64 hex digits",
        );
    }
    // Upper-case hex is a digest too.
    assert_eq!(
        parse_key_digest(&DIGEST_A.to_ascii_uppercase().replace("SHA256:", "sha256:")),
        parse_key_digest(DIGEST_A)
    );
}

#[test]
fn api_key_digest_shared_by_two_consumers() {
    expect_one(
        &format!(
            "[[consumers]]\nid = \"acme\"\napi_keys = [\"{DIGEST_A}\"]\n[[consumers]]\nid = \"globex\"\napi_keys = [\"{DIGEST_B}\", \"{DIGEST_A}\"]\n"
        ),
        "consumers[1].api_keys[1]",
        "this key digest belongs to consumers[0] too",
    );
}

// ---------------------------------------------------------------------------
// Mesh-wide auth settings and issuers
// ---------------------------------------------------------------------------

#[test]
fn none_algorithm_in_any_case() {
    for none in ["none", "None", "NONE", "nOnE"] {
        let text = format!(
            "[[auth.issuers]]\nissuer = \"i\"\nalgorithms = [\"RS256\", \"{none}\"]\njwks_uri = \"https://i.example/jwks\"\n"
        );
        expect_one(
            &text,
            "auth.issuers[0].algorithms[1]",
            "`none` is never allowed",
        );
    }
    // On a key too.
    let errors = invalid(&issuer_with_key(
        "[\"HS256\"]",
        &format!("algorithm = \"NoNe\", secret = \"{SECRET_32}\""),
    ));
    expect_has(
        &errors,
        "auth.issuers[0].keys[0].algorithm",
        "`none` is never allowed",
    );
}

#[test]
fn unknown_algorithm() {
    expect_one(
        "[[auth.issuers]]\nissuer = \"i\"\nalgorithms = [\"rs256\"]\njwks_uri = \"https://i.example/jwks\"\n",
        "auth.issuers[0].algorithms[0]",
        "unknown algorithm `rs256`",
    );
}

#[test]
fn no_algorithms() {
    expect_one(
        "[[auth.issuers]]\nissuer = \"i\"\nalgorithms = []\njwks_uri = \"https://i.example/jwks\"\n",
        "auth.issuers[0].algorithms",
        "must list at least one algorithm",
    );
}

#[test]
fn hmac_with_pem_is_rs_hs_confusion() {
    expect_one(
        &issuer_with_key(
            "[\"HS256\"]",
            "algorithm = \"HS256\", pem = \"-----BEGIN PUBLIC KEY-----\\nMIIB\\n-----END PUBLIC KEY-----\"",
        ),
        "auth.issuers[0].keys[0].algorithm",
        "RS/HS confusion",
    );
    expect_one(
        &issuer_with_key(
            "[\"HS512\"]",
            "algorithm = \"HS512\", pem_file = \"/etc/key.pem\"",
        ),
        "auth.issuers[0].keys[0].algorithm",
        "RS/HS confusion",
    );
}

#[test]
fn secret_for_an_asymmetric_algorithm() {
    expect_one(
        &issuer_with_key(
            "[\"RS256\"]",
            &format!("algorithm = \"RS256\", secret = \"{SECRET_32}\""),
        ),
        "auth.issuers[0].keys[0].secret",
        "a secret is only for HS256/HS384/HS512",
    );
}

#[test]
fn short_hmac_secret() {
    expect_one(
        &issuer_with_key(
            "[\"HS256\"]",
            "algorithm = \"HS256\", secret = \"0123456789abcdef0123456789abcde\"",
        ),
        "auth.issuers[0].keys[0].secret",
        "must be at least 32 bytes",
    );
    // Exactly 32 bytes is enough.
    builds(&issuer_with_key(
        "[\"HS256\"]",
        &format!("algorithm = \"HS256\", secret = \"{SECRET_32}\""),
    ));
}

#[test]
fn key_source_count_must_be_one() {
    expect_one(
        &issuer_with_key("[\"RS256\"]", "kid = \"k\", algorithm = \"RS256\""),
        "auth.issuers[0].keys[0]",
        "give exactly one of pem, pem_file, jwk or secret",
    );
    expect_one(
        &issuer_with_key(
            "[\"RS256\"]",
            "algorithm = \"RS256\", pem = \"x\", jwk = { kty = \"RSA\", n = \"abc\", e = \"AQAB\" }",
        ),
        "auth.issuers[0].keys[0]",
        "give exactly one of pem, pem_file, jwk or secret",
    );
}

#[test]
fn key_algorithm_not_in_issuer_algorithms() {
    expect_one(
        &issuer_with_key("[\"RS256\"]", "algorithm = \"ES256\", pem = \"x\""),
        "auth.issuers[0].keys[0].algorithm",
        "`ES256` is not in the issuer's algorithms",
    );
}

#[test]
fn jwk_must_be_an_object() {
    let text = "[[auth.issuers]]\nissuer = \"i\"\nalgorithms = [\"RS256\"]\n[[auth.issuers.keys]]\nalgorithm = \"RS256\"\njwk = \"not an object\"\n";
    expect_one(text, "auth.issuers[0].keys[0].jwk", "must be a JWK object");
}

#[test]
fn issuer_without_any_key_source() {
    expect_one(
        "[[auth.issuers]]\nissuer = \"i\"\nalgorithms = [\"RS256\"]\n",
        "auth.issuers[0]",
        "needs keys, a jwks_uri, or discovery = true",
    );
}

#[test]
fn issuer_urls() {
    expect_one(
        "[[auth.issuers]]\nissuer = \"i\"\nalgorithms = [\"RS256\"]\njwks_uri = \"ftp://i.example/jwks\"\n",
        "auth.issuers[0].jwks_uri",
        "`ftp://i.example/jwks` is not an http(s) URL",
    );
    expect_one(
        "[[auth.issuers]]\nissuer = \"my-idp\"\nalgorithms = [\"RS256\"]\ndiscovery = true\n",
        "auth.issuers[0].issuer",
        "`my-idp` is not an http(s) URL",
    );
}

#[test]
fn issuer_durations() {
    let errors = invalid(
        "[[auth.issuers]]\nissuer = \"i\"\nalgorithms = [\"RS256\"]\njwks_uri = \"https://i.example/jwks\"\nrefresh = \"5 minutes\"\nunknown_kid_interval = \"10\"\nmax_stale = \"s\"\n",
    );
    assert_eq!(errors.len(), 3, "{errors:#?}");
    expect_has(&errors, "auth.issuers[0].refresh", "has an unknown unit");
    expect_has(
        &errors,
        "auth.issuers[0].unknown_kid_interval",
        "has no unit",
    );
    expect_has(
        &errors,
        "auth.issuers[0].max_stale",
        "does not start with a number",
    );
}

#[test]
fn leeway_above_five_minutes() {
    expect_one(
        "[auth]\nleeway = \"301s\"\n",
        "auth.leeway",
        "must be at most 5m",
    );
    builds("[auth]\nleeway = \"5m\"\n");
}

#[test]
fn unparsable_leeway() {
    expect_one(
        "[auth]\nleeway = \"1 minute\"\n",
        "auth.leeway",
        "has an unknown unit",
    );
}

#[test]
fn auth_settings_sizes_headers_realm() {
    let errors = invalid(
        "[auth]\nmax_token_size = \"8 KiB please\"\napi_key_header = \"x api key\"\napi_key_query = \"\"\nrealm = \"say \\\"hi\\\"\"\n",
    );
    assert_eq!(errors.len(), 4, "{errors:#?}");
    expect_has(&errors, "auth.max_token_size", "is not a size unit");
    expect_has(
        &errors,
        "auth.api_key_header",
        "`x api key` is not a valid header name",
    );
    expect_has(&errors, "auth.api_key_query", "must not be empty");
    expect_has(&errors, "auth.realm", "must not contain quotes");
    expect_one(
        "[auth]\nmax_token_size = \"0\"\n",
        "auth.max_token_size",
        "must be greater than 0",
    );
    expect_one(
        "[auth]\nmax_token_size = \"99999999999999999999GiB\"\n",
        "auth.max_token_size",
        "does not start with a whole number",
    );
    expect_one(
        "[auth]\nmax_token_size = \"99999999999GiB\"\n",
        "auth.max_token_size",
        "is too large",
    );
}

// ---------------------------------------------------------------------------
// Route auth
// ---------------------------------------------------------------------------

const ISSUER: &str = "[[auth.issuers]]\nissuer = \"https://id.example.com\"\nalgorithms = [\"RS256\"]\njwks_uri = \"https://id.example.com/jwks\"\n";

#[test]
fn unknown_route_issuer() {
    expect_one(
        &format!(
            "{ISSUER}{}",
            route(
                "auth = { require = [\"jwt\"], issuers = [\"https://id.example.com\", \"https://evil.example\"] }"
            )
        ),
        "routes[0].auth.issuers[1]",
        "unknown issuer `https://evil.example`",
    );
}

#[test]
fn jwt_without_issuers() {
    expect_one(
        &route("auth = { require = [\"jwt\"] }"),
        "routes[0].auth.require",
        "jwt needs at least one entry in auth.issuers",
    );
}

#[test]
fn route_auth_requirements() {
    expect_one(
        &route("auth = { require = [] }"),
        "routes[0].auth.require",
        "must list jwt, api_key, or none",
    );
    expect_one(
        &route("auth = { require = [\"api_key\", \"mtls\"] }"),
        "routes[0].auth.require[1]",
        "unknown method `mtls`",
    );
    expect_one(
        &route("auth = { require = [\"none\", \"api_key\"] }"),
        "routes[0].auth.require",
        "`none` cannot be combined",
    );
    expect_one(
        &route("auth = { require = [\"none\"], scopes = [\"read\"] }"),
        "routes[0].auth.scopes",
        "scopes and claims are checked on tokens",
    );
    let errors = invalid(&route(
        "auth = { require = [\"api_key\"], scopes = [\"read\", \"two words\"] }",
    ));
    expect_has(
        &errors,
        "routes[0].auth.scopes[1]",
        "a scope is one non-empty token",
    );
    expect_has(
        &errors,
        "routes[0].auth.scopes",
        "`require` must include jwt",
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

// ---------------------------------------------------------------------------
// Match blocks: paths, templates, hosts, methods, headers, query
// ---------------------------------------------------------------------------

fn with_match(m: &str) -> String {
    route(&format!("match = {{ {m} }}"))
}

#[test]
fn unparsable_paths() {
    for (path, fragment) in [
        ("no-slash", "`no-slash` must start with `/`"),
        ("", "must start with `/`"),
        ("/a?b=1", "must not contain `?` or `#`"),
        ("/a#frag", "must not contain `?` or `#`"),
        ("/orders/{id}", "use `path_template` for parameters"),
    ] {
        expect_one(
            &with_match(&format!("path = \"{path}\"")),
            "routes[0].match.path",
            fragment,
        );
        expect_one(
            &with_match(&format!("path_prefix = \"{path}\"")),
            "routes[0].match.path_prefix",
            fragment,
        );
    }
}

#[test]
fn unparsable_templates() {
    for (template, fragment) in [
        ("orders/{id}", "must start with `/`"),
        ("/orders/{id", "a parameter must be a whole segment"),
        ("/orders/x{id}", "a parameter must be a whole segment"),
        ("/orders/{}", "is not a valid parameter"),
        ("/orders/{a-b}", "is not a valid parameter"),
        ("/orders/{*}", "is not a valid parameter"),
        ("/{a}/{a}", "parameter `a` appears twice"),
        ("/{a}/{*a}", "parameter `a` appears twice"),
        ("/files/{*rest}/x", "must be the last segment"),
        ("/orders/{id}?x", "must not contain `?` or `#`"),
    ] {
        expect_one(
            &with_match(&format!("path_template = \"{template}\"")),
            "routes[0].match.path_template",
            fragment,
        );
    }
}

#[test]
fn more_than_one_path_kind() {
    expect_one(
        &with_match("path = \"/a\", path_prefix = \"/a\""),
        "routes[0].match",
        "give at most one of path, path_prefix and path_template",
    );
}

#[test]
fn unparsable_hosts() {
    for host in [
        "",
        "*.",
        "exa mple.com",
        "*.*.example.com",
        "api.*.example.com",
        "api_example.com",
        // A port is never part of the matched host.
        "api.example.com:8080",
        "[::1]:8080",
        // A wildcard IPv6 address is meaningless.
        "*.[::1]",
    ] {
        expect_one(
            &with_match(&format!("hosts = [\"api.example.com\", \"{host}\"]")),
            "routes[0].match.hosts[1]",
            &format!("`{host}` is not a host name, IPv6 address or `*.suffix`"),
        );
    }
    for host in [
        "API.Example.COM",
        "*.example.com",
        "10.0.0.1",
        "[::1]",
        "::1",
        "example.com.",
    ] {
        builds(&with_match(&format!("hosts = [\"{host}\"]")));
    }
}

#[test]
fn unparsable_methods() {
    for method in ["GE T", "", "GET\\n", "(GET)"] {
        expect_one(
            &with_match(&format!("methods = [\"GET\", \"{method}\"]")),
            "routes[0].match.methods[1]",
            "is not a valid method",
        );
    }
    // Methods are case-insensitive and extension methods are fine.
    builds(&with_match("methods = [\"get\", \"Post\", \"PURGE\"]"));
}

#[test]
fn unparsable_header_names() {
    for name in ["x tenant", "", "x-tenant:", "ünïcode"] {
        expect_one(
            &with_match(&format!(
                "headers = [{{ name = \"{name}\", value = \"a\" }}]"
            )),
            "routes[0].match.headers[0].name",
            "is not a valid header name",
        );
    }
}

#[test]
fn header_and_query_conditions_are_exclusive() {
    expect_one(
        &with_match("headers = [{ name = \"x-a\", value = \"1\", prefix = \"1\" }]"),
        "routes[0].match.headers[0]",
        "give at most one of value, prefix and present",
    );
    expect_one(
        &with_match("query = [{ name = \"a\", value = \"1\", present = true }]"),
        "routes[0].match.query[0]",
        "give at most one of value and present",
    );
    expect_one(
        &with_match("query = [{ name = \"\" }]"),
        "routes[0].match.query[0].name",
        "must be a non-empty raw parameter name",
    );
}

// ---------------------------------------------------------------------------
// Retries, timeouts, breakers, faults
// ---------------------------------------------------------------------------

#[test]
fn retry_attempts_bounds() {
    for attempts in [0, 11, 1000] {
        expect_one(
            &route(&format!("retry = {{ attempts = {attempts} }}")),
            "routes[0].retry.attempts",
            "must be between 1 and 10",
        );
    }
    for attempts in [1, 10] {
        builds(&route(&format!("retry = {{ attempts = {attempts} }}")));
    }
}

#[test]
fn retry_lists_and_durations() {
    let errors = invalid(&route(
        "retry = { statuses = [503, 99, 600], grpc_codes = [\"UNAVAILABLE\", \"SOMETIMES\"], methods = [\"GET\", \"B AD\"], backoff = \"2s\", max_backoff = \"1s\", budget_ratio = 11.0, replay_limit = \"lots\", hedge_after = \"soon\" }",
    ));
    assert_eq!(errors.len(), 8, "{errors:#?}");
    expect_has(
        &errors,
        "routes[0].retry.statuses[1]",
        "`99` is not an HTTP status",
    );
    expect_has(
        &errors,
        "routes[0].retry.statuses[2]",
        "`600` is not an HTTP status",
    );
    expect_has(
        &errors,
        "routes[0].retry.grpc_codes[1]",
        "`SOMETIMES` is not a gRPC code",
    );
    expect_has(
        &errors,
        "routes[0].retry.methods[1]",
        "is not a valid method",
    );
    expect_has(
        &errors,
        "routes[0].retry.max_backoff",
        "must not be less than backoff",
    );
    expect_has(
        &errors,
        "routes[0].retry.budget_ratio",
        "must be between 0 and 10",
    );
    expect_has(
        &errors,
        "routes[0].retry.replay_limit",
        "does not start with a whole number",
    );
    expect_has(&errors, "routes[0].retry.hedge_after", "`soon`");
}

#[test]
fn unparsable_durations() {
    for (d, fragment) in [
        ("2", "has no unit"),
        ("2 sec", "has an unknown unit"),
        ("2sec", "has an unknown unit `sec`"),
        ("s", "does not start with a number"),
        ("-2s", "does not start with a number"),
        ("1..5s", "is not a number"),
        ("99999999999d", "is too large"),
    ] {
        expect_one(
            &route(&format!("timeout = {{ total = \"{d}\" }}")),
            "routes[0].timeout.total",
            fragment,
        );
    }
}

#[test]
fn per_try_longer_than_total() {
    expect_one(
        &route("timeout = { total = \"1s\", per_try = \"1001ms\" }"),
        "routes[0].timeout.per_try",
        "must not exceed total",
    );
    builds(&route("timeout = { total = \"1s\", per_try = \"1000ms\" }"));
}

#[test]
fn timeout_zero_or_empty() {
    expect_one(
        &route("timeout = { total = \"0\" }"),
        "routes[0].timeout.total",
        "must be greater than 0",
    );
    expect_one(
        &route("timeout = {}"),
        "routes[0].timeout",
        "give total, per_try or both",
    );
}

#[test]
fn breaker_min_calls_above_window() {
    expect_one(
        &route("circuit_breaker = { mode = \"rate\", window = 10, min_calls = 11 }"),
        "routes[0].circuit_breaker.min_calls",
        "must not exceed window",
    );
    // The default min_calls (20) exceeds a small window too.
    expect_one(
        &route("circuit_breaker = { mode = \"rate\", window = 19 }"),
        "routes[0].circuit_breaker.min_calls",
        "must not exceed window",
    );
}

#[test]
fn breaker_other_errors() {
    expect_one(
        &route("circuit_breaker = { mode = \"adaptive\" }"),
        "routes[0].circuit_breaker.mode",
        "unknown mode `adaptive`",
    );
    expect_one(
        &route("circuit_breaker = { failures = 0 }"),
        "routes[0].circuit_breaker.failures",
        "must be greater than 0",
    );
    let errors = invalid(&route(
        "circuit_breaker = { mode = \"rate\", failure_rate = 0.0, window = 0, min_calls = 0, open = \"10s\", max_open = \"5s\", half_open_probes = 0 }",
    ));
    assert_eq!(errors.len(), 4, "{errors:#?}");
    expect_has(
        &errors,
        "routes[0].circuit_breaker.failure_rate",
        "greater than 0 and at most 100",
    );
    expect_has(
        &errors,
        "routes[0].circuit_breaker.window",
        "must be greater than 0",
    );
    expect_has(
        &errors,
        "routes[0].circuit_breaker.max_open",
        "must not be less than open",
    );
    expect_has(
        &errors,
        "routes[0].circuit_breaker.half_open_probes",
        "must be greater than 0",
    );
    expect_one(
        &route("circuit_breaker = { open = \"0\" }"),
        "routes[0].circuit_breaker.open",
        "must be greater than 0",
    );
}

#[test]
fn fault_percent_above_100() {
    expect_one(
        &route("fault = { abort = { status = 503, percent = 100.5 } }"),
        "routes[0].fault.abort.percent",
        "must be between 0 and 100",
    );
    expect_one(
        &route("fault = { delay = { duration = \"1s\", percent = 150.0 } }"),
        "routes[0].fault.delay.percent",
        "must be between 0 and 100",
    );
    expect_one(
        &route("fault = { delay = { duration = \"1s\", percent = -1.0 } }"),
        "routes[0].fault.delay.percent",
        "must be between 0 and 100",
    );
    expect_one(
        &route("fault = { delay = { duration = \"1s\", percent = nan } }"),
        "routes[0].fault.delay.percent",
        "must be between 0 and 100",
    );
    builds(&route(
        "fault = { delay = { duration = \"1s\", percent = 100.0 } }",
    ));
}

#[test]
fn fault_other_errors() {
    expect_one(
        &route("fault = {}"),
        "routes[0].fault",
        "give delay, abort or both",
    );
    expect_one(
        &route("fault = { abort = { percent = 1.0 } }"),
        "routes[0].fault.abort",
        "give status, grpc or both",
    );
    expect_one(
        &route("fault = { abort = { status = 100, percent = 1.0 } }"),
        "routes[0].fault.abort.status",
        "`100` is not an HTTP status from 200 to 599",
    );
    expect_one(
        &route("fault = { abort = { grpc = \"BROKEN\", percent = 1.0 } }"),
        "routes[0].fault.abort.grpc",
        "`BROKEN` is not a gRPC code",
    );
    expect_one(
        &route("fault = { delay = { duration = \"forever\", percent = 1.0 } }"),
        "routes[0].fault.delay.duration",
        "`forever`",
    );
    expect_one(
        &route(
            "fault = { delay = { duration = \"1s\", percent = 1.0 }, only_with_header = \"x chaos: on\" }",
        ),
        "routes[0].fault.only_with_header",
        "`x chaos` is not a valid header name",
    );
}

// ---------------------------------------------------------------------------
// Many errors at once
// ---------------------------------------------------------------------------

#[test]
fn many_errors_are_reported_at_once() {
    let text = r#"
[[apis]]
name = "orders"
versions = [{ version = "v1", successor = "v0" }]

[[services]]
name = "orders"
endpoints = [{ address = "no-port" }]

[[plans]]
name = "gold"
quotas = ["10/s"]

[[consumers]]
id = "acme"
plan = "platinum"
api_keys = ["plain-text-key"]

[auth]
leeway = "10m"

[[routes]]
id = "r"
api = "payments"
match = { path = "no-slash", methods = ["GE T"] }
destinations = [{ service = "nowhere" }]
retry = { attempts = 0 }
timeout = { total = "1s", per_try = "2s" }
fault = { abort = { status = 503, percent = 200.0 } }

[[routes]]
id = "r"
"#;
    let config = Config::from_toml(text).unwrap();
    let err = Snapshot::build(config, 1).unwrap_err();
    let errors = err.errors();
    let expected = [
        ("apis[0].versions[0].successor", "unknown version `v0`"),
        (
            "services[0].endpoints[0].address",
            "is not a `host:port` address",
        ),
        (
            "plans[0].quotas[0]",
            "a quota's period must be h, d or month",
        ),
        ("consumers[0].plan", "unknown plan `platinum`"),
        ("consumers[0].api_keys[0]", "must be `sha256:`"),
        ("auth.leeway", "must be at most 5m"),
        ("routes[1].id", "duplicate route id `r`"),
        ("routes[0].match.path", "must start with `/`"),
        ("routes[0].match.methods[0]", "is not a valid method"),
        ("routes[0].api", "unknown API `payments`"),
        (
            "routes[0].destinations[0].service",
            "unknown service `nowhere`",
        ),
        ("routes[0].retry.attempts", "must be between 1 and 10"),
        ("routes[0].timeout.per_try", "must not exceed total"),
        ("routes[0].fault.abort.percent", "must be between 0 and 100"),
    ];
    for (path, fragment) in expected {
        expect_has(&errors, path, fragment);
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("{} error(s) in config:\n", expected.len())),
        "{shown}"
    );
    assert!(
        shown.contains("\n  routes[0].api: unknown API `payments`"),
        "{shown}"
    );
}

// ---------------------------------------------------------------------------
// A full, valid, realistic config
// ---------------------------------------------------------------------------

const FULL: &str = r#"
[auth]
leeway = "30s"
max_token_size = "16KiB"
consumer_claim = "azp"
realm = "shop"
api_key_header = "x-api-key"
api_key_query = "api_key"

[[auth.issuers]]
issuer = "https://id.example.com"
audiences = ["shop-api"]
algorithms = ["RS256", "ES256"]
jwks_uri = "https://id.example.com/.well-known/jwks.json"
typ = "at+jwt"
refresh = "10m"
unknown_kid_interval = "30s"
max_stale = "12h"

[[auth.issuers]]
issuer = "https://login.example.org"
algorithms = ["RS256"]
discovery = true
keys = [{ kid = "2026-01", algorithm = "RS256", jwk = { kty = "RSA", n = "0vx7agoebGcQSuuPiLJXZpt", e = "AQAB" } }]

[[auth.issuers]]
issuer = "internal"
algorithms = ["HS256"]
keys = [{ kid = "k1", algorithm = "HS256", secret = "0123456789abcdef0123456789abcdef" }]

[[apis]]
name = "orders"
owner = "team-orders"
description = "Orders placed by customers and partners."
docs = "https://docs.example.com/orders"
versioning = { styles = ["path", "header", "query"], strip_prefix = true, default = "v2" }

[[apis.versions]]
version = "v1"
status = "deprecated"
deprecated_at = "2026-01-01T00:00:00Z"
sunset = "2026-12-31T00:00:00Z"
successor = "v2"
deprecation_link = "https://docs.example.com/orders/v1-deprecation"
brownouts = [
  { start = "2026-06-01T10:00:00Z", end = "2026-06-01T11:00:00Z" },
  { start = "2026-09-01T10:00:00Z", end = "2026-09-01T12:00:00Z" },
]

[[apis.versions]]
version = "v2"
openapi = { inline = "openapi: 3.1.0\ninfo: { title: orders, version: '2' }" }

[[apis.versions]]
version = "v3"
status = "preview"
openapi = { file = "openapi/orders-v3.yaml" }

[[apis]]
name = "legacy"
versions = [{ version = "v0", status = "retired" }]

[[services]]
name = "orders"
protocol = "h2c"
max_concurrent = 200
outlier = { consecutive_failures = 3, base_ejection = "15s", max_ejection_percent = 30.0 }
endpoints = [
  { id = "orders-1", address = "10.0.0.1:8080", region = "eu-west", zone = "eu-west-1a", weight = 2, metadata = { version = "v2" } },
  { address = "10.0.0.2:8080", region = "eu-west", zone = "eu-west-1b", priority = 1, metadata = { version = "v2" } },
]

[[services]]
name = "orders-canary"
protocol = "http1"
endpoints = [{ address = "orders-canary.internal:8080", metadata = { version = "v3" } }]

[[services]]
name = "orders-dr"
endpoints = [{ address = "[2001:db8::1]:8080", region = "us-east" }]

[[services]]
name = "shadow"
endpoints = [{ address = "shadow.internal:9000" }]

[[plans]]
name = "gold"
description = "For partners."
rates = [{ rate = "100/s", burst = 200 }, { rate = "5000/h", key = ["consumer", "route"] }]
quotas = ["1000000/month", "50000/d"]

[[plans]]
name = "free"
rates = [{ rate = "5/sec" }]
quotas = ["1000/day"]

[[consumers]]
id = "acme"
name = "ACME Corp"
plan = "gold"
api_keys = [
  "sha256:d1cf9c5cffcb718f754b7ecb1ed23efdb5a654b4b20c2fc42759db5903209f76",
  "sha256:67BF062AB4A4E04EBA3C42E3987D1A27AC39E1A1658C5A3FDA2D25D6E22AB44D",
]
metadata = { tier = "partner" }

[[consumers]]
id = "mobile"
plan = "free"
api_keys = ["sha256:57d419be43e536f6ecfa7f54599e9050db0eca72598b456400601ae346403973"]

[[routes]]
id = "orders-v2"
api = "orders"
version = "v2"
metadata = { team = "orders", tier = "1" }

[routes.match]
hosts = ["api.example.com", "*.example.net"]
path_template = "/v2/orders/{id}"
methods = ["GET", "put"]
headers = [{ name = "X-Tenant", prefix = "t-" }, { name = "x-debug", present = false }]
query = [{ name = "expand", value = "items" }]

[[routes.destinations]]
service = "orders"
weight = 90
subset = { version = "v2" }
failover = ["orders-dr"]

[[routes.destinations]]
service = "orders-canary"
weight = 10

[routes.split]
sticky = "header:x-user"
override_header = "x-canary"
overrides = { always = 1, never = 0 }

[routes.mirror]
service = "shadow"
percent = 5.0
max_in_flight = 16

[routes.auth]
require = ["jwt", "api_key"]
scopes = ["orders:read"]
claims = { tenant = "acme" }
audience = "shop-api"
issuers = ["https://id.example.com"]

[routes.rate_limit]
limits = [{ rate = "10/s", burst = 20, key = ["ip", "header:X-Tenant"] }, { rate = "600/min" }]
cost = 2
cluster = true
on_store_failure = "fail_closed"
store_timeout = "10ms"

[routes.retry]
attempts = 4
grpc_codes = ["unavailable", "8"]
backoff = "50ms"
max_backoff = "2s"
budget_ratio = 0.1
replay_limit = "128KiB"
hedge_after = "150ms"

[routes.timeout]
total = "5s"
per_try = "1.5s"

[routes.circuit_breaker]
mode = "rate"
failure_rate = 25.0
window = 50
min_calls = 10
open = "2s"
max_open = "1m"
half_open_probes = 3
slow_call = "800ms"

[routes.fault]
delay = { duration = "250ms", percent = 1.5 }
abort = { status = 503, percent = 0.5 }
only_with_header = "x-chaos: on"

[[routes]]
id = "orders-v1"
api = "orders"
version = "v1"
match = { path_prefix = "/v1/orders/" }
destinations = [{ service = "orders" }]
split = { sticky = "consumer" }
fault = { abort = { grpc = "UNAVAILABLE", percent = 100.0 } }

[[routes]]
id = "health"
match = { path = "/healthz", methods = ["GET", "HEAD"] }
auth = { require = ["none"] }
retry = {}
circuit_breaker = {}
rate_limit = {}
timeout = { per_try = "500ms" }
destinations = [{ service = "orders" }]

[[routes]]
id = "catch-all"
match = { path_template = "/static/{*rest}" }
"#;

#[test]
fn full_config_builds_with_typed_policies() {
    let snapshot = Snapshot::from_toml(FULL, 42).unwrap();
    assert_eq!(snapshot.revision(), 42);
    let ids: Vec<&str> = snapshot.routes().iter().map(|r| r.id()).collect();
    assert_eq!(ids, ["orders-v2", "orders-v1", "health", "catch-all"]);

    // Catalog, services, plans, consumers.
    assert_eq!(snapshot.api("orders").unwrap().versions.len(), 3);
    assert!(snapshot.api("legacy").is_some());
    assert!(snapshot.api("nope").is_none());
    let orders = snapshot.service("orders").unwrap();
    assert!(orders.h2c);
    assert_eq!(orders.max_concurrent, Some(200));
    assert_eq!(orders.endpoints.len(), 2);
    assert_eq!(&*orders.endpoints[0].id, "orders-1");
    assert_eq!(orders.endpoints[0].address.as_str(), "10.0.0.1:8080");
    assert_eq!(orders.endpoints[0].weight, 2);
    assert_eq!(orders.endpoints[0].zone.as_deref(), Some("eu-west-1a"));
    assert_eq!(
        orders.endpoints[0].metadata,
        [("version".to_owned(), "v2".to_owned())]
    );
    assert_eq!(
        &*orders.endpoints[1].id, "10.0.0.2:8080",
        "the id defaults to the address"
    );
    assert_eq!(orders.endpoints[1].weight, 1, "the weight defaults to 1");
    assert_eq!(orders.endpoints[1].priority, 1);
    assert!(!snapshot.service("orders-canary").unwrap().h2c);
    let dr = snapshot.service("orders-dr").unwrap();
    assert_eq!(dr.endpoints[0].address.port_u16(), Some(8080));
    assert_eq!(dr.endpoints[0].address.host(), "[2001:db8::1]");
    assert_eq!(snapshot.plan("gold").unwrap().quotas.len(), 2);
    assert_eq!(
        snapshot.consumer("acme").unwrap().name.as_deref(),
        Some("ACME Corp")
    );
    // Digests of `partner-key-1`, `partner-key-2` (written in upper case) and `mobile-key`.
    for (digest, consumer) in [
        (DIGEST_A, "acme"),
        (DIGEST_B, "acme"),
        (
            "sha256:57d419be43e536f6ecfa7f54599e9050db0eca72598b456400601ae346403973",
            "mobile",
        ),
    ] {
        let d = parse_key_digest(digest).unwrap();
        assert_eq!(
            snapshot.consumer_by_key_digest(&d).map(|c| c.id.as_str()),
            Some(consumer),
            "{digest}"
        );
    }
    assert!(snapshot.consumer_by_key_digest(&[0; 32]).is_none());

    // The main route, every policy block given.
    let r = snapshot.route("orders-v2").unwrap();
    assert_eq!(r.index(), 0);
    assert_eq!(&**r.path_label(), "/v2/orders/{id}");
    assert_eq!(r.api(), Some("orders"));
    assert_eq!(r.version(), Some("v2"));
    assert_eq!(r.metadata("team"), Some("orders"));
    assert_eq!(r.metadata("nope"), None);
    let d = r.destinations();
    assert_eq!(d.len(), 2);
    assert_eq!((&*d[0].service, d[0].weight), ("orders", 90));
    assert_eq!(d[0].subset, [("version".to_owned(), "v2".to_owned())]);
    assert_eq!(
        d[0].failover.iter().map(|f| &**f).collect::<Vec<_>>(),
        ["orders-dr"]
    );
    assert_eq!((&*d[1].service, d[1].weight), ("orders-canary", 10));

    let p = r.policy();
    let auth = p.auth.as_ref().unwrap();
    assert_eq!(auth.methods, [AuthMethod::Jwt, AuthMethod::ApiKey]);
    assert_eq!(auth.scopes, ["orders:read"]);
    assert_eq!(auth.claims, [("tenant".to_owned(), "acme".to_owned())]);
    assert_eq!(auth.audience.as_deref(), Some("shop-api"));
    assert_eq!(auth.issuers, ["https://id.example.com"]);

    let rl = p.rate_limit.as_ref().unwrap();
    assert_eq!(rl.limits.len(), 2);
    assert_eq!(
        rl.limits[0].rate,
        Rate {
            amount: 10,
            period: Period::Second
        }
    );
    assert_eq!(rl.limits[0].burst, 20);
    assert_eq!(
        rl.limits[0].key,
        [
            KeyPart::ClientIp,
            KeyPart::Header(HeaderName::from_static("x-tenant"))
        ]
    );
    assert_eq!(
        rl.limits[1].rate,
        Rate {
            amount: 600,
            period: Period::Minute
        }
    );
    assert_eq!(rl.limits[1].burst, 600, "the burst defaults to the amount");
    assert_eq!(
        rl.limits[1].key,
        [KeyPart::ClientIp],
        "routes key by ip by default"
    );
    assert_eq!(rl.cost, 2);
    assert!(rl.plan);
    assert!(rl.cluster);
    assert_eq!(rl.on_store_failure, StoreFailureMode::FailClosed);
    assert_eq!(rl.store_timeout, Duration::from_millis(10));

    let retry = p.retry.as_ref().unwrap();
    assert_eq!(retry.attempts, 4);
    assert_eq!(
        retry.statuses,
        [
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::GATEWAY_TIMEOUT
        ]
    );
    assert_eq!(
        retry.grpc_codes,
        [GrpcCode::Unavailable, GrpcCode::ResourceExhausted]
    );
    assert_eq!(
        retry.methods,
        [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE
        ]
    );
    assert_eq!(retry.backoff, Duration::from_millis(50));
    assert_eq!(retry.max_backoff, Duration::from_secs(2));
    assert_eq!(retry.budget_ratio, 0.1);
    assert_eq!(retry.budget_min_per_second, 10);
    assert_eq!(retry.replay_limit, 128 * 1024);
    assert_eq!(retry.hedge_after, Some(Duration::from_millis(150)));

    let timeout = p.timeout.unwrap();
    assert_eq!(timeout.total, Some(Duration::from_secs(5)));
    assert_eq!(timeout.per_try, Some(Duration::from_millis(1500)));

    let cb = p.circuit_breaker.as_ref().unwrap();
    assert_eq!(
        cb.mode,
        BreakerMode::Rate {
            rate: 0.25,
            window: 50,
            min_calls: 10
        }
    );
    assert_eq!(cb.open, Duration::from_secs(2));
    assert_eq!(cb.max_open, Duration::from_secs(60));
    assert_eq!(cb.half_open_probes, 3);
    assert_eq!(cb.slow_call, Some(Duration::from_millis(800)));

    let fault = p.fault.as_ref().unwrap();
    assert_eq!(fault.delay, Some((Duration::from_millis(250), 0.015)));
    assert_eq!(
        fault.abort,
        Some((
            StatusCode::SERVICE_UNAVAILABLE,
            GrpcCode::Unavailable,
            0.005
        ))
    );
    assert_eq!(
        fault.only_with_header,
        Some((HeaderName::from_static("x-chaos"), Some("on".to_owned())))
    );

    // A prefix route, and a gRPC-only abort whose HTTP status defaults to 503.
    let v1 = snapshot.route("orders-v1").unwrap();
    assert_eq!(&**v1.path_label(), "/v1/orders/*");
    let abort = v1.policy().fault.as_ref().unwrap().abort.unwrap();
    assert_eq!(
        abort,
        (StatusCode::SERVICE_UNAVAILABLE, GrpcCode::Unavailable, 1.0)
    );
    assert!(v1.policy().retry.is_none());
    assert!(v1.policy().auth.is_none());

    // Empty policy blocks get every default.
    let health = snapshot.route("health").unwrap();
    assert_eq!(&**health.path_label(), "/healthz");
    let hp = health.policy();
    let auth = hp.auth.as_ref().unwrap();
    assert!(auth.methods.is_empty(), "`none` means anonymous");
    let retry = hp.retry.as_ref().unwrap();
    assert_eq!(retry.attempts, 3);
    assert_eq!(
        retry.statuses,
        [
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::GATEWAY_TIMEOUT
        ]
    );
    assert_eq!(retry.grpc_codes, [GrpcCode::Unavailable]);
    assert_eq!(
        retry.methods,
        [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE
        ]
    );
    assert_eq!(retry.backoff, Duration::from_millis(25));
    assert_eq!(retry.max_backoff, Duration::from_secs(1));
    assert_eq!(retry.budget_ratio, 0.2);
    assert_eq!(retry.budget_min_per_second, 10);
    assert_eq!(retry.replay_limit, 64 * 1024);
    assert_eq!(retry.hedge_after, None);
    let cb = hp.circuit_breaker.as_ref().unwrap();
    assert_eq!(cb.mode, BreakerMode::Consecutive(5));
    assert_eq!(cb.open, Duration::from_secs(5));
    assert_eq!(cb.max_open, Duration::from_secs(60));
    assert_eq!(cb.half_open_probes, 1);
    assert_eq!(cb.slow_call, None);
    let rl = hp.rate_limit.as_ref().unwrap();
    assert!(rl.limits.is_empty());
    assert_eq!(rl.cost, 1);
    assert!(rl.plan);
    assert!(!rl.cluster);
    assert_eq!(rl.on_store_failure, StoreFailureMode::Local);
    assert_eq!(rl.store_timeout, Duration::from_millis(5));
    let t = hp.timeout.unwrap();
    assert_eq!(
        (t.total, t.per_try),
        (None, Some(Duration::from_millis(500)))
    );
    assert!(hp.fault.is_none());

    // A route with no policy blocks and no destinations (the local service).
    let c = snapshot.route("catch-all").unwrap();
    assert_eq!(c.policy(), &Default::default());
    assert!(c.destinations().is_empty());
    assert_eq!(&**c.path_label(), "/static/{*rest}");

    // The config is kept as given.
    assert_eq!(**snapshot.config(), Config::from_toml(FULL).unwrap());
}

#[test]
fn default_breaker_rate_mode() {
    let s = builds(&route("circuit_breaker = { mode = \"rate\" }"));
    let cb = s
        .route("r")
        .unwrap()
        .policy()
        .circuit_breaker
        .clone()
        .unwrap();
    assert_eq!(
        cb.mode,
        BreakerMode::Rate {
            rate: 0.5,
            window: 100,
            min_calls: 20
        }
    );
}

#[test]
fn empty_config_builds() {
    let s = Snapshot::build(Config::default(), 7).unwrap();
    assert_eq!(s.revision(), 7);
    assert!(s.routes().is_empty());
    assert_eq!(Config::from_toml("").unwrap(), Config::default());
    assert_eq!(Config::from_json("{}").unwrap(), Config::default());
    let req = http::Request::get("/").body(()).unwrap();
    assert!(s.match_request(&req).is_none());
    assert!(Snapshot::empty().match_request(&req).is_none());
}

// ---------------------------------------------------------------------------
// JSON round-trip and redaction
// ---------------------------------------------------------------------------

#[test]
fn json_round_trip() {
    let config = Config::from_toml(FULL).unwrap();
    let json = serde_json::to_string_pretty(&config).unwrap();
    let back = Config::from_json(&json).unwrap();
    assert_eq!(back, config);
    // And it still builds to the same routes.
    let a = Snapshot::build(config, 1).unwrap();
    let b = Snapshot::build(back, 1).unwrap();
    for (x, y) in a.routes().iter().zip(b.routes()) {
        assert_eq!(x.id(), y.id());
        assert_eq!(x.policy(), y.policy());
        assert_eq!(x.destinations(), y.destinations());
    }
    // Defaults are not lost on the way: an empty config is `{}`.
    assert_eq!(serde_json::to_string(&Config::default()).unwrap(), "{}");
}

#[test]
fn json_round_trip_of_a_minimal_config() {
    let config = Config::from_toml(&route("")).unwrap();
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(Config::from_json(&json).unwrap(), config);
    // Defaults are written out (destination weight 100, endpoint weight 1).
    assert!(json.contains("\"weight\":100"), "{json}");
    assert!(json.contains("\"weight\":1"), "{json}");
}

#[test]
fn redacted_hides_secrets() {
    let text = format!(
        r#"
[[auth.issuers]]
issuer = "internal"
algorithms = ["HS256", "RS256"]

[[auth.issuers.keys]]
kid = "hmac"
algorithm = "HS256"
secret = "{SECRET_32}"

[[auth.issuers.keys]]
kid = "oct"
algorithm = "HS256"
jwk = {{ kty = "oct", k = "c2VjcmV0LXN5bW1ldHJpYy1rZXktbWF0ZXJpYWwtMzI" }}

[[auth.issuers.keys]]
kid = "rsa-private"
algorithm = "RS256"
jwk = {{ kty = "RSA", n = "PUBLIC-N", e = "AQAB", d = "PRIVATE-D", p = "PRIVATE-P", q = "PRIVATE-Q", dp = "PRIVATE-DP", dq = "PRIVATE-DQ", qi = "PRIVATE-QI", oth = [{{ r = "PRIVATE-R", d = "PRIVATE-OD", t = "PRIVATE-T" }}] }}

[[auth.issuers.keys]]
kid = "pem"
algorithm = "RS256"
pem = "-----BEGIN PUBLIC KEY-----PUBLIC-PEM-----END PUBLIC KEY-----"

[[consumers]]
id = "acme"
api_keys = ["{DIGEST_A}", "{DIGEST_B}"]
"#
    );
    let config = Config::from_toml(&text).unwrap();
    let red = config.redacted();

    let keys = &red.auth.issuers[0].keys;
    assert_eq!(keys[0].secret.as_deref(), Some("[redacted]"));
    assert_eq!(keys[1].jwk.as_ref().unwrap()["k"], "[redacted]");
    assert_eq!(keys[1].jwk.as_ref().unwrap()["kty"], "oct");
    let rsa = keys[2].jwk.as_ref().unwrap();
    for member in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
        assert_eq!(rsa[member], "[redacted]", "{member}");
    }
    // Public members stay.
    assert_eq!(rsa["n"], "PUBLIC-N");
    assert_eq!(rsa["e"], "AQAB");
    assert_eq!(rsa["kty"], "RSA");
    // A public PEM is not a secret.
    assert_eq!(
        keys[3].pem.as_deref(),
        Some("-----BEGIN PUBLIC KEY-----PUBLIC-PEM-----END PUBLIC KEY-----")
    );
    // No member absent before appears after.
    assert!(keys[0].jwk.is_none());
    assert!(keys[3].secret.is_none());
    assert_eq!(red.consumers[0].api_keys, ["[redacted]", "[redacted]"]);

    // Nothing secret survives in any rendering.
    let debug = format!("{red:?}");
    let json = serde_json::to_string(&red).unwrap();
    for shown in [&debug, &json] {
        assert!(!shown.contains(SECRET_32), "{shown}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(!shown.contains("PRIVATE-"), "{shown}");
        assert!(!shown.contains(&DIGEST_A[7..]), "{shown}");
        assert!(!shown.contains(&DIGEST_B[7..]), "{shown}");
    }

    // The original is untouched.
    assert_eq!(
        config.auth.issuers[0].keys[0].secret.as_deref(),
        Some(SECRET_32)
    );
    assert_eq!(config.consumers[0].api_keys[0], DIGEST_A);
    assert_eq!(config, Config::from_toml(&text).unwrap());
}

// ---------------------------------------------------------------------------
// Settings that would be silently ignored are errors

#[test]
fn breaker_fields_of_the_other_mode_are_rejected() {
    expect_one(
        &route(r#"circuit_breaker = { mode = "rate", failures = 3 }"#),
        "routes[0].circuit_breaker.failures",
        "only applies to mode = \"consecutive\"",
    );
    let errors = invalid(&route(
        r#"circuit_breaker = { failures = 3, window = 10, min_calls = 5 }"#,
    ));
    expect_has(
        &errors,
        "routes[0].circuit_breaker.window",
        "only applies to mode = \"rate\"",
    );
    expect_has(
        &errors,
        "routes[0].circuit_breaker.min_calls",
        "only applies to mode = \"rate\"",
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn query_values_that_could_never_match_are_rejected() {
    expect_one(
        &with_match(r#"query = [{ name = "q", value = "a b" }]"#),
        "routes[0].match.query[0].value",
        "before percent-decoding",
    );
    expect_one(
        &with_match(r#"query = [{ name = "a=b" }]"#),
        "routes[0].match.query[0].name",
        "without `&`, `=`, `#` or spaces",
    );
}

#[test]
fn versioning_styles_and_query_are_checked() {
    let text = r#"
        [[apis]]
        name = "orders"
        versions = [{ version = "v1" }]
        versioning = { styles = ["header", "header"], query = "" }
    "#;
    let errors = invalid(text);
    expect_has(
        &errors,
        "apis[0].versioning.styles[1]",
        "duplicate style `header`",
    );
    expect_has(
        &errors,
        "apis[0].versioning.query",
        "non-empty parameter name",
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn split_without_destinations_is_rejected() {
    expect_one(
        &with_services("[[routes]]\nid = \"r\"\nsplit = { sticky = \"consumer\" }\n"),
        "routes[0].split",
        "a split needs destinations",
    );
}
