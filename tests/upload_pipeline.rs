//! The upload pipeline end to end over `InMemoryBackend` (and `FaultBackend`): exact object
//! content, request counts, memory budget, staging limits, failures and aborts.

// Test code: panicking on unexpected errors is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use byosfs::backend::fault::{FaultBackend, FaultRule};
use byosfs::backend::memory::{InMemoryBackend, Op};
use byosfs::backend::{
    Backend, BackendError, BackendErrorKind, BackendResult, ByteRange, CompletedPart, ETag, ListPage, ListParams,
    MultipartUploadInfo, ObjectMeta, PutOptions, PutResult, UploadId,
};
use byosfs::upload::{BaseObject, UploadConfig, UploadError, Uploader, WriteSession};
use bytes::Bytes;
use tempfile::TempDir;
use test_case::test_case;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// The smallest part size InMemoryBackend (like S3) accepts for non-last parts.
const PART: u64 = 5 * MIB;

struct Env {
    _dir: TempDir,
    up: Arc<Uploader>,
    mem: Arc<InMemoryBackend>,
}

fn env_with(memory_budget: u64, staging_limit: u64, max_concurrent_parts: usize) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let up = Uploader::with_tenant_share(
        UploadConfig {
            part_size: PART,
            max_concurrent_parts,
            memory_budget,
            staging_dir: dir.path().to_path_buf(),
            staging_limit,
        },
        // One tenant here: these tests are about the pipeline, not shares between tenants.
        100,
    )
    .unwrap();
    Env {
        _dir: dir,
        up,
        mem: Arc::new(InMemoryBackend::new()),
    }
}

fn env() -> Env {
    env_with(4 * PART, 1024 * MIB, 4)
}

impl Env {
    fn start(&self, key: &str, base: Option<BaseObject>) -> WriteSession {
        self.up.start(self.mem.clone(), key.to_owned(), base)
    }

