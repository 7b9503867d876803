//! Self-registration: this instance's endpoint under a lease kept alive in
//! the background.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{Client, PutOptions};
use mesh_core::config::EndpointSpec;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::watch::Backoff;
use super::{EtcdOptions, EtcdRegistryError};

/// A registered instance. Keep it for as long as the instance serves.
///
/// [`deregister`](Self::deregister) revokes the lease, so the endpoint
/// leaves discovery at once; dropping the registration does the same in the
/// background (when a Tokio runtime is still running). If the process dies,
/// the keep-alives stop and etcd deletes the key when the lease's TTL runs
/// out.
pub struct Registration {
    key: String,
    lease: Arc<AtomicI64>,
    client: Client,
    timeout: Duration,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .field("lease", &self.lease_id())
            .finish_non_exhaustive()
    }
}

async fn grant_and_put(
    client: &Client,
    key: &str,
    value: &[u8],
    ttl: i64,
    timeout: Duration,
) -> Result<i64, String> {
    let mut lease = client.lease_client();
    let grant = tokio::time::timeout(timeout, lease.grant(ttl, None))
        .await
        .map_err(|_| "timed out granting a lease".to_owned())?
        .map_err(|e| e.to_string())?;
    let id = grant.id();
    let mut kv = client.kv_client();
    tokio::time::timeout(
        timeout,
        kv.put(key, value.to_vec(), Some(PutOptions::new().with_lease(id))),
    )
    .await
    .map_err(|_| "timed out writing the endpoint".to_owned())?
    .map_err(|e| e.to_string())?;
    Ok(id)
}

fn check_name(what: &str, name: &str) -> Result<(), EtcdRegistryError> {
    if name.is_empty() || name.contains('/') {
        return Err(EtcdRegistryError::Options(format!(
            "the {what} `{name}` cannot be part of a key (empty or contains `/`)"
        )));
    }
    Ok(())
}

impl Registration {
    pub(crate) async fn start(
        client: Client,
        options: &EtcdOptions,
        service: &str,
        mut endpoint: EndpointSpec,
    ) -> Result<Registration, EtcdRegistryError> {
        let id = endpoint
            .id
            .clone()
            .unwrap_or_else(|| endpoint.address.clone());
        check_name("service", service)?;
        check_name("endpoint id", &id)?;
        endpoint.id = Some(id.clone());
        let key = format!("{}endpoints/{service}/{id}", options.prefix);
        let value =
            serde_json::to_vec(&endpoint).map_err(|e| EtcdRegistryError::Options(e.to_string()))?;
        let ttl = i64::try_from(options.lease_ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let timeout = options.request_timeout;
        let lease_id = grant_and_put(&client, &key, &value, ttl, timeout)
            .await
            .map_err(EtcdRegistryError::Etcd)?;
        tracing::info!(%key, lease = lease_id, ttl, "registered in etcd");
        let lease = Arc::new(AtomicI64::new(lease_id));
        let (stop, stopped) = oneshot::channel();
        let keeper = Keeper {
            client: client.clone(),
            key: key.clone(),
            value,
            ttl,
            timeout,
            lease: lease.clone(),
            backoff: Backoff::new(options.backoff_min, options.backoff_max),
        };
        tokio::spawn(keeper.run(stopped));
        Ok(Registration {
            key,
            lease,
            client,
            timeout,
            stop: Some(stop),
        })
    }

    /// The key written, e.g. `/apimesh/endpoints/orders/10.0.0.7:8080`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The current lease (it changes if the lease had to be granted again).
    pub fn lease_id(&self) -> i64 {
        self.lease.load(Ordering::Relaxed)
    }

    /// Stops the keep-alives and revokes the lease: the endpoint leaves
    /// discovery at once.
    pub async fn deregister(mut self) -> Result<(), EtcdRegistryError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let id = self.lease_id();
        let mut lease = self.client.lease_client();
        match tokio::time::timeout(self.timeout, lease.revoke(id)).await {
            Ok(Ok(_)) => {
                tracing::info!(key = %self.key, "deregistered from etcd");
                Ok(())
            }
            Ok(Err(e)) => Err(EtcdRegistryError::Etcd(e.to_string())),
            Err(_) => Err(EtcdRegistryError::Etcd(
                "timed out revoking the lease".into(),
            )),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(stop) = self.stop.take() else {
            return;
        };
        let _ = stop.send(());
        let id = self.lease_id();
        let mut lease = self.client.lease_client();
        let timeout = self.timeout;
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = tokio::time::timeout(timeout, lease.revoke(id)).await;
            });
        }
    }
}

