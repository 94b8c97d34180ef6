//! The filesystem: one `async fn` per FUSE operation, returning plain structs.
//!
//! Nothing here knows about `fuser`; `crate::fuse` converts arguments, spawns these futures
//! and replies. Every error leaves through [`error::Error`], whose `From` impls are the only
//! errno mapping in the crate. Operations never hold a std lock across an `.await`.
//!
//! Layout: this file holds the shared state, lookup/getattr, open/read and statfs;
//! `dir.rs` listings and namespace changes; `write.rs` the write side; `posix.rs` modes,
//! owners, symlinks and special files.

pub mod attr;
mod copy;
pub mod dir;
pub mod error;
pub mod handles;
mod limits;
pub mod posix;
mod relist;
pub mod write;
pub mod writeback;
pub mod xattr;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tracing::debug;

use crate::backend::{BackendErrorKind, ListParams, ObjectMeta};
use crate::cache::disk::DiskCache;
use crate::cache::{BlockCache, ObjectId};
use crate::namespace::name::{child_key, dir_prefix, validate_name, NameError};
use crate::namespace::{Inode, InodeTable, Kind, Known, Stat, TenantId, ROOT_INO};
use crate::read::{ObjectReader, ReadConfig};
use crate::tenant::{Applied, Tenant, TenantChange, TenantTable};
use crate::upload::writeback::{WriteBack, WriteBackConfig};
use crate::upload::Uploader;

pub use attr::{Attr, DirEntry, DirReplier, Entry, FileType, NewNode, Opened, SetAttr, StatFs};
pub use error::{Error, Result};
use handles::{Handle, HandleTable, WriteState};

/// Settings of the filesystem layer (translated from the user config by `app`).
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// How long the kernel may cache attributes and names.
    pub attr_ttl: Duration,
    /// How long a HEAD/LIST result is trusted before asking the backend again.
    pub metadata_ttl: Duration,
    /// Owner of the mount root.
    pub root_owner: (u32, u32),
    /// Read-ahead settings for every open file.
    pub read: ReadConfig,
    /// Largest directory (in objects) that `rename` will move; above it, `EXDEV`.
    pub max_rename_entries: usize,
    /// How long a name proven absent is trusted, by the kernel and by the inode table (0: not
    /// at all).
    pub negative_ttl: Duration,
    /// The write-back queue (used by tenants with `write_back = true`).
    pub write_back: WriteBackConfig,
}

impl Default for FsConfig {
    fn default() -> Self {
        Self {
            attr_ttl: Duration::from_secs(1),
            metadata_ttl: Duration::from_secs(1),
            root_owner: (0, 0),
            read: ReadConfig::default(),
            max_rename_entries: 1000,
            negative_ttl: Duration::from_secs(1),
            write_back: WriteBackConfig::default(),
        }
    }
}

/// The filesystem of one mount.
#[derive(Debug)]
pub struct Filesystem {
    tenants: TenantTable,
    // Shared with stat-ahead tasks, which outlive the lookup that started them.
    inodes: Arc<InodeTable>,
    handles: HandleTable,
    cache: Arc<BlockCache>,
    /// The disk tier below `cache`, if configured.
    disk: Option<Arc<DiskCache>>,
    uploader: Arc<Uploader>,
    /// Inode → shared write state of the files open for writing. Lock held only for map access.
    writers: Mutex<HashMap<u64, Arc<WriteState>>>,
    /// Closed files of write-back tenants not uploaded yet.
    writeback: Arc<WriteBack>,
    stat_ahead: Arc<StatAhead>,
    /// Directories being listed again to renew their completeness proof (`relist.rs`).
    relisting: Arc<relist::Relisting>,
    config: FsConfig,
}

