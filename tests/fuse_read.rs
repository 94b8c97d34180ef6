//! Real mounts over a real S3 server on loopback: the read side (issue: mount, config, reads).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::mount::{fuse_available, pattern, s3_config, sha256, sha256_file, Mount};
use common::s3server::TestS3Server;

const MIB: usize = 1 << 20;

fn config(server: &TestS3Server, extra: &str) -> String {
    let backend = r#"
request_timeout = "10s"
connect_timeout = "2s"
"#;
    let rest = format!(
        r#"
[cache]
memory = "128MiB"
block_size = "1MiB"
metadata_ttl = "1s"

[write]
staging_dir = "./staging"

[[tenants]]
name = "acme"
backend = "s3"
prefix = "acme/"

[[tenants]]
name = "acme2"
backend = "s3"
prefix = "acme2/"
{extra}
"#
    );
    s3_config(&server.endpoint, backend, &rest)
}

fn mount(server: &TestS3Server, extra: &str) -> Mount {
    Mount::start_s3(&config(server, extra), server)
}

fn put(server: &TestS3Server, key: &str, data: Vec<u8>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    rt.block_on(async {
        client
            .put_object()
            .bucket("media")
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(data))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    });
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn tenants_directories_and_file_contents() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let sizes = [0, 1, MIB - 1, MIB, MIB + 1, 100 * MIB];
    let mut expected = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let data = pattern(*size, i as u64 + 1);
        expected.push((format!("acme/videos/2024/f{i}.bin"), sha256(&data)));
        put(&server, &format!("acme/videos/2024/f{i}.bin"), data);
    }
    put(&server, "acme/readme.txt", b"hello".to_vec());
    put(&server, "acme2/private.txt", b"other tenant".to_vec());
    put(&server, "acme2x/notmine.txt", b"outside every prefix".to_vec());
    put(&server, "stray.txt", b"bucket root".to_vec());

    let m = mount(&server, "");
    let root = m.path();
    assert_eq!(names(root), vec!["acme", "acme2"]);
    assert_eq!(names(&root.join("acme")), vec!["readme.txt", "videos"]);
    assert_eq!(names(&root.join("acme/videos")), vec!["2024"]);
    assert_eq!(names(&root.join("acme2")), vec!["private.txt"]);
    assert_eq!(std::fs::read(root.join("acme/readme.txt")).unwrap(), b"hello");
    for (key, sum) in &expected {
        let p = root.join(key);
        assert_eq!(&sha256_file(&p), sum, "{key}");
    }
    let meta = std::fs::metadata(root.join("acme/videos/2024/f5.bin")).unwrap();
    assert_eq!(meta.len(), 100 * MIB as u64);
    assert!(std::fs::metadata(root.join("acme/nope")).is_err());
    assert!(std::fs::metadata(root.join("acme/../acme2x")).is_err());
}

#[test]
fn media_player_pattern_reads_right_bytes() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let len = 48 * MIB + 12345;
    let data = pattern(len, 42);
    put(&server, "acme/movie.mp4", data.clone());
    let m = mount(&server, "");
    let f = File::open(m.path().join("acme/movie.mp4")).unwrap();
    let mut buf = vec![0u8; MIB];
    // 1. The index at the end.
    let n = f.read_at(&mut buf, (len - MIB) as u64).unwrap();
    assert_eq!(&buf[..n], &data[len - MIB..]);
    // 2. The header.
    let mut head = vec![0u8; 64 * 1024];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(&head[..], &data[..64 * 1024]);
    // 3. A seek to the middle, then play sequentially from there.
    let mid = len / 2 - 777;
    let mut off = mid;
    let mut chunk = vec![0u8; 256 * 1024];
    while off < len {
        let n = f.read_at(&mut chunk, off as u64).unwrap();
        assert!(n > 0);
        assert_eq!(&chunk[..n], &data[off..off + n], "at {off}");
        off += n;
    }
}

/// The mount raises the kernel's read-ahead from 128 KiB to the negotiated 1 MiB, so a
/// sequential reader sends an eighth of the FUSE requests (only root may; others keep 128 KiB).
#[test]
fn kernel_read_ahead_is_raised_for_the_mount() {
    use std::os::unix::fs::MetadataExt as _;
    if !fuse_available() {
        return;
    }
    // The sysfs knob is root-only.
    if std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
        assert!(std::env::var("CI").is_err(), "CI runs as root");
        eprintln!("SKIP kernel_read_ahead_is_raised_for_the_mount: not root");
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let m = mount(&server, "");
    let dev = std::fs::metadata(m.path()).unwrap().dev();
    let knob = format!("/sys/class/bdi/{}:{}/read_ahead_kb", libc::major(dev), libc::minor(dev));
    // Set right after the mount shows in mountinfo (once the kernel's INIT is answered), so a
    // loaded machine may show the default for a moment.
    let mut kib = String::new();
    for _ in 0..100 {
        kib = std::fs::read_to_string(&knob).unwrap();
        if kib.trim() == "1024" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(kib.trim(), "1024", "{knob}");
}

/// The mount process runs without transparent huge pages (the allocator's 2 MiB faults
/// stalled random reads for milliseconds; see `app::disable_transparent_huge_pages`).
#[test]
fn mount_process_runs_without_transparent_huge_pages() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let m = mount(&server, "");
    let status = std::fs::read_to_string(format!("/proc/{}/status", m.pid())).unwrap();
    // Kernels before 5.0 do not report it (the setting itself exists since 3.15).
    let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) else {
        assert!(std::env::var("CI").is_err(), "CI's kernel reports THP_enabled");
        eprintln!("SKIP mount_process_runs_without_transparent_huge_pages: kernel does not report it");
        return;
    };
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}

