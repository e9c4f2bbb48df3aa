//! A ring source reading a `ring.json` file and reloading it when it changes,
//! for services outside Kubernetes.
//!
//! A background task checks the file's metadata every poll interval (default
//! 500 ms) and reads it when its modification time or length changed, or when
//! it was modified in the last two seconds (file systems with coarse
//! timestamps can give two quick writes the same mtime). Content already seen
//! is not parsed again, so a bad file is rejected once, not once per poll.
//! Replace the file atomically (write a temporary file, then rename) so the
//! reader never sees half a document; if it does, it rejects it and reads the
//! complete one at the next poll.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{RingPublisher, RingSource, RingWatch, SourceStatus};
use crate::metrics::Metrics;
use crate::ring::{MAX_DOCUMENT_BYTES, RingError, hash_key};

/// How recent a modification must be for the file to be read again even if
/// its metadata looks unchanged.
const RECENT: Duration = Duration::from_secs(2);

/// A ring source backed by a file. Dropping it stops the reloads; handles
/// from [`RingSource::watch`] keep the last ring.
pub struct FileRingSource {
    publisher: Arc<RingPublisher>,
    path: PathBuf,
    task: JoinHandle<()>,
}

impl fmt::Debug for FileRingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileRingSource")
            .field("path", &self.path)
            .field("version", &self.publisher.watch().version())
            .finish_non_exhaustive()
    }
}

impl Drop for FileRingSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Options of a [`FileRingSource`].
#[derive(Debug, Clone)]
pub struct FileRingSourceBuilder {
    path: PathBuf,
    poll_interval: Duration,
    metrics: Option<Metrics>,
    expected: Option<(String, String)>,
}

impl FileRingSourceBuilder {
    /// How often the file's metadata is checked (default 500 ms).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Counts loads and rejections into `metrics`.
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Refuses rings that are not for `namespace/service`.
    #[must_use]
    pub fn service(mut self, namespace: impl Into<String>, service: impl Into<String>) -> Self {
        self.expected = Some((namespace.into(), service.into()));
        self
    }

    /// Reads the file once (so a good file is loaded when this returns),
    /// then keeps watching it from a background task. A missing or bad file
    /// is logged and retried; it does not fail the source. Must be called
    /// within a tokio runtime.
    pub async fn open(self) -> FileRingSource {
        let publisher = Arc::new(RingPublisher::new(
            format!("file {}", self.path.display()),
            self.expected,
            self.metrics,
        ));
        let mut poller = Poller {
            path: self.path.clone(),
            publisher: Arc::clone(&publisher),
            seen: None,
            digest: None,
            failing: false,
        };
        poller.poll().await;
        let interval = self.poll_interval;
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                poller.poll().await;
            }
        });
        FileRingSource {
            publisher,
            path: self.path,
            task,
        }
    }
}

impl FileRingSource {
    /// Options for a source reading `path`.
    pub fn builder(path: impl Into<PathBuf>) -> FileRingSourceBuilder {
        FileRingSourceBuilder {
            path: path.into(),
            poll_interval: Duration::from_millis(500),
            metrics: None,
            expected: None,
        }
    }

    /// A source reading `path` with the default options.
    pub async fn open(path: impl Into<PathBuf>) -> Self {
        Self::builder(path).open().await
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the source has done so far.
    pub fn status(&self) -> watch::Receiver<SourceStatus> {
        self.publisher.status()
    }
}

impl RingSource for FileRingSource {
    fn watch(&self) -> RingWatch {
        self.publisher.watch()
    }
}

struct Poller {
    path: PathBuf,
    publisher: Arc<RingPublisher>,
    /// Modification time and length at the last read.
    seen: Option<(Option<SystemTime>, u64)>,
    /// Hash of the content last offered.
    digest: Option<u64>,
    /// The last attempt failed (logged once, until it works again).
    failing: bool,
}

impl Poller {
    async fn poll(&mut self) {
        let meta = match tokio::fs::metadata(&self.path).await {
            Ok(meta) => meta,
            Err(error) => return self.failed(&error),
        };
        let stamp = (meta.modified().ok(), meta.len());
        let recent = stamp.0.is_none_or(|modified| {
            SystemTime::now()
                .duration_since(modified)
                .map_or(true, |age| age < RECENT)
        });
        if self.seen == Some(stamp) && !recent {
            return;
        }
        if usize::try_from(meta.len()).map_or(true, |len| len > MAX_DOCUMENT_BYTES) {
            self.seen = Some(stamp);
            self.failing = false;
            let rejection = RingError::DocumentTooLarge {
                size: usize::try_from(meta.len()).unwrap_or(usize::MAX),
                max: MAX_DOCUMENT_BYTES,
            }
            .into();
            // `u64::MAX` stands for "this oversized file": refused once.
            if self.digest != Some(u64::MAX) {
                self.digest = Some(u64::MAX);
                self.publisher.refused(&rejection);
            }
            return;
        }
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(bytes) => bytes,
            Err(error) => return self.failed(&error),
        };
        self.seen = Some(stamp);
        self.failing = false;
        let digest = hash_key(&bytes);
        if self.digest == Some(digest) {
            return;
        }
        self.digest = Some(digest);
        // Refusals are logged and counted by the publisher.
        let _ = self.publisher.offer_document(&bytes);
    }

    fn failed(&mut self, error: &std::io::Error) {
        if !self.failing {
            self.failing = true;
            self.publisher.fetch_failed(&FileError {
                path: self.path.clone(),
                message: error.to_string(),
            });
        }
        // Read again once it is back, even if it comes back identical.
        self.seen = None;
        self.digest = None;
    }
}

/// A ring file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read ring file {}: {message}", path.display())]
struct FileError {
    path: PathBuf,
    message: String,
}
