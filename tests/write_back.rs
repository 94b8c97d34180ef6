//! Write-back through `Filesystem`, no kernel: `close()` returns without the bucket, names
//! show the closed version, unlink cancels, fsync waits, failures are retried and kept.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use byosfs::backend::fault::{FaultBackend, FaultRule};
use byosfs::backend::memory::{InMemoryBackend, Op};
use byosfs::backend::prefix::PrefixBackend;
use byosfs::backend::{Backend, BackendErrorKind};
use byosfs::cache::BlockCache;
use byosfs::fs::{DirEntry, DirReplier, Filesystem, FsConfig, NewNode};
use byosfs::namespace::ROOT_INO;
use byosfs::tenant::{TenantSpec, TenantTable};
use byosfs::upload::writeback::WriteBackConfig;
use byosfs::upload::{UploadConfig, Uploader};

const NEW: NewNode = NewNode {
    mode: 0o644,
    uid: 1000,
    gid: 1000,
};

struct Fixture {
    fs: Filesystem,
    bucket: Arc<InMemoryBackend>,
    faults: Arc<FaultBackend>,
    staging: tempfile::TempDir,
}

/// Tenant `wb` with write-back over a fault-injecting backend, and `sync` without.
fn fixture() -> Fixture {
    let bucket = Arc::new(InMemoryBackend::new());
    let faults = Arc::new(FaultBackend::new(bucket.clone()));
    let spec = |name: &str, write_back: bool| TenantSpec {
        name: name.to_owned(),
        backend: Arc::new(PrefixBackend::new(
            faults.clone() as Arc<dyn Backend>,
            &format!("{name}/"),
        )),
        read_only: false,
        uid: 1000,
        gid: 1000,
        mode: 0o755,
        posix_metadata: false,
        exclusive_create: false,
        policy: Default::default(),
        write_back,
    };
    let staging = tempfile::tempdir().unwrap();
    let uploader = Uploader::new(UploadConfig {
        part_size: 5 << 20,
        max_concurrent_parts: 4,
        memory_budget: 64 << 20,
        staging_dir: staging.path().to_owned(),
        staging_limit: 1 << 30,
    })
    .unwrap();
    let config = FsConfig {
        write_back: WriteBackConfig {
            concurrency: 4,
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_millis(100),
        },
        ..FsConfig::default()
    };
    let fs = Filesystem::new(
        TenantTable::new(vec![spec("wb", true), spec("sync", false)]),
        Arc::new(BlockCache::new(16 << 20, 1 << 20)),
        uploader,
        config,
    );
    Fixture {
        fs,
        bucket,
        faults,
        staging,
    }
}

struct Names(Vec<DirEntry>);

impl DirReplier for Names {
    fn add(&mut self, e: &DirEntry, _ttl: Duration) -> bool {
        self.0.push(e.clone());
        false
    }
}

async fn ino(fs: &Filesystem, path: &str) -> u64 {
    let mut cur = ROOT_INO;
    for part in path.split('/') {
        cur = fs.lookup(cur, OsStr::new(part)).await.unwrap().attr.ino;
    }
    cur
}

async fn write_file(fs: &Filesystem, dir: &str, name: &str, data: &[u8]) -> u64 {
    let parent = ino(fs, dir).await;
    let (e, o) = fs
        .create(parent, OsStr::new(name), libc::O_WRONLY | libc::O_CREAT, 0, NEW)
        .await
        .unwrap();
    fs.write(o.fh, 0, data).await.unwrap();
    fs.flush(o.fh, 0).await.unwrap();
    fs.release(o.fh).await.unwrap();
    e.attr.ino
}

async fn read_all(fs: &Filesystem, ino: u64) -> Vec<u8> {
    let o = fs.open(ino, libc::O_RDONLY, 0).await.unwrap();
    let data = fs.read(o.fh, 0, 1 << 20).await.unwrap().to_vec();
    fs.release(o.fh).await.unwrap();
    data
}

