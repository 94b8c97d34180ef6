//! One cache file: how a block's identity is encoded and named, the file's layout, and the
//! blocking reads and writes of it (called on the writer thread or in `spawn_blocking`, never
//! on an async task or the FUSE loop).
//!
//! Layout (little-endian):
//! `magic "BYOSFSDC" | format u32 | identity length u32 | data length u64 | data CRC-32 u32 |
//! header CRC-32 u32 | identity | data`. The *identity* is the whole key of the block: the
//! tenant's scope (a hash of its name and storage location), the block size, the object's
//! key, size and version (ETag, or Last-Modified without one) and the block index. The file
//! name is the hex of the first 16 bytes of the identity's SHA-256, and a read compares the
//! stored identity byte for byte, so neither a hash collision nor a file copied under another
//! name can serve the wrong block. A file whose length, identity or CRC does not match is
//! reported [`ReadFail::Bad`] (the caller deletes it): a torn write after a crash, a truncated
//! or bit-flipped file is never served. Files are written to a temporary name and renamed,
//! without fsync: the cache may lose entries in a crash, never serve a partial one.

use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::time::SystemTime;

use bytes::Bytes;
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use sha2::{Digest as _, Sha256};

use super::index::EntryName;

const MAGIC: &[u8; 8] = b"BYOSFSDC";
/// Bump when the layout or the identity encoding changes: older files are then dropped as bad.
const FORMAT: u32 = 1;
/// Bytes before the identity.
pub(crate) const FIXED_HEADER: u64 = 32;
/// Prefix of a file being written; left over only by a crash, deleted by the next scan.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Builds the identity of an object's blocks (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Identity(Vec<u8>);

impl Identity {
    pub(crate) fn new(scope: &[u8; 32], block_size: u64) -> Self {
        let mut v = Vec::with_capacity(128);
        v.extend_from_slice(b"byosfs-block\0");
        v.extend_from_slice(scope);
        v.extend_from_slice(&block_size.to_le_bytes());
        Self(v)
    }

