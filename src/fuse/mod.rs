//! Kernel glue: `fuser::Filesystem` over [`crate::fs::Filesystem`].
//!
//! Each callback converts its arguments, hands one `fs` call to the [`dispatch::Dispatcher`]
//! and converts the result. No filesystem logic lives here.

mod dispatch;
pub(crate) mod session;

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use tracing::{debug, warn};

use crate::fs::{Attr, DirEntry, DirReplier, FileType, NewNode, Opened, ReadNow, SetAttr};
pub(crate) use dispatch::Dispatcher;

/// `fuser::Filesystem` implementation.
#[derive(Debug)]
pub(crate) struct FuseAdapter {
    d: Dispatcher,
    /// Requests the kernel may queue in the background (read-ahead, async reads).
    max_background: u16,
    /// Kernel read-ahead to request (bytes); our own read-ahead does the heavy lifting.
    max_readahead: u32,
}

impl FuseAdapter {
    /// Wrap a filesystem; requests run on `rt`, at most `max_in_flight` at once, one
    /// tenant holding at most `tenant_share` percent of them (see [`crate::fair`]).
    pub(crate) fn new(
        fs: std::sync::Arc<crate::fs::Filesystem>,
        rt: tokio::runtime::Handle,
        max_in_flight: usize,
        tenant_share: u8,
        max_readahead: u32,
    ) -> Self {
        Self {
            d: Dispatcher::new(fs, rt, max_in_flight, tenant_share),
            max_background: u16::try_from(max_in_flight).unwrap_or(u16::MAX),
            max_readahead,
        }
    }
}

fn to_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks(),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: crate::fs::attr::BLKSIZE,
        flags: 0,
    }
}

fn kind(k: FileType) -> fuser::FileType {
    match k {
        FileType::Directory => fuser::FileType::Directory,
        FileType::RegularFile => fuser::FileType::RegularFile,
        FileType::Symlink => fuser::FileType::Symlink,
        FileType::NamedPipe => fuser::FileType::NamedPipe,
        FileType::Socket => fuser::FileType::Socket,
    }
}

/// The creator of a new node: the requesting process's ids, with the mode the kernel passes
/// (umask already applied: byosfs does not ask for `FUSE_DONT_MASK`).
fn new_node(req: &Request, mode: u32) -> NewNode {
    NewNode::new(mode, req.uid(), req.gid())
}

