//! The filesystem's own reply types, free of `fuser` so the logic is testable without a kernel.

use std::time::{Duration, SystemTime};

use crate::namespace::{Inode, Kind};
use crate::tenant::Tenant;

/// File type as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A directory.
    Directory,
    /// A regular file.
    RegularFile,
}

/// Attributes of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (also used for atime and ctime: objects have only one time).
    pub mtime: SystemTime,
    /// Type.
    pub kind: FileType,
    /// Permission bits.
    pub perm: u16,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Attr {
    /// 512-byte blocks, as `stat` reports them (`du` uses this).
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(512)
    }
}

/// Preferred I/O size reported by `stat`: large, so tools like `cp` use big reads.
pub const BLKSIZE: u32 = 1024 * 1024;

/// A looked-up entry with how long the kernel may cache it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Attributes.
    pub attr: Attr,
    /// How long the kernel may trust the name and the attributes.
    pub ttl: Duration,
}

/// Result of `open`/`create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// File handle.
    pub fh: u64,
    /// Let the kernel keep its page cache across opens (object unchanged since last open).
    pub keep_cache: bool,
}

/// Result of `statfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Total blocks (of `bsize`).
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks available to unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
    /// Fragment size.
    pub frsize: u32,
}

/// One entry handed to a [`DirReplier`].
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// Inode number (for plain readdir, a placeholder when the entry has no inode yet).
    pub ino: u64,
    /// Offset the kernel passes back to continue after this entry.
    pub offset: u64,
    /// Name.
    pub name: String,
    /// Attributes (used by readdirplus).
    pub attr: Attr,
}

/// Receives directory entries; returns `true` when its buffer is full and the entry was NOT
/// added. Implemented by the FUSE glue for readdir and readdirplus, and by tests.
pub trait DirReplier {
    /// Add one entry.
    fn add(&mut self, entry: &DirEntry, ttl: Duration) -> bool;
}

/// Build the attributes of `inode` owned by `tenant` (the root belongs to the mount owner).
pub fn attr_of(inode: &Inode, tenant: Option<&Tenant>, root_owner: (u32, u32)) -> Attr {
    let (uid, gid, dir_mode) = match tenant {
        Some(t) => (t.uid, t.gid, t.mode),
        None => (root_owner.0, root_owner.1, 0o755),
    };
    let read_only = tenant.is_some_and(|t| t.read_only);
    let (kind, perm, nlink) = match inode.kind {
        Kind::Root | Kind::TenantRoot | Kind::Dir => (FileType::Directory, dir_mode, 2),
        // Files get the directory's bits without execute: media, not programs.
        Kind::File => (FileType::RegularFile, dir_mode & 0o666, 1),
    };
    let perm = if read_only { perm & !0o222 } else { perm };
    Attr {
        ino: inode.ino,
        size: inode.stat.size,
        mtime: inode.stat.mtime,
        kind,
        perm,
        nlink,
        uid,
        gid,
    }
}