/// HEADs of listed files issued ahead of `ls -l`'s lookups (see [`Filesystem::stat_ahead`]).
#[derive(Debug)]
struct StatAhead {
    /// (parent inode, name) being fetched, and a channel that turns true when it is done, so a
    /// lookup of that entry waits for it instead of sending a second HEAD.
    inflight: Mutex<HashMap<(u64, String), tokio::sync::watch::Receiver<bool>>>,
    /// HEADs in flight, each tenant holding at most half: a lookup waits for the stat-ahead
    /// of its own name, which must never wait behind another tenant's hung HEADs.
    limit: crate::fair::Shares<TenantId>,
}

/// Siblings after the entry being looked up that stat-ahead keeps resolved or in flight: twice
/// the concurrency, so the HEADs in flight never wait for the lookups to catch up.
const STAT_AHEAD_WINDOW: usize = 2 * STAT_AHEAD_CONCURRENCY as usize;
/// HEADs in flight for stat-ahead, per mount (each tenant holding at most its share). A walk of N listed files then costs about
/// N / 128 round trips (10,000 entries: ~80, 1.6 s at 20 ms) instead of N; 128 HEADs per
/// round trip stays within what S3 serves per prefix (5,500 requests/s) up to ~23 ms RTT, and
/// beyond that the retry layer's backoff on SlowDown paces it.
const STAT_AHEAD_CONCURRENCY: u32 = 128;

impl Filesystem {
    /// Build a filesystem over `tenants`.
    pub fn new(tenants: TenantTable, cache: Arc<BlockCache>, uploader: Arc<Uploader>, config: FsConfig) -> Self {
        Self {
            tenants,
            inodes: Arc::new(InodeTable::with_negative_ttl(config.negative_ttl)),
            handles: HandleTable::default(),
            cache,
            disk: None,
            writeback: WriteBack::new(uploader.clone(), config.write_back.clone()),
            uploader,
            writers: Mutex::new(HashMap::new()),
            stat_ahead: Arc::new(StatAhead {
                inflight: Mutex::new(HashMap::new()),
                limit: crate::fair::Shares::new(STAT_AHEAD_CONCURRENCY, crate::fair::DEFAULT_SHARE_PERCENT)
                    .idle_first(),
            }),
            relisting: Arc::default(),
            config,
        }
    }

    /// Keep blocks read also in `disk` (see [`crate::cache::disk`]).
    pub fn with_disk_cache(mut self, disk: Option<Arc<DiskCache>>) -> Self {
        self.disk = disk;
        self
    }

    /// The disk cache, if the mount has one.
    pub fn disk_cache(&self) -> Option<&Arc<DiskCache>> {
        self.disk.as_ref()
    }

    /// The tenants of this mount.
    pub fn tenants(&self) -> &TenantTable {
        &self.tenants
    }

    /// Apply a reload's tenant changes as one new generation of the tenant table. The
    /// directories of removed and re-pointed tenants leave the root of the inode table, so
    /// their next lookup binds the current tenant; the caller tells the kernel to forget the
    /// names in [`Applied::root_entries_changed`].
    pub fn apply_tenants(&self, changes: Vec<TenantChange>) -> Applied {
        let applied = self.tenants.apply(changes);
        for name in applied.removed.iter().chain(&applied.repointed) {
            self.inodes.detach_tenant(name);
        }
        applied
    }

    /// The tenant inode `ino` belongs to; `None` for the root (answered from memory) and for
    /// an inode we do not know (its request fails without touching a backend).
    pub(crate) fn tenant_of_ino(&self, ino: u64) -> Option<TenantId> {
        self.inodes.tenant(ino)
    }

    /// Number of inodes held (tests: memory is released on forget).
    #[cfg(any(test, feature = "test-support"))]
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// How long a failed lookup may be cached by the kernel.
    pub fn negative_ttl(&self) -> Duration {
        self.config.negative_ttl
    }

    /// The live tenant of `inode`: resolved once per request, so the request works against
    /// one generation of the table throughout. An inode of a tenant that a reload removed or
    /// re-pointed is ENOENT: new lookups and opens never reach the old location.
    fn tenant_of(&self, inode: &Inode) -> Result<Arc<Tenant>> {
        let id = inode
            .tenant
            .ok_or_else(|| Error::new(libc::EPERM, "the mount root holds only tenants"))?;
        self.tenants
            .get(id)
            .ok_or_else(|| Error::not_found("tenant removed or moved by a reload"))
    }

