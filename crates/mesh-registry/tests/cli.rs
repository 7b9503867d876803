//! The `apimesh` publish command, run as a binary against a real etcd.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/etcd/support.rs"]
#[allow(dead_code, unreachable_pub)]
mod support;

use std::process::Output;

fn apimesh(url: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_apimesh"))
        .args(["--endpoints", url])
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_get_list_delete_round_trip() {
    let etcd = support::Etcd::start().await;
    let url = etcd.url();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.toml");
    std::fs::write(
        &file,
        r#"
[[services]]
name = "inventory"
endpoints = [{ address = "127.0.0.1:9001" }]

[[routes]]
id = "stock"
match = { path_prefix = "/stock" }
destinations = [{ service = "inventory" }]

[auth]
realm = "shop"
"#,
    )
    .unwrap();
    let f = file.to_str().unwrap();

    let o = apimesh(&url, &["apply", "-f", f]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("3 written, 0 deleted"), "{}", text(&o));
    let o = apimesh(&url, &["apply", "-f", f]);
    assert!(
        text(&o).contains("0 written, 0 deleted, 3 unchanged"),
        "{}",
        text(&o)
    );

    let o = apimesh(&url, &["list"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "auth\nroutes/stock\nservices/inventory\n"
    );
    let o = apimesh(&url, &["get", "routes/stock"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["match"]["path_prefix"], "/stock");
    let o = apimesh(&url, &["get", "auth"]);
    assert!(text(&o).contains("shop"));

    // The file read back through a registry is the file.
    let r = mesh_registry::EtcdRegistry::connect(mesh_registry::EtcdOptions::new([url.clone()]))
        .await
        .unwrap();
    let want = mesh_core::Config::from_toml(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(r.snapshot().config().as_ref(), &want);

    // Declarative: a route removed from the file is deleted.
    std::fs::write(
        &file,
        "[[services]]\nname = \"inventory\"\n\n[auth]\nrealm = \"shop\"\n",
    )
    .unwrap();
    let o = apimesh(&url, &["apply", "-f", f]);
    assert!(
        text(&o).contains("deleted /apimesh/routes/stock"),
        "{}",
        text(&o)
    );

    let o = apimesh(&url, &["delete", "services/inventory"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = apimesh(&url, &["get", "services/inventory"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not found"));
}

#[test]
fn bad_input_fails_clearly_without_panicking() {
    // No etcd is needed for any of these: they fail before connecting, or
    // fail to connect.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[routes]]\nid = \"x\"\nmatch = { path = \"nope\" }\n",
    )
    .unwrap();
    let syntax = dir.path().join("syntax.toml");
    std::fs::write(&syntax, "[[routes]\n").unwrap();
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec![], 2, "no command"),
        (vec!["frobnicate"], 2, "unknown command"),
        (vec!["apply"], 2, "apply needs -f"),
        (vec!["get"], 2, "takes one"),
        (vec!["get", "widgets/x"], 2, "unknown kind"),
        (vec!["get", "routes"], 2, "expected `routes/<name>`"),
        (
            vec!["apply", "-f", "/nonexistent/mesh.toml"],
            1,
            "cannot read",
        ),
        (
            vec!["apply", "-f", bad.to_str().unwrap()],
            1,
            "nothing was written",
        ),
        (vec!["apply", "-f", syntax.to_str().unwrap()], 1, "line 1"),
        (vec!["--user", "u", "list"], 2, "go together"),
        (vec!["list"], 1, "etcd"),
    ];
    for (args, code, needle) in cases {
        let o = apimesh(&closed, &args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {t}");
        assert!(t.contains(needle), "{args:?}: {t}");
        assert!(!t.contains("panicked"), "{args:?}: {t}");
    }
}
