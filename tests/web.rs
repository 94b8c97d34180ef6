//! Objects the web side can serve (issue 22), on real mounts over a real S3 server on
//! loopback: Content-Type and Cache-Control after cp, rsync, ffmpeg and mv; the
//! `user.content_type` xattr; `byosfs url` (presigned, expired, public base); per-tenant
//! limits (EFBIG, EDQUOT, EPERM, df); upload checksums against a byte flipped in transit (in a
//! single PUT and in one part of a multipart upload) and the completed size check;
//! and, without a mount, checksummed uploads to moto, which verifies none.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::mount::{fuse_available, pattern, s3_config, which, Mount};
use common::proxy::{Fault, FaultPlan, FaultProxy};
use common::s3server::TestS3Server;

const MIB: usize = 1 << 20;

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

/// (Content-Type, Cache-Control) of `key` in bucket `media`, straight from the server.
fn headers(server: &TestS3Server, key: &str) -> Option<(Option<String>, Option<String>)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    rt.block_on(async {
        let out = client.head_object().bucket("media").key(key).send().await.ok()?;
        Some((
            out.content_type().map(str::to_owned),
            out.cache_control().map(str::to_owned),
        ))
    })
}

fn content_type(server: &TestS3Server, key: &str) -> Option<String> {
    headers(server, key).and_then(|h| h.0)
}

fn getxattr(path: &Path, name: &str) -> std::io::Result<String> {
    let mut buf = vec![0u8; 8192];
    let n = rustix::fs::getxattr(path, name, &mut buf).map_err(std::io::Error::from)?;
    buf.truncate(n);
    Ok(String::from_utf8(buf).unwrap())
}