    fn writer(&self, ino: u64) -> Option<Arc<WriteState>> {
        self.writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ino)
            .cloned()
    }

    fn attr(&self, inode: &Inode) -> Attr {
        // `get_any`: an open file of a removed tenant keeps its owner and mode until closed.
        let tenant = inode.tenant.and_then(|id| self.tenants.get_any(id));
        let mut a = attr::attr_of(inode, tenant.as_deref(), self.config.root_owner);
        if let Some(w) = self.writer(inode.ino) {
            // While a file is being written its size is the writer's, not the bucket's.
            if let Ok(s) = w.session.try_lock() {
                a.size = s.size();
            }
        }
        a
    }

    fn entry(&self, inode: &Inode) -> Entry {
        Entry {
            attr: self.attr(inode),
            ttl: self.config.attr_ttl,
        }
    }

    /// Whether the cached stat can be used without a HEAD. A file whose mtime came from a
    /// listing is not: its stored mtime (if any) is only in the HEAD; nor is a directory
    /// found by a listing on a tenant with POSIX metadata (its mode is on its marker).
    fn fresh(&self, inode: &Inode) -> bool {
        inode.validated.elapsed() < self.config.metadata_ttl && inode.stat.mtime_known
    }

    /// Look up `name` in directory `parent`; adds one kernel reference on success.
    pub async fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry> {
        let parent = self.inodes.get(parent)?;
        // A name over NAME_MAX is ENAMETOOLONG, as on local filesystems (`stat` and
        // `open(O_CREAT)` report it instead of a misleading ENOENT); any other name that can
        // never be a key simply does not exist.
        let name = match validate_name(name) {
            Ok(name) => name,
            Err(e @ NameError::TooLong) => return Err(e.into()),
            Err(NameError::Invalid) => return Err(Error::not_found("invalid name")),
        };
        if parent.kind == Kind::Root {
            let t = self.tenants.by_name(name).ok_or_else(|| Error::not_found(name))?;
            let inode = self
                .inodes
                .upsert_child(ROOT_INO, name, Some(t.id), Kind::TenantRoot, Stat::dir(), 1)?;
            return Ok(self.entry(&inode));
        }
        if !parent.kind.is_dir() {
            return Err(Error::expected(libc::ENOTDIR, "not a directory"));
        }
        // A closed file still queued for write-back is what this mount shows, whatever the
        // bucket holds (unless it is open for writing again: then the writer's state is).
        if let Some(entry) = self.pending_entry(&parent, name)? {
            return Ok(entry);
        }
        // If stat-ahead is fetching this entry, its answer is the one to use (no second HEAD).
        self.wait_stat_ahead(parent.ino, name).await;
        let cached = match self.inodes.known(parent.ino, name) {
            Known::Child(child) => Some(child),
            // Proven absent within negative_ttl (see `namespace::absent`): an exclusive create
            // asks again right after the lookup that found nothing.
            Known::Absent(proven) => {
                if let Ok(tenant) = self.tenant_of(&parent) {
                    self.renew_complete_if_due(&parent, proven, &tenant);
                }
                return Err(Error::not_found(name));
            }
            Known::Unknown => None,
        };
        if let Some(child) = &cached {
            if self.fresh(child) || self.writer(child.ino).is_some() {
                if child.kind == Kind::File {
                    // Served by stat-ahead (or known anyway): keep the HEADs ahead of the
                    // walk flowing, so it never stalls at the end of a window.
                    if let Ok(tenant) = self.tenant_of(&parent) {
                        self.stat_ahead(&parent, name, &tenant);
                    }
                }
                let inode =
                    self.inodes
                        .upsert_child(parent.ino, name, child.tenant, child.kind, child.stat.clone(), 1)?;
                return Ok(self.entry(&inode));
            }
            if child.kind == Kind::File {
                // Known as a file (listed, or looked up before): a HEAD says whether it still is
                // and has the stored mtime; `resolve`'s listing is only needed when it is gone.
                // Not bounded by the metadata TTL: `ls -l` of a large directory reaches its
                // last entries long after the listing, and a LIST per entry is quadratic on
                // servers that scan the bucket to list. An endpoint that is down or hung is
                // reported at once (asking it twice more would double the wait); anything else
                // odd (gone, maybe now a directory): resolve as usual.
                let tenant = self.tenant_of(&parent)?;
                self.stat_ahead(&parent, name, &tenant);
                match tenant.backend.head(&child_key(&parent.key, name)).await {
                    Ok(meta) => {
                        let inode =
                            self.inodes
                                .upsert_child(parent.ino, name, child.tenant, Kind::File, stat_of(&meta), 1)?;
                        return Ok(self.entry(&inode));
                    }
                    Err(e) if matches!(e.kind(), BackendErrorKind::Timeout | BackendErrorKind::Unreachable) => {
                        return Err(e.into());
                    }
                    Err(_) => {}
                }
            }
        }
        let tenant = self.tenant_of(&parent)?;
        let asked = Instant::now();
        let (kind, stat) = match self.resolve(&tenant, &child_key(&parent.key, name)).await {
            Ok(found) => found,
            Err(e) if e.errno() == libc::ENOENT => {
                self.inodes.note_absent(parent.ino, name, asked);
                return Err(e);
            }
            // A directory we know (e.g. just created, still empty) stays a directory when the
            // backend cannot answer for it: some servers fail HEAD on an empty prefix, and a
            // transient failure should not make a directory vanish from under a running `cp`.
            Err(e) if e.errno() != libc::ENOENT && cached.as_ref().is_some_and(|c| c.kind == Kind::Dir) => {
                debug!(name, error = %e, "keeping known directory");
                (Kind::Dir, Stat::dir())
            }
            Err(e) => return Err(e),
        };
        let inode = self
            .inodes
            .upsert_child(parent.ino, name, Some(tenant.id), kind, stat, 1)?;
        Ok(self.entry(&inode))
    }

    /// `ls -l` of a listed directory looks its entries up one by one, and each needs a HEAD
    /// for its stored mtime: a round trip per file, in series. When a file is looked up,
    /// HEAD those of the next [`STAT_AHEAD_WINDOW`] siblings still missing their mtime in the
    /// background ([`STAT_AHEAD_CONCURRENCY`] at once), so the lookups that follow find them
    /// resolved. Started only by lookups, never by a listing alone: a plain `ls` costs no
    /// HEADs.
    fn stat_ahead(&self, parent: &Inode, name: &str, tenant: &Arc<Tenant>) {
        let names = self
            .inodes
            .files_missing_mtime_after(parent.ino, name, STAT_AHEAD_WINDOW);
        let mut inflight = self.stat_ahead.inflight.lock().unwrap_or_else(|e| e.into_inner());
        for sibling in names {
            let slot = (parent.ino, sibling.clone());
            if inflight.contains_key(&slot) {
                continue;
            }
            let (done, rx) = tokio::sync::watch::channel(false);
            inflight.insert(slot, rx);
            let (inodes, ahead, tenant) = (self.inodes.clone(), self.stat_ahead.clone(), tenant.clone());
            let (parent_ino, key) = (parent.ino, child_key(&parent.key, &sibling));
            tokio::spawn(async move {
                let _permit = ahead.limit.acquire(tenant.id, 1).await;
                // A failure is not an error here: the lookup, if it comes, asks again.
                if let Ok(meta) = tenant.backend.head(&key).await {
                    let _ = inodes.upsert_child(parent_ino, &sibling, Some(tenant.id), Kind::File, stat_of(&meta), 0);
                }
                ahead
                    .inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(parent_ino, sibling));
                done.send_replace(true);
            });
        }
    }

    /// Wait for the stat-ahead HEAD of `name` in `parent`, if one is in flight.
    async fn wait_stat_ahead(&self, parent: u64, name: &str) {
        let rx = {
            let inflight = self.stat_ahead.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if inflight.is_empty() {
                return;
            }
            inflight.get(&(parent, name.to_owned())).cloned()
        };
        if let Some(mut rx) = rx {
            // An error means the task ended without a result: the lookup HEADs itself.
            let _ = rx.wait_for(|done| *done).await;
        }
    }

    /// Ask the backend what `key` is: a directory (objects below `key/`, or a `key/`
    /// marker) wins over an object of the same name, as in listings.
    async fn resolve(&self, tenant: &Tenant, key: &str) -> Result<(Kind, Stat)> {
        let list_params = ListParams::new(dir_prefix(key), true).with_max_keys(1);
        let head = tenant.backend.head(key);
        let list = tenant.backend.list(&list_params);
        tokio::pin!(head, list);
        // Both requests go out at once; a listing that shows a directory settles it without
        // waiting for the HEAD (which some servers answer slowly or with 5xx for prefixes).
        let mut head_done = None;
        let listed = tokio::select! {
            l = &mut list => l,
            h = &mut head => {
                head_done = Some(h);
                list.await
            }
        };
        match listed {
            Ok(page) if !page.objects.is_empty() || !page.common_prefixes.is_empty() => {
                let marker = dir_prefix(key);
                if tenant.posix_metadata && page.objects.first().is_some_and(|o| o.key == marker) {
                    return Ok((Kind::Dir, self.marker_stat(tenant, &marker).await));
                }
                return Ok((Kind::Dir, Stat::dir()));
            }
            Ok(_) => {}
            Err(e) if e.kind() == BackendErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let head = match head_done {
            Some(h) => h,
            None => head.await,
        };
        let meta = head?;
        Ok((Kind::File, stat_of(&meta)))
    }

    /// Attributes of `ino`, refreshed from the backend when stale.
    pub async fn getattr(&self, ino: u64) -> Result<Entry> {
        let inode = self.inodes.get(ino)?;
        if inode.kind != Kind::File || self.fresh(&inode) || self.writer(ino).is_some() {
            return Ok(self.entry(&inode));
        }
        if let Some(stat) = self.pending_stat_of(&inode) {
            self.inodes.set_stat(ino, stat);
            return Ok(self.entry(&self.inodes.get(ino)?));
        }
        // An open file of a removed or moved tenant still answers fstat (from its old storage).
        let tenant = match self.tenant_of(&inode) {
            Ok(t) => t,
            Err(e) => match inode.tenant.and_then(|id| self.tenants.get_any(id)) {
                Some(t) if self.inodes.is_open(ino) => t,
                _ => return Err(e),
            },
        };
        let meta = tenant.backend.head(&inode.key).await?;
        self.inodes.set_stat(ino, stat_of(&meta));
        Ok(self.entry(&self.inodes.get(ino)?))
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.forget(ino, n);
    }

    /// Open a file. Writes go to an upload session; reads pin the object's current version.
    pub async fn open(&self, ino: u64, flags: i32, pid: u32) -> Result<Opened> {
        let inode = self.inodes.get(ino)?;
        if inode.kind.is_dir() {
            return Err(Error::expected(libc::EISDIR, "is a directory"));
        }
        let tenant = self.tenant_of(&inode)?;
        let acc = flags & libc::O_ACCMODE;
        if acc == libc::O_WRONLY || acc == libc::O_RDWR {
            return self
                .open_for_write(&inode, &tenant, flags & libc::O_TRUNC != 0, pid)
                .await;
        }
        if let Some(w) = self.writer(ino) {
            // Reading a file that is being written: serve what was written.
            w.handles.fetch_add(1, Ordering::Relaxed);
            self.inodes.open(ino);
            let fh = self.handles.insert(Handle::Write(w, thread_group(pid)));
            return Ok(Opened { fh, keep_cache: false });
        }
        if !self.writeback.is_idle() {
            // Closed but not uploaded yet: read the staged bytes.
            if let Some(file) = self.writeback.open_pending(writeback::scope(&tenant), &inode.key) {
                self.inodes.open(ino);
                let fh = self.handles.insert(Handle::Pending { ino, file, tenant });
                return Ok(Opened { fh, keep_cache: false });
            }
        }
        let (meta, unchanged) = match self.confirmed_version(&inode) {
            // The lookup that led here HEADed the object within `metadata_ttl`: asking again
            // would cost a round trip before the first byte. The version is still pinned
            // (every GET carries its ETag), so a replacement since shows as ESTALE, never as
            // mixed bytes, as for a replacement just after an open that did ask.
            Some(meta) => (meta, true),
            None => {
                let meta = tenant.backend.head(&inode.key).await?;
                let unchanged = meta.etag.is_some() && meta.etag == inode.stat.etag && meta.size == inode.stat.size;
                self.inodes.set_stat(ino, stat_of(&meta));
                (meta, unchanged)
            }
        };
        // Pages of the version pinned by the previous open may be kept; the stat's ETag is no
        // proof, since a lookup may have refreshed it after the object was replaced.
        let keep_cache = self.inodes.pin_pages(ino, meta.etag.as_ref()) && unchanged;
        let id = if tenant.backend.capabilities().conditional_get {
            ObjectId::new(tenant.id, &meta)
        } else {
            // No If-Match on this store: the version read is pinned by size and modification
            // time instead (as seen by the HEAD above; each GET's length is checked), a weaker
            // guarantee described in docs/backends.md.
            let mut unpinned = meta.clone();
            unpinned.etag = None;
            unpinned.last_modified = unpinned.last_modified.or(unpinned.mtime);
            ObjectId::new(tenant.id, &unpinned)
        };
        let config = ReadConfig {
            // Pages of an unchanged version are kept by the next open (pinned above), so a
            // re-read need not come back through the block cache.
            release_passed: self.config.read.release_passed && unchanged,
            ..self.config.read.clone()
        };
        // The disk key space is the tenant's name and location: stable across mounts, and
        // another for a tenant re-pointed elsewhere.
        let disk = self
            .disk
            .as_ref()
            .map(|d| d.object(&tenant.name, &tenant.backend.describe(), &id, self.cache.block_size()));
        let reader = ObjectReader::with_disk(
            tenant.backend.clone(),
            id,
            self.cache.clone(),
            disk,
            config,
            tenant.metrics.clone(),
        );
        self.inodes.open(ino);
        let fh = self.handles.insert(Handle::Read { ino, reader, tenant });
        debug!(ino, fh, key = ?inode.key, size = meta.size, "opened for read");
        Ok(Opened { fh, keep_cache })
    }

    /// The object version of `inode` as a HEAD (or this mount's own commit) confirmed it
    /// within `metadata_ttl`, with an ETag to pin: what an open for reading may use without
    /// asking again. `None` when only a listing vouches for it, or it is stale.
    fn confirmed_version(&self, inode: &Inode) -> Option<ObjectMeta> {
        let etag = inode.stat.etag.clone()?;
        if !self.fresh(inode) {
            return None;
        }
        let mut meta = ObjectMeta::new(inode.key.clone(), inode.stat.size, inode.stat.last_modified, Some(etag));
        meta.mtime = Some(inode.stat.mtime);
        Some(meta)
    }

    /// Read `size` bytes at `offset` from handle `fh`.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        match self.read_now(fh, offset, size) {
            ReadNow::Done(r) => r,
            ReadNow::Wait(fut) => fut.await,
        }
    }

    /// [`Filesystem::read`] answered on the spot when it needs no waiting (every byte already
    /// in memory, or an error), else as a future to run. Never blocks: it only takes short
    /// in-memory locks, so the FUSE loop may call it directly and skip a task hop for cached
    /// reads. Must run within the tokio runtime's context (it may start read-ahead).
    pub fn read_now(&self, fh: u64, offset: u64, size: u32) -> ReadNow {
        let Some(h) = self.handles.get(fh) else {
            return ReadNow::Done(Err(Error::new(libc::EBADF, format!("unknown handle {fh}"))));
        };
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        let served = |m: &Arc<crate::metrics::TenantMetrics>, data: &Bytes| {
            crate::metrics::TenantMetrics::add(&m.bytes_served, data.len());
        };
        match &*h {
            Handle::Read { reader, tenant, .. } => match reader.read_now(offset, len) {
                crate::read::ReadNow::Ready(data) => {
                    tenant.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
                    served(&tenant.metrics, &data);
                    ReadNow::Done(Ok(data))
                }
                crate::read::ReadNow::Pending(p) => {
                    tenant.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
                    let m = tenant.metrics.clone();
                    ReadNow::Wait(Box::pin(async move {
                        let data = p.finish().await?;
                        served(&m, &data);
                        Ok(data)
                    }))
                }
            },
            Handle::Write(w, _) => {
                let w = w.clone();
                ReadNow::Wait(Box::pin(async move {
                    let data = w.session.lock().await.read(offset, len).await?;
                    served(&w.tenant.metrics, &data);
                    Ok(data)
                }))
            }
            Handle::Pending { file, tenant, .. } => {
                let (file, m) = (file.clone(), tenant.metrics.clone());
                ReadNow::Wait(Box::pin(async move {
                    let data = file.read(offset, len).await?;
                    served(&m, &data);
                    Ok(data)
                }))
            }
            Handle::Dir(_) => ReadNow::Done(Err(Error::new(libc::EISDIR, "read on a directory handle"))),
        }
    }

    /// Filesystem statistics: object stores have no fixed capacity, so report a large,
    /// stable figure that never makes tools refuse to write.
    pub fn statfs(&self) -> StatFs {
        const BLOCKS: u64 = 1 << 40;
        StatFs {
            blocks: BLOCKS,
            bfree: BLOCKS,
            bavail: BLOCKS,
            files: 1 << 32,
            ffree: 1 << 32,
            bsize: attr::BLKSIZE,
            namelen: crate::namespace::name::NAME_MAX as u32,
            frsize: attr::BLKSIZE,
        }
    }
}