fn open_flags(o: &Opened) -> FopenFlags {
    if o.keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

struct Plain(ReplyDirectory);
impl DirReplier for Plain {
    fn add(&mut self, e: &DirEntry, _ttl: Duration) -> bool {
        self.0.add(INodeNo(e.ino), e.offset, kind(e.attr.kind), &e.name)
    }
}

struct Plus(ReplyDirectoryPlus);
impl DirReplier for Plus {
    fn add(&mut self, e: &DirEntry, ttl: Duration) -> bool {
        self.0.add(
            INodeNo(e.ino),
            e.offset,
            &e.name,
            &ttl,
            &to_attr(&e.attr),
            Generation(0),
        )
    }
}

impl fuser::Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // READDIRPLUS: `ls -l` gets names and attributes in one round trip per page.
        // ATOMIC_O_TRUNC: O_TRUNC arrives with open, so a file being replaced keeps its old
        // content until the new one is committed (no separate truncate-to-zero first).
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_BIG_WRITES
            // Symlink targets stay in the page cache: a path walk through a link costs no GET.
            | InitFlags::FUSE_CACHE_SYMLINKS;
        let supported = wanted & config.capabilities();
        if let Err(missing) = config.add_capabilities(supported) {
            warn!(?missing, "kernel refused FUSE capabilities");
        }
        if let Err(max) = config.set_max_readahead(self.max_readahead) {
            let _ = config.set_max_readahead(max);
        }
        // The kernel queues async reads (read-ahead) of the whole mount in one queue and blocks
        // every new one once `max_background` (16 by default) are unanswered: 16 reads hung on
        // one tenant's storage would stall every tenant's reads in the kernel, before the
        // per-tenant slots of the dispatcher could keep them apart. Let the kernel send as many
        // as the dispatcher admits (unprivileged mounts are capped by the
        // `max_user_bgreq` sysctl).
        if let Err(max) = config.set_max_background(self.max_background) {
            let _ = config.set_max_background(max);
        }
        // 1 MiB writes: fewer round trips through the kernel for streaming writers.
        if let Err(max) = config.set_max_write(1 << 20) {
            let _ = config.set_max_write(max);
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_owned();
        let fs = self.d.fs.clone();
        self.d.spawn("lookup", req.unique().0, parent.0, async move {
            match fs.lookup(parent.0, &name).await {
                Ok(e) => reply.entry(&e.ttl, &to_attr(&e.attr), Generation(0)),
                // Node id 0 with a timeout is a negative entry: the kernel answers repeated
                // lookups of a missing name itself (cp and rsync probe every target first).
                Err(e) if e.errno() == libc::ENOENT && !fs.negative_ttl().is_zero() => {
                    let mut attr = to_attr(&crate::fs::Attr {
                        ino: 0,
                        size: 0,
                        mtime: SystemTime::UNIX_EPOCH,
                        kind: FileType::RegularFile,
                        perm: 0,
                        nlink: 0,
                        uid: 0,
                        gid: 0,
                    });
                    attr.blocks = 0;
                    reply.entry(&fs.negative_ttl(), &attr, Generation(0));
                }
                Err(e) => {
                    dispatch::log_error("lookup", &e);
                    reply.error(dispatch::errno(&e));
                }
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.d.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.d.run(
            "getattr",
            req.unique().0,
            ino.0,
            reply,
            move |fs| async move { fs.getattr(ino.0).await },
            |r, e| r.attr(&e.ttl, &to_attr(&e.attr)),
        );
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            size,
            mtime: mtime.map(time),
            mode,
            uid,
            gid,
        };
        self.d.run(
            "setattr",
            req.unique().0,
            ino.0,
            reply,
            move |fs| async move { fs.setattr(ino.0, fh.map(|f| f.0), set).await },
            |r, e| r.attr(&e.ttl, &to_attr(&e.attr)),
        );
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        let name = name.to_owned();
        let new = new_node(req, mode);
        self.d.run(
            "mkdir",
            req.unique().0,
            parent.0,
            reply,
            move |fs| async move { fs.mkdir(parent.0, &name, new).await },
            |r, e| r.entry(&e.ttl, &to_attr(&e.attr), Generation(0)),
        );
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let (name, target) = (link_name.to_owned(), target.as_os_str().to_owned());
        let new = new_node(req, 0o777);
        self.d.run(
            "symlink",
            req.unique().0,
            parent.0,
            reply,
            move |fs| async move { fs.symlink(parent.0, &name, &target, new).await },
            |r, e| r.entry(&e.ttl, &to_attr(&e.attr), Generation(0)),
        );
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.d.run(
            "readlink",
            req.unique().0,
            ino.0,
            reply,
            move |fs| async move { fs.readlink(ino.0).await },
            |r, target| r.data(&target),
        );
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = name.to_owned();
        let new = new_node(req, mode);
        self.d.run(
            "mknod",
            req.unique().0,
            parent.0,
            reply,
            move |fs| async move { fs.mknod(parent.0, &name, mode, new).await },
            |r, e| r.entry(&e.ttl, &to_attr(&e.attr), Generation(0)),
        );
    }

    // Hard links: one object cannot have two keys on object storage.
    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EPERM);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.d.run(
            "unlink",
            req.unique().0,
            parent.0,
            reply,
            move |fs| async move { fs.unlink(parent.0, &name).await },
            |r, ()| r.ok(),
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.d.run(
            "rmdir",
            req.unique().0,
            parent.0,
            reply,
            move |fs| async move { fs.rmdir(parent.0, &name).await },
            |r, ()| r.ok(),
        );
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name.to_owned(), newname.to_owned());
        self.d.run(
            "rename",
            req.unique().0,
            parent.0,
            reply,
            move |fs| async move { fs.rename(parent.0, &name, newparent.0, &newname, flags.bits()).await },
            |r, ()| r.ok(),
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let pid = req.pid();
        self.d.run(
            "open",
            req.unique().0,
            ino.0,
            reply,
            move |fs| async move { fs.open(ino.0, flags.0, pid).await },
            |r, o| r.opened(FileHandle(o.fh), open_flags(&o)),
        );
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Reads whose bytes are already in memory are answered here, without a task hop: a
        // cached or read-ahead block costs one FUSE round trip and no thread wake-ups.
        match self.d.enter(|fs| fs.read_now(fh.0, offset, size)) {
            ReadNow::Done(Ok(data)) => {
                dispatch::counted("read");
                reply.data(&data);
            }
            ReadNow::Done(Err(e)) => {
                dispatch::counted("read");
                dispatch::log_error("read", &e);
                reply.error(dispatch::errno(&e));
            }
            ReadNow::Wait(fut) => self.d.run_with(
                dispatch::Poll::Runtime,
                "read",
                req.unique().0,
                ino.0,
                reply,
                move |_| fut,
                |r, data| r.data(&data),
            ),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // Writes into the part being filled are answered here: no task hop, one copy.
        match self.d.enter(|fs| fs.write_now(fh.0, offset, data)) {
            Some(Ok(n)) => {
                dispatch::counted("write");
                return reply.written(n);
            }
            Some(Err(e)) => {
                dispatch::counted("write");
                dispatch::log_error("write", &e);
                return reply.error(dispatch::errno(&e));
            }
            None => {}
        }
        // The request buffer is reused by fuser once we return: copy before going async.
        let data = bytes::Bytes::copy_from_slice(data);
        self.d.run(
            "write",
            req.unique().0,
            ino.0,
            reply,
            move |fs| async move { fs.write_bytes(fh.0, offset, data).await },
            |r, n| r.written(n),
        );
    }

    fn flush(&self, req: &Request, ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        let pid = req.pid();
        self.d.run(
            "flush",
            req.unique().0,
            ino.0,
            reply,
            move |fs| async move { fs.flush(fh.0, pid).await },
            |r, ()| r.ok(),
        );
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.d.run(
            "release",
            req.unique().0,
            ino.0,
            reply,
            move |fs| async move { fs.release(fh.0).await },
            |r, ()| r.ok(),
        );
    }

    fn fsync(&self, req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.d.run(
            "fsync",
            req.unique().0,
            ino.0,
            reply,
            move |fs| async move { fs.fsync(fh.0).await },
            |r, ()| r.ok(),
        );
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.d.run(
            "opendir",
            req.unique().0,
            ino.0,
            reply,
            move |fs| async move { fs.opendir(ino.0).await },
            |r, fh| r.opened(FileHandle(fh), FopenFlags::empty()),
        );
    }

    fn readdir(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectory) {
        let fs = self.d.fs.clone();
        self.d.spawn("readdir", req.unique().0, ino.0, async move {
            let mut p = Plain(reply);
            match fs.readdir(fh.0, offset, false, &mut p).await {
                Ok(()) => p.0.ok(),
                Err(e) => {
                    dispatch::log_error("readdir", &e);
                    p.0.error(dispatch::errno(&e));
                }
            }
        });
    }

    fn readdirplus(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectoryPlus) {
        let fs = self.d.fs.clone();
        self.d.spawn("readdirplus", req.unique().0, ino.0, async move {
            let mut p = Plus(reply);
            match fs.readdir(fh.0, offset, true, &mut p).await {
                Ok(()) => p.0.ok(),
                Err(e) => {
                    dispatch::log_error("readdirplus", &e);
                    p.0.error(dispatch::errno(&e));
                }
            }
        });
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.d.fs.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let s = self.d.fs.statfs_of(ino.0);
        reply.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = name.to_owned();
        let pid = req.pid();
        let new = new_node(req, mode);
        self.d.run(
            "create",
            req.unique().0,
            parent.0,
            reply,
            move |fs| async move { fs.create(parent.0, &name, flags, pid, new).await },
            |r, (e, o)| {
                r.created(
                    &e.ttl,
                    &to_attr(&e.attr),
                    Generation(0),
                    FileHandle(o.fh),
                    open_flags(&o),
                )
            },
        );
    }

    // Only `user.content_type` and `user.byosfs.url` exist (see `fs/xattr.rs`). Other names
    // (security.selinux, system.posix_acl_access, asked by `ls -l`) are answered here on the
    // FUSE thread without a request. Never ENOSYS: the kernel would stop asking for good.
    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: fuser::ReplyXattr) {
        if !crate::fs::xattr::is_ours(name) {
            reply.error(Errno::ENODATA);
            return;
        }
        let name = name.to_owned();
        self.d.run(
            "getxattr",
            req.unique().0,
            ino.0,
            reply,
            move |fs| async move { fs.getxattr(ino.0, &name).await },
            move |r, value| match u32::try_from(value.len()) {
                Ok(len) if size == 0 => r.size(len),
                Ok(len) if len <= size => r.data(&value),
                _ => r.error(Errno::ERANGE),
            },
        );
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let name = name.to_owned();
        let value = value.to_vec();
        self.d.run(
            "setxattr",
            req.unique().0,
            ino.0,
            reply,
            move |fs| async move { fs.setxattr(ino.0, &name, &value).await },
            |r, ()| r.ok(),
        );
    }

    // Names are not listed: `cp -a` and `rsync -X` would copy a URL (or a Content-Type that
    // the destination derives from its own name) onto other files.
    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn destroy(&mut self) {
        debug!("filesystem destroyed");
    }
}