fn wait_for_log(m: &Mount, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !m.log().contains(needle) {
        assert!(Instant::now() < deadline, "no {needle:?} in the log:\n{}", m.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn web_mount(server: &TestS3Server, backend_extra: &str) -> Mount {
    let rest = r#"
[write]
part_size = "5MiB"
memory = "32MiB"
staging_dir = "./staging"

[[tenants]]
name = "acme"
backend = "s3"
prefix = "acme/"
cache_control = "public, max-age=60"
content_types = { m3u8 = "application/vnd.apple.mpegurl", ts = "video/mp2t" }
cache_control_by_extension = { m3u8 = "no-cache" }

[[tenants]]
name = "cdn"
backend = "s3"
prefix = "cdn/"
public_url_base = "https://cdn.example/files"

[[tenants]]
name = "ro"
backend = "s3"
prefix = "ro/"
read_only = true
"#;
    let backend = format!("request_timeout = \"5s\"\nmax_attempts = 2\n{backend_extra}");
    Mount::start_s3(&s3_config(&server.endpoint, &backend, rest), server)
}

#[test]
fn content_type_and_cache_control_after_cp_rsync_ffmpeg_and_mv() {
    if !fuse_available() {
        return;
    }
    let ci = std::env::var("CI").as_deref() == Ok("true");
    assert!((which("rsync") && which("ffmpeg")) || !ci, "rsync/ffmpeg missing in CI");
    let server = TestS3Server::start(&["media"]);
    let m = web_mount(&server, "");
    let t = m.path().join("acme");
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("photo.jpg"), pattern(1000, 1)).unwrap();
    std::fs::write(src.path().join("index.html"), b"<html></html>").unwrap();
    std::fs::write(src.path().join("blob.zzqx"), pattern(100, 2)).unwrap();
    // Above the 5 MiB part size: a multipart upload carries the headers too.
    std::fs::write(src.path().join("big.mp4"), pattern(6 * MIB, 3)).unwrap();

    run(Command::new("cp").arg(src.path().join("photo.jpg")).arg(&t), &m);
    run(Command::new("cp").arg(src.path().join("big.mp4")).arg(&t), &m);
    if which("rsync") {
        // rsync writes `.index.html.XXXXXX` and renames it: the rename fixes the header.
        run(
            Command::new("rsync")
                .arg("-a")
                .arg(src.path().join("index.html"))
                .arg(src.path().join("blob.zzqx"))
                .arg(format!("{}/", t.display())),
            &m,
        );
    } else {
        run(
            Command::new("cp")
                .arg(src.path().join("index.html"))
                .arg(src.path().join("blob.zzqx"))
                .arg(&t),
            &m,
        );
    }
    if which("ffmpeg") {
        std::fs::create_dir(t.join("live")).unwrap();
        run(
            Command::new("ffmpeg")
                .args([
                    "-loglevel",
                    "error",
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc=duration=1:size=64x64:rate=10",
                ])
                .args(["-c:v", "mpeg4", "-f", "hls", "-hls_time", "1", "-y"])
                .arg(t.join("live/x.m3u8")),
            &m,
        );
        run(
            Command::new("ffmpeg")
                .args([
                    "-loglevel",
                    "error",
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc=duration=1:size=64x64:rate=10",
                ])
                .args(["-c:v", "mpeg4", "-movflags", "+faststart", "-y"])
                .arg(t.join("clip.mp4")),
            &m,
        );
    }
    // mv within the tenant: to another extension (header rewritten) and to the same one.
    std::fs::write(t.join("draft.tmp"), b"<p>hi</p>").unwrap();
    run(Command::new("mv").arg(t.join("draft.tmp")).arg(t.join("page.html")), &m);
    run(Command::new("mv").arg(t.join("photo.jpg")).arg(t.join("moved.jpg")), &m);

    let expect = [
        ("acme/moved.jpg", "image/jpeg"),
        ("acme/big.mp4", "video/mp4"),
        ("acme/index.html", "text/html"),
        ("acme/page.html", "text/html"),
        ("acme/blob.zzqx", "application/octet-stream"),
    ];
    for (key, ct) in expect {
        assert_eq!(content_type(&server, key).as_deref(), Some(ct), "{key}\n{}", m.log());
        assert_eq!(
            headers(&server, key).unwrap().1.as_deref(),
            Some("public, max-age=60"),
            "cache_control of {key}"
        );
    }
    if which("ffmpeg") {
        assert_eq!(content_type(&server, "acme/clip.mp4").as_deref(), Some("video/mp4"));
        let (ct, cc) = headers(&server, "acme/live/x.m3u8").unwrap();
        assert_eq!(ct.as_deref(), Some("application/vnd.apple.mpegurl"));
        assert_eq!(cc.as_deref(), Some("no-cache"), "per-extension Cache-Control");
        assert_eq!(content_type(&server, "acme/live/x0.ts").as_deref(), Some("video/mp2t"));
    }

    // The xattr reads the stored header and sets it by a copy onto itself.
    assert_eq!(getxattr(&t.join("big.mp4"), "user.content_type").unwrap(), "video/mp4");
    rustix::fs::setxattr(
        t.join("big.mp4"),
        "user.content_type",
        b"application/x-test",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    assert_eq!(
        content_type(&server, "acme/big.mp4").as_deref(),
        Some("application/x-test")
    );
    assert_eq!(
        getxattr(&t.join("big.mp4"), "user.content_type").unwrap(),
        "application/x-test"
    );
    // Content unchanged by the metadata copy.
    assert_eq!(server.object("acme/big.mp4").unwrap(), pattern(6 * MIB, 3));
    // Other names are absent, and only user.content_type can be set.
    let e = getxattr(&t.join("big.mp4"), "user.other").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENODATA));
}

#[test]
fn foreign_content_types_survive_metadata_updates_and_same_extension_renames() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    rt.block_on(async {
        client
            .put_object()
            .bucket("media")
            .key("acme/their.bin")
            .content_type("application/x-theirs")
            .body(b"data".to_vec().into())
            .send()
            .await
            .unwrap();
    });
    let m = web_mount(&server, "");
    let t = m.path().join("acme");
    run(
        Command::new("touch")
            .args(["-d", "2020-01-01"])
            .arg(t.join("their.bin")),
        &m,
    );
    assert_eq!(
        content_type(&server, "acme/their.bin").as_deref(),
        Some("application/x-theirs")
    );
    run(
        Command::new("mv").arg(t.join("their.bin")).arg(t.join("renamed.bin")),
        &m,
    );
    assert_eq!(
        content_type(&server, "acme/renamed.bin").as_deref(),
        Some("application/x-theirs")
    );
}

