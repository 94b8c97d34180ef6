//! `Filesystem` driven with FUSE-shaped calls over in-memory backends: no kernel involved.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use byosfs::backend::memory::{InMemoryBackend, Op};
use byosfs::backend::prefix::PrefixBackend;
use byosfs::backend::Backend;
use byosfs::cache::BlockCache;
use byosfs::fs::{DirEntry, DirReplier, Filesystem, FsConfig, NewNode, SetAttr};
use byosfs::namespace::ROOT_INO;
use byosfs::tenant::{TenantSpec, TenantTable};
use byosfs::upload::{UploadConfig, Uploader};
use bytes::Bytes;
use common::fsapi::{ino, read_all};

/// The creator of new nodes in these tests (the tenants run without POSIX metadata).
const NEW: NewNode = NewNode {
    mode: 0o644,
    uid: 1000,
    gid: 1000,
};

fn mtime(t: SystemTime) -> SetAttr {
    SetAttr {
        mtime: Some(t),
        ..Default::default()
    }
}

struct Collect {
    entries: Vec<DirEntry>,
    cap: usize,
}

impl DirReplier for Collect {
    fn add(&mut self, e: &DirEntry, _ttl: Duration) -> bool {
        if self.entries.len() >= self.cap {
            return true;
        }
        self.entries.push(e.clone());
        false
    }
}

struct Fixture {
    fs: Filesystem,
    bucket: Arc<InMemoryBackend>,
    _staging: tempfile::TempDir,
}

fn spec(name: &str, bucket: &Arc<InMemoryBackend>, prefix: &str, read_only: bool) -> TenantSpec {
    let inner: Arc<dyn Backend> = bucket.clone();
    TenantSpec {
        name: name.to_owned(),
        backend: Arc::new(PrefixBackend::new(inner, prefix)),
        read_only,
        uid: 1000,
        gid: 1000,
        mode: 0o750,
        posix_metadata: false,
        exclusive_create: false,
        policy: Default::default(),
        write_back: false,
    }
}

fn fixture() -> Fixture {
    fixture_over(Arc::new(InMemoryBackend::new()))
}

/// A fresh filesystem (as after a remount) over an existing bucket.
fn fixture_over(bucket: Arc<InMemoryBackend>) -> Fixture {
    fixture_with(bucket, FsConfig::default())
}

fn fixture_with(bucket: Arc<InMemoryBackend>, config: FsConfig) -> Fixture {
    let tenants = vec![
        spec("acme", &bucket, "acme/", false),
        spec("acme2", &bucket, "acme2/", false),
        spec("frozen", &bucket, "frozen/", true),
    ];
    fixture_of(bucket, tenants, config)
}

/// A filesystem of `tenants` (their backends views of `bucket` or wrappers of it).
fn fixture_of(bucket: Arc<InMemoryBackend>, tenants: Vec<TenantSpec>, config: FsConfig) -> Fixture {
    let tenants = TenantTable::new(tenants);
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
    let fs = Filesystem::new(tenants, cache, uploader, config);
    Fixture {
        fs,
        bucket,
        _staging: staging,
    }
}

async fn list(fs: &Filesystem, ino: u64, plus: bool) -> Vec<String> {
    let fh = fs.opendir(ino).await.unwrap();
    let mut names = Vec::new();
    let mut offset = 0;
    // Small buffers force many readdir calls, as the kernel makes them for big directories.
    for _ in 0..100_000 {
        let mut c = Collect {
            entries: Vec::new(),
            cap: 7,
        };
        fs.readdir(fh, offset, plus, &mut c).await.unwrap();
        if c.entries.is_empty() {
            break;
        }
        offset = c.entries.last().unwrap().offset;
        names.extend(c.entries.into_iter().map(|e| e.name).filter(|n| n != "." && n != ".."));
    }
    fs.releasedir(fh);
    names
}

async fn write_file(fs: &Filesystem, dir: &str, name: &str, data: &[u8]) {
    let parent = ino(fs, dir).await;
    let (_, o) = fs
        .create(parent, OsStr::new(name), libc::O_WRONLY | libc::O_CREAT, 0, NEW)
        .await
        .unwrap();
    for (i, chunk) in data.chunks(128 * 1024).enumerate() {
        fs.write(o.fh, (i * 128 * 1024) as u64, chunk).await.unwrap();
    }
    fs.flush(o.fh, 0).await.unwrap();
    fs.release(o.fh).await.unwrap();
}

