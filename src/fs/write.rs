//! The write side: create, open for writing, write, flush/fsync (commit), release, setattr.
//!
//! Durability policy: a `flush` (each `close()` by the opening process) or `fsync` after data
//! was written commits it, and returns only once the object is complete in the bucket, so an
//! upload failure is the caller's `close()`/`fsync()` error. A flush with nothing written since
//! open or the last commit publishes nothing: `cmd > file` makes the shell close the
//! descriptor it has just `dup2`ed onto stdout before `cmd` writes a byte, and committing then
//! would replace the old object with an empty one for the whole run (and for good, if the
//! mount dies meanwhile). A created or truncated file nobody wrote is committed at its last
//! release, so `touch f` and `: > f` still store the empty object, once. All descriptors of
//! one file share one upload session.
//!
//! On a tenant with write-back (`writeback.rs`) a flush or last release stages the file and
//! returns instead, and only `fsync` waits for the bucket.

use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tracing::{debug, warn};

use super::handles::{Handle, WriteState};
use super::{stat_of, Entry, Error, Filesystem, NewNode, Opened, Result, SetAttr};
use crate::backend::{BackendErrorKind, PutOptions};
use crate::namespace::name::{child_key, validate_name};
use crate::namespace::{Inode, Kind, Stat};
use crate::tenant::Tenant;
use crate::upload::BaseObject;

