//! POSIX depth on object storage: per-object mode, owner and group (chmod, chown, the mode
//! of new files and directories), symlinks and special files.
//!
//! On a tenant with `posix_metadata`, every file, symlink, FIFO, socket and directory marker
//! this mount creates carries `x-amz-meta-mode`/`-uid`/`-gid` (see [`crate::backend::posix`]),
//! always all three, so s3fs shows the same. A directory keeps its attributes on its `dir/`
//! marker, created on chmod if the directory was only implied by its children. byosfs never
//! follows a symlink itself: it stores and returns the target text, and the kernel resolves
//! it, so a link cannot lead byosfs outside the tenant. Without `posix_metadata` (and on the
//! local backend) modes and owners are the tenant's, chmod/chown are accepted and ignored,
//! and symlink/mknod fail with `EPERM`.

use std::ffi::OsStr;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use tracing::warn;

use super::{stat_of, Entry, Error, Filesystem, NewNode, Result};
use crate::backend::{BackendErrorKind, ByteRange, PosixAttrs, PutOptions};
use crate::namespace::name::{child_key, dir_prefix, validate_name};
use crate::namespace::{Inode, Kind, Stat};
use crate::tenant::Tenant;

/// Longest symlink target accepted, as Linux's `PATH_MAX`.
const MAX_TARGET: usize = 4096;

impl Filesystem {
    /// The attributes of the directory marker `marker` (`dir/`); a directory's defaults when
    /// it cannot be read (its children still prove the directory).
    pub(super) async fn marker_stat(&self, tenant: &Tenant, marker: &str) -> Stat {
        match tenant.backend.head(marker).await {
            Ok(meta) => Stat {
                size: 0,
                ..stat_of(&meta)
            },
            Err(_) => Stat::dir(),
        }
    }

    /// Write directory `key`'s marker with all its attributes. A marker is empty, so writing
    /// it whole costs no more than a metadata copy, needs no HEAD first, gives a directory
    /// implied by its children a marker to hold them, and works on servers that keep
    /// markers as directories and cannot copy them (s3s-fs).
    pub(super) async fn put_marker(
        &self,
        tenant: &Tenant,
        key: &str,
        posix: PosixAttrs,
        mtime: SystemTime,
    ) -> Result<()> {
        let opts = PutOptions::default().with_posix(posix).with_mtime(Some(mtime));
        tenant.backend.put_opts(&dir_prefix(key), Bytes::new(), &opts).await?;
        Ok(())
    }

    /// The mode, owner and group a node of type `ifmt` created in `dir` by `new` gets: the
    /// creator's ids, except that a set-group-ID directory passes on its group (and, to
    /// subdirectories, the set-group-ID bit), as on local filesystems.
    pub(super) fn new_posix(&self, dir: &Inode, ifmt: u32, new: NewNode) -> PosixAttrs {
        let parent = self.attr(dir);
        let setgid = u32::from(parent.perm) & libc::S_ISGID != 0;
        let gid = if setgid { parent.gid } else { new.gid };
        let mut perm = new.mode & 0o7777;
        if setgid && ifmt == libc::S_IFDIR {
            perm |= libc::S_ISGID;
        }
        PosixAttrs::new(ifmt | perm, new.uid, gid)
    }

