//! Part uploads of a [`WriteSession`]: starting the multipart upload (journaled before its
//! first part), sending filled and staged parts with bounded concurrency, collecting their
//! results, and aborting. The write paths that decide *when* a part goes are in
//! `session.rs`; the commit that completes the upload is in `commit.rs`.
//!
//! A part has at most one request in flight; a result from an earlier multipart upload
//! (`generation`) is ignored (see the invariants in `session.rs`).

use std::sync::Arc;

use bytes::Bytes;
use tokio::task::{JoinError, JoinSet};

use super::journal::{Journal, JournalRecord};
use super::session::{to_usize, PartDone, Upload, Uploaded, WriteSession};
use super::staging::{read_pieces_into, Piece, Source};
use super::UploadError;
use crate::backend::{Backend, UploadId};

impl WriteSession {
    /// Start uploading parts that became complete and that the writer has moved past.
    pub(super) async fn upload_finished_parts(&mut self, offset: u64, end: u64) {
        let layout = self.layout;
        let (Some(first), Some(last)) = (layout.part_index(offset), layout.part_index(end - 1)) else {
            return;
        };
        for idx in first.saturating_sub(1)..=last {
            let full = layout.part_range(idx);
            if full.end >= end {
                continue;
            }
            let ready = self
                .parts
                .get(&idx)
                .is_some_and(|p| !p.in_flight && !p.evicted && p.uploaded.is_none() && p.local.covers(0, full.len()));
            if !ready {
                continue;
            }
            // Ready means every byte is local, so a fill buffer holds the whole part.
            let in_memory = self.parts.get(&idx).is_some_and(|p| p.mem.is_some());
            if self.caps.multipart.is_none() {
                // No part uploads: the commit streams the file from staging in one PUT. Move
                // the full buffer there now, so the memory budget bounds only the parts
                // being filled, not the whole file.
                if in_memory {
                    if let Err(e) = self.stage_fill(idx, (idx, idx)).await {
                        // Nothing is lost: the part stays in memory and the commit reads it there.
                        tracing::debug!(key = ?self.key, part = idx, error = %e, "could not stage a full part; it stays in memory");
                    }
                }
                continue;
            }
            let started = if in_memory {
                self.upload_filled_part(idx, full.len()).await
            } else {
                self.upload_staged_part(idx, full.len()).await
            };
            if let Err(e) = started {
                self.record_failure(e);
                return;
            }
        }
    }

    /// Stage part `idx` from its full fill buffer and upload it from the same memory.
    async fn upload_filled_part(&mut self, idx: u32, len: u64) -> Result<(), UploadError> {
        let upload = self.ensure_upload().await?;
        self.wait_for_slot().await;
        if let Some(e) = &self.failed {
            return Err(e.duplicate());
        }
        // Staged before it is sent: once the buffer goes to the request, the staging file is
        // the only copy a later rewrite or a retried commit can use.
        let (data, permit) = match self.stage_fill(idx, (idx, idx)).await {
            Ok(Some(sealed)) => sealed,
            Ok(None) => return Ok(()),
            Err(e) => {
                // Nothing is lost: the part stays in memory and the commit sends it from there.
                tracing::debug!(key = ?self.key, part = idx, error = %e, "could not stage a full part; it stays in memory");
                return Ok(());
            }
        };
        let Some(part) = self.parts.get_mut(&idx) else {
            return Ok(());
        };
        part.in_flight = true;
        let version = part.version;
        let job = super::commit::PartJob::Data(data);
        self.spawn_part(&upload, idx, len, version, job, Some(permit.into_in_flight()));
        Ok(())
    }

    /// Read part `idx` from staging into a budgeted buffer and upload it in the background.
    async fn upload_staged_part(&mut self, idx: u32, len: u64) -> Result<(), UploadError> {
        let upload = self.ensure_upload().await?;
        self.wait_for_slot().await;
        if let Some(e) = &self.failed {
            return Err(e.duplicate());
        }
        let permit = self.uploader.memory.acquire(&self.memory, len).await;
        let n = to_usize(len)?;
        let pieces = vec![Piece {
            src: Source::File(self.staging.part_path(idx)),
            file_offset: 0,
            buf_offset: 0,
            len: n,
        }];
        // Read now, not in the task: a later truncate may delete the file.
        let buf = read_pieces_into(vec![0; n], pieces).await?;
        let Some(part) = self.parts.get_mut(&idx) else {
            return Ok(());
        };
        part.in_flight = true;
        let version = part.version;
        let job = super::commit::PartJob::Data(Bytes::from(buf));
        self.spawn_part(&upload, idx, len, version, job, Some(permit));
        Ok(())
    }

