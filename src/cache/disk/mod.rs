//! The disk tier of the block cache: whole blocks fetched from a backend, kept in a local
//! directory across remounts, under a hard cap on the bytes it holds.
//!
//! Reads try the memory [`BlockCache`](super::BlockCache), then this tier, then the network
//! (`read::prefetch` does the tiering; this module only stores). A block is found by its
//! identity: tenant scope (name + storage location), block size, key, size, version (ETag, or
//! Last-Modified without one) and index (see `entry`), so a replaced object, another tenant or
//! a tenant re-pointed elsewhere never finds blocks that are not its own.
//!
//! Threads: lookups check the in-memory index ([`index::DiskIndex`], under a short lock) and
//! read the file in `spawn_blocking`, bounded by [`READ_TIMEOUT`]; inserts go to one writer
//! thread through a bounded queue and are dropped when it is full. So disk IO never runs on
//! the FUSE loop or an async worker, and a slow or full disk turns into cache misses
//! (network reads), never into errors or waiting. The writer thread first rebuilds the index
//! from the directory (one `stat` per file, in the background: the mount serves meanwhile,
//! with every lookup a miss) and then serves inserts, evicting least recently used files
//! before writing, so the directory never holds more than the cap (nor more than the free
//! space less a margin, see [`index::limit`]).
//!
//! The directory is exclusive to one mount at a time: a lock file is `flock`ed for the life
//! of the cache; a second mount on the same directory runs without a disk cache.

mod entry;
mod index;

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rustix::fs::{self as rfs, AtFlags, FlockOperation, Mode, OFlags};

use self::entry::{Identity, ReadFail};
use self::index::{DiskIndex, EntryName};
use super::{ObjectId, Version};

/// The lock file that marks a directory as a byosfs disk cache and is `flock`ed by the mount
/// using it.
pub const LOCK_FILE: &str = ".byosfs-cache.lock";

/// Longest a lookup waits for its file. A disk this slow (a failing device, an overloaded
/// network volume) is slower than a GET to a nearby bucket; the read goes to the network and
/// the late result is dropped.
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Bytes of blocks waiting for the writer, at most: 64 MiB, a second or two of a fast
/// network read; beyond it inserts are dropped rather than held in memory.
const QUEUE_BYTES: u64 = 64 << 20;

/// Settings of the disk cache.
#[derive(Debug, Clone)]
pub struct DiskCacheConfig {
    /// The directory (for messages; the cache works on the descriptor it is given).
    pub path: PathBuf,
    /// Hard cap on the bytes of the cache's files, rounded up to 4 KiB each.
    pub capacity: u64,
    /// Size of the blocks stored (the memory cache's block size); queue length is derived.
    pub block_size: u64,
}

/// Errors of opening the disk cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskCacheError {
    /// Another mount uses the directory.
    #[error("disk cache {0} is in use by another mount")]
    InUse(PathBuf),
    /// The directory holds files but is not a byosfs cache: refused, so a mistyped path
    /// never has its files deleted by eviction.
    #[error("{0} is not empty and not a byosfs disk cache (no {LOCK_FILE}); use an empty or new directory")]
    NotACache(PathBuf),
    /// Filesystem error.
    #[error("disk cache {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Counters of the disk cache (since the mount).
#[derive(Debug, Default)]
pub struct DiskStats {
    /// Blocks served from disk.
    pub hits: AtomicU64,
    /// Blocks looked up and not found (or not servable in time).
    pub misses: AtomicU64,
    /// Files found damaged, deleted and not served.
    pub bad: AtomicU64,
    /// Blocks written.
    pub written: AtomicU64,
    /// Inserts dropped (queue full, disk full or failing, larger than the limit).
    pub dropped: AtomicU64,
    /// Files deleted to stay under the cap.
    pub evicted: AtomicU64,
}

/// State shared by lookups and the writer thread.
#[derive(Debug)]
struct Shared {
    path: PathBuf,
    dir: OwnedFd,
    capacity: u64,
    /// Set once the writer has rebuilt the index; lookups miss until then.
    ready: AtomicBool,
    /// Blocks queued for the writer and not yet handled.
    queued: AtomicU64,
    /// Lock order: taken alone, never across IO.
    index: Mutex<DiskIndex>,
    stats: DiskStats,
}

