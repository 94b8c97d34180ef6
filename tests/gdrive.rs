//! Google Drive through OpenDAL against the contract server (tests/common/drive.rs): access
//! tokens expiring during large reads and writes, a revoked grant, names that repeat in a
//! folder, Google-native documents, delete as trash. The conformance suite
//! (`gdrive_all_cases` in backend_conformance.rs) and the real mount (fuse_dal.rs) cover
//! the rest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use byosfs::backend::dal::DalBackend;
use byosfs::backend::{Backend, BackendErrorKind, ByteRange, ListParams};
use bytes::Bytes;
use common::drive::DriveServer;
use sha2::{Digest, Sha256};

/// Size of the file the token test writes and reads. The issue asks for 200 MiB; 32 MiB
/// crosses as many token expiries (the reads are paced, see below) in a test of seconds.
/// `BYOSFS_GDRIVE_TOKEN_MIB=200` runs the full size.
fn token_test_size() -> usize {
    let mib: usize = std::env::var("BYOSFS_GDRIVE_TOKEN_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    mib << 20
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn sha(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

fn backend(server: &DriveServer) -> DalBackend {
    DalBackend::new(&server.config("byosfs")).unwrap()
}

/// Write, then read back in 2 MiB ranges paced over ~4 s, then overwrite and read again,
/// while access tokens live 1 s. Returns the number of 401s the server answered.
async fn write_read_through_expiries(server: &DriveServer, b: &DalBackend) {
    let data = pattern(token_test_size(), 7);
    b.put("big/one.bin", data.clone()).await.unwrap();
    let step = 2 << 20;
    let pause = Duration::from_millis((4000 * step / data.len()) as u64);
    let mut back = Vec::with_capacity(data.len());
    let mut at = 0;
    while at < data.len() {
        let end = (at + step).min(data.len());
        let got = b
            .get_range("big/one.bin", ByteRange::new(at as u64, end as u64), None)
            .await
            .unwrap();
        back.extend_from_slice(&got);
        at = end;
        tokio::time::sleep(pause).await;
    }
    assert_eq!(sha(&back), sha(&data), "read back across token expiries");
    // A second whole write after tokens have expired again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let data2 = pattern(data.len() / 2, 9);
    b.put("big/one.bin", data2.clone()).await.unwrap();
    let whole = b
        .get_range("big/one.bin", ByteRange::new(0, data2.len() as u64), None)
        .await
        .unwrap();
    assert_eq!(sha(&whole), sha(&data2));
    let _ = server;
}

/// Tokens that say how long they live: OpenDAL renews them before they expire (it keeps a
/// two-minute margin, so a one-second token is renewed before every request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_announced_short_are_renewed_before_expiry() {
    let server = DriveServer::start();
    server.set_token_lifetime(Duration::from_secs(1), Duration::from_secs(1));
    let b = backend(&server);
    write_read_through_expiries(&server, &b).await;
    let c = server.counters();
    assert_eq!(c.unauthorized, 0, "renewed before expiry: no request was refused");
    assert!(c.tokens_issued > 5, "tokens were renewed: {c:?}");
}

/// Tokens that end before their announced hour (revocation, rotation): every 401 is
/// answered by a new token and the request is repeated, so nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_ending_early_are_renewed_on_401() {
    let server = DriveServer::start();
    server.set_token_lifetime(Duration::from_secs(1), Duration::from_secs(3600));
    let b = backend(&server);
    write_read_through_expiries(&server, &b).await;
    let c = server.counters();
    assert!(c.unauthorized >= 2, "tokens did expire under the requests: {c:?}");
    assert!(c.tokens_issued >= 3, "and were renewed: {c:?}");
}

/// A revoked grant: every operation fails with ExpiredCredentials (EACCES at the mount),
/// `check` says what to do, nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_refresh_token_is_eacces() {
    let server = DriveServer::start();
    let b = backend(&server);
    b.put("a.txt", Bytes::from_static(b"hello")).await.unwrap();
    server.revoke();
    let head = b.head("a.txt").await.unwrap_err();
    assert_eq!(head.kind(), BackendErrorKind::ExpiredCredentials, "{head:?}");
    let put = b.put("b.txt", Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(put.kind(), BackendErrorKind::ExpiredCredentials, "{put:?}");
    let list = b.list(&ListParams::new("", true)).await.unwrap_err();
    assert_eq!(list.kind(), BackendErrorKind::ExpiredCredentials);
    let errno = byosfs::fs::error::Error::from(head).errno();
    assert_eq!(errno, libc::EACCES);
    let probe = byosfs::check::probe(&b).await.unwrap_err().to_string();
    assert!(probe.contains("revoked") && probe.contains("refresh token"), "{probe}");
    // A fresh backend (a remount) fails the same way at its first token request.
    let again = backend(&server).head("a.txt").await.unwrap_err();
    assert_eq!(again.kind(), BackendErrorKind::ExpiredCredentials);
}

/// Two files of one name in one folder (made by another Drive client): one is listed, the
/// newest, and reads and writes reach that one; the other is untouched, never merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_names_show_one_and_never_merge() {
    let server = DriveServer::start();
    server.create("byosfs/dup", "same.txt", "text/plain", b"older");
    tokio::time::sleep(Duration::from_millis(20)).await;
    server.create("byosfs/dup", "same.txt", "text/plain", b"newer!");
    let b = backend(&server);
    let page = b.list(&ListParams::new("dup/", true)).await.unwrap();
    let keys: Vec<_> = page.objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(keys, [("dup/same.txt", 6)], "one entry, the newest");
    let got = b.get_range("dup/same.txt", ByteRange::new(0, 100), None).await.unwrap();
    assert_eq!(&got[..], b"newer!");
    b.put("dup/same.txt", Bytes::from_static(b"rewritten")).await.unwrap();
    let got = b.get_range("dup/same.txt", ByteRange::new(0, 100), None).await.unwrap();
    assert_eq!(&got[..], b"rewritten");
    let mut contents = server.contents_named("same.txt");
    contents.sort();
    assert_eq!(
        contents,
        [b"older".to_vec(), b"rewritten".to_vec()],
        "the other file is untouched"
    );
}

