//! Committing a [`WriteSession`]: one PUT for files of at most one part, otherwise the
//! remaining parts of the multipart upload and its completion; plus assembling byte ranges
//! from staging files, the base object and zeros (shared with `read`).

use std::time::SystemTime;

use bytes::Bytes;

use super::budget::MemoryPermit;
use super::session::{to_usize, Base, PartDone, Upload, WriteSession};
use super::staging::{read_pieces_into, Piece, Source};
use super::UploadError;
use crate::backend::{
    Backend, BackendError, BackendErrorKind, BodyStream, ByteRange, CompletedPart, ETag, PosixAttrs, PutOptions,
    PutResult,
};

/// Largest piece of a streamed upload's body (the default part size: big enough that the
/// per-piece overhead vanishes, small enough that a few of them fit any memory budget).
const STREAM_CHUNK: u64 = 8 * 1024 * 1024;
/// Tries of one streamed upload, the first included.
const STREAM_ATTEMPTS: u32 = 3;
/// Pause before a retried streamed upload, times the attempt number.
const STREAM_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// The state of a streamed upload's body (see [`WriteSession::staged_body`]).
struct StreamState {
    plans: std::vec::IntoIter<(u64, Assembly)>,
    backend: std::sync::Arc<dyn Backend>,
    uploader: std::sync::Arc<super::Uploader>,
    tenant: std::sync::Arc<super::budget::TenantMemory>,
    /// The previous chunk's memory, returned when the next is asked for.
    held: Option<MemoryPermit>,
}

/// How the bytes of one part reach the backend.
#[derive(Debug)]
pub(super) enum PartJob {
    /// Already in memory.
    Data(Bytes),
    /// Built from staging files and the base object.
    Assemble(Assembly),
    /// Untouched bytes of the base object, copied server-side.
    Copy { src: String, range: ByteRange },
}

/// A recipe for the bytes of a range of the file.
#[derive(Debug)]
pub(super) struct Assembly {
    len: usize,
    base: Option<BaseFetch>,
    pieces: Vec<Piece>,
}

/// The part of an assembly read from the base object (one ranged GET).
#[derive(Debug)]
struct BaseFetch {
    key: String,
    etag: Option<ETag>,
    range: ByteRange,
    buf_offset: usize,
}

/// Build the bytes an [`Assembly`] describes: zeros, overlaid by the base object's bytes,
/// overlaid by staged bytes.
pub(super) async fn assemble(backend: &dyn Backend, a: Assembly) -> Result<Bytes, UploadError> {
    let mut buf = vec![0u8; a.len];
    if let Some(f) = a.base {
        let data = backend
            .get_range(&f.key, f.range, f.etag.as_ref())
            .await
            .map_err(UploadError::Backend)?;
        // An unpinned base may have shrunk meanwhile; what is missing reads as zeros.
        let n = data.len().min(a.len.saturating_sub(f.buf_offset));
        if let (Some(dst), Some(src)) = (buf.get_mut(f.buf_offset..f.buf_offset + n), data.get(..n)) {
            dst.copy_from_slice(src);
        }
    }
    let buf = read_pieces_into(buf, a.pieces).await?;
    Ok(Bytes::from(buf))
}

impl WriteSession {
    /// Make the object at the current key hold exactly the file's content.
    ///
    /// Returns once the object is complete in the bucket. Does nothing when nothing changed
    /// since the last commit. On failure the multipart upload is aborted (no partial object,
    /// no orphaned upload, an existing object keeps its old content) and the session stays
    /// dirty: a later commit retries from the staged data. The session stays usable after a
    /// successful commit: the new object becomes its base.
    pub async fn commit(&mut self) -> Result<PutResult, UploadError> {
        self.check_usable()?;
        self.drain().await;
        if let Some(e) = self.failed.take() {
            self.fail_commit().await;
            return Err(e);
        }
        if !self.dirty {
            return self.commit_mtime_only().await;
        }
        let single = self.size <= self.layout.part_size(0);
        let result = if single {
            self.commit_single().await
        } else if self.caps.multipart.is_none() {
            self.commit_streamed().await
        } else {
            self.commit_multipart().await
        };
        match result {
            Ok(r) => {
                self.finish_commit(&r).await;
                Ok(r)
            }
            Err(e) => {
                self.fail_commit().await;
                Err(e)
            }
        }
    }

