//! The write path: streams each file written through the filesystem into a (multipart)
//! object upload with bounded memory and bounded local staging.
//!
//! One [`Uploader`] per mount owns the global limits (memory budget for part buffers,
//! staging-area byte limit and directory); it starts one [`WriteSession`] per file handle
//! open for writing. The module knows objects only (the [`Backend`] trait): no inodes,
//! tenants or FUSE.
//!
//! How a session works:
//! - Every written byte is kept locally until the commit, so any part can be rebuilt later:
//!   writers may seek back, overwrite, leave holes or truncate. The part a writer is filling
//!   is held in memory ([`fill`]) while memory allows; everything else lives in sparse
//!   per-part staging files ([`staging`]).
//! - A part whose bytes are all written and that the writer has moved past is uploaded in
//!   the background, at most `max_concurrent_parts` per session: from its fill buffer (which
//!   is also written to staging once, with `O_DIRECT`), or read back from staging into a
//!   budgeted buffer (the writer waits when the memory budget is full).
//! - A later write into an uploaded part makes it dirty; [`WriteSession::commit`] re-uploads
//!   dirty parts, fills untouched ranges of an existing object with server-side part copies
//!   (or ranged GETs when a part mixes old and new bytes), and completes the upload. Files of
//!   at most one part are sent with a single PUT.
//! - When staging is full, local copies of parts already uploaded (except the first, where
//!   container formats patch their header) are dropped; writing or reading such a part
//!   before the commit then fails. With no such part to drop the writer gets
//!   [`UploadError::StagingFull`] and nothing already acknowledged is lost.
//! - The store's capabilities decide the rest (asked once per session): parts follow its
//!   `MultipartLimits`; without part copies untouched ranges are read and uploaded; without
//!   multipart uploads nothing is sent before the commit, full parts go from memory to
//!   staging, and the commit is one `put_stream` reading staging chunk by chunk; files
//!   beyond `max_object_size` are [`UploadError::TooLarge`]; see docs/backends.md.
//! - Failures abort the multipart upload: no partial object, no orphaned upload.
//! - Every multipart upload is recorded in a [`journal`] in the staging directory from
//!   before its first part until it is completed or aborted, so after a crash the next mount
//!   aborts it (`crate::recovery`). [`Uploader::live_sessions`] lets shutdown wait for
//!   sessions and name the ones that did not finish.

mod budget;
mod commit;
mod extents;
mod fill;
pub mod journal;
pub mod parts;
pub mod root;
mod session;
mod staging;
mod transfer;
pub mod writeback;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, BackendError, ETag, MIN_PART_SIZE};

use budget::{MemoryBudget, StagingSpace};
pub use parts::PartLayout;
pub use session::WriteSession;

/// Settings of the upload pipeline, shared by all sessions of a mount.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// Size of the first 1000 parts (grows for later parts, see [`parts`]); at least 5 MiB.
    pub part_size: u64,
    /// Part uploads in flight per session.
    pub max_concurrent_parts: usize,
    /// Bytes of part buffers held at once by all sessions together; at least `part_size`.
    pub memory_budget: u64,
    /// Directory for staging files (a private subdirectory is created inside).
    pub staging_dir: PathBuf,
    /// Bytes of staging files held at once by all sessions together.
    pub staging_limit: u64,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            part_size: 8 * 1024 * 1024,
            max_concurrent_parts: 4,
            memory_budget: 256 * 1024 * 1024,
            staging_dir: std::env::temp_dir().join("byosfs-staging"),
            staging_limit: 16 * 1024 * 1024 * 1024,
        }
    }
}

/// Errors of the upload pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// A backend request failed (create, part upload or copy, complete, PUT, or a ranged
    /// GET of the object being modified).
    #[error("object storage request failed")]
    Backend(#[source] BackendError),
    /// The staging area is full (the filesystem reports `ENOSPC`).
    #[error("local staging area is full")]
    StagingFull,
    /// Reading or writing a staging file failed.
    #[error("staging file IO failed")]
    Io(#[source] io::Error),
    /// The file would exceed what [`MAX_PARTS`](crate::backend::MAX_PARTS) parts can hold.
    #[error("file size {size} exceeds the largest object the part layout holds ({max} bytes)")]
    TooLarge {
        /// Requested size.
        size: u64,
        /// Largest possible size.
        max: u64,
    },
    /// These bytes were uploaded and their local copy dropped to free staging space; they
    /// cannot be read back until the file is committed.
    #[error("bytes at offset {offset} are uploaded but no longer staged; readable after commit")]
    Evicted {
        /// First unavailable byte.
        offset: u64,
    },
    /// A failed upload held the only copy of acknowledged bytes (their staging was dropped).
    #[error("upload failed after local copies were dropped: written data is lost")]
    DataLost,
    /// [`UploadConfig`] is invalid.
    #[error("invalid upload configuration: {0}")]
    InvalidConfig(String),
}

impl UploadError {
    /// A copy to report a stored failure more than once (sources are not `Clone`).
    fn duplicate(&self) -> Self {
        match self {
            Self::Backend(e) => Self::Backend(BackendError::new(e.kind(), e.context())),
            Self::StagingFull => Self::StagingFull,
            Self::Io(e) => Self::Io(io::Error::new(e.kind(), e.to_string())),
            Self::TooLarge { size, max } => Self::TooLarge { size: *size, max: *max },
            Self::Evicted { offset } => Self::Evicted { offset: *offset },
            Self::DataLost => Self::DataLost,
            Self::InvalidConfig(s) => Self::InvalidConfig(s.clone()),
        }
    }
}

impl From<io::Error> for UploadError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::StorageFull {
            Self::StagingFull
        } else {
            Self::Io(e)
        }
    }
}

