//! A local directory used as a bucket.
//!
//! Object `a/b` is the file `root/a/b`; a key ending in `/` is a directory marker, i.e. the
//! directory itself, and an empty directory lists as its marker (`dir/`, size 0). A
//! directory that has children lists only through them, as on S3. Unlike S3, `a` and `a/b`
//! cannot both exist (a path is a file or a directory); such writes fail with
//! `InvalidRequest`. Deleting the last file of a directory leaves the directory (it then
//! lists as a marker), matching `rmdir` semantics rather than S3's implicit prefixes.
//!
//! Writes go to a temp file under the internal directory (same filesystem as `root`) and are
//! renamed into place, so readers never see partial objects. Multipart parts live under
//! `root/.byosfs-internal/uploads/<id>/`; that directory is never listed and keys under it
//! are refused. ETags derive from (size, mtime ns, inode), so any change to a file changes
//! its ETag. Blocking IO runs on `spawn_blocking`. Listing is in `local/list.rs`.
//!
//! The stored mtime of an object is its file's mtime (reported by `head` and listings alike):
//! `put_opts`/multipart completion set it on the temp file before the rename,
//! `update_metadata` sets it on the file, and `copy` carries it over, as S3 copies user
//! metadata. Mode, owner and group are not stored (a tenant on this backend runs with
//! `posix_metadata` off): `put_opts` ignores them and `update_metadata` refuses them.
//!
//! Every path below the root is resolved without following symlinks (`local/beneath.rs`):
//! a symlink planted in the root is neither read nor written through (`EACCES`), and new
//! directories and files are `0700`/`0600` whatever the umask.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

mod beneath;
mod list;

use rustix::fs::{Mode, OFlags};

use super::mtime::{format_mtime, parse_mtime};
use super::{
    Backend, BackendError, BackendErrorKind, BackendResult, ByteRange, CompletedPart, ETag, ListPage, ListParams,
    MultipartUploadInfo, ObjectMeta, PutOptions, PutResult, UploadId, MIN_PART_SIZE,
};
use crate::key::ValidKey;

/// Name of the hidden directory inside `root` holding temp files and multipart parts.
pub const INTERNAL_DIR: &str = ".byosfs-internal";

/// A directory used as a bucket.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    inner: Arc<Inner>,
    /// Total deadline of one operation.
    deadline: std::time::Duration,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    /// The root, opened once: every path is resolved beneath this descriptor.
    root_fd: OwnedFd,
    counter: AtomicU64,
}

impl LocalBackend {
    /// Use `root` (which must exist and be a directory) as the bucket.
    pub fn new(root: PathBuf) -> Result<Self, BackendError> {
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(BackendError::new(
                    BackendErrorKind::BucketNotFound,
                    format!("{} is not a directory", root.display()),
                ))
            }
            Err(e) => {
                return Err(BackendError::new(
                    BackendErrorKind::BucketNotFound,
                    format!("local root {}", root.display()),
                )
                .with_source(e))
            }
        }
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        let root_fd = rustix::fs::open(&root, flags, Mode::empty()).map_err(|e| {
            BackendError::new(
                BackendErrorKind::BucketNotFound,
                format!("local root {}", root.display()),
            )
            .with_source(io::Error::from(e))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                root_fd,
                counter: AtomicU64::new(0),
            }),
            deadline: LOCAL_DEADLINE,
        })
    }

    /// Fail an operation the disk has not finished within `deadline` (default 300 s).
    #[must_use]
    pub fn with_request_timeout(mut self, deadline: std::time::Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Run `f` on the blocking pool, within the backend's deadline.
    async fn blocking<T, F>(&self, op: &'static str, key: &str, f: F) -> BackendResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> BackendResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let task = tokio::task::spawn_blocking(move || f(&inner));
        let deadline = self.deadline;
        match tokio::time::timeout(deadline, task).await {
            Ok(done) => done.map_err(|e| {
                BackendError::new(BackendErrorKind::Other, format!("{op} {key:?}: task failed")).with_source(e)
            })?,
            Err(_) => Err(BackendError::new(
                BackendErrorKind::Timeout,
                format!("{op} {key:?}: the local disk did not answer within {deadline:?}"),
            )),
        }
    }
}

