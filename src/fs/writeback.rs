//! Write-back as the filesystem sees it (tenants with `write_back = true`; the queue itself is
//! `upload::writeback`).
//!
//! - Commit: a flush or last release of a file whose whole content is local (new or
//!   truncated, not yet streaming into a multipart upload) stages it and returns; `fsync`
//!   stages it too and then waits for its upload. Anything else, or a staging area without
//!   room, commits synchronously as without write-back, after any pending older version of
//!   the same name is uploaded (so the bucket never goes back to an older version).
//! - Names: lookup, getattr and readdir show a pending file with its closed size and mtime
//!   (never the bucket's older object or its absence); a read-only open reads its staged
//!   bytes. Opening it to modify in place, renaming it (or over it), or setting its mtime
//!   or mode first waits for its upload ("upload, then rename": one code path for objects);
//!   unlink cancels it; rmdir of a directory holding one is `ENOTEMPTY`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{debug, warn};

use super::handles::WriteState;
use super::{Entry, Filesystem, Result};
use crate::namespace::name::child_key;
use crate::namespace::{Inode, Kind, Stat};
use crate::tenant::Tenant;
use crate::upload::writeback::{EntryHeader, Pending, Scope, WriteBack};
use crate::upload::WriteSession;

/// Bytes read from a session and staged per step.
const STAGE_CHUNK: u64 = 1 << 20;

/// Why [`Filesystem::settle_tenant`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// No live tenant of that name.
    #[error("no tenant {0}")]
    NoTenant(String),
    /// Files were still queued when the time was up (their uploads go on in the background).
    #[error(
        "tenant {tenant}: {files} file(s) closed with write-back are still not uploaded after {secs} s{}",
        last.as_ref().map(|e| format!(" (last upload error: {e})")).unwrap_or_default()
    )]
    TimedOut {
        /// Tenant name.
        tenant: String,
        /// Files still queued.
        files: usize,
        /// The wait, in seconds.
        secs: u64,
        /// The last failed attempt seen while waiting.
        last: Option<String>,
    },
}

/// The queue scope of a tenant binding: its id, so equal keys of two tenants never meet.
pub(super) fn scope(tenant: &Tenant) -> Scope {
    Scope::from(tenant.id)
}

/// The attributes a pending file shows.
pub(super) fn pending_stat(tenant: &Tenant, p: &Pending) -> Stat {
    let stat = Stat::local(p.size, p.mtime, None);
    if tenant.posix_metadata && !p.posix.is_empty() {
        stat.with_posix(p.posix)
    } else {
        stat
    }
}

impl Filesystem {
    /// The mount's write-back queue.
    pub fn write_back(&self) -> &Arc<WriteBack> {
        &self.writeback
    }

    /// Stage `s`'s content for a background upload instead of committing it. `false` when the
    /// file cannot go that way (tenant without write-back, content not all local, staging
    /// full or failing): the caller commits synchronously.
    pub(super) async fn hand_off(&self, w: &WriteState, s: &mut WriteSession) -> bool {
        if !w.tenant.write_back || !s.is_local() {
            return false;
        }
        match self.stage(&w.tenant, s).await {
            Ok(true) => {
                s.mark_handed_off();
                true
            }
            Ok(false) => {
                debug!(tenant = %w.tenant.name, key = ?s.key(), "write-back: staging full, committing synchronously");
                false
            }
            Err(e) => {
                warn!(tenant = %w.tenant.name, key = ?s.key(), error = %e, "write-back: staging failed, committing synchronously");
                false
            }
        }
    }

