//! Per-session staging files: written bytes not held in a fill buffer (`fill.rs`) are kept
//! on local disk until the object is committed, so any part can be (re)built and
//! re-uploaded.
//!
//! One sparse file per part (`<session dir>/<index>`), created lazily in a per-session
//! directory that is itself created on the first write. Files per part (rather than one file
//! per session) let a clean, already uploaded part be dropped to free space without hole
//! punching. Bytes are reserved against the mount-wide [`StagingSpace`] before they are
//! written and returned when a part file is removed or the session ends.
//!
//! File IO is blocking, so it runs on tokio's blocking pool.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::budget::StagingSpace;
use super::fill::DIRECT_ALIGN;

/// Where the bytes of a [`Piece`] are.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A part file.
    File(PathBuf),
    /// Memory (a copy from a fill buffer).
    Memory(Bytes),
}

/// A slice of a part file, or of memory, to copy into an assembly buffer.
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    /// Where to read.
    pub(crate) src: Source,
    /// Offset within the part file or memory.
    pub(crate) file_offset: u64,
    /// Offset within the destination buffer.
    pub(crate) buf_offset: usize,
    /// Number of bytes.
    pub(crate) len: usize,
}

/// The staging files of one write session.
#[derive(Debug)]
pub(crate) struct SessionStaging {
    space: Arc<StagingSpace>,
    /// Whose share of the staging area the reservations count against.
    tenant: String,
    dir: PathBuf,
    dir_created: bool,
    reserved: u64,
    /// The most recently written part file, kept open: sequential writes hit it repeatedly.
    open: Option<(u32, Arc<File>)>,
}

/// Create a session directory (0700) inside the uploader's root. An existing entry of that
/// name must be a real directory: a symlink planted there would redirect staged bytes.
fn create_session_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(dir)?.is_dir() {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "{} exists and is not a directory",
                    dir.display()
                )))
            }
        }
        other => other,
    }
}

/// Options for staging files: never through a symlink, private to the mounting user.
fn staging_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.custom_flags(libc::O_NOFOLLOW).mode(0o600);
    o
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io::Error::other)?
}

impl SessionStaging {
    /// Staging for one session in `dir` (not created until the first write).
    pub(crate) fn new(space: Arc<StagingSpace>, tenant: &str, dir: PathBuf) -> Self {
        Self {
            space,
            tenant: tenant.to_owned(),
            dir,
            dir_created: false,
            reserved: 0,
            open: None,
        }
    }

    /// Path of part `idx`'s file.
    pub(crate) fn part_path(&self, idx: u32) -> PathBuf {
        self.dir.join(idx.to_string())
    }

    /// Reserve `bytes` of staging space; `false` if the area is full.
    pub(crate) fn reserve(&mut self, bytes: u64) -> bool {
        let ok = self.space.try_reserve(&self.tenant, bytes);
        if ok {
            self.reserved += bytes;
        }
        ok
    }

    /// Return `bytes` reserved by this session.
    pub(crate) fn release(&mut self, bytes: u64) {
        let bytes = bytes.min(self.reserved);
        self.reserved -= bytes;
        self.space.release(&self.tenant, bytes);
    }

    async fn file(&mut self, idx: u32) -> io::Result<Arc<File>> {
        if let Some((i, f)) = &self.open {
            if *i == idx {
                return Ok(f.clone());
            }
        }
        let dir = self.dir.clone();
        let create_dir = !self.dir_created;
        let path = self.part_path(idx);
        let file = blocking(move || {
            if create_dir {
                create_session_dir(&dir)?;
            }
            staging_file()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
        })
        .await?;
        self.dir_created = true;
        let file = Arc::new(file);
        self.open = Some((idx, file.clone()));
        Ok(file)
    }

    /// Create part `idx`'s file holding exactly `data` (a whole part, sealed from a fill
    /// buffer). Written with `O_DIRECT` when `data` is aligned for it and the filesystem
    /// supports it: no page-cache copy and no dirty pages for the kernel to flush, which on
    /// a busy machine costs about as much CPU as the upload itself. Other cases write
    /// through the page cache.
    pub(crate) async fn write_whole(&mut self, idx: u32, data: Bytes) -> io::Result<()> {
        if self.open.as_ref().is_some_and(|(i, _)| *i == idx) {
            self.open = None;
        }
        let dir = self.dir.clone();
        let create_dir = !self.dir_created;
        let path = self.part_path(idx);
        blocking(move || {
            if create_dir {
                create_session_dir(&dir)?;
            }
            let aligned = data.len() % DIRECT_ALIGN == 0 && (data.as_ptr() as usize) % DIRECT_ALIGN == 0;
            if aligned {
                let direct = staging_file()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
                    .open(&path);
                match direct.and_then(|f| f.write_all_at(&data, 0)) {
                    Ok(()) => return Ok(()),
                    // Filesystems without O_DIRECT (tmpfs on older kernels, some FUSE and
                    // network filesystems) refuse it with EINVAL: write through the cache.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    Err(e) => return Err(e),
                }
            }
            let f = staging_file().write(true).create(true).truncate(true).open(&path)?;
            f.write_all_at(&data, 0)
        })
        .await?;
        self.dir_created = true;
        Ok(())
    }

