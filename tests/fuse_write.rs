//! Real mounts over a real S3 server on loopback: the write side (issue: write path).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::mount::{fuse_available, pattern, s3_config, sha256, sha256_file, which, Mount};
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
memory = "128MiB"

[write]
part_size = "5MiB"
memory = "64MiB"
staging_dir = "./staging"

[[tenants]]
name = "acme"
backend = "s3"
prefix = "acme/"
"#;
    Mount::start_s3(&s3_config(&server.endpoint, backend, rest), server)
}

/// A tree of `n` files of mixed sizes (1 B .. 50 MiB), returns path → sha256.
fn make_tree(root: &Path, n: usize) -> BTreeMap<String, String> {
    let mut sums = BTreeMap::new();
    for i in 0..n {
        let size = match i {
            0 => 1,
            1 => 50 * MIB,
            2 => 12 * MIB + 3,
            3 => 5 * MIB,
            _ => 1 + (i * 7919) % (200 * 1024),
        };
        let rel = format!("d{}/sub{}/file{i}.bin", i % 5, i % 3);
        let data = pattern(size, i as u64 + 100);
        let p = root.join(&rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &data).unwrap();
        sums.insert(rel, sha256(&data));
    }
    sums
}

fn verify(server: &TestS3Server, m: &Mount, dest: &str, sums: &BTreeMap<String, String>) {
    for (rel, sum) in sums {
        let through_mount = sha256_file(&m.path().join("acme").join(dest).join(rel));
        assert_eq!(&through_mount, sum, "{dest}/{rel} through the mount");
        let direct = server
            .object(&format!("acme/{dest}/{rel}"))
            .unwrap_or_else(|| panic!("{dest}/{rel} missing"));
        assert_eq!(&sha256(&direct), sum, "{dest}/{rel} in the bucket");
    }
}

#[test]
fn cp_rsync_and_tar_round_trip_a_tree() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let m = mount(&server);
    let src = tempfile::tempdir().unwrap();
    let sums = make_tree(src.path(), 200);
    let acme = m.path().join("acme");

    let st = Command::new("cp")
        .arg("-r")
        .arg(src.path())
        .arg(acme.join("cp"))
        .status()
        .unwrap();
    assert!(st.success(), "cp failed:\n{}", m.log());
    verify(&server, &m, "cp", &sums);

    if which("rsync") {
        let st = Command::new("rsync")
            .args(["-a", "--inplace"])
            .arg(format!("{}/", src.path().display()))
            .arg(acme.join("rsync"))
            .status()
            .unwrap();
        assert!(st.success(), "rsync failed:\n{}", m.log());
        verify(&server, &m, "rsync", &sums);
        // Default rsync: temp file + rename over the target.
        let st = Command::new("rsync")
            .args(["-a", "--checksum"])
            .arg(format!("{}/", src.path().display()))
            .arg(acme.join("rsync2"))
            .status()
            .unwrap();
        assert!(st.success(), "rsync (temp + rename) failed:\n{}", m.log());
        verify(&server, &m, "rsync2", &sums);
    } else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "rsync missing in CI");
    }

    let tarball = src.path().with_extension("tar");
    let st = Command::new("tar")
        .arg("cf")
        .arg(&tarball)
        .arg("-C")
        .arg(src.path())
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::create_dir(acme.join("tar")).unwrap();
    let st = Command::new("tar")
        .arg("xf")
        .arg(&tarball)
        .arg("-C")
        .arg(acme.join("tar"))
        .status()
        .unwrap();
    let _ = std::fs::remove_file(&tarball);
    assert!(st.success(), "tar x failed:\n{}", m.log());
    verify(&server, &m, "tar", &sums);
}