impl Filesystem {
    /// Create and open file `name` in `parent`. It becomes an object on the first flush,
    /// except with `O_EXCL` on a backend with conditional writes: then an empty object is
    /// created at once with `If-None-Match: *`, so of two mounts creating the name only one
    /// succeeds (the other gets `EEXIST`), as lock files need.
    pub async fn create(
        &self,
        parent: u64,
        name: &OsStr,
        flags: i32,
        pid: u32,
        new: NewNode,
    ) -> Result<(Entry, Opened)> {
        let dir = self.inodes.get(parent)?;
        if !matches!(dir.kind, Kind::TenantRoot | Kind::Dir) {
            return Err(Error::expected(
                libc::EPERM,
                "files can be created only inside a tenant",
            ));
        }
        let tenant = self.tenant_of(&dir)?;
        if tenant.read_only {
            return Err(Error::read_only(&tenant.name));
        }
        let name = validate_name(name)?;
        self.check_name(&tenant, name)?;
        if let Some(existing) = self.inodes.child(parent, name) {
            if flags & libc::O_EXCL != 0 {
                return Err(Error::expected(libc::EEXIST, "file exists"));
            }
            if existing.kind.is_dir() {
                return Err(Error::expected(libc::EISDIR, "is a directory"));
            }
        }
        let key = child_key(&dir.key, name);
        let mut stat = Stat::local(0, SystemTime::now(), None);
        if tenant.posix_metadata {
            stat = stat.with_posix(self.new_posix(&dir, libc::S_IFREG, new));
        }
        // With write-back the claim would cost the round trip write-back exists to avoid (cp
        // creates every file O_EXCL): O_EXCL is then decided by this mount's lookup alone.
        let claimed = if flags & libc::O_EXCL != 0 && tenant.exclusive_create && !tenant.write_back {
            let opts = PutOptions::default()
                .with_mtime(Some(stat.mtime))
                .with_posix(stat.posix.unwrap_or_default())
                .with_create_only(true);
            match tenant.backend.put_opts(&key, Bytes::new(), &opts).await {
                Ok(put) => {
                    stat.etag = put.etag;
                    true
                }
                Err(e) if e.kind() == BackendErrorKind::PreconditionFailed => {
                    return Err(Error::expected(libc::EEXIST, format!("{key} exists")));
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            false
        };
        let inode = self
            .inodes
            .upsert_child(parent, name, Some(tenant.id), Kind::File, stat, 1)?;
        let state = self.new_writer(&inode, &tenant, key, None);
        if claimed {
            // The (empty) object exists: only a write or a setattr needs a commit now.
            state.needs_commit.store(false, Ordering::Release);
        }
        let opened = self.attach_writer(&inode, state, pid);
        Ok((self.entry(&self.inodes.get(inode.ino)?), opened))
    }

    fn new_writer(
        &self,
        inode: &Inode,
        tenant: &Arc<Tenant>,
        key: String,
        base: Option<BaseObject>,
    ) -> Arc<WriteState> {
        let base_size = base.as_ref().map_or(0, |b| b.size);
        let mut session = self.uploader.start_for(&tenant.name, tenant.backend.clone(), key, base);
        if let Some(posix) = inode.stat.posix.filter(|_| tenant.posix_metadata) {
            // A data commit replaces the object's metadata: carry the mode and owner over.
            session.set_posix(posix, false);
        }
        Arc::new(WriteState {
            ino: inode.ino,
            tenant: tenant.clone(),
            session: tokio::sync::Mutex::new(session),
            // A new or truncated file must become an object even if nothing is written (at
            // the last release: see the module doc).
            needs_commit: AtomicBool::new(true),
            written: AtomicBool::new(false),
            unlinked: AtomicBool::new(false),
            handles: AtomicUsize::new(0),
            base_size,
            accounted: AtomicU64::new(inode.stat.size),
            refused: Default::default(),
        })
    }

    fn attach_writer(&self, inode: &Inode, state: Arc<WriteState>, pid: u32) -> Opened {
        state.handles.fetch_add(1, Ordering::AcqRel);
        self.writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(inode.ino, state.clone());
        self.inodes.open(inode.ino);
        let fh = self.handles.insert(Handle::Write(state, super::thread_group(pid)));
        Opened { fh, keep_cache: false }
    }

    pub(super) async fn open_for_write(
        &self,
        inode: &Inode,
        tenant: &Arc<Tenant>,
        truncate: bool,
        pid: u32,
    ) -> Result<Opened> {
        if tenant.read_only {
            return Err(Error::read_only(&tenant.name));
        }
        if let Some(w) = self.writer(inode.ino) {
            if truncate {
                w.session.lock().await.truncate(0).await?;
                w.needs_commit.store(true, Ordering::Release);
                self.account(&w, &inode.key, 0);
            }
            return Ok(self.attach_writer(inode, w, pid));
        }
        let base = if truncate {
            if tenant.posix_metadata && inode.stat.posix.is_none() {
                // Replacing the object must keep its mode and owner: learn them first.
                match tenant.backend.head(&inode.key).await {
                    Ok(meta) => self.inodes.set_stat(inode.ino, stat_of(&meta)),
                    Err(e) if e.kind() == BackendErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            None
        } else {
            // The base must be the file as this mount shows it: a closed version still queued
            // for write-back goes up first.
            self.settle(tenant, &inode.key).await?;
            let meta = tenant.backend.head(&inode.key).await?;
            self.inodes.set_stat(inode.ino, stat_of(&meta));
            Some(BaseObject {
                size: meta.size,
                etag: meta.etag,
            })
        };
        let inode = &self.inodes.get(inode.ino)?;
        let state = self.new_writer(inode, tenant, inode.key.clone(), base);
        if truncate {
            self.account(&state, &inode.key, 0);
        }
        // Opening an existing file without O_TRUNC changes nothing until the first write.
        state.needs_commit.store(truncate, Ordering::Release);
        Ok(self.attach_writer(inode, state, pid))
    }

    pub(super) fn write_state(&self, fh: u64) -> Result<Arc<WriteState>> {
        let h = self
            .handles
            .get(fh)
            .ok_or_else(|| Error::new(libc::EBADF, format!("unknown handle {fh}")))?;
        match &*h {
            Handle::Write(w, _) => Ok(w.clone()),
            Handle::Read { .. } | Handle::Pending { .. } | Handle::Dir(_) => {
                Err(Error::new(libc::EBADF, "handle not open for writing"))
            }
        }
    }

    /// Write `data` at `offset` through handle `fh`.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        self.write_bytes(fh, offset, Bytes::copy_from_slice(data)).await
    }

    /// [`Filesystem::write`] of bytes the caller already owns (no copy).
    pub async fn write_bytes(&self, fh: u64, offset: u64, data: Bytes) -> Result<u32> {
        let w = self.write_state(fh)?;
        let mut s = w.session.lock().await;
        let len = data.len();
        let end = offset.saturating_add(len as u64).max(s.size());
        if let Err(e) = self.admit_size(&w, s.key(), end) {
            return Err(self.refuse(&w, &mut s, e).await);
        }
        s.write_bytes(offset, data).await?;
        w.mark_written();
        let stat = Stat::local(s.size(), SystemTime::now(), None);
        drop(s);
        self.inodes.set_stat(w.ino, stat);
        u32::try_from(len).map_err(|_| Error::new(libc::EINVAL, "write larger than 4 GiB"))
    }

    /// [`Filesystem::write`] on the spot when the handle's session is free and the bytes go
    /// straight into the buffer of the part being filled (see `Session::try_write_now`);
    /// `None` when the write has to go through [`Filesystem::write`].
    pub fn write_now(&self, fh: u64, offset: u64, data: &[u8]) -> Option<Result<u32>> {
        let w = match self.write_state(fh) {
            Ok(w) => w,
            Err(e) => return Some(Err(e)),
        };
        let mut s = w.session.try_lock().ok()?;
        // Size limits are checked (and a refusal aborts the upload) on the slow path.
        if w.tenant.policy.rules.limits_size() {
            return None;
        }
        if !s.try_write_now(offset, data) {
            return None;
        }
        w.mark_written();
        let stat = Stat::local(s.size(), SystemTime::now(), None);
        drop(s);
        self.inodes.set_stat(w.ino, stat);
        Some(u32::try_from(data.len()).map_err(|_| Error::new(libc::EINVAL, "write larger than 4 GiB")))
    }

    /// Commit the file behind `fh` if data was written since open or the last commit (called
    /// on every `close()`).
    ///
    /// Only a close by the process that opened the handle commits. A forked child that
    /// inherited the descriptor closes it too (at exit, or at exec for close-on-exec
    /// descriptors); committing then would publish a half-written file behind the writer's
    /// back. Such closes are no-ops; the writer's own close, fsync or the last release commits.
    pub async fn flush(&self, fh: u64, pid: u32) -> Result<()> {
        let h = self
            .handles
            .get(fh)
            .ok_or_else(|| Error::new(libc::EBADF, format!("unknown handle {fh}")))?;
        match &*h {
            Handle::Write(w, opener) => {
                let caller = super::thread_group(pid);
                if *opener == 0 || caller == 0 || *opener == caller {
                    self.commit(w, Commit::IfWritten).await
                } else {
                    Ok(())
                }
            }
            Handle::Read { .. } | Handle::Pending { .. } | Handle::Dir(_) => Ok(()),
        }
    }

    /// Commit what was written, whoever asks: data is durable once it is in the bucket. With
    /// nothing written since open or the last commit there is nothing new to make durable,
    /// except a version a close handed to write-back: fsync waits for its upload.
    pub async fn fsync(&self, fh: u64) -> Result<()> {
        let h = self
            .handles
            .get(fh)
            .ok_or_else(|| Error::new(libc::EBADF, format!("unknown handle {fh}")))?;
        match &*h {
            Handle::Write(w, _) => self.commit(w, Commit::Durable).await,
            Handle::Read { .. } | Handle::Pending { .. } | Handle::Dir(_) => Ok(()),
        }
    }

    async fn commit(&self, w: &WriteState, when: Commit) -> Result<()> {
        if w.unlinked.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut s = w.session.lock().await;
        if let Some(e) = w.refused_error() {
            return Err(e.into());
        }
        // Both flags change only under the session lock, so this pair of reads is consistent.
        if when != Commit::IfPending && !w.written.load(Ordering::Acquire) {
            return self.settle_if(when, &w.tenant, s.key()).await;
        }
        let written = w.written.swap(false, Ordering::AcqRel);
        if !w.needs_commit.swap(false, Ordering::AcqRel) {
            return self.settle_if(when, &w.tenant, s.key()).await;
        }
        if self.hand_off(w, &mut s).await {
            self.note_handed_off(w, &s);
            debug!(ino = w.ino, tenant = %w.tenant.name, size = s.size(), "staged for write-back");
            let key = s.key().to_owned();
            drop(s);
            return self.settle_if(when, &w.tenant, &key).await;
        }
        // An older version still queued for write-back must reach the bucket first, or it
        // would replace this one there.
        if let Err(e) = self.settle(&w.tenant, s.key()).await {
            w.needs_commit.store(true, Ordering::Release);
            w.written.store(written, Ordering::Release);
            return Err(e);
        }
        match s.commit().await {
            Ok(put) => {
                let mtime = s.mtime().unwrap_or_else(SystemTime::now);
                let stat = Stat::local(s.size(), mtime, put.etag);
                self.inodes.set_stat(w.ino, stat);
                debug!(ino = w.ino, tenant = %w.tenant.name, size = s.size(), "committed");
                Ok(())
            }
            Err(e) => {
                w.needs_commit.store(true, Ordering::Release);
                w.written.store(written, Ordering::Release);
                Err(e.into())
            }
        }
    }

    /// Close handle `fh`. The last handle of a file commits anything left (errors can only be
    /// logged here: `close()` already returned) or, if the file was unlinked, discards it.
    pub async fn release(&self, fh: u64) -> Result<()> {
        let Some(h) = self.handles.remove(fh) else {
            return Ok(());
        };
        let ino = match &*h {
            Handle::Read { ino, .. } | Handle::Pending { ino, .. } => *ino,
            Handle::Write(w, _) => {
                if w.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.finish_writer(w).await;
                }
                w.ino
            }
            Handle::Dir(_) => return Ok(()),
        };
        self.inodes.close(ino);
        Ok(())
    }

    /// The last handle of `w` is closed: store what is pending, then forget the writer.
    ///
    /// The writer stays findable until its final commit is done: the kernel sends the release
    /// after `close()` has returned, and a path operation that follows the close (rsync's
    /// `utimensat` and `rename` of the empty file it has just closed) must wait for that
    /// commit through the session lock rather than find neither a writer nor an object.
    async fn finish_writer(&self, w: &Arc<WriteState>) {
        if w.unlinked.load(Ordering::Acquire) || w.refused_error().is_some() {
            self.forget_writer(w);
            w.session.lock().await.abort().await;
            return;
        }
        if let Err(e) = self.commit(w, Commit::IfPending).await {
            warn!(ino = w.ino, tenant = %w.tenant.name, error = %e, "upload failed after the last close");
        }
        self.forget_writer(w);
    }

    /// Drop `w` from the writer table unless a handle was opened on it meanwhile (an open
    /// counts itself before it registers the writer again, so one of the two always wins).
    fn forget_writer(&self, w: &Arc<WriteState>) {
        let mut map = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        if w.handles.load(Ordering::Acquire) == 0 && map.get(&w.ino).is_some_and(|cur| Arc::ptr_eq(cur, w)) {
            map.remove(&w.ino);
        }
    }

    /// Change size, mode, owner and/or mtime. Mode and owner persist on tenants with POSIX
    /// metadata (see `posix.rs`); elsewhere they are fixed per tenant and requests to change
    /// them are accepted and ignored so `cp -p` and `rsync -a` work.
    pub async fn setattr(&self, ino: u64, fh: Option<u64>, set: SetAttr) -> Result<Entry> {
        let SetAttr {
            size,
            mtime,
            mode,
            uid,
            gid,
        } = set;
        let inode = self.inodes.get(ino)?;
        if let Some(size) = size {
            if inode.kind.is_dir() {
                return Err(Error::expected(libc::EISDIR, "is a directory"));
            }
            let tenant = self.tenant_of(&inode)?;
            if tenant.read_only {
                return Err(Error::read_only(&tenant.name));
            }
            let w = match fh.and_then(|fh| self.write_state(fh).ok()).or_else(|| self.writer(ino)) {
                Some(w) => w,
                None => {
                    // truncate(2) on a file nobody has open: a short-lived session.
                    let opened = self.open_for_write(&inode, &tenant, size == 0, 0).await?;
                    let w = self.write_state(opened.fh)?;
                    let res = self.truncate_and_commit(&w, size).await;
                    self.release(opened.fh).await?;
                    res?;
                    return Ok(self.entry(&self.inodes.get(ino)?));
                }
            };
            let mut s = w.session.lock().await;
            if let Err(e) = self.admit_size(&w, s.key(), size) {
                return Err(self.refuse(&w, &mut s, e).await);
            }
            s.truncate(size).await?;
            // Cutting to zero is what O_TRUNC does: published at the last release unless data
            // follows. Any other size is content the writer chose.
            if size == 0 {
                w.needs_commit.store(true, Ordering::Release);
            } else {
                w.mark_written();
            }
            let stat = Stat::local(size, SystemTime::now(), None);
            drop(s);
            self.inodes.set_stat(ino, stat);
        }
        if mode.is_some() || uid.is_some() || gid.is_some() {
            self.set_posix(ino, fh, mode, uid, gid).await?;
        }
        if let Some(mtime) = mtime {
            self.set_mtime(ino, fh, mtime).await?;
        }
        Ok(self.entry(&self.inodes.get(ino)?))
    }

    /// Persist a new mtime: a file open for writing stores it with its next commit; a closed
    /// file gets it in the object's metadata now. A directory with a marker on a tenant with
    /// POSIX metadata stores it there; other directories keep it in memory only.
    async fn set_mtime(&self, ino: u64, fh: Option<u64>, mtime: SystemTime) -> Result<()> {
        let inode = self.inodes.get(ino)?;
        if inode.kind != Kind::File {
            let tenant = inode.tenant.and_then(|id| self.tenants.get(id));
            if let Some(t) = tenant.filter(|t| t.posix_metadata && !t.read_only && inode.kind == Kind::Dir) {
                let a = self.attr(&inode);
                let posix = crate::backend::PosixAttrs::new(a.kind.ifmt() | u32::from(a.perm), a.uid, a.gid);
                self.put_marker(&t, &inode.key, posix, mtime).await?;
            }
            let mut stat = inode.stat;
            stat.mtime = mtime;
            self.inodes.set_stat(ino, stat);
            return Ok(());
        }
        let tenant = self.tenant_of(&inode)?;
        if tenant.read_only {
            return Err(Error::read_only(&tenant.name));
        }
        if !tenant.backend.capabilities().user_metadata {
            // The store keeps no mtime beside the content (WebDAV, Drive-shaped stores): the
            // call succeeds (so `touch`, `cp -p`, rsync go on) and stores nothing; the file
            // keeps showing the store's own modification time (docs/backends.md).
            debug!(ino, tenant = %tenant.name, "mtime not stored: the backend keeps no user metadata");
            return Ok(());
        }
        if let Some(w) = fh.and_then(|fh| self.write_state(fh).ok()).or_else(|| self.writer(ino)) {
            let mut s = w.session.lock().await;
            // A writer whose last handle is closed and whose final commit is done will commit
            // nothing more: its object is stored, so the mtime goes onto it as for any file.
            if w.handles.load(Ordering::Acquire) > 0 || w.needs_commit.load(Ordering::Acquire) {
                s.set_mtime(Some(mtime));
                w.mark_written();
                let stat = Stat::local(s.size(), mtime, inode.stat.etag.clone());
                drop(s);
                self.inodes.set_stat(ino, stat);
                return Ok(());
            }
        }
        let inode = self.inodes.get(ino)?;
        // `cp -p` sets the mtime of the file it has just closed: its object must exist.
        self.settle(&tenant, &inode.key).await?;
        let opts = PutOptions::default().with_mtime(Some(mtime));
        let etag = match tenant.backend.update_metadata(&inode.key, &opts).await {
            Ok(put) => put.etag.or(inode.stat.etag),
            Err(e) if e.kind() == BackendErrorKind::Unsupported => {
                // E.g. an S3 object above 5 GiB: the mtime lives in this mount's memory only
                // (until the next HEAD of the object; a remount loses it).
                warn!(ino, tenant = %tenant.name, error = %e, "mtime kept in memory only");
                inode.stat.etag
            }
            Err(e) => return Err(e.into()),
        };
        self.inodes.set_stat(ino, Stat::local(inode.stat.size, mtime, etag));
        Ok(())
    }

    /// For [`Commit::Durable`]: wait until `key` has no version left in the write-back queue.
    async fn settle_if(&self, when: Commit, tenant: &Tenant, key: &str) -> Result<()> {
        if when == Commit::Durable {
            self.settle(tenant, key).await
        } else {
            Ok(())
        }
    }

    async fn truncate_and_commit(&self, w: &WriteState, size: u64) -> Result<()> {
        w.session.lock().await.truncate(size).await?;
        w.needs_commit.store(true, Ordering::Release);
        self.commit(w, Commit::IfPending).await
    }
}

/// When [`Filesystem::commit`] publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// Only if data, size or mtime changed since open or the last commit (flush, fsync).
    IfWritten,
    /// Whatever is pending, a bare creation or truncation included (last release, truncate(2)).
    IfPending,
    /// As `IfWritten`, and return only once the object is in the bucket, a version handed to
    /// write-back included (fsync).
    Durable,
}

impl WriteState {
    /// Record a change of data, size or mtime; call with the session lock held.
    pub(super) fn mark_written(&self) {
        self.needs_commit.store(true, Ordering::Release);
        self.written.store(true, Ordering::Release);
    }
}
