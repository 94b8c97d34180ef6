//! Tenant isolation and local-user permissions through a REAL mount (issue 4), plus the
//! binary's refusal of hostile configs.
//!
//! - Hostile object keys (`..`, `.`, `//`, the prefix itself, control characters, names over
//!   255 bytes, a tenant prefix that is a string prefix of another's) are served by moto:
//!   s3s-fs stores objects as files and would resolve `..` on its own disk, so it cannot hold
//!   these keys verbatim. moto missing: skip loudly, or fail under `CI=true`.
//! - Local users: with `allow_other`, a tenant owned by uid 4242 with mode 0700 gives
//!   `EACCES` to uid 65534 and is readable by uid 4242 (needs root to switch uids).
//! - Bad configs: `byosfs check` / `byosfs mount` exit non-zero and name the problem.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use byosfs::backend::s3::{S3Backend, S3ClientPool};
use byosfs::backend::{Backend, ListParams};
use bytes::Bytes;
use common::moto::MotoServer;
use common::mount::{fuse_available, Mount};

const BUCKET: &str = "media";

/// 256 bytes: one more than NAME_MAX, so no directory entry can carry it.
fn long_name() -> String {
    "L".repeat(256)
}

/// Start moto, or skip loudly (fail under `CI=true`, where moto is installed by
/// scripts/install-deps.sh).
fn moto_or_skip(test: &str) -> Option<MotoServer> {
    let moto = MotoServer::start(&[BUCKET]);
    if moto.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but moto is unavailable (pip install 'moto[server]'): {test} cannot be skipped in CI"
        );
        eprintln!("SKIPPING {test}: moto not available (pip install 'moto[server]')");
    }
    moto
}

fn config(endpoint: &str) -> String {
    // Prefixes written without the trailing '/' on purpose: "acme" is a string prefix of
    // "acme2", and the config must still keep them apart.
    format!(
        r#"
[cache]
memory = "64MiB"
metadata_ttl = "1s"

[write]
staging_dir = "./staging"

[backends.s3]
type = "s3"
provider = "custom"
endpoint = "{endpoint}"
region = "us-east-1"
force_path_style = true
bucket = "{BUCKET}"
credentials = {{ env = {{ access_key_id = "TEST_AK", secret_access_key = "TEST_SK" }} }}
request_timeout = "10s"
connect_timeout = "2s"

[[tenants]]
name = "acme"
backend = "s3"
prefix = "acme"

[[tenants]]
name = "acme2"
backend = "s3"
prefix = "acme2"
"#
    )
}

async fn raw_backend(moto: &MotoServer) -> S3Backend {
    S3ClientPool::new().backend(&moto.s3_config(BUCKET)).await.unwrap()
}

/// Every key in the bucket, paging through.
async fn all_keys(b: &S3Backend) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut token = None;
    for _ in 0..100 {
        let page = b
            .list(&ListParams::new("", false).with_continuation(token.take()))
            .await
            .unwrap();
        keys.extend(page.objects.into_iter().map(|o| o.key));
        match page.next {
            Some(t) => token = Some(t),
            None => return keys,
        }
    }
    panic!("listing did not end after 100 pages");
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Hostile keys: (key, content). The content names the key so a read that resolved to the
/// wrong object is caught.
fn hostile_keys() -> Vec<(String, String)> {
    let long = long_name();
    [
        // Escapes and normaliser bait: none may show up or be reachable in either tenant.
        "acme/../acme2/x".to_owned(),
        "acme/a/../../b".to_owned(),
        "acme/./c".to_owned(),
        "acme//d".to_owned(),
        "acme/".to_owned(),
        "acme".to_owned(),
        format!("acme/{long}"),
        format!("acme/dir/{long}/inner"),
        // Legitimate but odd names: shown verbatim, readable.
        "acme/ctl\rreturn".to_owned(),
        "acme/ctl\ttab".to_owned(),
        "acme/ctl\u{1}soh".to_owned(),
        "acme/ok.txt".to_owned(),
        "acme/dir/inner.txt".to_owned(),
        // Refused by the prefix guard (gateways may read `\\` as `/`), so never shown.
        "acme/back\\slash".to_owned(),
        // The neighbour whose prefix starts with ours, and keys outside every tenant.
        "acme2/x".to_owned(),
        "acme2/secret.txt".to_owned(),
        "acme2/sub/y".to_owned(),
        "acme2x/notmine".to_owned(),
        "acmefoo".to_owned(),
        "b".to_owned(),
        "c".to_owned(),
    ]
    .into_iter()
    .map(|k| {
        let content = format!("content of {k:?}");
        (k, content)
    })
    .collect()
}

