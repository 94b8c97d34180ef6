//! The disk block cache (`src/cache/disk`) on a real directory, without a kernel: the cap is
//! never passed while it is filled far beyond it, entries survive a reopen, damaged files are
//! dropped and never served, tenants, locations and versions never share blocks, and the
//! directory is exclusive, private and never followed through a symlink.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use byosfs::backend::{ETag, ObjectMeta};
use byosfs::cache::disk::{DiskCache, DiskCacheConfig, DiskCacheError, DiskObject, LOCK_FILE};
use byosfs::cache::ObjectId;
use byosfs::upload::root::open_private_dir;
use bytes::Bytes;

const BS: u64 = 64 * 1024;

fn open(dir: &Path, capacity: u64) -> Result<Arc<DiskCache>, DiskCacheError> {
    let fd = open_private_dir(dir, "disk cache directory", "[cache] disk_dir").unwrap();
    let cache = DiskCache::open(
        fd,
        DiskCacheConfig {
            path: dir.to_owned(),
            capacity,
            block_size: BS,
        },
    )?;
    assert!(cache.flush(Duration::from_secs(10)), "index rebuilt");
    Ok(cache)
}

fn id(tenant: u32, key: &str, etag: &str) -> ObjectId {
    ObjectId::new(tenant, &ObjectMeta::new(key, 64 * BS, None, Some(ETag::new(etag))))
}

fn object(cache: &Arc<DiskCache>, tenant: &str, location: &str, key: &str, etag: &str) -> DiskObject {
    cache.object(tenant, location, &id(1, key, etag), BS)
}

fn block(b: u64) -> Bytes {
    // Different bytes per block, so a block served for another is caught.
    Bytes::from(
        (0..BS)
            .map(|i| u8::try_from((i * 7 + b * 13) % 251).unwrap())
            .collect::<Vec<_>>(),
    )
}

/// Bytes the directory holds: apparent sizes and allocated blocks, whichever is larger.
fn dir_bytes(dir: &Path) -> u64 {
    let (mut apparent, mut allocated) = (0, 0);
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        apparent += m.len();
        allocated += m.blocks() * 512;
    }
    apparent.max(allocated)
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().len() == 32)
        .collect();
    v.sort();
    v
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn filling_far_past_the_cap_never_passes_it_and_keeps_the_newest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    // Room for 10 blocks and their headers, not 11.
    let cap = 10 * (BS + 4096);
    let cache = open(&dir, cap).unwrap();
    let obj = object(&cache, "t", "s3://b/t/", "big", "\"e1\"");
    let mut peak = 0;
    for b in 0..60 {
        obj.put(b, block(b));
        assert!(cache.flush(Duration::from_secs(10)));
        let now = dir_bytes(&dir);
        peak = peak.max(now);
        assert!(now <= cap, "after block {b}: {now} bytes on disk, cap {cap}");
        assert!(cache.used_bytes() <= cap);
    }
    assert!(peak > cap - 2 * (BS + 4096), "the cache did fill up ({peak} of {cap})");
    assert_eq!(cache.len(), 10);
    assert_eq!(files(&dir).len(), 10);
    assert!(cache.stats().evicted.load(std::sync::atomic::Ordering::Relaxed) >= 50);
    let rt = rt();
    // The newest ten are there, intact; the oldest were evicted.
    for b in 50..60 {
        assert_eq!(rt.block_on(obj.get(b, BS)), Some(block(b)), "block {b}");
    }
    assert_eq!(rt.block_on(obj.get(0, BS)), None);
    assert!(!obj.contains(49));
}

#[test]
fn recency_decides_what_is_evicted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let cache = open(&dir, 4 * (BS + 4096)).unwrap();
    let obj = object(&cache, "t", "s3://b/t/", "k", "\"e\"");
    let rt = rt();
    for b in 0..4 {
        obj.put(b, block(b));
    }
    assert!(cache.flush(Duration::from_secs(10)));
    // Block 0 is used again, so block 1 is the least recently used when 4 comes in.
    assert!(rt.block_on(obj.get(0, BS)).is_some());
    obj.put(4, block(4));
    assert!(cache.flush(Duration::from_secs(10)));
    assert!(obj.contains(0) && !obj.contains(1) && obj.contains(4));
}

