//! Real mounts over a real S3 server on loopback: crash safety (issue 4, "Crashes").
//!
//! - SIGKILL during a large write: no partial object, the next mount aborts our orphaned
//!   multipart upload (and only ours), fsync-acknowledged data is intact.
//! - A full staging disk (a small tmpfs): a sequential writer streams through it; a writer
//!   that completes no part gets `ENOSPC`; nothing acknowledged is lost.
//! - Mounts in different PID namespaces sharing one staging directory (containers on one
//!   host): a mount's startup recovery never aborts another's live upload, whatever pid its
//!   staging root's name carries, and a crashed root named with a live (reused) pid is
//!   still recovered (issue 24 item 4).
//! - SIGTERM while a file is being written: the close completes and the object is whole; with
//!   a too short grace period the unfinished file is reported and nothing partial appears.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mount::{fuse_available, pattern, sha256, which, Mount};
use common::s3server::TestS3Server;

const MIB: usize = 1 << 20;

/// The tests run one at a time: each moves hundreds of MiB and they time-sensitively watch
/// a process; in parallel on a small machine they would starve each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(server: &TestS3Server, staging: &Path) -> String {
    format!(
        r#"
[cache]
memory = "64MiB"

[write]
part_size = "8MiB"
memory = "64MiB"
staging_dir = "{}"

[backends.s3]
type = "s3"
provider = "custom"
endpoint = "{}"
region = "us-east-1"
force_path_style = true
bucket = "media"
credentials = {{ env = {{ access_key_id = "TEST_AK", secret_access_key = "TEST_SK" }} }}
request_timeout = "60s"
connect_timeout = "1s"
max_attempts = 2

[[tenants]]
name = "acme"
backend = "s3"
prefix = "acme/"
"#,
        staging.display(),
        server.endpoint
    )
}

fn start(server: &TestS3Server, staging: &Path, extra_env: &[(&str, &str)]) -> Mount {
    let mut env = vec![
        ("TEST_AK", server.access_key.as_str()),
        ("TEST_SK", server.secret_key.as_str()),
    ];
    env.extend_from_slice(extra_env);
    Mount::start(&config(server, staging), &env)
}

/// Part files of open multipart uploads in the s3s-fs data dir (it has no
/// ListMultipartUploads): `.upload_id-<id>.part-<n>`, as upload ids.
fn upload_part_files(server: &TestS3Server) -> Vec<String> {
    let mut ids = Vec::new();
    for dir in [server.root.clone(), server.root.join("media")] {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(".upload_id-") {
                ids.push(rest.split(".part-").next().unwrap().to_owned());
            }
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// Another program's multipart upload with one part, in the same bucket.
fn foreign_upload(server: &TestS3Server) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    rt.block_on(async {
        let up = client
            .create_multipart_upload()
            .bucket("media")
            .key("acme/other-program.bin")
            .send()
            .await
            .unwrap();
        let id = up.upload_id().unwrap().to_owned();
        client
            .upload_part()
            .bucket("media")
            .key("acme/other-program.bin")
            .upload_id(&id)
            .part_number(1)
            .body(vec![5u8; 1024].into())
            .send()
            .await
            .unwrap();
        id
    })
}

fn files_under(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    for _ in 0..10_000 {
        let Some(d) = stack.pop() else { break };
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.path().to_string_lossy().ends_with(suffix) {
                out.push(e.path());
            }
        }
    }
    out
}

/// Sends a signal on request, from a process forked BEFORE the file under test was opened:
/// forking while it is open would close a copy of the descriptor in the child, and every
/// close of a byosfs file commits it.
struct Killer(std::process::Child);

