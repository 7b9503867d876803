//! The dashboard in a real browser: headless Chromium loads
//! `/mesh/dashboard` from a mesh with live traffic, runs its script and
//! dumps the DOM it rendered.
//!
//! Needs Debian's `chromium` (`apt-get install chromium`; `scripts/test.sh`
//! installs it). Set `CHROMIUM` to use another binary.

use std::path::PathBuf;
use std::time::Duration;

use apimesh::Mesh;

use crate::admin::busy_mesh;
use crate::support::{self, call, request};

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "CHROMIUM={} is not a file", p.display());
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "the dashboard test needs Chromium, which is not installed: run \
         `apt-get install chromium` (scripts/test.sh does), or set CHROMIUM to a Chromium binary"
    );
}

/// Runs headless Chromium on `url` with `args` (5 s of virtual time: the
/// page polls a few times) and returns its standard output.
async fn headless(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finishes within 90 s")
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Keeps requests flowing (about 50 a second) until dropped.
struct Traffic(tokio::task::JoinHandle<()>);

impl Traffic {
    fn start(app: &axum::Router) -> Traffic {
        let app = app.clone();
        Traffic(tokio::spawn(async move {
            for id in 0.. {
                let key = [("x-api-key", "demo-key")];
                call(&app, request("GET", &format!("/v2/orders/{id}"), &key)).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits until the dashboard's series show traffic (the ticker folds a
/// second at a time).
async fn wait_for_points(mesh: &Mesh) {
    for _ in 0..50 {
        let busy = mesh
            .stats()
            .routes(5)
            .iter()
            .filter(|r| r.points.iter().filter(|p| p.requests > 0).count() >= 2)
            .count();
        if busy > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no traffic reached the dashboard's statistics");
}

/// The value of attribute `attr` in the element that has `marker`.
fn attr<'a>(dom: &'a str, marker: &str, attr: &str) -> &'a str {
    let at = dom
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in the rendered page:\n{dom}"));
    let tag = &dom[at..at + dom[at..].find('>').unwrap()];
    let start = tag
        .find(&format!("{attr}=\""))
        .unwrap_or_else(|| panic!("no {attr} in {tag}"))
        + attr.len()
        + 2;
    &tag[start..start + tag[start..].find('"').unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_traffic_in_chromium() {
    chromium();
    let (mesh, app) = busy_mesh(|b| b).await;
    let _traffic = Traffic::start(&app);
    wait_for_points(&mesh).await;
    let admin = support::serve(mesh.admin()).await;
    let url = format!("http://{admin}/mesh/dashboard");
    let dom = headless(&url, &["--dump-dom"]).await;

    assert_eq!(attr(&dom, "<body", "data-state"), "live", "{dom}");
    assert!(dom.contains(r#"id="revision">1<"#), "{dom}");
    assert!(
        dom.contains(r#"<span id="service" class="label">orders</span>"#),
        "{dom}"
    );
    assert!(dom.contains("memory"), "the registry backend is shown");

    // The route, with a non-zero rate and its three charts.
    let rps: f64 = attr(&dom, r#"data-route="orders-v2""#, "data-rps")
        .parse()
        .unwrap();
    assert!(rps > 1.0, "{rps} requests/s");
    let row = &dom[dom.find(r#"data-route="orders-v2""#).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    for chart in ["rate", "errors", "latency"] {
        let svg = attr(row, &format!(r#"data-chart="{chart}""#), "viewBox");
        assert_eq!(svg, "0 0 120 32");
    }
    let line = attr(row, "<polyline", "points");
    assert!(line.split(' ').count() >= 2, "a line, not a dot: {line:?}");
    assert!(row.contains("/v2/orders/{id}"));

    assert!(dom.contains(r#"data-version="orders/v2""#));
    assert!(dom.contains(r#"data-consumer="demo""#));

    // The breaker the payments calls opened.
    assert_eq!(
        attr(&dom, r#"data-breaker="to-payments/payments""#, "data-state"),
        "open"
    );
    assert_eq!(attr(&dom, "id=\"open-breakers\"", "class"), "bad");

    // Endpoints grouped by zone, with their health.
    for zone in ["eu-1a", "eu-1b"] {
        assert!(dom.contains(&format!(r#"data-zone="{zone}""#)), "{zone}");
    }
    assert_eq!(
        attr(&dom, r#"data-endpoint="inventory/inv-a""#, "data-healthy"),
        "true"
    );
    assert!(dom.contains(r#"data-endpoint="inventory/inv-b""#));
    assert!(dom.contains(r#"data-endpoint="payments/pay-a""#));

    // A screenshot for people: target/tmp/dashboard.png.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    headless(
        &url,
        &[
            "--hide-scrollbars",
            "--window-size=1400,1100",
            &format!("--screenshot={}", shot.display()),
        ],
    )
    .await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_takes_its_token_from_the_fragment() {
    chromium();
    let (mesh, app) = busy_mesh(|b| b.admin_token("dash-token")).await;
    let _traffic = Traffic::start(&app);
    wait_for_points(&mesh).await;
    let admin = support::serve(mesh.admin()).await;

    let with = headless(
        &format!("http://{admin}/mesh/dashboard#token=dash-token"),
        &["--dump-dom"],
    )
    .await;
    assert_eq!(attr(&with, "<body", "data-state"), "live", "{with}");
    assert!(with.contains(r#"data-route="orders-v2""#));

    let without = headless(&format!("http://{admin}/mesh/dashboard"), &["--dump-dom"]).await;
    assert_eq!(
        attr(&without, "<body", "data-state"),
        "unauthorized",
        "{without}"
    );
    assert!(!without.contains(r#"data-route="orders-v2""#));
    assert!(
        without.contains("#token="),
        "the page says how to pass the token"
    );
}