/// Total deadline of one operation unless configured ([`LocalBackend::with_request_timeout`]).
/// A root on a disk or network filesystem that stops answering (an NFS hard mount) would
/// otherwise hold the request, and its tenant's slot, forever; the thread stuck in the kernel
/// cannot be cancelled and is left to finish. Generous, since one operation may copy a
/// multi-GiB part.
const LOCAL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// The one mapping of IO errors to kinds for this backend.
fn io_err(op: &str, key: &str, e: io::Error) -> BackendError {
    let kind = match e.kind() {
        io::ErrorKind::NotFound => BackendErrorKind::NotFound,
        io::ErrorKind::PermissionDenied => BackendErrorKind::AccessDenied,
        io::ErrorKind::StorageFull => BackendErrorKind::NoSpace,
        _ => match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => BackendErrorKind::NoSpace,
            Some(libc::ENOTDIR | libc::EISDIR | libc::ENOTEMPTY | libc::EEXIST | libc::ENAMETOOLONG) => {
                BackendErrorKind::InvalidRequest
            }
            // A symlink on the path (ELOOP), or a path that would leave the root (EXDEV from
            // RESOLVE_BENEATH): never followed, refused as a permission problem.
            Some(libc::ELOOP | libc::EXDEV) => BackendErrorKind::AccessDenied,
            _ => BackendErrorKind::Other,
        },
    };
    BackendError::new(kind, format!("{op} {key}")).with_source(e)
}

fn invalid(op: &str, key: &str, why: &str) -> BackendError {
    BackendError::new(BackendErrorKind::InvalidRequest, format!("{op} {key:?}: {why}"))
}

/// Whether `key` maps to a path strictly inside root (a [`ValidKey`]: no `..`, `.`, empty or
/// absolute segment) and outside the internal directory.
fn key_is_safe(key: &str) -> bool {
    ValidKey::parse(key).is_ok_and(|k| k.segments().next() != Some(INTERNAL_DIR))
}

fn etag_of(m: &fs::Metadata) -> ETag {
    let ns = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
    ETag::new(format!("\"{:x}-{:x}-{:x}\"", m.len(), ns, m.ino()))
}

fn meta_of(key: &str, m: &fs::Metadata) -> ObjectMeta {
    let size = if m.is_dir() { 0 } else { m.len() };
    let modified = m.modified().ok();
    ObjectMeta::new(key, size, modified, Some(etag_of(m))).with_mtime(modified)
}

impl Inner {
    /// `key`'s path relative to the root (resolved with `beneath`).
    fn path(&self, op: &str, key: &str) -> BackendResult<PathBuf> {
        if !key_is_safe(key) {
            return Err(invalid(op, key, "key cannot map to a safe local path"));
        }
        Ok(PathBuf::from(key.trim_end_matches('/')))
    }

    /// The internal directory, relative to the root.
    fn internal(&self) -> PathBuf {
        PathBuf::from(INTERNAL_DIR)
    }

    fn metadata(&self, rel: &Path) -> io::Result<fs::Metadata> {
        beneath::metadata(&self.root_fd, rel)
    }

    /// Remove directory tree `rel` (checked to be reachable without symlinks first).
    fn remove_tree(&self, rel: &Path) -> io::Result<()> {
        beneath::open_dir(&self.root_fd, rel)?;
        fs::remove_dir_all(self.root.join(rel))
    }

    fn unique(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{:x}-{:x}-{n:x}", std::process::id(), t)
    }

