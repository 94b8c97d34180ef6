//! A POSIX conformance suite of our own, in the style of pjdfstest: one case per errno rule,
//! on a real mount over a real S3 server on loopback, run as root with `allow_other` and
//! switching to unprivileged uids in forked children. The kernel enforces permissions
//! (`default_permissions`) from the modes and owners byosfs stores per object; the suite
//! checks both the kernel's answers and what survives a remount.
//!
//! Cases that cannot pass on object storage are in docs/posix.md, with why.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::moto::MotoServer;
use common::mount::{fuse_available, s3_config, which, Mount};
use common::s3server::TestS3Server;

/// Raw system calls the suite makes in forked children, where nothing may allocate: thin
/// safe wrappers over `libc`, each returning 0 or the errno.
#[allow(unsafe_code)]
mod sys {
    use std::ffi::CStr;

    fn rc(ret: libc::c_int) -> i32 {
        if ret == -1 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    }

    pub(crate) fn geteuid() -> u32 {
        // SAFETY: no preconditions.
        unsafe { libc::geteuid() }
    }

    /// Fork; in the child switch to `uid:gid` (no supplementary groups, umask 022), run `f`
    /// and exit with its result. The parent waits and returns the child's exit code.
    pub(crate) fn fork_as(uid: u32, gid: u32, f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child calls only async-signal-safe functions (setgroups, setgid,
        // setuid, umask, the wrappers below, _exit) and never returns into code that could
        // allocate; the parent only waits.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                libc::umask(0o022);
                if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                    libc::_exit(255);
                }
                libc::_exit(f());
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            assert!(libc::WIFEXITED(status), "child died: {status}");
            libc::WEXITSTATUS(status)
        }
    }

    /// open + close.
    pub(crate) fn open_close(p: &CStr, flags: i32, mode: u32) -> i32 {
        // SAFETY: a valid C string; the descriptor is closed at once.
        unsafe {
            let fd = libc::open(p.as_ptr(), flags, mode);
            if fd < 0 {
                return rc(fd);
            }
            rc(libc::close(fd))
        }
    }

    pub(crate) fn umask(mask: u32) {
        // SAFETY: no preconditions.
        unsafe { libc::umask(mask) };
    }

    pub(crate) fn mkdir(p: &CStr, mode: u32) -> i32 {
        // SAFETY: a valid C string.
        rc(unsafe { libc::mkdir(p.as_ptr(), mode) })
    }

    pub(crate) fn chmod(p: &CStr, mode: u32) -> i32 {
        // SAFETY: a valid C string.
        rc(unsafe { libc::chmod(p.as_ptr(), mode) })
    }

    /// open read-only, fchmod, close.
    pub(crate) fn fchmod(p: &CStr, mode: u32) -> i32 {
        // SAFETY: a valid C string; the descriptor is closed here.
        unsafe {
            let fd = libc::open(p.as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                return rc(fd);
            }
            let r = rc(libc::fchmod(fd, mode));
            libc::close(fd);
            r
        }
    }

    pub(crate) fn chown(p: &CStr, uid: u32, gid: u32) -> i32 {
        // SAFETY: a valid C string.
        rc(unsafe { libc::chown(p.as_ptr(), uid, gid) })
    }

    pub(crate) fn unlink(p: &CStr) -> i32 {
        // SAFETY: a valid C string.
        rc(unsafe { libc::unlink(p.as_ptr()) })
    }

    pub(crate) fn rename(a: &CStr, b: &CStr) -> i32 {
        // SAFETY: valid C strings.
        rc(unsafe { libc::rename(a.as_ptr(), b.as_ptr()) })
    }

    pub(crate) fn symlink(target: &CStr, link: &CStr) -> i32 {
        // SAFETY: valid C strings.
        rc(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) })
    }

    pub(crate) fn mkfifo(p: &CStr, mode: u32) -> i32 {
        // SAFETY: a valid C string.
        rc(unsafe { libc::mkfifo(p.as_ptr(), mode) })
    }

    pub(crate) fn mknod(p: &CStr, mode: u32, dev: u64) -> i32 {
        // SAFETY: a valid C string.
        rc(unsafe { libc::mknod(p.as_ptr(), mode, dev) })
    }

    pub(crate) fn truncate(p: &CStr, len: i64) -> i32 {
        // SAFETY: a valid C string.
        rc(unsafe { libc::truncate(p.as_ptr(), len) })
    }

    /// ftruncate through a read-only descriptor.
    pub(crate) fn ftruncate_read_only(p: &CStr) -> i32 {
        // SAFETY: a valid C string; the descriptor is closed here.
        unsafe {
            let fd = libc::open(p.as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                return rc(fd);
            }
            let r = rc(libc::ftruncate(fd, 0));
            libc::close(fd);
            r
        }
    }

    /// utimensat with atime UTIME_OMIT and the given mtime.
    pub(crate) fn set_mtime(p: &CStr, secs: i64, nsec: i64) -> i32 {
        let times = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            libc::timespec {
                tv_sec: secs,
                tv_nsec: nsec,
            },
        ];
        // SAFETY: a valid C string and a two-element array, as utimensat wants.
        rc(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) })
    }

    /// utimensat with both times "now" (`touch`): allowed to anyone who may write.
    pub(crate) fn touch_now(p: &CStr) -> i32 {
        // SAFETY: a valid C string; a null `times` means both now.
        rc(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), std::ptr::null(), 0) })
    }

    /// Write then read through a FIFO opened O_RDWR|O_NONBLOCK: what comes out.
    pub(crate) fn fifo_round_trip(p: &CStr) -> Result<[u8; 4], i32> {
        // SAFETY: a valid C string; a 4-byte buffer; the descriptor is closed here.
        unsafe {
            let fd = libc::open(p.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK);
            if fd < 0 {
                return Err(rc(fd));
            }
            let mut buf = [0u8; 4];
            let ok =
                libc::write(fd, b"pipe".as_ptr().cast(), 4) == 4 && libc::read(fd, buf.as_mut_ptr().cast(), 4) == 4;
            libc::close(fd);
            if ok {
                Ok(buf)
            } else {
                Err(-1)
            }
        }
    }
}

