//! POSIX metadata, symlinks, special files and exclusive create, driven through `Filesystem`
//! over an in-memory bucket: no kernel involved (the real-mount suite is `tests/posix.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use byosfs::backend::memory::{InMemoryBackend, Op};
use byosfs::backend::prefix::PrefixBackend;
use byosfs::backend::{Backend, PosixAttrs, PutOptions};
use byosfs::cache::BlockCache;
use byosfs::fs::{DirEntry, DirReplier, FileType, Filesystem, FsConfig, NewNode, SetAttr};
use byosfs::namespace::ROOT_INO;
use byosfs::tenant::{TenantSpec, TenantTable};
use byosfs::upload::{UploadConfig, Uploader};
use bytes::Bytes;

struct Fixture {
    fs: Filesystem,
    bucket: Arc<InMemoryBackend>,
    _staging: tempfile::TempDir,
}

/// A mount of tenant `t` (prefix `t/`, defaults 1000:1000 0755, POSIX metadata as given).
fn mount(bucket: Arc<InMemoryBackend>, posix_metadata: bool) -> Fixture {
    let inner: Arc<dyn Backend> = bucket.clone();
    let tenants = TenantTable::new(vec![TenantSpec {
        name: "t".into(),
        backend: Arc::new(PrefixBackend::new(inner, "t/")),
        read_only: false,
        uid: 1000,
        gid: 1000,
        mode: 0o755,
        posix_metadata,
        exclusive_create: true,
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
    let cache = Arc::new(BlockCache::new(16 << 20, 1 << 20));
    Fixture {
        fs: Filesystem::new(tenants, cache, uploader, FsConfig::default()),
        bucket,
        _staging: staging,
    }
}

fn posix_mount() -> Fixture {
    mount(Arc::new(InMemoryBackend::new()), true)
}

const ALICE: NewNode = NewNode {
    mode: 0o640,
    uid: 2001,
    gid: 3001,
};

async fn tenant(f: &Fixture) -> u64 {
    f.fs.lookup(ROOT_INO, OsStr::new("t")).await.unwrap().attr.ino
}

async fn stored(f: &Fixture, key: &str) -> PosixAttrs {
    f.bucket.head(key).await.unwrap().posix
}

async fn create_file(f: &Fixture, parent: u64, name: &str, new: NewNode, data: &[u8]) -> u64 {
    let (e, o) =
        f.fs.create(parent, OsStr::new(name), libc::O_WRONLY | libc::O_CREAT, 0, new)
            .await
            .unwrap();
    if !data.is_empty() {
        f.fs.write(o.fh, 0, data).await.unwrap();
    }
    f.fs.flush(o.fh, 0).await.unwrap();
    f.fs.release(o.fh).await.unwrap();
    e.attr.ino
}

#[tokio::test]
async fn create_and_mkdir_store_mode_and_owner_as_s3fs_does() {
    let f = posix_mount();
    let t = tenant(&f).await;
    let ino = create_file(&f, t, "f", ALICE, b"x").await;
    assert_eq!(stored(&f, "t/f").await, PosixAttrs::new(0o100640, 2001, 3001));
    let a = f.fs.getattr(ino).await.unwrap().attr;
    assert_eq!(
        (a.perm, a.uid, a.gid, a.kind),
        (0o640, 2001, 3001, FileType::RegularFile)
    );

    let d =
        f.fs.mkdir(t, OsStr::new("d"), NewNode::new(0o2750, 2001, 3001))
            .await
            .unwrap();
    assert_eq!(stored(&f, "t/d/").await, PosixAttrs::new(0o42750, 2001, 3001));
    assert_eq!(d.attr.perm, 0o2750);
    // A set-group-ID directory passes on its group, and the bit to subdirectories.
    let sub =
        f.fs.mkdir(d.attr.ino, OsStr::new("s"), NewNode::new(0o755, 2002, 4000))
            .await
            .unwrap();
    assert_eq!((sub.attr.gid, sub.attr.perm), (3001, 0o2755));
    create_file(&f, d.attr.ino, "g", NewNode::new(0o600, 2002, 4000), b"").await;
    assert_eq!(stored(&f, "t/d/g").await, PosixAttrs::new(0o100600, 2002, 3001));

    // A remount reads them back, directory included.
    let g = mount(f.bucket.clone(), true);
    let t = tenant(&g).await;
    let a = g.fs.lookup(t, OsStr::new("f")).await.unwrap().attr;
    assert_eq!((a.perm, a.uid, a.gid), (0o640, 2001, 3001));
    let a = g.fs.lookup(t, OsStr::new("d")).await.unwrap().attr;
    assert_eq!(
        (a.perm, a.uid, a.gid, a.kind),
        (0o2750, 2001, 3001, FileType::Directory)
    );
}

#[tokio::test]
async fn objects_without_metadata_get_the_tenant_defaults() {
    let f = posix_mount();
    f.bucket.insert("t/plain", "data");
    f.bucket.insert("t/implied/child", "data");
    let t = tenant(&f).await;
    let a = f.fs.lookup(t, OsStr::new("plain")).await.unwrap().attr;
    assert_eq!((a.perm, a.uid, a.gid), (0o644, 1000, 1000));
    let a = f.fs.lookup(t, OsStr::new("implied")).await.unwrap().attr;
    assert_eq!((a.perm, a.uid, a.gid), (0o755, 1000, 1000));
}

#[tokio::test]
async fn chmod_and_chown_persist_on_closed_and_open_files_and_on_directories() {
    let f = posix_mount();
    let t = tenant(&f).await;
    let ino = create_file(&f, t, "f", ALICE, b"content").await;
    let before = f.bucket.object("t/f").unwrap();
    let set = SetAttr {
        mode: Some(0o100755),
        uid: Some(0),
        ..Default::default()
    };
    let a = f.fs.setattr(ino, None, set).await.unwrap().attr;
    assert_eq!((a.perm, a.uid, a.gid), (0o755, 0, 3001));
    assert_eq!(stored(&f, "t/f").await, PosixAttrs::new(0o100755, 0, 3001));
    assert_eq!(f.bucket.object("t/f").unwrap(), before, "content kept");

    // Open for writing: the mode travels with the data commit.
    let o = f.fs.open(ino, libc::O_WRONLY, 0).await.unwrap();
    f.fs.write(o.fh, 0, b"CONTENT").await.unwrap();
    let set = SetAttr {
        mode: Some(0o700),
        ..Default::default()
    };
    f.fs.setattr(ino, Some(o.fh), set).await.unwrap();
    f.fs.flush(o.fh, 0).await.unwrap();
    f.fs.release(o.fh).await.unwrap();
    assert_eq!(f.bucket.object("t/f").unwrap(), Bytes::from_static(b"CONTENT"));
    assert_eq!(stored(&f, "t/f").await, PosixAttrs::new(0o100700, 0, 3001));

    // Rewriting a file with O_TRUNC keeps its mode and owner.
    let o = f.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC, 0).await.unwrap();
    f.fs.write(o.fh, 0, b"new").await.unwrap();
    f.fs.flush(o.fh, 0).await.unwrap();
    f.fs.release(o.fh).await.unwrap();
    assert_eq!(stored(&f, "t/f").await, PosixAttrs::new(0o100700, 0, 3001));

    // A directory implied by its children gets a marker to hold its mode.
    f.bucket.insert("t/implied/child", "x");
    let d = f.fs.lookup(t, OsStr::new("implied")).await.unwrap().attr.ino;
    let set = SetAttr {
        mode: Some(0o1777),
        gid: Some(50),
        ..Default::default()
    };
    f.fs.setattr(d, None, set).await.unwrap();
    assert_eq!(stored(&f, "t/implied/").await, PosixAttrs::new(0o41777, 1000, 50));
    assert_eq!(f.bucket.object("t/implied/child").unwrap(), Bytes::from_static(b"x"));
}

#[tokio::test]
async fn rename_keeps_mode_and_owner() {
    let f = posix_mount();
    let t = tenant(&f).await;
    create_file(&f, t, "a", ALICE, b"1").await;
    f.fs.rename(t, OsStr::new("a"), t, OsStr::new("b"), 0).await.unwrap();
    assert_eq!(stored(&f, "t/b").await, PosixAttrs::new(0o100640, 2001, 3001));
}

#[tokio::test]
async fn symlinks_are_objects_holding_the_target_with_mode_s_iflnk() {
    let f = posix_mount();
    let t = tenant(&f).await;
    for (name, target) in [("rel", "../x/y"), ("abs", "/etc/passwd"), ("dangling", "nowhere")] {
        let e =
            f.fs.symlink(t, OsStr::new(name), OsStr::new(target), ALICE)
                .await
                .unwrap();
        assert_eq!(e.attr.kind, FileType::Symlink);
        assert_eq!((e.attr.perm, e.attr.size), (0o777, target.len() as u64));
        let key = format!("t/{name}");
        assert_eq!(f.bucket.object(&key).unwrap(), Bytes::from(target.to_owned()));
        assert_eq!(stored(&f, &key).await, PosixAttrs::new(0o120777, 2001, 3001));
        assert_eq!(f.fs.readlink(e.attr.ino).await.unwrap(), Bytes::from(target.to_owned()));
    }
    // A link written by s3fs reads the same after a remount.
    let opts = PutOptions::default().with_posix(PosixAttrs::new(0o120777, 0, 0));
    f.bucket
        .put_opts("t/s3fs-link", Bytes::from_static(b"target"), &opts)
        .await
        .unwrap();
    let g = mount(f.bucket.clone(), true);
    let t = tenant(&g).await;
    let e = g.fs.lookup(t, OsStr::new("s3fs-link")).await.unwrap();
    assert_eq!(e.attr.kind, FileType::Symlink);
    assert_eq!(g.fs.readlink(e.attr.ino).await.unwrap(), Bytes::from_static(b"target"));
    // rename and unlink act on the link, never on its target.
    g.fs.rename(t, OsStr::new("rel"), t, OsStr::new("rel2"), 0)
        .await
        .unwrap();
    assert_eq!(f.bucket.object("t/rel2").unwrap(), Bytes::from_static(b"../x/y"));
    g.fs.unlink(t, OsStr::new("abs")).await.unwrap();
    assert!(f.bucket.object("t/abs").is_none());
    // Not a link: EINVAL, as readlink(2).
    let plain = create_file(&g, t, "plain", ALICE, b"").await;
    assert_eq!(g.fs.readlink(plain).await.unwrap_err().errno(), libc::EINVAL);
}

#[tokio::test]
async fn special_files_are_recorded_and_devices_refused() {
    let f = posix_mount();
    let t = tenant(&f).await;
    let e =
        f.fs.mknod(t, OsStr::new("fifo"), libc::S_IFIFO | 0o600, ALICE)
            .await
            .unwrap();
    assert_eq!((e.attr.kind, e.attr.perm), (FileType::NamedPipe, 0o600));
    assert_eq!(stored(&f, "t/fifo").await, PosixAttrs::new(0o10600, 2001, 3001));
    let e =
        f.fs.mknod(t, OsStr::new("sock"), libc::S_IFSOCK | 0o644, ALICE)
            .await
            .unwrap();
    assert_eq!(e.attr.kind, FileType::Socket);
    for dev in [libc::S_IFCHR, libc::S_IFBLK] {
        let err = f.fs.mknod(t, OsStr::new("dev"), dev | 0o600, ALICE).await.unwrap_err();
        assert_eq!(err.errno(), libc::EPERM);
    }
    assert!(f.bucket.object("t/dev").is_none());
}

#[tokio::test]
async fn without_posix_metadata_modes_are_the_tenants_and_links_are_refused() {
    let f = mount(Arc::new(InMemoryBackend::new()), false);
    let t = tenant(&f).await;
    let ino = create_file(&f, t, "f", ALICE, b"x").await;
    assert!(stored(&f, "t/f").await.is_empty());
    let set = SetAttr {
        mode: Some(0o700),
        ..Default::default()
    };
    let a = f.fs.setattr(ino, None, set).await.unwrap().attr;
    assert_eq!((a.perm, a.uid), (0o644, 1000));
    let err =
        f.fs.symlink(t, OsStr::new("l"), OsStr::new("f"), ALICE)
            .await
            .unwrap_err();
    assert_eq!(err.errno(), libc::EPERM);
}

#[tokio::test]
async fn exclusive_create_claims_the_name_once() {
    let bucket = Arc::new(InMemoryBackend::new());
    let (a, b) = (mount(bucket.clone(), true), mount(bucket.clone(), true));
    let (ta, tb) = (tenant(&a).await, tenant(&b).await);
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let (_, oa) = a.fs.create(ta, OsStr::new("lock"), flags, 0, ALICE).await.unwrap();
    // The second mount has not seen the name (no lookup cache to help it): the bucket says no.
    let err = b.fs.create(tb, OsStr::new("lock"), flags, 0, ALICE).await.unwrap_err();
    assert_eq!(err.errno(), libc::EEXIST);
    a.fs.write(oa.fh, 0, b"pid 1").await.unwrap();
    a.fs.flush(oa.fh, 0).await.unwrap();
    a.fs.release(oa.fh).await.unwrap();
    assert_eq!(bucket.object("t/lock").unwrap(), Bytes::from_static(b"pid 1"));
    assert_eq!(stored(&a, "t/lock").await, PosixAttrs::new(0o100640, 2001, 3001));
}

#[tokio::test]
async fn times_past_2038_persist() {
    let f = posix_mount();
    let t = tenant(&f).await;
    let ino = create_file(&f, t, "f", ALICE, b"x").await;
    let far = UNIX_EPOCH + Duration::new(4_102_444_800, 123_000_000); // 2100-01-01
    let set = SetAttr {
        mtime: Some(far),
        ..Default::default()
    };
    f.fs.setattr(ino, None, set).await.unwrap();
    let g = mount(f.bucket.clone(), true);
    let t = tenant(&g).await;
    let a = g.fs.lookup(t, OsStr::new("f")).await.unwrap().attr;
    assert_eq!(a.mtime, far);
    assert_eq!(a.perm, 0o640, "a time change keeps the mode");
}

struct Collect(Vec<DirEntry>);

impl DirReplier for Collect {
    fn add(&mut self, e: &DirEntry, _ttl: Duration) -> bool {
        self.0.push(e.clone());
        false
    }
}

#[tokio::test]
async fn plain_listing_sends_no_request_per_entry_and_hides_unknown_modes_from_the_kernel() {
    let f = posix_mount();
    for i in 0..50 {
        f.bucket.insert(&format!("t/f{i:02}"), "x");
        f.bucket.insert(&format!("t/d{i:02}/x"), "x");
    }
    let t = tenant(&f).await;
    f.bucket.reset_counts();
    for plus in [false, true] {
        let fh = f.fs.opendir(t).await.unwrap();
        let mut c = Collect(Vec::new());
        f.fs.readdir(fh, 0, plus, &mut c).await.unwrap();
        f.fs.releasedir(fh);
        assert_eq!(c.0.len(), 102);
        if plus {
            // Mode and type are only in a HEAD: readdirplus hands these over without a node.
            assert!(c
                .0
                .iter()
                .filter(|e| e.name != "." && e.name != "..")
                .all(|e| e.ino == 0));
        }
    }
    assert_eq!(f.bucket.count(Op::Head), 0);
    assert_eq!(f.bucket.count(Op::List), 2);
    let _ = SystemTime::now();
}

/// `RENAME_NOREPLACE` onto a name the lookup found free claims it with a conditional PUT
/// (`If-None-Match: *`) on providers that honour it, so another mount that stored the name in
/// between wins and the rename gets `EEXIST` (here the bucket's refusal is injected: the
/// window between the lookup and the copy cannot be hit on purpose).
#[tokio::test]
async fn rename_noreplace_claims_the_target_name() {
    use byosfs::backend::fault::{FaultBackend, FaultRule};
    use byosfs::backend::BackendErrorKind;
    let bucket = Arc::new(InMemoryBackend::new());
    let inner: Arc<dyn Backend> = bucket.clone();
    let faulty = Arc::new(FaultBackend::new(Arc::new(PrefixBackend::new(inner, "t/"))));
    let tenants = TenantTable::new(vec![TenantSpec {
        name: "t".into(),
        backend: faulty.clone(),
        read_only: false,
        uid: 1000,
        gid: 1000,
        mode: 0o755,
        posix_metadata: true,
        exclusive_create: true,
        policy: Default::default(),
        write_back: false,
    }]);
    let staging = tempfile::tempdir().unwrap();
    let uploader = Uploader::new(UploadConfig {
        staging_dir: staging.path().to_owned(),
        ..UploadConfig::default()
    })
    .unwrap();
    let cache = Arc::new(BlockCache::new(16 << 20, 1 << 20));
    let f = Fixture {
        fs: Filesystem::new(tenants, cache, uploader, FsConfig::default()),
        bucket: bucket.clone(),
        _staging: staging,
    };
    let t = tenant(&f).await;
    create_file(&f, t, "a", ALICE, b"from a").await;
    create_file(&f, t, "b", ALICE, b"from b").await;

    // Another mount stores "dst" between our lookup and our copy: the bucket refuses the claim.
    faulty.set_rule(Some(FaultRule::always(
        &[Op::Put],
        BackendErrorKind::PreconditionFailed,
    )));
    let err =
        f.fs.rename(t, OsStr::new("a"), t, OsStr::new("dst"), libc::RENAME_NOREPLACE)
            .await
            .unwrap_err();
    assert_eq!(err.errno(), libc::EEXIST);
    assert_eq!(
        bucket.object("t/a").unwrap(),
        Bytes::from_static(b"from a"),
        "source kept"
    );
    assert!(
        bucket.object("t/dst").is_none(),
        "nothing copied over the other mount's name"
    );

    // The name is free: claimed, then the copy lands on the claim.
    faulty.set_rule(None);
    f.fs.rename(t, OsStr::new("a"), t, OsStr::new("dst"), libc::RENAME_NOREPLACE)
        .await
        .unwrap();
    assert_eq!(bucket.object("t/dst").unwrap(), Bytes::from_static(b"from a"));
    assert!(bucket.object("t/a").is_none());
    // Taken now: refused by the lookup, before any request that could change the bucket.
    let puts = bucket.count(Op::Put);
    let err =
        f.fs.rename(t, OsStr::new("b"), t, OsStr::new("dst"), libc::RENAME_NOREPLACE)
            .await
            .unwrap_err();
    assert_eq!(err.errno(), libc::EEXIST);
    assert_eq!(bucket.count(Op::Put), puts);
    assert_eq!(bucket.object("t/dst").unwrap(), Bytes::from_static(b"from a"));
}
