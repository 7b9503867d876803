//! A real etcd (Debian's `etcd-server`) on free loopback ports in a temp
//! dir, stopped on drop; and a TCP proxy that can cut a client off.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The etcd binary: `$ETCD_BIN`, else `/usr/bin/etcd`, else `etcd` on the PATH.
pub(crate) fn etcd_binary() -> PathBuf {
    if let Ok(p) = std::env::var("ETCD_BIN") {
        return p.into();
    }
    let deb = PathBuf::from("/usr/bin/etcd");
    if deb.exists() {
        return deb;
    }
    PathBuf::from("etcd")
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One etcd member.
pub(crate) struct Etcd {
    child: Option<tokio::process::Child>,
    /// Server certificate and key: serve clients over TLS.
    tls: Option<(PathBuf, PathBuf)>,
    pub(crate) client_port: u16,
    pub(crate) peer_port: u16,
    dir: tempfile::TempDir,
}

impl Etcd {
    pub(crate) async fn start() -> Etcd {
        Etcd::start_with(None).await
    }

    /// A member that serves clients over TLS with `cert` and `key` (PEM).
    #[allow(dead_code)] // used by crates/mesh-registry/tests/tls.rs
    pub(crate) async fn start_tls(cert: PathBuf, key: PathBuf) -> Etcd {
        Etcd::start_with(Some((cert, key))).await
    }

    async fn start_with(tls: Option<(PathBuf, PathBuf)>) -> Etcd {
        let mut e = Etcd {
            child: None,
            tls,
            client_port: free_port(),
            peer_port: free_port(),
            dir: tempfile::tempdir().expect("a temp dir"),
        };
        e.spawn().await;
        e
    }

    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// The pid of the running member, to read its CPU and memory.
    #[allow(dead_code)]
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    async fn spawn(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("a log file");
        let mut cmd = tokio::process::Command::new(etcd_binary());
        if let Some((cert, key)) = &self.tls {
            cmd.arg("--cert-file").arg(cert).arg("--key-file").arg(key);
        }
        let child = cmd
            .arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); install it with `apt-get install etcd-server`",
                    etcd_binary().display()
                )
            });
        self.child = Some(child);
        // Ready when it answers a request (over TLS: accepts connections).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if self.tls.is_some() {
                if TcpStream::connect(self.addr()).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    return;
                }
            } else if let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(1),
                etcd_client::Client::connect([self.url()], None),
            )
            .await
                && let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_secs(1), c.get("/ready-probe", None)).await
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let log =
                    std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
                panic!("etcd exited with {status}:\n{log}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd did not start in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the member (SIGKILL), as a crash would.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts the member again on the same ports and data dir.
    pub(crate) async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    pub(crate) async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.url()], None)
            .await
            .expect("an etcd client")
    }
}

/// A TCP proxy in front of etcd. [`block`](Proxy::block) drops every
/// connection and refuses new ones, like a partition.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    blocked: watch::Sender<bool>,
    _task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a listener");
        let port = listener.local_addr().expect("an address").port();
        let (blocked, rx) = watch::channel(false);
        let rx = Arc::new(rx);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if *rx.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut gate = (*rx).clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = gate.wait_for(|b| *b) => {}
                    }
                });
            }
        });
        Proxy {
            port,
            blocked,
            _task: task,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn block(&self) {
        self.blocked.send_replace(true);
    }

    pub(crate) fn unblock(&self) {
        self.blocked.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self._task.abort();
    }
}

/// Waits up to `secs` for `pred`, polling every 10 ms.
pub(crate) async fn eventually(secs: u64, what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !pred() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