async fn names(fs: &Filesystem, dir: u64) -> Vec<String> {
    let fh = fs.opendir(dir).await.unwrap();
    let mut n = Names(Vec::new());
    fs.readdir(fh, 0, false, &mut n).await.unwrap();
    fs.releasedir(fh);
    let mut v: Vec<String> =
        n.0.into_iter()
            .map(|e| e.name)
            .filter(|n| n != "." && n != "..")
            .collect();
    v.sort();
    v
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 5 s");
}

fn puts_fail(f: &Fixture) {
    f.faults
        .set_rule(Some(FaultRule::always(&[Op::Put], BackendErrorKind::Unreachable)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_returns_without_the_bucket_and_the_mount_shows_the_closed_file() {
    let f = fixture();
    puts_fail(&f);
    let ino = write_file(&f.fs, "wb", "new.txt", b"closed content").await;
    // The bucket refuses every PUT, yet close returned: the file is staged.
    assert!(f.bucket.object("wb/new.txt").is_none());
    let root = self::ino(&f.fs, "wb").await;
    f.fs.forget(ino, 1);
    let e = f.fs.lookup(root, OsStr::new("new.txt")).await.unwrap();
    assert_eq!(e.attr.size, 14);
    assert_eq!(f.fs.getattr(e.attr.ino).await.unwrap().attr.size, 14);
    assert_eq!(read_all(&f.fs, e.attr.ino).await, b"closed content");
    assert_eq!(names(&f.fs, root).await, ["new.txt"]);
    let s = f.fs.write_back().summary();
    assert_eq!((s.files, s.bytes), (1, 14));
    // Failures are retried with backoff and kept, never dropped.
    wait_until(|| {
        f.fs.write_back()
            .summary()
            .items
            .first()
            .is_some_and(|i| i.attempts >= 2)
    })
    .await;
    assert_eq!(f.fs.write_back().summary().failing, 1);
    f.faults.set_rule(None);
    wait_until(|| f.fs.write_back().is_idle()).await;
    assert_eq!(&f.bucket.object("wb/new.txt").unwrap()[..], b"closed content");
    // Staged copy gone once uploaded: only the uploader's lock file and the empty names made
    // ahead for later closes stay in its root.
    let root_dir = std::fs::read_dir(f.staging.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let left: Vec<_> = std::fs::read_dir(root_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.metadata().is_ok_and(|m| m.len() > 0))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wb"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_waits_for_the_bucket_and_reports_its_failure() {
    let f = fixture();
    puts_fail(&f);
    let parent = ino(&f.fs, "wb").await;
    let (_, o) =
        f.fs.create(parent, OsStr::new("f"), libc::O_WRONLY | libc::O_CREAT, 0, NEW)
            .await
            .unwrap();
    f.fs.write(o.fh, 0, b"durable").await.unwrap();
    // fsync returns only once the object is in the bucket: here it cannot be, so it fails
    // (EIO-like), and the file stays queued.
    assert!(f.fs.fsync(o.fh).await.is_err());
    assert_eq!(f.fs.write_back().summary().files, 1);
    f.faults.set_rule(None);
    f.fs.fsync(o.fh).await.unwrap();
    assert_eq!(&f.bucket.object("wb/f").unwrap()[..], b"durable");
    f.fs.release(o.fh).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlink_cancels_the_upload_and_a_newer_close_replaces_the_older() {
    let f = fixture();
    puts_fail(&f);
    write_file(&f.fs, "wb", "gone", b"never uploaded").await;
    write_file(&f.fs, "wb", "twice", b"first").await;
    let root = ino(&f.fs, "wb").await;
    let (_, o) =
        f.fs.create(root, OsStr::new("twice"), libc::O_WRONLY | libc::O_TRUNC, 0, NEW)
            .await
            .unwrap();
    f.fs.write(o.fh, 0, b"second!").await.unwrap();
    f.fs.flush(o.fh, 0).await.unwrap();
    f.fs.release(o.fh).await.unwrap();
    f.fs.unlink(root, OsStr::new("gone")).await.unwrap();
    assert!(f.fs.lookup(root, OsStr::new("gone")).await.is_err());
    assert_eq!(names(&f.fs, root).await, ["twice"]);
    f.faults.set_rule(None);
    wait_until(|| f.fs.write_back().is_idle()).await;
    assert!(
        f.bucket.object("wb/gone").is_none(),
        "an unlinked file is never uploaded"
    );
    assert_eq!(&f.bucket.object("wb/twice").unwrap()[..], b"second!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_rmdir_and_reopen_see_the_pending_file() {
    let f = fixture();
    let root = ino(&f.fs, "wb").await;
    f.fs.mkdir(root, OsStr::new("d"), NEW).await.unwrap();
    puts_fail(&f);
    write_file(&f.fs, "wb/d", "a", b"aaa").await;
    let d = ino(&f.fs, "wb/d").await;
    let err = f.fs.rmdir(root, OsStr::new("d")).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOTEMPTY);
    // A rename uploads first: it fails while the bucket refuses, and nothing moves.
    assert!(f.fs.rename(d, OsStr::new("a"), d, OsStr::new("b"), 0).await.is_err());
    f.faults.set_rule(None);
    f.fs.rename(d, OsStr::new("a"), d, OsStr::new("b"), 0).await.unwrap();
    assert_eq!(&f.bucket.object("wb/d/b").unwrap()[..], b"aaa");
    assert!(f.bucket.object("wb/d/a").is_none());
    // Append to a pending file: its closed version is the base.
    puts_fail(&f);
    write_file(&f.fs, "wb/d", "c", b"one").await;
    f.faults.set_rule(None);
    let c = ino(&f.fs, "wb/d/c").await;
    let o = f.fs.open(c, libc::O_WRONLY, 0).await.unwrap();
    f.fs.write(o.fh, 3, b"two").await.unwrap();
    f.fs.flush(o.fh, 0).await.unwrap();
    f.fs.release(o.fh).await.unwrap();
    wait_until(|| f.fs.write_back().is_idle()).await;
    assert_eq!(&f.bucket.object("wb/d/c").unwrap()[..], b"onetwo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_without_write_back_commit_at_close() {
    let f = fixture();
    write_file(&f.fs, "sync", "s", b"now").await;
    assert_eq!(&f.bucket.object("sync/s").unwrap()[..], b"now");
    assert!(f.fs.write_back().is_idle());
    assert_eq!(f.bucket.count(Op::Put), 1);
}

/// `byosfs migrate --freeze` waits for this before its final pass: bounded, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_a_tenant_waits_for_its_queue_bounded_with_the_last_error() {
    let f = fixture();
    puts_fail(&f);
    write_file(&f.fs, "wb", "a.txt", b"aaa").await;
    write_file(&f.fs, "wb", "b.txt", b"bbb").await;
    assert_eq!(f.fs.settle_tenant("sync", Duration::from_millis(50)).await.unwrap(), 0);
    let e = f.fs.settle_tenant("wb", Duration::from_millis(400)).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("tenant wb: 2 file(s)") && msg.contains("not uploaded") && msg.contains("last upload error"),
        "{msg}"
    );
    assert!(f.bucket.object("wb/a.txt").is_none());
    assert!(f.fs.settle_tenant("nobody", Duration::from_millis(50)).await.is_err());
    f.faults.set_rule(None);
    let n = f.fs.settle_tenant("wb", Duration::from_secs(10)).await.unwrap();
    assert_eq!(n, 2);
    assert_eq!(&f.bucket.object("wb/a.txt").unwrap()[..], b"aaa");
    assert_eq!(&f.bucket.object("wb/b.txt").unwrap()[..], b"bbb");
}
