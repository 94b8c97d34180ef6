//! Real mounts: what a local user or a hostile tenant name can and cannot do (issue 24).
//!
//! - Permissions under `allow_other`: files belong to the user who mounts (not the mount
//!   point's owner), a tenant without a configured mode is private to it (0700), and the log
//!   names the tenants other users can read. Checked as an unprivileged second user.
//! - Logs: a file name holding a newline and a fake log line stays inside one escaped line.
//! - The kernel's background queue is as deep as the mount's request limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use common::mount::{fuse_available, which, Mount};

/// The unprivileged user the tests act as (`nobody` on Debian).
const OTHER_UID: u32 = 65534;

fn local_config(mount_extra: &str, tenants: &str) -> String {
    format!(
        r#"
[mount]
{mount_extra}

[write]
staging_dir = "./staging"

[defaults]
backend = "local"

[backends.local]
type = "local"
root = "./data"

{tenants}
"#
    )
}

/// Run `cmd` as uid/gid 65534 with no supplementary groups; (success, stderr).
fn as_other_user(args: &[&str]) -> (bool, String) {
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={OTHER_UID}"),
            &format!("--regid={OTHER_UID}"),
            "--clear-groups",
        ])
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn allow_other_keeps_unconfigured_tenants_private_to_the_mounting_user() {
    if !fuse_available() {
        return;
    }
    if !rustix::process::geteuid().is_root() || !which("setpriv") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but this test needs root and setpriv to act as a second user"
        );
        eprintln!("SKIPPING: needs root and setpriv (util-linux) to act as a second user");
        return;
    }
    let config = local_config(
        "allow_other = true",
        "[[tenants]]\nname = \"private\"\n\n[[tenants]]\nname = \"shared\"\nmode = \"0755\"\n",
    );
    // The mount point belongs to the other user: that must not make them the owner.
    let m = Mount::start_prepared(&config, &[], |dir| {
        std::os::unix::fs::chown(dir.join("mnt"), Some(OTHER_UID), Some(OTHER_UID)).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    });
    for t in ["private", "shared"] {
        std::fs::write(m.path().join(t).join("f.txt"), format!("{t} data")).unwrap();
    }
    let private = std::fs::metadata(m.path().join("private")).unwrap();
    assert_eq!((private.uid(), private.gid()), (0, 0), "owned by the mounting user");
    assert_eq!(private.mode() & 0o7777, 0o700);
    let file = std::fs::metadata(m.path().join("private/f.txt")).unwrap();
    assert_eq!((file.uid(), file.mode() & 0o777), (0, 0o600));
    assert_eq!(
        std::fs::metadata(m.path().join("shared")).unwrap().mode() & 0o7777,
        0o755
    );

    let private_file = m.path().join("private/f.txt");
    let (ok, err) = as_other_user(&["cat", private_file.to_str().unwrap()]);
    assert!(!ok && err.contains("Permission denied"), "{err}");
    let (ok, err) = as_other_user(&["ls", m.path().join("private").to_str().unwrap()]);
    assert!(!ok, "listing a private tenant: {err}");
    let (ok, err) = as_other_user(&["cat", m.path().join("shared/f.txt").to_str().unwrap()]);
    assert!(ok, "a tenant configured 0755 stays readable: {err}");
    let (ok, _) = as_other_user(&["touch", m.path().join("shared/new").to_str().unwrap()]);
    assert!(!ok, "0755 gives others no write access");

    let log = m.log();
    let line = log
        .lines()
        .find(|l| l.contains("readable by other local users"))
        .unwrap_or_else(|| panic!("no line naming shared tenants:\n{log}"));
    assert!(line.contains("shared (0755)") && !line.contains("private"), "{line}");
}

#[test]
fn without_allow_other_the_default_mode_stays_0755() {
    if !fuse_available() {
        return;
    }
    let m = Mount::start(&local_config("", "[[tenants]]\nname = \"acme\"\n"), &[]);
    let meta = std::fs::metadata(m.path().join("acme")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o755);
    assert!(!m.log().contains("allow_other"));
}

#[test]
fn a_newline_in_a_file_name_cannot_forge_a_log_line() {
    if !fuse_available() {
        return;
    }
    const FORGED: &str = "2026-01-01T00:00:00.000000Z ERROR byosfs: FORGED by a file name";
    let m = Mount::start(
        &local_config("", "[[tenants]]\nname = \"acme\"\n"),
        &[("RUST_LOG", "byosfs=debug")],
    );
    let name = format!("evil\n{FORGED}");
    let path = m.path().join("acme").join(&name);
    std::fs::write(&path, b"x").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"x");
    // An error naming the key, too: a directory where the name's file is expected.
    let _ = std::fs::read_dir(&path);
    let _ = std::fs::metadata(m.path().join("acme").join(format!("absent\n{FORGED}")));
    let mut m = m;
    let log = m.unmount();
    let lines: Vec<&str> = log.lines().collect();
    let forged: Vec<&&str> = lines.iter().filter(|l| l.contains("FORGED")).collect();
    assert!(
        !forged.is_empty(),
        "the key was logged at all (opened for read):\n{log}"
    );
    for l in &forged {
        assert!(!l.starts_with("2026-01-01"), "a forged line:\n{log}");
        assert!(
            l.contains("evil\\n2026") || l.contains("absent\\n2026"),
            "not escaped: {l}"
        );
    }
}

/// The kernel queues the read-ahead of the whole mount in one queue and stops sending once
/// `max_background` requests are unanswered (16 unless the filesystem asks for more): with the
/// default, 16 reads hung on one tenant's storage would stall every tenant's reads in the
/// kernel, before the dispatcher's per-tenant slots could keep them apart. The mount must ask
/// for as many as it admits (`max_requests`); the kernel's own record of the connection says
/// what it got.
#[test]
fn the_kernel_may_queue_as_many_background_requests_as_the_mount_admits() {
    if !fuse_available() || !rustix::process::geteuid().is_root() {
        return;
    }
    let m = Mount::start(
        &local_config("max_requests = 300", "[[tenants]]\nname = \"acme\"\n"),
        &[],
    );
    let conns = std::path::Path::new("/sys/fs/fuse/connections");
    // fusectl is not mounted on every machine; mount it for the check, and put it back.
    let mounted_here = std::fs::read_dir(conns).map(|mut d| d.next().is_none()).unwrap_or(true)
        && Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(conns)
            .status()
            .is_ok_and(|s| s.success());
    // The connection's directory is named by the kernel's dev_t of the mount (major << 20 | minor).
    let dev = std::fs::metadata(m.path()).unwrap().dev();
    let id = (libc::major(dev) << 20) | libc::minor(dev);
    let got = std::fs::read_to_string(conns.join(id.to_string()).join("max_background"));
    if mounted_here {
        let _ = Command::new("umount").arg(conns).status();
    }
    assert_eq!(got.expect("fusectl entry of the mount").trim(), "300");
}
