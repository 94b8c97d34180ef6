//! The disk block cache on real mounts over a real S3 server on loopback: a file read once is
//! read again after a remount without a single GET; an object replaced at the server is
//! served new; damaged cache files are detected and refetched; the directory stays under its
//! cap while a file larger than the cap is read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::mount::{fuse_available, pattern, s3_config, sha256, sha256_file, Mount};
use common::s3server::TestS3Server;

const MIB: usize = 1 << 20;
/// Cap of the test's cache: room for 19 one-MiB blocks with their headers.
const CAP: u64 = 20 * MIB as u64;

fn mount(server: &TestS3Server, disk_dir: &Path) -> Mount {
    let rest = format!(
        r#"
[cache]
memory = "16MiB"
readahead_max = "8MiB"
block_size = "1MiB"
disk_dir = "{}"
disk_size = "20MiB"

[write]
staging_dir = "./staging"

[[tenants]]
name = "acme"
backend = "s3"
prefix = "acme/"
"#,
        disk_dir.display()
    );
    let config = s3_config(&server.endpoint, "request_timeout = \"10s\"", &rest);
    Mount::start_s3(&config, server)
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
            .unwrap();
    });
}

/// Bytes of the cache directory: apparent sizes and allocated blocks, whichever is larger.
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let (mut apparent, mut allocated) = (0, 0);
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        apparent += m.len();
        allocated += m.blocks() * 512;
    }
    apparent.max(allocated)
}

fn block_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().len() == 32)
        .collect()
}

#[test]
fn a_remount_reads_from_disk_and_never_serves_stale_or_damaged_blocks() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let cache_dir = tempfile::tempdir().unwrap();
    let disk = cache_dir.path().join("blocks");
    let big = pattern(30 * MIB, 7);
    let video = pattern(8 * MIB + 12345, 1);
    put(&server, "acme/big.bin", big.clone());
    put(&server, "acme/video.bin", video.clone());

    // First mount: a file larger than the cap, then the video (whose blocks are then the
    // newest, so the cap evicts the big file's instead).
    let mut m = mount(&server, &disk);
    assert_eq!(sha256_file(&m.path().join("acme/big.bin")), sha256(&big));
    assert!(
        dir_bytes(&disk) <= CAP,
        "{} bytes in a {CAP}-byte cache",
        dir_bytes(&disk)
    );
    assert_eq!(sha256_file(&m.path().join("acme/video.bin")), sha256(&video));
    m.unmount();
    assert!(
        dir_bytes(&disk) <= CAP,
        "{} bytes in a {CAP}-byte cache",
        dir_bytes(&disk)
    );
    assert!(block_files(&disk).len() >= 9, "the video's 9 blocks are on disk");

    // Second mount, same directory: the video comes from disk, not a single GET.
    let mut m = mount(&server, &disk);
    let gets = server.get_requests();
    assert_eq!(sha256_file(&m.path().join("acme/video.bin")), sha256(&video));
    assert_eq!(server.get_requests() - gets, 0, "GETs after a remount:\n{}", m.log());

    m.unmount();

    // Replaced at the server, same size: only the ETag tells. The next mount finds the old
    // version's blocks on disk under the old ETag and must not serve them.
    let new_video = pattern(video.len(), 2);
    put(&server, "acme/video.bin", new_video.clone());
    let mut m = mount(&server, &disk);
    let gets = server.get_requests();
    assert_eq!(sha256_file(&m.path().join("acme/video.bin")), sha256(&new_video));
    assert!(server.get_requests() > gets, "the new version was fetched");
    m.unmount();

    // Damage every cache file: each is detected, dropped and refetched; right bytes.
    for f in block_files(&disk) {
        let mut bytes = std::fs::read(&f).unwrap();
        let at = bytes.len() - 1000;
        bytes[at] ^= 0xff;
        std::fs::write(&f, &bytes).unwrap();
    }
    let mut m = mount(&server, &disk);
    let gets = server.get_requests();
    assert_eq!(sha256_file(&m.path().join("acme/video.bin")), sha256(&new_video));
    assert!(server.get_requests() > gets, "damaged blocks were refetched");
    let log = m.unmount();
    assert!(log.contains("damaged file dropped"), "{log}");

    // And the refetched blocks were cached again.
    let mut m = mount(&server, &disk);
    let gets = server.get_requests();
    assert_eq!(sha256_file(&m.path().join("acme/video.bin")), sha256(&new_video));
    assert_eq!(server.get_requests() - gets, 0, "GETs after the repair:\n{}", m.log());
    m.unmount();
    assert!(dir_bytes(&disk) <= CAP);
}