impl Shared {
    fn index(&self) -> MutexGuard<'_, DiskIndex> {
        // Every index method leaves it consistent before returning.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the cache may hold now: the cap, and the free space less the margin.
    fn limit(&self, used: u64) -> u64 {
        match rfs::fstatvfs(&self.dir) {
            Ok(s) => {
                let unit = s.f_frsize.max(1);
                index::limit(
                    self.capacity,
                    used,
                    s.f_bavail.saturating_mul(unit),
                    s.f_blocks.saturating_mul(unit),
                )
            }
            // Unknown free space: store nothing new rather than risk filling the disk.
            Err(_) => 0,
        }
    }

    /// Delete `victims`' files; a file that cannot be deleted stays counted.
    fn evict(&self, victims: &[(EntryName, u64)]) {
        for (v, charged) in victims {
            match entry::remove(&self.dir, &entry::file_name(v)) {
                Ok(()) => {
                    self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "disk cache: cannot delete an evicted file");
                    self.index().leak(*charged);
                }
            }
        }
    }
}

/// One block for the writer.
#[derive(Debug)]
struct Job {
    name: EntryName,
    identity: Vec<u8>,
    data: Bytes,
}

/// The disk cache of one mount. See the module docs.
#[derive(Debug)]
pub struct DiskCache {
    shared: Arc<Shared>,
    queue: SyncSender<Job>,
    /// Held (locked) for the life of the cache.
    _lock: OwnedFd,
}

