//! Crash-safe write-back: a closed file's content is made durable in the staging area and
//! uploaded in the background, so `close()` does not wait for the network.
//!
//! - [`WriteBack::begin`] / [`StagedWriter::finish`] stage one closed version of a file
//!   ([`entry`]: written under a name made durable ahead, with a checksummed trailer, then
//!   one fsync) and queue it; `close()` returns after that.
//! - Uploads run in the background, at most [`WriteBackConfig::concurrency`] at once, each
//!   through an ordinary [`WriteSession`](super::WriteSession) (so the mount's memory budget
//!   bounds their buffers, and a large file goes up as a journaled multipart upload).
//! - Which file goes next, what a newer close of the same name replaces, and the retry
//!   schedule of failed uploads are decided by [`queue`] (pure, unit-tested). A failed upload
//!   stays queued and on disk, logged, visible in `byosfs status`, retried with backoff; only
//!   a successful upload or an unlink removes it.
//! - The filesystem asks [`WriteBack::pending`] what a name holds before asking the bucket,
//!   reads pending content from its staged file ([`WriteBack::open_pending`]), and waits for
//!   an upload ([`WriteBack::wait_uploaded`]) where the bucket must have the object (`fsync`,
//!   rename, reopen for modification).
//! - A staged file outlives the process: after a crash the next mount adopts it
//!   ([`WriteBack::adopt`], from `crate::recovery`) before serving, and uploads it.
//!
//! Names are scoped by a number the caller chooses (the tenant binding's id), so two tenants'
//! equal keys never meet.

mod entry;
mod queue;

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

pub(crate) use entry::id_of;
pub use entry::{check, EntryHeader, Invalid, WB_SUFFIX};
pub(crate) use entry::{EntryWriter, Slots};
pub(crate) use queue::Scope;
use queue::{Backoff, Queue};

use super::{UploadError, Uploader};
use crate::backend::{Backend, PosixAttrs};

/// Settings of the write-back queue.
#[derive(Debug, Clone)]
pub struct WriteBackConfig {
    /// Uploads in flight at once (each also bounded by the write memory budget).
    pub concurrency: usize,
    /// Wait after a first failed upload; doubles per failure.
    pub retry_base: Duration,
    /// Longest wait between attempts.
    pub retry_max: Duration,
}

impl Default for WriteBackConfig {
    fn default() -> Self {
        Self {
            // Small files cost a round trip each: 8 in flight keep a WAN link busy while
            // staying well inside the default 256 MiB of write memory with 8 MiB parts.
            concurrency: 8,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// A closed file not in the bucket yet, as lookups and listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Its size.
    pub size: u64,
    /// Its modification time (stored with the object).
    pub mtime: SystemTime,
    /// Its mode, owner and group (stored with the object when set).
    pub posix: PosixAttrs,
}

/// One queued file, for `byosfs status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingStatus {
    /// Tenant.
    pub owner: String,
    /// Object key within the tenant.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// Being uploaded now.
    pub uploading: bool,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// The queue at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSummary {
    /// Files queued (every closed version not uploaded yet).
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Uploading now.
    pub uploading: usize,
    /// Files whose last attempt failed.
    pub failing: usize,
    /// Up to [`SUMMARY_ITEMS`] files: failing ones first, then in key order.
    pub items: Vec<PendingStatus>,
}

/// Files listed by [`WriteBack::summary`].
pub const SUMMARY_ITEMS: usize = 20;

/// What the runner keeps per staged file.
#[derive(Debug, Clone)]
struct Meta {
    header: EntryHeader,
    backend: Arc<dyn Backend>,
    path: PathBuf,
    offset: u64,
    /// Staging space reserved for it (0 for adopted files).
    reserved: u64,
    /// The tenant whose staging share `reserved` counts against.
    tenant: String,
}

#[derive(Debug)]
struct State {
    queue: Queue,
    metas: HashMap<u64, Meta>,
    /// The last failure of each item that failed, reported to waiters.
    failures: HashMap<u64, UploadError>,
    running: usize,
}

/// The write-back queue of a mount.
#[derive(Debug)]
pub struct WriteBack {
    uploader: Arc<Uploader>,
    config: WriteBackConfig,
    /// Names of staged files, made ahead in the uploader's root.
    slots: Arc<Slots>,
    state: Mutex<State>,
    /// Bumped on every completion or failure; waiters watch it.
    changed: watch::Sender<u64>,
    /// Wakes the dispatcher (new item, finished upload, urgent waiter).
    wake: Arc<Notify>,
    started: AtomicBool,
    next_id: AtomicU64,
    /// Items queued, readable without the lock: lookups skip the queue when it is empty.
    queued: AtomicUsize,
}

/// Chunk read from a staged file per write into the uploading session.
const CHUNK: u64 = 1 << 20;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io::Error::other)?
}

