//! Chaos end to end: steady load over three real upstreams, one killed
//! abruptly mid-run (listener and open connections dropped); retries keep
//! idempotent requests succeeding.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::{self, Hits};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_upstream_mid_run_keeps_gets_succeeding() {
    let hits = [Hits::default(), Hits::default(), Hits::default()];
    let finished = [Hits::default(), Hits::default(), Hits::default()];
    // Set just before the kill: `a` stops answering (a wedged process), so
    // requests are surely in flight on it when it dies.
    let wedged = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let (h, f) = (hits[i].clone(), finished[i].clone());
        let wedged = (i == 0).then(|| wedged.clone());
        servers.push(
            support::serve(axum::Router::new().fallback(move || {
                let (h, f, wedged) = (h.clone(), f.clone(), wedged.clone());
                async move {
                    h.hit();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    if wedged.is_some_and(|w| w.load(Ordering::SeqCst)) {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    f.hit();
                    name
                }
            }))
            .await,
        );
    }
    let mesh = support::inventory_mesh(
        &[&servers[0], &servers[1], &servers[2]],
        "retry = {}\ntimeout = { total = \"2s\" }",
    )
    .await;
    let client = mesh.client("inventory");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (client, stop, ok, failed, errors) = (
                client.clone(),
                stop.clone(),
                ok.clone(),
                failed.clone(),
                errors.clone(),
            );
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    match client.get(&format!("/stock/{w}-{i}")).send().await {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("status {}", r.status()));
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.lock().unwrap().push(format!("{e:?}"));
                        }
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    // `a` wedges; kill it once requests hang on it.
    wedged.store(true, Ordering::SeqCst);
    let busy =
        support::eventually(Duration::from_secs(1), || hits[0].get() > finished[0].get()).await;
    servers[0].kill().await;
    let at_kill = hits[0].get();
    let cut = at_kill - finished[0].get();
    assert!(
        busy && cut > 0,
        "no request was in flight at `a` when it was killed"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let total = ok + failed;
    let rate = ok as f64 / total as f64;
    println!(
        "chaos: {total} GETs in 3 s by 4 workers, upstream `a` killed at 1 s with {cut} \
         request(s) in flight: {ok} succeeded, {failed} failed, success rate {:.3}%; \
         hits a/b/c = {}/{}/{}",
        rate * 100.0,
        hits[0].get(),
        hits[1].get(),
        hits[2].get()
    );
    assert_eq!(hits[0].get(), at_kill, "nothing reached `a` after the kill");
    assert!(
        total > 300,
        "only {total} requests: the load was not steady"
    );
    assert!(
        rate >= 0.999,
        "success rate {:.3}%: {:?}",
        rate * 100.0,
        &errors.lock().unwrap()[..]
    );
}
