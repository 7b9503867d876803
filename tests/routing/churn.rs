//! Endpoint churn: registry updates under steady load fail no request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{Tally, Upstream, load, mesh, upstream};

fn service(endpoints: &[&Upstream]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|u| format!(r#"{{ address = "{}" }}"#, u.addr))
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
async fn adding_and_removing_endpoints_under_load_fails_nothing() {
    let a = upstream("a", Duration::ZERO).await;
    let b = upstream("b", Duration::ZERO).await;
    let c = upstream("c", Duration::ZERO).await;
    let f = Arc::new(mesh(&service(&[&a])).await);
    let client = f.mesh.client("inventory");

    // Every 100 ms for 2 s, a new endpoint set (never empty).
    let sets: Vec<Vec<&Upstream>> = vec![
        vec![&a, &b],
        vec![&b],
        vec![&b, &c],
        vec![&c],
        vec![&c, &a],
        vec![&a, &b, &c],
        vec![&a],
    ];
    let mut configs: Vec<String> = (0..19).map(|i| service(&sets[i % sets.len()])).collect();
    configs.push(service(&[&b]));
    let done = Arc::new(AtomicBool::new(false));
    let updater = {
        let (f, done) = (f.clone(), done.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for config in &configs {
                tick.tick().await;
                f.update(config).await;
            }
            done.store(true, Ordering::Release);
        })
    };

    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (client, done) = (client.clone(), done.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while !done.load(Ordering::Acquire) {
                    match client.get("/stock").send().await {
                        Ok(r) if r.status() == 200 => {
                            *tally
                                .by_upstream
                                .entry(r.text().await.unwrap())
                                .or_default() += 1;
                        }
                        Ok(r) => tally.failures.push(format!("status {}", r.status())),
                        Err(e) => tally.failures.push(e.to_string()),
                    }
                }
                tally
            })
        })
        .collect();
    updater.await.unwrap();
    let mut tally = Tally::default();
    for w in workers {
        let t = w.await.unwrap();
        tally.failures.extend(t.failures);
        for (k, v) in t.by_upstream {
            *tally.by_upstream.entry(k).or_default() += v;
        }
    }
    tally.assert_no_failures();
    // The load ran through the churn: every endpoint served some of it.
    assert!(tally.total() >= 100, "{:?}", tally.by_upstream);
    for u in [&a, &b, &c] {
        assert!(tally.count(u.name) > 0, "{:?}", tally.by_upstream);
    }

    // Afterwards only the last set (`b`) gets traffic.
    let tally = load(100, 2, move |_| client.get("/stock")).await;
    tally.assert_no_failures();
    assert_eq!(tally.count("b"), 100, "{:?}", tally.by_upstream);
    let eps = f.mesh.outbound().endpoints();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].address, b.addr.to_string());
}
