//! Real mounts over a real S3 server on loopback, with `write_back = true` (issue 26 item 3):
//! `close()` does not wait for the server while `fsync()` does, the mount shows closed files
//! before they are uploaded, `byosfs status` shows the queue, unmount uploads it, and after
//! a SIGKILL in the middle of writing many small files the next mount uploads every file
//! whose close had returned.
//!
//! PUTs are slowed down by the fault proxy (`tests/common/proxy.rs`), so the queue is
//! observably non-empty while the tests look at it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mount::{close_checked, fuse_available, pattern, sha256, Mount};
use common::proxy::{Fault, FaultPlan, FaultProxy};
use common::s3server::TestS3Server;

/// The tests run one at a time: each watches timings of its own mount.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(endpoint: &str, staging: &Path) -> String {
    config_with(endpoint, staging, "acme/", "")
}

/// Tenant `acme` at `prefix`, with `extra` tenant settings.
fn config_with(endpoint: &str, staging: &Path, prefix: &str, extra: &str) -> String {
    format!(
        r#"
[write]
staging_dir = "{}"

[backends.s3]
type = "s3"
provider = "custom"
endpoint = "{endpoint}"
region = "us-east-1"
force_path_style = true
bucket = "media"
credentials = {{ env = {{ access_key_id = "TEST_AK", secret_access_key = "TEST_SK" }} }}
request_timeout = "30s"

[[tenants]]
name = "acme"
backend = "s3"
prefix = "{prefix}"
write_back = true
{extra}
"#,
        staging.display()
    )
}

fn start(server: &TestS3Server, endpoint: &str, staging: &Path) -> Mount {
    Mount::start(
        &config(endpoint, staging),
        &[("TEST_AK", &server.access_key), ("TEST_SK", &server.secret_key)],
    )
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Objects the server holds under `dir` of the bucket (s3s-fs keeps them as plain files).
fn objects_in(server: &TestS3Server, dir: &str) -> usize {
    std::fs::read_dir(server.root.join("media").join(dir))
        .map(|d| d.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_file())).count())
        .unwrap_or(0)
}