fn byosfs_url(path: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_byosfs"))
        .arg("url")
        .arg(path)
        .args(extra)
        .output()
        .unwrap()
}

fn curl(url: &str) -> (String, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    let mut body = out.stdout;
    let pos = body.iter().rposition(|&b| b == b'\n').unwrap();
    let code = String::from_utf8(body.split_off(pos)).unwrap().trim().to_owned();
    (code, body)
}

#[test]
fn urls_fetch_the_bytes_expire_and_use_the_public_base() {
    if !fuse_available() {
        return;
    }
    assert!(
        which("curl") || std::env::var("CI").as_deref() != Ok("true"),
        "curl missing in CI"
    );
    let server = TestS3Server::start(&["media"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    rt.block_on(async {
        client
            .put_object()
            .bucket("media")
            .key("ro/old file.txt")
            .body(b"read only bytes".to_vec().into())
            .send()
            .await
            .unwrap();
    });
    let m = web_mount(&server, "");
    let f = m.path().join("acme/a b.jpg");
    let data = pattern(200_000, 7);
    std::fs::write(&f, &data).unwrap();

    let out = byosfs_url(&f, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(url.contains("X-Amz-Signature="), "{url}");
    if which("curl") {
        let (code, body) = curl(&url);
        assert_eq!(code, "200");
        assert!(body == data, "the URL serves the file's bytes");
    }
    // The xattr gives the same kind of URL.
    let x = getxattr(&f, "user.byosfs.url").unwrap();
    assert!(x.contains("X-Amz-Signature=") && x.contains("a%20b.jpg"), "{x}");

    // Read-only tenants get URLs.
    let out = byosfs_url(&m.path().join("ro/old file.txt"), &["--download"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ro_url = String::from_utf8(out.stdout).unwrap();
    assert!(ro_url.contains("response-content-disposition="), "{ro_url}");
    if which("curl") {
        let (code, body) = curl(ro_url.trim());
        assert_eq!(code, "200");
        assert_eq!(body, b"read only bytes");
    }

    // An expired URL is refused by the server.
    let out = byosfs_url(&f, &["--expires", "1s"]);
    assert!(out.status.success());
    let short = String::from_utf8(out.stdout).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    if which("curl") {
        let (code, _) = curl(short.trim());
        assert!(code.starts_with('4'), "expired presigned URL answered {code}");
    }
    let out = byosfs_url(&f, &["--expires", "8d"]);
    assert!(!out.status.success(), "beyond 7 days is refused");

    // A public base: base + encoded key relative to the tenant, no signature.
    std::fs::write(m.path().join("cdn/v 1.mp4"), b"x").unwrap();
    let out = byosfs_url(&m.path().join("cdn/v 1.mp4"), &[]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "https://cdn.example/files/v%201.mp4"
    );

    // Outside any tenant: clear errors.
    let out = byosfs_url(m.path(), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("directory"));
    let elsewhere = tempfile::NamedTempFile::new().unwrap();
    let out = byosfs_url(elsewhere.path(), &[]);
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("not a file inside a tenant"), "{msg}");
}

#[test]
fn a_local_tenant_without_a_base_has_no_url() {
    if !fuse_available() {
        return;
    }
    let config = r#"
[backends.disk]
type = "local"
root = "./disk"

[write]
staging_dir = "./staging"

[[tenants]]
name = "loc"
backend = "disk"
prefix = "loc/"

[[tenants]]
name = "pub"
backend = "disk"
prefix = "pub/"
public_url_base = "https://files.example/pub/"
"#;
    let m = Mount::start(config, &[]);
    std::fs::write(m.path().join("loc/a.txt"), b"x").unwrap();
    let out = byosfs_url(&m.path().join("loc/a.txt"), &[]);
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("no URL for this backend"), "{msg}");
    std::fs::write(m.path().join("pub/a.txt"), b"x").unwrap();
    let out = byosfs_url(&m.path().join("pub/a.txt"), &[]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "https://files.example/pub/a.txt"
    );
}

fn limits_mount(server: &TestS3Server) -> Mount {
    let rest = r#"
[write]
part_size = "5MiB"
memory = "32MiB"
staging_dir = "./staging"

[[tenants]]
name = "lim"
backend = "s3"
prefix = "lim/"
max_file_size = "6MiB"
denied_extensions = ["exe", ".BAT"]

[[tenants]]
name = "quo"
backend = "s3"
prefix = "quo/"
quota = "10MiB"
quota_recount = "1h"
"#;
    Mount::start_s3(&s3_config(&server.endpoint, "max_attempts = 2", rest), server)
}

/// Write `len` bytes to `path` in 1 MiB writes; the first error (write or close).
fn write_file(path: &Path, len: usize) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let chunk = pattern(MIB, 9);
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB);
        f.write_all(&chunk[..n])?;
        left -= n;
    }
    f.sync_all()
}

