//! Fleet measurements of the etcd registry against a real etcd
//! (Debian's `etcd-server`), started on free loopback ports in a temp dir.
//!
//! ```text
//! cargo run --release -p mesh-registry --features etcd --example etcd_fleet [-- WATCHERS WRITES INSTANCES]
//! ```
//!
//! 1. Propagation: WATCHERS (default 200) registries, each with its own
//!    connection, watch one etcd; WRITES (default 50) config changes are
//!    written 200 ms apart, and the time from issuing each write to each
//!    registry's new snapshot is recorded (p50, p99, max), as is the time
//!    etcd takes to acknowledge the write.
//! 2. Registration churn: INSTANCES (default 100) instances register (TTL
//!    3 s); the time until an observer (and every watcher) sees them all.
//!    Then they lose etcd (a partition: keep-alives stop) and the time until
//!    discovery has dropped them all is recorded; then the graceful case.
//! 3. CPU and memory of etcd and of this process during each phase, read
//!    from /proc.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../../tests/etcd/support.rs"]
#[allow(dead_code, unreachable_pub)]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_core::Registry;
use mesh_registry::{EtcdOptions, EtcdRegistry};
use support::{Etcd, Proxy};

/// CPU seconds (user + system) and resident memory of a process.
fn usage(pid: &str) -> (f64, u64) {
    let tick = 100.0; // USER_HZ on Linux
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3; utime 14, stime 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let cpu = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu / tick, rss_kb)
}

struct Meter {
    etcd: String,
    start: Instant,
    etcd0: (f64, u64),
    me0: (f64, u64),
}

impl Meter {
    fn new(etcd: &Etcd) -> Meter {
        let etcd = etcd.pid().map(|p| p.to_string()).unwrap_or_default();
        Meter {
            start: Instant::now(),
            etcd0: usage(&etcd),
            me0: usage("self"),
            etcd,
        }
    }

