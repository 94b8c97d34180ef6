//! Startup recovery: before a mount is served, clean up what a crashed earlier process left
//! in the staging directory.
//!
//! Each uploader owns `<staging_dir>/byosfs-<pid>-<n>/` (see [`crate::upload::root`]) and
//! holds the `flock` of the lock file inside for as long as it lives. A root whose lock can
//! be taken belongs to a crashed run, in whatever PID namespace it ran: mounts in different
//! containers sharing one staging volume never take each other's live roots for dead (a PID
//! is only looked at for roots of older versions, which have no lock file). The recovering
//! process keeps the lock while it cleans up, so two mounts never recover one root together.
//! For every upload journal in a crashed root the
//! multipart upload is aborted through the tenant that started it, then the directory's
//! staged data is deleted, with one log line per file. Only uploads named in our own
//! journals are touched: other programs' uploads in the same bucket are never listed, let
//! alone aborted.
//!
//! Closed files a crashed run staged for write-back (`crate::upload::writeback`) are the
//! opposite case: a `close()` acknowledged each of them, so they are never deleted here
//! (only files that fail `writeback::check` as cut short, whose close never returned, and
//! empty names made ahead that no close used, are).
//! Each is moved into this mount's write-back queue before the mount serves, so its name
//! shows the closed content from the first lookup on, and is uploaded from there; one whose
//! tenant is gone stays where it is, named in the log, for a later mount.
//!
//! Why abort and never finish an upload: `flush` (every `close()`) and `fsync()` commit the
//! object before they return (`fs/write.rs`), and after a commit the session starts a *new*
//! multipart upload for later writes. So every upload a journal names holds only bytes that
//! no `close()` or `fsync()` acknowledged, while everything acknowledged is already a
//! complete object in the bucket. Completing such an upload would publish a partial file the
//! writer never committed (exactly the "partial object" a crash must not create) and could
//! overwrite the acknowledged version with it. Resuming would be needed only if fsync
//! acknowledged data held merely in staging, which this design never does.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use crate::backend::{Backend, BackendErrorKind};
use crate::tenant::{Tenant, TenantTable};
use crate::upload::journal::{self, JournalRecord, JOURNAL_SUFFIX};
use crate::upload::root::{self, Liveness};
use crate::upload::writeback::{self, WriteBack, WB_SUFFIX};

/// What [`recover_staging`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RecoveryReport {
    /// Staging directories of crashed processes found.
    pub(crate) crashed_runs: usize,
    /// Multipart uploads aborted (or found already gone).
    pub(crate) aborted: usize,
    /// Journals kept for a later attempt (unknown tenant, or the abort failed).
    pub(crate) kept: usize,
    /// Bytes of staged, never acknowledged data deleted.
    pub(crate) discarded_bytes: u64,
    /// Closed files staged for write-back, taken over by this mount to upload.
    pub adopted: usize,
    /// Of those files, kept where they are (no tenant uses their storage any more, or
    /// damaged).
    pub adopt_kept: usize,
    /// Write-back files whose close never returned (cut short by the crash), deleted.
    pub torn: usize,
}

/// For a root without a lock file (made by an older byosfs): whether the process named by
/// its pid may still be running (then it is left alone). A reused pid only postpones the
/// cleanup; a pid from another PID namespace is not seen at all, which is why roots now
/// carry a lock.
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
    tenant_for(&r.owner, &r.backend, tenants).map(|t| t.backend.clone())
}