/// Google-native documents have no bytes: hidden from listings and lookups, never
/// overwritten, and they keep their folder from being removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_native_documents_are_hidden() {
    let server = DriveServer::start();
    server.create("byosfs/docs", "Plan", "application/vnd.google-apps.document", b"");
    server.create("byosfs/docs", "data.csv", "text/csv", b"a,b\n");
    let b = backend(&server);
    let page = b.list(&ListParams::new("docs/", true)).await.unwrap();
    let keys: Vec<_> = page.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["docs/data.csv"]);
    assert_eq!(
        b.head("docs/Plan").await.unwrap_err().kind(),
        BackendErrorKind::NotFound
    );
    let put = b.put("docs/Plan", Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(put.kind(), BackendErrorKind::AccessDenied, "a Doc is never overwritten");
    b.delete("docs/data.csv").await.unwrap();
    let rm = b.delete("docs/").await.unwrap_err();
    assert_eq!(
        rm.kind(),
        BackendErrorKind::InvalidRequest,
        "the folder still holds the Doc"
    );
    assert!(!server.trashed().contains(&"Plan".to_owned()));
}

/// Delete moves a file to Drive's trash (recoverable there for 30 days).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_moves_to_trash() {
    let server = DriveServer::start();
    let b = backend(&server);
    b.put("gone.txt", Bytes::from_static(b"bye")).await.unwrap();
    b.delete("gone.txt").await.unwrap();
    assert_eq!(b.head("gone.txt").await.unwrap_err().kind(), BackendErrorKind::NotFound);
    assert_eq!(server.trashed(), ["gone.txt"]);
}
