//! Startup recovery: before a mount is served, clean up what a crashed earlier process left
//! in the staging directory.
//!
//! Each uploader owns `<staging_dir>/byosfs-<pid>-<n>/` (see [`crate::upload`]). A directory
//! whose process is gone belongs to a crashed run. For every upload journal in it the
//! multipart upload is aborted through the tenant that started it, then the directory's
//! staged data is deleted, with one log line per file. Only uploads named in our own
//! journals are touched: other programs' uploads in the same bucket are never listed, let
//! alone aborted.
//!
//! Why abort and never finish an upload: `flush` (every `close()`) and `fsync()` commit the
//! object before they return (`fs/write.rs`), and after a commit the session starts a *new*
//! multipart upload for later writes. So every upload a journal names holds only bytes that
//! no `close()` or `fsync()` acknowledged, while everything acknowledged is already a
//! complete object in the bucket. Completing such an upload would publish a partial file the
//! writer never committed (exactly the "partial object" a crash must not create) and could
//! overwrite the acknowledged version with it. Resuming would be needed only if fsync
//! acknowledged data held merely in staging, which this design never does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::backend::{Backend, BackendErrorKind};
use crate::tenant::TenantTable;
use crate::upload::journal::{self, JournalRecord, JOURNAL_SUFFIX};
use crate::upload::STAGING_ROOT_PREFIX;

/// What [`recover_staging`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Staging directories of crashed processes found.
    pub crashed_runs: usize,
    /// Multipart uploads aborted (or found already gone).
    pub aborted: usize,
    /// Journals kept for a later attempt (unknown tenant, or the abort failed).
    pub kept: usize,
    /// Bytes of staged, never acknowledged data deleted.
    pub discarded_bytes: u64,
}

/// The pid in a staging root's name `byosfs-<pid>-<n>`.
fn pid_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(STAGING_ROOT_PREFIX)?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Whether the process that made a staging root may still be running (then it is left
/// alone). A reused pid only postpones the cleanup to a later mount.
fn may_be_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    match std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")) {
        // `pid (comm) S ...`: a zombie (Z) or dead (X) process is not running any more.
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => false,
    }
}

/// The backend to abort `r` through: the tenant it names, if it still points where the
/// upload was made; otherwise any tenant that does (the tenant was renamed).
fn backend_for(r: &JournalRecord, tenants: &TenantTable) -> Option<Arc<dyn Backend>> {
    if let Some(t) = tenants.by_name(&r.owner) {
        if t.backend.describe() == r.backend {
            return Some(t.backend.clone());
        }
    }
    tenants
        .snapshot()
        .into_iter()
        .find(|t| t.backend.describe() == r.backend)
        .map(|t| t.backend.clone())
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Recover every crashed run's staging root in `staging_dir`. Each abort is bounded by
/// `timeout`; failures are logged and their journals kept, never fatal.
pub async fn recover_staging(staging_dir: &Path, tenants: &TenantTable, timeout: Duration) -> RecoveryReport {
    let mut report = RecoveryReport::default();
    let entries = match std::fs::read_dir(staging_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return report,
        Err(e) => {
            warn!(dir = %staging_dir.display(), error = %e, "cannot scan the staging directory for crashed runs");
            return report;
        }
    };
    let mut roots: Vec<PathBuf> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = pid_of(&name.to_string_lossy()) else {
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if may_be_running(pid) {
            debug!(dir = %entry.path().display(), "staging of a running process, left alone");
            continue;
        }
        roots.push(entry.path());
    }
    roots.sort();
    for root in roots {
        report.crashed_runs += 1;
        recover_root(&root, tenants, timeout, &mut report).await;
    }
    report
}

async fn recover_root(root: &Path, tenants: &TenantTable, timeout: Duration, report: &mut RecoveryReport) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    let mut files: Vec<(PathBuf, bool)> = entries
        .flatten()
        .map(|e| (e.path(), e.file_type().is_ok_and(|t| t.is_dir())))
        .collect();
    files.sort();
    for (path, is_dir) in &files {
        if *is_dir {
            let bytes = dir_bytes(path);
            report.discarded_bytes += bytes;
            info!(
                session = %path.display(),
                bytes,
                "crash recovery: discarding staged data that was never closed or fsynced"
            );
        } else if path.to_string_lossy().ends_with(JOURNAL_SUFFIX) {
            if recover_journal(path, tenants, timeout).await {
                report.aborted += 1;
                if let Err(e) = std::fs::remove_file(path) {
                    warn!(journal = %path.display(), error = %e, "could not remove journal");
                }
            } else {
                report.kept += 1;
            }
        }
    }
    match crate::upload::remove_all_but_journals(root) {
        Ok(0) => {
            if let Err(e) = std::fs::remove_dir(root) {
                warn!(dir = %root.display(), error = %e, "could not remove crashed run's staging directory");
            }
        }
        Ok(_) => {}
        Err(e) => warn!(dir = %root.display(), error = %e, "could not delete crashed run's staged data"),
    }
}