fn status_json(m: &Mount) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_byosfs"))
        .args(["status", "--mountpoint", m.path().to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn close_does_not_wait_for_the_server_fsync_does_and_unmount_uploads_the_rest() {
    if !fuse_available() {
        return;
    }
    let _serial = serial();
    const DELAY: Duration = Duration::from_secs(3);
    let server = TestS3Server::start(&["media"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let staging = tempfile::tempdir().unwrap();
    let mut m = start(&server, &proxy.endpoint, staging.path());
    let acme = m.path().join("acme");
    std::fs::create_dir(acme.join("d")).unwrap();
    proxy.set_plan(FaultPlan::always(Fault::Delay(DELAY)).for_methods(&["PUT"]));

    let data = pattern(100_000, 1);
    let t = Instant::now();
    std::fs::write(acme.join("d/a.bin"), &data).unwrap();
    let close_took = t.elapsed();
    assert!(
        close_took < DELAY,
        "close waited for the delayed PUT ({close_took:?})\n{}",
        m.log()
    );
    assert!(server.object("acme/d/a.bin").is_none(), "not uploaded yet");
    // The mount shows the closed file: size, listing, content.
    assert_eq!(std::fs::metadata(acme.join("d/a.bin")).unwrap().len(), 100_000);
    let listed: Vec<_> = std::fs::read_dir(acme.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(listed, ["a.bin"]);
    assert_eq!(sha256(&std::fs::read(acme.join("d/a.bin")).unwrap()), sha256(&data));
    let status = status_json(&m);
    assert!(
        status["write_back"]["files"].as_u64().unwrap() >= 1,
        "status shows the queue: {status}"
    );

    // fsync returns only once the object is in the bucket.
    let t = Instant::now();
    let mut f = std::fs::File::create(acme.join("d/durable.bin")).unwrap();
    f.write_all(b"durable").unwrap();
    f.sync_all().unwrap();
    assert!(t.elapsed() >= DELAY, "fsync must wait for the delayed PUT");
    assert_eq!(server.object("acme/d/durable.bin").unwrap(), b"durable");
    drop(f);

    // Closed, not uploaded, then unmount: the process uploads before it exits.
    std::fs::write(acme.join("d/late.bin"), b"late").unwrap();
    let log = m.unmount();
    assert_eq!(server.object("acme/d/late.bin").unwrap(), b"late", "{log}");
    assert_eq!(sha256(&server.object("acme/d/a.bin").unwrap()), sha256(&data));
    assert!(log.contains("every closed file is uploaded"), "{log}");
}

#[test]
fn sigkill_during_a_copy_of_many_small_files_loses_no_closed_file() {
    if !fuse_available() {
        return;
    }
    let _serial = serial();
    // Scaled from the issue's 1,000 files to what runs in a few seconds here; the writer
    // stops on its own after FILES and the kill comes well before that.
    const FILES: usize = 600;
    const KILL_AFTER: usize = 250;
    let server = TestS3Server::start(&["media"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let staging = tempfile::tempdir().unwrap();
    let m = start(&server, &proxy.endpoint, staging.path());
    let tree = m.path().join("acme/tree");
    std::fs::create_dir(&tree).unwrap();
    // Each PUT takes 300 ms: uploads fall far behind the closes, so most closed files are
    // still staged when the mount dies.
    proxy.set_plan(FaultPlan::always(Fault::Delay(Duration::from_millis(300))).for_methods(&["PUT"]));

    let content = |i: usize| pattern(1000 + (i * 37) % 3000, i as u64 + 1);
    // The writer's log of what each close (and fsync) acknowledged, as `cp -v` would print.
    let closed = Arc::new(Mutex::new(Vec::<usize>::new()));
    let fsynced = Arc::new(Mutex::new(Vec::<usize>::new()));
    let writer = {
        let (closed, fsynced, tree) = (closed.clone(), fsynced.clone(), tree.clone());
        std::thread::spawn(move || -> std::io::Result<()> {
            for i in 0..FILES {
                let data = content(i);
                let mut f = std::fs::File::create(tree.join(format!("f{i:04}")))?;
                let half = data.len() / 2;
                f.write_all(&data[..half])?;
                if i % 50 == 25 {
                    f.sync_all()?;
                    fsynced.lock().unwrap().push(i);
                }
                f.write_all(&data[half..])?;
                // Only a close that returned 0 was acknowledged (a drop would hide the error
                // of a close the kill interrupted).
                close_checked(f)?;
                closed.lock().unwrap().push(i);
            }
            Ok(())
        })
    };
    wait_for("the writer to close enough files", Duration::from_secs(60), || {
        closed.lock().unwrap().len() >= KILL_AFTER || writer.is_finished()
    });
    assert!(!writer.is_finished(), "writer finished before the kill");
    Command::new("kill")
        .args(["-9", &m.pid().to_string()])
        .status()
        .unwrap();
    let result = writer.join().unwrap();
    assert!(result.is_err(), "the killed mount fails the writer");
    let closed = closed.lock().unwrap().clone();
    let fsynced = fsynced.lock().unwrap().clone();
    let uploaded_at_kill = objects_in(&server, "acme/tree");
    assert!(
        uploaded_at_kill + 50 < closed.len(),
        "most closed files were still staged at the kill ({uploaded_at_kill} of {} uploaded)",
        closed.len()
    );
    drop(m);

    // Next mount, same staging directory: the closed files show at once (from staging) and
    // are uploaded.
    let m = start(&server, &proxy.endpoint, staging.path());
    let first = closed[closed.len() - 1];
    let got = std::fs::read(tree_path(&m, first))
        .unwrap_or_else(|e| panic!("closed file f{first:04} after remount: {e}\n{}", m.log()));
    assert_eq!(
        sha256(&got),
        sha256(&content(first)),
        "a closed file reads back before its upload"
    );
    proxy.set_plan(FaultPlan::none());
    wait_for("every closed file in the bucket", Duration::from_secs(60), || {
        objects_in(&server, "acme/tree") >= closed.len()
    });
    for &i in &closed {
        let got = server
            .object(&format!("acme/tree/f{i:04}"))
            .unwrap_or_else(|| panic!("closed file f{i:04} missing after remount\n{}", m.log()));
        assert_eq!(sha256(&got), sha256(&content(i)), "f{i:04}");
    }
    // The file open at the kill: absent, its fsynced first half (also when the kill came
    // during that fsync: one that did not return may still have taken effect), or (if its
    // close got as far as staging but not back to the writer) its whole content.
    let open_at_kill = closed.len();
    let data = content(open_at_kill);
    let fsync_began = fsynced.contains(&open_at_kill) || open_at_kill % 50 == 25;
    match server.object(&format!("acme/tree/f{open_at_kill:04}")) {
        None => {}
        Some(got) if fsync_began && got == data[..data.len() / 2] => {}
        Some(got) => assert_eq!(sha256(&got), sha256(&data), "open file in an unacknowledged state"),
    }
    assert!(m.log().contains("queued for upload"), "{}", m.log());
}

fn tree_path(m: &Mount, i: usize) -> std::path::PathBuf {
    m.path().join(format!("acme/tree/f{i:04}"))
}

/// A reload that changes only a tenant's web or limit settings keeps its location, and so the
/// files closed there and not uploaded yet: they stay visible and are uploaded where they were
/// written. A real re-point still sends such a file to the location it was written for.
#[test]
fn a_reload_of_web_settings_keeps_pending_files_a_repoint_uploads_them_to_the_old_place() {
    if !fuse_available() {
        return;
    }
    let _serial = serial();
    let server = TestS3Server::start(&["media"]);
    let proxy = FaultProxy::start(&server.endpoint);
    let staging = tempfile::tempdir().unwrap();
    let m = start(&server, &proxy.endpoint, staging.path());
    let acme = m.path().join("acme");
    // `--force`: PUTs are refused below (so closed files stay pending as long as the test
    // looks), which fails the probe of a re-pointed tenant.
    let reload = |config: String| {
        std::fs::write(m.dir.path().join("byosfs.toml"), config).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_byosfs"))
            .args(["reload", "--force", "--mountpoint", m.path().to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "reload: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            m.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    proxy.set_plan(FaultPlan::always(Fault::Status(403)).for_methods(&["PUT"]));

    let data = pattern(50_000, 7);
    std::fs::write(acme.join("a.bin"), &data).unwrap();
    let web = "cache_control = \"max-age=60\"\nmax_file_size = \"1GiB\"";
    let out = reload(config_with(&proxy.endpoint, staging.path(), "acme/", web));
    // Still pending, and the mount still shows it: size, listing, content.
    assert_eq!(
        std::fs::metadata(acme.join("a.bin"))
            .unwrap_or_else(|e| panic!("pending file after the reload: {e}\n{out}\n{}", m.log()))
            .len(),
        50_000
    );
    let listed: Vec<_> = std::fs::read_dir(&acme)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(listed, ["a.bin"]);
    assert_eq!(sha256(&std::fs::read(acme.join("a.bin")).unwrap()), sha256(&data));
    assert!(server.object("acme/a.bin").is_none(), "checked while pending");
    assert!(out.contains("updated: acme") && !out.contains("re-pointed"), "{out}");
    proxy.set_plan(FaultPlan::none());
    wait_for("a.bin uploaded", Duration::from_secs(30), || {
        server.object("acme/a.bin").is_some()
    });
    assert_eq!(sha256(&server.object("acme/a.bin").unwrap()), sha256(&data));

    // A real re-point: the pending file goes to the location it was closed in.
    proxy.set_plan(FaultPlan::always(Fault::Status(403)).for_methods(&["PUT"]));
    std::fs::write(acme.join("b.bin"), b"old place").unwrap();
    let out = reload(config_with(&proxy.endpoint, staging.path(), "moved/", web));
    assert!(out.contains("re-pointed: acme"), "{out}");
    assert!(server.object("acme/b.bin").is_none(), "re-pointed while pending");
    proxy.set_plan(FaultPlan::none());
    wait_for("b.bin uploaded", Duration::from_secs(30), || {
        server.object("acme/b.bin").is_some()
    });
    assert_eq!(server.object("acme/b.bin").unwrap(), b"old place");
    assert!(server.object("moved/b.bin").is_none());
}
