//! Usage metering: requests per consumer, API, version and UTC day, in
//! `GET /mesh/usage`.

use serde_json::{Value, json};

use crate::plans::{ManualClock, manual_app};
use crate::support::{
    self, ACME_KEY, GLOBEX_KEY, INITECH_KEY, assert_limited, assert_ok, parse_rfc3339,
};

fn usage_config() -> String {
    format!(
        r#"
[[apis]]
name = "orders"
versions = [{{ version = "v1" }}, {{ version = "v2" }}]

[[apis]]
name = "billing"

{}
[[routes]]
id = "orders-v1"
api = "orders"
version = "v1"
match = {{ path_prefix = "/v1/orders" }}
auth = {{ require = ["api_key"] }}
rate_limit = {{ limits = [{{ rate = "1/h", burst = 3, key = ["consumer"] }}] }}

[[routes]]
id = "orders-v2"
api = "orders"
version = "v2"
match = {{ path_prefix = "/v2/orders" }}
auth = {{ require = ["api_key"] }}

[[routes]]
id = "orders-v1-public"
api = "orders"
version = "v1"
match = {{ path_prefix = "/v1/public" }}

[[routes]]
id = "billing"
api = "billing"
match = {{ path_prefix = "/billing" }}
auth = {{ require = ["api_key"] }}

[[routes]]
id = "untracked"
match = {{ path_prefix = "/untracked" }}
"#,
        support::consumers("")
    )
}

/// The rows of `GET /mesh/usage{query}`, with `first_seen`/`last_seen`
/// checked to be in `[from, to]` and then removed.
async fn usage(admin: std::net::SocketAddr, query: &str, from: u64, to: u64) -> Vec<Value> {
    let r = support::get_with(
        &support::client(),
        admin,
        &format!("/mesh/usage{query}"),
        &[],
    )
    .await;
    assert_ok(&r);
    assert_eq!(r.header("content-type"), "application/json");
    let today = support::now() / 86_400;
    r.json()["usage"]
        .as_array()
        .expect("usage rows")
        .iter()
        .map(|row| {
            let mut row = row.clone();
            let o = row.as_object_mut().unwrap();
            let first = parse_rfc3339(o.remove("first_seen").unwrap().as_str().unwrap());
            let last = parse_rfc3339(o.remove("last_seen").unwrap().as_str().unwrap());
            assert!(from <= first && first <= last && last <= to, "{row:?}");
            let day = o.remove("day").unwrap();
            let day = parse_rfc3339(&format!("{}T00:00:00Z", day.as_str().unwrap())) / 86_400;
            assert!(day == today || day + 1 == today, "{day} {today}");
            row
        })
        .collect()
}

#[tokio::test]
async fn usage_lists_each_consumer_per_api_and_version() {
    let app = support::app(&usage_config()).await;
    let admin = app.admin().await;
    let from = support::now();
    // v1: acme 2 (admitted), globex 5 (3 admitted, 2 refused), anonymous 3.
    for _ in 0..2 {
        assert_ok(&app.keyed("/v1/orders", ACME_KEY).await);
    }
    for i in 0..5 {
        let r = app.keyed("/v1/orders/1", GLOBEX_KEY).await;
        if i < 3 {
            assert_ok(&r);
        } else {
            assert_limited(&r);
        }
    }
    for _ in 0..3 {
        assert_ok(&app.get("/v1/public", &[]).await);
    }
    // v2: initech 4, acme 1. Billing: initech 1. Untracked: not an API.
    for _ in 0..4 {
        assert_ok(&app.keyed("/v2/orders", INITECH_KEY).await);
    }
    assert_ok(&app.keyed("/v2/orders", ACME_KEY).await);
    assert_ok(&app.keyed("/billing", INITECH_KEY).await);
    assert_ok(&app.keyed("/untracked", INITECH_KEY).await);
    // Refused by authentication: never reaches metering.
    assert_eq!(app.keyed("/v1/orders", "no-such-key-000").await.status, 401);
    let to = support::now();

    let row = |consumer: &str, version: &str, requests: u64, limited: u64| {
        json!({
            "consumer": consumer,
            "api": "orders",
            "version": version,
            "requests": requests,
            "limited": limited,
        })
    };
    assert_eq!(
        usage(admin, "?api=orders&version=v1", from, to).await,
        vec![
            row("acme", "v1", 2, 0),
            row("anonymous", "v1", 3, 0),
            row("globex", "v1", 5, 2),
        ]
    );
    assert_eq!(
        usage(admin, "?api=orders&version=v2", from, to).await,
        vec![row("acme", "v2", 1, 0), row("initech", "v2", 4, 0)]
    );
    assert_eq!(
        usage(admin, "?api=orders&consumer=acme", from, to).await,
        vec![row("acme", "v1", 2, 0), row("acme", "v2", 1, 0)]
    );
    assert_eq!(usage(admin, "?api=orders", from, to).await.len(), 5);
    let all = usage(admin, "", from, to).await;
    assert_eq!(all.len(), 6, "{all:?}");
    assert_eq!(
        all[0],
        json!({
            "consumer": "initech",
            "api": "billing",
            "version": null,
            "requests": 1,
            "limited": 0,
        })
    );
    assert!(usage(admin, "?api=nothing", from, to).await.is_empty());
    assert!(
        usage(admin, "?api=orders&version=v3", from, to)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn first_and_last_seen_and_days_follow_the_clock() {
    // 2026-02-15T23:59:58Z, two seconds before a new UTC day.
    let clock = ManualClock::new(1_771_199_998);
    let (addr, limits) = manual_app(&usage_config(), &clock).await;
    let admin = support::serve(limits.admin_router()).await;
    let client = support::client();
    let call = |key: &'static str| {
        let client = client.clone();
        async move { support::get_with(&client, addr, "/v2/orders", &[("x-api-key", key)]).await }
    };
    assert_ok(&call(ACME_KEY).await);
    clock.set(1_771_199_999);
    assert_ok(&call(ACME_KEY).await);
    assert_ok(&call(GLOBEX_KEY).await);
    clock.set(1_771_200_000);
    assert_ok(&call(ACME_KEY).await);
    let r = support::get_with(&client, admin, "/mesh/usage?version=v2", &[]).await;
    let row = |consumer: &str, day: &str, requests: u64, first: &str, last: &str| {
        json!({
            "consumer": consumer, "api": "orders", "version": "v2", "day": day,
            "requests": requests, "limited": 0, "first_seen": first, "last_seen": last,
        })
    };
    assert_eq!(
        r.json()["usage"],
        json!([
            row(
                "acme",
                "2026-02-15",
                2,
                "2026-02-15T23:59:58Z",
                "2026-02-15T23:59:59Z"
            ),
            row(
                "acme",
                "2026-02-16",
                1,
                "2026-02-16T00:00:00Z",
                "2026-02-16T00:00:00Z"
            ),
            row(
                "globex",
                "2026-02-15",
                1,
                "2026-02-15T23:59:59Z",
                "2026-02-15T23:59:59Z"
            ),
        ])
    );
}
