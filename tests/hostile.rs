//! A misbehaving S3 endpoint (`common/hostile.rs`) cannot make byosfs loop, read without
//! bound or wait forever (issue 24, item 2): each misbehaviour ends as a clear error within
//! the request deadline. Backend-level cases drive `S3Backend` directly; mount cases show the
//! user's view (EIO, a log line naming the tenant) while a sane tenant keeps working.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use byosfs::backend::s3::{S3BackendConfig, S3ClientPool, S3Credentials};
use byosfs::backend::{Backend, BackendErrorKind, ByteRange, ListParams};
use byosfs::secret::Secret;
use common::hostile::{HostileServer, Misbehaviour, TRICKLE_BYTES};
use common::mount::{fuse_available, Mount};

fn config(endpoint: &str, request_timeout: Duration) -> S3BackendConfig {
    S3BackendConfig {
        endpoint: Some(endpoint.to_owned()),
        region: "us-east-1".to_owned(),
        force_path_style: true,
        bucket: "media".to_owned(),
        credentials: S3Credentials::Static {
            access_key_id: "AKIDHOSTILE".to_owned(),
            secret_access_key: Secret::new("secret".to_owned()),
            session_token: None,
        },
        connect_timeout: Duration::from_secs(1),
        request_timeout,
        max_attempts: 1,
        sign_payload: false,
    }
}

async fn backend(server: &HostileServer, request_timeout: Duration) -> impl Backend {
    S3ClientPool::new()
        .backend(&config(&server.endpoint, request_timeout))
        .await
        .unwrap()
}

/// A server that ignores `Range` and sends a whole 64 MiB object for a 4 KiB read: stopped
/// at the first piece past 4 KiB (or at the headers), never read into memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_longer_than_the_range_is_refused_without_reading_it() {
    let server = HostileServer::start(Misbehaviour::GetIgnoresRange { len: 64 << 20 });
    let b = backend(&server, Duration::from_secs(5)).await;
    for stream in [false, true] {
        let t = Instant::now();
        let res = if stream {
            match b.get_range_stream("k", ByteRange::new(0, 4096), None).await {
                Ok(mut s) => {
                    use futures::StreamExt;
                    let mut total = 0usize;
                    let mut err = None;
                    while let Some(p) = s.next().await {
                        match p {
                            Ok(p) => total += p.len(),
                            Err(e) => {
                                err = Some(e);
                                break;
                            }
                        }
                    }
                    assert!(total <= 4096, "{total} bytes passed on");
                    err.map_or(Ok(()), Err)
                }
                Err(e) => Err(e),
            }
        } else {
            b.get_range("k", ByteRange::new(0, 4096), None).await.map(|_| ())
        };
        let err = res.unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::Protocol, "{err}");
        assert!(err.to_string().contains("ignored Range"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }
}

/// Headers, then a byte every 300 ms: never idle for the 1 s request timeout, so only the
/// whole-body deadline (request timeout + length at 32 KiB/s) ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_ends_at_its_deadline() {
    let server = HostileServer::start(Misbehaviour::GetTrickles {
        every: Duration::from_millis(300),
    });
    let b = backend(&server, Duration::from_secs(1)).await;
    let t = Instant::now();
    let err = b.get_range("k", ByteRange::new(0, 4096), None).await.unwrap_err();
    let took = t.elapsed();
    assert_eq!(err.kind(), BackendErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("too slow"), "{err}");
    // The trickle would take TRICKLE_BYTES * 300 ms to finish.
    assert!(TRICKLE_BYTES as u64 * 300 > 10_000);
    assert!(took < Duration::from_secs(4), "{took:?}");
}

/// A 200 whose body is not XML is an error, not a panic or an empty directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_listing_is_an_error() {
    let server = HostileServer::start(Misbehaviour::ListGarbage);
    let b = backend(&server, Duration::from_secs(2)).await;
    let t = Instant::now();
    let err = b.list(&ListParams::new("", true)).await.unwrap_err();
    assert_ne!(err.kind(), BackendErrorKind::NotFound, "{err}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

fn mount_with(hostile: &HostileServer) -> Mount {
    let cfg = format!(
        r#"
[backends.hostile]
type = "s3"
provider = "custom"
endpoint = "{}"
region = "us-east-1"
force_path_style = true
bucket = "media"
credentials = {{ env = {{ access_key_id = "TEST_AK", secret_access_key = "TEST_SK" }} }}
request_timeout = "2s"
connect_timeout = "1s"
max_attempts = 1

[backends.disk]
type = "local"
root = "./disk"

[[tenants]]
name = "evil"
backend = "hostile"
prefix = "evil/"

[[tenants]]
name = "good"
backend = "disk"
"#,
        hostile.endpoint
    );
    Mount::start(&cfg, &[("TEST_AK", "AKIDHOSTILE"), ("TEST_SK", "secret")])
}

/// `ls` of a tenant whose server loops its listing (the same token again, or empty
/// "truncated" pages forever): EIO after a bounded number of pages, a log line naming the
/// tenant, and the other tenant unaffected.
#[test]
fn a_looping_listing_ends_with_eio_naming_the_tenant() {
    if !fuse_available() {
        return;
    }
    for (how, max_lists, says) in [
        (Misbehaviour::ListRepeatsToken, 5, "loops"),
        (Misbehaviour::ListEmptyForever, 110, "empty pages"),
    ] {
        let server = HostileServer::start(how);
        let m = mount_with(&server);
        std::fs::create_dir_all(m.dir.path().join("disk")).unwrap();
        let t = Instant::now();
        let out = Command::new("ls").arg(m.path().join("evil")).output().unwrap();
        assert!(!out.status.success(), "{how:?}: ls succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("Input/output error"), "{how:?}: {stderr}");
        assert!(t.elapsed() < Duration::from_secs(20), "{how:?}: {:?}", t.elapsed());
        assert!(server.lists() <= max_lists, "{how:?}: {} listings", server.lists());
        std::fs::write(m.path().join("good/ok.txt"), b"fine").unwrap();
        assert_eq!(std::fs::read(m.path().join("good/ok.txt")).unwrap(), b"fine");
        let log = m.log();
        assert!(
            log.lines().any(|l| l.contains("\"evil\"") && l.contains(says)),
            "{how:?}: no log line naming the tenant:\n{log}"
        );
    }
}
