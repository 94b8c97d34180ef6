//! Real mounts: what a local user or a hostile tenant name can and cannot do (issue 24).
//!
//! - Logs: a file name holding a newline and a fake log line stays inside one escaped line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mount::{fuse_available, Mount};

fn local_config(mount_extra: &str, tenants: &str) -> String {
    format!(
        r#"
[mount]
{mount_extra}

[write]
staging_dir = "./staging"

[defaults]
backend = "local"

[backends.local]
type = "local"
root = "./data"

{tenants}
"#
    )
}

#[test]
fn a_newline_in_a_file_name_cannot_forge_a_log_line() {
    if !fuse_available() {
        return;
    }
    const FORGED: &str = "2026-01-01T00:00:00.000000Z ERROR byosfs: FORGED by a file name";
    let m = Mount::start(
        &local_config("", "[[tenants]]\nname = \"acme\"\n"),
        &[("RUST_LOG", "byosfs=debug")],
    );
    let name = format!("evil\n{FORGED}");
    let path = m.path().join("acme").join(&name);
    std::fs::write(&path, b"x").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"x");
    // An error naming the key, too: a directory where the name's file is expected.
    let _ = std::fs::read_dir(&path);
    let _ = std::fs::metadata(m.path().join("acme").join(format!("absent\n{FORGED}")));
    let mut m = m;
    let log = m.unmount();
    let lines: Vec<&str> = log.lines().collect();
    let forged: Vec<&&str> = lines.iter().filter(|l| l.contains("FORGED")).collect();
    assert!(
        !forged.is_empty(),
        "the key was logged at all (opened for read):\n{log}"
    );
    for l in &forged {
        assert!(!l.starts_with("2026-01-01"), "a forged line:\n{log}");
        assert!(
            l.contains("evil\\n2026") || l.contains("absent\\n2026"),
            "not escaped: {l}"
        );
    }
}
