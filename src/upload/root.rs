//! The staging directory and each uploader's private root inside it: who may own them, how
//! a root is created, and how another process tells a live root from a crashed one.
//!
//! - The configured staging directory must belong to the mounting (effective) user and must
//!   not be writable by group or others; a missing one is created `0700`. Anyone else who
//!   could write there could plant symlinks, swap journals or read customers' bytes.
//! - Each [`Uploader`](super::Uploader) owns `<staging_dir>/byosfs-<pid>-<n>/` (mode 0700).
//!   It is built under a hidden temporary name, its lock file is created and locked inside,
//!   and only then is it renamed to its final name without replacing anything
//!   (`RENAME_NOREPLACE`), so a root is never visible without its lock and two processes of
//!   the same pid in different PID namespaces never share one.
//! - Liveness is the lock: the uploader holds an exclusive `flock` on `<root>/.lock` for its
//!   lifetime and the kernel drops it when the process dies, however it dies. Unlike a PID,
//!   a lock means the same thing in every PID namespace that shares the volume. A root
//!   without a lock file was made by an older byosfs; for those the PID is all there is.
//! - Entries are opened relative to a directory descriptor with `O_NOFOLLOW`, and special
//!   files are opened `O_NONBLOCK` and checked by type before any read, so a planted symlink
//!   or FIFO can neither redirect nor stall anything.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{self as rfs, FlockOperation, Mode, OFlags, RenameFlags};

/// Prefix of the per-process directory an uploader creates in the staging directory; the
/// full name is `byosfs-<pid>-<n>`.
pub const STAGING_ROOT_PREFIX: &str = "byosfs-";
/// Prefix of a root still being set up (renamed to its final name once locked).
pub(crate) const NEW_ROOT_PREFIX: &str = ".byosfs-new-";
/// The lock file inside a root; locked (`flock`, exclusive) while its process lives.
pub const LOCK_FILE: &str = ".lock";

/// Distinguishes uploaders created by one process (tests create many).
static NEXT_UPLOADER: AtomicU64 = AtomicU64::new(0);

/// Upper bound on names tried when `byosfs-<pid>-<n>` is taken (by a process of the same pid
/// in another PID namespace, or a crashed run not yet recovered).
const MAX_NAME_TRIES: u64 = 10_000;

/// The effective uid: the user staged files belong to.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn dir_flags() -> OFlags {
    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC
}

/// Open the configured staging directory, creating it `0700` if missing, and refuse it
/// unless the mounting user owns it and no one else may write to it. The error text is
/// meant for the user.
pub(crate) fn open_staging_dir(path: &Path) -> Result<OwnedFd, String> {
    open_private_dir(path, "staging directory", "[write] staging_dir")
}

/// Open directory `path` (`what` it is, configured as `setting`, for the messages), creating
/// it `0700` if missing, and refuse it unless the mounting user owns it and no one else may
/// write to it. Used for every directory that holds customers' bytes (staging, disk cache).
/// The last component is followed if it is a symlink, as configured; what matters is the
/// directory reached, whose owner and mode are checked on the opened descriptor.
pub fn open_private_dir(path: &Path, what: &str, setting: &str) -> Result<OwnedFd, String> {
    let shown = path.display();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(format!("cannot create {what} {shown}: {e}")),
        _ => {}
    }
    let fd = rfs::open(path, dir_flags(), Mode::empty())
        .map_err(|e| format!("cannot open {what} {shown}: {}", io::Error::from(e)))?;
    let fd = File::from(fd);
    let meta = fd.metadata().map_err(|e| format!("cannot stat {what} {shown}: {e}"))?;
    let uid = euid();
    if meta.uid() != uid {
        return Err(format!(
            "{what} {shown} is owned by uid {}, not by the mounting user (uid {uid}); \
             its data must be private: use a directory of your own or leave {setting} unset",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{what} {shown} is writable by group or others (mode {mode:04o}); \
             other local users could replace or read its data: run `chmod 700 {shown}` \
             or use another directory"
        ));
    }
    Ok(fd.into())
}

/// A created root: its path, and the open lock file that keeps it alive.
#[derive(Debug)]
pub(crate) struct CreatedRoot {
    pub(crate) path: PathBuf,
    pub(crate) lock: OwnedFd,
}