/// `cp -r` into a new directory: the kernel looks every new name up before its exclusive
/// create (it never trusts a negative dentry for one), and each lookup of a missing name was
/// a HEAD and a LIST (374 requests here for 124 objects, measured once with the absent-name
/// check disabled). Now the only requests are the lookup of the new top directory and one
/// PUT per object and directory marker.
#[test]
fn cp_r_into_a_new_directory_sends_one_request_per_object() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let m = mount(&server);
    let src = tempfile::tempdir().unwrap();
    let (dirs, files) = (3, 40);
    for d in 0..dirs {
        let dir = src.path().join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..files {
            std::fs::write(dir.join(format!("f{f}")), pattern(1000 + f, f as u64)).unwrap();
        }
    }
    let acme = m.path().join("acme");
    std::fs::metadata(&acme).unwrap();
    let before = server.requests();
    let st = Command::new("cp")
        .arg("-r")
        .arg(src.path())
        .arg(acme.join("tree"))
        .status()
        .unwrap();
    assert!(st.success(), "cp failed:\n{}", m.log());
    let sent = server.requests() - before;
    // HEAD + LIST of "tree", its marker, the markers of d0..d2, one PUT per file.
    let expected = 2 + 1 + dirs + dirs * files;
    assert!(
        sent as usize <= expected,
        "{sent} requests for {} objects (expected {expected})",
        1 + dirs + dirs * files
    );
    for d in 0..dirs {
        for f in [0, files - 1] {
            let got = server.object(&format!("acme/tree/d{d}/f{f}")).unwrap();
            assert_eq!(got, pattern(1000 + f, f as u64));
        }
    }
}

/// `ls` of a directory, then new files into it: the listing (readdirplus, every entry in the
/// inode table) answers for the names it did not show, so each new file is its PUT alone.
#[test]
fn files_created_after_ls_send_one_request_each() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let m = mount(&server);
    let dir = m.path().join("acme").join("listed");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..10 {
        std::fs::write(dir.join(format!("old{i}")), b"old").unwrap();
    }
    // A fresh mount, so the table knows nothing of the directory but what `ls` shows.
    drop(m);
    let m = mount(&server);
    let dir = m.path().join("acme").join("listed");
    let st = Command::new("ls").arg(&dir).output().unwrap();
    assert!(st.status.success(), "ls failed:\n{}", m.log());
    assert_eq!(String::from_utf8_lossy(&st.stdout).lines().count(), 10);
    let before = server.requests();
    for i in 0..5 {
        std::fs::write(dir.join(format!("new{i}")), b"new").unwrap();
    }
    let sent = server.requests() - before;
    assert!(sent <= 5, "{sent} requests for 5 new files");
    assert_eq!(server.object("acme/listed/new4").unwrap(), b"new");
}

#[test]
fn seek_back_patches_and_random_writes_produce_correct_objects() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let m = mount(&server);
    let acme = m.path().join("acme");

    // The mp4 muxer pattern: stream the body, then patch the header and a middle box.
    let mut expect = pattern(23 * MIB + 17, 5);
    {
        let mut f = File::create(acme.join("out.mp4")).unwrap();
        for c in expect.chunks(64 * 1024) {
            f.write_all(c).unwrap();
        }
        f.write_all_at(b"moov-patched", 0).unwrap();
        f.write_all_at(b"mdat-size", 11 * MIB as u64 + 5).unwrap();
        f.sync_all().unwrap();
    }
    expect[..12].copy_from_slice(b"moov-patched");
    expect[11 * MIB + 5..11 * MIB + 14].copy_from_slice(b"mdat-size");
    assert_eq!(sha256(&server.object("acme/out.mp4").unwrap()), sha256(&expect));
    assert_eq!(sha256_file(&acme.join("out.mp4")), sha256(&expect));

    // Random 4 KiB writes over a 20 MiB file, against a reference.
    let mut reference = pattern(20 * MIB, 9);
    std::fs::write(acme.join("db.bin"), &reference).unwrap();
    {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(acme.join("db.bin"))
            .unwrap();
        let mut x: u64 = 12345;
        for i in 0..300 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let off = (x >> 33) as usize % (20 * MIB - 4096);
            let page = pattern(4096, i + 1000);
            f.write_all_at(&page, off as u64).unwrap();
            reference[off..off + 4096].copy_from_slice(&page);
            if i % 50 == 0 {
                let mut back = vec![0u8; 4096];
                f.read_exact_at(&mut back, off as u64).unwrap();
                assert_eq!(back, page, "read-your-writes at {off}");
            }
        }
    }
    assert_eq!(sha256(&server.object("acme/db.bin").unwrap()), sha256(&reference));

    // Truncate then extend.
    {
        let f = OpenOptions::new().write(true).open(acme.join("db.bin")).unwrap();
        f.set_len(1000).unwrap();
        f.write_all_at(b"tail", 2000).unwrap();
    }
    let mut t = reference[..1000].to_vec();
    t.resize(2000, 0);
    t.extend_from_slice(b"tail");
    assert_eq!(server.object("acme/db.bin").unwrap(), t);
}

