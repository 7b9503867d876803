//! Writing a config to etcd as per-object keys: what the `apimesh` command
//! does.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, DeleteOptions, GetOptions, Txn, TxnOp};
use mesh_core::{Config, ConfigError, Snapshot};

use super::layout::{self, ObjectKind, prefix_end};
use super::{EtcdOptions, EtcdRegistryError};

/// etcd's default limit of operations in one transaction (`--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// Why an [`EtcdAdmin`] operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The config is invalid; nothing was written.
    #[error("the config is invalid; nothing was written:\n{0}")]
    Invalid(ConfigError),
    /// A name cannot be an etcd key, or a `<kind>/<name>` is malformed.
    #[error("{0}")]
    BadName(String),
    /// etcd failed or could not be reached.
    #[error("etcd: {0}")]
    Etcd(String),
    /// The options are unusable.
    #[error(transparent)]
    Options(#[from] EtcdRegistryError),
}

/// What [`EtcdAdmin::apply`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplyReport {
    /// Keys written (new or changed), relative to the prefix.
    pub put: Vec<String>,
    /// Keys deleted because the config no longer has them.
    pub deleted: Vec<String>,
    /// Keys left as they were.
    pub unchanged: usize,
    /// Transactions used (1 when everything fit in one, so it applied atomically).
    pub transactions: usize,
    /// The etcd revision after the last transaction.
    pub revision: i64,
}

/// Reads and writes the objects under a prefix.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use mesh_registry::{EtcdAdmin, EtcdOptions};
///
/// let mut admin = EtcdAdmin::connect(EtcdOptions::new(["http://127.0.0.1:2379"])).await?;
/// let config = mesh_core::Config::from_toml(&std::fs::read_to_string("mesh.toml")?)?;
/// let report = admin.apply(&config).await?;
/// println!("{} written, {} deleted", report.put.len(), report.deleted.len());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdAdmin {
    client: Client,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAdmin")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdAdmin {
    /// Connects to etcd (the options' endpoints, prefix, user and TLS).
    pub async fn connect(mut options: EtcdOptions) -> Result<EtcdAdmin, AdminError> {
        options.validate()?;
        let client = options.client().await.map_err(AdminError::Etcd)?;
        Ok(EtcdAdmin {
            client,
            prefix: options.prefix,
            timeout: options.request_timeout,
        })
    }

    /// The key prefix, ending in `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn timed<T>(
        &self,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, AdminError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.map_err(|e| AdminError::Etcd(e.to_string())),
            Err(_) => Err(AdminError::Etcd(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Every `(key relative to the prefix, value)` under the prefix, or
    /// under one kind's directory.
    pub async fn list(
        &mut self,
        kind: Option<ObjectKind>,
    ) -> Result<Vec<(String, String)>, AdminError> {
        let from = match kind {
            None => self.prefix.clone(),
            Some(k) if k.is_singleton() => format!("{}{k}", self.prefix),
            Some(k) => format!("{}{k}/", self.prefix),
        };
        let end = match kind {
            Some(k) if k.is_singleton() => None,
            _ => Some(prefix_end(from.as_bytes())),
        };
        let mut kv = self.client.kv_client();
        let opts = end.map(|e| GetOptions::new().with_range(e));
        let resp = self.timed(kv.get(from, opts)).await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|item| {
                let rel = item.key().strip_prefix(self.prefix.as_bytes())?;
                Some((
                    String::from_utf8_lossy(rel).into_owned(),
                    String::from_utf8_lossy(item.value()).into_owned(),
                ))
            })
            .collect())
    }

    fn key_of(&self, kind: ObjectKind, name: &str) -> Result<String, AdminError> {
        let rel = if kind.is_singleton() {
            if !name.is_empty() {
                return Err(AdminError::BadName(format!("`{kind}` has no children")));
            }
            kind.segment().to_owned()
        } else {
            format!("{kind}/{name}")
        };
        layout::parse_key(&rel).map_err(AdminError::BadName)?;
        Ok(format!("{}{rel}", self.prefix))
    }

    /// The value of one object (`name` is empty for a singleton, and
    /// `<service>/<instance>` for an endpoint).
    pub async fn get(
        &mut self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Option<String>, AdminError> {
        let key = self.key_of(kind, name)?;
        let mut kv = self.client.kv_client();
        let resp = self.timed(kv.get(key, None)).await?;
        Ok(resp
            .kvs()
            .first()
            .map(|item| String::from_utf8_lossy(item.value()).into_owned()))
    }

    /// Deletes one object; false if there was none.
    pub async fn delete(&mut self, kind: ObjectKind, name: &str) -> Result<bool, AdminError> {
        let key = self.key_of(kind, name)?;
        let mut kv = self.client.kv_client();
        let resp = self.timed(kv.delete(key, None)).await?;
        Ok(resp.deleted() > 0)
    }

    /// Validates `config` (as [`Snapshot::build`] does) and makes the
    /// prefix hold exactly its objects: changed and new objects are written,
    /// objects the config no longer has are deleted. Registered endpoints
    /// (`endpoints/…`, written by instances on leases) are left alone.
    ///
    /// The writes go in one transaction when they fit in etcd's default
    /// limit of 128 operations ([`MAX_TXN_OPS`]); otherwise in several,
    /// services and plans first and deletions last, so each step stays
    /// valid for the registries watching.
    pub async fn apply(&mut self, config: &Config) -> Result<ApplyReport, AdminError> {
        Snapshot::build(config.clone(), 1).map_err(AdminError::Invalid)?;
        let wanted = layout::split_config(config).map_err(AdminError::BadName)?;
        let current: BTreeMap<String, String> = self.list(None).await?.into_iter().collect();
        let mut report = ApplyReport::default();
        let mut ops = Vec::new();
        let mut keep = std::collections::BTreeSet::new();
        for (rel, value) in wanted {
            keep.insert(rel.clone());
            let same = current.get(&rel).is_some_and(|v| {
                // Compare as JSON, so formatting differences are not changes.
                serde_json::from_str::<serde_json::Value>(v).ok()
                    == serde_json::from_slice::<serde_json::Value>(&value).ok()
            });
            if same {
                report.unchanged += 1;
            } else {
                ops.push(TxnOp::put(format!("{}{rel}", self.prefix), value, None));
                report.put.push(rel);
            }
        }
        for rel in current.keys() {
            let is_endpoint = matches!(layout::parse_key(rel), Ok((ObjectKind::Endpoint, _)));
            if !keep.contains(rel) && !is_endpoint {
                ops.push(TxnOp::delete(
                    format!("{}{rel}", self.prefix),
                    None::<DeleteOptions>,
                ));
                report.deleted.push(rel.clone());
            }
        }
        let mut kv = self.client.kv_client();
        for chunk in ops.chunks(MAX_TXN_OPS) {
            let txn = Txn::new().and_then(chunk.to_vec());
            let resp = self.timed(kv.txn(txn)).await?;
            report.transactions += 1;
            report.revision = resp.header().map_or(0, |h| h.revision());
        }
        Ok(report)
    }
}