    async fn fail_commit(&mut self) {
        self.abort_upload().await;
        if self.lost {
            tracing::error!(key = ?self.key, "upload failed after staged parts were dropped; data lost");
        }
    }

    async fn commit_single(&mut self) -> Result<PutResult, UploadError> {
        let permit = self.uploader.memory.acquire(&self.memory, self.size).await;
        let data = assemble(&*self.backend, self.assembly(0, self.size)?).await?;
        let opts = self.put_options();
        let result = self
            .backend
            .put_opts(&self.key, data, &opts)
            .await
            .map_err(UploadError::Backend)?;
        drop(permit);
        // The file shrank below one part after a multipart upload had started.
        self.abort_upload().await;
        Ok(result)
    }

    async fn commit_multipart(&mut self) -> Result<PutResult, UploadError> {
        let upload = self.ensure_upload().await?;
        let layout = self.layout;
        let max = layout.capacity();
        let count = layout
            .part_count(self.size)
            .ok_or(UploadError::TooLarge { size: self.size, max })?;
        for idx in 0..count {
            if self.parts.get(&idx).is_some_and(|p| self.is_clean(idx, p)) {
                continue;
            }
            if self.parts.get(&idx).is_some_and(|p| p.evicted) {
                return Err(UploadError::DataLost);
            }
            self.wait_for_slot().await;
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            let full = layout.part_range(idx);
            let range = ByteRange::new(full.start, full.end.min(self.size));
            let untouched = self.parts.get(&idx).is_none_or(|p| p.local.is_empty());
            // Without part copies the untouched bytes are read (ranged GETs) and sent again.
            let copy_src = self
                .base
                .as_ref()
                .filter(|b| self.caps.part_copy && untouched && range.end <= b.len)
                .map(|b| b.key.clone());
            let (job, permit) = match copy_src {
                Some(src) => (PartJob::Copy { src, range }, None),
                None => {
                    let permit = self.uploader.memory.acquire(&self.memory, range.len()).await;
                    (PartJob::Assemble(self.assembly(range.start, range.end)?), Some(permit))
                }
            };
            let part = self.parts.entry(idx).or_default();
            part.in_flight = true;
            let version = part.version;
            self.spawn_part(&upload, idx, range.len(), version, job, permit);
        }
        self.drain().await;
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let mut completed = Vec::with_capacity(to_usize(u64::from(count))?);
        for idx in 0..count {
            let etag = self
                .parts
                .get(&idx)
                .filter(|p| self.is_clean(idx, p))
                .and_then(|p| p.uploaded.as_ref())
                .map(|u| u.etag.clone())
                .ok_or_else(|| UploadError::Io(std::io::Error::other(format!("part {idx} missing after upload"))))?;
            completed.push(CompletedPart {
                part_number: idx + 1,
                etag,
            });
        }
        let result = self
            .backend
            .complete_multipart(&upload.key, &upload.id, &completed)
            .await
            .map_err(UploadError::Backend)?;
        tracing::debug!(key = ?upload.key, parts = count, "multipart upload completed");
        upload.forget_journal();
        self.upload = None;
        if !self.caps.user_metadata || (upload.mtime == self.mtime && upload.posix == self.posix) {
            return Ok(result);
        }
        // The mtime or mode changed after the upload started (`cp -p` sets them after
        // writing): store them now. A write after an earlier setattr leaves the object with a
        // stale stored mtime, which the commit time replaces.
        let opts = PutOptions::default()
            .with_mtime(Some(self.mtime.unwrap_or_else(SystemTime::now)))
            .with_posix(self.posix);
        match self.backend.update_metadata(&upload.key, &opts).await {
            Ok(r) => Ok(r),
            Err(e) => {
                // The data is complete; failing `close()` for its timestamp would be worse.
                tracing::warn!(key = ?upload.key, error = %e, "could not store the mtime after upload");
                Ok(result)
            }
        }
    }

