//! [`WriteSession`]: the state of one file open for writing, and its write, read and
//! truncate paths. Part uploads live in `transfer.rs`, committing in `commit.rs`.
//!
//! Invariants:
//! - `base.len <= size`: bytes below `base.len` not held locally come from the base object,
//!   bytes above it not held locally are zeros (holes, or space after a truncate).
//! - A part is *clean* when its recorded upload (in the current multipart upload) was made
//!   from its current `version` at its current length; only clean parts are reused.
//! - A part has at most one upload request in flight, so the recorded part ETag is the one
//!   the service kept.
//! - Results of requests started for an earlier multipart upload (`generation`) are ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::task::JoinSet;

use super::budget::TenantMemory;
use super::extents::Extents;
use super::fill::Fill;
use super::journal::Journal;
use super::staging::SessionStaging;
use super::transfer::spawn_abort;
use super::PartLayout;
use super::{BaseObject, UploadError, Uploader};
use crate::backend::{Backend, Capabilities, CompletedPart, ETag, PosixAttrs, PutOptions, UploadId};

/// The object bytes a session builds on.
#[derive(Debug, Clone)]
pub(super) struct Base {
    pub(super) key: String,
    pub(super) etag: Option<ETag>,
    /// Bytes of the base still part of the file (shrinks with truncation).
    pub(super) len: u64,
}

/// A part as uploaded in the current multipart upload.
#[derive(Debug, Clone)]
pub(super) struct Uploaded {
    pub(super) etag: ETag,
    pub(super) len: u64,
    pub(super) version: u64,
}

/// What the session knows about one part.
#[derive(Debug, Default)]
pub(super) struct Part {
    /// Byte ranges (relative to the part) held locally: in `mem` if that is set (then
    /// `local` is exactly its range and the staging file holds nothing), else in the part's
    /// staging file.
    pub(super) local: Extents,
    /// The part's bytes while a writer fills it in memory.
    pub(super) mem: Option<Fill>,
    /// Changes on every modification; compared with [`Uploaded::version`].
    pub(super) version: u64,
    pub(super) uploaded: Option<Uploaded>,
    pub(super) in_flight: bool,
    /// Uploaded, then its staging file dropped to free space.
    pub(super) evicted: bool,
}

/// An open multipart upload (its key is fixed at creation).
#[derive(Debug, Clone)]
pub(super) struct Upload {
    pub(super) key: String,
    pub(super) id: UploadId,
    /// Its journal in the staging area; deleted once the upload is completed or aborted.
    /// `None` when the staging disk had no room even for it (see `ensure_upload`).
    pub(super) journal: Option<Arc<Journal>>,
    /// The mtime the upload was created with (stored on completion).
    pub(super) mtime: Option<SystemTime>,
    /// The POSIX attributes the upload was created with.
    pub(super) posix: PosixAttrs,
}

impl Upload {
    /// The upload is completed or aborted: it needs no recovery any more.
    pub(super) fn forget_journal(&self) {
        let Some(journal) = &self.journal else { return };
        if let Err(e) = journal.remove() {
            tracing::warn!(key = ?self.key, error = %e, "could not remove upload journal");
        }
    }
}

/// What a finished part request reports back.
#[derive(Debug)]
pub(super) struct PartDone {
    pub(super) idx: u32,
    pub(super) generation: u64,
    pub(super) version: u64,
    pub(super) len: u64,
    pub(super) result: Result<CompletedPart, UploadError>,
}

