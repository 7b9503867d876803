//! Plans: a consumer's rates (shared by every route that applies plans) and
//! its quotas per API over UTC calendar periods.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use apimesh::layers::ratelimit::WallClock;
use apimesh::{
    AuthLayer, InboundLayer, LiveSnapshot, MeshInboundLayer, RateLimitLayer, Snapshot, Unmatched,
};

use crate::support::{
    self, ACME_KEY, GLOBEX_KEY, INITECH_KEY, Reply, assert_limited, assert_limited_with, assert_ok,
    assert_ok_with,
};

fn gold_config() -> String {
    format!(
        r#"
[[plans]]
name = "gold"
rates = [{{ rate = "3/h" }}]
quotas = ["5/d"]

{}
[[routes]]
id = "p1"
match = {{ path_prefix = "/p1" }}
auth = {{ require = ["api_key"] }}
rate_limit = {{ plan = true }}

[[routes]]
id = "p2"
match = {{ path_prefix = "/p2" }}
auth = {{ require = ["api_key"] }}
rate_limit = {{ plan = true }}

[[routes]]
id = "unplanned"
match = {{ path_prefix = "/unplanned" }}
auth = {{ require = ["api_key"] }}
rate_limit = {{ limits = [{{ rate = "1000/h" }}], plan = false }}

[[routes]]
id = "anon"
match = {{ path_prefix = "/anon" }}
rate_limit = {{ limits = [{{ rate = "1000/h", key = ["ip"] }}] }}
"#,
        support::consumers("gold")
    )
}

#[tokio::test]
async fn a_plan_rate_is_shared_by_every_planned_route_of_a_consumer() {
    let app = support::app(&gold_config()).await;
    let policy = "\"plan-gold-0\";q=3;w=3600, \"quota-gold-0\";q=5;w=86400";
    // 3/h: one unit every 1200 s; the rate is tighter than the 5/d quota.
    let r = app.keyed("/p1", ACME_KEY).await;
    assert_ok_with(&r, "\"plan-gold-0\";r=2;t=1200");
    assert_eq!(r.policy(), policy);
    assert_ok_with(
        &app.keyed("/p2", ACME_KEY).await,
        "\"plan-gold-0\";r=1;t=2400",
    );
    assert_ok_with(
        &app.keyed("/p1/x", ACME_KEY).await,
        "\"plan-gold-0\";r=0;t=3600",
    );
    let r = app.keyed("/p2", ACME_KEY).await;
    assert_limited_with(
        &r,
        1_200,
        "\"plan-gold-0\";r=0;t=1200",
        "plan rate 3/h exceeded",
    );
    assert_eq!(r.policy(), policy);
    assert_limited(&app.keyed("/p1", ACME_KEY).await);

    // Other consumers on the same plan have their own.
    assert_ok_with(
        &app.keyed("/p2", GLOBEX_KEY).await,
        "\"plan-gold-0\";r=2;t=1200",
    );
    assert_ok_with(
        &app.keyed("/p1", INITECH_KEY).await,
        "\"plan-gold-0\";r=2;t=1200",
    );

    // Routes that do not apply plans are unaffected, even for acme.
    let r = app.keyed("/unplanned", ACME_KEY).await;
    assert_ok_with(&r, "\"unplanned-0\";r=999;t=4");
    assert_eq!(r.policy(), "\"unplanned-0\";q=1000;w=3600");
    // And so is an anonymous route, with or without acme's key.
    for _ in 0..10 {
        assert_ok(&app.get("/anon", &[]).await);
        let r = app.keyed("/anon", ACME_KEY).await;
        assert_ok(&r);
        assert!(r.ratelimit().starts_with("\"anon-0\";"), "{:?}", r.headers);
        assert!(!r.policy().contains("plan-"), "{:?}", r.headers);
    }
}

fn metered_config(rates: &str) -> String {
    metered_config_with(rates, "\"2/h\"")
}

fn metered_config_with(rates: &str, quotas: &str) -> String {
    format!(
        r#"
[[apis]]
name = "orders"

[[apis]]
name = "billing"

[[plans]]
name = "metered"
rates = [{rates}]
quotas = [{quotas}]

{}
[[routes]]
id = "orders"
api = "orders"
match = {{ path_prefix = "/orders" }}
auth = {{ require = ["api_key"] }}
rate_limit = {{ plan = true }}

[[routes]]
id = "orders-admin"
api = "orders"
match = {{ path_prefix = "/admin/orders" }}
auth = {{ require = ["api_key"] }}
rate_limit = {{ plan = true }}

[[routes]]
id = "billing"
api = "billing"
match = {{ path_prefix = "/billing" }}
auth = {{ require = ["api_key"] }}
rate_limit = {{ plan = true }}
"#,
        support::consumers("metered")
    )
}

