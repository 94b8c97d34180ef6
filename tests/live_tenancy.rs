//! Live tenancy on a real mount over a real S3 server on loopback: tenants are added,
//! re-pointed, removed and their keys rotated by `byosfs reload` while files stay open and
//! streams run; a broken or unreachable config changes nothing unless forced; the control
//! socket answers only its owner and root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::mount::{fuse_available, pattern, sha256, which, Mount};
use common::s3server::TestS3Server;

const MIB: usize = 1024 * 1024;

fn byosfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_byosfs"))
        .args(args)
        .output()
        .expect("run byosfs")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn reload(m: &Mount, force: bool) -> Output {
    let mnt = m.path().to_str().expect("utf-8 path");
    let mut args = vec!["reload", "--mountpoint", mnt];
    if force {
        args.push("--force");
    }
    byosfs(&args)
}

fn reload_ok(m: &Mount) -> String {
    let o = reload(m, false);
    assert!(o.status.success(), "reload failed: {}\nlog:\n{}", text(&o), m.log());
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn config_path(m: &Mount) -> PathBuf {
    m.dir.path().join("byosfs.toml")
}

fn write_config(m: &Mount, config: &str) {
    std::fs::write(config_path(m), config).expect("rewrite config");
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn put(server: &TestS3Server, bucket: &str, key: &str, data: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        server
            .client()
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(data.to_vec().into())
            .send()
            .await
            .expect("put fixture");
    });
}

fn object(server: &TestS3Server, bucket: &str, key: &str) -> Option<Vec<u8>> {
    std::fs::read(server.root.join(bucket).join(key)).ok()
}

/// Three S3 backends on the same server: `s3` and `s3b` (buckets `media` and `other`) with
/// the server's keys from `secrets.ini`, and `s3a` (bucket `media`) with tenant A's own keys
/// from `a.ini`, so A's key can rotate alone. Then `tenants`.
fn config(server: &TestS3Server, tenants: &str) -> String {
    let backend = |name: &str, bucket: &str, secrets: &str| {
        format!(
            r#"
[backends.{name}]
type = "s3"
provider = "custom"
endpoint = "{}"
region = "us-east-1"
force_path_style = true
bucket = "{bucket}"
credentials = {{ file = "{secrets}" }}
request_timeout = "5s"
max_attempts = 2
"#,
            server.endpoint
        )
    };
    format!(
        r#"
[cache]
memory = "16MiB"
readahead_max = "2MiB"
{}{}{}
{tenants}
"#,
        backend("s3", "media", "secrets.ini"),
        backend("s3a", "media", "a.ini"),
        backend("s3b", "other", "secrets.ini")
    )
}

fn tenant(name: &str, backend: &str, prefix: &str) -> String {
    format!("[[tenants]]\nname = \"{name}\"\nbackend = \"{backend}\"\nprefix = \"{prefix}\"\n")
}