#[test]
fn interleaved_readers_on_one_handle_keep_their_read_ahead() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let len = 64 * MIB;
    let data = pattern(len, 7);
    put(&server, "acme/av.mkv", data.clone());
    put(&server, "acme/av2.mkv", data.clone());
    let m = mount(&server, "");
    let chunk = 128 * 1024;
    let half = len / 2;

    // Baseline: each stream on its own handle.
    let before = server.get_requests();
    let (a, b) = (
        File::open(m.path().join("acme/av2.mkv")).unwrap(),
        File::open(m.path().join("acme/av2.mkv")).unwrap(),
    );
    let mut buf = vec![0u8; chunk];
    for i in 0..half / chunk {
        a.read_exact_at(&mut buf, (i * chunk) as u64).unwrap();
        b.read_exact_at(&mut buf, (half + i * chunk) as u64).unwrap();
    }
    let separate = server.get_requests() - before;

    // Two interleaved streams on ONE handle: audio at the start, video from the middle.
    let before = server.get_requests();
    let f = File::open(m.path().join("acme/av.mkv")).unwrap();
    for i in 0..half / chunk {
        let (o1, o2) = (i * chunk, half + i * chunk);
        f.read_exact_at(&mut buf, o1 as u64).unwrap();
        assert_eq!(&buf[..], &data[o1..o1 + chunk]);
        f.read_exact_at(&mut buf, o2 as u64).unwrap();
        assert_eq!(&buf[..], &data[o2..o2 + chunk]);
    }
    let interleaved = server.get_requests() - before;
    eprintln!("GET requests: separate handles {separate}, interleaved on one handle {interleaved}");
    assert!(
        interleaved <= separate * 3 / 2 + 4,
        "interleaving collapsed read-ahead: {interleaved} vs {separate}"
    );
    // 64 MiB in 128 KiB reads is 512 reads; small requests per read would be hundreds of GETs.
    assert!(interleaved < 64, "{interleaved} GETs for 64 MiB");
}

#[test]
fn check_reports_success_and_named_failures() {
    let server = TestS3Server::start(&["media"]);
    let dir = tempfile::tempdir().unwrap();
    let run = |cfg: &str, sk: &str| {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, cfg).unwrap();
        Command::new(env!("CARGO_BIN_EXE_byosfs"))
            .args(["check", "--config"])
            .arg(&path)
            .env("TEST_AK", &server.access_key)
            .env("TEST_SK", sk)
            .output()
            .unwrap()
    };
    let good = run(&config(&server, ""), &server.secret_key);
    let out = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{out}{}", String::from_utf8_lossy(&good.stderr));
    assert_eq!(out.lines().filter(|l| l.starts_with("ok")).count(), 2, "{out}");

    let bad = run(&config(&server, ""), "wrong-secret");
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success());
    assert!(out.contains("signature mismatch"), "{out}");
    assert!(!out.contains("wrong-secret") && !String::from_utf8_lossy(&bad.stderr).contains("wrong-secret"));

    let missing = run(
        &config(&server, "").replace("bucket = \"media\"", "bucket = \"nobucket\""),
        &server.secret_key,
    );
    let out = String::from_utf8_lossy(&missing.stdout);
    assert!(!missing.status.success());
    assert!(out.contains("bucket not found"), "{out}");
}

/// An object replaced at the server with one of the same size: after the TTLs, a new open
/// reads the new bytes, not the kernel's pages of the old version, even when a lookup saw
/// the new ETag before the open.
#[test]
fn replaced_object_is_not_served_from_stale_kernel_pages() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let old = pattern(MIB, 1);
    let new: Vec<u8> = old.iter().map(|b| b ^ 0x5a).collect();
    put(&server, "acme/v.bin", old.clone());
    let m = mount(&server, "");
    let path = m.path().join("acme/v.bin");
    assert_eq!(sha256_file(&path), sha256(&old));
    put(&server, "acme/v.bin", new.clone());
    // Past attr_ttl, entry_ttl and metadata_ttl (1 s each): the stat's lookup sees the new
    // ETag, then the open must not keep the old pages.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), new.len() as u64);
    assert_eq!(
        sha256_file(&path),
        sha256(&new),
        "stale pages of the replaced object were served"
    );
    // The same version again keeps its pages and still reads right.
    assert_eq!(sha256_file(&path), sha256(&new));
}