const ALICE: (u32, u32) = (2001, 3001);
const BOB: (u32, u32) = (2002, 3002);

/// A mount of tenant `t` on `moto`, owned by root with mode 0777, so every case starts
/// from a directory anyone may write. moto, not s3s-fs: s3s-fs keeps `dir/` markers as
/// plain directories and drops their metadata, so directory modes would not persist.
fn mount(moto: &MotoServer) -> Mount {
    let rest = r#"
[mount]
allow_other = true

[write]
part_size = "5MiB"
memory = "32MiB"
staging_dir = "./staging"

[[tenants]]
name = "t"
backend = "s3"
prefix = "t/"
uid = 0
gid = 0
mode = "0777"
"#;
    let config = s3_config(&moto.endpoint, "", rest);
    Mount::start(&config, &[("TEST_AK", "testing"), ("TEST_SK", "testing")])
}

/// Whether this process may run the suite: real mounts, and root to switch uids.
fn runnable() -> bool {
    if !fuse_available() {
        return false;
    }
    if sys::geteuid() != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but not root: the POSIX suite needs root to switch uids"
        );
        eprintln!("SKIPPING POSIX suite: needs root to switch to other uids");
        return false;
    }
    true
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Run `f` in a forked child as `who` and return what it returns (an errno, 0 for
/// success). `f` may only use the `sys` wrappers on data prepared before the fork.
fn as_user(who: (u32, u32), f: impl FnOnce() -> i32) -> i32 {
    let code = sys::fork_as(who.0, who.1, f);
    assert_ne!(code, 255, "could not switch to {who:?}");
    code
}

fn open_as(who: (u32, u32), p: &Path, flags: i32, mode: u32) -> i32 {
    let p = c(p);
    as_user(who, || sys::open_close(&p, flags, mode))
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode()
}

fn owner_of(p: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

fn chown(p: &Path, who: (u32, u32)) {
    std::os::unix::fs::lchown(p, Some(who.0), Some(who.1)).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A fresh directory for one case, `0777`, owned by root.
fn case_dir(m: &Mount, name: &str) -> PathBuf {
    let d = m.path().join("t").join(name);
    std::fs::create_dir(&d).unwrap();
    chmod(&d, 0o777);
    d
}

/// A file owned by `who` with `mode`, holding `data`.
fn file(d: &Path, name: &str, who: (u32, u32), mode: u32, data: &[u8]) -> PathBuf {
    let p = d.join(name);
    std::fs::write(&p, data).unwrap();
    chown(&p, who);
    chmod(&p, mode);
    p
}

type Case = fn(&Mount, &Path);

fn create_modes_follow_umask(_: &Mount, d: &Path) {
    let f = d.join("f");
    assert_eq!(open_as(ALICE, &f, libc::O_CREAT | libc::O_WRONLY, 0o666), 0);
    assert_eq!(mode_of(&f), libc::S_IFREG | 0o644, "umask 022 applied");
    assert_eq!(owner_of(&f), ALICE);
    let sub = c(&d.join("sub"));
    let r = as_user(ALICE, || {
        sys::umask(0o077);
        sys::mkdir(&sub, 0o777)
    });
    assert_eq!(r, 0);
    assert_eq!(mode_of(&d.join("sub")), libc::S_IFDIR | 0o700);
    assert_eq!(owner_of(&d.join("sub")), ALICE);
    // O_EXCL on an existing name.
    assert_eq!(
        open_as(ALICE, &f, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o644),
        libc::EEXIST
    );
}

fn chmod_only_by_owner_or_root(_: &Mount, d: &Path) {
    let f = file(d, "f", ALICE, 0o644, b"x");
    let p = c(&f);
    assert_eq!(as_user(BOB, || sys::chmod(&p, 0o777)), libc::EPERM);
    assert_eq!(as_user(ALICE, || sys::chmod(&p, 0o600)), 0);
    assert_eq!(mode_of(&f), libc::S_IFREG | 0o600);
    // fchmod too.
    let r = as_user(ALICE, || sys::fchmod(&p, 0o640));
    assert_eq!(r, 0);
    assert_eq!(mode_of(&f), libc::S_IFREG | 0o640);
}

fn chown_only_by_root(_: &Mount, d: &Path) {
    let f = file(d, "f", ALICE, 0o644, b"x");
    let p = c(&f);
    // Giving a file away: only root.
    assert_eq!(as_user(ALICE, || sys::chown(&p, BOB.0, u32::MAX)), libc::EPERM);
    // A group the owner is not in: EPERM; the owner's own group: fine.
    assert_eq!(as_user(ALICE, || sys::chown(&p, u32::MAX, BOB.1)), libc::EPERM);
    assert_eq!(as_user(ALICE, || sys::chown(&p, u32::MAX, ALICE.1)), 0);
    chown(&f, BOB);
    assert_eq!(owner_of(&f), BOB);
}

fn permission_bits_are_enforced(_: &Mount, d: &Path) {
    let private = file(d, "private", ALICE, 0o600, b"secret");
    assert_eq!(open_as(BOB, &private, libc::O_RDONLY, 0), libc::EACCES);
    assert_eq!(open_as(ALICE, &private, libc::O_RDONLY, 0), 0);
    let ro = file(d, "ro", ALICE, 0o644, b"x");
    assert_eq!(open_as(BOB, &ro, libc::O_WRONLY, 0), libc::EACCES);
    assert_eq!(open_as(BOB, &ro, libc::O_RDONLY, 0), 0);
    // A group member gets the group bits.
    let grp = file(d, "grp", ALICE, 0o640, b"x");
    let carol = (2003, ALICE.1);
    assert_eq!(open_as(carol, &grp, libc::O_RDONLY, 0), 0);
    assert_eq!(open_as(carol, &grp, libc::O_WRONLY, 0), libc::EACCES);
    // A directory without x for others: nothing inside can be reached.
    let closed = d.join("closed");
    std::fs::create_dir(&closed).unwrap();
    file(&closed, "inner", ALICE, 0o644, b"x");
    chown(&closed, ALICE);
    chmod(&closed, 0o700);
    assert_eq!(open_as(BOB, &closed.join("inner"), libc::O_RDONLY, 0), libc::EACCES);
    // A directory without w: no new names, even for its owner.
    let rdonly = d.join("rdonly");
    std::fs::create_dir(&rdonly).unwrap();
    chown(&rdonly, ALICE);
    chmod(&rdonly, 0o555);
    assert_eq!(
        open_as(ALICE, &rdonly.join("new"), libc::O_CREAT | libc::O_WRONLY, 0o644),
        libc::EACCES
    );
    // Execute bits: a script runs only with x.
    let script = file(d, "script.sh", ALICE, 0o644, b"#!/bin/sh\nexit 7\n");
    let run = |p: &Path| std::process::Command::new(p).status();
    assert_eq!(run(&script).unwrap_err().kind(), std::io::ErrorKind::PermissionDenied);
    chmod(&script, 0o755);
    assert_eq!(run(&script).unwrap().code(), Some(7));
}

fn sticky_directory_protects_others_files(_: &Mount, d: &Path) {
    chmod(d, 0o1777);
    assert_eq!(mode_of(d), libc::S_IFDIR | 0o1777);
    let f = file(d, "alices", ALICE, 0o666, b"x");
    let (p, q) = (c(&f), c(&d.join("moved")));
    assert_eq!(as_user(BOB, || sys::unlink(&p)), libc::EPERM);
    assert_eq!(as_user(BOB, || sys::rename(&p, &q)), libc::EPERM);
    // Bob may still write it (0666); only removal is guarded.
    assert_eq!(open_as(BOB, &f, libc::O_WRONLY, 0), 0);
    assert_eq!(as_user(ALICE, || sys::unlink(&p)), 0);
}

fn symlinks_readlink_lstat_and_eloop(_: &Mount, d: &Path) {
    let target = file(d, "target", ALICE, 0o640, b"through the link");
    let rel = d.join("rel");
    std::os::unix::fs::symlink("target", &rel).unwrap();
    assert_eq!(std::fs::read_link(&rel).unwrap(), Path::new("target"));
    assert_eq!(mode_of(&rel) & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(std::fs::read(&rel).unwrap(), b"through the link");
    assert_eq!(std::fs::metadata(&rel).unwrap().mode(), mode_of(&target));
    let abs = d.join("abs");
    std::os::unix::fs::symlink(&target, &abs).unwrap();
    assert_eq!(std::fs::read(&abs).unwrap(), b"through the link");
    // Dangling: lstat works, stat does not.
    let dangling = d.join("dangling");
    std::os::unix::fs::symlink("no/such/file", &dangling).unwrap();
    assert!(std::fs::symlink_metadata(&dangling).is_ok());
    assert_eq!(
        std::fs::metadata(&dangling).unwrap_err().raw_os_error(),
        Some(libc::ENOENT)
    );
    // O_NOFOLLOW on a link: ELOOP; a loop: ELOOP.
    assert_eq!(open_as(ALICE, &rel, libc::O_RDONLY | libc::O_NOFOLLOW, 0), libc::ELOOP);
    std::os::unix::fs::symlink("loop2", d.join("loop1")).unwrap();
    std::os::unix::fs::symlink("loop1", d.join("loop2")).unwrap();
    assert_eq!(open_as(ALICE, &d.join("loop1"), libc::O_RDONLY, 0), libc::ELOOP);
    // A link is owned by its creator; renaming or removing it leaves the target alone.
    let mine = c(&d.join("alices-link"));
    let r = as_user(ALICE, || sys::symlink(c"target", &mine));
    assert_eq!(r, 0);
    assert_eq!(owner_of(&d.join("alices-link")), ALICE);
    std::fs::rename(&rel, d.join("rel2")).unwrap();
    assert_eq!(std::fs::read_link(d.join("rel2")).unwrap(), Path::new("target"));
    std::fs::remove_file(d.join("rel2")).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"through the link");
    // Hard links: not on object storage.
    assert_eq!(
        std::fs::hard_link(&target, d.join("hard")).unwrap_err().raw_os_error(),
        Some(libc::EPERM)
    );
}

fn fifos_work_and_devices_are_refused(_: &Mount, d: &Path) {
    let fifo = d.join("fifo");
    let p = c(&fifo);
    assert_eq!(sys::mkfifo(&p, 0o640), 0);
    assert_eq!(mode_of(&fifo), libc::S_IFIFO | 0o640 & !0o022);
    // The kernel runs the pipe: data written comes out the other end.
    assert_eq!(sys::fifo_round_trip(&p), Ok(*b"pipe"));
    let dev = c(&d.join("dev"));
    assert_eq!(
        sys::mknod(&dev, libc::S_IFCHR | 0o600, libc::makedev(1, 3)),
        libc::EPERM
    );
}

fn rename_errnos(_: &Mount, d: &Path) {
    let f = file(d, "f", (0, 0), 0o644, b"x");
    let g = file(d, "g", (0, 0), 0o644, b"y");
    let empty = d.join("empty");
    let full = d.join("full");
    std::fs::create_dir(&empty).unwrap();
    std::fs::create_dir(&full).unwrap();
    file(&full, "inside", (0, 0), 0o644, b"z");
    let err = |a: &Path, b: &Path| std::fs::rename(a, b).unwrap_err().raw_os_error();
    assert_eq!(err(&f, &empty), Some(libc::EISDIR));
    assert_eq!(err(&empty, &f), Some(libc::ENOTDIR));
    let e = err(&empty, &full);
    assert!(e == Some(libc::ENOTEMPTY) || e == Some(libc::EEXIST), "{e:?}");
    assert_eq!(err(&full, &full.join("sub")), Some(libc::EINVAL));
    assert_eq!(err(&d.join("missing"), &g), Some(libc::ENOENT));
    // Over a file: replaced, mode and owner of the source kept.
    chown(&f, ALICE);
    chmod(&f, 0o600);
    std::fs::rename(&f, &g).unwrap();
    assert_eq!(std::fs::read(&g).unwrap(), b"x");
    assert_eq!((mode_of(&g), owner_of(&g)), (libc::S_IFREG | 0o600, ALICE));
    // A directory onto an empty one.
    std::fs::rename(&full, &empty).unwrap();
    assert_eq!(std::fs::read(empty.join("inside")).unwrap(), b"z");
}

fn unlink_and_rmdir_errnos(_: &Mount, d: &Path) {
    let f = file(d, "f", (0, 0), 0o644, b"x");
    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    file(&sub, "x", (0, 0), 0o644, b"x");
    let raw = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    assert_eq!(raw(std::fs::remove_file(&sub)), Some(libc::EISDIR));
    assert_eq!(raw(std::fs::remove_dir(&f)), Some(libc::ENOTDIR));
    assert_eq!(raw(std::fs::remove_dir(&sub)), Some(libc::ENOTEMPTY));
    assert_eq!(raw(std::fs::remove_file(d.join("nope"))), Some(libc::ENOENT));
    assert_eq!(raw(std::fs::remove_dir(sub.join("."))), Some(libc::EINVAL));
    // Other users need write permission on the directory.
    chmod(d, 0o755);
    let p = c(&f);
    assert_eq!(as_user(BOB, || sys::unlink(&p)), libc::EACCES);
    chmod(d, 0o777);
}

fn truncate_errnos(_: &Mount, d: &Path) {
    let f = file(d, "f", ALICE, 0o644, b"0123456789");
    let (p, dir) = (c(&f), c(d));
    assert_eq!(sys::truncate(&dir, 0), libc::EISDIR);
    assert_eq!(sys::truncate(&p, -1), libc::EINVAL);
    assert_eq!(as_user(BOB, || sys::truncate(&p, 1)), libc::EACCES);
    assert_eq!(as_user(ALICE, || sys::truncate(&p, 4)), 0);
    assert_eq!(std::fs::read(&f).unwrap(), b"0123");
    let r = as_user(ALICE, || sys::ftruncate_read_only(&p));
    assert_eq!(r, libc::EINVAL, "ftruncate on a read-only descriptor");
    assert_eq!(mode_of(&f), libc::S_IFREG | 0o644, "truncate keeps the mode");
}

fn names_too_long(_: &Mount, d: &Path) {
    let long = "n".repeat(256);
    assert_eq!(
        open_as(ALICE, &d.join(&long), libc::O_CREAT | libc::O_WRONLY, 0o644),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        std::fs::create_dir(d.join(&long)).unwrap_err().raw_os_error(),
        Some(libc::ENAMETOOLONG)
    );
    let max = "m".repeat(255);
    assert_eq!(open_as(ALICE, &d.join(&max), libc::O_CREAT | libc::O_WRONLY, 0o644), 0);
}

fn utimensat_now_omit_and_who_may(_: &Mount, d: &Path) {
    let f = file(d, "f", ALICE, 0o644, b"x");
    let p = c(&f);
    let far = 4_102_444_800; // 2100-01-01, past 2038
    let set = |who, (secs, nsec): (i64, i64)| as_user(who, || sys::set_mtime(&p, secs, nsec));
    let at = |s| (s, 500_000_000);
    assert_eq!(set(ALICE, at(far)), 0);
    assert_eq!(std::fs::metadata(&f).unwrap().mtime(), far);
    // Specific times (and "now" for one time only): owner only; both "now": anyone who
    // may write.
    assert_eq!(set(BOB, at(far)), libc::EPERM);
    assert_eq!(set(BOB, (0, libc::UTIME_NOW)), libc::EPERM);
    let touch = || as_user(BOB, || sys::touch_now(&p));
    assert_eq!(touch(), libc::EACCES);
    chmod(&f, 0o666);
    assert_eq!(touch(), 0);
    let m = std::fs::metadata(&f).unwrap().mtime();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(m.abs_diff(i64::try_from(t).unwrap()) < 60, "UTIME_NOW set {m}");
    assert_eq!(set(ALICE, at(far)), 0);
}

const CASES: &[(&str, Case)] = &[
    ("create_modes_follow_umask", create_modes_follow_umask),
    ("chmod_only_by_owner_or_root", chmod_only_by_owner_or_root),
    ("chown_only_by_root", chown_only_by_root),
    ("permission_bits_are_enforced", permission_bits_are_enforced),
    (
        "sticky_directory_protects_others_files",
        sticky_directory_protects_others_files,
    ),
    ("symlinks_readlink_lstat_and_eloop", symlinks_readlink_lstat_and_eloop),
    ("fifos_work_and_devices_are_refused", fifos_work_and_devices_are_refused),
    ("rename_errnos", rename_errnos),
    ("unlink_and_rmdir_errnos", unlink_and_rmdir_errnos),
    ("truncate_errnos", truncate_errnos),
    ("names_too_long", names_too_long),
    ("utimensat_now_omit_and_who_may", utimensat_now_omit_and_who_may),
];

/// Every case on one mount (a mount per case would cost more than the cases), each in its
/// own directory; all failures are reported together. Then a remount shows what persisted.
#[test]
fn posix_conformance() {
    if !runnable() {
        return;
    }
    let Some(server) = MotoServer::start(&["media"]) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but moto is missing (scripts/install-deps.sh installs it)"
        );
        eprintln!("SKIPPING POSIX suite: moto not available (pip install 'moto[server]')");
        return;
    };
    let mut m = mount(&server);
    let mut failed = Vec::new();
    for (name, case) in CASES {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&m, &case_dir(&m, name))));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failed.push(format!("{name}: {msg}"));
        }
    }
    let first = m.path().join("t/symlinks_readlink_lstat_and_eloop/target");
    let log = m.unmount();
    assert!(
        failed.is_empty(),
        "{} case(s) failed:\n{}\nmount log:\n{log}",
        failed.len(),
        failed.join("\n")
    );

    // What the cases stored is read back by a fresh mount.
    let m = mount(&server);
    let t = m.path().join("t");
    let f = t.join("create_modes_follow_umask/f");
    assert_eq!((mode_of(&f), owner_of(&f)), (libc::S_IFREG | 0o644, ALICE));
    let sub = t.join("create_modes_follow_umask/sub");
    assert_eq!((mode_of(&sub), owner_of(&sub)), (libc::S_IFDIR | 0o700, ALICE));
    let sticky = t.join("sticky_directory_protects_others_files");
    assert_eq!(mode_of(&sticky), libc::S_IFDIR | 0o1777);
    let links = t.join("symlinks_readlink_lstat_and_eloop");
    // An absolute target is kept verbatim (it names the first mount's path).
    assert_eq!(std::fs::read_link(links.join("abs")).unwrap(), first);
    assert_eq!(
        std::fs::read_link(links.join("alices-link")).unwrap(),
        Path::new("target")
    );
    assert_eq!(std::fs::read(links.join("alices-link")).unwrap(), b"through the link");
    assert_eq!(
        mode_of(&t.join("fifos_work_and_devices_are_refused/fifo")) & libc::S_IFMT,
        libc::S_IFIFO
    );
    let utime = t.join("utimensat_now_omit_and_who_may/f");
    assert_eq!(std::fs::metadata(utime).unwrap().mtime(), 4_102_444_800);
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A clone of a repository with executable files and symlinks checks out clean, and stays
/// clean after a remount (modes and links were stored, not just kept in memory).
#[test]
fn git_clone_with_executables_and_symlinks_is_clean() {
    if !fuse_available() {
        return;
    }
    if !which("git") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but git is missing"
        );
        eprintln!("SKIPPING git clone test: git is not installed");
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    git(s, &["init", "-q"]);
    std::fs::create_dir_all(s.join("bin/sub")).unwrap();
    std::fs::write(s.join("bin/run.sh"), "#!/bin/sh\necho ok\n").unwrap();
    chmod(&s.join("bin/run.sh"), 0o755);
    std::fs::write(s.join("README"), "plain\n").unwrap();
    std::fs::write(s.join("bin/sub/data"), "data\n").unwrap();
    std::os::unix::fs::symlink("README", s.join("readme-link")).unwrap();
    std::os::unix::fs::symlink("../README", s.join("bin/up-link")).unwrap();
    std::os::unix::fs::symlink("missing", s.join("dangling")).unwrap();
    git(s, &["add", "-A"]);
    git(s, &["commit", "-qm", "init"]);

    let server = TestS3Server::start(&["media"]);
    let rest = r#"