    /// Write `data` at `offset` of part `idx`'s file.
    pub(crate) async fn write(&mut self, idx: u32, offset: u64, data: Bytes) -> io::Result<()> {
        let file = self.file(idx).await?;
        blocking(move || file.write_all_at(&data, offset)).await
    }

    /// Cut part `idx`'s file to `len` bytes.
    pub(crate) async fn truncate(&mut self, idx: u32, len: u64) -> io::Result<()> {
        let file = self.file(idx).await?;
        blocking(move || file.set_len(len)).await
    }

    /// Delete part `idx`'s file (absent is fine).
    pub(crate) async fn remove(&mut self, idx: u32) -> io::Result<()> {
        if self.open.as_ref().is_some_and(|(i, _)| *i == idx) {
            self.open = None;
        }
        let path = self.part_path(idx);
        blocking(move || match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
    }

    /// Delete every file and return all reserved space (after a commit).
    pub(crate) async fn clear(&mut self) {
        self.open = None;
        self.release(self.reserved);
        if self.dir_created {
            self.dir_created = false;
            // Deleting a committed file's parts takes about a second per GiB on this
            // machine's ext4 (`rm` of 128 files of 8 MiB: 1.0 s, nearly all of it waiting),
            // and `close()` should not wait for it. The directory is renamed away first, so
            // a later write of this session can create it again at once; the rest runs in
            // the background (a crash before it finishes leaves it to crash recovery, which
            // clears a dead process's staging).
            let dir = self.dir.clone();
            let trash = trash_path(&dir);
            let moved = {
                let (dir, trash) = (dir.clone(), trash.clone());
                blocking(move || std::fs::rename(dir, trash)).await
            };
            let doomed = if moved.is_ok() { trash } else { dir };
            let removal = tokio::task::spawn_blocking(move || {
                if let Err(e) = std::fs::remove_dir_all(&doomed) {
                    tracing::warn!(dir = %doomed.display(), error = %e, "could not remove staging directory");
                }
            });
            if moved.is_err() {
                // Same name as a new directory would get: finish before going on.
                let _ = removal.await;
            }
        }
    }
}

/// A unique sibling name for a session directory on its way out.
fn trash_path(dir: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!(".{name}.done-{n}"))
}

impl Drop for SessionStaging {
    fn drop(&mut self) {
        self.release(self.reserved);
        if self.dir_created {
            // Blocking, but only a directory of a few files, once per session.
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                tracing::warn!(error = %e, "could not remove staging directory");
            }
        }
    }
}

/// Copy `pieces` from part files into `buf` (blocking; call from the blocking pool).
pub(crate) fn read_pieces(buf: &mut [u8], pieces: &[Piece]) -> io::Result<()> {
    let mut current: Option<(&Path, File)> = None;
    for p in pieces {
        let dst = buf
            .get_mut(p.buf_offset..p.buf_offset + p.len)
            .ok_or_else(|| io::Error::other("staging piece outside buffer"))?;
        let path = match &p.src {
            Source::Memory(data) => {
                let from = usize::try_from(p.file_offset).map_err(io::Error::other)?;
                let src = data
                    .get(from..from + p.len)
                    .ok_or_else(|| io::Error::other("memory piece outside its data"))?;
                dst.copy_from_slice(src);
                continue;
            }
            Source::File(path) => path,
        };
        if current.as_ref().map(|(p, _)| *p) != Some(path.as_path()) {
            current = Some((path.as_path(), staging_file().read(true).open(path)?));
        }
        let Some((_, file)) = &current else { continue };
        file.read_exact_at(dst, p.file_offset)?;
    }
    Ok(())
}