    /// A new temp file in the internal directory; removed on drop unless persisted.
    fn temp(&self, op: &str, key: &str) -> BackendResult<TempFile> {
        let dir = beneath::create_dirs(&self.root_fd, &self.internal().join("tmp")).map_err(|e| io_err(op, key, e))?;
        let name = OsString::from(self.unique());
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir, &name, flags, Mode::from_raw_mode(beneath::FILE_MODE))
            .map_err(|e| io_err(op, key, e.into()))?;
        Ok(TempFile {
            dir,
            name,
            file: Some(File::from(fd)),
        })
    }

    fn upload_dir(&self, upload: &UploadId) -> BackendResult<PathBuf> {
        if upload.0.is_empty() || !upload.0.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(no_upload(upload));
        }
        Ok(self.internal().join("uploads").join(&upload.0))
    }

    /// The upload's directory, checking it exists and belongs to `key`.
    fn upload_for(&self, key: &str, upload: &UploadId) -> BackendResult<PathBuf> {
        let dir = self.upload_dir(upload)?;
        match beneath::read(&self.root_fd, &dir.join("key")) {
            Ok(k) if k == key.as_bytes() => Ok(dir),
            _ => Err(no_upload(upload)),
        }
    }

    /// Move a finished temp file to `key`'s path, creating parent directories.
    fn install(&self, op: &str, key: &str, tmp: TempFile) -> BackendResult<ETag> {
        let dst = self.path(op, key)?;
        if key.ends_with('/') {
            return Err(invalid(op, key, "a directory marker cannot hold data"));
        }
        let (parent, name) = beneath::parent(&self.root_fd, &dst, true).map_err(|e| io_err(op, key, e))?;
        if beneath::is_dir_at(&parent, name).unwrap_or(false) {
            return Err(invalid(op, key, "a directory exists at this key"));
        }
        tmp.persist(&parent, name).map_err(|e| io_err(op, key, e))?;
        let m = self.metadata(&dst).map_err(|e| io_err(op, key, e))?;
        Ok(etag_of(&m))
    }

    fn open_object(&self, op: &str, key: &str) -> BackendResult<(File, fs::Metadata)> {
        let path = self.path(op, key)?;
        if key.ends_with('/') {
            return Err(invalid(op, key, "directory markers hold no data"));
        }
        // O_NONBLOCK: a FIFO planted under the root must not hang the request.
        let fd = beneath::open(&self.root_fd, &path, OFlags::RDONLY | OFlags::NONBLOCK, 0)
            .map_err(|e| io_err(op, key, e))?;
        let file = File::from(fd);
        let m = file.metadata().map_err(|e| io_err(op, key, e))?;
        if !m.is_file() {
            return Err(BackendError::not_found(key));
        }
        Ok((file, m))
    }

    fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        let path = self.path("head", key)?;
        let m = self.metadata(&path).map_err(|e| io_err("head", key, e))?;
        // `dir/` is the directory; `dir` (no slash) is not an object when it is a directory.
        if m.is_dir() != key.ends_with('/') || !(m.is_dir() || m.is_file()) {
            return Err(BackendError::not_found(key));
        }
        Ok(meta_of(key, &m))
    }

    fn get_range(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Bytes> {
        let (mut file, m) = self.open_object("get", key)?;
        if let Some(want) = if_match {
            if *want != etag_of(&m) {
                return Err(BackendError::new(
                    BackendErrorKind::PreconditionFailed,
                    format!("get {key}"),
                ));
            }
        }
        let start = range.start.min(m.len());
        let end = range.end.min(m.len());
        let len = usize::try_from(end - start).map_err(|_| invalid("get", key, "range too large"))?;
        file.seek(SeekFrom::Start(start)).map_err(|e| io_err("get", key, e))?;
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        // A file may shrink under us; return what is there rather than spinning.
        while filled < len {
            let n = file.read(&mut buf[filled..]).map_err(|e| io_err("get", key, e))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
        Ok(Bytes::from(buf))
    }

    fn put(&self, key: &str, data: &[u8], mtime: Option<SystemTime>) -> BackendResult<PutResult> {
        let path = self.path("put", key)?;
        if key.ends_with('/') {
            if !data.is_empty() {
                return Err(invalid("put", key, "a directory marker cannot hold data"));
            }
            let dir = beneath::create_dirs(&self.root_fd, &path).map_err(|e| io_err("put", key, e))?;
            let m = File::from(dir).metadata().map_err(|e| io_err("put", key, e))?;
            return Ok(PutResult::new(Some(etag_of(&m))));
        }
        let mut tmp = self.temp("put", key)?;
        tmp.write_all(data).map_err(|e| io_err("put", key, e))?;
        tmp.set_modified(mtime).map_err(|e| io_err("put", key, e))?;
        let etag = self.install("put", key, tmp)?;
        Ok(PutResult::new(Some(etag)))
    }

    fn delete(&self, key: &str) -> BackendResult<()> {
        let path = self.path("delete", key)?;
        let res = beneath::parent(&self.root_fd, &path, false).and_then(|(dir, name)| {
            if key.ends_with('/') {
                beneath::unlink(&dir, name, true)
            } else if beneath::is_dir_at(&dir, name).unwrap_or(false) {
                Ok(())
            } else {
                beneath::unlink(&dir, name, false)
            }
        });
        match res {
            Ok(()) => Ok(()),
            // A marker of a non-empty directory persists implicitly through its children.
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(()),
            Err(e) => Err(io_err("delete", key, e)),
        }
    }
}

fn no_upload(upload: &UploadId) -> BackendError {
    BackendError::new(BackendErrorKind::NoSuchUpload, format!("upload {}", upload.0))
}

/// A temp file (in the internal directory, open as `dir`) removed on drop unless renamed
/// into place.
struct TempFile {
    dir: OwnedFd,
    /// Empty once persisted.
    name: OsString,
    file: Option<File>,
}

impl TempFile {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(data),
            None => Err(io::Error::other("temp file already closed")),
        }
    }

    /// Set the file's mtime (after the last write, which would reset it); `None` keeps it.
    fn set_modified(&mut self, mtime: Option<SystemTime>) -> io::Result<()> {
        match mtime {
            Some(t) => self.file()?.set_modified(t),
            None => Ok(()),
        }
    }

    fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("temp file already closed"))
    }

    /// Rename into `name` in directory `to` (replacing a file or a symlink itself, never
    /// writing through one).
    fn persist(mut self, to: &OwnedFd, name: &OsStr) -> io::Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_data()?;
        }
        beneath::rename(&self.dir, &self.name, to, name)?;
        self.name = OsString::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.name.is_empty() {
            let _ = beneath::unlink(&self.dir, &self.name, false);
        }
    }
}

