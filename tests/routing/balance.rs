//! Power of two choices over peak-EWMA: a slow endpoint gets little traffic.

use std::time::Duration;

use crate::support::{load, mesh, upstream};

#[tokio::test]
async fn a_ten_times_slower_endpoint_gets_under_a_tenth_of_the_load() {
    // 10 ms against 100 ms, rather than 2 against 20: a busy test host
    // adds tens of milliseconds to some requests, and a peak-EWMA keeps a
    // peak for seconds; against 10 ms such a peak would make a fast
    // endpoint look as slow as the slow one.
    let fast1 = upstream("fast1", Duration::from_millis(10)).await;
    let fast2 = upstream("fast2", Duration::from_millis(10)).await;
    let slow = upstream("slow", Duration::from_millis(100)).await;
    let f = mesh(&format!(
        r#"
        [[services]]
        name = "inventory"
        endpoints = [{{ address = "{}" }}, {{ address = "{}" }}, {{ address = "{}" }}]
        "#,
        fast1.addr, slow.addr, fast2.addr
    ))
    .await;
    let client = f.mesh.client("inventory");
    let tally = load(600, 8, move |_| client.get("/stock")).await;
    tally.assert_no_failures();
    assert_eq!(tally.total(), 600);
    // Round robin would give it a third; P2C learns it is slow at once.
    assert!(
        tally.share("slow") < 0.10,
        "slow got {:.1}% ({:?})",
        tally.share("slow") * 100.0,
        tally.by_upstream
    );
    // Both fast endpoints share the rest.
    assert!(tally.count("fast1") > 150 && tally.count("fast2") > 150);
    assert_eq!(slow.hits(), tally.count("slow"));

    // The admin view agrees with what the upstreams saw.
    let eps = f.mesh.outbound().endpoints();
    assert_eq!(eps.len(), 3);
    let slow_status = eps
        .iter()
        .find(|e| e.address == slow.addr.to_string())
        .unwrap();
    assert_eq!(slow_status.requests, slow.hits());
    assert_eq!(slow_status.in_flight, 0);
    assert!(eps.iter().all(|e| e.healthy && e.service == "inventory"));
}