#[test]
fn editor_rename_and_directory_operations() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let m = mount(&server);
    let acme = m.path().join("acme");
    std::fs::write(acme.join("notes.txt"), b"version 1").unwrap();

    // Editor: write a temp file, fsync, rename over the original.
    {
        let mut f = File::create(acme.join(".notes.txt.swp")).unwrap();
        f.write_all(b"version 2, longer").unwrap();
        f.sync_all().unwrap();
    }
    std::fs::rename(acme.join(".notes.txt.swp"), acme.join("notes.txt")).unwrap();
    assert_eq!(std::fs::read(acme.join("notes.txt")).unwrap(), b"version 2, longer");
    assert_eq!(server.object("acme/notes.txt").unwrap(), b"version 2, longer");
    assert!(server.object("acme/.notes.txt.swp").is_none());

    // Directories: mkdir, rename with contents, rmdir only when empty.
    std::fs::create_dir_all(acme.join("a/b")).unwrap();
    std::fs::write(acme.join("a/b/x"), b"x").unwrap();
    std::fs::write(acme.join("a/y"), b"y").unwrap();
    let err = std::fs::remove_dir(acme.join("a")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
    std::fs::rename(acme.join("a"), acme.join("c")).unwrap();
    assert_eq!(std::fs::read(acme.join("c/b/x")).unwrap(), b"x");
    assert_eq!(server.object("acme/c/y").unwrap(), b"y");
    assert!(server.object("acme/a/y").is_none());
    std::fs::remove_file(acme.join("c/b/x")).unwrap();
    std::fs::remove_file(acme.join("c/y")).unwrap();
    std::fs::remove_dir(acme.join("c/b")).unwrap();
    std::fs::remove_dir(acme.join("c")).unwrap();
    assert!(!acme.join("c").exists());
    // Names the kernel allows but S3 keys must not hold.
    let long = "n".repeat(256);
    assert!(File::create(acme.join(long)).is_err());
}

/// A close with nothing written publishes nothing: `dd of=FILE` opens FILE, dup2s it onto
/// stdout and closes the original before writing, and stores no empty object first; the
/// writer's close after its data stores the content, once.
#[test]
fn close_of_a_duplicated_descriptor_before_writing_publishes_nothing() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let m = mount(&server);
    let before = server.publishes();
    let original = File::create(m.path().join("acme/dup.bin")).unwrap();
    let mut dup = original.try_clone().unwrap();
    drop(original);
    assert_eq!(server.object("acme/dup.bin"), None, "after the first close");
    let data = pattern(3 * MIB, 9);
    dup.write_all(&data).unwrap();
    drop(dup);
    assert_eq!(server.object("acme/dup.bin").map(|d| sha256(&d)), Some(sha256(&data)));
    assert_eq!(server.publishes() - before, 1);
}