#[tokio::test]
async fn root_lists_tenants_and_nested_directories() {
    let f = fixture();
    for k in ["acme/a/b/c.txt", "acme/a/d.txt", "acme/top.bin", "acme2/secret"] {
        f.bucket.insert(k, "x");
    }
    assert_eq!(list(&f.fs, ROOT_INO, false).await, vec!["acme", "acme2", "frozen"]);
    let acme = ino(&f.fs, "acme").await;
    assert_eq!(list(&f.fs, acme, true).await, vec!["a", "top.bin"]);
    let a = ino(&f.fs, "acme/a").await;
    assert_eq!(list(&f.fs, a, false).await, vec!["b", "d.txt"]);
    assert_eq!(read_all(&f.fs, "acme/a/b/c.txt").await, b"x");
}

#[tokio::test]
async fn hostile_keys_never_show_or_escape() {
    let f = fixture();
    let long = "n".repeat(300);
    for k in [
        "acme/ok".to_owned(),
        "acme/../acme2/secret".to_owned(),
        "acme/a//b".to_owned(),
        "acme/./c".to_owned(),
        "acme/".to_owned(),
        format!("acme/{long}"),
        "acme2/mine".to_owned(),
        "acme".to_owned(),
        "acmeX".to_owned(),
    ] {
        f.bucket.insert(&k, "x");
    }
    let acme = ino(&f.fs, "acme").await;
    let names = list(&f.fs, acme, true).await;
    // `..` and `.` are directories named by a common prefix and are refused; `a` is a real
    // directory (its `a//b` child has an empty segment and is not shown inside it).
    assert_eq!(names, vec!["a", "ok"]);
    let a = ino(&f.fs, "acme/a").await;
    assert!(list(&f.fs, a, false).await.is_empty());
    assert!(f.fs.lookup(acme, OsStr::new("..")).await.is_err());
    let acme2 = ino(&f.fs, "acme2").await;
    // `acme/../acme2/secret` is a key under `acme/`, not a way into acme2.
    assert_eq!(list(&f.fs, acme2, false).await, vec!["mine"]);
}

#[tokio::test]
async fn large_listing_streams_in_pages() {
    let f = fixture();
    for i in 0..2500 {
        f.bucket.insert(&format!("acme/big/f{i:05}"), "");
    }
    let big = ino(&f.fs, "acme/big").await;
    f.bucket.reset_counts();
    let names = list(&f.fs, big, true).await;
    assert_eq!(names.len(), 2500);
    assert_eq!(names[0], "f00000");
    assert_eq!(names[2499], "f02499");
    assert_eq!(f.bucket.count(Op::List), 3, "three pages of 1000");
}

#[tokio::test]
async fn write_read_rename_unlink_round_trip() {
    let f = fixture();
    let data: Vec<u8> = (0..(7u32 << 20)).map(|i| (i % 251) as u8).collect();
    write_file(&f.fs, "acme", "movie.mp4", &data).await;
    assert_eq!(f.bucket.object("acme/movie.mp4").unwrap().as_ref(), &data[..]);
    assert_eq!(read_all(&f.fs, "acme/movie.mp4").await, data);
    let acme = ino(&f.fs, "acme").await;
    f.fs.mkdir(acme, OsStr::new("dir"), NEW).await.unwrap();
    assert!(f.bucket.object("acme/dir/").is_some(), "mkdir leaves a marker");
    let dir = ino(&f.fs, "acme/dir").await;
    f.fs.rename(acme, OsStr::new("movie.mp4"), dir, OsStr::new("m.mp4"), 0)
        .await
        .unwrap();
    assert!(f.bucket.object("acme/movie.mp4").is_none());
    assert_eq!(f.bucket.object("acme/dir/m.mp4").unwrap().len(), data.len());
    let err = f.fs.rmdir(acme, OsStr::new("dir")).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOTEMPTY);
    f.fs.rename(acme, OsStr::new("dir"), acme, OsStr::new("moved"), 0)
        .await
        .unwrap();
    assert_eq!(f.bucket.object("acme/moved/m.mp4").unwrap().len(), data.len());
    assert!(f.bucket.keys().iter().all(|k| !k.starts_with("acme/dir/")));
    let moved = ino(&f.fs, "acme/moved").await;
    f.fs.unlink(moved, OsStr::new("m.mp4")).await.unwrap();
    f.fs.rmdir(acme, OsStr::new("moved")).await.unwrap();
    assert_eq!(f.bucket.keys().iter().filter(|k| k.starts_with("acme/")).count(), 0);
}

