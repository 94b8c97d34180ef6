//! `tenants_dir`: one small TOML file per tenant, with the keys of a `[[tenants]]` entry, so a
//! platform adds a customer by writing one file instead of rewriting a config of 100,000
//! entries.
//!
//! Only regular `*.toml` files directly in the directory count; names starting with `.` are
//! skipped (editors and atomic writers keep their temporary files there). Files are read in
//! byte order of their names, so the tenant order (and inode numbering) does not depend on
//! the directory's on-disk order.

use std::path::{Path, PathBuf};

/// One tenant file: its path and its text, or why it could not be read.
#[derive(Debug)]
pub(crate) struct TenantFile {
    pub(crate) path: PathBuf,
    pub(crate) text: Result<String, String>,
}

/// The tenant files in `dir`, sorted by name; `Err` when the directory itself cannot be
/// listed.
pub(crate) fn read_dir(dir: &Path) -> Result<Vec<TenantFile>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        // Follows symlinks: a tenant file may be managed elsewhere and linked in.
        if std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            paths.push(entry.path());
        }
    }
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read tenant file: {e}"));
            TenantFile { path, text }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_toml_files_in_name_order_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.toml", "a.toml", ".a.toml", "c.toml.tmp", "notes.txt"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        std::fs::create_dir(dir.path().join("d.toml")).unwrap();
        let files = read_dir(dir.path()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.toml", "b.toml"]);
        assert_eq!(files[0].text.as_deref(), Ok("a.toml"));
        assert!(read_dir(&dir.path().join("missing"))
            .unwrap_err()
            .contains("cannot list"));
    }
}