/// The tenant named `owner` if it still points at `backend` (a backend's `describe()`);
/// otherwise any tenant that does (the tenant was renamed).
fn tenant_for(owner: &str, backend: &str, tenants: &TenantTable) -> Option<Arc<Tenant>> {
    if let Some(t) = tenants.by_name(owner) {
        if t.backend.describe() == backend {
            return Some(t);
        }
    }
    tenants.snapshot().into_iter().find(|t| t.backend.describe() == backend)
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
/// `timeout`; failures are logged and their journals kept, never fatal. Closed files a run
/// staged for write-back are handed to `wb` (this mount's queue) to upload; without one they
/// stay where they are.
pub(crate) async fn recover_staging(
    staging_dir: &Path,
    tenants: &TenantTable,
    timeout: Duration,
    wb: Option<&Arc<WriteBack>>,
) -> RecoveryReport {
    let mut report = RecoveryReport::default();
    let entries = match std::fs::read_dir(staging_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return report,
        Err(e) => {
            warn!(dir = %staging_dir.display(), error = %e, "cannot scan the staging directory for crashed runs");
            return report;
        }
    };
    let staging = match root::open_dir(staging_dir) {
        Ok(fd) => fd,
        Err(e) => {
            warn!(dir = %staging_dir.display(), error = %e, "cannot open the staging directory for crash recovery");
            return report;
        }
    };
    let mut roots: Vec<(PathBuf, OwnedFd, Option<OwnedFd>)> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(text) = name.to_str().filter(|n| root::is_root_name(n)) else {
            continue;
        };
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            warn!(entry = ?path, "crash recovery: skipping an entry named like a staging root that is not a directory");
            continue;
        }
        let dir = match root::open_own_dir(&staging, &name) {
            Ok(fd) => fd,
            Err(e) => {
                warn!(dir = ?path, error = %e, "crash recovery: skipping staging root");
                continue;
            }
        };
        match root::liveness(&dir) {
            Ok(Liveness::Alive) => debug!(dir = %path.display(), "staging of a running process, left alone"),
            Ok(Liveness::Dead(lock)) => roots.push((path, dir, Some(lock))),
            Ok(Liveness::NoLock) => match root::pid_of(text) {
                Some(pid) if !may_be_running(pid) => roots.push((path, dir, None)),
                _ => debug!(dir = %path.display(), "staging without a lock file whose pid is in use, left alone"),
            },
            Err(e) => {
                warn!(dir = ?path, error = %e, "crash recovery: cannot tell whether a staging root is in use; left alone")
            }
        }
    }
    roots.sort_by(|a, b| a.0.cmp(&b.0));
    for (root, dir, lock) in roots {
        report.crashed_runs += 1;
        recover_root(&root, &dir, tenants, timeout, wb, &mut report).await;
        // Held until the root is cleaned up (or kept with its journals), then released.
        drop(lock);
    }
    report
}

async fn recover_root(
    root: &Path,
    dir: &OwnedFd,
    tenants: &TenantTable,
    timeout: Duration,
    wb: Option<&Arc<WriteBack>>,
    report: &mut RecoveryReport,
) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    let mut files: Vec<(PathBuf, std::fs::FileType)> = entries
        .flatten()
        .filter(|e| e.file_name() != root::LOCK_FILE)
        .filter_map(|e| Some((e.path(), e.file_type().ok()?)))
        .collect();
    // Write-back files in the order their closes happened (by id, not by name: "w10" sorts
    // before "w9"), so when two versions of one name are staged the newer one is adopted
    // last and replaces the older in the queue, never the other way round.
    let close_order = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(writeback::id_of)
            .unwrap_or(u64::MAX)
    };
    files.sort_by(|a, b| close_order(&a.0).cmp(&close_order(&b.0)).then_with(|| a.0.cmp(&b.0)));
    for (path, kind) in &files {
        if !kind.is_dir() && !kind.is_file() {
            // Nothing byosfs makes: read nothing through it, wait on nothing; it is
            // unlinked with the rest (which touches no target).
            warn!(entry = ?path, "crash recovery: skipping an unexpected entry (symlink, FIFO, socket or device)");
        } else if kind.is_dir() {
            let bytes = dir_bytes(path);
            report.discarded_bytes += bytes;
            info!(
                session = %path.display(),
                bytes,
                "crash recovery: discarding staged data that was never closed or fsynced"
            );
        } else if path.to_string_lossy().ends_with(WB_SUFFIX) {
            match adopt(dir, path, tenants, wb) {
                Adoption::Adopted => report.adopted += 1,
                Adoption::Kept => report.adopt_kept += 1,
                Adoption::Torn => report.torn += 1,
                Adoption::Unused => {}
            }
        } else if path.to_string_lossy().ends_with(JOURNAL_SUFFIX) {
            match recover_journal(dir, path, tenants, timeout).await {
                Some(true) => {
                    report.aborted += 1;
                    if let Err(e) = std::fs::remove_file(path) {
                        warn!(journal = %path.display(), error = %e, "could not remove journal");
                    }
                }
                Some(false) => report.kept += 1,
                None => {}
            }
        }
    }
    match crate::upload::remove_all_but_journals(root) {
        Ok(0) => {
            let _ = std::fs::remove_file(root.join(root::LOCK_FILE));
            if let Err(e) = std::fs::remove_dir(root) {
                warn!(dir = %root.display(), error = %e, "could not remove crashed run's staging directory");
            }
        }
        Ok(_) => {}
        Err(e) => warn!(dir = %root.display(), error = %e, "could not delete crashed run's staged data"),
    }
}