    async fn base_of(&self, key: &str) -> BaseObject {
        let meta = self.mem.head(key).await.unwrap();
        BaseObject {
            size: meta.size,
            etag: meta.etag,
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), distinct per seed.
fn pattern(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Small deterministic generator for offsets in tests.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

async fn write_seq(s: &mut WriteSession, data: &[u8], chunk: usize) {
    for (i, c) in data.chunks(chunk).enumerate() {
        s.write((i * chunk) as u64, c).await.unwrap();
    }
}

fn apply(reference: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if reference.len() < end {
        reference.resize(end, 0);
    }
    reference[offset as usize..end].copy_from_slice(data);
}

#[test_case(0; "empty")]
#[test_case(1; "one byte")]
#[test_case(PART - 1; "part minus one")]
#[test_case(PART; "exactly one part")]
#[test_case(PART + 1; "part plus one")]
#[test_case(3 * PART + 12345; "several parts")]
#[tokio::test]
async fn sequential_write_produces_exact_object(size: u64) {
    let e = env();
    let data = pattern(size, size);
    let mut s = e.start("f", None);
    write_seq(&mut s, &data, 128 * 1024).await;
    assert_eq!(s.size(), size);
    assert!(s.is_dirty());
    s.commit().await.unwrap();
    assert!(!s.is_dirty());
    assert_eq!(e.mem.object("f").unwrap(), data);
    if size <= PART {
        assert_eq!(e.mem.count(Op::Put), 1);
        assert_eq!(e.mem.count(Op::CreateMultipart), 0);
    } else {
        assert_eq!(e.mem.count(Op::Put), 0);
        assert_eq!(e.mem.count(Op::CompleteMultipart), 1);
        assert_eq!(e.mem.count(Op::UploadPart), size.div_ceil(PART));
    }
    assert_eq!(e.mem.open_uploads(), 0);
    assert_eq!(e.up.staging_in_use(), 0, "staging freed after commit");
    assert_eq!(e.up.memory_in_use(), 0);
}

/// Writes answered on the spot (`try_write_now`, the FUSE thread's path) and the ones it
/// declines (sent through `write`) together make exactly the object a plain writer makes,
/// including a header patched after the body; the spot path takes the streaming bulk.
#[tokio::test]
async fn writes_taken_on_the_spot_match_the_reference() {
    // Fill buffers get a quarter of the budget: room for the part being filled while the
    // previous ones are still being sent.
    let e = env_with(16 * PART, 1024 * MIB, 4);
    let size = 3 * PART + 777;
    let data = pattern(size, 99);
    let mut reference = Vec::new();
    let mut s = e.start("f", None);
    let (mut now, mut slow) = (0, 0);
    let chunk = 128 * 1024;
    for (i, c) in data.chunks(chunk).enumerate() {
        let off = (i * chunk) as u64;
        if s.try_write_now(off, c) {
            now += 1;
        } else {
            slow += 1;
            s.write(off, c).await.unwrap();
        }
        apply(&mut reference, off, c);
        assert_eq!(s.size(), reference.len() as u64);
    }
    // A header rewrite in the first part, long uploaded or staged: never taken on the spot.
    let header = pattern(4096, 7);
    assert!(
        !s.try_write_now(0, &header),
        "rewrite of a sealed part taken on the spot"
    );
    s.write(0, &header).await.unwrap();
    apply(&mut reference, 0, &header);
    // Empty writes are declined (the ordinary path answers them).
    assert!(!s.try_write_now(size, &[]));
    s.commit().await.unwrap();
    assert_eq!(e.mem.object("f").unwrap(), reference);
    // Per part: its first write starts the fill buffer and its last completes the part, both
    // through `write`; everything between goes on the spot.
    let parts = size.div_ceil(PART);
    assert!(slow <= 2 * parts, "{slow} slow writes for {parts} parts");
    assert!(now >= (size / chunk as u64) - 2 * parts, "{now} writes on the spot");
    assert_eq!(e.up.memory_in_use(), 0);
    assert_eq!(e.up.staging_in_use(), 0);
}

/// The session's staging directory (sessions are numbered from 0 per uploader).
fn staging_dir(e: &Env, session: u64) -> std::path::PathBuf {
    e.up.root().join(format!("s{session}"))
}

#[tokio::test]
async fn small_file_never_touches_the_staging_disk() {
    let e = env();
    let data = pattern(300 * KIB, 9);
    let mut s = e.start("small", None);
    write_seq(&mut s, &data, 4096).await;
    // Readable while written, from memory.
    assert_eq!(s.read(1000, 5000).await.unwrap(), &data[1000..6000]);
    assert!(!staging_dir(&e, 0).exists(), "bytes held in memory, no staging file");
    assert!(e.up.memory_in_use() >= 300 * KIB);
    assert!(
        e.up.memory_in_use() <= MIB,
        "charged as the buffer grows, not a whole part"
    );
    s.commit().await.unwrap();
    assert_eq!(e.mem.object("small").unwrap(), data);
    assert!(!staging_dir(&e, 0).exists());
    drop(s);
    assert_eq!(e.up.memory_in_use(), 0);
}

#[tokio::test]
async fn sealed_parts_are_staged_whole_and_rewritable_after_upload() {
    let e = env();
    let mut reference = pattern(2 * PART + PART / 2, 3);
    let mut s = e.start("seq", None);
    write_seq(&mut s, &reference, 1 << 20).await;
    // Parts 0 and 1 are complete: written to staging once, uploaded from memory. Part 2 is
    // still being filled and only in memory.
    let dir = staging_dir(&e, 0);
    assert_eq!(std::fs::read(dir.join("0")).unwrap(), &reference[..PART as usize]);
    assert_eq!(
        std::fs::read(dir.join("1")).unwrap(),
        &reference[PART as usize..2 * PART as usize]
    );
    assert!(!dir.join("2").exists());
    // Seek back into uploaded parts (a container header, a database page): served from the
    // staged copy, re-uploaded at the commit.
    for (at, seed) in [(10u64, 4u64), (PART + 4096, 5), (2 * PART + 7, 6)] {
        let patch = pattern(3000, seed);
        s.write(at, &patch).await.unwrap();
        apply(&mut reference, at, &patch);
    }
    assert_eq!(
        s.read(PART + 4000, 4000).await.unwrap(),
        &reference[PART as usize + 4000..PART as usize + 8000]
    );
    s.commit().await.unwrap();
    assert_eq!(e.mem.object("seq").unwrap(), reference);
    assert_eq!(e.mem.count(Op::UploadPart), 3 + 2, "three parts, two of them again");
}

#[tokio::test]
async fn parts_upload_while_writer_keeps_writing() {
    let e = env();
    let data = pattern(4 * PART + 7, 1);
    let mut s = e.start("big", None);
    write_seq(&mut s, &data, 256 * 1024).await;
    // Parts 1..3 are complete and passed; they go up without waiting for the commit.
    for _ in 0..200 {
        if e.mem.count(Op::UploadPart) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(e.mem.count(Op::UploadPart) >= 3, "parts uploaded before commit");
    assert_eq!(e.mem.count(Op::CompleteMultipart), 0);
    s.commit().await.unwrap();
    assert_eq!(e.mem.object("big").unwrap(), data);
    // Nothing was uploaded twice.
    assert_eq!(e.mem.count(Op::UploadPart), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_budget_holds_with_many_concurrent_writers() {
    let budget = 2 * PART;
    let e = Arc::new(env_with(budget, 1024 * MIB, 4));
    let mut handles = Vec::new();
    for w in 0..6u64 {
        let e = e.clone();
        handles.push(tokio::spawn(async move {
            let data = pattern(3 * PART + w * 1000, w);
            let mut s = e.start(&format!("w{w}"), None);
            write_seq(&mut s, &data, 128 * 1024).await;
            s.commit().await.unwrap();
            assert_eq!(e.mem.object(&format!("w{w}")).unwrap(), data);
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let peak = e.up.memory_high_water();
    assert!(peak > 0 && peak <= budget, "peak {peak} exceeds budget {budget}");
    assert_eq!(e.up.memory_in_use(), 0);
    assert_eq!(e.mem.open_uploads(), 0);
}

#[tokio::test]
async fn mp4_style_header_patch_after_sequential_write() {
    let e = env();
    let mut reference = pattern(2 * PART + 3 * MIB, 7);
    let mut s = e.start("movie.mp4", None);
    write_seq(&mut s, &reference, 64 * 1024).await;
    // The muxer seeks back: mdat size in the header, and a patch in the middle.
    let header = b"\0\0\0\x20ftypisom";
    s.write(0, header).await.unwrap();
    apply(&mut reference, 0, header);
    let mid = PART + 12345;
    s.write(mid, b"patched-middle").await.unwrap();
    apply(&mut reference, mid, b"patched-middle");
    assert_eq!(s.read(0, 12).await.unwrap(), &reference[..12]);
    s.commit().await.unwrap();
    assert_eq!(e.mem.object("movie.mp4").unwrap(), reference);
    assert_eq!(e.mem.open_uploads(), 0);
}

#[tokio::test]
async fn random_4k_writes_match_reference() {
    let e = env();
    let size = 20 * MIB;
    let mut reference = Vec::new();
    let mut rng = Rng(0xDEC0DE);
    let mut s = e.start("random", None);
    for i in 0..1500u64 {
        let offset = rng.below(size - 4096);
        let data = pattern(4096, i + 1);
        s.write(offset, &data).await.unwrap();
        apply(&mut reference, offset, &data);
        if i % 100 == 0 {
            let at = rng.below(reference.len() as u64);
            let got = s.read(at, 300_000).await.unwrap();
            let end = (at as usize + 300_000).min(reference.len());
            assert_eq!(got, &reference[at as usize..end], "read at {at} after {i} writes");
        }
    }
    assert_eq!(s.size(), reference.len() as u64);
    s.commit().await.unwrap();
    assert_eq!(e.mem.object("random").unwrap(), reference);
    // The session stays usable: reads now come from the committed object.
    let got = s.read(5 * MIB - 10, 20).await.unwrap();
    assert_eq!(got, &reference[(5 * MIB - 10) as usize..(5 * MIB + 10) as usize]);
}

#[tokio::test]
async fn truncate_then_write_leaves_zeros() {
    let e = env();
    let mut s = e.start("t", None);
    let data = pattern(3 * PART, 3);
    write_seq(&mut s, &data, 128 * 1024).await;
    // Shrink into the middle of part 1 (part 0 has been uploaded already).
    s.truncate(PART + MIB).await.unwrap();
    let mut reference = data[..(PART + MIB) as usize].to_vec();
    s.write(PART + 2 * MIB, b"after-hole").await.unwrap();
    apply(&mut reference, PART + 2 * MIB, b"after-hole");
    s.truncate(2 * PART + 100).await.unwrap();
    reference.resize((2 * PART + 100) as usize, 0);
    assert_eq!(
        s.read(PART + MIB - 2, 6).await.unwrap(),
        &reference[(PART + MIB - 2) as usize..][..6]
    );
    s.commit().await.unwrap();
    assert_eq!(e.mem.object("t").unwrap(), reference);

    // Truncating a multipart file below one part falls back to a single PUT.
    let mut s = e.start("t2", None);
    write_seq(&mut s, &data, 128 * 1024).await;
    s.truncate(100).await.unwrap();
    s.commit().await.unwrap();
    assert_eq!(e.mem.object("t2").unwrap(), &data[..100]);
    assert_eq!(e.mem.open_uploads(), 0);
}

#[tokio::test]
async fn existing_object_is_patched_lazily() {
    let e = env();
    let old = pattern(3 * PART + 2 * MIB, 11);
    e.mem.insert("obj", old.clone());
    let base = e.base_of("obj").await;
    e.mem.reset_counts();

    // Opened O_RDWR and only read: nothing is written back.
    let mut s = e.start("obj", Some(base.clone()));
    assert_eq!(s.read(PART, 10).await.unwrap(), &old[PART as usize..][..10]);
    assert!(!s.is_dirty());
    s.commit().await.unwrap();
    assert_eq!(e.mem.count(Op::Put) + e.mem.count(Op::CreateMultipart), 0);
    drop(s);

    e.mem.reset_counts();
    let mut s = e.start("obj", Some(base));
    let mut reference = old.clone();
    let at = PART + 2 * MIB;
    s.write(at, b"new bytes in the middle").await.unwrap();
    apply(&mut reference, at, b"new bytes in the middle");
    assert_eq!(e.mem.count(Op::Get), 0, "the old content is loaded only when needed");
    s.commit().await.unwrap();
    assert_eq!(e.mem.object("obj").unwrap(), reference);
    // Untouched parts 0, 2, 3 are server-side copies; part 1 is rebuilt with one GET.
    assert_eq!(e.mem.count(Op::UploadPartCopy), 3);
    assert_eq!(e.mem.count(Op::UploadPart), 1);
    assert_eq!(e.mem.count(Op::Get), 1);

    // Again after the commit: the session's base is now the new object.
    s.write(10, b"xy").await.unwrap();
    apply(&mut reference, 10, b"xy");
    s.commit().await.unwrap();
    assert_eq!(e.mem.object("obj").unwrap(), reference);
    assert_eq!(e.mem.open_uploads(), 0);
}

#[tokio::test]
async fn small_existing_object_appended() {
    let e = env();
    e.mem.insert("small", b"hello".to_vec());
    let base = e.base_of("small").await;
    let mut s = e.start("small", Some(base));
    s.write(5, b" world").await.unwrap();
    s.commit().await.unwrap();
    assert_eq!(e.mem.object("small").unwrap(), &b"hello world"[..]);
}

fn faulty(e: &Env) -> (Arc<FaultBackend>, Arc<dyn Backend>) {
    let f = Arc::new(FaultBackend::new(e.mem.clone()));
    (f.clone(), f)
}

#[tokio::test]
async fn failed_part_upload_fails_commit_and_leaves_nothing() {
    let e = env();
    e.mem.insert("k", b"old content".to_vec());
    let (fault, backend) = faulty(&e);
    fault.set_rule(Some(FaultRule::always(&[Op::UploadPart], BackendErrorKind::Transient)));
    let mut s = e.up.start(backend, "k".into(), None);
    let data = pattern(3 * PART, 5);
    // Background failures surface on a later write (or on the commit).
    let mut write_failed = false;
    for (i, c) in data.chunks(128 * 1024).enumerate() {
        if s.write((i * 128 * 1024) as u64, c).await.is_err() {
            write_failed = true;
            break;
        }
    }
    let err = s.commit().await.unwrap_err();
    assert!(
        matches!(err, UploadError::Backend(ref b) if b.kind() == BackendErrorKind::Transient),
        "{err:?}"
    );
    assert!(fault.injected() >= 1);
    assert_eq!(
        e.mem.object("k").unwrap(),
        &b"old content"[..],
        "old object stays visible"
    );
    assert_eq!(e.mem.open_uploads(), 0);
    assert!(s.is_dirty());
    // Healed: a later commit retries from the staged data.
    fault.set_rule(None);
    if write_failed {
        // The failed write was not applied; rewrite the whole content.
        write_seq(&mut s, &data, 128 * 1024).await;
    }
    s.commit().await.unwrap();
    assert_eq!(e.mem.object("k").unwrap(), data);
    assert_eq!(e.mem.open_uploads(), 0);
}

#[tokio::test]
async fn later_write_reports_background_failure() {
    let e = env();
    let (fault, backend) = faulty(&e);
    fault.set_rule(Some(FaultRule::always(&[Op::UploadPart], BackendErrorKind::Throttled)));
    let mut s = e.up.start(backend, "k".into(), None);
    write_seq(&mut s, &pattern(PART + 10, 1), 128 * 1024).await;
    let mut failed = None;
    for i in 0..200u64 {
        if let Err(err) = s.write(PART + 10 + i, b"x").await {
            failed = Some(err);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(matches!(failed, Some(UploadError::Backend(_))), "{failed:?}");
    assert!(s.commit().await.is_err());
    assert!(e.mem.object("k").is_none());
    assert_eq!(e.mem.open_uploads(), 0);
}

#[tokio::test]
async fn failed_complete_aborts_upload() {
    let e = env();
    let (fault, backend) = faulty(&e);
    fault.set_rule(Some(FaultRule::always(
        &[Op::CompleteMultipart],
        BackendErrorKind::Transient,
    )));
    let mut s = e.up.start(backend, "k".into(), None);
    write_seq(&mut s, &pattern(2 * PART + 1, 2), 128 * 1024).await;
    assert!(s.commit().await.is_err());
    assert!(e.mem.object("k").is_none());
    assert_eq!(e.mem.open_uploads(), 0);
}

#[tokio::test]
async fn staging_full_refuses_write_but_keeps_prior_data() {
    // Room for part 0 and 1 MiB more.
    let e = env_with(4 * PART, PART + MIB, 4);
    let mut s = e.start("s", None);
    let mut reference = pattern(PART, 9);
    write_seq(&mut s, &reference, 128 * 1024).await;
    let extra = pattern(MIB, 10);
    s.write(PART + MIB, &extra).await.unwrap();
    apply(&mut reference, PART + MIB, &extra);
    // Part 0 is kept for header patches, part 1 is not uploaded: nothing can be dropped.
    let err = s.write(3 * PART, b"no room").await.unwrap_err();
    assert!(matches!(err, UploadError::StagingFull), "{err:?}");
    assert!(e.up.staging_in_use() <= PART + MIB);
    assert_eq!(s.size(), reference.len() as u64);
    s.commit().await.unwrap();
    assert_eq!(e.mem.object("s").unwrap(), reference);
}

#[tokio::test]
async fn sequential_file_larger_than_staging_streams_through() {
    let limit = 3 * PART;
    let e = env_with(2 * PART, limit, 2);
    let data = pattern(8 * PART + 5, 12);
    let mut s = e.start("huge", None);
    write_seq(&mut s, &data, 128 * 1024).await;
    assert!(e.up.staging_in_use() <= limit);
    // Part 2 was uploaded and dropped from staging: not readable until the commit.
    assert!(matches!(s.read(2 * PART, 10).await, Err(UploadError::Evicted { .. })));
    // The header part is kept and can still be patched.
    s.write(0, b"HEAD").await.unwrap();
    s.commit().await.unwrap();
    let mut reference = data.clone();
    apply(&mut reference, 0, b"HEAD");
    assert_eq!(e.mem.object("huge").unwrap(), reference);
    assert_eq!(
        s.read(2 * PART, 10).await.unwrap(),
        &reference[(2 * PART) as usize..][..10]
    );
}

#[tokio::test]
async fn dropping_uncommitted_session_aborts_upload() {
    let e = env();
    let mut s = e.start("gone", None);
    write_seq(&mut s, &pattern(3 * PART, 4), 128 * 1024).await;
    drop(s);
    for _ in 0..200 {
        if e.mem.open_uploads() == 0 && e.mem.count(Op::AbortMultipart) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(e.mem.open_uploads(), 0);
    assert!(e.mem.object("gone").is_none());
    assert_eq!(e.up.staging_in_use(), 0);
}

#[tokio::test]
async fn abort_discards_everything() {
    let e = env();
    let mut s = e.start("unlinked", None);
    write_seq(&mut s, &pattern(3 * PART, 4), 128 * 1024).await;
    s.abort().await;
    assert_eq!(e.mem.open_uploads(), 0);
    assert!(e.mem.object("unlinked").is_none());
    assert_eq!(e.up.staging_in_use(), 0);
}

#[tokio::test]
async fn rename_while_open_commits_to_new_key() {
    let e = env();
    let data = pattern(3 * PART, 8);
    let mut s = e.start("a", None);
    write_seq(&mut s, &data, 128 * 1024).await;
    s.set_key("b".into());
    s.commit().await.unwrap();
    assert_eq!(e.mem.object("b").unwrap(), data);
    assert!(e.mem.object("a").is_none());
    for _ in 0..200 {
        if e.mem.open_uploads() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(e.mem.open_uploads(), 0);
}

#[tokio::test]
async fn commit_is_idempotent_when_clean() {
    let e = env();
    let mut s = e.start("c", None);
    s.write(0, b"abc").await.unwrap();
    let first = s.commit().await.unwrap();
    let puts = e.mem.count(Op::Put);
    let second = s.commit().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(e.mem.count(Op::Put), puts);
    assert_eq!(e.mem.object("c").unwrap(), &b"abc"[..]);
}

fn an_mtime() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::new(981_158_400, 123_456_789)
}

#[tokio::test]
async fn mtime_goes_with_single_put() {
    let e = env();
    let mut s = e.start("small", None);
    s.write(0, b"abc").await.unwrap();
    s.set_mtime(Some(an_mtime()));
    s.commit().await.unwrap();
    assert_eq!(e.mem.head("small").await.unwrap().mtime, Some(an_mtime()));
    assert_eq!((e.mem.count(Op::Put), e.mem.count(Op::SetMtime)), (1, 0));
}

#[tokio::test]
async fn mtime_set_after_multipart_started_is_stored_on_commit() {
    let e = env();
    let data = pattern(2 * PART + 1, 3);
    let mut s = e.start("big", None);
    write_seq(&mut s, &data, 256 * KIB as usize).await;
    assert_eq!(e.mem.count(Op::CreateMultipart), 1, "upload started before the setattr");
    s.set_mtime(Some(an_mtime()));
    s.commit().await.unwrap();
    let h = e.mem.head("big").await.unwrap();
    assert_eq!((h.size, h.mtime), (data.len() as u64, Some(an_mtime())));
    assert_eq!(e.mem.object("big").unwrap(), &data[..]);
}

#[tokio::test]
async fn mtime_known_before_multipart_goes_with_the_upload() {
    let e = env();
    let base = pattern(2 * PART + 1, 4);
    e.mem.insert("big", base.clone());
    let mut s = e.start("big", Some(e.base_of("big").await));
    s.set_mtime(Some(an_mtime()));
    // Growing the file appends; the stored mtime is cleared by the write, as on a local
    // filesystem, and the commit stores none.
    s.write(base.len() as u64, b"tail").await.unwrap();
    assert_eq!(s.mtime(), None);
    s.commit().await.unwrap();
    assert_eq!(e.mem.head("big").await.unwrap().mtime, None);
    // Set after the last write: carried by the next upload's creation, no extra request.
    let mut s = e.start("big", Some(e.base_of("big").await));
    s.write(0, b"head").await.unwrap();
    s.set_mtime(Some(an_mtime()));
    s.commit().await.unwrap();
    assert_eq!(e.mem.head("big").await.unwrap().mtime, Some(an_mtime()));
    assert_eq!(e.mem.count(Op::SetMtime), 0);
}

#[tokio::test]
async fn mtime_only_change_updates_metadata_without_rewriting_data() {
    let e = env();
    e.mem.insert("f", b"content".to_vec());
    let mut s = e.start("f", Some(e.base_of("f").await));
    s.set_mtime(Some(an_mtime()));
    let res = s.commit().await.unwrap();
    let h = e.mem.head("f").await.unwrap();
    assert_eq!(h.mtime, Some(an_mtime()));
    assert_eq!(res.etag, h.etag);
    assert_eq!(e.mem.object("f").unwrap(), &b"content"[..]);
    assert_eq!(e.mem.count(Op::SetMtime), 1);
    assert_eq!(e.mem.count(Op::Put) + e.mem.count(Op::CreateMultipart), 0);
    // Committing again sends nothing.
    s.commit().await.unwrap();
    assert_eq!(e.mem.count(Op::SetMtime), 1);
}

#[test]
fn config_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let ok = UploadConfig {
        part_size: PART,
        max_concurrent_parts: 2,
        memory_budget: PART,
        staging_dir: dir.path().to_path_buf(),
        staging_limit: 100 * MIB,
    };
    assert!(Uploader::new(ok.clone()).is_ok());
    for bad in [
        UploadConfig {
            part_size: PART - 1,
            ..ok.clone()
        },
        UploadConfig {
            memory_budget: PART - 1,
            ..ok.clone()
        },
        UploadConfig {
            max_concurrent_parts: 0,
            ..ok.clone()
        },
    ] {
        assert!(matches!(Uploader::new(bad), Err(UploadError::InvalidConfig(_))));
    }
}

/// Random mixes of writes, truncates, reads and commits, on new files and on existing
/// objects, checked against a reference `Vec` after every step and in the bucket after
/// every commit.
#[tokio::test]
async fn random_operation_sequences_match_reference() {
    for seed in 1..=8u64 {
        // Small budgets leave fill buffers room for part of a part only (they spill to
        // staging); large ones hold whole parts in memory until they are sealed.
        let budget = if seed % 4 < 2 { 3 * PART } else { 12 * PART };
        let e = env_with(budget, 1024 * MIB, 2);
        let mut rng = Rng(seed * 0x1234_5678_9ABC);
        let mut reference = if seed % 2 == 0 {
            let old = pattern(2 * PART + rng.below(PART), seed + 100);
            e.mem.insert("r", old.clone());
            old
        } else {
            Vec::new()
        };
        let base = if seed % 2 == 0 {
            Some(e.base_of("r").await)
        } else {
            None
        };
        let mut s = e.start("r", base);
        let limit = 3 * PART;
        for step in 0..60u64 {
            match rng.below(10) {
                0..=5 => {
                    let max_len = if rng.below(4) == 0 { 2 * MIB } else { 8 * KIB };
                    let len = 1 + rng.below(max_len);
                    // Half the writes append, as sequential writers do between seeks.
                    let offset = if rng.below(2) == 0 {
                        (reference.len() as u64).min(limit - len)
                    } else {
                        rng.below(limit - len)
                    };
                    let data = pattern(len, seed * 1000 + step);
                    s.write(offset, &data).await.unwrap();
                    apply(&mut reference, offset, &data);
                }
                6 => {
                    let size = rng.below(limit);
                    s.truncate(size).await.unwrap();
                    reference.resize(size as usize, 0);
                }
                7 | 8 => {
                    let at = rng.below(reference.len() as u64 + 1);
                    let got = s.read(at, 100_000).await.unwrap();
                    let end = (at as usize + 100_000).min(reference.len());
                    assert_eq!(got, &reference[at as usize..end], "seed {seed} step {step}");
                }
                _ => {
                    s.commit().await.unwrap();
                    assert_eq!(e.mem.object("r").unwrap(), reference, "seed {seed} step {step}");
                }
            }
            assert_eq!(s.size(), reference.len() as u64, "seed {seed} step {step}");
        }
        s.commit().await.unwrap();
        assert_eq!(e.mem.object("r").unwrap(), reference, "seed {seed}");
        assert_eq!(e.mem.open_uploads(), 0);
    }
}

/// A backend that keeps nothing: part bytes are counted and dropped (for the benchmark,
/// whose object would not fit in memory twice).
#[derive(Debug, Default)]
struct NullBackend {
    bytes: std::sync::atomic::AtomicU64,
}

fn unsupported() -> BackendError {
    BackendError::new(BackendErrorKind::Unsupported, "null backend")
}

#[async_trait::async_trait]
impl Backend for NullBackend {
    fn describe(&self) -> String {
        "null://".into()
    }
    fn capabilities(&self) -> byosfs::backend::Capabilities {
        byosfs::backend::Capabilities::S3
    }
    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        Err(BackendError::not_found(key))
    }
    async fn get_range(&self, key: &str, _: ByteRange, _: Option<&ETag>) -> BackendResult<Bytes> {
        Err(BackendError::not_found(key))
    }
    async fn list(&self, _: &ListParams) -> BackendResult<ListPage> {
        Ok(ListPage::default())
    }
    async fn put(&self, _: &str, data: Bytes) -> BackendResult<PutResult> {
        self.bytes
            .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(PutResult::new(None))
    }
    async fn create_multipart(&self, _: &str) -> BackendResult<UploadId> {
        Ok(UploadId("null".into()))
    }
    async fn upload_part(&self, _: &str, _: &UploadId, n: u32, data: Bytes) -> BackendResult<CompletedPart> {
        self.bytes
            .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(CompletedPart {
            part_number: n,
            etag: ETag::new(format!("p{n}")),
        })
    }
    async fn upload_part_copy(
        &self,
        _: &str,
        _: &UploadId,
        _: u32,
        _: &str,
        _: ByteRange,
    ) -> BackendResult<CompletedPart> {
        Err(unsupported())
    }
    async fn complete_multipart(&self, _: &str, _: &UploadId, _: &[CompletedPart]) -> BackendResult<PutResult> {
        Ok(PutResult::new(None))
    }
    async fn abort_multipart(&self, _: &str, _: &UploadId) -> BackendResult<()> {
        Ok(())
    }
    async fn list_multipart_uploads(&self, _: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        Ok(Vec::new())
    }
    async fn copy(&self, _: &str, _: &str) -> BackendResult<PutResult> {
        Err(unsupported())
    }
    async fn delete(&self, _: &str) -> BackendResult<()> {
        Ok(())
    }
    async fn put_opts(&self, key: &str, data: Bytes, _: &PutOptions) -> BackendResult<PutResult> {
        self.put(key, data).await
    }
    async fn create_multipart_opts(&self, key: &str, _: &PutOptions) -> BackendResult<UploadId> {
        self.create_multipart(key).await
    }
    async fn update_metadata(&self, _: &str, _: &PutOptions) -> BackendResult<PutResult> {
        Err(unsupported())
    }
}

/// Peak resident memory of this process in KiB (Linux `VmHWM`), if available.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Writes 2 GiB sequentially with default-sized parts and reports peak memory.
/// Run with `cargo test --release --test upload_pipeline -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: writes 2 GiB through staging"]
async fn bench_sequential_2gib_peak_memory() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let budget = 64 * MIB;
    let up = Uploader::new(UploadConfig {
        part_size: 8 * MIB,
        max_concurrent_parts: 4,
        memory_budget: budget,
        staging_dir: dir.path().to_path_buf(),
        staging_limit: 256 * MIB,
    })
    .unwrap();
    let backend = Arc::new(NullBackend::default());
    let total = 2 * 1024 * MIB;
    let chunk = pattern(MIB, 42);
    let rss_before = peak_rss_kib();
    let started = std::time::Instant::now();
    let mut s = up.start(backend.clone(), "bench".into(), None);
    let mut offset = 0;
    while offset < total {
        s.write(offset, &chunk).await.unwrap();
        offset += MIB;
    }
    s.commit().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(backend.bytes.load(std::sync::atomic::Ordering::Relaxed), total);
    let high = up.memory_high_water();
    assert!(high <= budget);
    tracing::info!(
        secs = elapsed.as_secs_f64(),
        mib_per_s = (total / MIB) as f64 / elapsed.as_secs_f64(),
        budget_high_water_mib = high / MIB,
        peak_rss_before_kib = ?rss_before,
        peak_rss_after_kib = ?peak_rss_kib(),
        "sequential 2 GiB write"
    );
}