impl Killer {
    fn arm(pid: u32, sig: i32) -> Killer {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("read _ && kill -{sig} {pid}"))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        Killer(child)
    }

    fn fire(mut self) {
        let mut stdin = self.0.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        drop(stdin);
        assert!(self.0.wait().unwrap().success());
    }
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn sigkill_during_large_write_then_remount_recovers() {
    if !fuse_available() {
        return;
    }
    let _serial = serial();
    const TOTAL: usize = 256 * MIB;
    const FSYNCED: usize = 40 * MIB;
    let server = TestS3Server::start(&["media"]);
    let staging = tempfile::tempdir().unwrap();
    let data = Arc::new(pattern(TOTAL, 4));
    let foreign = foreign_upload(&server);

    let m = start(&server, staging.path(), &[]);
    let killer = Killer::arm(m.pid(), 9);
    let path = m.path().join("acme/big.bin");
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (data, written, path) = (data.clone(), written.clone(), path.clone());
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut f = File::create(&path)?;
            f.write_all(&data[..FSYNCED])?;
            f.sync_all()?;
            written.store(FSYNCED as u64, Ordering::SeqCst);
            for chunk in data[FSYNCED..].chunks(MIB) {
                f.write_all(chunk)?;
                written.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            // Killed before this: the rest of the file is never acknowledged.
            f.sync_all()
        })
    };
    // Kill well into the unacknowledged part, with parts of it uploaded.
    wait_for("the writer to pass 150 MiB", Duration::from_secs(120), || {
        written.load(Ordering::SeqCst) >= 150 * MIB as u64 || writer.is_finished()
    });
    if writer.is_finished() {
        panic!(
            "writer finished before the kill: {:?}\n{}",
            writer.join().unwrap(),
            m.log()
        );
    }
    let listing: Vec<_> = std::fs::read_dir(&server.root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        upload_part_files(&server).len() >= 2,
        "our upload has parts on the server: {listing:?}"
    );
    killer.fire();
    assert!(writer.join().unwrap().is_err(), "the killed mount fails the writer");

    // No partial object: the bucket holds exactly what fsync acknowledged.
    let obj = server.object("acme/big.bin").expect("fsynced object");
    assert_eq!(obj.len(), FSYNCED);
    assert_eq!(sha256(&obj), sha256(&data[..FSYNCED]));
    let journals = files_under(staging.path(), ".journal");
    assert_eq!(journals.len(), 1, "one journal for the unfinished upload");
    let orphans = upload_part_files(&server);
    assert_eq!(orphans.len(), 2, "ours and the foreign upload: {orphans:?}");
    drop(m);

    // Remount: recovery runs before the mount is served.
    let m = start(&server, staging.path(), &[]);
    let log = m.log();
    assert!(
        log.contains("crash recovery: aborted unfinished upload") && log.contains("big.bin"),
        "recovery logged the file:\n{log}"
    );
    assert_eq!(
        upload_part_files(&server),
        vec![foreign],
        "only the foreign upload is left"
    );
    assert!(files_under(staging.path(), ".journal").is_empty());
    // Only the live mount's own lock file is left.
    let leftovers: Vec<_> = files_under(staging.path(), "")
        .into_iter()
        .filter(|p| !p.ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "crashed run's staging deleted: {leftovers:?}");
    let through_mount = std::fs::read(m.path().join("acme/big.bin")).unwrap();
    assert_eq!(sha256(&through_mount), sha256(&data[..FSYNCED]));
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn full_staging_disk_gives_enospc_and_keeps_acknowledged_data() {
    if !fuse_available() {
        return;
    }
    let _serial = serial();
    let Some(tmpfs) = Tmpfs::mount("64m") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but a tmpfs cannot be mounted (needs root)"
        );
        eprintln!("SKIPPING: cannot mount a tmpfs (needs root)");
        return;
    };
    let server = TestS3Server::start(&["media"]);
    let staging = tmpfs.dir.path().join("staging");
    let m = start(&server, &staging, &[]);

    // A file committed before the disk fills.
    let first = pattern(3 * MIB, 1);
    std::fs::write(m.path().join("acme/first.bin"), &first).unwrap();

    // Something else fills the staging disk, leaving 12 MiB.
    let filler = tmpfs.dir.path().join("filler");
    let filler_len = 52 * MIB;
    std::fs::write(&filler, vec![1u8; filler_len]).unwrap();

    // A sequential writer streams through: each part is staged, uploaded, and its local
    // copy dropped when the disk has no room for the next one.
    let data = pattern(64 * MIB, 2);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(m.path().join("acme/second.bin"))
        .unwrap();
    f.write_all(&data[..2 * MIB]).unwrap();
    f.sync_all().unwrap();
    for chunk in data[2 * MIB..].chunks(256 * 1024) {
        f.write_all(chunk)
            .expect("a sequential writer needs room for about one part");
    }
    drop(f);
    assert_eq!(sha256(&server.object("acme/second.bin").unwrap()), sha256(&data));

    // A writer going backwards completes no part, so nothing can be uploaded and dropped:
    // once the disk is full it gets ENOSPC, and what it was told was written is kept.
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(m.path().join("acme/backwards.bin"))
        .unwrap();
    let chunk = 256 * 1024;
    let mut reference = vec![0u8; data.len()];
    let mut err = None;
    for i in (0..data.len() / chunk).rev() {
        let piece = &data[i * chunk..(i + 1) * chunk];
        match f.write_at(piece, (i * chunk) as u64) {
            Ok(n) => reference[i * chunk..i * chunk + n].copy_from_slice(&piece[..n]),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("64 MiB written backwards into ~12 MiB of staging must fail");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    // Closing commits everything that was acknowledged.
    drop(f);
    let obj = server.object("acme/backwards.bin").expect("committed");
    assert_eq!(obj.len(), reference.len());
    assert_eq!(sha256(&obj), sha256(&reference));
    assert_eq!(sha256(&server.object("acme/first.bin").unwrap()), sha256(&first));

    // With space back the mount writes again.
    std::fs::remove_file(&filler).unwrap();
    std::fs::write(m.path().join("acme/third.bin"), &data[..12 * MIB]).unwrap();
    assert_eq!(
        sha256(&server.object("acme/third.bin").unwrap()),
        sha256(&data[..12 * MIB])
    );
    drop(m);
    drop(tmpfs);
}

#[test]
fn sigterm_waits_for_a_file_being_written() {
    if !fuse_available() {
        return;
    }
    let _serial = serial();
    let server = TestS3Server::start(&["media"]);
    let staging = tempfile::tempdir().unwrap();
    let mut m = start(&server, staging.path(), &[("BYOSFS_SHUTDOWN_TIMEOUT", "30")]);
    let data = pattern(48 * MIB, 3);
    let killer = Killer::arm(m.pid(), 15);
    let mut f = File::create(m.path().join("acme/during-term.bin")).unwrap();
    f.write_all(&data[..24 * MIB]).unwrap();
    killer.fire();
    // The mount keeps serving the writer until it closes.
    std::thread::sleep(Duration::from_millis(500));
    f.write_all(&data[24 * MIB..]).unwrap();
    drop(f);
    let log = m.unmount();
    assert!(log.contains("signal received"), "{log}");
    assert!(
        log.contains("unmounted") && !log.contains("could not be committed"),
        "{log}"
    );
    let obj = server.object("acme/during-term.bin").expect("committed on close");
    assert_eq!(sha256(&obj), sha256(&data));
    assert!(upload_part_files(&server).is_empty());
}

#[test]
fn sigterm_reports_a_file_left_open_past_the_timeout() {
    if !fuse_available() {
        return;
    }
    let _serial = serial();
    let server = TestS3Server::start(&["media"]);
    let staging = tempfile::tempdir().unwrap();
    let m = start(&server, staging.path(), &[("BYOSFS_SHUTDOWN_TIMEOUT", "1")]);
    let killer = Killer::arm(m.pid(), 15);
    let mut f = File::create(m.path().join("acme/held.bin")).unwrap();
    f.write_all(&pattern(20 * MIB, 5)).unwrap();
    killer.fire();
    wait_for("byosfs to give up", Duration::from_secs(20), || {
        m.log().contains("could not be committed")
    });
    let log = m.log();
    assert!(
        log.contains("shutdown: file still open") && log.contains("held.bin"),
        "{log}"
    );
    // The writer learns it: its next call fails.
    std::thread::sleep(Duration::from_millis(300));
    let failed = f.write_all(&[1u8; 4096]).is_err() || f.sync_all().is_err();
    assert!(failed, "writer must see an error after the mount went away");
    drop(f);
    assert!(
        server.object("acme/held.bin").is_none(),
        "no partial object:\n{}",
        m.log()
    );
    let mut m = m;
    eprintln!("first run:\n{}", m.unmount());
    drop(m);
    // The next mount aborts the upload the shutdown left.
    let m = start(&server, staging.path(), &[]);
    assert!(m.log().contains("crash recovery"), "{}", m.log());
    assert!(upload_part_files(&server).is_empty());
}

/// Runs `script` in bash in the background with `$1` = the tenant directory and `$2` = a
/// local chunk file.
fn bash_bg(script: &str, acme: &Path, chunk: &Path) -> std::process::Child {
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("_")
        .arg(acme)
        .arg(chunk)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// `cmd > existing`, `exec 3>existing` and `cmd > new` while the mount is SIGKILLed mid-write
/// (parts of the new content already uploaded): the old objects stay byte for byte, the new
/// file has no object. Before the fix the shell's close of the descriptor it had dup2ed
/// published an empty object at once.
#[test]
fn sigkill_during_shell_redirects_keeps_the_old_objects() {
    if !fuse_available() {
        return;
    }
    let _serial = serial();
    let server = TestS3Server::start(&["media"]);
    let staging = tempfile::tempdir().unwrap();
    let chunk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(chunk.path(), pattern(MIB, 77)).unwrap();
    let old_a = pattern(3 * MIB + 5, 1);
    let old_b = pattern(100, 2);
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = server.client();
        rt.block_on(async {
            for (key, body) in [("acme/redirect.bin", &old_a), ("acme/exec3.bin", &old_b)] {
                client
                    .put_object()
                    .bucket("media")
                    .key(key)
                    .body(body.clone().into())
                    .send()
                    .await
                    .unwrap();
            }
        });
    }
    let m = start(&server, staging.path(), &[]);
    let acme = m.path().join("acme");
    // Each writer adds 1 MiB every 20 ms, for at most 400 MiB: far more than it gets to write.
    let loop_body = "for i in $(seq 1 400); do cat \"$2\" TARGET || exit 1; sleep 0.02; done";
    let mut writers = vec![
        bash_bg(
            &format!("{} > \"$1/redirect.bin\"", loop_body.replace("TARGET", "")),
            &acme,
            chunk.path(),
        ),
        bash_bg(
            &format!("exec 3>\"$1/exec3.bin\"; {}", loop_body.replace("TARGET", ">&3")),
            &acme,
            chunk.path(),
        ),
        bash_bg(
            &format!("{} > \"$1/fresh.bin\"", loop_body.replace("TARGET", "")),
            &acme,
            chunk.path(),
        ),
    ];
    // Past two 8 MiB parts each, so every writer has a multipart upload with parts on the
    // server.
    let names = ["redirect.bin", "exec3.bin", "fresh.bin"];
    wait_for("every writer to pass 20 MiB", Duration::from_secs(60), || {
        names
            .iter()
            .all(|n| std::fs::metadata(acme.join(n)).is_ok_and(|md| md.len() >= 20 * MIB as u64))
    });
    assert_eq!(
        server.object("acme/redirect.bin").map(|d| sha256(&d)),
        Some(sha256(&old_a)),
        "while writing"
    );
    assert_eq!(
        server.object("acme/exec3.bin").map(|d| sha256(&d)),
        Some(sha256(&old_b)),
        "while writing"
    );
    assert_eq!(server.object("acme/fresh.bin").map(|d| d.len()), None, "while writing");
    assert!(upload_part_files(&server).len() >= 3, "uploads in flight");

    let st = Command::new("kill")
        .arg("-9")
        .arg(m.pid().to_string())
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    for w in &mut writers {
        while w.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = w.kill();
        let _ = w.wait();
    }
    drop(m);

    assert_eq!(
        server.object("acme/redirect.bin").map(|d| sha256(&d)),
        Some(sha256(&old_a))
    );
    assert_eq!(
        server.object("acme/exec3.bin").map(|d| sha256(&d)),
        Some(sha256(&old_b))
    );
    assert_eq!(server.object("acme/fresh.bin").map(|d| d.len()), None);
    // The next mount aborts the three orphaned uploads and serves the old content.
    let m = start(&server, staging.path(), &[]);
    assert!(upload_part_files(&server).is_empty(), "orphaned uploads aborted");
    assert_eq!(
        sha256(&std::fs::read(m.path().join("acme/redirect.bin")).unwrap()),
        sha256(&old_a)
    );
    assert!(!m.path().join("acme/fresh.bin").exists());
}

/// Staging roots of the mounts using `staging`.
fn roots(staging: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(staging)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("byosfs-"))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// byosfs mounted in a new PID (and mount) namespace, as in another container on the same
/// host: its `/proc` shows none of this test's processes. Returns the `unshare` process
/// (killing it kills byosfs) once the mount is up, and the log path.
fn start_in_pid_namespace(server: &TestS3Server, staging: &Path, dir: &Path) -> (std::process::Child, PathBuf) {
    let cfg = dir.join("byosfs.toml");
    std::fs::write(&cfg, config(server, staging)).unwrap();
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let log = dir.join("byosfs.log");
    let child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_byosfs"))
        .arg("mount")
        .arg("--config")
        .arg(&cfg)
        .arg(&mnt)
        .env("RUST_LOG", "byosfs=debug")
        .env("TEST_AK", &server.access_key)
        .env("TEST_SK", &server.secret_key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

#[test]
fn mounts_in_other_pid_namespaces_never_abort_live_uploads() {
    if !fuse_available() {
        return;
    }
    let namespaces = which("unshare")
        && Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !namespaces {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but PID namespaces are unavailable (unshare --pid needs root)"
        );
        eprintln!("SKIPPING: cannot create a PID namespace (needs root and util-linux unshare)");
        return;
    }
    let _serial = serial();
    let server = TestS3Server::start(&["media"]);
    let staging = tempfile::tempdir().unwrap();
    let data = pattern(24 * MIB, 9);

    // Mount A, in this PID namespace, with a file being written: parts uploaded, journaled.
    let a = start(&server, staging.path(), &[]);
    let mut f = File::create(a.path().join("acme/live.bin")).unwrap();
    f.write_all(&data[..20 * MIB]).unwrap();
    wait_for("A's upload to be journaled with parts", Duration::from_secs(60), || {
        files_under(staging.path(), ".journal").len() == 1 && !upload_part_files(&server).is_empty()
    });

    // Mount B in another PID namespace: A's pid does not exist there.
    let b_dir = tempfile::tempdir().unwrap();
    let (mut b, b_log) = start_in_pid_namespace(&server, staging.path(), b_dir.path());
    let read_b = || std::fs::read_to_string(&b_log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !read_b().contains("mounted") && Instant::now() < deadline && b.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = b.kill();
    let _ = b.wait();
    let log_b = read_b();
    assert!(log_b.contains("mounted"), "B did not mount:\n{log_b}");
    assert!(
        !log_b.contains("crash recovery: aborted"),
        "B aborted a live upload:\n{log_b}"
    );

    // A's upload is intact: the file completes.
    f.write_all(&data[20 * MIB..]).unwrap();
    f.sync_all().expect("A's upload survived B's startup");
    drop(f);
    assert_eq!(sha256(&server.object("acme/live.bin").unwrap()), sha256(&data));

    // Mount A2 crashes with an upload open; its root is then named with a pid that is alive
    // here (1, as a reused pid would be).
    let a2 = start(&server, staging.path(), &[]);
    let killer = Killer::arm(a2.pid(), 9);
    let before: Vec<PathBuf> = roots(staging.path());
    let mut g = File::create(a2.path().join("acme/crashed.bin")).unwrap();
    g.write_all(&data[..20 * MIB]).unwrap();
    wait_for("A2's upload to be journaled", Duration::from_secs(60), || {
        files_under(staging.path(), ".journal").len() == 1
    });
    killer.fire();
    drop(g);
    drop(a2);
    let a2_root = files_under(staging.path(), ".journal")[0]
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(before.contains(&a2_root));
    let reused = staging.path().join("byosfs-1-999");
    std::fs::rename(&a2_root, &reused).unwrap();

    // Mount C recovers it, and leaves A (alive) alone.
    let c = start(&server, staging.path(), &[]);
    let log_c = c.log();
    assert!(
        log_c.contains("crash recovery: aborted unfinished upload") && log_c.contains("crashed.bin"),
        "C recovered the crashed root:\n{log_c}"
    );
    assert!(!reused.exists());
    assert!(upload_part_files(&server).is_empty(), "no upload left open");
    assert!(server.object("acme/crashed.bin").is_none(), "nothing partial published");
    assert!(std::fs::read_dir(a.path()).is_ok(), "A still serves");
    drop(c);
    drop(a);
}
