//! The filesystem over stores that can do less than S3 (issue 25): `MaskedBackend` declares
//! fewer capabilities over `InMemoryBackend` and refuses every operation it takes away, so
//! any path that still assumes S3 (a multipart upload, a server-side or part copy, an
//! If-Match read, a metadata update) fails these tests instead of passing silently.
//! No kernel: `Filesystem` is driven with FUSE-shaped calls as in `fs_ops.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use byosfs::backend::masked::MaskedBackend;
use byosfs::backend::memory::{InMemoryBackend, Op};
use byosfs::backend::prefix::PrefixBackend;
use byosfs::backend::{
    Backend, BackendError, BackendErrorKind, BackendResult, BodyStream, Capabilities, Layer, MultipartLimits,
    PutOptions, PutResult,
};
use byosfs::cache::BlockCache;
use byosfs::fs::{Filesystem, FsConfig, NewNode, SetAttr};
use byosfs::tenant::{TenantSpec, TenantTable};
use byosfs::upload::{UploadConfig, Uploader};
use common::fsapi::{ino, read_all};
use futures::TryStreamExt as _;
use test_case::test_case;

const MIB: usize = 1 << 20;
const NEW: NewNode = NewNode {
    mode: 0o644,
    uid: 1000,
    gid: 1000,
};

/// A WebDAV-like store: nothing but whole-object PUT, GET, HEAD, LIST, DELETE.
fn minimal(max_object_size: Option<u64>) -> Capabilities {
    Capabilities {
        multipart: None,
        part_copy: false,
        server_side_copy: false,
        conditional_get: false,
        conditional_put: false,
        stable_etags: false,
        max_object_size,
        duplicate_names: false,
        user_metadata: false,
    }
}

/// Multipart uploads, but no copies of any kind (Azure-like without copy-from-URL).
fn no_copies() -> Capabilities {
    Capabilities {
        part_copy: false,
        server_side_copy: false,
        ..Capabilities::S3
    }
}

struct Fixture {
    fs: Filesystem,
    bucket: Arc<InMemoryBackend>,
    uploader: Arc<Uploader>,
    _staging: tempfile::TempDir,
}

fn fixture(caps: Capabilities) -> Fixture {
    fixture_with(caps, |b| b)
}