#[tokio::test]
async fn read_only_tenant_refuses_changes() {
    let f = fixture();
    f.bucket.insert("frozen/a", "1");
    let frozen = ino(&f.fs, "frozen").await;
    assert_eq!(
        f.fs.create(frozen, OsStr::new("x"), libc::O_WRONLY, 0, NEW)
            .await
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
    assert_eq!(
        f.fs.mkdir(frozen, OsStr::new("d"), NEW).await.unwrap_err().errno(),
        libc::EROFS
    );
    assert_eq!(
        f.fs.unlink(frozen, OsStr::new("a")).await.unwrap_err().errno(),
        libc::EROFS
    );
    let a = ino(&f.fs, "frozen/a").await;
    assert_eq!(f.fs.open(a, libc::O_RDWR, 0).await.unwrap_err().errno(), libc::EROFS);
    assert_eq!(read_all(&f.fs, "frozen/a").await, b"1");
}

#[tokio::test]
async fn unlink_while_writing_stores_nothing() {
    let f = fixture();
    let acme = ino(&f.fs, "acme").await;
    let (_, o) =
        f.fs.create(acme, OsStr::new("tmp"), libc::O_WRONLY, 0, NEW)
            .await
            .unwrap();
    f.fs.write(o.fh, 0, b"hello").await.unwrap();
    f.fs.unlink(acme, OsStr::new("tmp")).await.unwrap();
    f.fs.write(o.fh, 5, b" world").await.unwrap();
    f.fs.flush(o.fh, 0).await.unwrap();
    f.fs.release(o.fh).await.unwrap();
    assert!(f.bucket.object("acme/tmp").is_none());
    assert_eq!(f.bucket.open_uploads(), 0);
}

#[tokio::test]
async fn file_being_written_is_listed_and_readable() {
    let f = fixture();
    let acme = ino(&f.fs, "acme").await;
    let (e, o) =
        f.fs.create(acme, OsStr::new("live.txt"), libc::O_RDWR, 0, NEW)
            .await
            .unwrap();
    f.fs.write(o.fh, 0, b"partial").await.unwrap();
    assert!(list(&f.fs, acme, false).await.contains(&"live.txt".to_owned()));
    assert_eq!(f.fs.getattr(e.attr.ino).await.unwrap().attr.size, 7);
    assert_eq!(&f.fs.read(o.fh, 0, 100).await.unwrap()[..], b"partial");
    f.fs.release(o.fh).await.unwrap();
    assert_eq!(f.bucket.object("acme/live.txt").unwrap().as_ref(), b"partial");
}

#[tokio::test]
async fn inodes_are_released_on_forget() {
    let f = fixture();
    for i in 0..50 {
        f.bucket.insert(&format!("acme/d/f{i}"), "x");
    }
    let base = f.fs.inode_count();
    let d = ino(&f.fs, "acme/d").await;
    let names = list(&f.fs, d, true).await;
    assert_eq!(names.len(), 50);
    assert!(f.fs.inode_count() >= base + 50);
    for n in &names {
        let child = f.fs.lookup(d, OsStr::new(n)).await.unwrap().attr.ino;
        f.fs.forget(child, 2); // one from readdirplus, one from this lookup
    }
    f.fs.forget(d, 1);
    let acme = ino(&f.fs, "acme").await;
    f.fs.forget(acme, 2);
    assert!(f.fs.inode_count() <= base + 1, "{} inodes left", f.fs.inode_count());
}

#[tokio::test]
async fn only_the_opening_process_commits_on_close() {
    let f = fixture();
    let acme = ino(&f.fs, "acme").await;
    let me = std::process::id();
    let (_, o) =
        f.fs.create(acme, OsStr::new("f"), libc::O_WRONLY, me, NEW)
            .await
            .unwrap();
    f.fs.write(o.fh, 0, b"half").await.unwrap();
    // A forked child (here: pid 1, another process) closing its inherited copy.
    f.fs.flush(o.fh, 1).await.unwrap();
    assert!(
        f.bucket.object("acme/f").is_none(),
        "a child's close must not publish the file"
    );
    f.fs.write(o.fh, 4, b" done").await.unwrap();
    f.fs.flush(o.fh, me).await.unwrap();
    assert_eq!(f.bucket.object("acme/f").unwrap().as_ref(), b"half done");
    f.fs.release(o.fh).await.unwrap();
}

/// readdirplus collector that keeps each entry's TTL.
struct CollectTtl(Vec<(String, SystemTime, Duration)>);

impl DirReplier for CollectTtl {
    fn add(&mut self, e: &DirEntry, ttl: Duration) -> bool {
        self.0.push((e.name.clone(), e.attr.mtime, ttl));
        false
    }
}

#[tokio::test]
async fn setattr_mtime_persists_for_open_and_closed_files() {
    let t_open = UNIX_EPOCH + Duration::new(981_158_400, 123_456_789);
    let t_closed = UNIX_EPOCH + Duration::new(1_000_000_000, 5);
    let f = fixture();
    // Open for writing (cp -p: write, futimens, close): stored with the data.
    let parent = ino(&f.fs, "acme").await;
    let (e, o) =
        f.fs.create(parent, OsStr::new("open.txt"), libc::O_WRONLY | libc::O_CREAT, 0, NEW)
            .await
            .unwrap();
    f.fs.write(o.fh, 0, b"hello").await.unwrap();
    let attr = f.fs.setattr(e.attr.ino, Some(o.fh), mtime(t_open)).await.unwrap().attr;
    assert_eq!(attr.mtime, t_open);
    f.fs.flush(o.fh, 0).await.unwrap();
    f.fs.release(o.fh).await.unwrap();
    assert_eq!(f.bucket.count(Op::SetMtime), 0, "stored by the PUT itself");
    // Closed (touch -d, rsync's utimes after close): stored in place.
    write_file(&f.fs, "acme", "closed.txt", b"world").await;
    let closed = ino(&f.fs, "acme/closed.txt").await;
    let attr = f.fs.setattr(closed, None, mtime(t_closed)).await.unwrap().attr;
    assert_eq!(attr.mtime, t_closed);
    assert_eq!(f.bucket.count(Op::SetMtime), 1);

    // A fresh filesystem over the same bucket (a remount) sees both.
    let g = fixture_over(f.bucket.clone());
    let root = ino(&g.fs, "acme").await;
    // Listing first, as `ls -l` and rsync do: entries whose stored mtime the listing lacks
    // must not be cached by the kernel.
    let fh = g.fs.opendir(root).await.unwrap();
    let mut c = CollectTtl(Vec::new());
    g.fs.readdir(fh, 0, true, &mut c).await.unwrap();
    g.fs.releasedir(fh);
    for (name, _, ttl) in &c.0 {
        if name.ends_with(".txt") {
            assert_eq!(*ttl, Duration::ZERO, "{name}");
        }
    }
    f.bucket.reset_counts();
    let e = g.fs.lookup(root, OsStr::new("open.txt")).await.unwrap();
    assert_eq!(e.attr.mtime, t_open);
    assert_eq!(e.attr.size, 5);
    let e = g.fs.lookup(root, OsStr::new("closed.txt")).await.unwrap();
    assert_eq!(e.attr.mtime, t_closed);
    // Listed just before: one HEAD each, no listing.
    assert_eq!((f.bucket.count(Op::Head), f.bucket.count(Op::List)), (2, 0));
    assert_eq!(read_all(&g.fs, "acme/closed.txt").await, b"world");

    // Once known, a listing of the unchanged objects keeps the mtimes and may be cached.
    let fh = g.fs.opendir(root).await.unwrap();
    let mut c = CollectTtl(Vec::new());
    g.fs.readdir(fh, 0, true, &mut c).await.unwrap();
    g.fs.releasedir(fh);
    let got: Vec<_> = c.0.iter().filter(|(n, _, _)| n.ends_with(".txt")).collect();
    assert_eq!(got.len(), 2);
    for (name, mtime, ttl) in got {
        let want = if name == "open.txt" { t_open } else { t_closed };
        assert_eq!(*mtime, want, "{name}");
        assert!(*ttl > Duration::ZERO, "{name}");
    }

    // A write after setattr makes the mtime "now" again, as on a local filesystem.
    let ino_open = ino(&g.fs, "acme/open.txt").await;
    let o = g.fs.open(ino_open, libc::O_WRONLY, 0).await.unwrap();
    g.fs.setattr(ino_open, Some(o.fh), mtime(t_closed)).await.unwrap();
    g.fs.write(o.fh, 5, b"!").await.unwrap();
    g.fs.release(o.fh).await.unwrap();
    let h = f.bucket.head("acme/open.txt").await.unwrap();
    assert_eq!((h.size, h.mtime), (6, None));

    // Read-only tenants refuse it.
    f.bucket.insert("frozen/x", "1");
    let x = ino(&g.fs, "frozen/x").await;
    let err = g.fs.setattr(x, None, mtime(t_open)).await.unwrap_err();
    assert_eq!(err.errno(), libc::EROFS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_l_of_a_listed_directory_heads_ahead_and_never_lists_per_entry() {
    let bucket = Arc::new(InMemoryBackend::new());
    for i in 0..300 {
        bucket.insert(&format!("acme/big/f{i:04}"), Bytes::from_static(b"x"));
    }
    let f = fixture_over(bucket);
    let dir = ino(&f.fs, "acme/big").await;
    assert_eq!(list(&f.fs, dir, true).await.len(), 300);
    // `ls -l` stats the entries one by one, long after the listing (past the metadata TTL).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.bucket.reset_counts();
    f.fs.lookup(dir, OsStr::new("f0000")).await.unwrap();
    // The first lookup HEADs f0000 and starts HEADs of the next STAT_AHEAD_WINDOW (256,
    // src/fs/mod.rs) siblings in the background. Wait for all of them: HEADs still going out
    // while f0020 is looked up would be counted against it.
    let heads_reach = |n: u64| {
        let bucket = f.bucket.clone();
        async move {
            for _ in 0..300 {
                if bucket.count(Op::Head) >= n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            bucket.count(Op::Head)
        }
    };
    let ahead = 1 + 256;
    let before = heads_reach(ahead).await;
    assert_eq!(before, ahead, "stat-ahead HEADs after the first lookup");
    f.fs.lookup(dir, OsStr::new("f0020")).await.unwrap();
    // f0020 itself was resolved ahead of its lookup; its lookup moves the window on by 20
    // (f0257..f0276), so the HEADs stay ahead of the walk.
    assert_eq!(
        heads_reach(before + 20).await,
        before + 20,
        "f0020 was resolved ahead of its lookup"
    );
    for i in 21..300 {
        f.fs.lookup(dir, OsStr::new(&format!("f{i:04}"))).await.unwrap();
    }
    // No listing per entry (quadratic on servers that scan to list), and each file HEADed
    // once: a lookup whose entry is being fetched ahead waits for that HEAD (a few may race).
    assert_eq!(f.bucket.count(Op::List), 0);
    let heads = f.bucket.count(Op::Head);
    assert!((300..=330).contains(&heads), "{heads} HEADs for 300 files");
}

fn questions(bucket: &InMemoryBackend) -> u64 {
    bucket.count(Op::Head) + bucket.count(Op::List)
}

async fn lookup_errno(fs: &Filesystem, parent: u64, name: &str) -> i32 {
    fs.lookup(parent, OsStr::new(name)).await.unwrap_err().errno()
}

#[tokio::test]
async fn a_name_proven_absent_is_trusted_for_negative_ttl_only() {
    let f = fixture();
    let root = ino(&f.fs, "acme").await;
    f.bucket.reset_counts();
    // `cp` looks the name up, then its exclusive create looks it up again: one question.
    assert_eq!(lookup_errno(&f.fs, root, "new.bin").await, libc::ENOENT);
    assert_eq!(questions(&f.bucket), 2, "a HEAD and a LIST");
    assert_eq!(lookup_errno(&f.fs, root, "new.bin").await, libc::ENOENT);
    assert_eq!(questions(&f.bucket), 2, "the second lookup is answered from memory");
    // Created here: it exists at once.
    write_file(&f.fs, "acme", "new.bin", b"x").await;
    assert_eq!(f.fs.lookup(root, OsStr::new("new.bin")).await.unwrap().attr.size, 1);
    // Stored by someone else after the proof: seen once the proof expires (1 s), not before.
    assert_eq!(lookup_errno(&f.fs, root, "remote.bin").await, libc::ENOENT);
    f.bucket.insert("acme/remote.bin", "hello");
    assert_eq!(lookup_errno(&f.fs, root, "remote.bin").await, libc::ENOENT);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(f.fs.lookup(root, OsStr::new("remote.bin")).await.unwrap().attr.size, 5);
    // Removed here: absent at once, without asking.
    let before = questions(&f.bucket);
    f.fs.unlink(root, OsStr::new("remote.bin")).await.unwrap();
    assert_eq!(lookup_errno(&f.fs, root, "remote.bin").await, libc::ENOENT);
    assert_eq!(questions(&f.bucket), before);
}

#[tokio::test]
async fn negative_ttl_zero_asks_the_backend_every_time() {
    let config = FsConfig {
        negative_ttl: Duration::ZERO,
        ..FsConfig::default()
    };
    let f = fixture_with(Arc::new(InMemoryBackend::new()), config);
    let root = ino(&f.fs, "acme").await;
    assert_eq!(lookup_errno(&f.fs, root, "d").await, libc::ENOENT);
    let d = f.fs.mkdir(root, OsStr::new("d"), NEW).await.unwrap().attr.ino;
    f.bucket.reset_counts();
    for _ in 0..2 {
        assert_eq!(lookup_errno(&f.fs, root, "x").await, libc::ENOENT);
        assert_eq!(lookup_errno(&f.fs, d, "x").await, libc::ENOENT);
    }
    assert_eq!(questions(&f.bucket), 8);
}

#[tokio::test]
async fn a_directory_made_here_answers_missing_names_until_a_child_is_forgotten() {
    let f = fixture();
    let root = ino(&f.fs, "acme").await;
    // mkdir is exclusive: the kernel looks the name up first.
    assert_eq!(lookup_errno(&f.fs, root, "d").await, libc::ENOENT);
    let d = f.fs.mkdir(root, OsStr::new("d"), NEW).await.unwrap().attr.ino;
    f.bucket.reset_counts();
    // `cp -r` into it: two lookups and a create per file, and not one HEAD or LIST.
    for i in 0..20 {
        let name = format!("f{i}");
        for _ in 0..2 {
            assert_eq!(lookup_errno(&f.fs, d, &name).await, libc::ENOENT);
        }
        write_file(&f.fs, "acme/d", &name, name.as_bytes()).await;
    }
    // (write_file looked "acme" and "d" up: known, fresh.)
    assert_eq!(questions(&f.bucket), 0);
    assert_eq!(f.bucket.count(Op::Put), 20);
    // The kernel forgets a child: the table no longer holds every child, so a missing name
    // is asked for again, and the forgotten one is found.
    let c = f.fs.lookup(d, OsStr::new("f3")).await.unwrap().attr.ino;
    // One reference from the create, one from write_file's lookup, one from this lookup.
    f.fs.forget(c, 3);
    assert_eq!(f.fs.lookup(d, OsStr::new("f3")).await.unwrap().attr.size, 2);
    assert!(questions(&f.bucket) > 0);
    let before = questions(&f.bucket);
    assert_eq!(lookup_errno(&f.fs, d, "other").await, libc::ENOENT);
    assert!(questions(&f.bucket) > before);
    // A directory made without a proof that its name was free is not assumed empty.
    f.bucket.insert("acme/e/old", "1");
    let e = f.fs.mkdir(root, OsStr::new("e"), NEW).await.unwrap().attr.ino;
    assert_eq!(f.fs.lookup(e, OsStr::new("old")).await.unwrap().attr.size, 1);
}

#[tokio::test]
async fn a_listing_read_to_its_end_answers_missing_names_when_every_entry_is_in_the_table() {
    let bucket = Arc::new(InMemoryBackend::new());
    for i in 0..20 {
        bucket.insert(&format!("acme/d/f{i:02}"), "x");
    }
    bucket.insert("acme/d/sub/deep", "y");
    let f = fixture_over(bucket);
    let d = ino(&f.fs, "acme/d").await;
    // A plain readdir gives the table no entries: it cannot answer for missing names.
    assert_eq!(list(&f.fs, d, false).await.len(), 21);
    f.bucket.reset_counts();
    assert_eq!(lookup_errno(&f.fs, d, "new1").await, libc::ENOENT);
    assert_eq!(questions(&f.bucket), 2);
    // readdirplus to the end: every entry is in the table, so `ls` then `cp` asks nothing.
    assert_eq!(list(&f.fs, d, true).await.len(), 21);
    f.bucket.reset_counts();
    assert_eq!(lookup_errno(&f.fs, d, "new2").await, libc::ENOENT);
    let sub = f.fs.lookup(d, OsStr::new("sub")).await.unwrap().attr.ino;
    assert_eq!(questions(&f.bucket), 0);
    // The kernel forgets one entry: the table no longer answers for the directory.
    f.fs.forget(sub, 2); // one from readdirplus, one from this lookup
    assert_eq!(lookup_errno(&f.fs, d, "new3").await, libc::ENOENT);
    assert_eq!(questions(&f.bucket), 2);
}

/// Puts and completed multipart uploads the bucket has seen: one per published object version.
fn publishes(b: &InMemoryBackend) -> u64 {
    b.count(Op::Put) + b.count(Op::CompleteMultipart) + b.count(Op::Copy)
}

/// `cmd > existing`: the shell opens with O_TRUNC, dup2s onto stdout and closes the original
/// (a flush from the opener with nothing written), then `cmd` writes and exits (the real
/// close). The old object stays whole until the new content is committed, once.
#[tokio::test]
async fn a_redirect_keeps_the_old_object_until_data_is_committed() {
    let f = fixture();
    f.bucket.insert("acme/out.txt", &b"old content"[..]);
    let ino = ino(&f.fs, "acme/out.txt").await;
    let me = std::process::id();
    f.bucket.reset_counts();
    let o = f.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC, me).await.unwrap();
    f.fs.flush(o.fh, me).await.unwrap();
    f.fs.fsync(o.fh).await.unwrap();
    assert_eq!(f.bucket.object("acme/out.txt").unwrap().as_ref(), b"old content");
    assert_eq!(publishes(&f.bucket), 0, "nothing written, nothing published");
    f.fs.write(o.fh, 0, b"new").await.unwrap();
    assert_eq!(f.bucket.object("acme/out.txt").unwrap().as_ref(), b"old content");
    f.fs.flush(o.fh, me).await.unwrap();
    assert_eq!(f.bucket.object("acme/out.txt").unwrap().as_ref(), b"new");
    f.fs.release(o.fh).await.unwrap();
    assert_eq!(publishes(&f.bucket), 1, "one PUT per redirect");
}

/// A new file has no object until data is committed; a flush with nothing written (the
/// shell's close after dup2, or `exec 3>new`) publishes nothing.
#[tokio::test]
async fn a_new_file_has_no_object_before_its_data() {
    let f = fixture();
    let acme = ino(&f.fs, "acme").await;
    let me = std::process::id();
    let (_, o) =
        f.fs.create(acme, OsStr::new("new.txt"), libc::O_WRONLY, me, NEW)
            .await
            .unwrap();
    f.fs.flush(o.fh, me).await.unwrap();
    f.fs.fsync(o.fh).await.unwrap();
    assert!(f.bucket.object("acme/new.txt").is_none());
    f.fs.write(o.fh, 0, b"data").await.unwrap();
    f.fs.fsync(o.fh).await.unwrap();
    assert_eq!(f.bucket.object("acme/new.txt").unwrap().as_ref(), b"data");
    // Committed: later closes with nothing new publish nothing again.
    f.fs.flush(o.fh, me).await.unwrap();
    f.fs.release(o.fh).await.unwrap();
    assert_eq!(publishes(&f.bucket), 1);
}

/// `touch f` and `: > f`: a created or truncated file nobody wrote is stored at its last
/// release, once.
#[tokio::test]
async fn an_unwritten_created_or_truncated_file_is_stored_at_its_last_release() {
    let f = fixture();
    let acme = ino(&f.fs, "acme").await;
    let me = std::process::id();
    let (_, o) =
        f.fs.create(acme, OsStr::new("empty"), libc::O_WRONLY, me, NEW)
            .await
            .unwrap();
    f.fs.flush(o.fh, me).await.unwrap();
    assert!(f.bucket.object("acme/empty").is_none());
    f.fs.release(o.fh).await.unwrap();
    assert_eq!(f.bucket.object("acme/empty").unwrap().as_ref(), b"");
    assert_eq!(publishes(&f.bucket), 1);

    f.bucket.insert("acme/full", &b"something"[..]);
    let ino = ino(&f.fs, "acme/full").await;
    f.bucket.reset_counts();
    let o = f.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC, me).await.unwrap();
    let dup_close_by_child = 1;
    f.fs.flush(o.fh, dup_close_by_child).await.unwrap();
    f.fs.flush(o.fh, me).await.unwrap();
    assert_eq!(f.bucket.object("acme/full").unwrap().as_ref(), b"something");
    f.fs.release(o.fh).await.unwrap();
    assert_eq!(f.bucket.object("acme/full").unwrap().as_ref(), b"");
    assert_eq!(publishes(&f.bucket), 1);
}

/// Renaming a file open for writing publishes none of its uncommitted bytes: a new file
/// moves without an object, a replaced one takes its old content along until the commit.
#[tokio::test]
async fn renaming_a_file_being_written_publishes_nothing_early() {
    let f = fixture();
    let acme = ino(&f.fs, "acme").await;
    let me = std::process::id();
    let (_, o) =
        f.fs.create(acme, OsStr::new("a.part"), libc::O_WRONLY, me, NEW)
            .await
            .unwrap();
    f.fs.write(o.fh, 0, b"half").await.unwrap();
    f.fs.rename(acme, OsStr::new("a.part"), acme, OsStr::new("a"), 0)
        .await
        .unwrap();
    assert!(f.bucket.object("acme/a.part").is_none());
    assert!(
        f.bucket.object("acme/a").is_none(),
        "half-written data published by rename"
    );
    f.fs.write(o.fh, 4, b" done").await.unwrap();
    f.fs.flush(o.fh, me).await.unwrap();
    f.fs.release(o.fh).await.unwrap();
    assert_eq!(f.bucket.object("acme/a").unwrap().as_ref(), b"half done");
    assert!(f.bucket.object("acme/a.part").is_none());

    f.bucket.insert("acme/b", &b"old b"[..]);
    let b = ino(&f.fs, "acme/b").await;
    let o = f.fs.open(b, libc::O_WRONLY | libc::O_TRUNC, me).await.unwrap();
    f.fs.write(o.fh, 0, b"new").await.unwrap();
    f.fs.rename(acme, OsStr::new("b"), acme, OsStr::new("c"), 0)
        .await
        .unwrap();
    assert!(f.bucket.object("acme/b").is_none());
    assert_eq!(f.bucket.object("acme/c").unwrap().as_ref(), b"old b");
    f.fs.flush(o.fh, me).await.unwrap();
    f.fs.release(o.fh).await.unwrap();
    assert_eq!(f.bucket.object("acme/c").unwrap().as_ref(), b"new");
}

/// Holds the first page of the quota count's listing (a flat listing of the whole tenant)
/// until released, and serves that listing one object per page, so changes can land while
/// it runs, on keys it has passed and keys it has not reached.
#[derive(Debug)]
struct HeldCount {
    inner: Arc<dyn Backend>,
    /// The first page is taken (the state the listing saw) and held.
    taken: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
    held: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl byosfs::backend::Layer for HeldCount {
    fn inner(&self) -> Arc<dyn Backend> {
        self.inner.clone()
    }

    async fn list(
        &self,
        params: &byosfs::backend::ListParams,
    ) -> byosfs::backend::BackendResult<byosfs::backend::ListPage> {
        if !params.prefix.is_empty() || params.delimited {
            return self.inner.list(params).await;
        }
        let page = self.inner.list(&params.clone().with_max_keys(1)).await?;
        if !self.held.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.taken.notify_one();
            let _ = self.release.acquire().await.unwrap();
        }
        Ok(page)
    }
}

/// A write, a delete behind the listing and a delete ahead of it land while a quota count's
/// listing runs, with a file open (grown, not stored yet) throughout: the count comes out as
/// what the tenant holds, whatever the listing saw of each change.
#[tokio::test]
async fn a_quota_recount_is_exact_with_writes_and_deletes_landing_during_its_listing() {
    use byosfs::limits::LimitRules;
    use byosfs::tenant::TenantPolicy;
    let bucket = Arc::new(InMemoryBackend::new());
    bucket.insert("q/a", vec![1u8; 10]);
    bucket.insert("q/c", vec![1u8; 20]);
    bucket.insert("q/e", vec![1u8; 30]);
    let inner: Arc<dyn Backend> = bucket.clone();
    let held = Arc::new(HeldCount {
        inner: Arc::new(PrefixBackend::new(inner, "q/")),
        taken: tokio::sync::Notify::new(),
        release: tokio::sync::Semaphore::new(0),
        held: Default::default(),
    });
    let policy = Arc::new(TenantPolicy {
        rules: LimitRules {
            quota: Some(1 << 30),
            ..Default::default()
        },
        ..Default::default()
    });
    let mut spec = spec("q", &bucket, "q/", false);
    spec.backend = held.clone();
    spec.policy = policy.clone();
    let f = fixture_of(bucket.clone(), vec![spec], FsConfig::default());
    let fs = &f.fs;
    let q = ino(fs, "q").await;
    for name in ["a", "e"] {
        ino(fs, &format!("q/{name}")).await; // known to the mount, as the kernel's lookup makes them
    }
    // Open throughout, 5 bytes written and not stored.
    let (_, open) = fs
        .create(q, OsStr::new("d"), libc::O_WRONLY | libc::O_CREAT, 0, NEW)
        .await
        .unwrap();
    fs.write(open.fh, 0, &[2u8; 5]).await.unwrap();

    let changes = async {
        held.taken.notified().await;
        // The listing has passed `a` (its first page); `b`, `c`, `e` are still ahead.
        write_file(fs, "q", "b", &[3u8; 7]).await;
        fs.unlink(q, OsStr::new("a")).await.unwrap();
        fs.unlink(q, OsStr::new("e")).await.unwrap();
        held.release.add_permits(1);
    };
    tokio::join!(fs.recount_quotas(), changes);
    // b 7 + c 20 + the open d 5 (a and e deleted).
    assert_eq!(policy.usage.used(), 32);
    fs.release(open.fh).await.unwrap();
    assert_eq!(policy.usage.used(), 32, "committing d changes nothing");
    assert_eq!(bucket.object("q/d").map(|d| d.len()), Some(5));
    // The next count, with nothing landing, agrees.
    fs.recount_quotas().await;
    assert_eq!(policy.usage.used(), 32);
}
