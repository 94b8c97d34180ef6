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
    /// A symbolic link (an object holding the target, stored mode `S_IFLNK`).
    Symlink,
    /// A FIFO (an empty object, stored mode `S_IFIFO`).
    NamedPipe,
    /// A Unix socket (an empty object, stored mode `S_IFSOCK`).
    Socket,
}

impl FileType {
    /// The type of an object whose stored mode has the file type bits `ifmt` (anything
    /// unknown, devices included, is a regular file: its bytes are still readable).
    pub fn of_object(ifmt: u32) -> Self {
        match ifmt {
            libc::S_IFLNK => FileType::Symlink,
            libc::S_IFIFO => FileType::NamedPipe,
            libc::S_IFSOCK => FileType::Socket,
            _ => FileType::RegularFile,
        }
    }

    /// The `S_IFMT` bits of this type.
    pub fn ifmt(self) -> u32 {
        match self {
            FileType::Directory => libc::S_IFDIR,
            FileType::RegularFile => libc::S_IFREG,
            FileType::Symlink => libc::S_IFLNK,
            FileType::NamedPipe => libc::S_IFIFO,
            FileType::Socket => libc::S_IFSOCK,
        }
    }
}

/// Who creates a node, and with which permission bits (the kernel has applied the umask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewNode {
    /// Permission bits (`0o7777`; type bits are ignored).
    pub mode: u32,
    /// Creator's uid.
    pub uid: u32,
    /// Creator's gid.
    pub gid: u32,
}

impl NewNode {
    /// A node created by `uid:gid` with `mode`.
    pub fn new(mode: u32, uid: u32, gid: u32) -> Self {
        Self { mode, uid, gid }
    }
}

/// The changes of one `setattr`; `None` leaves a field as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New size (truncate).
    pub size: Option<u64>,
    /// New mtime.
    pub mtime: Option<SystemTime>,
    /// New permission bits (chmod).
    pub mode: Option<u32>,
    /// New owner (chown).
    pub uid: Option<u32>,
    /// New group (chown/chgrp).
    pub gid: Option<u32>,
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
///
/// On a tenant with POSIX metadata, a file's or directory's stored mode, owner and group
/// win over the tenant's; whatever is not stored falls back to them. Tenant roots always
/// take the tenant's.
pub fn attr_of(inode: &Inode, tenant: Option<&Tenant>, root_owner: (u32, u32)) -> Attr {
    let (uid, gid, dir_mode) = match tenant {
        Some(t) => (t.uid, t.gid, t.mode),
        None => (root_owner.0, root_owner.1, 0o755),
    };
    let read_only = tenant.is_some_and(|t| t.read_only);
    let stored = match (tenant, inode.kind) {
        (Some(t), Kind::Dir | Kind::File) if t.posix_metadata => inode.stat.posix.unwrap_or_default(),
        _ => Default::default(),
    };
    let (kind, perm, nlink) = match inode.kind {
        Kind::Root | Kind::TenantRoot | Kind::Dir => (FileType::Directory, dir_mode, 2),
        Kind::File => match FileType::of_object(stored.file_type()) {
            FileType::Symlink => (FileType::Symlink, 0o777, 1),
            // Files get the directory's bits without execute: media, not programs.
            other => (other, dir_mode & 0o666, 1),
        },
    };
    let perm = stored.mode.and_then(|m| u16::try_from(m & 0o7777).ok()).unwrap_or(perm);
    let perm = if read_only && kind != FileType::Symlink {
        perm & !0o222
    } else {
        perm
    };
    Attr {
        ino: inode.ino,
        size: inode.stat.size,
        mtime: inode.stat.mtime,
        kind,
        perm,
        nlink,
        uid: stored.uid.unwrap_or(uid),
        gid: stored.gid.unwrap_or(gid),
    }
}