impl DiskCache {
    /// Use directory `dir` (already opened and checked private, see
    /// `upload::root::open_private_dir`) as a disk cache: lock it, and start the writer
    /// thread, which rebuilds the index in the background.
    pub fn open(dir: OwnedFd, config: DiskCacheConfig) -> Result<Arc<Self>, DiskCacheError> {
        let path = config.path.clone();
        let io_err = |source: io::Error| DiskCacheError::Io {
            path: path.clone(),
            source,
        };
        let fresh = !has_entry(&dir, LOCK_FILE).map_err(io_err)?;
        if fresh && !is_empty(&dir).map_err(io_err)? {
            return Err(DiskCacheError::NotACache(path));
        }
        let flags = OFlags::CREATE | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let lock = rfs::openat(&dir, LOCK_FILE, flags, Mode::from_raw_mode(0o600)).map_err(|e| io_err(e.into()))?;
        match rfs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Err(DiskCacheError::InUse(path)),
            Err(e) => return Err(io_err(e.into())),
        }
        let shared = Arc::new(Shared {
            path: config.path,
            dir,
            capacity: config.capacity,
            ready: AtomicBool::new(false),
            queued: AtomicU64::new(0),
            index: Mutex::new(DiskIndex::new()),
            stats: DiskStats::default(),
        });
        let slots = usize::try_from((QUEUE_BYTES / config.block_size.max(1)).max(4)).unwrap_or(4);
        let (queue, rx) = sync_channel(slots);
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("byosfs-dcache".into())
            .spawn(move || run_writer(&writer, &rx))
            .map_err(io_err)?;
        Ok(Arc::new(Self {
            shared,
            queue,
            _lock: lock,
        }))
    }

    /// The cache's view of one object version of one tenant. `location` is the tenant's
    /// storage location as its backend describes it (endpoint, bucket or root, prefix).
    pub fn object(self: &Arc<Self>, tenant: &str, location: &str, id: &ObjectId, block_size: u64) -> DiskObject {
        let mut ident = Identity::new(&entry::scope(tenant, location), block_size)
            .bytes(id.key().as_bytes())
            .u64(id.size());
        ident = match &id.version {
            Version::ETag(e) => ident.u64(1).bytes(e.as_str().as_bytes()),
            Version::Modified(Some(t)) => {
                let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                ident.u64(2).u64(d.as_secs()).u64(u64::from(d.subsec_nanos()))
            }
            Version::Modified(None) => ident.u64(3),
        };
        DiskObject {
            cache: self.clone(),
            ident: Arc::from(ident.finish()),
        }
    }

    /// Whether the index has been rebuilt (lookups miss until then).
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// Bytes the cache's files hold (as charged: whole 4 KiB units), including one being
    /// written.
    pub fn used_bytes(&self) -> u64 {
        self.shared.index().used()
    }

    /// Files in the cache.
    pub fn len(&self) -> usize {
        self.shared.index().len()
    }

    /// Whether the cache holds no file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cache's counters.
    pub fn stats(&self) -> &DiskStats {
        &self.shared.stats
    }

    /// Wait until the index is rebuilt and the writer has no queued block, at most `max`
    /// (tests and benchmarks); whether it got there.
    pub fn flush(&self, max: Duration) -> bool {
        let deadline = std::time::Instant::now() + max;
        while std::time::Instant::now() < deadline {
            if self.is_ready() && self.shared.queued.load(Ordering::Acquire) == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

/// The disk cache's view of one object version (see [`DiskCache::object`]); cheap to clone.
#[derive(Debug, Clone)]
pub struct DiskObject {
    cache: Arc<DiskCache>,
    /// Identity of the object's blocks, less the block index.
    ident: Arc<[u8]>,
}

impl DiskObject {
    fn entry(&self, block: u64) -> (Vec<u8>, EntryName) {
        let identity = entry::block_identity(&self.ident, block);
        let name = entry::name_of(&identity);
        (identity, name)
    }

    /// Whether block `block` is stored (no IO; it may still turn out bad or be evicted).
    pub fn contains(&self, block: u64) -> bool {
        let shared = &self.cache.shared;
        shared.ready.load(Ordering::Acquire) && shared.index().contains(&self.entry(block).1)
    }

    /// Block `block` (`len` bytes long), if stored, intact and read within [`READ_TIMEOUT`].
    /// The file is read in `spawn_blocking`, so this never blocks the calling thread; every
    /// failure is a miss.
    pub async fn get(&self, block: u64, len: u64) -> Option<Bytes> {
        let shared = self.cache.shared.clone();
        let (identity, name) = self.entry(block);
        let touch = if shared.ready.load(Ordering::Acquire) {
            shared.index().lookup(&name, entry::epoch_secs(SystemTime::now()))
        } else {
            None
        };
        let Some(touch) = touch else {
            shared.stats.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let reader = shared.clone();
        let read = tokio::task::spawn_blocking(move || {
            let file = entry::file_name(&name);
            let got = entry::read(&reader.dir, &file, &identity, len, touch);
            match &got {
                Err(ReadFail::Bad(why)) => {
                    tracing::warn!(path = %reader.path.display(), file, why, "disk cache: damaged file dropped");
                    reader.stats.bad.fetch_add(1, Ordering::Relaxed);
                    // Deleted before it leaves the index: counted until then, never under.
                    if entry::remove(&reader.dir, &file).is_ok() {
                        reader.index().remove(&name);
                    }
                }
                Err(ReadFail::Missing) => reader.index().remove(&name),
                Err(ReadFail::Io(e)) => {
                    tracing::debug!(path = %reader.path.display(), file, error = %e, "disk cache: read failed");
                }
                Ok(_) => {}
            }
            got.ok()
        });
        let data = match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(data)) => data,
            Ok(Err(_)) => None,
            Err(_) => {
                tracing::debug!(path = %shared.path.display(), "disk cache: read timed out, going to the network");
                None
            }
        };
        let counter = if data.is_some() {
            &shared.stats.hits
        } else {
            &shared.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        data
    }

    /// Store `data` as block `block` (a whole block, as fetched), in the background; dropped
    /// when the writer is behind. Never blocks.
    pub fn put(&self, block: u64, data: Bytes) {
        let shared = &self.cache.shared;
        let (identity, name) = self.entry(block);
        if shared.ready.load(Ordering::Acquire) && shared.index().contains(&name) {
            return;
        }
        shared.queued.fetch_add(1, Ordering::AcqRel);
        if self.cache.queue.try_send(Job { name, identity, data }).is_err() {
            shared.queued.fetch_sub(1, Ordering::AcqRel);
            shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The writer thread: rebuild the index, then store queued blocks until the cache is dropped.
fn run_writer(shared: &Shared, rx: &Receiver<Job>) {
    let started = std::time::Instant::now();
    match scan(shared) {
        Ok(n) => tracing::info!(
            path = %shared.path.display(),
            files = n,
            bytes = shared.index().used(),
            ms = started.elapsed().as_millis(),
            "disk cache ready"
        ),
        Err(e) => tracing::warn!(path = %shared.path.display(), error = %e, "disk cache: scan failed; starting empty"),
    }
    shared.ready.store(true, Ordering::Release);
    while let Ok(job) = rx.recv() {
        store(shared, &job);
        shared.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Store one block: reserve its bytes (evicting), write it, publish it.
fn store(shared: &Shared, job: &Job) {
    let len = entry::file_len(&job.identity, u64::try_from(job.data.len()).unwrap_or(u64::MAX));
    let charged = index::charge(len);
    let used = shared.index().used();
    let limit = shared.limit(used);
    let reserved = shared.index().reserve(job.name, charged, limit);
    let victims = match reserved {
        Ok(v) => v,
        Err(index::Refused::Present) => return,
        Err(index::Refused::TooBig) => {
            shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    shared.evict(&victims);
    let file = entry::file_name(&job.name);
    match entry::write(&shared.dir, &file, &job.identity, &job.data) {
        Ok(()) => {
            shared.index().commit(job.name, entry::epoch_secs(SystemTime::now()));
            shared.stats.written.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            shared.index().abort(&job.name);
            shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(path = %shared.path.display(), error = %e, "disk cache: write failed, block not cached");
        }
    }
}

/// Rebuild the index from the directory: our files by name, size and mtime; leftovers of
/// interrupted writes deleted; files over the limit deleted oldest first. Returns the count.
fn scan(shared: &Shared) -> io::Result<usize> {
    let uid = rustix::process::geteuid().as_raw();
    let mut found = Vec::new();
    for e in read_dir(&shared.dir)? {
        let Ok(e) = e else { continue };
        let Ok(file) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if file.starts_with(entry::TEMP_PREFIX) {
            let _ = entry::remove(&shared.dir, &file);
            continue;
        }
        let Some(name) = entry::parse_name(&file) else { continue };
        let Ok(st) = rfs::statat(&shared.dir, file.as_str(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let meta_ok = rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::RegularFile && st.st_uid == uid;
        if !meta_ok {
            // Not a file we wrote; served never (reads check the same), left alone.
            continue;
        }
        let len = u64::try_from(st.st_size).unwrap_or(0);
        let mtime = u64::try_from(st.st_mtime).unwrap_or(0);
        found.push((name, index::charge(len), mtime));
    }
    let n = found.len();
    let limit = shared.limit(0);
    let victims = shared.index().load(found, limit);
    shared.evict(&victims);
    Ok(n - victims.len())
}

/// Whether `dir` has an entry `name` (any type).
fn has_entry(dir: &OwnedFd, name: &str) -> io::Result<bool> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(e) if e == rustix::io::Errno::NOENT => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn is_empty(dir: &OwnedFd) -> io::Result<bool> {
    Ok(read_dir(dir)?.next().is_none())
}

/// The entries of `dir` (without `.` and `..`), through a descriptor of its own so the
/// caller's offset is untouched.
fn read_dir(dir: &OwnedFd) -> io::Result<impl Iterator<Item = io::Result<rfs::DirEntry>>> {
    let fd = rfs::openat(
        dir,
        ".",
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let d = rfs::Dir::read_from(&fd)?;
    Ok(d.filter_map(|e| match e {
        Ok(e) if matches!(e.file_name().to_bytes(), b"." | b"..") => None,
        Ok(e) => Some(Ok(e)),
        Err(e) => Some(Err(e.into())),
    }))
}