/// Abort the upload `path` records; `true` when the journal is done with.
async fn recover_journal(path: &Path, tenants: &TenantTable, timeout: Duration) -> bool {
    let record = match journal::read(path) {
        Ok(r) => r,
        Err(e) => {
            // Written before its upload's first part: a damaged header means the crash came
            // before any part was sent, or the file was tampered with. Nothing to abort by.
            warn!(journal = %path.display(), error = %e, "crash recovery: unreadable upload journal removed");
            return true;
        }
    };
    let Some(backend) = backend_for(&record, tenants) else {
        warn!(
            tenant = %record.owner,
            backend = %record.backend,
            key = %record.key,
            "crash recovery: no configured tenant uses this backend any more; multipart upload left open, journal kept"
        );
        return false;
    };
    let result = tokio::time::timeout(timeout, backend.abort_multipart(&record.key, &record.upload_id)).await;
    match result {
        Ok(Ok(())) => {
            info!(
                tenant = %record.owner,
                key = %record.key,
                parts = record.parts.len(),
                "crash recovery: aborted unfinished upload (the file was not closed or fsynced before the crash; its last acknowledged version is unchanged)"
            );
            true
        }
        Ok(Err(e)) if matches!(e.kind(), BackendErrorKind::NoSuchUpload) => {
            info!(tenant = %record.owner, key = %record.key, "crash recovery: unfinished upload already gone");
            true
        }
        Ok(Err(e)) => {
            warn!(tenant = %record.owner, key = %record.key, error = %e, "crash recovery: abort failed; journal kept for the next mount");
            false
        }
        Err(_) => {
            warn!(tenant = %record.owner, key = %record.key, "crash recovery: abort timed out; journal kept for the next mount");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::{InMemoryBackend, Op};
    use crate::backend::prefix::PrefixBackend;
    use crate::tenant::TenantSpec;
    use crate::upload::{UploadConfig, Uploader};

    const MIB: usize = 1 << 20;

    fn tenants(inner: Arc<InMemoryBackend>) -> TenantTable {
        let spec = |name: &str, prefix: &str| TenantSpec {
            name: name.into(),
            backend: Arc::new(PrefixBackend::new(inner.clone(), prefix)),
            read_only: false,
            uid: 0,
            gid: 0,
            mode: 0o755,
            posix_metadata: false,
            exclusive_create: false,
        };
        TenantTable::new(vec![spec("acme", "acme/"), spec("beta", "beta/")])
    }

    #[test]
    fn parses_root_names() {
        assert_eq!(pid_of("byosfs-123-0"), Some(123));
        assert_eq!(pid_of("byosfs-123"), None);
        assert_eq!(pid_of("byosfs-x-1"), None);
        assert_eq!(pid_of("other-1-2"), None);
    }

    /// A crashed run = an uploader root renamed to a pid that cannot exist.
    fn fake_crash(root: &Path) -> PathBuf {
        let dead = root.with_file_name(format!("{STAGING_ROOT_PREFIX}{}-7", u32::MAX));
        std::fs::rename(root, &dead).unwrap();
        dead
    }

    #[tokio::test]
    async fn aborts_own_uploads_only_and_deletes_staging() {
        let inner = Arc::new(InMemoryBackend::new());
        let table = tenants(inner.clone());
        let acme = table.by_name("acme").unwrap().backend.clone();
        let staging = tempfile::tempdir().unwrap();
        // Someone else's upload in the same bucket.
        let foreign = inner.create_multipart("acme/other-program.bin").await.unwrap();

        let uploader = Uploader::new(UploadConfig {
            part_size: 5 * MIB as u64,
            staging_dir: staging.path().to_path_buf(),
            ..UploadConfig::default()
        })
        .unwrap();
        let mut s = uploader.start_for("acme", acme.clone(), "big.bin".into(), None);
        s.write(0, &vec![7u8; 11 * MIB]).await.unwrap();
        // Let the two finished parts upload (journaled), then "crash": leak the session.
        for _ in 0..200 {
            if inner.count(Op::UploadPart) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(inner.open_uploads(), 2);
        let root = uploader.root().to_path_buf();
        std::mem::forget(s);
        let dead = fake_crash(&root);
        let journals: Vec<_> = std::fs::read_dir(&dead)
            .unwrap()
            .flatten()
            .filter(|e| e.path().to_string_lossy().ends_with(JOURNAL_SUFFIX))
            .collect();
        assert_eq!(journals.len(), 1);
        let rec = journal::read(&journals[0].path()).unwrap();
        assert_eq!((rec.owner.as_str(), rec.key.as_str()), ("acme", "big.bin"));
        assert_eq!(rec.parts.len(), 2);

        let report = recover_staging(staging.path(), &table, Duration::from_secs(5)).await;
        assert_eq!(report.crashed_runs, 1);
        assert_eq!(report.aborted, 1);
        assert_eq!(report.kept, 0);
        assert!(report.discarded_bytes >= 10 * MIB as u64);
        assert!(!dead.exists());
        let open = inner.list_multipart_uploads("").await.unwrap();
        assert_eq!(open.len(), 1, "only the foreign upload is left: {open:?}");
        assert_eq!(open[0].upload_id, foreign);
        assert!(inner.object("acme/big.bin").is_none());
    }

    #[tokio::test]
    async fn unknown_tenant_keeps_journal_and_running_roots_are_skipped() {
        let inner = Arc::new(InMemoryBackend::new());
        let staging = tempfile::tempdir().unwrap();
        let uploader = Uploader::new(UploadConfig {
            part_size: 5 * MIB as u64,
            staging_dir: staging.path().to_path_buf(),
            ..UploadConfig::default()
        })
        .unwrap();
        let gone: Arc<dyn Backend> = Arc::new(PrefixBackend::new(inner.clone(), "gone/"));
        let mut s = uploader.start_for("gone", gone, "f".into(), None);
        s.write(0, &vec![1u8; 6 * MIB]).await.unwrap();
        for _ in 0..200 {
            if inner.count(Op::UploadPart) >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A running process's root (ours) is left alone.
        let table = tenants(inner.clone());
        let report = recover_staging(staging.path(), &table, Duration::from_secs(5)).await;
        assert_eq!(report, RecoveryReport::default());
        let root = uploader.root().to_path_buf();
        std::mem::forget(s);
        let dead = fake_crash(&root);
        let report = recover_staging(staging.path(), &table, Duration::from_secs(5)).await;
        assert_eq!((report.crashed_runs, report.aborted, report.kept), (1, 0, 1));
        // Staged data is gone, the journal stays for a later mount.
        let left: Vec<_> = std::fs::read_dir(&dead).unwrap().flatten().collect();
        assert_eq!(left.len(), 1);
        assert_eq!(inner.open_uploads(), 1);
    }
}
