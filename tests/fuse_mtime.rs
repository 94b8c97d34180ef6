//! Real mounts over a real S3 server on loopback: modification times survive a remount
//! (stored as `x-amz-meta-mtime`), so `touch -d`, `cp -p` and `rsync -a` behave as on a
//! local filesystem.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::SystemTime;

use common::mount::{fuse_available, pattern, s3_config, which, Mount};
use common::s3server::TestS3Server;

const MIB: usize = 1 << 20;

fn mount(server: &TestS3Server) -> Mount {
    let backend = r#"
request_timeout = "5s"
connect_timeout = "1s"
max_attempts = 2
"#;
    let rest = r#"
[cache]
memory = "64MiB"

[write]
part_size = "5MiB"
memory = "32MiB"
staging_dir = "./staging"

[[tenants]]
name = "acme"
backend = "s3"
prefix = "acme/"
"#;
    Mount::start_s3(&s3_config(&server.endpoint, backend, rest), server)
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

fn run(cmd: &mut Command, m: &Mount) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nmount log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.log()
    );
    out
}

/// `x-amz-meta-mtime` of `key`, straight from the server.
fn stored_mtime(server: &TestS3Server, key: &str) -> Option<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    rt.block_on(async {
        let out = client.head_object().bucket("media").key(key).send().await.ok()?;
        out.metadata()?.get("mtime").cloned()
    })
}

#[test]
fn touch_cp_p_and_rsync_keep_mtime_across_remount() {
    if !fuse_available() {
        return;
    }
    let have_rsync = which("rsync");
    assert!(
        have_rsync || std::env::var("CI").as_deref() != Ok("true"),
        "rsync missing in CI"
    );
    let server = TestS3Server::start(&["media"]);
    // A small tree with old mtimes, one file above the 5 MiB part size (multipart upload).
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("sub")).unwrap();
    let files = [("a.txt", 10), ("b.bin", 6 * MIB + 1), ("sub/c.txt", 3000)];
    for (i, (name, size)) in files.iter().enumerate() {
        let p = src.path().join(name);
        std::fs::write(&p, pattern(*size, i as u64)).unwrap();
        let st = Command::new("touch")
            .args(["-d", &format!("1999-0{}-0{} 12:34:56.789", i + 1, i + 2)])
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let reference = src.path().join("ref");
    std::fs::write(&reference, b"").unwrap();
    assert!(Command::new("touch")
        .args(["-d", "2001-02-03"])
        .arg(&reference)
        .status()
        .unwrap()
        .success());

    let m = mount(&server);
    let acme = m.path().join("acme");
    run(
        Command::new("touch").args(["-d", "2001-02-03"]).arg(acme.join("t.txt")),
        &m,
    );
    std::fs::create_dir(acme.join("cp")).unwrap();
    for (name, _) in &files[..2] {
        run(
            Command::new("cp")
                .arg("-p")
                .arg(src.path().join(name))
                .arg(acme.join("cp")),
            &m,
        );
    }
    if have_rsync {
        run(
            Command::new("rsync")
                .arg("-a")
                .arg(format!("{}/", src.path().display()))
                .arg(acme.join("rs")),
            &m,
        );
    }
    drop(m);

    // In the bucket as rclone/s3fs store it (the exact value is checked through the mount:
    // `touch -d` uses the local time zone).
    for key in ["acme/t.txt", "acme/cp/a.txt", "acme/cp/b.bin"] {
        assert!(stored_mtime(&server, key).is_some(), "{key} has no x-amz-meta-mtime");
    }
    let m = mount(&server);
    let acme = m.path().join("acme");
    assert_eq!(mtime(&acme.join("t.txt")), mtime(&reference), "touch -d");
    for (name, _) in &files[..2] {
        assert_eq!(
            mtime(&acme.join("cp").join(name)),
            mtime(&src.path().join(name)),
            "cp -p {name}"
        );
    }
    if !have_rsync {
        eprintln!("SKIPPING rsync part: rsync not installed");
        return;
    }
    for (name, _) in &files {
        assert_eq!(
            mtime(&acme.join("rs").join(name)),
            mtime(&src.path().join(name)),
            "rsync -a {name}"
        );
    }
    let out = run(
        Command::new("rsync")
            .args(["-a", "--itemize-changes", "--stats"])
            .arg(format!("{}/", src.path().display()))
            .arg(acme.join("rs")),
        &m,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Number of regular files transferred: 0"),
        "second rsync transferred files:\n{text}"
    );
    // Itemized lines are `YXcstpoguax`: no file may differ in size (s) or time (t).
    // Directories may (their mtimes are not stored), and so may permissions, which are fixed
    // per tenant.
    for line in text.lines() {
        let b = line.as_bytes();
        if b.len() > 11 && b[1] == b'f' {
            assert!(b[3] != b's' && b[4] != b't', "file seen as changed: {line}\n{text}");
        }
    }
}
