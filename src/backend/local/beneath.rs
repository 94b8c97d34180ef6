//! Paths under a local backend's root, resolved without following any symlink and without
//! leaving the root.
//!
//! Someone with write access to the root directory (another local user, another program)
//! could plant `root/acme -> /etc`; a plain `open("root/acme/passwd")` would then read or
//! replace files the tenant must never reach. Every path is resolved relative to a
//! descriptor of the root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (Linux 5.6),
//! or, where the kernel lacks `openat2` (`ENOSYS`), by a walk that opens one component at a
//! time with `O_NOFOLLOW`. A symlink anywhere on the path fails with `ELOOP`.
//!
//! Directories and files are created `0700` / `0600` whatever the umask: the tenant's mode
//! is what the mount shows, and the backing files are the mounting user's alone.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Mode of directories the backend creates.
pub(super) const DIR_MODE: u32 = 0o700;
/// Mode of files the backend creates.
pub(super) const FILE_MODE: u32 = 0o600;

/// Open `rel` (relative, no `..`) under `root` with `flags`; `mode` applies when creating.
pub(super) fn open(root: &OwnedFd, rel: &Path, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(mode);
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rfs::openat2(root, rel, flags, mode, resolve) {
        Err(Errno::NOSYS) => walk(root, rel, flags, mode),
        other => other.map_err(io::Error::from),
    }
}

/// The fallback of [`open`]: each directory opened with `O_NOFOLLOW`, then the last name.
fn walk(root: &OwnedFd, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    let names = components(rel)?;
    let Some((last, dirs)) = names.split_last() else {
        return rfs::openat(root, ".", flags, mode).map_err(io::Error::from);
    };
    let mut cur: Option<OwnedFd> = None;
    for name in dirs {
        let at = cur.as_ref().unwrap_or(root);
        cur = Some(rfs::openat(at, *name, dir_flags(), Mode::empty())?);
    }
    let at = cur.as_ref().unwrap_or(root);
    rfs::openat(at, *last, flags | OFlags::NOFOLLOW, mode).map_err(io::Error::from)
}

fn dir_flags() -> OFlags {
    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// The plain names of `rel`; anything else (`..`, absolute) is refused.
fn components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "path leaves the root")),
        })
        .collect()
}

/// Open directory `rel` under `root`.
pub(super) fn open_dir(root: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    if components(rel)?.is_empty() {
        return rfs::openat(root, ".", dir_flags(), Mode::empty()).map_err(io::Error::from);
    }
    open(root, rel, OFlags::DIRECTORY | OFlags::RDONLY, 0)
}

/// `mkdir -p rel` under `root` (new directories `0700`); returns the last directory.
pub(super) fn create_dirs(root: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let mut cur = rfs::openat(root, ".", dir_flags(), Mode::empty())?;
    for name in components(rel)? {
        match rfs::mkdirat(&cur, name, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        cur = rfs::openat(&cur, name, dir_flags(), Mode::empty())?;
    }
    Ok(cur)
}

/// The directory holding `rel` and `rel`'s last name; `create` makes missing parents.
pub(super) fn parent<'a>(root: &OwnedFd, rel: &'a Path, create: bool) -> io::Result<(OwnedFd, &'a OsStr)> {
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let dir = rel.parent().unwrap_or(Path::new(""));
    let fd = if create {
        create_dirs(root, dir)?
    } else {
        open_dir(root, dir)?
    };
    Ok((fd, name))
}

/// Metadata of `rel` (not followed if it is itself a symlink: then `ELOOP`).
pub(super) fn metadata(root: &OwnedFd, rel: &Path) -> io::Result<std::fs::Metadata> {
    File::from(open(root, rel, OFlags::PATH, 0)?).metadata()
}

/// Read all of file `rel`.
pub(super) fn read(root: &OwnedFd, rel: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    File::from(open(root, rel, OFlags::RDONLY | OFlags::NONBLOCK, 0)?).read_to_end(&mut out)?;
    Ok(out)
}

/// Create or replace file `rel` holding `data` (its directory must exist).
pub(super) fn write(root: &OwnedFd, rel: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC;
    File::from(open(root, rel, flags, FILE_MODE)?).write_all(data)
}

/// Unlink `name` in `dir` (a directory when `dir_entry`); never follows a symlink.
pub(super) fn unlink(dir: &OwnedFd, name: &OsStr, dir_entry: bool) -> io::Result<()> {
    let flags = if dir_entry {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    rfs::unlinkat(dir, name, flags).map_err(io::Error::from)
}

/// Whether `name` in `dir` is a real directory (a symlink is not).
pub(super) fn is_dir_at(dir: &OwnedFd, name: &OsStr) -> io::Result<bool> {
    let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory)
}

/// Rename `from` in `from_dir` to `to` in `to_dir` (replacing a file, never following).
pub(super) fn rename(from_dir: &OwnedFd, from: &OsStr, to_dir: &OwnedFd, to: &OsStr) -> io::Result<()> {
    rfs::renameat(from_dir, from, to_dir, to).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(dir: &Path) -> OwnedFd {
        rfs::open(dir, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).unwrap()
    }

    #[test]
    fn both_resolvers_refuse_symlinks_and_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("d/f"), b"f").unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), tmp.path().join("d/flink")).unwrap();
        let r = root(tmp.path());
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        for resolve in [true, false] {
            let open = |rel: &str| {
                if resolve {
                    open(&r, Path::new(rel), flags, 0)
                } else {
                    walk(&r, Path::new(rel), flags, Mode::empty())
                }
            };
            assert!(open("d/f").is_ok());
            for bad in ["link/secret", "d/flink", "../x", "d/../../x"] {
                assert!(open(bad).is_err(), "{bad} (openat2: {resolve})");
            }
        }
        assert!(create_dirs(&r, Path::new("link/new")).is_err());
        assert!(!outside.path().join("new").exists());
    }
}