/// What became of one staged write-back file of a crashed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adoption {
    /// Queued in this mount.
    Adopted,
    /// Left where it is (no queue, no tenant on its storage, unreadable, damaged), to be
    /// tried again by a later mount or inspected.
    Kept,
    /// Cut short or without its trailer: its close never returned. Deleted.
    Torn,
    /// An empty name made ahead that no close used. Deleted.
    Unused,
}

/// Hand the staged write-back file at `path` (in the root open as `dir`) to `wb`. A file
/// whose close returned is complete (trailer and checksum valid, `writeback::check`) and is
/// never deleted here; only a file that is not a complete version goes (see [`Adoption`]).
fn adopt(dir: &OwnedFd, path: &Path, tenants: &TenantTable, wb: Option<&Arc<WriteBack>>) -> Adoption {
    let Some(name) = path.file_name() else {
        return Adoption::Kept;
    };
    let file = match root::open_own_file(dir, name, u64::MAX) {
        Ok(f) => f,
        Err(e) => {
            warn!(file = ?path, error = %e, "crash recovery: skipping a write-back file that is not a regular file of ours");
            return Adoption::Kept;
        }
    };
    let (header, offset) = match writeback::check(&file) {
        Ok(found) => found,
        Err(writeback::Invalid::Unused) => {
            remove_quietly(path);
            return Adoption::Unused;
        }
        Err(e @ writeback::Invalid::Incomplete(_)) => {
            info!(file = %path.display(), error = %e, "crash recovery: discarding a write-back file whose close never returned");
            remove_quietly(path);
            return Adoption::Torn;
        }
        Err(e) => {
            error!(file = %path.display(), error = %e, "crash recovery: damaged write-back file kept for inspection; not uploaded");
            return Adoption::Kept;
        }
    };
    let Some(tenant) = tenant_for(&header.owner, &header.backend, tenants) else {
        warn!(
            tenant = %header.owner,
            backend = %header.backend,
            key = ?header.key,
            "crash recovery: a closed file waits for upload but no configured tenant uses its storage any more; kept"
        );
        return Adoption::Kept;
    };
    let Some(wb) = wb else { return Adoption::Kept };
    match wb.adopt(
        header.clone(),
        offset,
        path,
        u64::from(tenant.id),
        tenant.backend.clone(),
    ) {
        Ok(()) => {
            info!(
                tenant = %tenant.name,
                key = ?header.key,
                size = header.size,
                "crash recovery: a closed file was not uploaded yet; queued for upload"
            );
            Adoption::Adopted
        }
        Err(e) => {
            warn!(tenant = %tenant.name, key = ?header.key, error = %e, "crash recovery: could not take over a write-back file; kept");
            Adoption::Kept
        }
    }
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        warn!(file = %path.display(), error = %e, "crash recovery: could not delete a write-back file");
    }
}

