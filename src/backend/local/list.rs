//! Listing a directory tree as S3 lists a bucket: keys in byte order, `/` as the delimiter,
//! continuation after a key, empty directories as their markers.

use std::fs;
use std::io;
use std::path::Path;

use super::{invalid, io_err, meta_of, Inner, INTERNAL_DIR};
use crate::backend::{BackendResult, ListPage, ListParams, ObjectMeta};

impl Inner {
    pub(super) fn list(&self, params: &ListParams) -> BackendResult<ListPage> {
        let prefix = params.prefix.as_str();
        if prefix.contains('\0') || prefix.starts_with('/') {
            return Err(invalid("list", prefix, "bad prefix"));
        }
        let max = usize::try_from(params.max_keys.unwrap_or(1000).clamp(1, 1000)).unwrap_or(1000);
        let mut walk = Walk {
            prefix,
            delimited: params.delimited,
            after: params.continuation.as_deref().unwrap_or(""),
            limit: max + 1,
            out: Vec::new(),
        };
        walk.dir(&self.root, "").map_err(|e| io_err("list", prefix, e))?;
        let mut entries = walk.out;
        let next = if entries.len() > max {
            entries.truncate(max);
            entries.last().map(|e| e.key().to_owned())
        } else {
            None
        };
        let mut objects = Vec::new();
        let mut prefixes = Vec::new();
        for e in entries {
            match e {
                Entry::Object(m) => objects.push(m),
                Entry::Prefix(p) => prefixes.push(p),
            }
        }
        Ok(ListPage::new(objects, prefixes, next))
    }
}

enum Entry {
    Object(ObjectMeta),
    Prefix(String),
}

impl Entry {
    fn key(&self) -> &str {
        match self {
            Self::Object(m) => &m.key,
            Self::Prefix(p) => p,
        }
    }
}

/// Depth-first walk in S3 key order: sorting each directory's entries by their key form
/// (`name` for files, `name/` for directories) yields byte-wise order over full keys,
/// because every key below `d/` shares that prefix and no sibling key does.
struct Walk<'a> {
    prefix: &'a str,
    delimited: bool,
    /// Continuation: only keys strictly greater are returned.
    after: &'a str,
    /// Stop once this many entries are collected.
    limit: usize,
    out: Vec<Entry>,
}

impl Walk<'_> {
    fn full(&self) -> bool {
        self.out.len() >= self.limit
    }

    fn dir(&mut self, path: &Path, dir_key: &str) -> io::Result<()> {
        let mut children: Vec<(String, fs::Metadata)> = Vec::new();
        for ent in fs::read_dir(path)? {
            let ent = ent?;
            let Some(name) = ent.file_name().to_str().map(str::to_owned) else {
                continue; // Not representable as an S3 key.
            };
            if dir_key.is_empty() && name == INTERNAL_DIR {
                continue;
            }
            let m = match ent.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // Raced with a delete.
                Err(e) => return Err(e),
            };
            let key = if m.is_dir() {
                format!("{dir_key}{name}/")
            } else if m.is_file() {
                format!("{dir_key}{name}")
            } else {
                continue; // Symlinks, sockets, devices: not objects.
            };
            children.push((key, m));
        }
        children.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, m) in children {
            if self.full() {
                break;
            }
            if m.is_file() {
                if key.starts_with(self.prefix) && key.as_str() > self.after {
                    self.out.push(Entry::Object(meta_of(&key, &m)));
                }
                continue;
            }
            // Directory `key` (ends with '/').
            let relevant = key.starts_with(self.prefix) || self.prefix.starts_with(key.as_str());
            let all_before = key.as_str() <= self.after && !self.after.starts_with(key.as_str());
            if !relevant || all_before {
                continue;
            }
            if self.delimited && key.starts_with(self.prefix) && key.len() > self.prefix.len() {
                if key.as_str() > self.after {
                    self.out.push(Entry::Prefix(key));
                }
                continue;
            }
            let child_path = path.join(key[dir_key.len()..].trim_end_matches('/'));
            let is_empty = fs::read_dir(&child_path)?.next().is_none();
            if is_empty {
                if key.starts_with(self.prefix) && key.as_str() > self.after {
                    self.out.push(Entry::Object(meta_of(&key, &m)));
                }
            } else {
                self.dir(&child_path, &key)?;
            }
        }
        Ok(())
    }
}