fn content_of(key: &str) -> Vec<u8> {
    format!("content of {key:?}").into_bytes()
}

#[test]
fn hostile_keys_stay_inside_their_tenant() {
    if !fuse_available() {
        return;
    }
    let Some(moto) = moto_or_skip("hostile_keys_stay_inside_their_tenant") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let raw = rt.block_on(raw_backend(&moto));
    let seeded = hostile_keys();
    rt.block_on(async {
        for (k, v) in &seeded {
            raw.put(k, Bytes::from(v.clone().into_bytes())).await.unwrap();
        }
    });
    let before = rt.block_on(all_keys(&raw));
    // The server must hold the keys verbatim, or this test would prove nothing.
    let want: BTreeSet<String> = seeded.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(before, want, "moto did not store the hostile keys verbatim");

    let m = Mount::start(
        &config(&moto.endpoint),
        &[("TEST_AK", "testing"), ("TEST_SK", "testing")],
    );
    let root = m.path();
    assert_eq!(names(root), set(&["acme", "acme2"]));

    // acme sees its own legitimate keys; `a` exists only because `acme/a/../../b` does, and it
    // is empty because its only child segment is `..`.
    assert_eq!(
        names(&root.join("acme")),
        set(&["a", "ctl\rreturn", "ctl\ttab", "ctl\u{1}soh", "dir", "ok.txt"]),
        "{}",
        m.log()
    );
    assert_eq!(names(&root.join("acme/a")), BTreeSet::new());
    assert_eq!(names(&root.join("acme/dir")), set(&["inner.txt"]));
    for name in ["ctl\rreturn", "ctl\ttab", "ctl\u{1}soh", "ok.txt", "dir/inner.txt"] {
        let got = std::fs::read(root.join("acme").join(name)).unwrap_or_else(|e| panic!("read {name:?}: {e}"));
        assert_eq!(got, content_of(&format!("acme/{name}")), "{name:?}");
    }
    // acme2 sees exactly its own keys; its `x` is acme2/x, not acme/../acme2/x.
    assert_eq!(names(&root.join("acme2")), set(&["secret.txt", "sub", "x"]));
    assert_eq!(std::fs::read(root.join("acme2/x")).unwrap(), content_of("acme2/x"));
    assert_eq!(names(&root.join("acme2/sub")), set(&["y"]));

    // Names that would reach hostile keys are refused before any request.
    let long = long_name();
    let err = std::fs::metadata(root.join("acme").join(&long)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG), "{err}");
    for p in ["acme/c", "acme/d", "acme/b", "acme/x", "b", "c", "acmefoo", "acme2x"] {
        let err = std::fs::metadata(root.join(p)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{p}: {err}");
    }

    // ---- Writes: every name the kernel passes lands under the tenant's own prefix. ----
    let acme = root.join("acme");
    let mut expected_new = BTreeSet::new();
    let odd_names = [
        "new.txt".to_owned(),
        "..dots".to_owned(),
        "...".to_owned(),
        "%2e%2e".to_owned(),
        "a%2F..%2Fb".to_owned(),
        " lead space".to_owned(),
        "ctl\u{2}stx".to_owned(),
        "x".repeat(255),
    ];
    for name in &odd_names {
        std::fs::write(acme.join(name), name.as_bytes()).unwrap_or_else(|e| panic!("write {name:?}: {e}"));
        expected_new.insert(format!("acme/{name}"));
    }
    std::fs::create_dir(acme.join("newdir")).unwrap();
    std::fs::write(acme.join("newdir/f"), b"f").unwrap();
    expected_new.insert("acme/newdir/f".to_owned());
    // `..` in a path is resolved by the kernel inside the mount: this is acme2's own directory,
    // reached legitimately, so the key must be acme2/w.txt and never "acme/../acme2/w.txt".
    std::fs::write(acme.join("../acme2/w.txt"), b"w").unwrap();
    expected_new.insert("acme2/w.txt".to_owned());

    // Refusals: too long, cross-tenant rename, files at the mount root.
    let err = std::fs::write(acme.join("back\\slash"), b"no").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    let err = std::fs::write(acme.join(&long), b"no").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG), "{err}");
    let err = std::fs::rename(acme.join("new.txt"), root.join("acme2/stolen.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{err}");
    assert!(std::fs::write(root.join("rootfile"), b"no").is_err());
    assert!(std::fs::create_dir(root.join("rootdir")).is_err());
    assert!(std::fs::symlink_metadata(root.join("rootfile")).is_err());

    // What the tenant wrote reads back, and acme2 did not see any of it.
    for name in &odd_names {
        assert_eq!(std::fs::read(acme.join(name)).unwrap(), name.as_bytes(), "{name:?}");
    }
    assert_eq!(names(&root.join("acme2")), set(&["secret.txt", "sub", "w.txt", "x"]));

    let log = m.log();
    drop(m);
    let after = rt.block_on(all_keys(&raw));
    let created: BTreeSet<String> = after.difference(&before).cloned().collect();
    // newdir may or may not leave a `acme/newdir/` marker; anything else is a leak.
    let created_files: BTreeSet<String> = created.iter().filter(|k| *k != "acme/newdir/").cloned().collect();
    assert_eq!(created_files, expected_new, "log:\n{log}");
    assert!(created.iter().all(|k| k.starts_with("acme/") || k == "acme2/w.txt"));
    // Nothing seeded was modified or deleted.
    rt.block_on(async {
        for (k, v) in &seeded {
            let meta = raw.head(k).await.unwrap_or_else(|e| panic!("{k:?} vanished: {e}"));
            assert_eq!(meta.size, v.len() as u64, "{k:?} changed");
        }
    });
}

