//! The tenant limits of `crate::limits` applied to filesystem operations: extension rules at
//! create, `max_file_size` and the quota on every size change of a file being written, the
//! quota recount, and `statfs` answering per tenant.
//!
//! A refused write aborts the file's upload and marks its session refused: no later flush or
//! release publishes anything of it, and no multipart upload is left behind.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::handles::WriteState;
use super::{attr, Error, Filesystem, Result, StatFs};
use crate::backend::ListParams;
use crate::limits::LimitError;
use crate::namespace::Stat;
use crate::tenant::Tenant;
use crate::upload::WriteSession;

/// Pages of 1000 keys a quota count reads at most (100 million objects).
const MAX_COUNT_PAGES: usize = 100_000;

impl WriteState {
    /// The limit that refused this file's writes, if one did.
    pub(super) fn refused_error(&self) -> Option<LimitError> {
        self.refused.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Filesystem {
    /// Refuse creating `name` in `tenant` against its extension rules (EPERM, logged with the
    /// rule).
    pub(super) fn check_name(&self, tenant: &Tenant, name: &str) -> Result<()> {
        tenant.policy.rules.check_name(name).map_err(|e| {
            warn!(tenant = %tenant.name, error = %e, "create refused by a tenant limit");
            Error::from(e)
        })
    }

    /// Whether the file of `w` (stored as `key`) may become `size` bytes long; counts the
    /// change in the quota usage when it may.
    pub(super) fn admit_size(&self, w: &WriteState, key: &str, size: u64) -> std::result::Result<(), LimitError> {
        let limits = &w.tenant.policy;
        limits.rules.check_size(size)?;
        let from = w.accounted.load(Ordering::Acquire);
        if from != size {
            limits.usage.resize(limits.rules.quota, key, from, size)?;
            w.accounted.store(size, Ordering::Release);
        }
        Ok(())
    }

    /// Count the file of `w` (stored as `key`) as `size` bytes from now on (truncation:
    /// never refused).
    pub(super) fn account(&self, w: &WriteState, key: &str, size: u64) {
        let from = w.accounted.swap(size, Ordering::AcqRel);
        // Shrinking or a quota-less resize cannot fail.
        let _ = w.tenant.policy.usage.resize(None, key, from, size);
    }

    /// A limit refused a write to `w`: abort its upload, uncount what it had added, and make
    /// every later commit of it fail with the same error.
    pub(super) async fn refuse(&self, w: &WriteState, s: &mut WriteSession, e: LimitError) -> Error {
        warn!(tenant = %w.tenant.name, ino = w.ino, error = %e, "write refused by a tenant limit; upload aborted");
        s.abort().await;
        // The object (if any) is left as it was: count it at its old size again, and show it
        // so (a refused new file is an empty name until it is written again).
        self.account(w, s.key(), w.base_size);
        self.inodes
            .set_stat(w.ino, Stat::local(w.base_size, std::time::SystemTime::now(), None));
        *w.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
        w.needs_commit.store(false, Ordering::Release);
        Error::from(e)
    }

    /// Filesystem statistics for `ino`: inside a tenant with a quota, the quota and its usage
    /// (so `df` on the tenant directory shows them); elsewhere a large, stable figure that
    /// never makes tools refuse to write (object stores have no fixed capacity).
    pub fn statfs_of(&self, ino: u64) -> StatFs {
        let base = self.statfs();
        let tenant = self.inodes.tenant(ino).and_then(|id| self.tenants.get(id));
        let Some((quota, used)) = tenant.and_then(|t| Some((t.policy.rules.quota?, t.policy.usage.used()))) else {
            return base;
        };
        let bsize = u64::from(attr::BLKSIZE);
        let blocks = quota.div_ceil(bsize);
        let free = quota.saturating_sub(used) / bsize;
        StatFs {
            blocks,
            bfree: free,
            bavail: free,
            ..base
        }
    }

    /// Count the bytes of every tenant with a quota whose count is due (never counted, or
    /// older than its `quota_recount`). Called by a background task of the mount.
    ///
    /// The count is reconciled with this mount's own changes made while it runs and with
    /// the bytes of files it holds open or queued for write-back (see `crate::limits`).
    pub async fn recount_quotas(&self) {
        for t in self.tenants.snapshot() {
            if t.policy.rules.quota.is_none() || !t.policy.usage.count_due(t.policy.recount) {
                continue;
            }
            let usage = &t.policy.usage;
            let first = !usage.is_counted();
            // Changes are recorded from here on; what is held open is gathered after, writers
            // before the write-back queue (a closing writer is queued before it is dropped).
            usage.begin_count([]);
            for (key, size) in self.held_by(&t) {
                usage.hold(&key, size);
            }
            match count_bytes(&t).await {
                Ok(()) => {
                    let Some(total) = usage.finish_count() else {
                        continue;
                    };
                    if first {
                        info!(tenant = %t.name, bytes = total, "quota usage counted");
                    } else {
                        debug!(tenant = %t.name, bytes = total, "quota usage recounted");
                    }
                }
                Err(e) => {
                    usage.abandon_count();
                    warn!(tenant = %t.name, error = %e, "quota count failed; retried later");
                }
            }
        }
    }

    /// Files of `t` whose bytes the bucket may not hold yet, with the bytes counted for each:
    /// open writers, then closed files queued for write-back.
    fn held_by(&self, t: &Tenant) -> Vec<(String, u64)> {
        let writers: Vec<_> = self
            .writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|w| w.tenant.id == t.id)
            .cloned()
            .collect();
        let mut held: Vec<(String, u64)> = writers
            .iter()
            .filter_map(|w| {
                let key = self.inodes.get(w.ino).ok()?.key;
                Some((key, w.accounted.load(Ordering::Acquire)))
            })
            .collect();
        held.extend(
            self.writeback
                .pending_under(super::writeback::scope(t), "")
                .into_iter()
                .map(|(k, p)| (k, p.size)),
        );
        held
    }

    /// How long the mount's recount task may sleep between rounds.
    pub fn quota_tick(&self) -> Option<Duration> {
        self.tenants
            .snapshot()
            .iter()
            .filter(|t| t.policy.rules.quota.is_some())
            .map(|t| t.policy.recount.clamp(Duration::from_secs(1), Duration::from_secs(60)))
            .min()
    }
}

/// List every object under the tenant's prefix (a flat listing, in key order) into the
/// tenant's running count.
async fn count_bytes(t: &Arc<Tenant>) -> Result<()> {
    let mut token = None;
    for _ in 0..MAX_COUNT_PAGES {
        let page = t
            .backend
            .list(&ListParams::new("", false).with_continuation(token))
            .await?;
        t.policy
            .usage
            .count_page(page.objects.iter().map(|o| (o.key.as_str(), o.size)));
        token = page.next;
        if token.is_none() {
            return Ok(());
        }
    }
    Err(Error::new(libc::EIO, "quota count: listing did not end"))
}
