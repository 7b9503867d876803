//! The etcd registry over TLS (feature `etcd-tls`), against a real etcd
//! serving a certificate from a throwaway CA made with the `openssl` command.
#![cfg(feature = "etcd-tls")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/etcd/support.rs"]
#[allow(dead_code, unreachable_pub)]
mod support;

use std::path::Path;
use std::time::Duration;

use mesh_core::Registry;
use mesh_registry::etcd::{Certificate, TlsOptions};
use mesh_registry::{EtcdAdmin, EtcdOptions, EtcdRegistry};

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}); install it with `apt-get install openssl`")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=apimesh test CA",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_admin_and_registration_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let etcd =
        support::Etcd::start_tls(dir.path().join("server.pem"), dir.path().join("server.key"))
            .await;
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let options = || {
        EtcdOptions::new([etcd.url()])
            .start_timeout(Duration::from_secs(10))
            .tls(TlsOptions::new().ca_certificate(Certificate::from_pem(ca.clone())))
    };
    assert!(etcd.url().starts_with("https://"));

    let mut admin = EtcdAdmin::connect(options()).await.unwrap();
    let config = mesh_core::Config::from_toml(
        "[[routes]]\nid = \"health\"\nmatch = { path = \"/health\" }\n",
    )
    .unwrap();
    admin.apply(&config).await.unwrap();

    let r = EtcdRegistry::connect(options()).await.unwrap();
    assert!(r.snapshot().route("health").is_some());
    let me = serde_json::from_value(serde_json::json!({ "address": "127.0.0.1:9500" })).unwrap();
    let reg = r.register("web", me).await.unwrap();
    let mut rx = r.subscribe();
    tokio::time::timeout(Duration::from_secs(5), async {
        while rx.borrow_and_update().service("web").is_none() {
            rx.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    reg.deregister().await.unwrap();

    // Without the CA the server is not trusted: nothing to start from.
    let untrusted = EtcdRegistry::connect(
        EtcdOptions::new([etcd.url()])
            .start_timeout(Duration::from_secs(2))
            .tls(TlsOptions::new()),
    )
    .await;
    assert!(untrusted.is_err());
}