    /// chmod/chown: store the new mode and/or owner. The kernel has checked who may (the
    /// mount uses `default_permissions`). Without POSIX metadata, accepted and ignored so
    /// `cp -p` and `rsync -a` work.
    pub(super) async fn set_posix(
        &self,
        ino: u64,
        fh: Option<u64>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<()> {
        let inode = self.inodes.get(ino)?;
        let Some(tenant) = inode.tenant.and_then(|id| self.tenants.get(id)) else {
            return Ok(());
        };
        if !tenant.posix_metadata || !matches!(inode.kind, Kind::File | Kind::Dir) {
            // A tenant root's mode and owner come from the configuration.
            return Ok(());
        }
        if tenant.read_only {
            return Err(Error::read_only(&tenant.name));
        }
        let current = self.attr(&inode);
        let perm = mode.map_or(u32::from(current.perm), |m| m & 0o7777);
        let posix = PosixAttrs::new(
            current.kind.ifmt() | perm,
            uid.unwrap_or(current.uid),
            gid.unwrap_or(current.gid),
        );
        if inode.kind == Kind::Dir {
            self.put_marker(&tenant, &inode.key, posix, inode.stat.mtime).await?;
            self.inodes.set_stat(ino, inode.stat.with_posix(posix));
            return Ok(());
        }
        if let Some(w) = fh.and_then(|fh| self.write_state(fh).ok()).or_else(|| self.writer(ino)) {
            let mut s = w.session.lock().await;
            // Open for writing: stored with the next commit (with the data, or alone). A
            // writer whose last handle is closed and whose final commit is done commits
            // nothing more: its object is stored, so the change goes onto it as for any file.
            if w.handles.load(Ordering::Acquire) > 0 || w.needs_commit.load(Ordering::Acquire) {
                s.set_posix(posix, true);
                w.mark_written();
                drop(s);
                self.inodes.set_stat(ino, inode.stat.with_posix(posix));
                return Ok(());
            }
        }
        // A file just closed may still be queued for write-back: its object must exist.
        self.settle(&tenant, &inode.key).await?;
        let opts = PutOptions::default().with_posix(posix);
        let etag = match tenant.backend.update_metadata(&inode.key, &opts).await {
            Ok(put) => put.etag.or(inode.stat.etag.clone()),
            Err(e) if e.kind() == BackendErrorKind::Unsupported => {
                // An S3 object above 5 GiB: kept in this mount's memory only.
                warn!(ino, tenant = %tenant.name, error = %e, "mode/owner kept in memory only");
                inode.stat.etag.clone()
            }
            Err(e) => return Err(e.into()),
        };
        let stat = Stat {
            etag,
            ..inode.stat.with_posix(posix)
        };
        self.inodes.set_stat(ino, stat);
        Ok(())
    }

    /// A tenant that can hold symlinks and special files, and the directory to hold one.
    fn posix_dir(&self, parent: u64) -> Result<(Inode, std::sync::Arc<Tenant>)> {
        let dir = self.child_dir(parent)?;
        let tenant = self.writable_tenant(&dir)?;
        if !tenant.posix_metadata {
            return Err(Error::expected(
                libc::EPERM,
                "symlinks and special files need posix_metadata on an S3 backend",
            ));
        }
        Ok((dir, tenant))
    }

    /// Store a node that is one small object: a symlink (body = target) or a special file.
    async fn put_node(
        &self,
        dir: &Inode,
        tenant: &Tenant,
        name: &str,
        body: Bytes,
        posix: PosixAttrs,
    ) -> Result<Entry> {
        if let Some(existing) = self.inodes.child(dir.ino, name) {
            // The kernel looked the name up first; a name it has cached as existing is EEXIST.
            if existing.kind == Kind::Dir || self.fresh(&existing) {
                return Err(Error::expected(libc::EEXIST, format!("{name} exists")));
            }
        }
        let key = child_key(&dir.key, name);
        let mtime = SystemTime::now();
        let opts = PutOptions::default()
            .with_mtime(Some(mtime))
            .with_posix(posix)
            .with_create_only(tenant.exclusive_create);
        let size = body.len() as u64;
        let put = match tenant.backend.put_opts(&key, body, &opts).await {
            Ok(put) => put,
            Err(e) if e.kind() == BackendErrorKind::PreconditionFailed => {
                return Err(Error::expected(libc::EEXIST, format!("{key} exists")));
            }
            Err(e) => return Err(e.into()),
        };
        let stat = Stat::local(size, mtime, put.etag).with_posix(posix);
        let inode = self
            .inodes
            .upsert_child(dir.ino, name, Some(tenant.id), Kind::File, stat, 1)?;
        Ok(self.entry(&inode))
    }

    /// Create symlink `name` in `parent` pointing at `target` (stored verbatim, never
    /// resolved here).
    pub async fn symlink(&self, parent: u64, name: &OsStr, target: &OsStr, new: NewNode) -> Result<Entry> {
        let (dir, tenant) = self.posix_dir(parent)?;
        let name = validate_name(name)?;
        let target = std::os::unix::ffi::OsStrExt::as_bytes(target);
        if target.len() >= MAX_TARGET {
            return Err(Error::expected(libc::ENAMETOOLONG, "symlink target too long"));
        }
        let posix = self.new_posix(&dir, libc::S_IFLNK, NewNode { mode: 0o777, ..new });
        self.put_node(&dir, &tenant, name, Bytes::copy_from_slice(target), posix)
            .await
    }

    /// The target of symlink `ino`.
    pub async fn readlink(&self, ino: u64) -> Result<Bytes> {
        let inode = self.inodes.get(ino)?;
        if inode.kind != Kind::File || inode.stat.file_type() != libc::S_IFLNK {
            return Err(Error::expected(libc::EINVAL, "not a symlink"));
        }
        let tenant = self.tenant_of(&inode)?;
        let meta = tenant.backend.head(&inode.key).await?;
        if meta.posix.file_type() != libc::S_IFLNK {
            self.inodes.set_stat(ino, stat_of(&meta));
            return Err(Error::expected(libc::EINVAL, "no longer a symlink"));
        }
        let len = meta.size.min(MAX_TARGET as u64);
        let target = tenant
            .backend
            .get_range(&inode.key, ByteRange::new(0, len), meta.etag.as_ref())
            .await?;
        self.inodes.set_stat(ino, stat_of(&meta));
        Ok(target)
    }

    /// mknod: FIFOs and sockets are recorded (type and mode; the kernel does the rest);
    /// a regular file is an empty object; devices are refused as on a `nodev` mount.
    pub async fn mknod(&self, parent: u64, name: &OsStr, mode: u32, new: NewNode) -> Result<Entry> {
        let ifmt = mode & libc::S_IFMT;
        let ifmt = match ifmt {
            0 => libc::S_IFREG,
            libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK => ifmt,
            libc::S_IFCHR | libc::S_IFBLK => {
                return Err(Error::expected(libc::EPERM, "device nodes are not supported (nodev)"));
            }
            _ => return Err(Error::expected(libc::EINVAL, "unknown file type")),
        };
        let (dir, tenant) = self.posix_dir(parent)?;
        let name = validate_name(name)?;
        let posix = self.new_posix(&dir, ifmt, NewNode { mode, ..new });
        self.put_node(&dir, &tenant, name, Bytes::new(), posix).await
    }
}