/// The existing object a session starts from (opened without `O_TRUNC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseObject {
    /// Its size.
    pub size: u64,
    /// Its ETag; when known, reads of its old bytes are pinned to this version.
    pub etag: Option<ETag>,
}

/// A write session that exists right now (see [`Uploader::live_sessions`]).
#[derive(Debug, Clone)]
pub struct LiveSession {
    /// Tenant the file belongs to (empty if the session was started without one).
    pub owner: String,
    /// The file's object key.
    pub key: String,
    /// How far its upload is (for `byosfs status`).
    pub progress: Arc<UploadProgress>,
}

/// Progress of one write session, updated by the session as it goes (relaxed atomics: a
/// status reads a snapshot).
#[derive(Debug, Default)]
pub struct UploadProgress {
    /// The file's size as written so far.
    pub written: AtomicU64,
    /// Part requests completed (data or copy), re-uploads of rewritten parts included.
    pub parts_done: AtomicU64,
    /// Bytes those parts carried.
    pub bytes_uploaded: AtomicU64,
}

/// Creates write sessions; owns the mount-wide memory budget and staging accounting.
#[derive(Debug)]
pub struct Uploader {
    config: UploadConfig,
    layout: PartLayout,
    memory: MemoryBudget,
    staging: Arc<StagingSpace>,
    root: PathBuf,
    next_session: AtomicU64,
    /// Sessions alive now, so shutdown can wait for them and name the ones left.
    live: Mutex<BTreeMap<u64, LiveSession>>,
    /// `<root>/.lock`, `flock`ed for the uploader's lifetime: how other processes (in any
    /// PID namespace) see that this root is in use (see [`root`]).
    _lock: OwnedFd,
}

pub use root::STAGING_ROOT_PREFIX;

impl Uploader {
    /// Validate `config` and create the private staging directory; one tenant holds at most
    /// the default share (half) of the memory budget and of the staging limit.
    pub fn new(config: UploadConfig) -> Result<Arc<Self>, UploadError> {
        Self::with_tenant_share(config, crate::fair::DEFAULT_SHARE_PERCENT)
    }

    /// [`Self::new`], one tenant holding at most `tenant_share` percent of the memory budget
    /// and of the staging limit (see [`crate::fair`]).
    pub fn with_tenant_share(config: UploadConfig, tenant_share: u8) -> Result<Arc<Self>, UploadError> {
        let layout = PartLayout::new(config.part_size).ok_or_else(|| {
            UploadError::InvalidConfig(format!(
                "part_size {} must be between {MIN_PART_SIZE} and {}",
                config.part_size,
                crate::backend::MAX_PART_SIZE
            ))
        })?;
        if config.max_concurrent_parts == 0 {
            return Err(UploadError::InvalidConfig(
                "max_concurrent_parts must be at least 1".into(),
            ));
        }
        if config.memory_budget < config.part_size {
            return Err(UploadError::InvalidConfig(format!(
                "memory_budget {} must hold at least one part ({})",
                config.memory_budget, config.part_size
            )));
        }
        let staging = root::open_staging_dir(&config.staging_dir).map_err(UploadError::InvalidConfig)?;
        // Staged bytes are customers' data: the root is private to the mounting user (0700).
        let created = root::create_root(&staging, &config.staging_dir).map_err(UploadError::Io)?;
        let root = created.path;
        Ok(Arc::new(Self {
            _lock: created.lock,
            memory: MemoryBudget::new(config.memory_budget, tenant_share),
            staging: Arc::new(StagingSpace::new(config.staging_limit, tenant_share)),
            layout,
            root,
            config,
            next_session: AtomicU64::new(0),
            live: Mutex::new(BTreeMap::new()),
        }))
    }

    /// Start a session writing `key`. `base` is `Some` when an existing object is opened
    /// without `O_TRUNC` (its bytes are the initial content, fetched only when needed), and
    /// `None` for a new or truncated file (which commits as a new object even if unwritten).
    ///
    /// Same as [`Self::start_for`] with no owner: journals then identify the backend only by
    /// its description.
    pub fn start(self: &Arc<Self>, backend: Arc<dyn Backend>, key: String, base: Option<BaseObject>) -> WriteSession {
        self.start_for("", backend, key, base)
    }