    /// Start a multipart upload for the current key unless one is open.
    pub(super) async fn ensure_upload(&mut self) -> Result<Upload, UploadError> {
        if let Some(u) = &self.upload {
            return Ok(u.clone());
        }
        let opts = self.put_options();
        let id = self
            .backend
            .create_multipart_opts(&self.key, &opts)
            .await
            .map_err(UploadError::Backend)?;
        let record = JournalRecord {
            owner: self.owner.clone(),
            backend: self.backend.describe(),
            key: self.key.clone(),
            upload_id: id.clone(),
            part_size: self.layout.base(),
            parts: Default::default(),
        };
        let path = self.uploader.journal_path(self.id, self.generation);
        // Before any part is sent: an upload without a journal would be orphaned by a crash.
        let journal = match tokio::task::spawn_blocking(move || Journal::create(path, &record)).await {
            Ok(Ok(j)) => Some(Arc::new(j)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::StorageFull => {
                // Committing acknowledged data matters more than cleaning up after a crash:
                // go on without a journal (a crash now leaves the upload to the bucket's
                // lifecycle rule for incomplete uploads).
                tracing::warn!(key = ?self.key, "staging disk full: multipart upload not journaled");
                None
            }
            Ok(Err(e)) => {
                self.abort_unjournaled(&id).await;
                return Err(e.into());
            }
            Err(e) => {
                self.abort_unjournaled(&id).await;
                return Err(UploadError::Io(std::io::Error::other(e)));
            }
        };
        tracing::debug!(key = ?self.key, "multipart upload started");
        let up = Upload {
            key: self.key.clone(),
            id,
            journal,
            mtime: self.mtime,
            posix: self.posix,
        };
        self.upload = Some(up.clone());
        Ok(up)
    }

    async fn abort_unjournaled(&self, id: &UploadId) {
        if let Err(e) = self.backend.abort_multipart(&self.key, id).await {
            tracing::warn!(key = ?self.key, error = %e, "could not abort multipart upload without journal");
        }
    }

    /// Wait until fewer than `max_concurrent_parts` requests are in flight.
    pub(super) async fn wait_for_slot(&mut self) {
        while self.tasks.len() >= self.uploader.config.max_concurrent_parts {
            match self.tasks.join_next().await {
                Some(r) => self.on_done(r),
                None => break,
            }
        }
    }

    /// Handle finished requests without waiting.
    pub(super) fn reap(&mut self) {
        while let Some(r) = self.tasks.try_join_next() {
            self.on_done(r);
        }
    }

    /// Wait for every request in flight.
    pub(super) async fn drain(&mut self) {
        while let Some(r) = self.tasks.join_next().await {
            self.on_done(r);
        }
    }

    pub(super) fn on_done(&mut self, r: Result<PartDone, JoinError>) {
        let done = match r {
            Ok(d) => d,
            Err(e) => {
                // Only a panic gets here (tasks are never cancelled while the session lives).
                self.record_failure(UploadError::Io(std::io::Error::other(e)));
                return;
            }
        };
        let current = done.generation == self.generation;
        let Some(part) = self.parts.get_mut(&done.idx) else {
            return;
        };
        part.in_flight = false;
        if !current {
            return;
        }
        match done.result {
            Ok(cp) => {
                part.uploaded = Some(Uploaded {
                    etag: cp.etag,
                    len: done.len,
                    version: done.version,
                })
            }
            Err(e) => self.record_failure(e),
        }
    }

    pub(super) fn record_failure(&mut self, e: UploadError) {
        if self.failed.is_none() {
            tracing::warn!(key = ?self.key, error = %e, "background part upload failed");
            self.failed = Some(e);
        }
    }

    /// Detach from the current multipart upload: later results are ignored, every part
    /// counts as not uploaded. Returns the upload so the caller can abort it.
    pub(super) fn forget_upload(&mut self) -> Option<Upload> {
        let up = self.upload.take()?;
        self.generation += 1;
        for p in self.parts.values_mut() {
            p.uploaded = None;
            if p.evicted {
                // The aborted upload held the only copy of this part.
                self.lost = true;
            }
        }
        Some(up)
    }

    /// Abort the current multipart upload after its requests in flight have finished (so
    /// none lands after the abort).
    pub(super) async fn abort_upload(&mut self) {
        let Some(up) = self.forget_upload() else { return };
        self.drain().await;
        abort(&*self.backend, &up).await;
    }
}

/// Abort `up`; its journal goes once the service no longer holds the upload, and stays
/// (for the next mount's recovery) if the abort failed.
pub(super) async fn abort(backend: &dyn Backend, up: &Upload) {
    match backend.abort_multipart(&up.key, &up.id).await {
        Ok(()) => up.forget_journal(),
        Err(e) if e.kind() == crate::backend::BackendErrorKind::NoSuchUpload => up.forget_journal(),
        Err(e) => tracing::warn!(key = ?up.key, error = %e, "could not abort multipart upload; the next mount retries"),
    }
}

/// Abort `up` in the background once `tasks` have finished.
pub(super) fn spawn_abort(backend: Arc<dyn Backend>, up: Upload, mut tasks: JoinSet<PartDone>) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move {
                while tasks.join_next().await.is_some() {}
                abort(&*backend, &up).await;
            });
        }
        Err(_) => tracing::warn!(key = ?up.key, "no runtime to abort multipart upload; it stays open"),
    }
}