/// The outcome of [`Filesystem::read_now`].
pub enum ReadNow {
    /// Answered without waiting.
    Done(Result<Bytes>),
    /// To be awaited (off the FUSE loop).
    Wait(std::pin::Pin<Box<dyn std::future::Future<Output = Result<Bytes>> + Send>>),
}

impl std::fmt::Debug for ReadNow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Done(r) => f.debug_tuple("Done").field(&r.as_ref().map(Bytes::len)).finish(),
            Self::Wait(_) => f.write_str("Wait(..)"),
        }
    }
}

/// The thread group (process) of a request's thread id, as `close()` in any thread of a
/// process counts for that process. Falls back to the id itself if /proc cannot tell.
fn thread_group(pid: u32) -> u32 {
    if pid == 0 {
        return 0;
    }
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:").and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(pid)
}

/// Attributes of an object from a HEAD: the stored mtime, else Last-Modified, and the stored
/// POSIX attributes.
fn stat_of(meta: &ObjectMeta) -> Stat {
    Stat {
        size: meta.size,
        mtime: meta.mtime.or(meta.last_modified).unwrap_or(SystemTime::UNIX_EPOCH),
        etag: meta.etag.clone(),
        mtime_known: true,
        last_modified: meta.last_modified,
        posix: Some(meta.posix),
    }
}

/// Attributes of an object from a listing, which (on S3) lacks the stored mtime and POSIX
/// attributes: unless the backend gave an mtime, it is Last-Modified and marked not known.
fn listed_stat_of(meta: &ObjectMeta) -> Stat {
    Stat {
        mtime_known: meta.mtime.is_some(),
        posix: None,
        ..stat_of(meta)
    }
}
