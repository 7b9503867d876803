//! Failover: to the next priority group when the primary cannot be
//! reached, back once its ejection ends, and to a destination's failover
//! services.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::{closing_upstream, load, mesh, refused_addr, upstream};

fn priorities(
    primary: impl std::fmt::Display,
    backup: impl std::fmt::Display,
    outlier: &str,
) -> String {
    format!(
        r#"
        [[services]]
        name = "inventory"
        {outlier}
        endpoints = [
          {{ id = "primary", address = "{primary}", priority = 0 }},
          {{ id = "backup", address = "{backup}", priority = 1 }},
        ]
        "#
    )
}

#[tokio::test]
async fn an_unreachable_primary_fails_over_to_the_backup_group_without_errors() {
    let backup = upstream("backup", Duration::ZERO).await;
    let f = mesh(&priorities(refused_addr().await, backup.addr, "")).await;
    let client = f.mesh.client("inventory");
    // Each GET is tried on the primary first (until five failures eject
    // it), then sent to the backup: nothing fails.
    let tally = load(200, 4, move |_| client.get("/stock")).await;
    tally.assert_no_failures();
    assert_eq!(tally.count("backup"), 200);
    let primary = f
        .mesh
        .outbound()
        .endpoints()
        .into_iter()
        .find(|e| e.id == "primary")
        .unwrap();
    assert!(!primary.healthy, "{primary:?}");
    assert_eq!(primary.ejections, 1);
    assert!(primary.ejected_for_seconds.unwrap() > 20.0, "{primary:?}");
}

#[tokio::test]
async fn traffic_returns_to_the_restarted_primary_after_its_ejection() {
    let primary = closing_upstream("primary").await;
    let backup = upstream("backup", Duration::ZERO).await;
    let f = mesh(&priorities(
        primary.addr,
        backup.addr,
        r#"outlier = { consecutive_failures = 1, base_ejection = "300ms" }"#,
    ))
    .await;
    let client = f.mesh.client("inventory");

    // Healthy: priority 0 takes everything.
    let c = client.clone();
    let tally = load(50, 2, move |_| c.get("/stock")).await;
    tally.assert_no_failures();
    assert_eq!(tally.count("primary"), 50, "{:?}", tally.by_upstream);

    // The primary goes away: the backup answers, nothing fails.
    primary.stop().await;
    let stopped = Instant::now();
    let c = client.clone();
    let tally = load(50, 2, move |_| c.get("/stock")).await;
    tally.assert_no_failures();
    assert_eq!(tally.count("backup"), 50, "{:?}", tally.by_upstream);
    let status = f
        .mesh
        .outbound()
        .endpoints()
        .into_iter()
        .find(|e| e.id == "primary")
        .unwrap();
    assert!(status.ejections >= 1, "{status:?}");

    // Back on the same port: once the ejection ends, the primary is tried
    // again and takes all the traffic back.
    primary.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = client.get("/stock").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        if resp.text().await.unwrap() == "primary" {
            break;
        }
        assert!(Instant::now() < deadline, "the primary is never used again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        stopped.elapsed() >= Duration::from_millis(300),
        "the primary was used again before its ejection ended"
    );
    let c = client.clone();
    let tally = load(50, 2, move |_| c.get("/stock")).await;
    tally.assert_no_failures();
    assert_eq!(tally.count("primary"), 50, "{:?}", tally.by_upstream);
}

#[tokio::test]
async fn a_destination_fails_over_to_its_failover_service() {
    let pay_a = closing_upstream("pay-a").await;
    let pay_b = upstream("pay-b", Duration::ZERO).await;
    let f = mesh(&format!(
        r#"
        [[services]]
        name = "pay-a"
        outlier = {{ consecutive_failures = 1, base_ejection = "30s" }}
        endpoints = [{{ address = "{}" }}]

        [[services]]
        name = "pay-b"
        endpoints = [{{ address = "{}" }}]

        [[routes]]
        id = "payments"
        match = {{ hosts = ["payments"], path_prefix = "/" }}
        destinations = [{{ service = "pay-a", failover = ["pay-b"] }}]
        "#,
        pay_a.addr, pay_b.addr
    ))
    .await;
    let client = f.mesh.client("payments");

    let c = client.clone();
    let tally = load(50, 2, move |_| c.get("/charge")).await;
    tally.assert_no_failures();
    assert_eq!(tally.count("pay-a"), 50, "{:?}", tally.by_upstream);

    pay_a.stop().await;
    let c = client.clone();
    let tally = load(200, 4, move |_| c.get("/charge")).await;
    tally.assert_no_failures();
    assert_eq!(tally.count("pay-b"), 200, "{:?}", tally.by_upstream);
    let a = f
        .mesh
        .outbound()
        .endpoints()
        .into_iter()
        .find(|e| e.service == "pay-a")
        .unwrap();
    assert!(!a.healthy && a.ejections == 1, "{a:?}");
}