struct Keeper {
    client: Client,
    key: String,
    value: Vec<u8>,
    ttl: i64,
    timeout: Duration,
    lease: Arc<AtomicI64>,
    backoff: Backoff,
}

enum KeepEnd {
    Stop,
    Expired,
    Failed(String),
}

impl Keeper {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let ttl = Duration::from_secs(self.ttl.unsigned_abs());
        let mut last_ok = Instant::now();
        loop {
            let end = self.keep_alive(&mut stop, &mut last_ok, ttl).await;
            let regrant = match end {
                KeepEnd::Stop => return,
                KeepEnd::Expired => true,
                KeepEnd::Failed(e) => {
                    tracing::warn!(key = %self.key, error = %e, "cannot keep the etcd lease alive; retrying");
                    // Past the TTL the lease is gone (or about to be).
                    last_ok.elapsed() >= ttl
                }
            };
            if regrant {
                loop {
                    match grant_and_put(
                        &self.client,
                        &self.key,
                        &self.value,
                        self.ttl,
                        self.timeout,
                    )
                    .await
                    {
                        Ok(id) => {
                            self.lease.store(id, Ordering::Relaxed);
                            last_ok = Instant::now();
                            self.backoff.reset();
                            metrics::counter!("apimesh.registry.etcd.reregistrations").increment(1);
                            tracing::info!(key = %self.key, lease = id, "lease lost; registered again");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(key = %self.key, error = %e, "cannot register again; retrying");
                            let d = self.backoff.next();
                            tokio::select! {
                                _ = tokio::time::sleep(d) => {}
                                _ = &mut stop => return,
                            }
                        }
                    }
                }
            } else {
                let d = self.backoff.next();
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = &mut stop => return,
                }
            }
        }
    }

    /// Keeps the current lease alive every TTL/3 until it fails or expires.
    async fn keep_alive(
        &mut self,
        stop: &mut oneshot::Receiver<()>,
        last_ok: &mut Instant,
        ttl: Duration,
    ) -> KeepEnd {
        let id = self.lease.load(Ordering::Relaxed);
        let interval = (ttl / 3).max(Duration::from_millis(300));
        let wait = interval.min(self.timeout);
        let mut lease = self.client.lease_client();
        let (mut keeper, mut stream) = match tokio::time::timeout(wait, lease.keep_alive(id)).await
        {
            Ok(Ok(pair)) => pair,
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m.contains("not found") => {
                return KeepEnd::Expired;
            }
            Ok(Err(e)) => return KeepEnd::Failed(e.to_string()),
            Err(_) => return KeepEnd::Failed("timed out".into()),
        };
        *last_ok = Instant::now();
        self.backoff.reset();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = &mut *stop => return KeepEnd::Stop,
            }
            if let Err(e) = keeper.keep_alive().await {
                return KeepEnd::Failed(e.to_string());
            }
            match tokio::time::timeout(wait, stream.message()).await {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => *last_ok = Instant::now(),
                Ok(Ok(Some(_))) => return KeepEnd::Expired,
                Ok(Ok(None)) => return KeepEnd::Failed("the keep-alive stream closed".into()),
                Ok(Err(e)) => return KeepEnd::Failed(e.to_string()),
                Err(_) => return KeepEnd::Failed("keep-alive timed out".into()),
            }
        }
    }
}