/// [`read_pieces`] into a fresh buffer of `len` bytes on the blocking pool; bytes no piece
/// covers stay zero.
pub(crate) async fn read_pieces_into(mut buf: Vec<u8>, pieces: Vec<Piece>) -> io::Result<Vec<u8>> {
    if pieces.is_empty() {
        return Ok(buf);
    }
    blocking(move || {
        read_pieces(&mut buf, &pieces)?;
        Ok(buf)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_read_back_and_release_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let space = Arc::new(StagingSpace::new(1000, 100));
        let mut s = SessionStaging::new(space.clone(), "t", tmp.path().join("s1"));
        assert!(!tmp.path().join("s1").exists(), "created lazily");
        assert!(s.reserve(10));
        s.write(3, 4, Bytes::from_static(b"hello")).await.unwrap();
        s.write(3, 0, Bytes::from_static(b"abcd")).await.unwrap();
        let pieces = vec![
            Piece {
                src: Source::File(s.part_path(3)),
                file_offset: 2,
                buf_offset: 1,
                len: 6,
            },
            Piece {
                src: Source::Memory(Bytes::from_static(b"xyz")),
                file_offset: 1,
                buf_offset: 7,
                len: 2,
            },
        ];
        let out = read_pieces_into(vec![0; 9], pieces).await.unwrap();
        assert_eq!(&out, b"\0cdhellyz");
        assert_eq!(space.in_use(), 10);
        drop(s);
        assert_eq!(space.in_use(), 0);
        assert!(!tmp.path().join("s1").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clear_frees_the_name_at_once_and_deletes_in_the_background() {
        let tmp = tempfile::tempdir().unwrap();
        let space = Arc::new(StagingSpace::new(1 << 30, 100));
        let mut s = SessionStaging::new(space.clone(), "t", tmp.path().join("s1"));
        for idx in 0..8 {
            assert!(s.reserve(1 << 20));
            s.write_whole(idx, Bytes::from(vec![7u8; 1 << 20])).await.unwrap();
        }
        s.clear().await;
        assert!(!tmp.path().join("s1").exists());
        assert_eq!(space.in_use(), 0);
        // The session writes again at once, into a new directory of the same name.
        assert!(s.reserve(5));
        s.write(0, 0, Bytes::from_static(b"again")).await.unwrap();
        assert_eq!(std::fs::read(s.part_path(0)).unwrap(), b"again");
        // The old parts go away without anyone waiting for them.
        let mut left = usize::MAX;
        for _ in 0..200 {
            left = std::fs::read_dir(tmp.path()).unwrap().count();
            if left == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(left, 1, "only the new session directory remains");
    }

    #[tokio::test]
    async fn a_planted_symlink_does_not_redirect_staged_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let space = Arc::new(StagingSpace::new(1 << 20, 100));
        // A symlink where the session directory goes.
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("s1")).unwrap();
        let mut s = SessionStaging::new(space.clone(), "t", tmp.path().join("s1"));
        assert!(s.write(0, 0, Bytes::from_static(b"secret")).await.is_err());
        assert!(s.write_whole(1, Bytes::from_static(b"secret")).await.is_err());
        // A symlink where a part file goes.
        std::fs::create_dir(tmp.path().join("s2")).unwrap();
        let victim = outside.path().join("victim");
        std::os::unix::fs::symlink(&victim, tmp.path().join("s2/0")).unwrap();
        let mut s2 = SessionStaging::new(space, "t", tmp.path().join("s2"));
        assert!(s2.write(0, 0, Bytes::from_static(b"secret")).await.is_err());
        assert!(s2.write_whole(0, Bytes::from_static(b"secret")).await.is_err());
        drop((s, s2));
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing written outside"
        );
    }

    #[tokio::test]
    async fn whole_parts_are_written_aligned_or_not() {
        let tmp = tempfile::tempdir().unwrap();
        let space = Arc::new(StagingSpace::new(1 << 30, 100));
        let mut s = SessionStaging::new(space, "t", tmp.path().join("s1"));
        // Aligned (the O_DIRECT path where the filesystem has it) and unaligned.
        let mut aligned = bytes::BytesMut::with_capacity(3 * DIRECT_ALIGN);
        let pad = aligned.as_ptr().align_offset(DIRECT_ALIGN);
        aligned.resize(pad, 0);
        bytes::Buf::advance(&mut aligned, pad);
        aligned.extend((0..2 * DIRECT_ALIGN).map(|i| (i % 251) as u8));
        let aligned = aligned.freeze();
        s.write_whole(1, aligned.clone()).await.unwrap();
        s.write_whole(2, Bytes::from_static(b"odd length")).await.unwrap();
        assert_eq!(std::fs::read(s.part_path(1)).unwrap(), aligned);
        assert_eq!(std::fs::read(s.part_path(2)).unwrap(), b"odd length");
        // A buffered write after it sees the O_DIRECT bytes.
        s.write(1, 10, Bytes::from_static(b"!")).await.unwrap();
        let back = std::fs::read(s.part_path(1)).unwrap();
        assert_eq!(back[10], b'!');
        assert_eq!(back[11..], aligned[11..]);
    }
}