/// [`fixture`] with `wrap` between the bucket and the mask (fault injection).
fn fixture_with(caps: Capabilities, wrap: impl FnOnce(Arc<dyn Backend>) -> Arc<dyn Backend>) -> Fixture {
    let bucket = Arc::new(InMemoryBackend::new());
    let store: Arc<dyn Backend> = Arc::new(MaskedBackend::new(wrap(bucket.clone()), caps));
    let tenants = TenantTable::new(vec![TenantSpec {
        name: "acme".to_owned(),
        backend: Arc::new(PrefixBackend::new(store, "acme/")),
        read_only: false,
        uid: 1000,
        gid: 1000,
        mode: 0o750,
        posix_metadata: false,
        exclusive_create: false,
        policy: Default::default(),
        write_back: false,
    }]);
    let staging = tempfile::tempdir().unwrap();
    let uploader = Uploader::new(UploadConfig {
        part_size: 5 << 20,
        max_concurrent_parts: 4,
        memory_budget: 64 << 20,
        staging_dir: staging.path().to_owned(),
        staging_limit: 1 << 30,
    })
    .unwrap();
    let cache = Arc::new(BlockCache::new(64 << 20, 1 << 20));
    let config = FsConfig {
        // Every open asks the store, so a replacement behind the mount is seen at open.
        metadata_ttl: Duration::ZERO,
        attr_ttl: Duration::ZERO,
        ..FsConfig::default()
    };
    let fs = Filesystem::new(tenants, cache, uploader.clone(), config);
    Fixture {
        fs,
        bucket,
        uploader,
        _staging: staging,
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// Create `dir/name` and write `data` sequentially in 128 KiB calls; the handle stays open.
async fn create_and_write(fs: &Filesystem, dir: &str, name: &str, data: &[u8]) -> u64 {
    let parent = ino(fs, dir).await;
    let (_, o) = fs
        .create(parent, OsStr::new(name), libc::O_WRONLY | libc::O_CREAT, 0, NEW)
        .await
        .unwrap();
    for (i, chunk) in data.chunks(128 * 1024).enumerate() {
        fs.write(o.fh, (i * 128 * 1024) as u64, chunk).await.unwrap();
    }
    o.fh
}

async fn write_file(fs: &Filesystem, dir: &str, name: &str, data: &[u8]) {
    let fh = create_and_write(fs, dir, name, data).await;
    fs.flush(fh, 0).await.unwrap();
    fs.release(fh).await.unwrap();
}

#[tokio::test]
async fn without_multipart_a_big_file_is_one_streamed_put_with_bounded_memory() {
    let f = fixture(minimal(None));
    let data = pattern(30 * MIB, 1);
    write_file(&f.fs, "acme", "big.bin", &data).await;
    assert_eq!(f.bucket.object("acme/big.bin").unwrap(), data);
    assert_eq!(f.bucket.count(Op::Put), 1);
    assert_eq!(f.bucket.count(Op::CreateMultipart), 0);
    // One part being filled, and at most two 5 MiB chunks of the streamed body: never the file.
    let high = f.uploader.memory_high_water();
    assert!(high <= 15 * MIB as u64, "write memory high water {high}");
    assert_eq!(read_all(&f.fs, "acme/big.bin").await, data);
}

#[test_case(minimal(None) ; "no multipart")]
#[test_case(no_copies() ; "multipart without part copy")]
#[tokio::test]
async fn a_header_patched_at_the_end_lands_in_the_object(caps: Capabilities) {
    let f = fixture(caps);
    let mut data = pattern(12 * MIB, 2);
    let fh = create_and_write(&f.fs, "acme", "movie.mp4", &data).await;
    // ffmpeg's moov/mdat fix-up: seek back to the start once everything is written.
    f.fs.write(fh, 4, b"HEADER").await.unwrap();
    data[4..10].copy_from_slice(b"HEADER");
    f.fs.flush(fh, 0).await.unwrap();
    f.fs.release(fh).await.unwrap();
    assert_eq!(f.bucket.object("acme/movie.mp4").unwrap(), data);
    assert_eq!(read_all(&f.fs, "acme/movie.mp4").await, data);
}

#[test_case(minimal(None) ; "no multipart")]
#[test_case(no_copies() ; "multipart without part copy")]
#[tokio::test]
async fn patching_an_existing_object_reads_its_untouched_bytes(caps: Capabilities) {
    let f = fixture(caps);
    let mut data = pattern(15 * MIB, 3);
    f.bucket.insert("acme/db.sqlite", data.clone());
    let file = ino(&f.fs, "acme/db.sqlite").await;
    let o = f.fs.open(file, libc::O_WRONLY, 0).await.unwrap();
    f.fs.write(o.fh, 12 * MIB as u64, b"page").await.unwrap();
    data[12 * MIB..12 * MIB + 4].copy_from_slice(b"page");
    f.fs.release(o.fh).await.unwrap();
    assert_eq!(f.bucket.object("acme/db.sqlite").unwrap(), data);
    assert_eq!(f.bucket.count(Op::UploadPartCopy), 0);
}

#[test_case(minimal(None) ; "no multipart")]
#[test_case(no_copies() ; "multipart without part copy")]
#[tokio::test]
async fn rename_moves_the_bytes_without_server_side_copies(caps: Capabilities) {
    let f = fixture(caps);
    let big = pattern(12 * MIB, 4);
    write_file(&f.fs, "acme", "a.bin", &big).await;
    let acme = ino(&f.fs, "acme").await;
    f.fs.rename(acme, OsStr::new("a.bin"), acme, OsStr::new("b.bin"), 0)
        .await
        .unwrap();
    assert_eq!(f.bucket.object("acme/b.bin").unwrap(), big);
    assert!(f.bucket.object("acme/a.bin").is_none());

    f.fs.mkdir(acme, OsStr::new("d"), NEW).await.unwrap();
    for (i, len) in [0, 1000, 9 * MIB].into_iter().enumerate() {
        write_file(&f.fs, "acme/d", &format!("f{i}"), &pattern(len, i as u8)).await;
    }
    f.fs.rename(acme, OsStr::new("d"), acme, OsStr::new("e"), 0)
        .await
        .unwrap();
    for (i, len) in [0, 1000, 9 * MIB].into_iter().enumerate() {
        assert_eq!(read_all(&f.fs, &format!("acme/e/f{i}")).await, pattern(len, i as u8));
        assert!(f.bucket.object(&format!("acme/d/f{i}")).is_none());
    }
    assert_eq!(f.bucket.count(Op::Copy), 0);
    assert_eq!(f.bucket.count(Op::UploadPartCopy), 0);
}

#[tokio::test]
async fn without_user_metadata_setting_the_mtime_stores_nothing_and_shows_the_stores() {
    let f = fixture(minimal(None));
    write_file(&f.fs, "acme", "t.txt", b"hello").await;
    let file = ino(&f.fs, "acme/t.txt").await;
    let old = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let set = SetAttr {
        mtime: Some(old),
        ..Default::default()
    };
    let e = f.fs.setattr(file, None, set).await.unwrap();
    assert_ne!(e.attr.mtime, old);
    let shown = f.fs.getattr(file).await.unwrap().attr.mtime;
    assert!(
        shown > SystemTime::now() - Duration::from_secs(600),
        "store's own time expected, got {shown:?}"
    );
    assert_eq!(f.bucket.count(Op::SetMtime), 0);
    // Same while the file is open for writing: the commit stores no mtime either.
    let o = f.fs.open(file, libc::O_WRONLY, 0).await.unwrap();
    f.fs.write(o.fh, 0, b"H").await.unwrap();
    f.fs.setattr(file, Some(o.fh), set).await.unwrap();
    f.fs.release(o.fh).await.unwrap();
    assert_eq!(f.bucket.object("acme/t.txt").unwrap(), &b"Hello"[..]);
    assert_ne!(f.fs.getattr(file).await.unwrap().attr.mtime, old);
}

#[tokio::test]
async fn without_conditional_get_a_replaced_object_is_detected_by_size() {
    let f = fixture(minimal(None));
    let data = pattern(10 * MIB, 5);
    f.bucket.insert("acme/v.bin", data.clone());
    let file = ino(&f.fs, "acme/v.bin").await;
    let o = f.fs.open(file, libc::O_RDONLY, 0).await.unwrap();
    assert_eq!(f.fs.read(o.fh, 0, 4096).await.unwrap(), &data[..4096]);
    // Replaced behind the mount by a shorter version: no If-Match to catch it, but the
    // bytes past its end cannot be read, so the handle reports the change (ESTALE).
    f.bucket.insert("acme/v.bin", pattern(MIB, 6));
    let err = f.fs.read(o.fh, 9 * MIB as u64, 4096).await.unwrap_err();
    assert_eq!(err.errno(), libc::ESTALE, "{err:?}");
    f.fs.release(o.fh).await.unwrap();
    // A new open sees the new version (size and modification time), not cached blocks.
    assert_eq!(read_all(&f.fs, "acme/v.bin").await, pattern(MIB, 6));
}

/// Fails the first `put_stream` after taking part of its body, as a connection lost
/// mid-upload does.
#[derive(Debug)]
struct DropsFirstStream {
    inner: Arc<dyn Backend>,
    calls: AtomicU32,
}

#[async_trait::async_trait]
impl Layer for DropsFirstStream {
    fn inner(&self) -> Arc<dyn Backend> {
        self.inner.clone()
    }
    async fn put_stream(
        &self,
        key: &str,
        size: u64,
        mut body: BodyStream,
        opts: &PutOptions,
    ) -> BackendResult<PutResult> {
        if self.calls.fetch_add(1, Ordering::Relaxed) == 0 {
            let _first = body.try_next().await?;
            return Err(BackendError::new(
                BackendErrorKind::Transient,
                "connection reset mid-body",
            ));
        }
        self.inner.put_stream(key, size, body, opts).await
    }
}

#[tokio::test]
async fn a_streamed_upload_cut_midway_is_sent_again_from_staging() {
    let layer = Arc::new(std::sync::OnceLock::new());
    let seen = layer.clone();
    let f = fixture_with(minimal(None), move |b| {
        let l = Arc::new(DropsFirstStream {
            inner: b,
            calls: AtomicU32::new(0),
        });
        let _ = seen.set(l.clone());
        l
    });
    let data = pattern(20 * MIB, 9);
    write_file(&f.fs, "acme", "r.bin", &data).await;
    assert_eq!(f.bucket.object("acme/r.bin").unwrap(), data);
    assert_eq!(layer.get().unwrap().calls.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_file_beyond_the_stores_largest_object_is_efbig() {
    let f = fixture(minimal(Some(6 * MIB as u64)));
    let parent = ino(&f.fs, "acme").await;
    let (entry, o) =
        f.fs.create(parent, OsStr::new("huge"), libc::O_WRONLY | libc::O_CREAT, 0, NEW)
            .await
            .unwrap();
    f.fs.write(o.fh, 0, &pattern(6 * MIB, 7)).await.unwrap();
    let err = f.fs.write(o.fh, 6 * MIB as u64, b"x").await.unwrap_err();
    assert_eq!(err.errno(), libc::EFBIG, "{err:?}");
    let set = SetAttr {
        size: Some(7 * MIB as u64),
        ..Default::default()
    };
    assert_eq!(
        f.fs.setattr(entry.attr.ino, Some(o.fh), set).await.unwrap_err().errno(),
        libc::EFBIG
    );
    f.fs.release(o.fh).await.unwrap();
    assert_eq!(f.bucket.object("acme/huge").unwrap().len(), 6 * MIB);
}

#[tokio::test]
async fn parts_follow_the_stores_multipart_limits() {
    let six = 6 << 20;
    let f = fixture(Capabilities {
        multipart: Some(MultipartLimits {
            min_part: six,
            max_part: six,
            max_parts: 10_000,
        }),
        ..Capabilities::S3
    });
    let data = pattern(30 * MIB, 8);
    write_file(&f.fs, "acme", "p.bin", &data).await;
    assert_eq!(f.bucket.object("acme/p.bin").unwrap(), data);
    // 5 MiB configured, 6 MiB required by the store: five parts, not six.
    assert_eq!(f.bucket.count(Op::UploadPart), 5);
}