/// Shell redirections as bash runs them (open, dup2 onto the target descriptor, close the
/// original, write, close): one PUT or one multipart upload per file, and the content right.
#[test]
fn shell_redirects_publish_each_file_once() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let m = mount(&server);
    let acme = m.path().join("acme");
    let big = tempfile::NamedTempFile::new().unwrap();
    let big_data = pattern(12 * MIB, 21);
    std::fs::write(big.path(), &big_data).unwrap();
    std::fs::write(acme.join("old.txt"), b"old content").unwrap();
    std::fs::metadata(acme.join("new.txt")).unwrap_err();
    let bash = |script: &str| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg("_")
            .arg(&acme)
            .arg(big.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            m.log()
        );
    };
    // (script, key, content (None: the big file), objects published)
    let cases: [(&str, &str, Option<&[u8]>, u64); 7] = [
        ("printf hello > \"$1/old.txt\"", "acme/old.txt", Some(b"hello"), 1),
        ("printf hi > \"$1/new.txt\"", "acme/new.txt", Some(b"hi"), 1),
        ("cat \"$2\" > \"$1/big.bin\"", "acme/big.bin", None, 1),
        (
            "exec 3>\"$1/fd3.txt\"; /bin/echo a >&3; /bin/echo b >&3; exec 3>&-",
            "acme/fd3.txt",
            Some(b"a\nb\n"),
            1,
        ),
        // A builtin's `>&3` is undone by bash itself (dup2 back onto stdout): a close by the
        // opener after data, so each one commits the file as it stands (README, Writes).
        (
            "exec 3>\"$1/fd3b.txt\"; echo a >&3; echo b >&3; exec 3>&-",
            "acme/fd3b.txt",
            Some(b"a\nb\n"),
            2,
        ),
        (": > \"$1/old.txt\"", "acme/old.txt", Some(b""), 1),
        ("touch \"$1/touched\"", "acme/touched", Some(b""), 1),
    ];
    for (script, key, want, publishes) in cases {
        let before = server.publishes();
        bash(script);
        // A file nobody wrote (`: >`) is stored at its last release, which the kernel sends
        // after close() has returned.
        for _ in 0..100 {
            if server.publishes() >= before + publishes {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(server.publishes() - before, publishes, "{script}: objects published");
        let got = server.object(key).unwrap_or_else(|| panic!("{script}: no object"));
        match want {
            Some(w) => assert_eq!(got, w, "{script}"),
            None => assert_eq!(sha256(&got), sha256(&big_data), "{script}"),
        }
    }
}

#[test]
fn failed_upload_is_reported_by_close_and_leaves_no_object() {
    if !fuse_available() {
        return;
    }
    let mut server = TestS3Server::start(&["media"]);
    let m = mount(&server);
    let mut f = File::create(m.path().join("acme/doomed.bin")).unwrap();
    f.write_all(&pattern(12 * MIB, 3)).unwrap();
    server.stop();
    let _ = f.write_all(&pattern(3 * MIB, 4));
    let res = f.sync_all();
    assert!(res.is_err(), "fsync must report the failed upload");
    drop(f);
    let leftovers: Vec<_> = walk(&server.root.join("media"));
    assert!(
        leftovers.iter().all(|p| !p.ends_with("doomed.bin")),
        "partial object became visible: {leftovers:?}"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// Peak RSS (VmHWM) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn two_gib_sequential_write_stays_within_the_memory_budget() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    // Budgets: 64 MiB write buffers, 64 MiB block cache (see `mount`/config below).
    let rest = r#"
[cache]
memory = "64MiB"
readahead_max = "16MiB"

[write]
part_size = "8MiB"
memory = "64MiB"
staging_dir = "./staging"

[[tenants]]
name = "acme"
backend = "s3"
prefix = "acme/"
"#;
    let m = Mount::start_s3(&s3_config(&server.endpoint, "", rest), &server);
    let before = peak_rss(m.pid());
    let start = std::time::Instant::now();
    let st = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", m.path().join("acme/big.bin").display()))
        .args(["bs=1M", "count=2048", "conv=fsync", "status=none"])
        .status()
        .unwrap();
    assert!(st.success(), "dd failed:\n{}", m.log());
    let secs = start.elapsed().as_secs_f64();
    let peak = peak_rss(m.pid());
    let budget = (64 + 64) << 20;
    let overhead = 100 << 20;
    eprintln!(
        "2 GiB sequential write: {:.0} MiB/s, peak RSS {} MiB (at mount {} MiB), budget {} MiB + {} MiB",
        2048.0 / secs,
        peak >> 20,
        before >> 20,
        budget >> 20,
        overhead >> 20
    );
    assert!(peak <= budget + overhead, "peak RSS {} MiB over budget", peak >> 20);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let len = rt.block_on(async {
        server
            .client()
            .head_object()
            .bucket("media")
            .key("acme/big.bin")
            .send()
            .await
            .unwrap()
            .content_length()
    });
    assert_eq!(len, Some(2048 << 20));
}

#[test]
fn ffmpeg_mp4_and_sqlite_write_correct_files() {
    if !fuse_available() {
        return;
    }
    let in_ci = std::env::var("CI").as_deref() == Ok("true");
    let server = TestS3Server::start(&["media"]);
    let m = mount(&server);
    let acme = m.path().join("acme");
    let local = tempfile::tempdir().unwrap();

    if which("ffmpeg") {
        // The mp4 muxer writes the body, then seeks back to patch the header (and with
        // +faststart rewrites the file): the object must equal the same mux done locally.
        let mux = |out: &Path| {
            Command::new("ffmpeg")
                .args([
                    "-v",
                    "error",
                    "-y",
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc=duration=3:size=320x240:rate=25",
                ])
                .args([
                    "-c:v",
                    "mpeg4",
                    "-q:v",
                    "5",
                    "-fflags",
                    "+bitexact",
                    "-flags",
                    "+bitexact",
                ])
                .args(["-movflags", "+faststart"])
                .arg(out)
                .status()
                .unwrap()
        };
        assert!(mux(&local.path().join("ref.mp4")).success());
        assert!(
            mux(&acme.join("clip.mp4")).success(),
            "ffmpeg into the mount failed:\n{}",
            m.log()
        );
        let want = sha256_file(&local.path().join("ref.mp4"));
        assert_eq!(sha256(&server.object("acme/clip.mp4").unwrap()), want);
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
            .arg(acme.join("clip.mp4"))
            .output()
            .unwrap();
        assert!(probe.status.success());
        let secs: f64 = String::from_utf8_lossy(&probe.stdout).trim().parse().unwrap();
        assert!((secs - 3.0).abs() < 0.1, "duration {secs}");
    } else {
        assert!(!in_ci, "ffmpeg missing in CI");
    }

    if which("sqlite3") {
        // sqlite writes pages anywhere, fsyncs, and creates/deletes a rollback journal.
        let db = acme.join("app.db");
        let sql = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);\n\
                   WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 5000)\n\
                   INSERT INTO t(v) SELECT hex(randomblob(100)) FROM c;\n\
                   UPDATE t SET v = 'patched' WHERE id % 7 = 0;\n\
                   DELETE FROM t WHERE id % 11 = 0;\n";
        let st = Command::new("sqlite3").arg(&db).arg(sql).status().unwrap();
        assert!(st.success(), "sqlite3 failed:\n{}", m.log());
        let out = Command::new("sqlite3")
            .arg(&db)
            .arg("PRAGMA integrity_check; SELECT count(*), sum(v = 'patched') FROM t;")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(text, "ok\n4546|650\n", "{}", String::from_utf8_lossy(&out.stderr));
        // The bucket holds the same database.
        let copy = local.path().join("copy.db");
        std::fs::write(&copy, server.object("acme/app.db").unwrap()).unwrap();
        let out = Command::new("sqlite3")
            .arg(&copy)
            .arg("PRAGMA integrity_check; SELECT count(*) FROM t;")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n4546\n");
    } else {
        assert!(!in_ci, "sqlite3 missing in CI");
    }
}