// ---- local users ----

fn setpriv(uid: u32, args: &[&str]) -> Output {
    let id = uid.to_string();
    Command::new("setpriv")
        .args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"])
        .args(args)
        .output()
        .expect("run setpriv")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn other_local_user_gets_eacces() {
    if !fuse_available() {
        return;
    }
    if !is_root() || !common::mount::which("setpriv") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but this test needs root and setpriv (util-linux) to act as other uids"
        );
        eprintln!("SKIPPING other_local_user_gets_eacces: needs root and setpriv to switch uids");
        return;
    }
    let config = r#"
[mount]
allow_other = true

[backends.local]
type = "local"
root = "./data"

[defaults]
backend = "local"

[[tenants]]
name = "private"
uid = 4242
gid = 4242
mode = "0700"

[[tenants]]
name = "public"
uid = 4242
gid = 4242
mode = "0755"
"#;
    let m = Mount::start(config, &[]);
    // tempfile makes its directory 0700; open the path to the mount point for other users so
    // that only the tenant's own mode decides.
    std::fs::set_permissions(m.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = m.path();
    std::fs::write(root.join("private/doc.txt"), b"owner only").unwrap();
    std::fs::write(root.join("public/doc.txt"), b"everyone").unwrap();

    let meta = std::fs::metadata(root.join("private")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (4242, 4242, 0o700));

    let p = |rel: &str| root.join(rel).to_str().unwrap().to_owned();
    // Another user: EACCES on the private tenant, for listing and for reading a known path.
    let out = setpriv(65534, &["ls", &p("private")]);
    assert!(!out.status.success(), "uid 65534 could list a 0700 tenant");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = setpriv(65534, &["cat", &p("private/doc.txt")]);
    assert!(!out.status.success(), "uid 65534 could read into a 0700 tenant");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    let out = setpriv(65534, &["touch", &p("private/intruder")]);
    assert!(!out.status.success());
    // ...but the same user reaches a 0755 tenant, so the refusal above is the tenant's mode.
    let out = setpriv(65534, &["cat", &p("public/doc.txt")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"everyone");
    // ...and cannot write there (files are 0644-like, directories 0755, owned by 4242).
    let out = setpriv(65534, &["touch", &p("public/intruder")]);
    assert!(!out.status.success());

    // The owner can list and read its tenant.
    let out = setpriv(4242, &["ls", &p("private")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "doc.txt");
    let out = setpriv(4242, &["cat", &p("private/doc.txt")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"owner only");
    assert!(std::fs::symlink_metadata(root.join("private/intruder")).is_err());
    assert!(std::fs::symlink_metadata(root.join("public/intruder")).is_err());
}

// ---- hostile configs through the real binary ----

const GOOD_BACKENDS: &str = r#"
[backends.s3]
type = "s3"
provider = "custom"
endpoint = "http://127.0.0.1:9"
bucket = "media"
credentials = { env = { access_key_id = "TEST_AK", secret_access_key = "TEST_SK" } }
"#;

/// Run `byosfs <args> --config FILE` on `config`; (exit code, stderr).
fn run_with_config(config: &str, mount: bool) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, config).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_byosfs"));
    if mount {
        cmd.arg("mount").arg("--config").arg(&cfg).arg(&mnt);
    } else {
        cmd.arg("check").arg("--config").arg(&cfg);
    }
    let out = cmd
        .env("TEST_AK", "AKIDEXAMPLE")
        .env("TEST_SK", "super-secret-value-123")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!common::mount::is_mounted(&mnt), "a bad config was mounted");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("super-secret-value-123"), "secret in stderr: {stderr}");
    (out.status.code(), stderr)
}

