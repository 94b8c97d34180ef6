//! Property-based fuzzing (proptest, bounded case counts, runs in seconds):
//!
//! - The config parser: any text, random TOML-ish documents and mutations of a valid config
//!   never panic; the result is a `Config` or a `ConfigError::Invalid` with at least one issue
//!   that names a position or field.
//! - The key → name mapping, end to end without a kernel: a bucket of random hostile keys
//!   (`..`, `.`, `//`, control characters, > 255-byte segments, neighbour prefixes) behind two
//!   tenants (`acme`, `acme2`); walking each tenant through `Filesystem` readdir/lookup/read
//!   shows exactly the keys strictly under its prefix whose segments are valid names, and
//!   every byte read comes from the key the path names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use byosfs::backend::memory::InMemoryBackend;
use byosfs::backend::prefix::{is_safe_key, PrefixBackend};
use byosfs::backend::Backend;
use byosfs::cache::BlockCache;
use byosfs::config::{Config, ConfigError};
use byosfs::fs::{DirEntry, DirReplier, FileType, Filesystem, FsConfig};
use byosfs::namespace::name::{child_key, dir_prefix, entry_name, is_valid_segment};
use byosfs::namespace::ROOT_INO;
use byosfs::tenant::{TenantSpec, TenantTable};
use byosfs::upload::{UploadConfig, Uploader};
use proptest::prelude::*;

// ---------------------------------------------------------------- config parser

const VALID: &str = r#"
[mount]
allow_other = false
attr_ttl = "1s"

[cache]
memory = "64MiB"
block_size = "1MiB"

[write]
part_size = "8MiB"

[defaults]
backend = "local"

[backends.local]
type = "local"
root = "./data"

[backends.s3]
type = "s3"
provider = "minio"
endpoint = "http://127.0.0.1:9000"
bucket = "media"
credentials = "default"

[[tenants]]
name = "acme"
mode = "0750"

[[tenants]]
name = "acme2"
backend = "s3"
prefix = "acme2/"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("/etc/byosfs/fuzz.toml"))
}

/// Ok, or an error that lists at least one issue, each rendered as `file[:line]: ...`.
fn check_outcome(text: &str) -> Result<(), TestCaseError> {
    match parse(text) {
        Ok(_) => Ok(()),
        Err(e @ ConfigError::Invalid(_)) => {
            prop_assert!(!e.issues().is_empty(), "Invalid with no issues for {text:?}");
            let shown = e.to_string();
            prop_assert!(shown.starts_with("/etc/byosfs/fuzz.toml"), "{shown}");
            prop_assert!(shown.lines().count() >= e.issues().len(), "{shown}");
            Ok(())
        }
        Err(e) => Err(TestCaseError::fail(format!("unexpected error kind: {e}"))),
    }
}

fn toml_line() -> impl Strategy<Value = String> {
    let keys = prop::sample::select(vec![
        "name",
        "type",
        "backend",
        "prefix",
        "bucket",
        "endpoint",
        "root",
        "mode",
        "uid",
        "memory",
        "block_size",
        "part_size",
        "region",
        "provider",
        "credentials",
        "allow_other",
        "staging_limit",
        "threads",
        "bogus",
        "access_key_id",
    ]);
    let values = prop::sample::select(vec![
        "\"acme\"",
        "\"acme2\"",
        "\"local\"",
        "\"s3\"",
        "\"\"",
        "\"../x\"",
        "\"a//b\"",
        "\"/abs\"",
        "\"0777\"",
        "\"9999\"",
        "\"1GiB\"",
        "\"0B\"",
        "\"-1MiB\"",
        "\"18446744073709551615EiB\"",
        "\"http://\"",
        "\"ftp://x\"",
        "\"http://[::1\"",
        "\"default\"",
        "{ env = { access_key_id = \"A\", secret_access_key = \"B\" } }",
        "{ file = \"/nonexistent\" }",
        "true",
        "0",
        "-1",
        "4294967296",
        "1e400",
        "[1, 2]",
        "{}",
        "\"\\u0000\"",
        "\"a\\nb\"",
    ]);
    let headers = prop::sample::select(vec![
        "[mount]",
        "[cache]",
        "[write]",
        "[defaults]",
        "[backends.local]",
        "[backends.s3]",
        "[backends.\"\"]",
        "[[tenants]]",
        "[[backends]]",
        "[tenants]",
        "[nope]",
    ]);
    prop_oneof![
        3 => (keys, values).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => headers.prop_map(str::to_owned),
        1 => "\\PC{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any printable or not text.
    #[test]
    fn config_random_text_never_panics(text in "\\PC{0,200}|[\\x00-\\x7f]{0,200}") {
        check_outcome(&text)?;
    }

    /// Documents made of plausible sections, keys and (often hostile) values.
    #[test]
    fn config_tomlish_never_panics(lines in prop::collection::vec(toml_line(), 0..40)) {
        check_outcome(&lines.join("\n"))?;
    }

    /// A valid config with bytes replaced, inserted or deleted.
    #[test]
    fn config_mutations_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 1..8)) {
        let mut text: Vec<char> = VALID.chars().collect();
        for (at, op, c) in edits {
            let i = at.index(text.len().max(1)).min(text.len());
            match op {
                0 if i < text.len() => text[i] = c,
                1 => text.insert(i, c),
                _ if i < text.len() => { text.remove(i); }
                _ => {}
            }
        }
        check_outcome(&text.into_iter().collect::<String>())?;
    }
}