impl WriteBack {
    /// The queue of `uploader`'s mount; its files live in the uploader's root.
    pub fn new(uploader: Arc<Uploader>, config: WriteBackConfig) -> Arc<Self> {
        let backoff = Backoff {
            base: config.retry_base,
            max: config.retry_max,
        };
        Arc::new(Self {
            slots: Arc::new(Slots::new(uploader.root().to_path_buf())),
            uploader,
            config,
            state: Mutex::new(State {
                queue: Queue::new(backoff),
                metas: HashMap::new(),
                failures: HashMap::new(),
                running: 0,
            }),
            changed: watch::channel(0).0,
            wake: Arc::new(Notify::new()),
            started: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
        })
    }

    /// Whether nothing is queued (a lock-free check for the hot lookup path).
    pub fn is_idle(&self) -> bool {
        self.queued.load(Ordering::Acquire) == 0
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Updated in whole steps under the lock: a panic elsewhere cannot leave it half-done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start staging a closed version of `key` (`header.size` bytes follow through
    /// [`StagedWriter::write`]). `None` when the staging area has no room for it: the caller
    /// then commits synchronously, as without write-back.
    pub fn begin(
        &self,
        scope: Scope,
        tenant: &str,
        backend: Arc<dyn Backend>,
        header: EntryHeader,
    ) -> Option<StagedWriter> {
        if !self.uploader.staging.try_reserve(tenant, header.size) {
            return None;
        }
        Some(StagedWriter {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            scope,
            backend,
            header,
            buf: Vec::new(),
            writer: None,
            slots: self.slots.clone(),
            staging: self.uploader.staging.clone(),
            reserved: true,
            tenant: tenant.to_owned(),
        })
    }

    /// Make `w` durable and queue it; returns once it is on the staging disk (fsynced).
    pub async fn finish(self: &Arc<Self>, mut w: StagedWriter) -> Result<(), UploadError> {
        let slots = w.slots.clone();
        let (id, header, buf, writer) = (w.id, w.header.clone(), std::mem::take(&mut w.buf), w.writer.take());
        let (path, offset) = blocking(move || {
            let mut writer = match writer {
                Some(wr) => wr,
                None => EntryWriter::create(&slots, id, &header)?,
            };
            writer.write(&buf)?;
            writer.finish()
        })
        .await?;
        w.reserved = false;
        let meta = Meta {
            header: w.header.clone(),
            backend: w.backend.clone(),
            path,
            offset,
            reserved: w.header.size,
            tenant: w.tenant.clone(),
        };
        self.enqueue(w.scope, id, meta);
        Ok(())
    }

    fn enqueue(self: &Arc<Self>, scope: Scope, id: u64, meta: Meta) {
        let replaced = {
            let mut st = self.state();
            let replaced = st.queue.push(scope, &meta.header.key, id, meta.header.size);
            st.metas.insert(id, meta);
            self.queued.store(st.queue.len(), Ordering::Release);
            replaced
                .into_iter()
                .filter_map(|old| {
                    st.failures.remove(&old);
                    st.metas.remove(&old)
                })
                .collect::<Vec<_>>()
        };
        for old in replaced {
            self.discard(&old);
        }
        self.ensure_dispatcher();
        self.wake.notify_one();
    }

    /// Delete a staged file that is uploaded, replaced or cancelled.
    fn discard(&self, m: &Meta) {
        // One unlink of a small file: not worth a trip to the blocking pool.
        if let Err(e) = std::fs::remove_file(&m.path) {
            if e.kind() != io::ErrorKind::NotFound {
                warn!(key = ?m.header.key, error = %e, "could not delete a staged write-back file");
            }
        }
        self.uploader.staging.release(&m.tenant, m.reserved);
    }

    /// What `key` holds if a closed version of it is not in the bucket yet.
    pub fn pending(&self, scope: Scope, key: &str) -> Option<Pending> {
        let st = self.state();
        let item = st.queue.newest(scope, key)?;
        st.metas.get(&item.id).map(|m| Pending {
            size: m.header.size,
            mtime: m.header.mtime,
            posix: m.header.posix,
        })
    }

    /// Pending files whose keys start with `prefix`, in key order.
    pub fn pending_under(&self, scope: Scope, prefix: &str) -> Vec<(String, Pending)> {
        let st = self.state();
        st.queue
            .under(scope, prefix)
            .filter_map(|(k, item)| {
                let m = st.metas.get(&item.id)?;
                Some((
                    k.to_owned(),
                    Pending {
                        size: m.header.size,
                        mtime: m.header.mtime,
                        posix: m.header.posix,
                    },
                ))
            })
            .collect()
    }

    /// The newest pending version of `key`, opened for reading (the open file stays
    /// readable after its upload deletes it).
    pub fn open_pending(&self, scope: Scope, key: &str) -> Option<PendingFile> {
        let (path, offset, size) = {
            let st = self.state();
            let item = st.queue.newest(scope, key)?;
            let m = st.metas.get(&item.id)?;
            (m.path.clone(), m.offset, m.header.size)
        };
        // Uploaded and deleted in between: the bucket has it now.
        let file = entry::open(&path).ok()?;
        Some(PendingFile {
            file: Arc::new(file),
            offset,
            size,
        })
    }

    /// Wait until no closed version of `key` is left to upload (its upload goes first). Fails
    /// with the error of an attempt that fails meanwhile; the file stays queued.
    pub async fn wait_uploaded(self: &Arc<Self>, scope: Scope, key: &str) -> Result<(), UploadError> {
        self.wait_for(scope, key).await
    }

    /// Wait for every pending file under `prefix` (a directory about to be renamed).
    pub async fn wait_under(self: &Arc<Self>, scope: Scope, prefix: &str) -> Result<(), UploadError> {
        let keys: Vec<String> = self.pending_under(scope, prefix).into_iter().map(|(k, _)| k).collect();
        for k in keys {
            self.wait_uploaded(scope, &k).await?;
        }
        Ok(())
    }

    /// Drop the pending versions of `key` (the file was unlinked). A version uploading right
    /// now is waited for, so the caller's delete of the object comes after it.
    pub async fn cancel(self: &Arc<Self>, scope: Scope, key: &str) {
        let mut rx = self.changed.subscribe();
        // Bounded: each round removes what waits, or waits for the one upload to end.
        loop {
            let (removed, uploading) = {
                let mut st = self.state();
                let (ids, uploading) = st.queue.cancel(scope, key);
                self.queued.store(st.queue.len(), Ordering::Release);
                let removed: Vec<Meta> = ids
                    .into_iter()
                    .filter_map(|id| {
                        st.failures.remove(&id);
                        st.metas.remove(&id)
                    })
                    .collect();
                (removed, uploading)
            };
            for m in &removed {
                info!(tenant = %m.header.owner, key = ?m.header.key, "write-back: unlinked before upload; not uploaded");
                self.discard(m);
            }
            if !uploading || rx.changed().await.is_err() {
                return;
            }
        }
    }

    async fn wait_for(self: &Arc<Self>, scope: Scope, key: &str) -> Result<(), UploadError> {
        let mut rx = self.changed.subscribe();
        let baseline: HashMap<u64, u32> = {
            let mut st = self.state();
            st.queue.urge(scope, key);
            st.queue.versions(scope, key).map(|i| (i.id, i.attempts)).collect()
        };
        if baseline.is_empty() {
            return Ok(());
        }
        self.ensure_dispatcher();
        self.wake.notify_one();
        loop {
            {
                let st = self.state();
                let mut versions = st.queue.versions(scope, key).peekable();
                if versions.peek().is_none() {
                    return Ok(());
                }
                for i in versions {
                    if i.attempts > baseline.get(&i.id).copied().unwrap_or(0) {
                        return Err(st.failures.get(&i.id).map_or_else(
                            || UploadError::Io(io::Error::other("upload failed")),
                            UploadError::duplicate,
                        ));
                    }
                }
            }
            if rx.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// The queue at a glance (for `byosfs status` and the unmount log).
    pub fn summary(&self) -> QueueSummary {
        let st = self.state();
        let mut s = QueueSummary {
            files: st.queue.len(),
            ..QueueSummary::default()
        };
        let mut items = Vec::new();
        for (_, key, item) in st.queue.items() {
            s.bytes += item.size;
            s.uploading += usize::from(item.in_flight);
            s.failing += usize::from(item.last_error.is_some());
            items.push((item.last_error.is_none(), key, item));
        }
        items.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        s.items = items
            .into_iter()
            .take(SUMMARY_ITEMS)
            .map(|(_, key, item)| PendingStatus {
                owner: st
                    .metas
                    .get(&item.id)
                    .map(|m| m.header.owner.clone())
                    .unwrap_or_default(),
                key: key.to_owned(),
                size: item.size,
                uploading: item.in_flight,
                attempts: item.attempts,
                last_error: item.last_error.clone(),
            })
            .collect();
        s
    }

    /// Wait until the queue is empty, logging progress every few seconds, or until `stop`
    /// completes; returns what is left (it stays on disk for the next mount).
    pub async fn drain(self: &Arc<Self>, stop: impl Future<Output = ()>) -> QueueSummary {
        tokio::pin!(stop);
        let mut rx = self.changed.subscribe();
        let mut last_log = Instant::now();
        // Bounded by `stop`: the caller passes a deadline or a signal.
        loop {
            let s = self.summary();
            if s.files == 0 {
                return s;
            }
            if last_log.elapsed() >= Duration::from_secs(2) {
                info!(
                    files = s.files,
                    bytes = s.bytes,
                    uploading = s.uploading,
                    failing = s.failing,
                    "write-back: waiting for uploads before exiting"
                );
                last_log = Instant::now();
            }
            tokio::select! {
                () = &mut stop => return s,
                _ = rx.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    /// Take over the staged file `from` that a crashed run left, found complete by [`check`]
    /// (`header`, content at `offset`): move it into this mount's root and queue it for
    /// `backend`, so lookups see it before the bucket does.
    pub fn adopt(
        self: &Arc<Self>,
        header: EntryHeader,
        offset: u64,
        from: &Path,
        scope: Scope,
        backend: Arc<dyn Backend>,
    ) -> io::Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Its id is taken by a file that brings its own name: never made ahead for a close.
        self.slots.skip_to(id + 1);
        let path = self.slots.path(id);
        std::fs::rename(from, &path)?;
        File::open(self.slots.root())?.sync_all()?;
        let meta = Meta {
            header,
            backend,
            path,
            offset,
            reserved: 0,
            tenant: String::new(),
        };
        self.enqueue(scope, id, meta);
        Ok(())
    }

    fn ensure_dispatcher(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let wake = self.wake.clone();
        tokio::spawn(async move {
            // Ends when the queue's owner is dropped (checked at least once a second).
            while let Some(wb) = weak.upgrade() {
                let next = wb.launch();
                drop(wb);
                let nap = next.map_or(Duration::from_secs(1), |t| {
                    t.saturating_duration_since(Instant::now()).min(Duration::from_secs(1))
                });
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(nap) => {}
                }
            }
        });
    }

    /// Start uploads up to the concurrency limit; returns when a backed-off item is due.
    fn launch(self: &Arc<Self>) -> Option<Instant> {
        let now = Instant::now();
        let mut st = self.state();
        while st.running < self.config.concurrency {
            let Some(id) = st.queue.next(now) else { break };
            let Some(meta) = st.metas.get(&id).cloned() else {
                // Cannot happen (metas and queue change together); never retry it forever.
                st.queue.done(id);
                continue;
            };
            st.running += 1;
            tokio::spawn(self.clone().upload_one(id, meta));
        }
        st.queue.next_wake()
    }

    async fn upload_one(self: Arc<Self>, id: u64, meta: Meta) {
        let result = self.upload(&meta).await;
        let done = {
            let mut st = self.state();
            st.running -= 1;
            match result {
                Ok(()) => {
                    st.queue.done(id);
                    self.queued.store(st.queue.len(), Ordering::Release);
                    st.failures.remove(&id);
                    st.metas.remove(&id)
                }
                Err(e) => {
                    let attempts = st.queue.item(id).map_or(0, |i| i.attempts + 1);
                    let delay = st.queue.failed(id, Instant::now(), e.to_string());
                    warn!(
                        tenant = %meta.header.owner,
                        key = ?meta.header.key,
                        attempts,
                        retry_in_s = delay.unwrap_or_default().as_secs_f64(),
                        error = %e,
                        "write-back upload failed; the file stays staged and is retried"
                    );
                    st.failures.insert(id, e);
                    None
                }
            }
        };
        if let Some(m) = done {
            debug!(tenant = %m.header.owner, key = ?m.header.key, size = m.header.size, "write-back: uploaded");
            self.discard(&m);
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        self.wake.notify_one();
    }

    /// Upload one staged file through a write session (single PUT or multipart upload).
    async fn upload(&self, m: &Meta) -> Result<(), UploadError> {
        let path = m.path.clone();
        let file = Arc::new(blocking(move || entry::open(&path)).await?);
        let h = &m.header;
        let mut s = self.uploader.start_unlisted(&h.owner, m.backend.clone(), h.key.clone());
        let mut at = 0;
        while at < h.size {
            let n = (h.size - at).min(CHUNK);
            let (f, pos) = (file.clone(), m.offset + at);
            let data = blocking(move || {
                let mut buf = vec![0u8; super::session::to_usize(n).map_err(io::Error::other)?];
                f.read_exact_at(&mut buf, pos)?;
                Ok(buf)
            })
            .await?;
            s.write_bytes(at, Bytes::from(data)).await?;
            at += n;
        }
        s.set_posix(h.posix, false);
        s.set_mtime(Some(h.mtime));
        s.commit().await.map(drop)
    }
}

/// A closed version of a file being staged (see [`WriteBack::begin`]).
#[derive(Debug)]
pub struct StagedWriter {
    id: u64,
    scope: Scope,
    backend: Arc<dyn Backend>,
    header: EntryHeader,
    /// Content not written to the file yet: a small file is written in one go at `finish`.
    buf: Vec<u8>,
    writer: Option<EntryWriter>,
    slots: Arc<Slots>,
    staging: Arc<super::budget::StagingSpace>,
    reserved: bool,
    tenant: String,
}

impl StagedWriter {
    /// Append the next bytes of the content.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), UploadError> {
        self.buf.extend_from_slice(data);
        if u64::try_from(self.buf.len()).unwrap_or(u64::MAX) < CHUNK {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let (slots, id, header, writer) = (self.slots.clone(), self.id, self.header.clone(), self.writer.take());
        let writer = blocking(move || {
            let mut w = match writer {
                Some(w) => w,
                None => EntryWriter::create(&slots, id, &header)?,
            };
            w.write(&buf)?;
            Ok(w)
        })
        .await?;
        self.writer = Some(writer);
        Ok(())
    }
}

impl Drop for StagedWriter {
    fn drop(&mut self) {
        if self.reserved {
            self.staging.release(&self.tenant, self.header.size);
        }
    }
}

/// A pending file's staged content, open for reading.
#[derive(Debug, Clone)]
pub struct PendingFile {
    file: Arc<File>,
    offset: u64,
    size: u64,
}

impl PendingFile {
    /// Its size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Up to `len` bytes at `at` (short at the end).
    pub async fn read(&self, at: u64, len: usize) -> Result<Bytes, UploadError> {
        let end = at.saturating_add(u64::try_from(len).unwrap_or(u64::MAX)).min(self.size);
        if at >= end {
            return Ok(Bytes::new());
        }
        let n = super::session::to_usize(end - at)?;
        let (f, pos) = (self.file.clone(), self.offset + at);
        let data = blocking(move || {
            let mut buf = vec![0u8; n];
            f.read_exact_at(&mut buf, pos)?;
            Ok(buf)
        })
        .await?;
        Ok(Bytes::from(data))
    }
}