#[tokio::test]
async fn a_quota_is_counted_per_consumer_and_api_and_resets_at_the_utc_hour() {
    // The first two requests and the refusal must fall in one UTC hour.
    let to_hour = 3_600 - support::now() % 3_600;
    if to_hour < 3 {
        tokio::time::sleep(Duration::from_secs(to_hour + 1)).await;
    }
    let app = support::app(&metered_config("{ rate = \"1000/s\" }")).await;
    assert_ok(&app.keyed("/orders", ACME_KEY).await);
    // Another route of the same API draws from the same quota.
    let r = app.keyed("/admin/orders", ACME_KEY).await;
    assert_ok(&r);
    assert!(
        r.ratelimit().starts_with("\"quota-metered-0\";r=0;t="),
        "{:?}",
        r.headers
    );
    let before = 3_600 - support::now() % 3_600;
    let r = app.keyed("/orders/1", ACME_KEY).await;
    let after = 3_600 - support::now() % 3_600;
    let retry = assert_limited(&r);
    assert!(
        retry == before || retry == after,
        "Retry-After {retry}, expected the seconds to the next UTC hour ({before} or {after})"
    );
    assert_eq!(r.ratelimit(), format!("\"quota-metered-0\";r=0;t={retry}"));
    assert_eq!(r.json()["detail"], "quota 2/h exhausted");
    assert_eq!(
        r.policy(),
        "\"plan-metered-0\";q=1000;w=1, \"quota-metered-0\";q=2;w=3600"
    );
    // Another API, another quota; another consumer, another quota.
    assert_ok(&app.keyed("/billing", ACME_KEY).await);
    assert_ok(&app.keyed("/orders", GLOBEX_KEY).await);
}

/// A manual wall clock for quota windows and usage days.
#[derive(Clone)]
pub(crate) struct ManualClock(pub(crate) Arc<AtomicU64>);

impl ManualClock {
    pub(crate) fn new(t: u64) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(t)))
    }
    pub(crate) fn set(&self, t: u64) {
        self.0.store(t, Ordering::SeqCst);
    }
    pub(crate) fn clock(&self) -> WallClock {
        let t = self.0.clone();
        Arc::new(move || t.load(Ordering::SeqCst))
    }
}

/// The mesh chain built by hand around a fixed snapshot, with `clock`.
/// Returns the served address and the rate-limit layer (for its admin
/// router and keys).
pub(crate) async fn manual_app(
    config: &str,
    clock: &ManualClock,
) -> (std::net::SocketAddr, RateLimitLayer) {
    let snapshot = Arc::new(Snapshot::from_toml(config, 1).unwrap_or_else(|e| panic!("{e}")));
    let limits = RateLimitLayer::from_routes().with_clock(clock.clock());
    let layer = MeshInboundLayer::new(
        InboundLayer::new(LiveSnapshot::fixed(snapshot)).unmatched(Unmatched::NotFound),
        AuthLayer::from_routes(),
        limits.clone(),
    );
    let addr = support::serve_with_connect_info(support::echo_router().layer(layer)).await;
    (addr, limits)
}

/// A plan rate that never refuses in these tests and whose keys stay
/// busy (one unit back every 36 s on governor's real clock).
const GENEROUS: &str = "{ rate = \"100/h\" }";

/// 2026-02-15T13:00:00Z.
const HOUR_END: u64 = 1_771_160_400;

#[tokio::test]
async fn a_quota_resets_exactly_at_the_hour_boundary() {
    // Plan rates run on governor's own monotonic clock: make them generous
    // so only the quota (on the manual clock) decides.
    let clock = ManualClock::new(HOUR_END - 2);
    let (addr, limits) = manual_app(&metered_config(GENEROUS), &clock).await;
    let client = support::client();
    let get = |path: &'static str, key: &'static str| {
        let client = client.clone();
        async move { support::get_with(&client, addr, path, &[("x-api-key", key)]).await }
    };
    let r: Reply = get("/orders", ACME_KEY).await;
    assert_ok_with(&r, "\"quota-metered-0\";r=1;t=2");
    assert_ok_with(
        &get("/orders", ACME_KEY).await,
        "\"quota-metered-0\";r=0;t=2",
    );
    clock.set(HOUR_END - 1);
    let r = get("/orders", ACME_KEY).await;
    assert_limited_with(&r, 1, "\"quota-metered-0\";r=0;t=1", "quota 2/h exhausted");
    // The other consumer and the other API are untouched.
    assert_ok_with(
        &get("/billing", ACME_KEY).await,
        "\"quota-metered-0\";r=1;t=1",
    );
    assert_ok_with(
        &get("/orders", GLOBEX_KEY).await,
        "\"quota-metered-0\";r=1;t=1",
    );
    assert_eq!(
        limits.keys(),
        3 + 2,
        "two plan-rate keys and three quota cells"
    );
    // Exactly at the boundary the new hour's quota is there.
    clock.set(HOUR_END);
    assert_ok_with(
        &get("/orders", ACME_KEY).await,
        "\"quota-metered-0\";r=1;t=3600",
    );
    assert_ok_with(
        &get("/orders", ACME_KEY).await,
        "\"quota-metered-0\";r=0;t=3600",
    );
    let r = get("/orders", ACME_KEY).await;
    assert_limited_with(
        &r,
        3_600,
        "\"quota-metered-0\";r=0;t=3600",
        "quota 2/h exhausted",
    );
    // Ended windows are evicted: only acme's `orders` cell is of this hour
    // (plan-rate keys are not idle: a unit comes back only every 36 s).
    clock.set(HOUR_END + 10);
    let held = limits.evict_idle();
    assert_eq!(held, limits.keys());
    assert_eq!(held, 2 + 1, "{held}");
}