fn copy_range_into(src: &mut File, start: u64, len: u64, dst: &mut File) -> io::Result<u64> {
    src.seek(SeekFrom::Start(start))?;
    io::copy(&mut src.take(len), dst)
}

#[async_trait]
impl Backend for LocalBackend {
    fn describe(&self) -> String {
        format!("file://{}", self.inner.root.display())
    }
    fn capabilities(&self) -> crate::backend::Capabilities {
        crate::backend::Capabilities::S3
    }

    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        let k = key.to_owned();
        self.blocking("head", key, move |i| i.head(&k)).await
    }

    async fn get_range(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Bytes> {
        let k = key.to_owned();
        let want = if_match.cloned();
        self.blocking("get", key, move |i| i.get_range(&k, range, want.as_ref()))
            .await
    }

    async fn list(&self, params: &ListParams) -> BackendResult<ListPage> {
        let p = params.clone();
        self.blocking("list", &params.prefix, move |i| i.list(&p)).await
    }

    async fn put(&self, key: &str, data: Bytes) -> BackendResult<PutResult> {
        self.put_opts(key, data, &PutOptions::default()).await
    }

    async fn create_multipart(&self, key: &str) -> BackendResult<UploadId> {
        self.create_multipart_opts(key, &PutOptions::default()).await
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<PutResult> {
        let k = key.to_owned();
        let mtime = opts.mtime;
        self.blocking("put", key, move |i| i.put(&k, &data, mtime)).await
    }

    async fn create_multipart_opts(&self, key: &str, opts: &PutOptions) -> BackendResult<UploadId> {
        let k = key.to_owned();
        let mtime = opts.mtime;
        self.blocking("create multipart", key, move |i| {
            i.path("create multipart", &k)?;
            if k.ends_with('/') {
                return Err(invalid("create multipart", &k, "a directory marker cannot hold data"));
            }
            let id = UploadId(i.unique());
            let dir = i.upload_dir(&id)?;
            let root = &i.root_fd;
            beneath::create_dirs(root, &dir).map_err(|e| io_err("create multipart", &k, e))?;
            if let Some(t) = mtime {
                beneath::write(root, &dir.join("mtime"), format_mtime(t).as_bytes())
                    .map_err(|e| io_err("create multipart", &k, e))?;
            }
            // Written last: an upload exists (for `upload_for`) only once it is complete.
            beneath::write(root, &dir.join("key"), k.as_bytes()).map_err(|e| io_err("create multipart", &k, e))?;
            Ok(id)
        })
        .await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload: &UploadId,
        part_number: u32,
        data: Bytes,
    ) -> BackendResult<CompletedPart> {
        let (k, up) = (key.to_owned(), upload.clone());
        self.blocking("upload part", key, move |i| {
            check_part(&k, part_number)?;
            let dir = i.upload_for(&k, &up)?;
            let mut tmp = i.temp("upload part", &k)?;
            tmp.write_all(&data).map_err(|e| io_err("upload part", &k, e))?;
            i.finish_part(&k, &dir, part_number, tmp)
        })
        .await
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload: &UploadId,
        part_number: u32,
        src: &str,
        range: ByteRange,
    ) -> BackendResult<CompletedPart> {
        let (k, up, s) = (key.to_owned(), upload.clone(), src.to_owned());
        self.blocking("upload part copy", key, move |i| {
            check_part(&k, part_number)?;
            let dir = i.upload_for(&k, &up)?;
            let (mut file, m) = i.open_object("upload part copy", &s)?;
            if range.end > m.len() || range.is_empty() {
                return Err(invalid("upload part copy", &s, "source range outside the object"));
            }
            let mut tmp = i.temp("upload part copy", &k)?;
            let f = tmp.file().map_err(|e| io_err("upload part copy", &k, e))?;
            copy_range_into(&mut file, range.start, range.len(), f).map_err(|e| io_err("upload part copy", &s, e))?;
            i.finish_part(&k, &dir, part_number, tmp)
        })
        .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[CompletedPart],
    ) -> BackendResult<PutResult> {
        let (k, up, parts) = (key.to_owned(), upload.clone(), parts.to_vec());
        self.blocking("complete multipart", key, move |i| {
            const OP: &str = "complete multipart";
            let dir = i.upload_for(&k, &up)?;
            let mut tmp = i.temp(OP, &k)?;
            let mut last = 0;
            for (n, p) in parts.iter().enumerate() {
                let path = dir.join(p.part_number.to_string());
                let fd = beneath::open(&i.root_fd, &path, OFlags::RDONLY | OFlags::NONBLOCK, 0)
                    .map_err(|_| invalid(OP, &k, "part missing"))?;
                let mut f = File::from(fd);
                let m = f.metadata().map_err(|e| io_err(OP, &k, e))?;
                if etag_of(&m) != p.etag || p.part_number <= last {
                    return Err(invalid(OP, &k, "part list out of order or stale"));
                }
                if n + 1 < parts.len() && m.len() < MIN_PART_SIZE {
                    return Err(invalid(OP, &k, "EntityTooSmall: non-final part below 5 MiB"));
                }
                last = p.part_number;
                let out = tmp.file().map_err(|e| io_err(OP, &k, e))?;
                io::copy(&mut f, out).map_err(|e| io_err(OP, &k, e))?;
            }
            let mtime = beneath::read(&i.root_fd, &dir.join("mtime"))
                .ok()
                .and_then(|s| parse_mtime(&String::from_utf8_lossy(&s)));
            tmp.set_modified(mtime).map_err(|e| io_err(OP, &k, e))?;
            let etag = i.install(OP, &k, tmp)?;
            let _ = i.remove_tree(&dir);
            Ok(PutResult::new(Some(etag)))
        })
        .await
    }

    async fn abort_multipart(&self, key: &str, upload: &UploadId) -> BackendResult<()> {
        let (k, up) = (key.to_owned(), upload.clone());
        self.blocking("abort multipart", key, move |i| {
            let Ok(dir) = i.upload_for(&k, &up) else {
                return Ok(()); // Unknown upload: nothing to free.
            };
            match i.remove_tree(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("abort multipart", &k, e)),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn list_multipart_uploads(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        let p = prefix.to_owned();
        self.blocking("list multipart uploads", prefix, move |i| {
            let dir = i.internal().join("uploads");
            if let Err(e) = beneath::open_dir(&i.root_fd, &dir) {
                return match e.kind() {
                    io::ErrorKind::NotFound => Ok(Vec::new()),
                    _ => Err(io_err("list multipart uploads", &p, e)),
                };
            }
            let rd = match fs::read_dir(i.root.join(&dir)) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io_err("list multipart uploads", &p, e)),
            };
            let mut v = Vec::new();
            for ent in rd {
                let ent = ent.map_err(|e| io_err("list multipart uploads", &p, e))?;
                let key = beneath::read(&i.root_fd, &dir.join(ent.file_name()).join("key"))
                    .ok()
                    .and_then(|k| String::from_utf8(k).ok());
                let Some(key) = key else {
                    continue; // Being created or aborted concurrently, or not ours.
                };
                let Some(id) = ent.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if key.starts_with(&p) {
                    let initiated = ent.metadata().ok().and_then(|m| m.modified().ok());
                    v.push(MultipartUploadInfo::new(key, UploadId(id), initiated));
                }
            }
            v.sort_by(|a, b| a.key.cmp(&b.key).then_with(|| a.upload_id.0.cmp(&b.upload_id.0)));
            Ok(v)
        })
        .await
    }

    async fn copy(&self, src: &str, dst: &str) -> BackendResult<PutResult> {
        let (s, d) = (src.to_owned(), dst.to_owned());
        self.blocking("copy", src, move |i| {
            let (mut file, m) = i.open_object("copy", &s)?;
            let mut tmp = i.temp("copy", &d)?;
            let f = tmp.file().map_err(|e| io_err("copy", &d, e))?;
            copy_range_into(&mut file, 0, m.len(), f).map_err(|e| io_err("copy", &s, e))?;
            tmp.set_modified(m.modified().ok()).map_err(|e| io_err("copy", &d, e))?;
            let etag = i.install("copy", &d, tmp)?;
            Ok(PutResult::new(Some(etag)))
        })
        .await
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        let k = key.to_owned();
        self.blocking("delete", key, move |i| i.delete(&k)).await
    }

    async fn update_metadata(&self, key: &str, opts: &PutOptions) -> BackendResult<PutResult> {
        if !opts.posix.is_empty() {
            return Err(BackendError::new(
                BackendErrorKind::Unsupported,
                format!("update metadata {key}: the local backend stores no mode or owner"),
            ));
        }
        let k = key.to_owned();
        let mtime = opts.mtime;
        self.blocking("set mtime", key, move |i| {
            let (file, m) = i.open_object("set mtime", &k)?;
            let Some(mtime) = mtime else {
                return Ok(PutResult::new(Some(etag_of(&m))));
            };
            // futimens(2) needs ownership, not write access, so a read-only descriptor does.
            file.set_modified(mtime).map_err(|e| io_err("set mtime", &k, e))?;
            let m = file.metadata().map_err(|e| io_err("set mtime", &k, e))?;
            Ok(PutResult::new(Some(etag_of(&m))))
        })
        .await
    }
}

fn check_part(key: &str, part_number: u32) -> BackendResult<()> {
    if (1..=super::MAX_PARTS).contains(&part_number) {
        Ok(())
    } else {
        Err(invalid("upload part", key, "part number outside 1..=10000"))
    }
}

impl Inner {
    fn finish_part(&self, key: &str, dir: &Path, part_number: u32, tmp: TempFile) -> BackendResult<CompletedPart> {
        let err = |e| io_err("upload part", key, e);
        let to = beneath::open_dir(&self.root_fd, dir).map_err(err)?;
        let name = OsString::from(part_number.to_string());
        tmp.persist(&to, &name).map_err(err)?;
        let m = self.metadata(&dir.join(&name)).map_err(err)?;
        Ok(CompletedPart {
            part_number,
            etag: etag_of(&m),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> (tempfile::TempDir, LocalBackend) {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().to_path_buf()).unwrap();
        (dir, b)
    }

    async fn keys(b: &LocalBackend, params: ListParams) -> (Vec<String>, Vec<String>) {
        let p = b.list(&params).await.unwrap();
        (p.objects.into_iter().map(|o| o.key).collect(), p.common_prefixes)
    }

    #[tokio::test]
    async fn missing_root_is_bucket_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = LocalBackend::new(dir.path().join("nope")).unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::BucketNotFound);
    }

    #[tokio::test]
    async fn listing_is_in_s3_byte_order_not_readdir_order() {
        let (_d, b) = backend();
        for k in ["a/b", "a-c", "a0", "a/a/x"] {
            b.put(k, Bytes::from_static(b"1")).await.unwrap();
        }
        let (objs, _) = keys(&b, ListParams::new("", false)).await;
        assert_eq!(objs, vec!["a-c", "a/a/x", "a/b", "a0"]);
        let (objs, cps) = keys(&b, ListParams::new("", true)).await;
        assert_eq!(objs, vec!["a-c", "a0"]);
        assert_eq!(cps, vec!["a/"]);
    }

    #[tokio::test]
    async fn empty_directory_is_a_marker_and_internal_dir_is_hidden() {
        let (d, b) = backend();
        b.put("dir/", Bytes::new()).await.unwrap();
        assert!(d.path().join("dir").is_dir());
        let id = b.create_multipart("x").await.unwrap();
        let (objs, _) = keys(&b, ListParams::new("", false)).await;
        assert_eq!(objs, vec!["dir/"]);
        assert_eq!(b.head("dir/").await.unwrap().size, 0);
        assert_eq!(b.head("dir").await.unwrap_err().kind(), BackendErrorKind::NotFound);
        let (objs, _) = keys(&b, ListParams::new("dir/", true)).await;
        assert_eq!(objs, vec!["dir/"]);
        b.abort_multipart("x", &id).await.unwrap();
        let err = b.put(".byosfs-internal/x", Bytes::new()).await.unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::InvalidRequest);
    }

    #[tokio::test]
    async fn unsafe_keys_are_refused() {
        let (_d, b) = backend();
        for k in ["", "../x", "a/../../x", "./a", "a//b", "/abs", "a\0b", "."] {
            let err = b.put(k, Bytes::new()).await.unwrap_err();
            assert_eq!(err.kind(), BackendErrorKind::InvalidRequest, "{k:?}");
        }
    }

    #[tokio::test]
    async fn etag_changes_when_file_changes_behind_our_back() {
        let (d, b) = backend();
        let e1 = b.put("f", Bytes::from_static(b"one")).await.unwrap().etag.unwrap();
        assert_eq!(b.head("f").await.unwrap().etag.unwrap(), e1);
        fs::write(d.path().join("f"), b"other").unwrap();
        let err = b.get_range("f", ByteRange::new(0, 3), Some(&e1)).await.unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::PreconditionFailed);
    }

    #[tokio::test]
    async fn file_and_directory_at_same_key_conflict() {
        let (_d, b) = backend();
        b.put("a", Bytes::from_static(b"1")).await.unwrap();
        let err = b.put("a/b", Bytes::from_static(b"2")).await.unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::InvalidRequest);
    }

    #[tokio::test]
    async fn no_temp_files_are_left_behind() {
        let (d, b) = backend();
        b.put("x", Bytes::from_static(b"1")).await.unwrap();
        b.copy("x", "y").await.unwrap();
        let tmp = d.path().join(INTERNAL_DIR).join("tmp");
        assert_eq!(fs::read_dir(tmp).unwrap().count(), 0);
    }

    /// A symlink planted in the root, to a directory or a file outside, is neither read nor
    /// written through; listing skips it.
    #[tokio::test]
    async fn planted_symlinks_are_not_followed() {
        let (d, b) = backend();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("passwd"), b"root:x:0:0").unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("acme")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("passwd"), d.path().join("f")).unwrap();
        for key in ["acme/passwd", "f"] {
            let err = b.get_range(key, ByteRange::new(0, 4), None).await.unwrap_err();
            assert_eq!(err.kind(), BackendErrorKind::AccessDenied, "{key}: {err}");
            assert!(b.head(key).await.is_err(), "{key}");
            assert!(b.copy(key, "stolen").await.is_err(), "{key}");
        }
        assert!(b.put("acme/passwd", Bytes::from_static(b"owned")).await.is_err());
        assert!(b.put("acme/new", Bytes::from_static(b"owned")).await.is_err());
        assert!(b.put("acme/sub/", Bytes::new()).await.is_err());
        let _ = b.delete("acme/passwd").await;
        // A multipart upload may start (its parts live in the internal directory) but never
        // completes through the link.
        let id = b.create_multipart("acme/mp").await.unwrap();
        let part = b
            .upload_part("acme/mp", &id, 1, Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert!(b.complete_multipart("acme/mp", &id, &[part]).await.is_err());
        // Replacing the file symlink replaces the link itself, never its target.
        b.put("f", Bytes::from_static(b"mine")).await.unwrap();
        assert_eq!(fs::read(outside.path().join("passwd")).unwrap(), b"root:x:0:0");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
        assert!(!fs::symlink_metadata(d.path().join("f")).unwrap().is_symlink());
        let (objs, prefixes) = keys(&b, ListParams::new("", true)).await;
        assert_eq!((objs, prefixes), (vec!["f".to_owned()], vec![]));
        // The internal directory itself replaced by a symlink: nothing is written there.
        fs::remove_dir_all(d.path().join(INTERNAL_DIR)).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join(INTERNAL_DIR)).unwrap();
        assert!(b.put("g", Bytes::from_static(b"x")).await.is_err());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn created_files_and_directories_are_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let (d, b) = backend();
        b.put("a/b/c", Bytes::from_static(b"1")).await.unwrap();
        b.put("m/", Bytes::new()).await.unwrap();
        let id = b.create_multipart("a/big").await.unwrap();
        let p1 = b
            .upload_part("a/big", &id, 1, Bytes::from(vec![1u8; MIN_PART_SIZE as usize]))
            .await
            .unwrap();
        let p2 = b
            .upload_part("a/big", &id, 2, Bytes::from_static(b"end"))
            .await
            .unwrap();
        b.complete_multipart("a/big", &id, &[p1, p2]).await.unwrap();
        let mode = |p: &str| fs::metadata(d.path().join(p)).unwrap().permissions().mode() & 0o777;
        for dir in ["a", "a/b", "m", INTERNAL_DIR] {
            assert_eq!(mode(dir), 0o700, "{dir}");
        }
        for file in ["a/b/c", "a/big"] {
            assert_eq!(mode(file), 0o600, "{file}");
        }
    }
}