#[test_case::test_case(
    "[mount]\nallow_othr = true\n[[tenants]]\nname = \"acme\"\nbackend = \"s3\"\n",
    &["allow_othr", "unknown"] ; "unknown key")]
#[test_case::test_case(
    "[mount]\nthreads = \"four\"\n[[tenants]]\nname = \"acme\"\nbackend = \"s3\"\n",
    &["threads", "invalid type"] ; "wrong type")]
#[test_case::test_case(
    "[[tenants]]\nname = \"acme\"\nbackend = \"s3\"\nprefix = \"a/\"\n[[tenants]]\nname = \"acme\"\nbackend = \"s3\"\nprefix = \"b/\"\n",
    &["tenants[1].name", "duplicate", "acme"] ; "duplicate tenant")]
#[test_case::test_case(
    "[[tenants]]\nname = \"acme\"\nbackend = \"s3\"\nprefix = \"acme/\"\n[[tenants]]\nname = \"sub\"\nbackend = \"s3\"\nprefix = \"acme/sub/\"\n",
    &["tenants[1].prefix", "overlaps", "acme"] ; "nested prefixes")]
#[test_case::test_case(
    "[[tenants]]\nname = \"acme\"\nbackend = \"s3\"\n[[tenants]]\nname = \"acme2\"\nbackend = \"s3\"\n",
    &["tenants[1].prefix", "overlaps"] ; "two tenants on the whole bucket")]
#[test_case::test_case(
    "[[tenants]]\nname = \"acme\"\nbackend = \"s3\"\nprefix = \"../acme2\"\n",
    &["tenants[0].prefix", "\"..\""] ; "dot-dot prefix")]
fn bad_config_is_refused(tenants: &str, needles: &[&str]) {
    let config = format!("{GOOD_BACKENDS}\n{tenants}");
    for mount in [false, true] {
        let (code, stderr) = run_with_config(&config, mount);
        assert_eq!(code, Some(1), "mount={mount}: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "mount={mount}: {n:?} not in:\n{stderr}");
        }
        assert!(stderr.contains("bad.toml:"), "no file:line in:\n{stderr}");
    }
}

#[test_case::test_case("bucket = \"media\"", "bucket = \"\"", &["backends.s3.bucket", "empty"] ; "empty bucket")]
#[test_case::test_case("http://127.0.0.1:9", "ftp://127.0.0.1:9", &["backends.s3.endpoint", "invalid endpoint", "http"] ; "endpoint scheme")]
#[test_case::test_case("http://127.0.0.1:9", "http://", &["backends.s3.endpoint", "no host"] ; "endpoint without host")]
#[test_case::test_case("http://127.0.0.1:9", "http://user:hunter2pw@127.0.0.1:9", &["backends.s3.endpoint", "credentials", "<redacted>@127.0.0.1"] ; "endpoint with userinfo")]
fn bad_backend_is_refused(from: &str, to: &str, needles: &[&str]) {
    let config = format!(
        "{}\n[[tenants]]\nname = \"acme\"\nbackend = \"s3\"\n",
        GOOD_BACKENDS.replace(from, to)
    );
    let (code, stderr) = run_with_config(&config, false);
    assert_eq!(code, Some(1), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} not in:\n{stderr}");
    }
    assert!(
        !stderr.contains("hunter2pw"),
        "a password in the URL is never echoed:\n{stderr}"
    );
}

#[test]
fn readable_secrets_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("s.ini");
    std::fs::write(
        &secrets,
        "access_key_id = AK\nsecret_access_key = super-secret-value-123\n",
    )
    .unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = GOOD_BACKENDS.replace(
        "{ env = { access_key_id = \"TEST_AK\", secret_access_key = \"TEST_SK\" } }",
        &format!("{{ file = {:?} }}", secrets.to_str().unwrap()),
    ) + "\n[[tenants]]\nname = \"acme\"\nbackend = \"s3\"\n";
    let (code, stderr) = run_with_config(&config, false);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
}
