//! Paths and whole-file reads through `Filesystem`'s own API (no kernel), for the tests that
//! drive the filesystem layer directly.

use std::ffi::OsStr;

use byosfs::fs::Filesystem;
use byosfs::namespace::ROOT_INO;

/// Inode of `path` ("tenant/dir/file"), looked up one name at a time from the root.
pub async fn ino(fs: &Filesystem, path: &str) -> u64 {
    let mut cur = ROOT_INO;
    for part in path.split('/') {
        cur = fs.lookup(cur, OsStr::new(part)).await.unwrap().attr.ino;
    }
    cur
}

/// The whole content of `path`, read in 128 KiB calls through one open handle.
pub async fn read_all(fs: &Filesystem, path: &str) -> Vec<u8> {
    let ino = ino(fs, path).await;
    let o = fs.open(ino, libc::O_RDONLY, 0).await.unwrap();
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let chunk = fs.read(o.fh, out.len() as u64, 128 * 1024).await.unwrap();
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    fs.release(o.fh).await.unwrap();
    out
}