fn write_secrets(path: &Path, ak: &str, sk: &str) {
    std::fs::write(path, format!("access_key_id = {ak}\nsecret_access_key = {sk}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Tenant A's first key pair (the server accepts it besides its own).
const A_KEY: (&str, &str) = ("tenant-a-key-1", "tenant-a-secret-1");

/// Mount `config` with the secrets files beside it: the server's keys in `secrets.ini`, A's
/// in `a.ini`.
fn mount(server: &TestS3Server, config: &str) -> Mount {
    server.set_keys(&[(&server.access_key, &server.secret_key), A_KEY]);
    // Mount::start writes the config into a directory it creates, so the first mount reads
    // secrets from absolute paths; then the config and its secrets move next to each other
    // (the resolved keys are equal, so the first reload sees no change from that).
    let secrets = tempfile::Builder::new().prefix("secrets").tempdir().unwrap();
    let place = |dir: &Path| {
        write_secrets(&dir.join("secrets.ini"), &server.access_key, &server.secret_key);
        write_secrets(&dir.join("a.ini"), A_KEY.0, A_KEY.1);
    };
    place(secrets.path());
    let mut abs = config.to_owned();
    for f in ["secrets.ini", "a.ini"] {
        abs = abs.replace(
            &format!("{{ file = \"{f}\" }}"),
            &format!("{{ file = \"{}\" }}", secrets.path().join(f).display()),
        );
    }
    let m = Mount::start(&abs, &[]);
    place(m.dir.path());
    write_config(&m, config);
    m
}

fn read_exact_at(f: &mut std::fs::File, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).expect("read");
    buf
}

#[test]
fn tenants_join_move_rotate_and_leave_while_files_stay_open() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media", "other"]);
    let a_data = pattern(200 * MIB, 1);
    let d_data = pattern(4 * MIB, 2);
    put(&server, "media", "a/stream.bin", &a_data);
    put(&server, "media", "d/open.bin", &d_data);
    let base = [
        tenant("A", "s3a", "a/"),
        tenant("B", "s3", "b/"),
        tenant("D", "s3", "d/"),
    ]
    .concat();
    let mut m = mount(&server, &config(&server, &base));
    let mnt = m.path().to_owned();
    assert_eq!(names(&mnt), ["A", "B", "D"]);

    // Open files that must survive every reload below: a reader of A, a writer of B, D's file.
    let mut reader = std::fs::File::open(mnt.join("A/stream.bin")).unwrap();
    let mut got_a = read_exact_at(&mut reader, 8 * MIB);
    let b_data = pattern(100 * MIB, 3);
    let mut writer = std::fs::File::create(mnt.join("B/upload.bin")).unwrap();
    writer.write_all(&b_data[..16 * MIB]).unwrap();
    let mut d_file = std::fs::File::open(mnt.join("D/open.bin")).unwrap();
    let mut got_d = read_exact_at(&mut d_file, MIB);

    // Add C: it shows at the root at once.
    let with_c = [base.clone(), tenant("C", "s3", "c/")].concat();
    write_config(&m, &config(&server, &with_c));
    let out = reload_ok(&m);
    assert!(out.contains("added: C"), "{out}");
    let t = Instant::now();
    while !names(&mnt).contains(&"C".to_owned()) {
        assert!(t.elapsed() < Duration::from_secs(1), "C not listed within 1 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(mnt.join("C/hello.txt"), b"hi").unwrap();
    assert_eq!(object(&server, "media", "c/hello.txt").as_deref(), Some(&b"hi"[..]));

    // Re-point B to the other bucket: new files go there, the open writer finishes where it began.
    let moved = [
        tenant("A", "s3a", "a/"),
        tenant("B", "s3b", "b/"),
        tenant("C", "s3", "c/"),
        tenant("D", "s3", "d/"),
    ]
    .concat();
    write_config(&m, &config(&server, &moved));
    let out = reload_ok(&m);
    assert!(out.contains("re-pointed: B"), "{out}");
    std::fs::write(mnt.join("B/after.txt"), b"new place").unwrap();
    assert_eq!(
        object(&server, "other", "b/after.txt").as_deref(),
        Some(&b"new place"[..])
    );
    assert!(object(&server, "media", "b/after.txt").is_none());
    assert!(
        !names(&mnt.join("B")).contains(&"upload.bin".to_owned()),
        "B now lists the other bucket, where the open upload is not"
    );

    // Rotate A's key: the server accepts both during the overlap, then only the new one.
    // (B's upload stays on its own key: s3s-fs, unlike S3, refuses parts of a multipart upload
    // signed by another access key than the one that created it.)
    let server_key = (server.access_key.as_str(), server.secret_key.as_str());
    let a_new = ("tenant-a-key-2", "tenant-a-secret-2");
    server.set_keys(&[server_key, A_KEY, a_new]);
    write_secrets(&m.dir.path().join("a.ini"), a_new.0, a_new.1);
    let out = reload_ok(&m);
    assert!(out.contains("rotated backends: s3a"), "{out}");
    server.set_keys(&[server_key, a_new]);

    // Remove D while its file is open.
    let without_d = [
        tenant("A", "s3a", "a/"),
        tenant("B", "s3b", "b/"),
        tenant("C", "s3", "c/"),
    ]
    .concat();
    write_config(&m, &config(&server, &without_d));
    let out = reload_ok(&m);
    assert!(out.contains("removed: D"), "{out}");
    assert_eq!(names(&mnt), ["A", "B", "C"]);
    let e = std::fs::File::open(mnt.join("D/open.bin")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");

    // Everything open before finishes (A's stream signed with A's new key only).
    reader.read_to_end(&mut got_a).unwrap();
    assert_eq!(sha256(&got_a), sha256(&a_data), "A's stream across four reloads");
    d_file.read_to_end(&mut got_d).unwrap();
    assert_eq!(sha256(&got_d), sha256(&d_data), "D's open file after D was removed");
    writer.write_all(&b_data[16 * MIB..]).unwrap();
    writer.flush().unwrap();
    drop(writer);
    let uploaded = object(&server, "media", "b/upload.bin").expect("B's upload committed where it started");
    assert_eq!(sha256(&uploaded), sha256(&b_data));
    assert!(object(&server, "other", "b/upload.bin").is_none());
    // New opens of A work with the new key (the old one is refused by now).
    let mut again = std::fs::File::open(mnt.join("A/stream.bin")).unwrap();
    again.seek(SeekFrom::Start(20 * MIB as u64)).unwrap();
    assert_eq!(read_exact_at(&mut again, 4096), a_data[20 * MIB..20 * MIB + 4096]);
    drop((again, reader, d_file));
    let log = m.unmount();
    assert!(!log.contains("ERROR"), "{log}");
    assert!(!log.contains("Failed to umount"), "clean unmount warns nothing:\n{log}");
}

#[test]
fn a_reload_that_fails_changes_nothing_unless_forced() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    put(&server, "media", "a/f.txt", b"data");
    let good = config(&server, &tenant("A", "s3", "a/"));
    let m = mount(&server, &good);
    let mnt = m.path().to_owned();

    // A config that does not validate: file:line in the message, exit non-zero.
    write_config(&m, &format!("{good}\n[[tenants]]\nname = \"E\"\nbackend = \"nope\"\n"));
    let o = reload(&m, false);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("byosfs.toml:") && err.contains("nope"), "{err}");
    assert_eq!(names(&mnt), ["A"]);

    // A new backend whose bucket does not exist: the probe fails, nothing changes.
    let broken = format!(
        "{}\n[backends.gone]\ntype = \"s3\"\nprovider = \"custom\"\nendpoint = \"{}\"\nforce_path_style = true\n\
         bucket = \"missing\"\ncredentials = {{ file = \"secrets.ini\" }}\nmax_attempts = 1\n{}",
        good,
        server.endpoint,
        tenant("E", "gone", "e/")
    );
    write_config(&m, &broken);
    let o = reload(&m, false);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("tenant E") && err.contains("list failed"), "{err}");
    assert_eq!(names(&mnt), ["A"]);
    assert_eq!(std::fs::read(mnt.join("A/f.txt")).unwrap(), b"data");

    // --force applies it; E is there, and unreachable.
    let o = reload(&m, true);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("added: E") && out.contains("unreachable (forced): tenant E"),
        "{out}"
    );
    assert_eq!(names(&mnt), ["A", "E"]);
    assert_eq!(std::fs::read(mnt.join("A/f.txt")).unwrap(), b"data");

    // SIGHUP reloads too (systemd's ExecReload may send it).
    write_config(&m, &format!("{broken}\n{}", tenant("F", "s3", "f/")));
    let hup = Command::new("kill")
        .args(["-HUP", &m.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let t = Instant::now();
    while !names(&mnt).contains(&"F".to_owned()) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "SIGHUP did not add F:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(m.log().contains("config reloaded"), "{}", m.log());
}

#[test]
fn the_control_socket_answers_only_its_owner_and_root() {
    if !fuse_available() || !common::mount::which("setpriv") {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let m = mount(&server, &config(&server, &tenant("A", "s3", "a/")));
    let mnt = m.path().to_str().unwrap().to_owned();
    let o = byosfs(&["status", "--mountpoint", &mnt, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["tenants"][0]["name"], "A");
    let socket = status["control_socket"]
        .as_str()
        .expect("socket path in the status")
        .to_owned();
    let socket = Path::new(&socket);
    assert_eq!(std::fs::metadata(socket).unwrap().permissions().mode() & 0o777, 0o600);
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_byosfs"))
            .args(args)
            .output()
            .expect("setpriv")
    };
    let sock = socket.to_str().unwrap();
    // The file's mode keeps other users out...
    let o = as_nobody(&["status", "--socket", sock]);
    assert!(!o.status.success(), "{}", text(&o));
    // ...and if the path is made reachable by mistake, the peer check still does.
    let dir = socket.parent().unwrap();
    let dir_mode = std::fs::metadata(dir).unwrap().permissions().mode();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = as_nobody(&["reload", "--socket", sock]);
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode)).unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("permission denied: uid 65534"),
        "{}",
        text(&o)
    );
    assert!(m.log().contains("refused a connection from another user"));
}