/// Regression: `decide_local` (and `decide_cluster`) used to take the quotas one after
/// the other, so a request that a later quota refuses has already used the
/// earlier ones. With
/// `quotas = ["5/d", "2/h"]`, four requests refused by the hourly quota use
/// up the daily one, and the consumer is locked out for the rest of the day
/// having been served twice (the code says "a request refused above does
/// not use quota").
#[tokio::test]
async fn a_request_refused_by_one_quota_does_not_use_another() {
    let clock = ManualClock::new(HOUR_END - 100);
    let config = metered_config_with(GENEROUS, "\"5/d\", \"2/h\"");
    let (addr, _limits) = manual_app(&config, &clock).await;
    let client = support::client();
    let get = || support::get_with(&client, addr, "/orders", &[("x-api-key", ACME_KEY)]);
    assert_ok(&get().await);
    assert_ok(&get().await);
    for i in 0..4 {
        let r = get().await;
        assert_limited(&r);
        assert_eq!(
            r.json()["detail"],
            "quota 2/h exhausted",
            "refusal {} after 2 served: refusals by the hourly quota used the daily one",
            i + 1
        );
    }
    // The next hour: served twice today, three of five left.
    clock.set(HOUR_END);
    let r = get().await;
    assert_eq!(
        r.status,
        200,
        "served 2 of a 5/d quota, yet refused: {}",
        r.json()["detail"]
    );
    assert_eq!(r.ratelimit(), "\"quota-metered-1\";r=1;t=3600");
}

/// Regression: quota cells were keyed by (consumer+API, period) only (and in Redis
/// by the quota's name, `quota-<plan>-<period>`), so two quotas with the
/// same period (`["2/h", "10/h"]`, which the config accepts) count
/// every request twice in one cell, and the consumer gets one request an
/// hour instead of two.
#[tokio::test]
async fn two_quotas_of_one_period_are_counted_apart() {
    let clock = ManualClock::new(HOUR_END - 100);
    let config = metered_config_with(GENEROUS, "\"2/h\", \"10/h\"");
    let (addr, _limits) = manual_app(&config, &clock).await;
    let client = support::client();
    let get = || support::get_with(&client, addr, "/orders", &[("x-api-key", ACME_KEY)]);
    let r = get().await;
    assert_ok(&r);
    assert!(
        r.ratelimit().starts_with("\"quota-metered-"),
        "{:?}",
        r.headers
    );
    assert!(r.ratelimit().ends_with(";r=1;t=100"), "{:?}", r.headers);
    let r = get().await;
    assert_eq!(r.status, 200, "the second of 2/h was refused: {:?}", r.body);
    assert!(r.ratelimit().ends_with(";r=0;t=100"), "{:?}", r.headers);
    assert_limited(&get().await);
}

/// Regression: a plan rate's `key` was validated but ignored: `RateState::build`
/// gives every plan rate `key: vec![KeyPart::Consumer]` and `decide_local`
/// checks it with the consumer-only hash, so `key = ["consumer", "route"]`
/// is silently one bucket per consumer across all routes.
#[tokio::test]
async fn a_plan_rate_honours_its_key() {
    let config = gold_config().replace(
        "rates = [{ rate = \"3/h\" }]",
        "rates = [{ rate = \"1/h\", burst = 2, key = [\"consumer\", \"route\"] }]",
    );
    let app = support::app(&config).await;
    assert_ok(&app.keyed("/p1", ACME_KEY).await);
    assert_ok(&app.keyed("/p1", ACME_KEY).await);
    assert_limited(&app.keyed("/p1", ACME_KEY).await);
    let r = app.keyed("/p2", ACME_KEY).await;
    assert_eq!(
        r.status, 200,
        "route p2 shares p1's bucket despite key = [\"consumer\", \"route\"]: {:?}",
        r.body
    );
    assert_eq!(r.ratelimit(), "\"plan-gold-0\";r=1;t=3600");
}