#[test]
fn limits_refuse_with_efbig_edquot_eperm_and_leave_nothing() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let m = limits_mount(&server);
    wait_for_log(&m, "quota usage counted");
    let lim = m.path().join("lim");
    let quo = m.path().join("quo");

    // EPERM at create, logged with the rule; nothing stored.
    let e = std::fs::File::create(lim.join("x.exe")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    assert_eq!(
        std::fs::File::create(lim.join("y.bat")).unwrap_err().raw_os_error(),
        Some(libc::EPERM)
    );
    assert!(m.log().contains("denied_extensions"), "{}", m.log());
    assert!(server.object("lim/x.exe").is_none());

    // EFBIG past max_file_size, after the first 5 MiB part went up: upload aborted.
    write_file(&lim.join("ok.bin"), 6 * MIB).unwrap();
    let e = write_file(&lim.join("big.bin"), 8 * MIB).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "{e}");
    assert!(server.object("lim/big.bin").is_none(), "nothing published");
    assert_eq!(server.object("lim/ok.bin").map(|d| d.len()), Some(6 * MIB));
    // A rename cannot make a denied name either; the source stays.
    let e = std::fs::rename(lim.join("ok.bin"), lim.join("ok.exe")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    assert!(server.object("lim/ok.exe").is_none());
    assert_eq!(server.object("lim/ok.bin").map(|d| d.len()), Some(6 * MIB));

    // EDQUOT past the quota; df shows quota and usage.
    let df = |p: &Path| {
        let s = rustix::fs::statvfs(p).unwrap();
        (s.f_blocks * s.f_frsize, (s.f_blocks - s.f_bfree) * s.f_frsize)
    };
    assert_eq!(df(&quo), (10 * MIB as u64, 0));
    write_file(&quo.join("a.bin"), 6 * MIB).unwrap();
    assert_eq!(df(&quo), (10 * MIB as u64, 6 * MIB as u64));
    let e = write_file(&quo.join("b.bin"), 6 * MIB).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}");
    assert!(server.object("quo/b.bin").is_none(), "nothing published");
    assert_eq!(
        df(&quo),
        (10 * MIB as u64, 6 * MIB as u64),
        "the refused file is not counted"
    );
    std::fs::remove_file(quo.join("a.bin")).unwrap();
    assert_eq!(df(&quo).1, 0, "a delete frees its bytes");
    write_file(&quo.join("b.bin"), 6 * MIB).unwrap();
    assert_eq!(df(&quo).1, 6 * MIB as u64);

    // s3s-fs does not implement ListMultipartUploads: the abort is seen in the log instead.
    assert!(m.log().contains("upload aborted"), "{}", m.log());
}

