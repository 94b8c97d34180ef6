//! Metrics and live budgets on a real mount over a real S3 server on loopback: after a known
//! workload per tenant the scraped `/metrics` counters match it and carry no object key; a
//! reload resizes the block cache while a writer is mid-file, and reports a new write budget as
//! needing a remount.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use common::mount::{fuse_available, pattern, s3_config, sha256, Mount};
use common::s3server::TestS3Server;

const MIB: u64 = 1024 * 1024;

fn put(server: &TestS3Server, key: &str, data: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        server
            .client()
            .put_object()
            .bucket("media")
            .key(key)
            .body(data.to_vec().into())
            .send()
            .await
            .expect("put fixture");
    });
}

/// A port nothing listens on right now (bound and released; the mount binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The value of the sample `name{labels}` (labels exactly as written, in order).
fn sample(text: &str, series: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.split_once(' ').is_some_and(|(s, _)| s == series))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"));
    let v = line.rsplit_once(' ').unwrap().1;
    v.parse::<f64>().unwrap_or_else(|_| panic!("{line}")) as u64
}

/// Read the whole file, then drop its pages from the kernel's cache so a second read reaches
/// byosfs again (the page cache would otherwise answer it).
fn read_and_forget(path: &std::path::Path) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    rustix::fs::fadvise(f.as_fd(), 0, None, rustix::fs::Advice::DontNeed).unwrap();
    v
}

fn tenants_config(server: &TestS3Server, port: u16, cache: &str, write: &str) -> String {
    s3_config(
        &server.endpoint,
        "",
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n[cache]\nmemory = \"{cache}\"\nreadahead_max = \"8MiB\"\n\
             [write]\nmemory = \"{write}\"\n\
             [[tenants]]\nname = \"alpha\"\nbackend = \"s3\"\nprefix = \"alpha/\"\n\
             [[tenants]]\nname = \"beta\"\nbackend = \"s3\"\nprefix = \"beta/\"\n"
        ),
    )
}