#[test]
fn valid_base_config_loads() {
    // The mutation fuzzer starts from a config that is valid, so mutations explore the edges.
    let c = parse(VALID).unwrap();
    assert_eq!(c.tenants.len(), 2);
}

// ---------------------------------------------------------------- key -> name mapping

/// A key segment, biased towards the dangerous ones.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "ab", "x.y", "acme", "acme2"]).prop_map(str::to_owned),
        1 => Just(String::new()),
        1 => Just(".".to_owned()),
        2 => Just("..".to_owned()),
        1 => Just("...".to_owned()),
        1 => Just("\n".to_owned()),
        1 => Just("t\tab".to_owned()),
        1 => Just("\u{1}".to_owned()),
        1 => Just("\\".to_owned()),
        1 => Just("%2e%2e".to_owned()),
        1 => Just("n\0ul".to_owned()),
        1 => Just("L".repeat(256)),
        1 => Just("M".repeat(255)),
        1 => "\\PC{1,6}",
    ]
}

/// A full bucket key: a tenant-ish first segment (or none) followed by random segments.
fn bucket_key() -> impl Strategy<Value = String> {
    let head = prop::sample::select(vec![
        "acme/", "acme2/", "acme", "acme2", "acmex/", "", "acme//", "acme/../",
    ]);
    (head, prop::collection::vec(segment(), 0..4), any::<bool>()).prop_map(|(h, segs, trailing)| {
        let mut k = format!("{h}{}", segs.join("/"));
        if trailing {
            k.push('/');
        }
        k
    })
}

struct Collect(Vec<DirEntry>);

impl DirReplier for Collect {
    fn add(&mut self, e: &DirEntry, _ttl: Duration) -> bool {
        self.0.push(e.clone());
        false
    }
}

fn filesystem(bucket: &Arc<InMemoryBackend>, staging: &Path) -> Filesystem {
    let spec = |name: &str, prefix: &str| {
        let inner: Arc<dyn Backend> = bucket.clone();
        TenantSpec {
            name: name.to_owned(),
            backend: Arc::new(PrefixBackend::new(inner, prefix)),
            read_only: true,
            uid: 1000,
            gid: 1000,
            mode: 0o755,
            posix_metadata: false,
            exclusive_create: false,
            policy: Default::default(),
            write_back: false,
        }
    };
    let tenants = TenantTable::new(vec![spec("acme", "acme"), spec("acme2", "acme2/")]);
    let uploader = Uploader::new(UploadConfig {
        part_size: 5 << 20,
        max_concurrent_parts: 1,
        memory_budget: 16 << 20,
        staging_dir: staging.to_owned(),
        staging_limit: 1 << 20,
    })
    .unwrap();
    Filesystem::new(
        tenants,
        Arc::new(BlockCache::new(4 << 20, 64 << 10)),
        uploader,
        FsConfig::default(),
    )
}

/// What a tenant with prefix `prefix` must show: (files, dirs) as tenant-relative paths.
/// A path is shown when every segment is a valid name; a key contributes its file (last
/// segment non-empty) and each directory above it, up to the first invalid segment.
fn expected_tree(keys: &BTreeSet<String>, prefix: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut files, mut dirs) = (BTreeSet::new(), BTreeSet::new());
    for key in keys {
        let Some(rel) = key.strip_prefix(prefix) else { continue };
        let segs: Vec<&str> = rel.split('/').collect();
        for i in 0..segs.len() {
            if !is_valid_segment(segs[i]) {
                break;
            }
            let path = segs[..=i].join("/");
            if i + 1 < segs.len() {
                dirs.insert(path);
            } else {
                files.insert(path);
            }
        }
    }
    (files, dirs)
}

/// Walk a tenant: (files with contents, dirs), tenant-relative. Depth and entries bounded.
async fn walk(fs: &Filesystem, tenant: &str) -> (BTreeMap<String, Vec<u8>>, BTreeSet<String>) {
    let root = fs.lookup(ROOT_INO, OsStr::new(tenant)).await.unwrap().attr.ino;
    let (mut files, mut dirs) = (BTreeMap::new(), BTreeSet::new());
    let mut stack = vec![(root, String::new())];
    for _ in 0..1000 {
        let Some((ino, path)) = stack.pop() else { break };
        let fh = fs.opendir(ino).await.unwrap();
        let mut c = Collect(Vec::new());
        fs.readdir(fh, 0, false, &mut c).await.unwrap();
        fs.releasedir(fh);
        assert!(c.0.len() < 1000, "runaway listing");
        for e in c.0.into_iter().filter(|e| e.name != "." && e.name != "..") {
            assert!(
                is_valid_segment(&e.name),
                "shown name {:?} is not a valid segment",
                e.name
            );
            let child = child_key(&path, &e.name);
            let entry = fs.lookup(ino, OsStr::new(&e.name)).await.unwrap();
            match entry.attr.kind {
                FileType::Directory => {
                    dirs.insert(child.clone());
                    stack.push((entry.attr.ino, child));
                }
                _ => {
                    let o = fs.open(entry.attr.ino, libc::O_RDONLY, 0).await.unwrap();
                    let data = fs.read(o.fh, 0, 1 << 16).await.unwrap().to_vec();
                    fs.release(o.fh).await.unwrap();
                    files.insert(child, data);
                }
            }
        }
    }
    (files, dirs)
}