fn write_and_sync(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn checksum_mount(proxy: &FaultProxy, server: &TestS3Server, checksum: &str) -> Mount {
    let rest = r#"
[write]
part_size = "5MiB"
memory = "32MiB"
staging_dir = "./staging"

[[tenants]]
name = "acme"
backend = "s3"
prefix = "acme/"
"#;
    let backend = format!("payload_signing = \"never\"\nchecksum = \"{checksum}\"\nmax_attempts = 3");
    Mount::start_s3(&s3_config(&proxy.endpoint, &backend, rest), server)
}

#[test]
fn a_byte_flipped_in_transit_fails_close_and_publishes_nothing() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    // `auto` over an unsigned payload picks Content-MD5 for a custom provider; `crc32c` as set.
    for checksum in ["auto", "crc32c"] {
        let mut proxy = FaultProxy::start(&server.endpoint);
        let m = checksum_mount(&proxy, &server, checksum);
        let f = m.path().join(format!("acme/{checksum}.jpg"));
        let data = pattern(300_000, 11);
        proxy.set_plan(FaultPlan::always(Fault::FlipBody).for_methods(&["PUT"]));
        // fsync reports the commit's failure (a plain close's error std would drop).
        let e = write_and_sync(&f, &data).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{checksum}: {e}");
        assert!(proxy.faults() > 0);
        // s3s-fs moves the body into place before it compares the digest (then answers
        // BadDigest), so it keeps the corrupted bytes; S3 stores nothing. What byosfs
        // controls: the failure reaches the application and is not retried into success.
        assert!(server.object(&format!("acme/{checksum}.jpg")).is_none_or(|d| d != data));
        // The same write without the flip succeeds.
        proxy.set_plan(FaultPlan::none());
        write_and_sync(&f, &data).unwrap();
        assert!(server.object(&format!("acme/{checksum}.jpg")).unwrap() == data);
        drop(m);
        proxy.stop();
    }
}

/// Multipart uploads s3s-fs holds open (it keeps each as `.upload-<id>.json` and its parts as
/// `.upload_id-<id>.part-<n>` in its root; an abort removes them).
fn open_uploads(server: &TestS3Server) -> Vec<String> {
    std::fs::read_dir(&server.root)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".upload"))
        .collect()
}

/// s3s-fs verifies no checksum on UploadPart (and answers the MD5 of what it received as the
/// part's ETag), so a part altered in transit is caught by byosfs's comparison of that ETag
/// with the MD5 it sent: the upload is aborted, nothing is published. Then a completion whose
/// object does not have the size written (a HEAD answering one byte more) fails with EIO.
#[test]
fn a_byte_flipped_in_one_part_fails_close_and_publishes_nothing() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let mut proxy = FaultProxy::start(&server.endpoint);
    let m = checksum_mount(&proxy, &server, "md5");
    let f = m.path().join("acme/movie.mp4");
    // Three 5 MiB parts (the last 2 MiB); only part 2's body is flipped.
    let data = pattern(12 * MIB, 13);
    proxy.set_plan(
        FaultPlan::always(Fault::FlipBody)
            .for_methods(&["PUT"])
            .matching("partNumber=2&"),
    );
    let e = write_and_sync(&f, &data).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}\n{}", m.log());
    assert!(proxy.faults() > 0, "no part was flipped");
    assert!(
        m.log().contains("its ETag is not the MD5 of the bytes sent"),
        "{}",
        m.log()
    );
    assert!(server.object("acme/movie.mp4").is_none(), "published");
    // The abort follows the failed commit (and the close's retry of it); bounded wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !open_uploads(&server).is_empty() {
        assert!(Instant::now() < deadline, "uploads left: {:?}", open_uploads(&server));
        std::thread::sleep(Duration::from_millis(50));
    }

    // The same write without the flip succeeds.
    proxy.set_plan(FaultPlan::none());
    write_and_sync(&f, &data).unwrap();
    assert!(server.object("acme/movie.mp4").unwrap() == data);

    // The completed object's size is checked (HEAD with the completion's ETag as If-Match).
    proxy.set_plan(
        FaultPlan::always(Fault::InflateLength)
            .for_methods(&["HEAD"])
            .matching("if-match:"),
    );
    let g = m.path().join("acme/sized.mp4");
    let e = write_and_sync(&g, &data).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}\n{}", m.log());
    assert!(m.log().contains("the service stored"), "{}", m.log());
    proxy.set_plan(FaultPlan::none());
    drop(m);
    proxy.stop();
}