fn status_json(m: &Mount) -> serde_json::Value {
    let o = byosfs(&["status", "--mountpoint", m.path().to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn counter(status: &serde_json::Value, tenant: &str, field: &str) -> u64 {
    let t = status["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == tenant)
        .unwrap_or_else(|| panic!("{tenant} in {status}"));
    t[field].as_u64().unwrap_or_else(|| panic!("{field} in {t}"))
}

/// Poll the status until `tenant`'s `field` reaches `at_least` (bounded: 10 s).
fn wait_counter(m: &Mount, tenant: &str, field: &str, at_least: u64) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let s = status_json(m);
        if counter(&s, tenant, field) >= at_least {
            return s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{field} of {tenant} stuck below {at_least}: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn status_shows_an_upload_advancing_and_counts_each_tenants_traffic() {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let m = mount(
        &server,
        &config(&server, &[tenant("A", "s3", "a/"), tenant("Q", "s3", "q/")].concat()),
    );
    let data = pattern(24 * MIB, 9);
    let mut w = std::fs::File::create(m.path().join("A/up.bin")).unwrap();
    w.write_all(&data[..9 * MIB]).unwrap();
    // The first 8 MiB part goes out while the file is open: the upload shows, bytes advance.
    let first = wait_counter(&m, "A", "bytes_uploaded", 8 * MIB as u64);
    let upload = |s: &serde_json::Value| -> serde_json::Value {
        s["uploads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["tenant"] == "A" && u["key"] == "up.bin")
            .unwrap_or_else(|| panic!("A/up.bin not listed: {s}"))
            .clone()
    };
    // The upload's own progress: bytes written, parts done of the parts the file has now
    // (recorded just after the tenant's counter, when the part's request returns).
    let t = Instant::now();
    let u1 = loop {
        let u = upload(&status_json(&m));
        if u["bytes_uploaded"].as_u64() >= Some(8 * MIB as u64) {
            break u;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "upload progress stuck: {u}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(u1["bytes_written"], 9 * MIB as u64, "{u1}");
    assert_eq!(u1["bytes_uploaded"], 8 * MIB as u64, "{u1}");
    assert_eq!(
        (u1["parts_done"].as_u64(), u1["parts_total"].as_u64()),
        (Some(1), Some(2)),
        "{u1}"
    );
    w.write_all(&data[9 * MIB..]).unwrap();
    let second = wait_counter(&m, "A", "bytes_uploaded", 16 * MIB as u64);
    assert!(counter(&second, "A", "bytes_uploaded") > counter(&first, "A", "bytes_uploaded"));
    let u2 = upload(&second);
    assert!(
        u2["bytes_uploaded"].as_u64() > u1["bytes_uploaded"].as_u64(),
        "{u1} then {u2}"
    );
    assert_eq!(u2["parts_total"], 3, "{u2}");
    drop(w);
    // The session ends with the kernel's release, just after close() returned.
    let t = Instant::now();
    let done = loop {
        let s = status_json(&m);
        if s["uploads"].as_array().unwrap().is_empty() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "upload still listed after close: {s}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(counter(&done, "A", "bytes_uploaded"), data.len() as u64, "{done}");

    // A known read of an object the page cache has never seen (the one written above is
    // there, and its reads never reach byosfs): every byte served once, fetched once plus
    // little read-ahead.
    put(&server, "media", "a/read.bin", &data);
    let before = counter(&done, "A", "bytes_fetched");
    let got = std::fs::read(m.path().join("A/read.bin")).unwrap();
    assert_eq!(sha256(&got), sha256(&data));
    let after = status_json(&m);
    assert!(counter(&after, "A", "bytes_served") >= data.len() as u64, "{after}");
    let fetched = counter(&after, "A", "bytes_fetched") - before;
    assert!(
        fetched >= data.len() as u64 && fetched <= data.len() as u64 * 11 / 10,
        "fetched {fetched} for a {} byte read",
        data.len()
    );
    // The other tenant saw none of it.
    assert_eq!(counter(&after, "Q", "bytes_served"), 0);
    assert_eq!(counter(&after, "Q", "bytes_uploaded"), 0);
    assert_eq!(counter(&after, "A", "failures"), 0);
    // Rates, hit ratio and budgets are reported (rates once the mount has two samples).
    let t = &after["tenants"].as_array().unwrap()[0];
    assert!(
        t["cache_hit_ratio"].as_f64().is_some_and(|r| (0.0..=1.0).contains(&r)),
        "{t}"
    );
    std::thread::sleep(Duration::from_millis(2100));
    let later = status_json(&m);
    assert!(later["tenants"][0]["requests_per_s"].as_f64().is_some(), "{later}");
    assert_eq!(later["budgets"]["write_limit"], 256 * MIB as u64, "{later}");
    assert!(later["budgets"]["staging_limit"].as_u64() > Some(0), "{later}");
}

/// `byosfs url` signs with the tenant's current credentials: after a reload rotated the
/// secret (same key id), a new URL works and one signed with the old secret is refused by
/// the server (s3s-fs checks signatures, unlike moto).
#[test]
fn urls_are_signed_with_the_rotated_secret() {
    if !fuse_available() {
        return;
    }
    if !which("curl") {
        eprintln!("SKIP: curl missing");
        assert!(std::env::var("CI").is_err(), "curl is required in CI");
        return;
    }
    let curl = |url: &str| -> (String, Vec<u8>) {
        let out = Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", url])
            .output()
            .unwrap();
        let mut body = out.stdout;
        let pos = body.iter().rposition(|&b| b == b'\n').unwrap();
        let code = String::from_utf8(body.split_off(pos)).unwrap().trim().to_owned();
        (code, body)
    };
    let server = TestS3Server::start(&["media", "other"]);
    let m = mount(&server, &config(&server, &tenant("A", "s3a", "a/")));
    let f = m.path().join("A/v.txt");
    std::fs::write(&f, b"signed bytes").unwrap();
    let url = |f: &Path| {
        let o = byosfs(&["url", f.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    let old_url = url(&f);
    assert_eq!(curl(&old_url), ("200".to_owned(), b"signed bytes".to_vec()));

    let rotated = (A_KEY.0, "tenant-a-secret-2");
    server.set_keys(&[(&server.access_key, &server.secret_key), rotated]);
    write_secrets(&m.dir.path().join("a.ini"), rotated.0, rotated.1);
    let out = reload_ok(&m);
    assert!(out.contains("rotated backends: s3a"), "{out}");
    // The server checks the secret: the URL signed with the old one is refused now.
    assert_eq!(curl(&old_url).0, "403", "the server must reject a wrong secret");
    let new_url = url(&f);
    assert_eq!(
        curl(&new_url),
        ("200".to_owned(), b"signed bytes".to_vec()),
        "signed with the rotated secret: {new_url}"
    );
    // The xattr gives a URL signed the same way.
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::getxattr(&f, "user.byosfs.url", &mut buf).unwrap();
    assert_eq!(curl(std::str::from_utf8(&buf[..n]).unwrap()).0, "200");
}