/// Whether some key makes `path` both a file and a directory (the listing shows one of the
/// two; which one is a presentation choice, not a safety question).
fn ambiguous(files: &BTreeSet<String>, dirs: &BTreeSet<String>) -> bool {
    files.iter().any(|f| dirs.contains(f))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any listed key that becomes a shown name maps back to a key strictly under the tenant
    /// prefix, and the key the mapping produces passes the prefix guard.
    #[test]
    fn shown_name_maps_back_under_prefix(dir_segs in prop::collection::vec("[a-z]{1,3}", 0..3), rel in bucket_key()) {
        let dir = dir_segs.join("/");
        if let Some(name) = entry_name(&rel) {
            let key = child_key(&dir, name);
            prop_assert!(is_safe_key(&key), "{key:?}");
            prop_assert!(key.starts_with(&dir_prefix(&dir)));
            let full = format!("acme/{key}");
            prop_assert!(full.len() > "acme/".len() && full.starts_with("acme/"));
            prop_assert!(!full.starts_with("acme2/"));
            prop_assert!(full.split('/').all(is_valid_segment), "{full:?}");
        }
    }

    /// Through the whole filesystem: each tenant shows exactly the valid keys under its own
    /// prefix, and reading a shown file returns the bytes of exactly that key.
    #[test]
    fn tenants_see_exactly_their_own_keys(keys in prop::collection::btree_set(bucket_key(), 1..24)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let staging = tempfile::tempdir().unwrap();
        let bucket = Arc::new(InMemoryBackend::new());
        for k in &keys {
            bucket.insert(k, format!("<{k}>"));
        }
        let fs = filesystem(&bucket, staging.path());
        for (tenant, prefix) in [("acme", "acme/"), ("acme2", "acme2/")] {
            let (files, dirs) = rt.block_on(walk(&fs, tenant));
            // Soundness: every shown file is the object at prefix + path, byte for byte.
            for (path, data) in &files {
                let key = format!("{prefix}{path}");
                prop_assert!(keys.contains(&key), "{tenant} shows {path:?} but no key {key:?}");
                prop_assert_eq!(data, &format!("<{key}>").into_bytes());
            }
            let (want_files, want_dirs) = expected_tree(&keys, prefix);
            for d in &dirs {
                prop_assert!(want_dirs.contains(d), "{tenant} shows dir {d:?} backed by no key");
            }
            // Completeness, when no path is both a file and a directory.
            if !ambiguous(&want_files, &want_dirs) {
                let shown: BTreeSet<String> = files.keys().cloned().collect();
                prop_assert_eq!(&shown, &want_files, "{} files", tenant);
                prop_assert_eq!(&dirs, &want_dirs, "{} dirs", tenant);
            }
        }
    }
}

/// The keys named in issue 4, pinned: the completeness branch above must hold on them.
#[test]
fn issue_keys_regression() {
    let long = "L".repeat(256);
    let keys: BTreeSet<String> = [
        "acme/../acme2/x",
        "acme/a/../../b",
        "acme/./c",
        "acme//d",
        "acme/",
        "acme",
        "acme/ctl\nnl",
        "acme/t\tab",
        "acme/\u{1}",
        "acme/back\\slash",
        &format!("acme/{long}"),
        "acme/ok",
        "acme2/x",
        "acme2x/y",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let staging = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemoryBackend::new());
    for k in &keys {
        bucket.insert(k, format!("<{k}>"));
    }
    let fs = filesystem(&bucket, staging.path());
    let (files, dirs) = rt.block_on(walk(&fs, "acme"));
    let shown: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(shown, BTreeSet::from(["ctl\nnl", "t\tab", "\u{1}", "ok"]));
    assert_eq!(dirs, BTreeSet::from(["a".to_owned()]));
    assert_eq!(
        expected_tree(&keys, "acme/"),
        (shown.iter().map(|s| (*s).to_owned()).collect(), dirs)
    );
    assert_eq!(files["ok"], b"<acme/ok>");
    let (files, dirs) = rt.block_on(walk(&fs, "acme2"));
    assert_eq!(files.keys().collect::<Vec<_>>(), vec!["x"]);
    assert_eq!(files["x"], b"<acme2/x>");
    assert!(dirs.is_empty());
}
