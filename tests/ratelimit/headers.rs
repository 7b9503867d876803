//! Per-route limits: the 429 response, `Retry-After`, and the IETF
//! `RateLimit-Policy`/`RateLimit` fields (draft-ietf-httpapi-ratelimit-headers-10:
//! `"name";q=<quota>;w=<window>` and `"name";r=<remaining>;t=<reset>`).

use std::time::{Duration, Instant};

use crate::support::{self, assert_limited, assert_limited_with, assert_ok, assert_ok_with};

#[tokio::test]
async fn ten_per_second_admits_ten_then_refuses_the_eleventh() {
    let app = support::app(
        r#"
[[routes]]
id = "burst"
match = { path_prefix = "/burst" }
rate_limit = { limits = [{ rate = "10/s", burst = 10, key = ["ip"] }] }
"#,
    )
    .await;
    // One unit comes back every 100 ms: the run is only exact if the eleven
    // requests fit in that. On a loaded machine they may not; then wait for
    // the bucket to be full again (1 s) and run again.
    for attempt in 0..3 {
        let started = Instant::now();
        let mut replies = Vec::new();
        for _ in 0..11 {
            replies.push(app.get("/burst/x", &[]).await);
        }
        if started.elapsed() >= Duration::from_millis(90) && attempt < 2 {
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            continue;
        }
        for (i, r) in replies[..10].iter().enumerate() {
            assert_ok_with(r, &format!("\"burst-0\";r={};t=1", 9 - i));
            assert_eq!(r.policy(), "\"burst-0\";q=10;w=1");
            assert_eq!(r.route(), "burst");
        }
        let refused = &replies[10];
        assert_limited_with(
            refused,
            1,
            "\"burst-0\";r=0;t=1",
            "rate limit 10/s exceeded",
        );
        assert_eq!(refused.policy(), "\"burst-0\";q=10;w=1");
        assert!(
            refused.json()["type"]
                .as_str()
                .unwrap()
                .ends_with("rate-limited")
        );
        return;
    }
}

#[tokio::test]
async fn remaining_counts_down_exactly_and_reset_grows_with_use() {
    // 1/h with a burst of 10: nothing refills during the test.
    let app = support::app(
        r#"
[[routes]]
id = "slow"
match = { path = "/slow" }
rate_limit = { limits = [{ rate = "1/h", burst = 10 }] }
"#,
    )
    .await;
    for i in 0..10u64 {
        let r = app.get("/slow", &[]).await;
        // One unit back every 3600 s: `t` is when the whole burst is back.
        assert_ok_with(&r, &format!("\"slow-0\";r={};t={}", 9 - i, 3_600 * (i + 1)));
        assert_eq!(r.policy(), "\"slow-0\";q=10;w=36000");
    }
    let r = app.get("/slow", &[]).await;
    // The next unit is an hour away (less the few ms the test took).
    assert_limited_with(
        &r,
        3_600,
        "\"slow-0\";r=0;t=3600",
        "rate limit 1/h exceeded",
    );
    assert_eq!(r.policy(), "\"slow-0\";q=10;w=36000");
    // Refusals do not use the bucket: still refused, still an hour.
    let again = app.get("/slow", &[]).await;
    assert_eq!(assert_limited(&again), 3_600);
}

#[tokio::test]
async fn the_tightest_of_several_limits_refuses_and_is_named() {
    let app = support::app(
        r#"
[[routes]]
id = "multi"
match = { path_prefix = "/multi" }
rate_limit = { limits = [{ rate = "10/s", burst = 20 }, { rate = "5/h", burst = 5 }] }
"#,
    )
    .await;
    let policy = "\"multi-0\";q=20;w=2, \"multi-1\";q=5;w=3600";
    for i in 0..5u64 {
        let r = app.get("/multi", &[]).await;
        // 5/h: one unit every 720 s.
        assert_ok_with(&r, &format!("\"multi-1\";r={};t={}", 4 - i, 720 * (i + 1)));
        assert_eq!(r.policy(), policy);
    }
    let r = app.get("/multi", &[]).await;
    assert_limited_with(&r, 720, "\"multi-1\";r=0;t=720", "rate limit 5/h exceeded");
    assert_eq!(r.policy(), policy);
}

#[tokio::test]
async fn cost_takes_several_units() {
    let app = support::app(
        r#"
[[routes]]
id = "bulk"
match = { path_prefix = "/bulk" }
rate_limit = { limits = [{ rate = "1/h", burst = 20 }], cost = 10 }

[[routes]]
id = "huge"
match = { path_prefix = "/huge" }
rate_limit = { limits = [{ rate = "1/h", burst = 20 }], cost = 30 }
"#,
    )
    .await;
    let r = app.get("/bulk", &[]).await;
    assert_ok_with(&r, "\"bulk-0\";r=10;t=36000");
    assert_eq!(r.policy(), "\"bulk-0\";q=20;w=72000");
    let r = app.get("/bulk", &[]).await;
    assert_ok_with(&r, "\"bulk-0\";r=0;t=72000");
    // Ten units are ten hours away.
    let r = app.get("/bulk", &[]).await;
    assert_limited_with(
        &r,
        36_000,
        "\"bulk-0\";r=0;t=36000",
        "rate limit 1/h exceeded",
    );

    // A cost above the burst can never pass; Retry-After is the time a full
    // burst takes to come back.
    for _ in 0..2 {
        let r = app.get("/huge", &[]).await;
        assert_limited_with(
            &r,
            72_000,
            "\"huge-0\";r=0;t=72000",
            "rate limit 1/h exceeded",
        );
    }
}

#[tokio::test]
async fn routes_without_limits_carry_no_fields() {
    let app = support::app(
        r#"
[[routes]]
id = "free"
match = { path_prefix = "/free" }

[[routes]]
id = "planned"
match = { path_prefix = "/planned" }
rate_limit = {}
"#,
    )
    .await;
    for path in ["/free", "/planned"] {
        for _ in 0..20 {
            let r = app.get(path, &[]).await;
            assert_ok(&r);
            assert_eq!(r.ratelimit(), "");
            assert_eq!(r.policy(), "");
        }
    }
}