/// One file open for writing: streams into a multipart upload, commits into an object.
///
/// Not `Sync`-shared: the filesystem keeps it behind a `tokio::sync::Mutex` per handle.
/// Dropping a session that holds an uncommitted multipart upload aborts it (in a spawned
/// task); its staged data is discarded.
#[derive(Debug)]
pub struct WriteSession {
    pub(super) uploader: Arc<Uploader>,
    /// Number within the uploader (names the staging directory and journals).
    pub(super) id: u64,
    /// Tenant name recorded in journals.
    pub(super) owner: String,
    /// The tenant's share of the write memory.
    pub(super) memory: Arc<TenantMemory>,
    pub(super) backend: Arc<dyn Backend>,
    /// What the backend can do, asked once at the start (a cheap copy, but per write).
    pub(super) caps: Capabilities,
    /// The uploader's part layout within the backend's multipart limits.
    pub(super) layout: PartLayout,
    pub(super) key: String,
    pub(super) size: u64,
    pub(super) base: Option<Base>,
    pub(super) dirty: bool,
    pub(super) parts: BTreeMap<u32, Part>,
    pub(super) staging: SessionStaging,
    pub(super) upload: Option<Upload>,
    pub(super) generation: u64,
    pub(super) next_version: u64,
    pub(super) tasks: JoinSet<PartDone>,
    /// First failure of a background request, reported by `write` and `commit`.
    pub(super) failed: Option<UploadError>,
    /// Acknowledged data is gone (see [`UploadError::DataLost`]); every later call fails.
    pub(super) lost: bool,
    /// Modification time to store with the object (`setattr`); `None` stores none.
    pub(super) mtime: Option<SystemTime>,
    /// `mtime` was set since the last commit and is not stored yet.
    pub(super) mtime_dirty: bool,
    /// Mode, owner and group to store with the object; unlike the mtime, a write keeps them.
    pub(super) posix: PosixAttrs,
    /// `posix` was changed since the last commit and is not stored yet.
    pub(super) posix_dirty: bool,
    /// What `byosfs status` shows of this session.
    pub(super) progress: Arc<super::UploadProgress>,
}

pub(super) fn to_usize(n: u64) -> Result<usize, UploadError> {
    usize::try_from(n).map_err(|_| UploadError::TooLarge {
        size: n,
        max: u64::try_from(usize::MAX).unwrap_or(u64::MAX),
    })
}

impl WriteSession {
    pub(super) fn new(
        uploader: Arc<Uploader>,
        id: u64,
        owner: String,
        backend: Arc<dyn Backend>,
        key: String,
        base: Option<BaseObject>,
        dir: PathBuf,
    ) -> Self {
        let staging = SessionStaging::new(uploader.staging.clone(), &owner, dir);
        let memory = uploader.memory.tenant(&owner);
        // A new or truncated file must be created by the commit even if never written.
        let dirty = base.is_none();
        let size = base.as_ref().map_or(0, |b| b.size);
        let caps = backend.capabilities();
        // Without conditional GETs the base is read unpinned: a store that ignores If-Match
        // would pass silently, one that refuses it would fail every read of old bytes.
        let base = base.map(|b| Base {
            key: key.clone(),
            etag: b.etag.filter(|_| caps.conditional_get),
            len: b.size,
        });
        let layout = uploader.layout.for_store(caps.multipart);
        Self {
            uploader,
            id,
            owner,
            memory,
            backend,
            caps,
            layout,
            key,
            size,
            base,
            dirty,
            parts: BTreeMap::new(),
            staging,
            upload: None,
            generation: 0,
            next_version: 0,
            tasks: JoinSet::new(),
            failed: None,
            lost: false,
            mtime: None,
            mtime_dirty: false,
            posix: PosixAttrs::default(),
            posix_dirty: false,
            progress: Arc::default(),
        }
    }