#[test]
fn scraped_counters_match_a_known_workload_per_tenant_and_name_no_key() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let big = pattern(64 * MIB as usize, 1);
    put(&server, "alpha/secret-movie-title.bin", &big);
    let small = pattern(8 * MIB as usize, 2);
    put(&server, "beta/private-report.bin", &small);
    let port = free_port();
    let m = Mount::start_s3(&tenants_config(&server, port, "32MiB", "64MiB"), &server);
    let mnt = m.path().to_owned();

    // alpha: read 64 MiB twice, write 32 MiB. beta: read 8 MiB once, write 4 MiB.
    for _ in 0..2 {
        assert_eq!(
            sha256(&read_and_forget(&mnt.join("alpha/secret-movie-title.bin"))),
            sha256(&big)
        );
    }
    let up = pattern(32 * MIB as usize, 3);
    std::fs::write(mnt.join("alpha/upload-secret-name.bin"), &up).unwrap();
    assert_eq!(
        sha256(&read_and_forget(&mnt.join("beta/private-report.bin"))),
        sha256(&small)
    );
    std::fs::write(mnt.join("beta/other-upload.bin"), &up[..4 * MIB as usize]).unwrap();
    // An operation that fails: rmdir of a directory that is not empty (ENOTEMPTY).
    std::fs::create_dir(mnt.join("alpha/secret-dir")).unwrap();
    std::fs::write(mnt.join("alpha/secret-dir/f"), b"x").unwrap();
    let e = std::fs::remove_dir(mnt.join("alpha/secret-dir")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY), "{e}");

    // Counters are read at scrape time; the readers' handles are closed by now, but their
    // read-ahead counts once their last fetch ends: allow a moment.
    let text = {
        let t = Instant::now();
        loop {
            let text = scrape(port);
            let a = "tenant=\"alpha\",backend=\"s3\"";
            if sample(&text, &format!("byosfs_bytes_uploaded_total{{{a}}}")) >= 32 * MIB
                || t.elapsed() > Duration::from_secs(10)
            {
                break text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let a = "tenant=\"alpha\",backend=\"s3\"";
    let b = "tenant=\"beta\",backend=\"s3\"";
    let get = |series: &str| sample(&text, series);

    // Served: every byte of both reads came through byosfs.
    assert!(get(&format!("byosfs_bytes_served_total{{{a}}}")) >= 128 * MIB, "{text}");
    // Fetched: every byte at least once. byosfs drops the blocks a sequential reader has
    // passed when the kernel keeps the file's pages (`read::ReadConfig::release_passed`), so
    // the second read, whose pages this test evicted, is fetched again except for the last
    // blocks still cached: at most 2 x 64 MiB plus 10 % read-ahead.
    let fetched = get(&format!("byosfs_bytes_fetched_total{{{a}}}"));
    assert!(
        (64 * MIB..=128 * MIB * 11 / 10).contains(&fetched),
        "fetched {fetched}\n{text}"
    );
    let wasted = get(&format!("byosfs_readahead_wasted_bytes_total{{{a}}}"));
    assert!(
        wasted <= fetched / 10,
        "wasted {wasted} of {fetched} on two whole-file reads"
    );
    // 32 MiB, and the 1-byte file that keeps `secret-dir` from being removed.
    assert_eq!(
        get(&format!("byosfs_bytes_uploaded_total{{{a}}}")),
        32 * MIB + 1,
        "{text}"
    );
    // beta's own figures, apart from alpha's.
    assert!(get(&format!("byosfs_bytes_served_total{{{b}}}")) >= 8 * MIB);
    assert!((8 * MIB..=8 * MIB * 11 / 10).contains(&get(&format!("byosfs_bytes_fetched_total{{{b}}}"))));
    assert_eq!(get(&format!("byosfs_bytes_uploaded_total{{{b}}}")), 4 * MIB);
    // Requests by operation, latency histograms, FUSE operations and errors.
    assert!(
        get(&format!(
            "byosfs_backend_requests_total{{{a},op=\"get\",outcome=\"ok\"}}"
        )) >= 8
    );
    assert_eq!(
        get(&format!(
            "byosfs_backend_requests_total{{{a},op=\"upload_part\",outcome=\"ok\"}}"
        )),
        4,
        "32 MiB in 8 MiB parts"
    );
    assert_eq!(get(&format!("byosfs_backend_part_upload_seconds_count{{{a}}}")), 4);
    assert!(get(&format!("byosfs_backend_get_first_byte_seconds_count{{{a}}}")) >= 8);
    assert!(get(&format!("byosfs_cache_misses_total{{{a}}}")) > 0);
    assert!(get("byosfs_fuse_requests_total{op=\"read\"}") >= 2 * 64);
    assert!(get("byosfs_fuse_errors_total{op=\"rmdir\",errno=\"ENOTEMPTY\"}") >= 1);
    assert!(get("byosfs_fuse_requests_total{op=\"lookup\"}") > 0);
    assert_eq!(get("byosfs_uploads_in_flight"), 0);
    assert_eq!(get("byosfs_write_budget_limit_bytes"), 64 * MIB);
    // No series names an object, a directory or anything derived from a key.
    for word in [
        "secret",
        "movie",
        "private",
        "report",
        "upload-",
        "other-upload",
        ".bin",
        "dir/f",
    ] {
        assert!(!text.contains(word), "a series carries {word:?}:\n{text}");
    }
    drop(m);
}

fn reload(m: &Mount) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_byosfs"))
        .args(["reload", "--mountpoint", m.path().to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn a_reload_resizes_the_cache_and_keeps_the_write_budget_while_a_writer_is_mid_file() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let port = free_port();
    let m = Mount::start_s3(&tenants_config(&server, port, "32MiB", "64MiB"), &server);
    let data = pattern(40 * MIB as usize, 4);
    let mut w = std::fs::File::create(m.path().join("alpha/live.bin")).unwrap();
    w.write_all(&data[..20 * MIB as usize]).unwrap();

    // Grow the cache; a new write budget (split into tenant shares at mount) waits for a
    // remount and is reported so.
    std::fs::write(
        m.dir.path().join("byosfs.toml"),
        tenants_config(&server, port, "96MiB", "16MiB"),
    )
    .unwrap();
    let out = reload(&m);
    assert!(out.contains("resized: cache.memory = 100663296 bytes"), "{out}");
    assert!(out.contains("write.memory"), "{out}");
    let text = scrape(port);
    assert_eq!(sample(&text, "byosfs_cache_budget_bytes"), 96 * MIB);
    assert_eq!(sample(&text, "byosfs_write_budget_limit_bytes"), 64 * MIB);

    // The writer finishes (its buffers drain).
    w.write_all(&data[20 * MIB as usize..]).unwrap();
    drop(w);
    assert_eq!(sha256(&server.object("alpha/live.bin").unwrap()), sha256(&data));
    let t = Instant::now();
    loop {
        let text = scrape(port);
        if sample(&text, "byosfs_write_budget_bytes") == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "write buffers not released:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Shrinking the cache evicts at once: a read fills it, a reload to 8 MiB empties it to that.
    put(&server, "alpha/fill.bin", &pattern(48 * MIB as usize, 5));
    let mut f = std::fs::File::open(m.path().join("alpha/fill.bin")).unwrap();
    let mut buf = vec![0u8; 4 * MIB as usize];
    f.read_exact(&mut buf).unwrap();
    std::fs::write(
        m.dir.path().join("byosfs.toml"),
        tenants_config(&server, port, "8MiB", "16MiB"),
    )
    .unwrap();
    let out = reload(&m);
    assert!(out.contains("resized: cache.memory = 8388608 bytes"), "{out}");
    let text = scrape(port);
    assert!(sample(&text, "byosfs_cache_bytes") <= 8 * MIB, "{text}");
    // Reading on works under the new budget.
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).unwrap();
    assert_eq!(rest.len() as u64, 44 * MIB);
    drop(f);
    let log = m.log();
    assert!(!log.contains("ERROR"), "{log}");
}