/// Abort the upload the journal at `path` (in the root open as `dir`) records; `Some(true)`
/// when the journal is done with, `Some(false)` to keep it, `None` when it is not ours to
/// read (another user's, or too large to be a journal).
async fn recover_journal(dir: &OwnedFd, path: &Path, tenants: &TenantTable, timeout: Duration) -> Option<bool> {
    let name = path.file_name()?;
    let file = match root::open_own_file(dir, name, journal::MAX_JOURNAL_BYTES) {
        Ok(f) => f,
        Err(e) => {
            warn!(journal = ?path, error = %e, "crash recovery: skipping a journal that is not a regular file of ours");
            return None;
        }
    };
    let record = match journal::read_from(file) {
        Ok(r) => r,
        Err(e) => {
            // Written before its upload's first part: a damaged header means the crash came
            // before any part was sent, or the file was tampered with. Nothing to abort by.
            warn!(journal = %path.display(), error = %e, "crash recovery: unreadable upload journal removed");
            return Some(true);
        }
    };
    let Some(backend) = backend_for(&record, tenants) else {
        warn!(
            tenant = %record.owner,
            backend = %record.backend,
            key = ?record.key,
            "crash recovery: no configured tenant uses this backend any more; multipart upload left open, journal kept"
        );
        return Some(false);
    };
    let result = tokio::time::timeout(timeout, backend.abort_multipart(&record.key, &record.upload_id)).await;
    match result {
        Ok(Ok(())) => {
            info!(
                tenant = %record.owner,
                key = ?record.key,
                parts = record.parts.len(),
                "crash recovery: aborted unfinished upload (the file was not closed or fsynced before the crash; its last acknowledged version is unchanged)"
            );
            Some(true)
        }
        Ok(Err(e)) if matches!(e.kind(), BackendErrorKind::NoSuchUpload) => {
            info!(tenant = %record.owner, key = ?record.key, "crash recovery: unfinished upload already gone");
            Some(true)
        }
        Ok(Err(e)) => {
            warn!(tenant = %record.owner, key = ?record.key, error = %e, "crash recovery: abort failed; journal kept for the next mount");
            Some(false)
        }
        Err(_) => {
            warn!(tenant = %record.owner, key = ?record.key, "crash recovery: abort timed out; journal kept for the next mount");
            Some(false)
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
            policy: Default::default(),
            write_back: false,
        };
        TenantTable::new(vec![spec("acme", "acme/"), spec("beta", "beta/")])
    }

    /// A crashed run = an uploader root whose lock is free: the leaked uploader still holds
    /// the old lock file's lock, so the file is replaced by an unlocked one (the name is
    /// changed too, so the live uploader's paths no longer reach it).
    fn fake_crash(root: &Path) -> PathBuf {
        let dead = root.with_file_name(format!(
            "{}{}-7",
            crate::upload::STAGING_ROOT_PREFIX,
            std::process::id()
        ));
        std::fs::rename(root, &dead).unwrap();
        std::fs::remove_file(dead.join(root::LOCK_FILE)).unwrap();
        std::fs::write(dead.join(root::LOCK_FILE), b"").unwrap();
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

        let report = recover_staging(staging.path(), &table, Duration::from_secs(5), None).await;
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
        let report = recover_staging(staging.path(), &table, Duration::from_secs(5), None).await;
        assert_eq!(report, RecoveryReport::default());
        let root = uploader.root().to_path_buf();
        std::mem::forget(s);
        let dead = fake_crash(&root);
        let report = recover_staging(staging.path(), &table, Duration::from_secs(5), None).await;
        assert_eq!((report.crashed_runs, report.aborted, report.kept), (1, 0, 1));
        // Staged data is gone, the journal stays for a later mount.
        let left: Vec<_> = std::fs::read_dir(&dead)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != root::LOCK_FILE)
            .collect();
        assert_eq!(left.len(), 1);
        assert_eq!(inner.open_uploads(), 1);
    }

    /// A closed file of tenant "acme" staged for write-back as close `id`; its path.
    fn stage(slots: &writeback::Slots, acme: &dyn Backend, id: u64, key: &str, body: &[u8]) -> std::path::PathBuf {
        let header = writeback::EntryHeader {
            owner: "acme".into(),
            backend: acme.describe(),
            key: key.into(),
            size: body.len() as u64,
            mtime: std::time::SystemTime::now(),
            posix: Default::default(),
        };
        let mut w = writeback::EntryWriter::create(slots, id, &header).unwrap();
        w.write(body).unwrap();
        w.finish().unwrap().0
    }

    /// Two staged versions of one name (the one uploading and a newer close): the newer one
    /// is what the bucket ends up with, whatever order their file names sort in.
    #[tokio::test]
    async fn the_newest_staged_version_wins_after_a_crash() {
        let inner = Arc::new(InMemoryBackend::new());
        let table = tenants(inner.clone());
        let acme = table.by_name("acme").unwrap().backend.clone();
        let staging = tempfile::tempdir().unwrap();
        let config = || UploadConfig {
            part_size: 5 * MIB as u64,
            staging_dir: staging.path().to_path_buf(),
            ..UploadConfig::default()
        };
        let crashed = Uploader::new(config()).unwrap();
        let slots = writeback::Slots::new(crashed.root().to_path_buf());
        // Ids 9 and 10: "w10.wb" sorts before "w9.wb".
        for (id, body) in [(9, b"older".as_slice()), (10, b"newer".as_slice())] {
            stage(&slots, acme.as_ref(), id, "v.bin", body);
        }
        let root = crashed.root().to_path_buf();
        std::mem::forget(crashed);
        fake_crash(&root);

        let uploader = Uploader::new(config()).unwrap();
        let wb = WriteBack::new(uploader, Default::default());
        let report = recover_staging(staging.path(), &table, Duration::from_secs(5), Some(&wb)).await;
        assert_eq!(report.adopted, 2, "{report:?}");
        for _ in 0..500 {
            if wb.is_idle() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(wb.is_idle(), "{:?}", wb.summary());
        assert_eq!(inner.object("acme/v.bin").as_deref(), Some(b"newer".as_slice()));
    }

    /// A crash while a close was staging its file (cut short), a file damaged on disk after
    /// its close (a flipped byte) and a complete one: only the complete one is adopted; the
    /// torn one is deleted, the damaged one kept for inspection, neither uploaded.
    #[tokio::test]
    async fn only_complete_staged_files_are_adopted() {
        let inner = Arc::new(InMemoryBackend::new());
        let table = tenants(inner.clone());
        let acme = table.by_name("acme").unwrap().backend.clone();
        let staging = tempfile::tempdir().unwrap();
        let config = || UploadConfig {
            part_size: 5 * MIB as u64,
            staging_dir: staging.path().to_path_buf(),
            ..UploadConfig::default()
        };
        let crashed = Uploader::new(config()).unwrap();
        let slots = writeback::Slots::new(crashed.root().to_path_buf());
        let mut paths = Vec::new();
        for (id, key) in [(1, "whole.bin"), (2, "torn.bin"), (3, "damaged.bin")] {
            paths.push(stage(&slots, acme.as_ref(), id, key, &[b'x'; 1000]));
        }
        let torn = std::fs::OpenOptions::new().write(true).open(&paths[1]).unwrap();
        torn.set_len(torn.metadata().unwrap().len() - 30).unwrap();
        let mut damaged = std::fs::read(&paths[2]).unwrap();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 1;
        std::fs::write(&paths[2], damaged).unwrap();
        let root = crashed.root().to_path_buf();
        std::mem::forget(crashed);
        let root = fake_crash(&root);
        let paths: Vec<PathBuf> = paths.iter().map(|p| root.join(p.file_name().unwrap())).collect();

        let uploader = Uploader::new(config()).unwrap();
        let wb = WriteBack::new(uploader, Default::default());
        let report = recover_staging(staging.path(), &table, Duration::from_secs(5), Some(&wb)).await;
        assert_eq!(
            (report.adopted, report.torn, report.adopt_kept),
            (1, 1, 1),
            "{report:?}"
        );
        for _ in 0..500 {
            if wb.is_idle() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(wb.is_idle(), "{:?}", wb.summary());
        assert_eq!(
            inner.object("acme/whole.bin").as_deref(),
            Some(vec![b'x'; 1000].as_slice())
        );
        assert!(inner.object("acme/torn.bin").is_none());
        assert!(inner.object("acme/damaged.bin").is_none());
        assert!(!paths[1].exists(), "the torn file is deleted");
        assert!(paths[2].exists(), "the damaged file is kept for inspection");
        let left: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left.len(),
            2,
            "the damaged file and the lock, no unused names: {left:?}"
        );
    }

    /// Liveness is the lock, not the pid in the name: a live root named with a pid that does
    /// not exist here (a mount in another PID namespace) is left alone, and a crashed root
    /// named with a live pid (ours: a reused pid) is recovered.
    #[tokio::test]
    async fn liveness_is_the_lock_not_the_pid() {
        let inner = Arc::new(InMemoryBackend::new());
        let table = tenants(inner.clone());
        let acme = table.by_name("acme").unwrap().backend.clone();
        let staging = tempfile::tempdir().unwrap();
        let uploader = Uploader::new(UploadConfig {
            part_size: 5 * MIB as u64,
            staging_dir: staging.path().to_path_buf(),
            ..UploadConfig::default()
        })
        .unwrap();
        let mut s = uploader.start_for("acme", acme.clone(), "live.bin".into(), None);
        s.write(0, &vec![3u8; 6 * MIB]).await.unwrap();
        for _ in 0..200 {
            if inner.count(Op::UploadPart) >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(inner.open_uploads(), 1);
        // The live root under a name whose pid no process here has.
        let root = uploader.root().to_path_buf();
        let foreign = root.with_file_name(format!("{}{}-3", crate::upload::STAGING_ROOT_PREFIX, u32::MAX));
        std::fs::rename(&root, &foreign).unwrap();
        let report = recover_staging(staging.path(), &table, Duration::from_secs(5), None).await;
        assert_eq!(
            report,
            RecoveryReport::default(),
            "a locked root is alive whatever its name says"
        );
        assert_eq!(inner.open_uploads(), 1);
        assert!(foreign.exists());
        // The same root once its process is gone, named with a pid that is alive (ours).
        std::mem::forget(s);
        let dead = fake_crash(&foreign);
        assert!(dead
            .file_name()
            .unwrap()
            .to_string_lossy()
            .contains(&std::process::id().to_string()));
        let report = recover_staging(staging.path(), &table, Duration::from_secs(5), None).await;
        assert_eq!((report.crashed_runs, report.aborted), (1, 1), "{report:?}");
        assert_eq!(inner.open_uploads(), 0);
        assert!(!dead.exists());
    }

    /// Planted entries in a crashed root and next to it: a FIFO named like a journal (would
    /// block a plain read forever), a symlink journal pointing at a journal elsewhere (would
    /// abort someone else's upload), a symlink named like a staging root and another user's
    /// root. Recovery finishes promptly, reads none of them and touches nothing outside.
    #[tokio::test]
    async fn planted_symlinks_and_fifos_are_skipped() {
        let inner = Arc::new(InMemoryBackend::new());
        let table = tenants(inner.clone());
        let staging = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        // Someone's live upload, and a well-formed journal naming it, outside the staging dir.
        let victim = inner.create_multipart("acme/victim.bin").await.unwrap();
        let record = JournalRecord {
            owner: "acme".into(),
            backend: table.by_name("acme").unwrap().backend.describe(),
            key: "victim.bin".into(),
            upload_id: victim.clone(),
            part_size: 5 * MIB as u64,
            parts: Default::default(),
        };
        let outside_journal = outside.path().join("victim.journal");
        drop(journal::Journal::create(outside_journal.clone(), &record).unwrap());
        // A crashed root holding the planted entries.
        let dead = staging
            .path()
            .join(format!("{}{}-1", crate::upload::STAGING_ROOT_PREFIX, u32::MAX));
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(root::LOCK_FILE), b"").unwrap();
        let fifo = dead.join("s0-0.journal");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        std::os::unix::fs::symlink(&outside_journal, dead.join("s1-0.journal")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dead.join("s2")).unwrap();
        // A symlink named like a root, to a directory holding a journal.
        let linked = tempfile::tempdir().unwrap();
        std::fs::copy(&outside_journal, linked.path().join("s0-0.journal")).unwrap();
        std::os::unix::fs::symlink(linked.path(), staging.path().join("byosfs-4242-0")).unwrap();

        let report = tokio::time::timeout(
            Duration::from_secs(10),
            recover_staging(staging.path(), &table, Duration::from_secs(5), None),
        )
        .await
        .expect("recovery must not hang on a FIFO");
        assert_eq!(
            (report.crashed_runs, report.aborted, report.kept),
            (1, 0, 0),
            "{report:?}"
        );
        assert_eq!(inner.open_uploads(), 1, "the victim's upload is untouched");
        assert!(outside_journal.exists() && linked.path().join("s0-0.journal").exists());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
        assert!(!dead.exists(), "the planted names themselves are cleaned up");
    }
}