[write]
part_size = "5MiB"
memory = "32MiB"
staging_dir = "./staging"

[[tenants]]
name = "t"
backend = "s3"
prefix = "t/"
"#;
    let config = s3_config(&server.endpoint, "", rest);
    let mut m = Mount::start_s3(&config, &server);
    let clone = m.path().join("t/clone");
    git(
        m.path().join("t").as_path(),
        &["clone", "-q", &s.display().to_string(), "clone"],
    );
    assert_eq!(git(&clone, &["status", "--porcelain"]), "", "mount log:\n{}", m.log());
    assert_eq!(mode_of(&clone.join("bin/run.sh")) & 0o111, 0o111);
    assert_eq!(
        std::fs::read_link(clone.join("bin/up-link")).unwrap(),
        Path::new("../README")
    );
    let out = std::process::Command::new(clone.join("bin/run.sh")).output().unwrap();
    assert_eq!(out.stdout, b"ok\n");
    m.unmount();

    let m = Mount::start_s3(&config, &server);
    let clone = m.path().join("t/clone");
    assert_eq!(
        git(&clone, &["status", "--porcelain"]),
        "",
        "after remount; log:\n{}",
        m.log()
    );
    assert_eq!(mode_of(&clone.join("bin/run.sh")) & 0o777, 0o755);
    assert_eq!(mode_of(&clone.join("README")) & 0o777, 0o644);
}