    pub(crate) fn u64(mut self, x: u64) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }

    /// Length-prefixed, so adjacent fields cannot run into each other.
    pub(crate) fn bytes(mut self, b: &[u8]) -> Self {
        self.0
            .extend_from_slice(&u64::try_from(b.len()).unwrap_or(u64::MAX).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// The tenant's scope: a hash of its name and storage location (the backend's description:
/// endpoint, bucket or root, and prefix), stable across mounts.
pub(crate) fn scope(tenant: &str, location: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"byosfs-scope\0");
    h.update(u64::try_from(tenant.len()).unwrap_or(u64::MAX).to_le_bytes());
    h.update(tenant.as_bytes());
    h.update(location.as_bytes());
    h.finalize().into()
}

/// The identity of block `block` of the object whose identity prefix is `object`.
pub(crate) fn block_identity(object: &[u8], block: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(object.len() + 8);
    v.extend_from_slice(object);
    v.extend_from_slice(&block.to_le_bytes());
    v
}

/// The file name of an identity.
pub(crate) fn name_of(identity: &[u8]) -> EntryName {
    let digest = Sha256::digest(identity);
    let mut name = [0u8; 16];
    name.copy_from_slice(&digest[..16]);
    name
}

/// `name` as the file name (32 lowercase hex digits).
pub(crate) fn file_name(name: &EntryName) -> String {
    name.iter().map(|b| format!("{b:02x}")).collect()
}

/// The entry name of a file name, if it is one of ours.
pub(crate) fn parse_name(file: &str) -> Option<EntryName> {
    if file.len() != 32 || !file.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut name = [0u8; 16];
    for (i, b) in name.iter_mut().enumerate() {
        *b = u8::from_str_radix(file.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(name)
}

/// Length of the file holding `data_len` bytes under `identity`.
pub(crate) fn file_len(identity: &[u8], data_len: u64) -> u64 {
    FIXED_HEADER + u64::try_from(identity.len()).unwrap_or(u64::MAX) + data_len
}

fn header(identity: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(32 + identity.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&FORMAT.to_le_bytes());
    h.extend_from_slice(&u32::try_from(identity.len()).unwrap_or(u32::MAX).to_le_bytes());
    h.extend_from_slice(&u64::try_from(data.len()).unwrap_or(u64::MAX).to_le_bytes());
    h.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    let mut c = crc32fast::Hasher::new();
    c.update(&h);
    c.update(identity);
    h.extend_from_slice(&c.finalize().to_le_bytes());
    h.extend_from_slice(identity);
    h
}

/// Why a cache file could not be served.
#[derive(Debug)]
pub(crate) enum ReadFail {
    /// No such file (deleted by eviction meanwhile).
    Missing,
    /// The file is not a valid copy of the block: delete it.
    Bad(&'static str),
    /// The disk failed; the file may be fine.
    Io(io::Error),
}

impl From<io::Error> for ReadFail {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOENT) => Self::Missing,
            // Something planted under our name (a symlink: `O_NOFOLLOW`); deleting the link
            // does not touch its target.
            Some(libc::ELOOP) => Self::Bad("a symlink"),
            _ => Self::Io(e),
        }
    }
}

/// Read and verify the `data_len` bytes of block `identity` from file `name` in `dir`;
/// with `touch`, set its mtime to now (recency across remounts).
pub(crate) fn read(dir: &OwnedFd, name: &str, identity: &[u8], data_len: u64, touch: bool) -> Result<Bytes, ReadFail> {
    // O_NONBLOCK: a FIFO planted under our name cannot stall the read (it fails the type check).
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = File::from(rfs::openat(dir, name, flags, Mode::empty()).map_err(io::Error::from)?);
    let meta = file.metadata()?;
    if !meta.is_file() || meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(ReadFail::Bad("not a regular file of the mounting user"));
    }
    if meta.len() != file_len(identity, data_len) {
        return Err(ReadFail::Bad("wrong length"));
    }
    let mut head = vec![0u8; usize::try_from(file_len(identity, 0)).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut head, 0)?;
    let mut data = vec![0u8; usize::try_from(data_len).map_err(|_| ReadFail::Bad("too long"))?];
    file.read_exact_at(&mut data, file_len(identity, 0))?;
    if head != header(identity, &data) {
        // Same identity and length, so it is the data or the header that is damaged.
        return Err(ReadFail::Bad("checksum or identity mismatch"));
    }
    if touch {
        let now = rfs::Timestamps {
            last_access: rfs::Timespec {
                tv_sec: 0,
                tv_nsec: rfs::UTIME_OMIT,
            },
            last_modification: rfs::Timespec {
                tv_sec: 0,
                tv_nsec: rfs::UTIME_NOW,
            },
        };
        // Recency only: a failure costs eviction order, never a read.
        let _ = rfs::futimens(&file, &now);
    }
    Ok(Bytes::from(data))
}

/// Write block `identity` with `data` as file `name` in `dir`: a temporary file renamed into
/// place, so the name never holds a partial file (short of a crash, which the checksums catch).
pub(crate) fn write(dir: &OwnedFd, name: &str, identity: &[u8], data: &[u8]) -> io::Result<()> {
    let tmp = format!("{TEMP_PREFIX}{name}");
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let open = || rfs::openat(dir, &tmp, flags, Mode::from_raw_mode(0o600));
    let fd = match open() {
        // Left by a write that failed to clean up: we are the only writer of this directory.
        Err(e) if e == rustix::io::Errno::EXIST => {
            rfs::unlinkat(dir, &tmp, AtFlags::empty())?;
            open()?
        }
        other => other?,
    };
    let mut file = File::from(fd);
    let written = file
        .write_all(&header(identity, data))
        .and_then(|()| file.write_all(data))
        .and_then(|()| rfs::renameat(dir, &tmp, dir, name).map_err(io::Error::from));
    if written.is_err() {
        let _ = rfs::unlinkat(dir, &tmp, AtFlags::empty());
    }
    written
}

/// Delete file `name` in `dir`; a missing file is no error.
pub(crate) fn remove(dir: &OwnedFd, name: &str) -> io::Result<()> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Err(e) if e == rustix::io::Errno::NOENT => Ok(()),
        other => other.map_err(io::Error::from),
    }
}

/// Seconds since the epoch of `t` (0 before it).
pub(crate) fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
