//! Interoperability with s3fs-fuse on one bucket: a file chmod'ed and chown'ed, a directory's
//! mode and a symlink made through byosfs show the same through s3fs, and the other way
//! round. Both mount the same moto bucket on loopback (moto keeps `dir/` markers with
//! their metadata, which s3s-fs does not).
//!
//! Needs root (chown, and s3fs's FUSE mount), `/dev/fuse`, s3fs and moto; without them the
//! test skips loudly outside CI and fails under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::moto::MotoServer;
use common::mount::{fuse_available, is_mounted, s3_config, which, Mount};

fn skip(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but {why}: the s3fs interop test cannot be skipped in CI"
    );
    eprintln!("SKIPPING s3fs interop: {why}");
}

fn byosfs(moto: &MotoServer) -> Mount {
    let rest = r#"
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
"#;
    Mount::start(
        &s3_config(&moto.endpoint, "", rest),
        &[("TEST_AK", "testing"), ("TEST_SK", "testing")],
    )
}

/// s3fs in the foreground on `media:/t`, ended by PID and unmounted on drop.
struct S3fs {
    child: Option<Child>,
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl S3fs {
    fn start(moto: &MotoServer) -> S3fs {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "testing:testing\n").unwrap();
        std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let opts = format!(
            "url={},use_path_request_style,passwd_file={},stat_cache_expire=1",
            moto.endpoint,
            passwd.display()
        );
        let log = dir.path().join("s3fs.log");
        let child = Command::new("s3fs")
            .arg("media:/t")
            .arg(&mnt)
            .args(["-f", "-o", &opts])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn s3fs");
        let mut s = S3fs {
            child: Some(child),
            mnt,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&s.mnt) {
            let exited = s.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            assert!(
                Instant::now() < deadline && !exited,
                "s3fs did not mount (exited or 20 s passed):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for S3fs {
    fn drop(&mut self) {
        let _ = Command::new("fusermount").arg("-u").arg(&self.mnt).status();
        if is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3").arg("-uz").arg(&self.mnt).status();
        }
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn stat(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.mode(), m.uid(), m.gid())
}

fn set(p: &Path, mode: u32, uid: u32, gid: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
}

#[test]
fn modes_owners_and_symlinks_match_s3fs_both_ways() {
    if !fuse_available() {
        return;
    }
    if !which("s3fs") {
        return skip("s3fs is not installed (apt-get install s3fs)");
    }
    if std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
        return skip("not root (chown needs it)");
    }
    let Some(moto) = MotoServer::start(&["media"]) else {
        return skip("moto is not available (pip install 'moto[server]')");
    };

    // byosfs writes.
    let b = byosfs(&moto);
    let t = b.path().join("t");
    std::fs::write(t.join("f"), b"from byosfs").unwrap();
    set(&t.join("f"), 0o640, 2001, 3001);
    std::fs::create_dir(t.join("d")).unwrap();
    set(&t.join("d"), 0o750, 2001, 3001);
    std::fs::write(t.join("d/x"), b"x").unwrap();
    std::os::unix::fs::symlink("f", t.join("link")).unwrap();
    drop(b);

    // s3fs reads, then writes.
    let s = S3fs::start(&moto);
    let p = s.path();
    assert_eq!(stat(&p.join("f")), (libc::S_IFREG | 0o640, 2001, 3001));
    assert_eq!(stat(&p.join("d")), (libc::S_IFDIR | 0o750, 2001, 3001));
    assert_eq!(std::fs::read_link(p.join("link")).unwrap(), Path::new("f"));
    assert_eq!(std::fs::read(p.join("link")).unwrap(), b"from byosfs");
    std::fs::write(p.join("g"), b"from s3fs").unwrap();
    set(&p.join("g"), 0o604, 2002, 3002);
    std::fs::create_dir(p.join("e")).unwrap();
    set(&p.join("e"), 0o711, 2002, 3002);
    std::os::unix::fs::symlink("d/x", p.join("s3fs-link")).unwrap();
    drop(s);

    // A fresh byosfs sees what s3fs stored.
    let b = byosfs(&moto);
    let t = b.path().join("t");
    assert_eq!(stat(&t.join("g")), (libc::S_IFREG | 0o604, 2002, 3002));
    assert_eq!(std::fs::read(t.join("g")).unwrap(), b"from s3fs");
    assert_eq!(stat(&t.join("e")), (libc::S_IFDIR | 0o711, 2002, 3002));
    assert_eq!(std::fs::read_link(t.join("s3fs-link")).unwrap(), Path::new("d/x"));
    assert_eq!(std::fs::read(t.join("s3fs-link")).unwrap(), b"x");
}
