use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use mesh_core::{Config, ConfigError, Registry, RegistryStatus, Snapshot};
use notify::Watcher;
use tokio::sync::watch;

use crate::publisher::Publisher;

/// Why a [`FileRegistry`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileRegistryError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid config.
    #[error("{path}: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        source: ConfigError,
    },
    /// The file system watch could not be set up.
    #[error("cannot watch {path}: {message}")]
    Watch {
        /// The directory watched.
        path: PathBuf,
        /// What the watcher said.
        message: String,
    },
}

/// How a [`FileRegistry`] watches its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileWatchOptions {
    /// After a change event, wait this long for the writer to finish before
    /// reading (default 50 ms). Further events restart the wait.
    pub debounce: Duration,
    /// Also re-read the file this often, in case an event was missed (some
    /// network file systems send none). Default 1 s.
    pub poll_interval: Duration,
}

impl Default for FileWatchOptions {
    fn default() -> Self {
        FileWatchOptions {
            debounce: Duration::from_millis(50),
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl FileWatchOptions {
    /// Sets the debounce delay.
    #[must_use]
    pub fn debounce(mut self, d: Duration) -> Self {
        self.debounce = d;
        self
    }

    /// Sets the poll interval.
    #[must_use]
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }
}

/// A registry read from a TOML file and kept in step with it.
///
/// The file's directory is watched (so editors that write a new file and
/// rename it over the old one are seen), with a slow poll as a safety net.
/// Each time the file's bytes change:
///
/// - a valid config becomes the next revision;
/// - an invalid one (a typo, a half-written file) is rejected: its errors are
///   logged with `tracing`, counted in [`status`](Registry::status), and the
///   previous revision keeps serving;
/// - a deleted file is reported the same way and never empties the registry.
///
/// The watcher runs on its own thread and stops when the registry is dropped.
#[derive(Debug)]
pub struct FileRegistry {
    publisher: Arc<Publisher>,
    path: PathBuf,
    stop: mpsc::Sender<Msg>,
}

enum Msg {
    Changed,
    Stop,
}

impl FileRegistry {
    /// Loads `path` and watches it with default options. Fails if the file
    /// cannot be read or is not a valid config: there is no good state yet.
    pub fn watch(path: impl AsRef<Path>) -> Result<FileRegistry, FileRegistryError> {
        FileRegistry::watch_with(path, FileWatchOptions::default())
    }

    /// Loads `path` and watches it with `options`.
    pub fn watch_with(
        path: impl AsRef<Path>,
        options: FileWatchOptions,
    ) -> Result<FileRegistry, FileRegistryError> {
        let path = path.as_ref().to_path_buf();
        let publisher = Arc::new(Publisher::new("file", path.display().to_string()));
        let bytes = std::fs::read(&path).map_err(|source| FileRegistryError::Read {
            path: path.clone(),
            source,
        })?;
        publisher
            .publish(parse(&bytes))
            .map_err(|source| FileRegistryError::Config {
                path: path.clone(),
                source,
            })?;

        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let file_name = path.file_name().map(|n| n.to_os_string());
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let relevant = match &res {
                Ok(ev) => ev
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name),
                Err(_) => true,
            };
            if relevant {
                let _ = events.send(Msg::Changed);
            }
        })
        .map_err(|e| FileRegistryError::Watch {
            path: dir.clone(),
            message: e.to_string(),
        })?;
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| FileRegistryError::Watch {
                path: dir.clone(),
                message: e.to_string(),
            })?;

        let worker = Worker {
            publisher: publisher.clone(),
            path: path.clone(),
            last_seen: Some(bytes),
            options,
        };
        std::thread::Builder::new()
            .name("apimesh-file-registry".into())
            .spawn(move || worker.run(rx, watcher))
            .map_err(|e| FileRegistryError::Watch {
                path: dir,
                message: e.to_string(),
            })?;

        Ok(FileRegistry {
            publisher,
            path,
            stop: tx,
        })
    }

    /// The file being watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The live snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.publisher.current()
    }
}

impl Drop for FileRegistry {
    fn drop(&mut self) {
        let _ = self.stop.send(Msg::Stop);
    }
}

impl Registry for FileRegistry {
    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.publisher.subscribe()
    }

    fn status(&self) -> watch::Receiver<RegistryStatus> {
        self.publisher.status()
    }
}

fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Config::from_toml(text),
        Err(e) => Err(ConfigError::Syntax {
            path: String::new(),
            message: format!("the file is not UTF-8 ({e})"),
            line: None,
        }),
    }
}

struct Worker {
    publisher: Arc<Publisher>,
    path: PathBuf,
    /// The bytes last attempted (valid or not); `None` after a failed read.
    last_seen: Option<Vec<u8>>,
    options: FileWatchOptions,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Msg>, _watcher: notify::RecommendedWatcher) {
        loop {
            match rx.recv_timeout(self.options.poll_interval) {
                Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Ok(Msg::Changed) => {
                    // Let the writer finish: wait until events stop for `debounce`.
                    loop {
                        match rx.recv_timeout(self.options.debounce) {
                            Ok(Msg::Changed) => continue,
                            Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                            Err(mpsc::RecvTimeoutError::Timeout) => break,
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            self.check();
        }
    }

    fn check(&mut self) {
        let read = std::fs::read(&self.path).and_then(|first| {
            if self.last_seen.as_deref() == Some(&first[..]) {
                return Ok(None);
            }
            // Only take content that holds still for one debounce period, so
            // an in-place writer caught mid-write is read again, not applied.
            let mut current = first;
            for _ in 0..10 {
                std::thread::sleep(self.options.debounce);
                let again = std::fs::read(&self.path)?;
                if again == current {
                    break;
                }
                current = again;
            }
            Ok(Some(current))
        });
        match read {
            Ok(None) => {}
            Ok(Some(bytes)) => {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    // An empty file is almost always a truncate-then-write in
                    // progress; never let it wipe the registry.
                    self.publisher
                        .reject(format!("{} is empty", self.path.display()));
                } else {
                    // A rejection is logged and counted by the publisher.
                    let _ = self.publisher.publish(parse(&bytes));
                }
                self.last_seen = Some(bytes);
            }
            Err(e) => {
                // Report once per outage, not on every poll.
                if self.last_seen.take().is_some() {
                    self.publisher
                        .reject(format!("cannot read {}: {e}", self.path.display()));
                }
            }
        }
    }
}
