//! Round trips per operation on a real mount (issue 26): requests counted at the S3 server
//! while `cp -r`, a first read after open, a read at a new offset and `ls -l` run. Far from
//! the bucket each request is a round trip, so these counts are what a user waits for; the
//! tests fail if one grows. Nothing here is timed: the server holds each request for a few
//! milliseconds only so that the requests a client keeps in flight, and proofs that expire
//! while a copy runs, show up in the counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::mount::{fuse_available, pattern, s3_config, Mount};
use common::opcount::OpSnapshot;
use common::s3server::TestS3Server;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn mount(server: &TestS3Server, negative_ttl: &str) -> Mount {
    mount_with(server, negative_ttl, "")
}

fn mount_with(server: &TestS3Server, negative_ttl: &str, tenant_extra: &str) -> Mount {
    let rest = format!(
        r#"
[cache]
memory = "64MiB"
negative_ttl = "{negative_ttl}"

[write]
memory = "32MiB"
staging_dir = "./staging"

[[tenants]]
name = "acme"
backend = "s3"
prefix = "acme/"
{tenant_extra}
"#
    );
    let backend = "request_timeout = \"10s\"\nmax_attempts = 2\n";
    Mount::start_s3(&s3_config(&server.endpoint, backend, &rest), server)
}

/// Requests the server saw while `f` ran, plus any it still receives within 300 ms (work the
/// operation left running in the background counts for it).
fn requests(server: &TestS3Server, f: impl FnOnce()) -> OpSnapshot {
    let before = server.ops();
    f();
    std::thread::sleep(Duration::from_millis(300));
    server.ops().since(&before)
}

#[test]
fn cp_r_costs_one_put_per_file_and_nothing_before_it() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let src = tempfile::tempdir().unwrap();
    let (dirs, per_dir) = (2, 40);
    for d in 0..dirs {
        std::fs::create_dir(src.path().join(format!("d{d}"))).unwrap();
        for i in 0..per_dir {
            let data = pattern((1 + i % 8) * KIB, (d * per_dir + i) as u64);
            std::fs::write(src.path().join(format!("d{d}/f{i:03}")), data).unwrap();
        }
    }
    let files = (dirs * per_dir) as u64;
    // Each request takes 10 ms and names are trusted absent for 200 ms: the proof that the
    // new directories are empty expires many times while they fill, as it does over a WAN.
    let m = mount(&server, "200ms");
    server.set_delay(Duration::from_millis(10));
    let ops = requests(&server, || {
        let st = std::process::Command::new("cp")
            .arg("-r")
            .arg(src.path())
            .arg(m.path().join("acme/copy"))
            .status()
            .unwrap();
        assert!(st.success(), "cp -r failed:\n{}", m.log());
    });
    eprintln!("cp -r of {files} files in {dirs} directories: {ops}");
    // One PUT per file, one marker per directory (the copy's root and its two children).
    assert_eq!(ops.put, files + 1 + dirs as u64, "{ops}");
    assert_eq!((ops.copy, ops.part, ops.post, ops.get), (0, 0, 0, 0), "{ops}");
    // A directory's name may be looked up (HEAD + LIST) when its parent's proof has lapsed
    // meanwhile, once per directory. No file is asked about before its PUT: the directories'
    // proofs are renewed by a listing every half `negative_ttl` instead (without that, a HEAD
    // and a LIST per file once the proof expired: ~120 here).
    assert!(ops.head <= 1 + dirs as u64, "{ops}");
    assert!(ops.list * 2 <= files, "{} listings for {files} files: {ops}", ops.list);
    for d in 0..dirs {
        for i in [0, per_dir - 1] {
            let key = format!("acme/copy/d{d}/f{i:03}");
            let want = pattern((1 + i % 8) * KIB, (d * per_dir + i) as u64);
            assert_eq!(server.object(&key).as_deref(), Some(&want[..]), "{key}");
        }
    }
}

#[test]
fn first_read_costs_the_lookup_and_one_get_and_a_new_offset_one_get() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let data = pattern(8 * MIB, 7);
    std::fs::create_dir_all(server.root.join("media/acme")).unwrap();
    std::fs::write(server.root.join("media/acme/movie.bin"), &data).unwrap();
    let m = mount(&server, "1s");
    std::fs::metadata(m.path().join("acme")).unwrap();
    let path = m.path().join("acme/movie.bin");
    let mut buf = vec![0u8; 64 * KIB];
    let mut file = None;
    let first = requests(&server, || {
        let f = std::fs::File::open(&path).unwrap();
        f.read_exact_at(&mut buf, 3 * MIB as u64 + 4096).unwrap();
        file = Some(f);
    });
    eprintln!("open + first read: {first}");
    assert_eq!(&buf[..], &data[3 * MIB + 4096..][..64 * KIB]);
    // The lookup: HEAD and LIST, sent together; then the GET. No HEAD at open.
    assert_eq!((first.head, first.list, first.get), (1, 1, 1), "{first}");
    assert_eq!(first.total(), 3, "{first}");
    // Read-ahead may GET the next block beside the read's own, in parallel: still one round
    // trip, and nothing but GETs.
    let f = file.unwrap();
    let next = requests(&server, || f.read_exact_at(&mut buf, 6 * MIB as u64 + 8192).unwrap());
    eprintln!("read at a new offset: {next}");
    assert_eq!(&buf[..], &data[6 * MIB + 8192..][..64 * KIB]);
    assert!((1..=2).contains(&next.get) && next.total() == next.get, "{next}");
}

#[test]
fn ls_l_keeps_many_heads_in_flight_and_lists_once() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let dir = server.root.join("media/acme/list");
    std::fs::create_dir_all(&dir).unwrap();
    let n = 1000u64;
    for i in 0..n {
        std::fs::write(dir.join(format!("obj{i:05}")), b"x").unwrap();
    }
    // Without POSIX metadata readdirplus hands listed files to the kernel with a zero TTL, so
    // each `stat` is a lookup that needs the file's HEAD for its stored mtime. (With it, the
    // kernel keeps the listing's attributes: see docs/performance.md, WAN section.)
    let m = mount_with(&server, "1s", "posix_metadata = false");
    std::fs::metadata(m.path().join("acme")).unwrap();
    server.set_delay(Duration::from_millis(5));
    server.reset_max_in_flight();
    let ops = requests(&server, || {
        let out = std::process::Command::new("ls")
            .arg("-l")
            .arg(m.path().join("acme/list"))
            .output()
            .unwrap();
        assert!(out.status.success(), "ls -l failed:\n{}", m.log());
        let lines = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("obj"))
            .count();
        assert_eq!(lines as u64, n);
    });
    let in_flight = server.max_in_flight();
    eprintln!("ls -l of {n} objects: {ops}, at most {in_flight} in flight");
    // One listing (plus the directory's own lookup), one HEAD per entry for its stored mtime
    // and mode (a few may race with the walk), never a listing per entry.
    assert!(ops.list <= 2, "{ops}");
    assert!((n..=n + n / 10).contains(&ops.head), "{ops}");
    // Stat-ahead keeps ~128 HEADs in flight: 1000 entries in about ten round trips, not 60
    // (16 at once) or 1000 (one by one).
    assert!(in_flight >= 64, "only {in_flight} requests in flight at once: {ops}");
}