    /// For a store without multipart uploads: publish the file with one streamed PUT that
    /// reads it from staging (and the base object's untouched bytes) one chunk at a time, so
    /// memory stays within a chunk or two whatever the file's size. A body stream cannot be
    /// replayed, so a retryable failure is retried here by building the stream again from
    /// the staged data (the retry layer passes `put_stream` through untried).
    async fn commit_streamed(&mut self) -> Result<PutResult, UploadError> {
        let opts = self.put_options();
        let mut attempt = 1;
        loop {
            let body = self.staged_body()?;
            match self.backend.put_stream(&self.key, self.size, body, &opts).await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_retryable() && attempt < STREAM_ATTEMPTS => {
                    tracing::debug!(key = ?self.key, attempt, error = %e, "streamed upload failed; sending it again from staging");
                    tokio::time::sleep(STREAM_RETRY_PAUSE * attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(UploadError::Backend(e)),
            }
        }
    }

    /// The file's content as a body stream of chunks of at most [`STREAM_CHUNK`] bytes, each
    /// assembled when the consumer asks for it under a memory-budget permit that is held
    /// until the next chunk is asked for (by then the consumer has sent it).
    fn staged_body(&self) -> Result<BodyStream, UploadError> {
        // Never more than one part: the memory budget holds at least one.
        let chunk = STREAM_CHUNK.min(self.layout.base());
        let mut plans = Vec::new();
        let mut start = 0;
        while start < self.size {
            let part_end = self
                .layout
                .part_range(self.layout.part_index(start).unwrap_or(u32::MAX))
                .end;
            let end = part_end.min(start + chunk).min(self.size).max(start + 1);
            plans.push((end - start, self.assembly(start, end)?));
            start = end;
        }
        let state = StreamState {
            plans: plans.into_iter(),
            backend: self.backend.clone(),
            uploader: self.uploader.clone(),
            tenant: self.memory.clone(),
            held: None,
        };
        Ok(Box::pin(futures::stream::try_unfold(state, |mut st| async move {
            st.held = None;
            let Some((len, plan)) = st.plans.next() else {
                return Ok(None);
            };
            let permit = st.uploader.memory.acquire(&st.tenant, len).await;
            let data = assemble(&*st.backend, plan).await.map_err(|e| {
                BackendError::new(BackendErrorKind::Other, "reading the staged file for upload").with_source(e)
            })?;
            st.held = Some(permit);
            Ok(Some((data, st)))
        })))
    }

    /// Nothing but the mtime or the mode/owner changed since the last commit: update the
    /// object's metadata.
    async fn commit_mtime_only(&mut self) -> Result<PutResult, UploadError> {
        let etag = self.base.as_ref().and_then(|b| b.etag.clone());
        let mtime = self.mtime.filter(|_| self.mtime_dirty);
        if (mtime.is_none() && !self.posix_dirty) || !self.caps.user_metadata {
            // A store without user metadata keeps nothing of them: its own time serves.
            self.mtime_dirty = false;
            self.posix_dirty = false;
            return Ok(PutResult::new(etag));
        }
        let posix = if self.posix_dirty {
            self.posix
        } else {
            PosixAttrs::default()
        };
        let opts = PutOptions::default().with_mtime(mtime).with_posix(posix);
        let result = self
            .backend
            .update_metadata(&self.key, &opts)
            .await
            .map_err(UploadError::Backend)?;
        self.mtime_dirty = false;
        self.posix_dirty = false;
        if let Some(b) = &mut self.base {
            // Pin later reads of unwritten bytes to the object as it is now.
            b.etag = result.etag.clone();
        }
        Ok(result)
    }

    /// After a successful commit the object holds everything: drop staging and start over
    /// from the new object as base.
    async fn finish_commit(&mut self, result: &PutResult) {
        self.staging.clear().await;
        self.parts.clear();
        self.upload = None;
        self.generation += 1;
        self.base = Some(Base {
            key: self.key.clone(),
            etag: result.etag.clone(),
            len: self.size,
        });
        self.dirty = false;
        self.mtime_dirty = false;
        self.posix_dirty = false;
    }

    /// Start a background request for part `idx`.
    pub(super) fn spawn_part(
        &mut self,
        upload: &Upload,
        idx: u32,
        len: u64,
        version: u64,
        job: PartJob,
        permit: Option<MemoryPermit>,
    ) {
        let backend = self.backend.clone();
        let Upload { key, id, journal, .. } = upload.clone();
        let generation = self.generation;
        let progress = self.progress.clone();
        self.tasks.spawn(async move {
            // Held until the request finishes: the buffer's memory stays charged until then.
            let _permit = permit;
            let number = idx + 1;
            let result = match job {
                PartJob::Data(data) => backend.upload_part(&key, &id, number, data).await,
                PartJob::Assemble(a) => match assemble(&*backend, a).await {
                    Ok(data) => backend.upload_part(&key, &id, number, data).await,
                    Err(e) => {
                        return PartDone {
                            idx,
                            generation,
                            version,
                            len,
                            result: Err(e),
                        }
                    }
                },
                PartJob::Copy { src, range } => backend.upload_part_copy(&key, &id, number, &src, range).await,
            };
            if result.is_ok() {
                use std::sync::atomic::Ordering::Relaxed;
                progress.parts_done.fetch_add(1, Relaxed);
                progress.bytes_uploaded.fetch_add(len, Relaxed);
            }
            if let (Ok(cp), Some(journal)) = (&result, &journal) {
                // A short append, done inline: it is informational (see `journal`).
                if let Err(e) = journal.record_part(number, len, &cp.etag) {
                    tracing::warn!(key = ?key, error = %e, "could not journal an uploaded part");
                }
            }
            PartDone {
                idx,
                generation,
                version,
                len,
                result: result.map_err(UploadError::Backend),
            }
        });
    }

    /// The recipe for bytes `[start, end)` of the file (`end <= size`).
    pub(super) fn assembly(&self, start: u64, end: u64) -> Result<Assembly, UploadError> {
        let layout = self.layout;
        let len = to_usize(end - start)?;
        let base_len = self.base.as_ref().map_or(0, |b| b.len);
        let mut pieces = Vec::new();
        let mut hull: Option<(u64, u64)> = None;
        let mut idx = layout.part_index(start).ok_or(UploadError::TooLarge {
            size: end,
            max: layout.capacity(),
        })?;
        loop {
            let pr = layout.part_range(idx);
            if pr.start >= end {
                break;
            }
            let (s, e) = (start.max(pr.start), end.min(pr.end));
            let part = self.parts.get(&idx);
            if let Some(p) = part {
                if p.evicted {
                    return Err(UploadError::Evicted { offset: s });
                }
                for (a, b) in p.local.overlapping(s - pr.start, e - pr.start) {
                    let (src, file_offset) = match &p.mem {
                        Some(f) => (Source::Memory(f.copy_range(a, b)), 0),
                        None => (Source::File(self.staging.part_path(idx)), a),
                    };
                    pieces.push(Piece {
                        src,
                        file_offset,
                        buf_offset: to_usize(pr.start + a - start)?,
                        len: to_usize(b - a)?,
                    });
                }
            }
            let base_end = e.min(base_len);
            if s < base_end {
                let gap = match part {
                    Some(p) => p
                        .local
                        .gap_hull(s - pr.start, base_end - pr.start)
                        .map(|(a, b)| (a + pr.start, b + pr.start)),
                    None => Some((s, base_end)),
                };
                if let Some((a, b)) = gap {
                    hull = Some(hull.map_or((a, b), |(h, _)| (h, b)));
                }
            }
            match idx.checked_add(1) {
                Some(next) => idx = next,
                None => break,
            }
        }
        let base = match (hull, &self.base) {
            (Some((a, b)), Some(base)) => Some(BaseFetch {
                key: base.key.clone(),
                etag: base.etag.clone(),
                range: ByteRange::new(a, b),
                buf_offset: to_usize(a - start)?,
            }),
            _ => None,
        };
        Ok(Assembly { len, base, pieces })
    }
}