    /// [`Self::start`] for a file of tenant `owner`: the upload journal records the owner so
    /// the next mount can abort the upload through that tenant's backend after a crash.
    pub fn start_for(
        self: &Arc<Self>,
        owner: &str,
        backend: Arc<dyn Backend>,
        key: String,
        base: Option<BaseObject>,
    ) -> WriteSession {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        let progress = Arc::new(UploadProgress::default());
        self.live_map().insert(
            n,
            LiveSession {
                owner: owner.to_owned(),
                key: key.clone(),
                progress: progress.clone(),
            },
        );
        let dir = self.root.join(format!("s{n}"));
        let mut session = WriteSession::new(self.clone(), n, owner.to_owned(), backend, key, base, dir);
        progress.written.store(session.size, Ordering::Relaxed);
        session.progress = progress;
        session
    }

    /// [`Self::start_for`] for a session that shutdown need not wait for and must not report
    /// as lost: a write-back upload, whose content stays staged until the upload succeeds.
    pub(crate) fn start_unlisted(
        self: &Arc<Self>,
        owner: &str,
        backend: Arc<dyn Backend>,
        key: String,
    ) -> WriteSession {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("s{n}"));
        WriteSession::new(self.clone(), n, owner.to_owned(), backend, key, None, dir)
    }

    fn live_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, LiveSession>> {
        // A plain map updated in single statements: poisoning cannot leave it inconsistent.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn session_renamed(&self, id: u64, key: &str) {
        if let Some(s) = self.live_map().get_mut(&id) {
            s.key = key.to_owned();
        }
    }

    pub(crate) fn session_ended(&self, id: u64) {
        self.live_map().remove(&id);
    }

    /// Sessions that exist right now: files open for writing, or whose last close is still
    /// committing. Shutdown waits until this is empty and names what is left.
    pub fn live_sessions(&self) -> Vec<LiveSession> {
        self.live_map().values().cloned().collect()
    }

    /// Where upload `generation` of session `id` keeps its journal.
    pub(crate) fn journal_path(&self, id: u64, generation: u64) -> PathBuf {
        self.root.join(format!("s{id}-{generation}{}", journal::JOURNAL_SUFFIX))
    }

    /// This uploader's private directory inside the staging directory.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// The settings in use.
    pub fn config(&self) -> &UploadConfig {
        &self.config
    }

    /// The part layout every session uses.
    pub fn layout(&self) -> PartLayout {
        self.layout
    }

    /// Bytes of part buffers held right now.
    pub fn memory_in_use(&self) -> u64 {
        self.memory.in_use()
    }

    /// Most bytes of part buffers ever held at once.
    pub fn memory_high_water(&self) -> u64 {
        self.memory.high_water()
    }

    /// Bytes of staging space reserved right now.
    pub fn staging_in_use(&self) -> u64 {
        self.staging.in_use()
    }

    /// The part-buffer memory budget now (the configured one unless resized).
    pub fn memory_limit(&self) -> u64 {
        self.memory.limit()
    }

    /// The staging limit now.
    pub fn staging_limit(&self) -> u64 {
        self.staging.limit()
    }

    /// Microseconds writers have waited for part-buffer memory, in total.
    pub fn memory_wait_us(&self) -> u64 {
        self.memory.wait_us()
    }

    /// Change the staging limit while writers run; below what is staged, new staging is
    /// refused (`ENOSPC` after the usual eviction of uploaded parts) until enough is released.
    pub fn set_staging_limit(&self, limit: u64) {
        self.staging.set_limit(limit);
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        // Sessions hold an `Arc<Uploader>`, so every session directory is gone by now. Journals
        // left are uploads whose abort failed or never ran: keep them for the next mount.
        let kept = match remove_all_but_journals(&self.root) {
            Ok(kept) => kept,
            Err(e) => {
                tracing::warn!(error = %e, "could not clean the staging directory");
                return;
            }
        };
        if kept == 0 {
            // The lock file goes last: a root without one would look like an old version's.
            let _ = std::fs::remove_file(self.root.join(root::LOCK_FILE));
            if let Err(e) = std::fs::remove_dir(&self.root) {
                tracing::warn!(error = %e, "could not remove staging directory");
            }
        } else {
            tracing::warn!(files = kept, dir = %self.root.display(), "upload journals or write-back files left; the next mount aborts or uploads them");
        }
    }
}

/// Whether a file in a staging root must survive its process: a multipart upload's journal
/// (the next mount aborts it) or a closed file staged for write-back (the next mount uploads
/// it).
fn is_kept_file(path: &std::path::Path, len: u64) -> bool {
    let name = path.to_string_lossy();
    // An empty write-back file is a name made ahead that no close used.
    name.ends_with(journal::JOURNAL_SUFFIX) || (name.ends_with(writeback::WB_SUFFIX) && len > 0)
}

/// Delete everything in `root` except upload journals, staged write-back files and the lock
/// file; returns how many of those files remain.
pub(crate) fn remove_all_but_journals(root: &std::path::Path) -> io::Result<usize> {
    let mut kept = 0;
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name() == root::LOCK_FILE {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else if kind.is_file() && is_kept_file(&path, entry.metadata()?.len()) {
            kept += 1;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(kept)
}