    /// Write `data` at `offset`. Returns once the bytes are staged; full parts the writer
    /// has moved past start uploading in the background. Waits while the memory budget is
    /// full. Fails if an earlier background upload failed, with
    /// [`UploadError::StagingFull`] if staging has no room, or [`UploadError::TooLarge`].
    pub async fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), UploadError> {
        self.write_bytes(offset, Bytes::copy_from_slice(data)).await
    }

    /// [`WriteSession::write`] of bytes the caller already owns (no copy).
    pub async fn write_bytes(&mut self, offset: u64, data: Bytes) -> Result<(), UploadError> {
        self.check_usable()?;
        self.reap();
        if let Some(e) = &self.failed {
            return Err(e.duplicate());
        }
        if data.is_empty() {
            return Ok(());
        }
        let max = self.max_size();
        let end = offset
            .checked_add(u64::try_from(data.len()).unwrap_or(u64::MAX))
            .filter(|e| *e <= max)
            .ok_or(UploadError::TooLarge {
                size: offset.saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX)),
                max,
            })?;
        let pieces = self.split(offset, end)?;

        // Check and reserve everything first, so a refused write changes nothing.
        let mut needed = 0;
        for &(idx, rel_start, rel_end, _) in &pieces {
            if let Some(p) = self.parts.get(&idx) {
                if p.evicted {
                    // Rewriting part of it would need the dropped bytes.
                    return Err(UploadError::StagingFull);
                }
                needed += p.local.uncovered_in(rel_start, rel_end);
            } else {
                needed += rel_end - rel_start;
            }
        }
        let touched = (pieces[0].0, pieces[pieces.len() - 1].0);
        self.reserve_staging(needed, touched).await?;

        let mut consumed = 0;
        for (idx, rel_start, rel_end, data_off) in pieces {
            let slice = data.slice(data_off..data_off + to_usize(rel_end - rel_start)?);
            if !self.write_in_memory(idx, rel_start, &slice) {
                let staged = match self.spill(idx, touched).await {
                    Ok(()) => self.write_staged(idx, Some(rel_start), slice, touched).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = staged {
                    self.staging.release(needed - consumed);
                    return Err(e);
                }
            }
            // Per piece, so a failure midway leaves no staged byte beyond `size`.
            consumed += self.note_written(idx, rel_start, rel_end);
        }
        self.clear_mtime();
        self.upload_finished_parts(offset, end).await;
        Ok(())
    }

    /// [`Self::write_bytes`] without waiting, for the common case of a write that lands in the
    /// fill buffer of the part being written and does not complete it: `false` (nothing
    /// changed) when the write needs more, which the caller then sends through
    /// [`Self::write_bytes`]. Lets the FUSE thread answer a streaming writer's requests without
    /// a task hop or a second copy of the data.
    pub fn try_write_now(&mut self, offset: u64, data: &[u8]) -> bool {
        self.reap();
        if self.lost || self.failed.is_some() || data.is_empty() {
            return false;
        }
        let layout = self.layout;
        let Some(end) = u64::try_from(data.len()).ok().and_then(|n| offset.checked_add(n)) else {
            return false;
        };
        let Some(idx) = layout.part_index(offset) else {
            return false;
        };
        let range = layout.part_range(idx);
        // A write reaching the part's end may complete it, which starts its upload (async).
        if end >= range.end {
            return false;
        }
        let (rel_start, rel_end) = (offset - range.start, end - range.start);
        let Some(part) = self.parts.get_mut(&idx).filter(|p| p.mem.is_some() && !p.evicted) else {
            return false;
        };
        let needed = part.local.uncovered_in(rel_start, rel_end);
        if needed > 0 && !self.staging.reserve(needed) {
            return false;
        }
        let budget = &self.uploader.memory;
        let written = part.mem.as_mut().is_some_and(|f| f.try_write(budget, rel_start, data));
        if !written {
            self.staging.release(needed);
            return false;
        }
        self.note_written(idx, rel_start, rel_end);
        self.clear_mtime();
        true
    }

    /// Record that part `idx` now holds its bytes `[rel_start, rel_end)` locally (a new
    /// version of the part, the file at least that long); the bytes newly covered.
    fn note_written(&mut self, idx: u32, rel_start: u64, rel_end: u64) -> u64 {
        let version = self.bump_version();
        let part = self.parts.entry(idx).or_default();
        let added = part.local.insert(rel_start, rel_end);
        part.version = version;
        self.dirty = true;
        self.size = self.size.max(self.layout.part_start(idx) + rel_end);
        self.progress
            .written
            .store(self.size, std::sync::atomic::Ordering::Relaxed);
        added
    }

    /// Up to `len` bytes at `offset` of the file as written so far (short at the end).
    pub async fn read(&mut self, offset: u64, len: usize) -> Result<Bytes, UploadError> {
        self.check_usable()?;
        self.reap();
        let end = offset
            .saturating_add(u64::try_from(len).unwrap_or(u64::MAX))
            .min(self.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let plan = self.assembly(offset, end)?;
        super::commit::assemble(&*self.backend, plan).await
    }

    /// Set the file size to `size`: shorter drops the tail, longer adds zeros.
    pub async fn truncate(&mut self, size: u64) -> Result<(), UploadError> {
        self.check_usable()?;
        self.reap();
        let layout = self.layout;
        if size > self.max_size() {
            return Err(UploadError::TooLarge {
                size,
                max: self.max_size(),
            });
        }
        if size == self.size {
            return Ok(());
        }
        if size < self.size {
            let cut = layout.part_index(size).unwrap_or(u32::MAX);
            let keep = size - layout.part_start(cut);
            if keep > 0 && self.parts.get(&cut).is_some_and(|p| p.evicted) {
                return Err(UploadError::StagingFull);
            }
            let first_dropped = if keep > 0 { cut.saturating_add(1) } else { cut };
            let dropped: Vec<u32> = self.parts.range(first_dropped..).map(|(i, _)| *i).collect();
            for idx in dropped {
                self.staging.remove(idx).await?;
                let version = self.bump_version();
                let Some(p) = self.parts.get_mut(&idx) else { continue };
                let freed = p.local.covered();
                if p.in_flight {
                    // Keep the entry so no second request for this part starts meanwhile.
                    *p = Part {
                        in_flight: true,
                        version,
                        ..Part::default()
                    };
                } else {
                    self.parts.remove(&idx);
                }
                self.staging.release(freed);
            }
            if keep > 0 {
                let version = self.bump_version();
                if let Some(p) = self.parts.get_mut(&cut) {
                    let freed = p.local.truncate(keep);
                    p.version = version;
                    let in_memory = p.mem.as_mut().map(|f| f.truncate(keep));
                    if in_memory == Some(false) {
                        p.mem = None;
                    }
                    if freed > 0 {
                        if in_memory.is_none() {
                            self.staging.truncate(cut, keep).await?;
                        }
                        self.staging.release(freed);
                    }
                }
            }
            if let Some(b) = &mut self.base {
                b.len = b.len.min(size);
            }
        }
        self.size = size;
        self.progress.written.store(size, std::sync::atomic::Ordering::Relaxed);
        self.dirty = true;
        self.clear_mtime();
        Ok(())
    }

    /// Store `mtime` with the object from the next commit on (`None`: store none, so
    /// Last-Modified serves). A later write or truncate clears it, as a write sets a local
    /// file's mtime to now. Setting it alone does not rewrite the data: a commit with only
    /// the mtime changed updates the object's metadata in place ([`Backend::update_metadata`]).
    pub fn set_mtime(&mut self, mtime: Option<SystemTime>) {
        self.mtime = mtime;
        self.mtime_dirty = mtime.is_some();
    }

    /// Store `posix` with the object from the next commit on. With `changed`, a commit with
    /// nothing else to do updates the object's metadata in place; without, `posix` only
    /// describes what the object already holds (so a data commit keeps it).
    pub fn set_posix(&mut self, posix: PosixAttrs, changed: bool) {
        self.posix = posix;
        self.posix_dirty |= changed;
    }

    /// The options a commit stores the object with (none where the store keeps no user
    /// metadata: its own modification time then serves).
    pub(super) fn put_options(&self) -> PutOptions {
        if !self.caps.user_metadata {
            return PutOptions::default();
        }
        PutOptions::default().with_mtime(self.mtime).with_posix(self.posix)
    }

    /// The largest file this session can commit: what the part layout holds, and no more
    /// than the store accepts.
    pub(super) fn max_size(&self) -> u64 {
        let layout = self.layout.capacity();
        self.caps.max_object_size.map_or(layout, |m| m.min(layout))
    }

    /// The mtime set with [`WriteSession::set_mtime`] and not cleared by a write since.
    pub fn mtime(&self) -> Option<SystemTime> {
        self.mtime
    }

    fn clear_mtime(&mut self) {
        self.mtime = None;
        self.mtime_dirty = false;
    }

    /// Current file size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the whole content is held locally: nothing of it needs the base object (a new
    /// or truncated file), no multipart upload has started, nothing failed or was dropped.
    /// Only such a file can be handed to write-back by reading it back with [`Self::read`]
    /// without a request.
    pub fn is_local(&mut self) -> bool {
        self.reap();
        !self.lost
            && self.failed.is_none()
            && self.upload.is_none()
            && self.tasks.is_empty()
            && self.base.as_ref().is_none_or(|b| b.len == 0)
            && self.parts.values().all(|p| !p.evicted)
    }

    /// The content as it stands was handed to write-back: nothing is left to commit until
    /// the next change. The local copy stays (the file may be read or written again).
    pub fn mark_handed_off(&mut self) {
        self.dirty = false;
        self.mtime_dirty = false;
        self.posix_dirty = false;
    }

    /// The object key the session commits to.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The POSIX attributes stored with the object.
    pub fn posix(&self) -> PosixAttrs {
        self.posix
    }

    /// Whether anything (data, size, or the file's very creation) is not committed yet.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The file was renamed while open: commit to `key` from now on.
    ///
    /// A multipart upload already started for the old key is aborted (in a spawned task) and
    /// its parts will be uploaded again. The base object is assumed to have moved with the
    /// file (the filesystem renames the object), so its unwritten bytes are read from `key`,
    /// no longer pinned to the old ETag (a server-side copy may change it).
    pub fn set_key(&mut self, key: String) {
        if key == self.key {
            return;
        }
        self.key = key.clone();
        self.uploader.session_renamed(self.id, &self.key);
        if let Some(b) = &mut self.base {
            b.key = key;
            b.etag = None;
        }
        if let Some(up) = self.forget_upload() {
            // Requests in flight belong to the old upload: they finish before its abort.
            let tasks = std::mem::take(&mut self.tasks);
            for p in self.parts.values_mut() {
                p.in_flight = false;
            }
            spawn_abort(self.backend.clone(), up, tasks);
        }
    }

    /// Discard the session (the file was unlinked): abort its upload, free its staging.
    /// Takes `&mut self` so a session shared behind a lock can be discarded in place.
    pub async fn abort(&mut self) {
        self.abort_upload().await;
        for p in self.parts.values_mut() {
            p.mem = None;
        }
        self.staging.clear().await;
        self.dirty = false;
    }

    pub(super) fn check_usable(&self) -> Result<(), UploadError> {
        if self.lost {
            Err(UploadError::DataLost)
        } else {
            Ok(())
        }
    }

    pub(super) fn bump_version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    /// Whether part `idx` may be reused as uploaded for a file of the current size.
    pub(super) fn is_clean(&self, idx: u32, p: &Part) -> bool {
        let len = self.layout.part_len(idx, self.size);
        p.uploaded
            .as_ref()
            .is_some_and(|u| u.version == p.version && u.len == len && !p.in_flight)
    }

    /// `[offset, end)` as `(part, start in part, end in part, offset in data)` pieces.
    fn split(&self, offset: u64, end: u64) -> Result<Vec<(u32, u64, u64, usize)>, UploadError> {
        let layout = self.layout;
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let idx = layout.part_index(pos).ok_or(UploadError::TooLarge {
                size: end,
                max: layout.capacity(),
            })?;
            let r = layout.part_range(idx);
            let stop = r.end.min(end);
            out.push((idx, pos - r.start, stop - r.start, to_usize(pos - offset)?));
            pos = stop;
        }
        Ok(out)
    }

    /// Reserve staging space, dropping local copies of clean uploaded parts if needed and
    /// waiting for uploads in flight to make more parts clean.
    async fn reserve_staging(&mut self, needed: u64, touched: (u32, u32)) -> Result<(), UploadError> {
        while needed > 0 && !self.staging.reserve(needed) {
            self.make_room(touched).await?;
        }
        Ok(())
    }

    /// Free staging space: drop the local copy of a clean uploaded part, or wait for a
    /// request in flight to make one clean. [`UploadError::StagingFull`] when neither is
    /// possible. Bounded: each call drops a part, finishes a request or gives up.
    async fn make_room(&mut self, touched: (u32, u32)) -> Result<(), UploadError> {
        if self.evict_one(touched).await? {
            return Ok(());
        }
        match self.tasks.join_next().await {
            Some(r) => {
                self.on_done(r);
                Ok(())
            }
            None => Err(UploadError::StagingFull),
        }
    }

    /// Write `data` at `offset` of part `idx`'s staging file (`None`: the whole file is
    /// `data`, see [`SessionStaging::write_whole`]); when the disk itself is full (not just
    /// our accounting), free space as [`Self::reserve_staging`] does and retry.
    async fn write_staged(
        &mut self,
        idx: u32,
        offset: Option<u64>,
        data: Bytes,
        touched: (u32, u32),
    ) -> Result<(), UploadError> {
        loop {
            let written = match offset {
                Some(at) => self.staging.write(idx, at, data.clone()).await,
                None => self.staging.write_whole(idx, data.clone()).await,
            };
            match written {
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => self.make_room(touched).await?,
                other => return other.map_err(UploadError::from),
            }
        }
    }

    /// Put `data` into part `idx`'s fill buffer, starting one if the part holds nothing
    /// locally yet. `false` if the bytes must go to staging instead: they do not continue
    /// or overwrite the buffer, or its memory is not free now.
    fn write_in_memory(&mut self, idx: u32, offset: u64, data: &[u8]) -> bool {
        let budget = &self.uploader.memory;
        match self.parts.get_mut(&idx) {
            Some(p) if p.mem.is_some() => p.mem.as_mut().is_some_and(|f| f.try_write(budget, offset, data)),
            Some(p) if !p.local.is_empty() || p.evicted => false,
            _ => {
                let part_len = self.layout.part_range(idx).len();
                match Fill::start(budget, &self.memory, offset, part_len, data) {
                    Some(f) => {
                        self.parts.entry(idx).or_default().mem = Some(f);
                        true
                    }
                    None => false,
                }
            }
        }
    }

    /// Move part `idx`'s fill buffer (if any) to its staging file, so the part can take
    /// writes the buffer cannot (holes, bytes before it). On failure the buffer stays.
    async fn spill(&mut self, idx: u32, touched: (u32, u32)) -> Result<(), UploadError> {
        self.stage_fill(idx, touched).await.map(drop)
    }

    /// Write part `idx`'s fill buffer to its staging file and return its bytes and memory
    /// (`None` if it has none). A buffer starting at the part's first byte is written as the
    /// whole file (`O_DIRECT` where possible): by the invariant of [`Part::local`] the file
    /// holds nothing else. On failure the buffer stays in place.
    pub(super) async fn stage_fill(
        &mut self,
        idx: u32,
        touched: (u32, u32),
    ) -> Result<Option<(Bytes, super::budget::MemoryPermit)>, UploadError> {
        let Some(fill) = self.parts.get_mut(&idx).and_then(|p| p.mem.take()) else {
            return Ok(None);
        };
        let (first, cap) = (fill.first(), fill.cap());
        let (data, permit) = fill.seal();
        let at = (first > 0).then_some(first);
        match self.write_staged(idx, at, data.clone(), touched).await {
            Ok(()) => Ok(Some((data, permit))),
            Err(e) => {
                if let Some(p) = self.parts.get_mut(&idx) {
                    p.mem = Some(Fill::unseal(data, permit, first, cap));
                }
                Err(e)
            }
        }
    }

    /// Drop the local copy of one clean uploaded part; `false` if there is none.
    async fn evict_one(&mut self, touched: (u32, u32)) -> Result<bool, UploadError> {
        // Part 0 is kept: container formats (mp4, wav) patch their header there at the end.
        let candidate = self
            .parts
            .iter()
            .find(|(i, p)| {
                **i != 0
                    && !(touched.0..=touched.1).contains(*i)
                    && !p.evicted
                    && p.mem.is_none()
                    && !p.local.is_empty()
                    && self.is_clean(**i, p)
            })
            .map(|(i, _)| *i);
        let Some(idx) = candidate else { return Ok(false) };
        self.staging.remove(idx).await?;
        if let Some(p) = self.parts.get_mut(&idx) {
            let freed = p.local.covered();
            p.local = Extents::default();
            p.evicted = true;
            self.staging.release(freed);
            tracing::debug!(key = ?self.key, part = idx, "staging full: dropped local copy of uploaded part");
        }
        Ok(true)
    }
}

impl Drop for WriteSession {
    fn drop(&mut self) {
        self.uploader.session_ended(self.id);
        if let Some(up) = self.upload.take() {
            spawn_abort(self.backend.clone(), up, std::mem::take(&mut self.tasks));
        } else if self.dirty {
            tracing::debug!(key = ?self.key, "write session dropped with uncommitted data");
        }
    }
}
