//! Weighted splits between destinations: their accuracy, sticky cohorts
//! and the tester's override header.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{Upstream, load, mesh, upstream};

/// A route for the `inventory` client splitting between the services
/// `stable` and `canary`.
fn split_config(stable: &Upstream, canary: &Upstream, weights: (u32, u32), split: &str) -> String {
    format!(
        r#"
        [[services]]
        name = "stable"
        endpoints = [{{ address = "{}" }}]

        [[services]]
        name = "canary"
        endpoints = [{{ address = "{}" }}]

        [[routes]]
        id = "inventory"
        match = {{ hosts = ["inventory"], path_prefix = "/" }}
        destinations = [{{ service = "stable", weight = {} }}, {{ service = "canary", weight = {} }}]
        split = {split}
        "#,
        stable.addr, canary.addr, weights.0, weights.1
    )
}

#[tokio::test]
async fn a_95_5_split_is_accurate_to_a_point_over_10000_requests() {
    let stable = upstream("stable", Duration::ZERO).await;
    let canary = upstream("canary", Duration::ZERO).await;
    let f = mesh(&split_config(
        &stable,
        &canary,
        (95, 5),
        r#"{ override_header = "x-canary", overrides = { always = 1 } }"#,
    ))
    .await;
    let client = f.mesh.client("inventory");
    let tally = load(10_000, 8, move |_| client.get("/stock")).await;
    tally.assert_no_failures();
    assert_eq!(tally.total(), 10_000);
    // ±1 point is 4.6 standard deviations of a 5% share over 10,000 draws.
    let canary_share = tally.share("canary");
    assert!(
        (0.04..=0.06).contains(&canary_share),
        "canary got {:.2}% ({:?})",
        canary_share * 100.0,
        tally.by_upstream
    );
    // Each request reached exactly one upstream, once.
    assert_eq!(stable.hits(), tally.count("stable"));
    assert_eq!(canary.hits(), tally.count("canary"));
}

#[tokio::test]
async fn the_override_header_always_reaches_the_canary() {
    let stable = upstream("stable", Duration::ZERO).await;
    let canary = upstream("canary", Duration::ZERO).await;
    let f = mesh(&split_config(
        &stable,
        &canary,
        (95, 5),
        r#"{ sticky = "header:x-user", override_header = "x-canary", overrides = { always = 1 } }"#,
    ))
    .await;
    let client = f.mesh.client("inventory");
    let c = client.clone();
    let tally = load(500, 4, move |i| {
        c.get("/stock")
            .header("x-user", &format!("user-{i}"))
            .header("x-canary", "always")
    })
    .await;
    tally.assert_no_failures();
    assert_eq!(tally.count("canary"), 500, "{:?}", tally.by_upstream);
    assert_eq!(stable.hits(), 0);

    // An override value that is not configured is ignored: the weights apply.
    let c = client.clone();
    let tally = load(400, 4, move |_| {
        c.get("/stock").header("x-canary", "sometimes")
    })
    .await;
    tally.assert_no_failures();
    assert!(tally.share("stable") > 0.85, "{:?}", tally.by_upstream);
}

#[tokio::test]
async fn sticky_users_keep_their_destination_and_users_split_by_weight() {
    let stable = upstream("stable", Duration::ZERO).await;
    let canary = upstream("canary", Duration::ZERO).await;
    let f = mesh(&split_config(
        &stable,
        &canary,
        (50, 50),
        r#"{ sticky = "header:x-user" }"#,
    ))
    .await;
    let client = f.mesh.client("inventory");

    // 200 users, 5 requests each, interleaved across 4 workers.
    const USERS: usize = 200;
    let c = client.clone();
    let tally = load(USERS * 5, 4, move |i| {
        c.get("/stock")
            .header("x-user", &format!("user-{}", i % USERS))
    })
    .await;
    tally.assert_no_failures();

    // Which destination each user reached, request by request: send each
    // user's five again, one at a time, and compare with the first answer.
    let mut first: HashMap<usize, String> = HashMap::new();
    for round in 0..5 {
        for user in 0..USERS {
            let got = client
                .get("/stock")
                .header("x-user", &format!("user-{user}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let want = first.entry(user).or_insert_with(|| got.clone());
            assert_eq!(*want, got, "user-{user} moved in round {round}");
        }
    }
    // The interleaved burst agrees with the per-user answers.
    let on_canary = first.values().filter(|d| *d == "canary").count();
    assert_eq!(tally.count("canary"), on_canary as u64 * 5);
    // The cohort hash is deterministic, so this never varies between runs;
    // ±10 points is also 2.8 standard deviations of a fair split of 200.
    let share = on_canary as f64 / USERS as f64;
    assert!(
        (0.40..=0.60).contains(&share),
        "{on_canary} of {USERS} users on the canary"
    );

    // Without the sticky header the draw is random per request.
    let c = client.clone();
    let tally = load(400, 4, move |_| c.get("/stock")).await;
    tally.assert_no_failures();
    assert!(
        (0.3..=0.7).contains(&tally.share("canary")),
        "{:?}",
        tally.by_upstream
    );
}