/// Create this uploader's root in the staging directory `staging` (opened by
/// [`open_staging_dir`]), locked, under a fresh `byosfs-<pid>-<n>` name.
pub(crate) fn create_root(staging: &OwnedFd, staging_path: &Path) -> io::Result<CreatedRoot> {
    let pid = std::process::id();
    let n = NEXT_UPLOADER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = format!("{NEW_ROOT_PREFIX}{pid}-{nanos:x}-{n}");
    rfs::mkdirat(staging, &tmp, Mode::from_raw_mode(0o700))?;
    let built = (|| {
        let root = rfs::openat(staging, &tmp, dir_flags() | OFlags::NOFOLLOW, Mode::empty())?;
        let lock = rfs::openat(
            &root,
            LOCK_FILE,
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        rfs::flock(&lock, FlockOperation::NonBlockingLockExclusive)?;
        let mut k = n;
        for _ in 0..MAX_NAME_TRIES {
            let name = format!("{STAGING_ROOT_PREFIX}{pid}-{k}");
            match rename_noreplace(staging, &tmp, &name) {
                Ok(()) => {
                    return Ok(CreatedRoot {
                        path: staging_path.join(name),
                        lock,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => k = NEXT_UPLOADER.fetch_add(1, Ordering::Relaxed),
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("no free staging root name"))
    })();
    if built.is_err() {
        let _ = rfs::unlinkat(staging, format!("{tmp}/{LOCK_FILE}"), rfs::AtFlags::empty());
        let _ = rfs::unlinkat(staging, &tmp, rfs::AtFlags::REMOVEDIR);
    }
    built
}

/// `renameat2(RENAME_NOREPLACE)`; where the filesystem lacks it (some network and FUSE
/// filesystems), a check then a plain rename, which can only replace an empty directory
/// created in the instant between the two.
fn rename_noreplace(dir: &OwnedFd, from: &str, to: &str) -> io::Result<()> {
    match rfs::renameat_with(dir, from, dir, to, RenameFlags::NOREPLACE) {
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            match rfs::statat(dir, to, rfs::AtFlags::SYMLINK_NOFOLLOW) {
                Ok(_) => Err(io::Error::from(rustix::io::Errno::EXIST)),
                Err(_) => rfs::renameat(dir, from, dir, to).map_err(io::Error::from),
            }
        }
        other => other.map_err(io::Error::from),
    }
}

/// Whether `name` in a staging directory is an uploader root (final or being set up).
pub(crate) fn is_root_name(name: &str) -> bool {
    name.starts_with(NEW_ROOT_PREFIX) || pid_of(name).is_some()
}

/// The pid in a staging root's name `byosfs-<pid>-<n>`.
pub(crate) fn pid_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(STAGING_ROOT_PREFIX)?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Whether the process owning a root is alive, as far as its lock says.
#[derive(Debug)]
pub(crate) enum Liveness {
    /// Its lock is held: a live process, in whatever PID namespace.
    Alive,
    /// Its lock was free and is now held by the caller (keep it while cleaning up).
    Dead(OwnedFd),
    /// No lock file: a root made by an older byosfs (or not fully set up).
    NoLock,
}

/// Probe the lock of the root open as `root`.
pub(crate) fn liveness(root: &OwnedFd) -> io::Result<Liveness> {
    let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let lock = match rfs::openat(root, LOCK_FILE, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if e == rustix::io::Errno::NOENT => return Ok(Liveness::NoLock),
        Err(e) => return Err(e.into()),
    };
    let lock = File::from(lock);
    if !lock.metadata()?.is_file() {
        return Err(io::Error::other("lock file is not a regular file"));
    }
    match rfs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Liveness::Dead(lock.into())),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(Liveness::Alive),
        Err(e) => Err(e.into()),
    }
}

/// Open directory `name` inside `dir` without following a symlink, and check it belongs to
/// the mounting user.
pub(crate) fn open_own_dir(dir: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    let fd = rfs::openat(dir, name, dir_flags() | OFlags::NOFOLLOW, Mode::empty())?;
    let fd = File::from(fd);
    let meta = fd.metadata()?;
    if meta.uid() != euid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("owned by uid {}, not by the mounting user", meta.uid()),
        ));
    }
    Ok(fd.into())
}

/// Open directory `path` (the configured staging directory, followed as written).
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    rfs::open(path, dir_flags(), Mode::empty()).map_err(io::Error::from)
}

/// Open regular file `name` in `dir` for reading: no symlink followed, no FIFO waited on,
/// owned by the mounting user, at most `max` bytes. Anything else is an error.
pub(crate) fn open_own_file(dir: &OwnedFd, name: &OsStr, max: u64) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = File::from(rfs::openat(dir, name, flags, Mode::empty())?);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    if meta.uid() != euid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("owned by uid {}, not by the mounting user", meta.uid()),
        ));
    }
    if meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes, more than the {max} a journal may hold", meta.len()),
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parses_root_names() {
        assert_eq!(pid_of("byosfs-123-0"), Some(123));
        assert_eq!(pid_of("byosfs-123"), None);
        assert_eq!(pid_of("byosfs-x-1"), None);
        assert_eq!(pid_of("other-1-2"), None);
        assert!(is_root_name(".byosfs-new-1-ab-2"));
        assert!(!is_root_name("s0"));
    }

    #[test]
    fn open_staging_dir_refuses_shared_and_creates_private() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/b/staging");
        open_staging_dir(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);

        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = open_staging_dir(&open).unwrap_err();
        assert!(
            err.contains("writable by group or others") && err.contains("0777"),
            "{err}"
        );
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(
            open_staging_dir(&open).is_err(),
            "sticky /tmp-like directories are shared too"
        );
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        open_staging_dir(&open).unwrap();

        if euid() == 0 {
            // Root can hand the directory to someone else; that is refused too.
            std::os::unix::fs::chown(&open, Some(65534), None).unwrap();
            let err = open_staging_dir(&open).unwrap_err();
            assert!(err.contains("owned by uid 65534"), "{err}");
        }
    }

    #[test]
    fn a_root_is_locked_while_held_and_dead_after() {
        let tmp = tempfile::tempdir().unwrap();
        let staging = open_staging_dir(tmp.path()).unwrap();
        let a = create_root(&staging, tmp.path()).unwrap();
        let b = create_root(&staging, tmp.path()).unwrap();
        assert_ne!(a.path, b.path);
        let name = a.path.file_name().unwrap();
        let fd = open_own_dir(&staging, name).unwrap();
        assert!(matches!(liveness(&fd).unwrap(), Liveness::Alive));
        drop(a.lock);
        let Liveness::Dead(held) = liveness(&fd).unwrap() else {
            panic!("a released lock means a dead root")
        };
        // While the recoverer holds it, nobody else takes the root for dead.
        assert!(matches!(liveness(&fd).unwrap(), Liveness::Alive));
        drop(held);
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
        assert!(left
            .iter()
            .all(|e| !e.file_name().to_string_lossy().starts_with(NEW_ROOT_PREFIX)));
    }
}
