//! Limiter state over time: idle keys are evicted, and config changes keep
//! the counters of limits whose rate and burst are unchanged.

use std::time::Duration;

use crate::support::{self, assert_limited, assert_ok, assert_ok_with};

#[tokio::test]
async fn idle_keys_are_evicted() {
    let app = support::app(
        r#"
[[routes]]
id = "fast"
match = { path_prefix = "/fast" }
rate_limit = { limits = [{ rate = "1000/s", burst = 1, key = ["header:x-tenant"] }] }
"#,
    )
    .await;
    assert_eq!(app.mesh.limits().keys(), 0);
    for i in 0..1_000 {
        let tenant = format!("tenant-{i}");
        let r = app.get("/fast", &[("x-tenant", &tenant)]).await;
        assert_ok_with(&r, "\"fast-0\";r=0;t=1");
    }
    assert!(
        app.mesh.limits().keys() >= 1_000,
        "{}",
        app.mesh.limits().keys()
    );
    let admin = app.admin().await;
    let limits = support::get_with(&support::client(), admin, "/mesh/limits", &[])
        .await
        .json();
    assert_eq!(limits["keys"], 1_000, "{limits}");
    assert_eq!(limits["quota_cells"], 0, "{limits}");
    assert_eq!(limits["revision"], 1, "{limits}");
    // governor keeps time on its own real monotonic clock (a manual clock
    // cannot drive it), so let real time pass: at 1000/s with a burst of 1 a
    // key is back to a full bucket 1 ms after its request; 20 ms is plenty.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(app.mesh.limits().evict_idle(), 0);
    assert_eq!(app.mesh.limits().keys(), 0);
    let limits = support::get_with(&support::client(), admin, "/mesh/limits", &[])
        .await
        .json();
    assert_eq!(limits["keys"], 0, "{limits}");
    // Evicted keys start afresh.
    assert_ok(&app.get("/fast", &[("x-tenant", "tenant-0")]).await);
}

#[tokio::test]
async fn eviction_keeps_keys_that_are_not_idle() {
    let app = support::app(
        r#"
[[routes]]
id = "slow"
match = { path_prefix = "/slow" }
rate_limit = { limits = [{ rate = "1/h", burst = 1, key = ["header:x-tenant"] }] }
"#,
    )
    .await;
    assert_ok(&app.get("/slow", &[("x-tenant", "a")]).await);
    assert_limited(&app.get("/slow", &[("x-tenant", "a")]).await);
    assert_eq!(app.mesh.limits().evict_idle(), 1);
    assert_eq!(app.mesh.limits().keys(), 1);
    // The exhausted bucket was not reset.
    assert_limited(&app.get("/slow", &[("x-tenant", "a")]).await);
}

fn kept(rate: &str, burst: u32, extra_first: &str) -> String {
    format!(
        r#"
{extra_first}
[[routes]]
id = "kept"
match = {{ path_prefix = "/kept" }}
rate_limit = {{ limits = [{{ rate = "{rate}", burst = {burst}, key = ["ip"] }}] }}
"#
    )
}

const UNRELATED: &str = r#"
[[routes]]
id = "unrelated"
match = { path_prefix = "/unrelated" }
rate_limit = { limits = [{ rate = "1/h", burst = 5, key = ["ip"] }] }
"#;

#[tokio::test]
async fn a_config_change_keeps_unchanged_limits_and_resets_changed_ones() {
    let app = support::app(&kept("1/h", 2, "")).await;
    assert_ok_with(&app.get("/kept", &[]).await, "\"kept-0\";r=1;t=3600");
    assert_ok_with(&app.get("/kept", &[]).await, "\"kept-0\";r=0;t=7200");
    assert_limited(&app.get("/kept", &[]).await);

    // An unrelated route, listed first so `kept` moves in the route list:
    // its bucket is still exhausted.
    let rev = app.update(&kept("1/h", 2, UNRELATED)).await;
    let r = app.get("/kept", &[]).await;
    assert_limited(&r);
    assert_eq!(r.policy(), "\"kept-0\";q=2;w=7200");
    assert_ok_with(
        &app.get("/unrelated", &[]).await,
        "\"unrelated-0\";r=4;t=3600",
    );
    let admin = app.admin().await;
    let seen = async {
        loop {
            let limits = support::get_with(&support::client(), admin, "/mesh/limits", &[])
                .await
                .json();
            if limits["revision"] == rev {
                return limits;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let limits = tokio::time::timeout(Duration::from_secs(5), seen)
        .await
        .expect("/mesh/limits follows the registry");
    assert_eq!(limits["keys"], 2, "{limits}");

    // A new burst is a new limiter: a fresh bucket.
    app.update(&kept("1/h", 3, UNRELATED)).await;
    let r = app.get("/kept", &[]).await;
    assert_ok_with(&r, "\"kept-0\";r=2;t=3600");
    assert_eq!(r.policy(), "\"kept-0\";q=3;w=10800");
    // And so is a new rate.
    app.update(&kept("2/h", 3, UNRELATED)).await;
    assert_ok_with(&app.get("/kept", &[]).await, "\"kept-0\";r=2;t=1800");
    assert_ok_with(&app.get("/kept", &[]).await, "\"kept-0\";r=1;t=3600");
    // The unrelated route kept its state through all of it.
    assert_ok_with(
        &app.get("/unrelated", &[]).await,
        "\"unrelated-0\";r=3;t=7200",
    );
    // Removing the limit altogether lets everything through.
    app.update(&format!(
        "{UNRELATED}\n[[routes]]\nid = \"kept\"\nmatch = {{ path_prefix = \"/kept\" }}\n"
    ))
    .await;
    for _ in 0..5 {
        let r = app.get("/kept", &[]).await;
        assert_ok(&r);
        assert_eq!(r.ratelimit(), "");
    }
}