#[test]
fn a_server_that_verifies_no_checksum_takes_checksummed_uploads() {
    use byosfs::backend::s3::{S3ClientPool, UploadChecksum};
    use byosfs::backend::{Backend, ByteRange};
    let Some(moto) = common::moto::MotoServer::start(&["media"]) else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "moto missing in CI");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for sum in [UploadChecksum::Crc32c, UploadChecksum::Md5] {
            let b = S3ClientPool::new()
                .backend(&moto.s3_config("media"))
                .await
                .unwrap()
                .with_checksum(sum);
            b.put("one", bytes::Bytes::from_static(b"single put")).await.unwrap();
            assert_eq!(
                &b.get_range("one", ByteRange::new(0, 100), None).await.unwrap()[..],
                b"single put"
            );
            // A single upload part too (moto answers a completion after checksummed parts
            // with a document the SDK cannot parse, so the upload is aborted, not completed).
            let up = b.create_multipart("multi").await.unwrap();
            b.upload_part("multi", &up, 1, pattern(1000, 1).into()).await.unwrap();
            b.abort_multipart("multi", &up).await.unwrap();
        }
    });
}

/// On moto, which lists multipart uploads (s3s-fs does not): writes refused with EFBIG and
/// EDQUOT after parts of theirs went up leave no object and no multipart upload behind.
#[test]
fn refused_writes_leave_no_multipart_upload_in_the_bucket() {
    use byosfs::backend::s3::S3ClientPool;
    use byosfs::backend::Backend;
    if !fuse_available() {
        return;
    }
    let Some(moto) = common::moto::MotoServer::start(&["media"]) else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "moto missing in CI");
        return;
    };
    let rest = r#"
[write]
part_size = "5MiB"
memory = "32MiB"
staging_dir = "./staging"

[[tenants]]
name = "lim"
backend = "s3"
prefix = "lim/"
max_file_size = "6MiB"

[[tenants]]
name = "quo"
backend = "s3"
prefix = "quo/"
quota = "10MiB"
"#;
    let m = Mount::start(
        &s3_config(&moto.endpoint, "max_attempts = 2", rest),
        &[("TEST_AK", "testing"), ("TEST_SK", "testing")],
    );
    wait_for_log(&m, "quota usage counted");
    // 8 MiB past a 6 MiB limit: the first 5 MiB part is up when the write is refused.
    let e = write_file(&m.path().join("lim/big.bin"), 8 * MIB).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "{e}");
    // 12 MiB into a 10 MiB quota: two parts are up when the write is refused.
    let e = write_file(&m.path().join("quo/b.bin"), 12 * MIB).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let b = S3ClientPool::new().backend(&moto.s3_config("media")).await.unwrap();
        // The listing does show an upload left open (so an empty one below means something).
        let probe = b.create_multipart("probe").await.unwrap();
        assert_eq!(b.list_multipart_uploads("probe").await.unwrap().len(), 1);
        b.abort_multipart("probe", &probe).await.unwrap();
        // The abort follows the refusal; give it a bounded moment.
        let mut left = Vec::new();
        for _ in 0..100 {
            left = b.list_multipart_uploads("").await.unwrap();
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(left.is_empty(), "multipart uploads left: {left:?}");
        for key in ["lim/big.bin", "quo/b.bin"] {
            assert!(b.head(key).await.is_err(), "{key} was published");
        }
    });
    assert!(m.log().contains("upload aborted"), "{}", m.log());
}