#[test]
fn entries_survive_a_reopen_and_the_directory_is_exclusive() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let cache = open(&dir, 1 << 30).unwrap();
    let obj = object(&cache, "t", "s3://b/t/", "k", "\"e\"");
    for b in 0..5 {
        obj.put(b, block(b));
    }
    assert!(cache.flush(Duration::from_secs(10)));
    // A second user of the same directory is refused while the first holds it.
    assert!(matches!(open(&dir, 1 << 30), Err(DiskCacheError::InUse(_))));
    drop((obj, cache));
    let cache = open(&dir, 1 << 30).unwrap();
    assert_eq!(cache.len(), 5);
    let obj = object(&cache, "t", "s3://b/t/", "k", "\"e\"");
    let rt = rt();
    for b in 0..5 {
        assert_eq!(rt.block_on(obj.get(b, BS)), Some(block(b)));
    }
    // Reopened with a smaller cap, the oldest are dropped down to it.
    drop((obj, cache));
    let cache = open(&dir, 2 * (BS + 4096)).unwrap();
    assert_eq!(cache.len(), 2);
    assert!(dir_bytes(&dir) <= 2 * (BS + 4096));
}

#[test]
fn tenants_locations_versions_and_block_sizes_do_not_share_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = open(&tmp.path().join("cache"), 1 << 30).unwrap();
    let rt = rt();
    let mine = object(&cache, "alice", "s3://b/alice/", "k", "\"e1\"");
    mine.put(0, block(0));
    assert!(cache.flush(Duration::from_secs(10)));
    assert!(rt.block_on(mine.get(0, BS)).is_some());
    let others = [
        object(&cache, "bob", "s3://b/alice/", "k", "\"e1\""),
        // The same tenant re-pointed to another location.
        object(&cache, "alice", "s3://other/alice/", "k", "\"e1\""),
        // The object replaced.
        object(&cache, "alice", "s3://b/alice/", "k", "\"e2\""),
        cache.object("alice", "s3://b/alice/", &id(1, "k", "\"e1\""), 2 * BS),
        cache.object(
            "alice",
            "s3://b/alice/",
            &ObjectId::new(1, &ObjectMeta::new("k", 65 * BS, None, Some(ETag::new("\"e1\"")))),
            BS,
        ),
    ];
    for (i, o) in others.iter().enumerate() {
        assert!(!o.contains(0), "case {i}");
        assert_eq!(rt.block_on(o.get(0, BS)), None, "case {i}");
    }
}

#[test]
fn damaged_files_are_dropped_and_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let cache = open(&dir, 1 << 30).unwrap();
    let obj = object(&cache, "t", "s3://b/t/", "k", "\"e\"");
    for b in 0..4 {
        obj.put(b, block(b));
    }
    assert!(cache.flush(Duration::from_secs(10)));
    let f = files(&dir);
    assert_eq!(f.len(), 4);
    // One bit flipped in the data, one file truncated, one header byte changed.
    let mut bytes = std::fs::read(&f[0]).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(&f[0], &bytes).unwrap();
    let len = std::fs::metadata(&f[1]).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f[1])
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let mut bytes = std::fs::read(&f[2]).unwrap();
    bytes[9] ^= 0x40;
    std::fs::write(&f[2], &bytes).unwrap();
    let rt = rt();
    let mut served = 0;
    for b in 0..4 {
        if let Some(data) = rt.block_on(obj.get(b, BS)) {
            assert_eq!(data, block(b), "block {b} served damaged");
            served += 1;
        }
    }
    assert_eq!(served, 1);
    assert_eq!(cache.stats().bad.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(files(&dir).len(), 1, "damaged files are deleted");
    assert_eq!(cache.len(), 1);
    // A wrong expected length (the object's size changed) is a miss too, never short data.
    let last = (0..4).find(|&b| obj.contains(b)).unwrap();
    assert_eq!(rt.block_on(obj.get(last, BS - 1)), None);
}

#[test]
fn the_directory_is_private_marked_and_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    // Created 0700.
    let dir = tmp.path().join("new/cache");
    let cache = open(&dir, 1 << 30).unwrap();
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    assert!(dir.join(LOCK_FILE).exists());
    // A symlink planted under an entry's name is neither followed nor served.
    let obj = object(&cache, "t", "s3://b/t/", "k", "\"e\"");
    obj.put(0, block(0));
    assert!(cache.flush(Duration::from_secs(10)));
    let f = files(&dir).pop().unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, std::fs::read(&f).unwrap()).unwrap();
    std::fs::remove_file(&f).unwrap();
    std::os::unix::fs::symlink(&secret, &f).unwrap();
    assert_eq!(rt().block_on(obj.get(0, BS)), None);
    assert!(secret.exists(), "the symlink's target is untouched");
    drop((obj, cache));

    // A directory with other files is not taken for a cache (eviction would delete them).
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(home.join("notes.txt"), b"mine").unwrap();
    assert!(matches!(open(&home, 1 << 30), Err(DiskCacheError::NotACache(_))));
    assert!(home.join("notes.txt").exists());
    // A shared directory is refused by the private-directory check.
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = open_private_dir(&shared, "disk cache directory", "[cache] disk_dir").unwrap_err();
    assert!(err.contains("writable by group or others"), "{err}");
}
