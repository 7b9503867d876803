//! Locality: the caller's zone first, then its region, then anywhere; and
//! spill-over when the local endpoints are overloaded.

use std::time::Duration;

use crate::support::{Upstream, load, mesh_at, upstream};

fn service(endpoints: &[(&Upstream, &str, &str)]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|(u, region, zone)| {
            format!(
                r#"{{ address = "{}", region = "{region}", zone = "{zone}" }}"#,
                u.addr
            )
        })
        .collect();
    format!(
        r#"
        [[services]]
        name = "inventory"
        endpoints = [{}]
        "#,
        eps.join(", ")
    )
}

#[tokio::test]
async fn traffic_stays_in_the_zone_then_moves_within_the_region() {
    let a = upstream("eu-a", Duration::ZERO).await;
    let b = upstream("eu-b", Duration::ZERO).await;
    let us = upstream("us", Duration::ZERO).await;
    let f = mesh_at(
        &service(&[(&a, "eu", "eu-a"), (&b, "eu", "eu-b"), (&us, "us", "us-a")]),
        "eu",
        "eu-a",
    )
    .await;
    let client = f.mesh.client("inventory");

    let c = client.clone();
    let tally = load(300, 1, move |_| c.get("/stock")).await;
    tally.assert_no_failures();
    assert_eq!(tally.count("eu-a"), 300, "{:?}", tally.by_upstream);

    // The zone's endpoint leaves: its region takes over, not the far one.
    f.update(&service(&[(&b, "eu", "eu-b"), (&us, "us", "us-a")]))
        .await;
    let c = client.clone();
    let tally = load(300, 1, move |_| c.get("/stock")).await;
    tally.assert_no_failures();
    assert_eq!(tally.count("eu-b"), 300, "{:?}", tally.by_upstream);
    assert_eq!(us.hits(), 0);
}

#[tokio::test]
async fn an_overloaded_zone_spills_over_to_another_region() {
    let local = upstream("local", Duration::from_millis(50)).await;
    let remote = upstream("remote", Duration::from_millis(1)).await;
    let f = mesh_at(
        &service(&[(&local, "eu", "eu-a"), (&remote, "us", "us-a")]),
        "eu",
        "eu-a",
    )
    .await;
    let client = f.mesh.client("inventory");
    let tally = load(200, 4, move |_| client.get("/stock")).await;
    tally.assert_no_failures();
    // Staying local would give the remote region nothing.
    assert!(
        tally.share("remote") > 0.5,
        "remote got {:.1}% ({:?})",
        tally.share("remote") * 100.0,
        tally.by_upstream
    );
    // The local endpoint is slow, not broken: it still counts as healthy.
    assert!(f.mesh.outbound().endpoints().iter().all(|e| e.healthy));
}