    fn report(&self, phase: &str) {
        let wall = self.start.elapsed().as_secs_f64();
        let e = usage(&self.etcd);
        let m = usage("self");
        println!(
            "  resources during {phase} ({wall:.1} s): etcd {:.0}% of a core, RSS {} MiB; clients {:.0}% of a core, RSS {} MiB",
            100.0 * (e.0 - self.etcd0.0) / wall,
            e.1 / 1024,
            100.0 * (m.0 - self.me0.0) / wall,
            m.1 / 1024,
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn options(url: &str) -> EtcdOptions {
    EtcdOptions::new([url.to_owned()]).start_timeout(Duration::from_secs(20))
}

fn endpoint(i: usize) -> mesh_core::config::EndpointSpec {
    serde_json::from_value(serde_json::json!({ "address": format!("127.0.0.1:{}", 20000 + i) }))
        .unwrap()
}

fn count(r: &EtcdRegistry, service: &str) -> usize {
    r.snapshot()
        .service(service)
        .map_or(0, |s| s.endpoints.len())
}

async fn wait_all(
    regs: &[Arc<EtcdRegistry>],
    service: &str,
    n: usize,
    t0: Instant,
) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for r in regs {
        let r = r.clone();
        let service = service.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut rx = r.subscribe();
            loop {
                if rx
                    .borrow_and_update()
                    .service(&service)
                    .map_or(0, |s| s.endpoints.len())
                    == n
                {
                    return t0.elapsed();
                }
                if tokio::time::timeout(Duration::from_secs(60), rx.changed())
                    .await
                    .is_err()
                {
                    return Duration::from_secs(60);
                }
            }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out.sort();
    out
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let watchers = args.first().copied().unwrap_or(200);
    let writes = args.get(1).copied().unwrap_or(50);
    let instances = args.get(2).copied().unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(watchers, writes, instances));
}

async fn run(watchers: usize, writes: usize, instances: usize) {
    let etcd = Etcd::start().await;
    let mut c = etcd.client().await;
    c.put(
        "/apimesh/services/inventory",
        r#"{"name":"inventory"}"#,
        None,
    )
    .await
    .unwrap();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average before the run: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "etcd {} ({}), {watchers} watchers, {writes} writes, {instances} instances; {} cores",
        etcd.url(),
        support::etcd_binary().display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // 1. Propagation to every watcher.
    let meter = Meter::new(&etcd);
    let t = Instant::now();
    let mut regs = Vec::new();
    for _ in 0..watchers {
        regs.push(Arc::new(
            EtcdRegistry::connect(options(&etcd.url())).await.unwrap(),
        ));
    }
    println!("connected {watchers} registries in {}", ms(t.elapsed()));
    meter.report("connect");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let meter = Meter::new(&etcd);
    let mut all = Vec::new();
    let mut acks = Vec::new();
    let mut after_ack = Vec::new();
    for w in 0..writes {
        let id = format!("r{w}");
        let waiters: Vec<_> = regs
            .iter()
            .map(|r| {
                let mut rx = r.subscribe();
                let id = id.clone();
                tokio::spawn(async move {
                    loop {
                        if rx.borrow_and_update().route(&id).is_some() {
                            return Instant::now();
                        }
                        if rx.changed().await.is_err() {
                            return Instant::now();
                        }
                    }
                })
            })
            .collect();
        let value = format!(r#"{{"id":"{id}","match":{{"path":"/{id}"}}}}"#);
        let t0 = Instant::now();
        c.put(format!("/apimesh/routes/{id}"), value, None)
            .await
            .unwrap();
        let ack = t0.elapsed();
        acks.push(ack);
        for w in waiters {
            let d = w.await.unwrap().saturating_duration_since(t0);
            all.push(d);
            after_ack.push(d.saturating_sub(ack));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    all.sort();
    acks.sort();
    after_ack.sort();
    println!(
        "etcd write acknowledged (a quorum fsync): p50 {}, p99 {}",
        ms(percentile(&acks, 0.50)),
        ms(percentile(&acks, 0.99)),
    );
    println!(
        "write -> new snapshot on each of {watchers} watchers ({} samples): p50 {}, p99 {}, max {}",
        all.len(),
        ms(percentile(&all, 0.50)),
        ms(percentile(&all, 0.99)),
        ms(all.last().copied().unwrap_or_default()),
    );
    println!(
        "  of which after etcd acknowledged the write: p50 {}, p99 {}",
        ms(percentile(&after_ack, 0.50)),
        ms(percentile(&after_ack, 0.99)),
    );
    meter.report("propagation");
    // What one registry spends per update on this config, alone.
    let config = regs[0].snapshot().config().as_ref().clone();
    let t = Instant::now();
    for i in 0..100 {
        let _ = mesh_core::Snapshot::build(config.clone(), i + 1).unwrap();
    }
    println!(
        "  one snapshot build of this config ({} routes): {:.0} µs",
        config.routes.len(),
        t.elapsed().as_secs_f64() * 1e6 / 100.0
    );

    // 2. Registration churn.
    let meter = Meter::new(&etcd);
    let proxy = Proxy::start(etcd.addr()).await;
    let observer = EtcdRegistry::connect(options(&etcd.url())).await.unwrap();
    // The instances share 10 connections through the proxy, so one cut
    // stops every keep-alive (a partition, or the processes crashing).
    let mut homes = Vec::new();
    for _ in 0..10 {
        homes.push(
            EtcdRegistry::connect(options(&proxy.url()).lease_ttl(Duration::from_secs(3)))
                .await
                .unwrap(),
        );
    }
    let t0 = Instant::now();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let observed = {
        let regs = regs.clone();
        tokio::spawn(async move {
            let r = wait_all(&regs, "inventory", instances, t0).await;
            let _ = done_tx.send(());
            r
        })
    };
    // Every instance registers at once, as a fleet starting would.
    let homes: Vec<Arc<EtcdRegistry>> = homes.into_iter().map(Arc::new).collect();
    let mut pending = Vec::new();
    for i in 0..instances {
        let home = homes[i % homes.len()].clone();
        pending.push(tokio::spawn(async move {
            home.register("inventory", endpoint(i)).await
        }));
    }
    let mut registrations = Vec::new();
    for p in pending {
        registrations.push(p.await.unwrap().unwrap());
    }
    let registered = t0.elapsed();
    let _ = done_rx.await;
    let seen = observed.await.unwrap();
    println!(
        "{instances} registrations written in {}; all visible on every watcher after p50 {}, p99 {}, max {} (from the first write)",
        ms(registered),
        ms(percentile(&seen, 0.5)),
        ms(percentile(&seen, 0.99)),
        ms(seen.last().copied().unwrap_or_default()),
    );
    assert_eq!(count(&observer, "inventory"), instances);

    // Partition: keep-alives stop; the leases (TTL 3 s) expire.
    let t0 = Instant::now();
    proxy.block();
    let gone = wait_all(&regs, "inventory", 0, t0).await;
    println!(
        "after keep-alives stopped (TTL 3 s), all {instances} gone from every watcher after p50 {}, max {}",
        ms(percentile(&gone, 0.5)),
        ms(gone.last().copied().unwrap_or_default()),
    );
    // Back: every instance registers again by itself.
    let t0 = Instant::now();
    proxy.unblock();
    let back = wait_all(&regs, "inventory", instances, t0).await;
    println!(
        "after the partition healed, all {instances} re-registered on every watcher after max {}",
        ms(back.last().copied().unwrap_or_default()),
    );
    // Graceful shutdown: revoked at once.
    let t0 = Instant::now();
    let revokes: Vec<_> = registrations
        .into_iter()
        .map(|r| tokio::spawn(r.deregister()))
        .collect();
    for r in revokes {
        let _ = r.await;
    }
    let left = wait_all(&regs, "inventory", 0, t0).await;
    println!(
        "graceful deregistration of {instances}: gone from every watcher after max {}",
        ms(left.last().copied().unwrap_or_default()),
    );
    meter.report("registration churn");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average after the run: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    drop(regs);
}