    async fn stage(
        &self,
        tenant: &Tenant,
        s: &mut WriteSession,
    ) -> std::result::Result<bool, crate::upload::UploadError> {
        let size = s.size();
        let header = EntryHeader {
            owner: tenant.name.clone(),
            backend: tenant.backend.describe(),
            key: s.key().to_owned(),
            size,
            // Stored with the object, so the file keeps the mtime it had at close rather than
            // taking the upload's Last-Modified.
            mtime: s.mtime().unwrap_or_else(SystemTime::now),
            posix: s.posix(),
        };
        let Some(mut staged) = self
            .writeback
            .begin(scope(tenant), &tenant.name, tenant.backend.clone(), header)
        else {
            return Ok(false);
        };
        let mut at = 0;
        while at < size {
            // At most STAGE_CHUNK: fits any usize.
            let want = usize::try_from((size - at).min(STAGE_CHUNK)).unwrap_or(1 << 20);
            let data = s.read(at, want).await?;
            if data.is_empty() {
                break;
            }
            staged.write(&data).await?;
            at += u64::try_from(data.len()).unwrap_or(u64::MAX);
        }
        self.writeback.finish(staged).await?;
        Ok(true)
    }

    /// After a hand-off: the inode shows what was staged.
    pub(super) fn note_handed_off(&self, w: &WriteState, s: &WriteSession) {
        let mtime = s.mtime().unwrap_or_else(SystemTime::now);
        self.inodes.set_stat(w.ino, Stat::local(s.size(), mtime, None));
    }

    /// `name` in `parent` as a pending write-back file, if it is one.
    pub(super) fn pending_entry(&self, parent: &Inode, name: &str) -> Result<Option<Entry>> {
        if self.writeback.is_idle() {
            return Ok(None);
        }
        let Some(tenant) = parent.tenant.and_then(|id| self.tenants.get(id)) else {
            return Ok(None);
        };
        let key = child_key(&parent.key, name);
        let Some(p) = self.writeback.pending(scope(&tenant), &key) else {
            return Ok(None);
        };
        let stat = pending_stat(&tenant, &p);
        let inode = self
            .inodes
            .upsert_child(parent.ino, name, Some(tenant.id), Kind::File, stat, 1)?;
        Ok(Some(self.entry(&inode)))
    }

    /// The pending attributes of file `inode`, if it is pending.
    pub(super) fn pending_stat_of(&self, inode: &Inode) -> Option<Stat> {
        if self.writeback.is_idle() {
            return None;
        }
        let tenant = inode.tenant.and_then(|id| self.tenants.get(id))?;
        let p = self.writeback.pending(scope(&tenant), &inode.key)?;
        Some(pending_stat(&tenant, &p))
    }

    /// Wait, at most `limit`, until every file of tenant `name` (its live binding) closed with
    /// write-back is uploaded, so the bucket holds what the mount shows (`byosfs migrate
    /// --freeze` before its final pass). A failed attempt does not end the wait: the queue
    /// retries it with backoff, and its error is reported if time runs out. Returns the number
    /// of files that were queued at the start.
    pub async fn settle_tenant(&self, name: &str, limit: Duration) -> std::result::Result<usize, SettleError> {
        let tenant = self
            .tenants
            .by_name(name)
            .ok_or_else(|| SettleError::NoTenant(name.to_owned()))?;
        let scope = scope(&tenant);
        let queued = self.writeback.pending_under(scope, "").len();
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = None;
        // Bounded by the deadline; each round ends with the queue empty or a new failed attempt.
        loop {
            match tokio::time::timeout_at(deadline, self.writeback.wait_under(scope, "")).await {
                Ok(Ok(())) => return Ok(queued),
                Ok(Err(e)) => last = Some(e.to_string()),
                Err(_) => {
                    return Err(SettleError::TimedOut {
                        tenant: name.to_owned(),
                        files: self.writeback.pending_under(scope, "").len(),
                        secs: limit.as_secs(),
                        last,
                    })
                }
            }
        }
    }

    /// Wait until no closed version of `key` is left to upload (the bucket then has the
    /// file as this mount shows it).
    pub(super) async fn settle(&self, tenant: &Tenant, key: &str) -> Result<()> {
        if self.writeback.is_idle() {
            return Ok(());
        }
        self.writeback.wait_uploaded(scope(tenant), key).await?;
        Ok(())
    }
}
