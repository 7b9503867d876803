//! The watched-file registry: valid changes apply, anything else is
//! rejected and counted while the last good revision keeps serving.

use std::path::Path;
use std::time::Duration;

use apimesh::Registry;
use apimesh::registry::{FileRegistry, FileWatchOptions};

const V1: &str = r#"
[[routes]]
id = "one"
match = { path = "/one" }
"#;

const V2: &str = r#"
[[routes]]
id = "two"
match = { path = "/two" }
"#;

/// Generous bound for a file event to be noticed; the tests await events,
/// this only stops a broken build from hanging.
const WITHIN: Duration = Duration::from_secs(10);

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

fn registry(dir: &tempfile::TempDir) -> (std::path::PathBuf, FileRegistry) {
    let path = dir.path().join("mesh.toml");
    write(&path, V1);
    let reg = FileRegistry::watch_with(
        &path,
        FileWatchOptions::default().debounce(Duration::from_millis(20)),
    )
    .expect("valid file");
    (path, reg)
}

async fn next_status(
    reg: &FileRegistry,
    pred: impl FnMut(&apimesh::RegistryStatus) -> bool,
) -> apimesh::RegistryStatus {
    let mut rx = reg.status();
    tokio::time::timeout(WITHIN, rx.wait_for(pred))
        .await
        .expect("registry status did not change in time")
        .expect("registry alive")
        .clone()
}

async fn wait_revision(reg: &FileRegistry, revision: u64) {
    let mut rx = reg.subscribe();
    tokio::time::timeout(WITHIN, rx.wait_for(|s| s.revision() >= revision))
        .await
        .expect("no new revision in time")
        .expect("registry alive");
}

#[tokio::test]
async fn loads_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_, reg) = registry(&dir);
    let snap = reg.snapshot();
    assert_eq!(snap.revision(), 1);
    assert!(snap.route("one").is_some());
    assert_eq!(reg.status().borrow().backend, "file");
}

#[tokio::test]
async fn refuses_to_start_on_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.toml");
    write(
        &path,
        "[[routes]]\nid = \"x\"\nmatch = { path = \"nope\" }\n",
    );
    let err = FileRegistry::watch(&path).unwrap_err().to_string();
    assert!(err.contains("routes[0].match.path"), "{err}");
    let err = FileRegistry::watch(dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read"), "{err}");
}

#[tokio::test]
async fn valid_change_becomes_next_revision() {
    let dir = tempfile::tempdir().unwrap();
    let (path, reg) = registry(&dir);
    write(&path, V2);
    wait_revision(&reg, 2).await;
    let snap = reg.snapshot();
    assert!(snap.route("two").is_some());
    assert!(snap.route("one").is_none());
    assert_eq!(reg.status().borrow().applied, 2);
}

#[tokio::test]
async fn invalid_change_is_rejected_and_old_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (path, reg) = registry(&dir);
    write(
        &path,
        r#"
        [[routes]]
        id = "two"
        match = { path = "/two" }
        destinations = [{ service = "nowhere", weight = 0 }]
        "#,
    );
    let status = next_status(&reg, |s| s.rejected == 1).await;
    let err = status.last_error.unwrap();
    assert!(
        err.contains("routes[0].destinations[0].service: unknown service `nowhere`"),
        "{err}"
    );
    assert!(
        err.contains("routes[0].destinations: weights sum to 0"),
        "{err}"
    );
    assert_eq!(reg.snapshot().revision(), 1);
    assert!(reg.snapshot().route("one").is_some());

    // A later valid change still applies.
    write(&path, V2);
    wait_revision(&reg, 2).await;
    assert!(reg.snapshot().route("two").is_some());
}

#[tokio::test]
async fn deleted_file_never_replaces_good_state() {
    let dir = tempfile::tempdir().unwrap();
    let (path, reg) = registry(&dir);
    std::fs::remove_file(&path).unwrap();
    let status = next_status(&reg, |s| s.rejected == 1).await;
    assert!(status.last_error.unwrap().contains("cannot read"));
    assert_eq!(reg.snapshot().revision(), 1);
    assert!(reg.snapshot().route("one").is_some());
    // Recreated: applies again.
    write(&path, V2);
    wait_revision(&reg, 2).await;
    assert!(reg.snapshot().route("two").is_some());
}

#[tokio::test]
async fn partial_and_empty_writes_never_replace_good_state() {
    let dir = tempfile::tempdir().unwrap();
    let (path, reg) = registry(&dir);

    // Truncated in the middle of a table: a syntax error, rejected.
    let cut = &V2[..V2.len() / 2];
    write(&path, cut);
    let status = next_status(&reg, |s| s.rejected == 1).await;
    assert!(status.last_error.is_some());
    assert_eq!(reg.snapshot().revision(), 1);

    // Truncated to nothing (the first step of a truncate-then-write).
    write(&path, "");
    let status = next_status(&reg, |s| s.rejected == 2).await;
    assert!(status.last_error.unwrap().contains("is empty"));
    assert_eq!(reg.snapshot().revision(), 1);
    assert!(reg.snapshot().route("one").is_some());

    // The write completes.
    write(&path, V2);
    wait_revision(&reg, 2).await;
    assert!(reg.snapshot().route("two").is_some());
}

#[tokio::test]
async fn atomic_rename_over_the_file_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let (path, reg) = registry(&dir);
    let tmp = dir.path().join(".mesh.toml.tmp");
    write(&tmp, V2);
    std::fs::rename(&tmp, &path).unwrap();
    wait_revision(&reg, 2).await;
    assert!(reg.snapshot().route("two").is_some());
}

#[tokio::test]
async fn rejections_are_counted_as_metrics() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.toml");
    write(&path, V1);
    let reg = metrics::with_local_recorder(&recorder, || {
        let reg = apimesh::registry::MemoryRegistry::from_toml(V1).unwrap();
        let _ = reg.update_toml("not toml [");
        reg
    });
    assert_eq!(reg.snapshot().revision(), 1);
    let counts: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == "apimesh.registry.updates")
        .map(|(k, _, _, v)| {
            let outcome = k
                .key()
                .labels()
                .find(|l| l.key() == "outcome")
                .unwrap()
                .value()
                .to_owned();
            let DebugValue::Counter(n) = v else {
                panic!("not a counter")
            };
            (outcome, n)
        })
        .collect();
    assert!(counts.contains(&("applied".to_owned(), 1)), "{counts:?}");
    assert!(counts.contains(&("rejected".to_owned(), 1)), "{counts:?}");
}
