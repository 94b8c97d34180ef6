//! S3-shaped listings (prefix, delimiter, pages with a continuation token) from OpenDAL's
//! directory listers.
//!
//! OpenDAL lists a directory, flat or recursively, as one stream and cannot resume one from a
//! token on every service (WebDAV answers a whole directory in one PROPFIND anyway). So a
//! listing is gathered, sorted and cut into pages here; the token is the last key of a page
//! and the next call lists again and skips up to it. A directory of `n` entries read in pages
//! of 1000 costs `n / 1000` listings of it; byosfs lists directories in pages of 1000, so the
//! cost grows with the square of a directory's size (documented in docs/backends.md).
//!
//! Directories: on object stores (Azure, GCS) a `dir/` entry of a flat listing is a marker
//! object, as on S3. On WebDAV every folder exists by itself; an empty one is reported as its
//! own marker (so an empty directory survives, as a marker does on S3) and one with entries
//! is not (as S3 shows no marker for a prefix that only has objects under it).
//!
//! Google Drive: a folder may hold two entries of one name. A listing shows one of them, the
//! one reads and writes of that name reach (see [`add`]), and logs the others; they are never
//! merged. Google-native documents (Docs, Sheets, shortcuts...) have no bytes to read
//! and are hidden.

use std::collections::BTreeMap;

use futures::TryStreamExt as _;
use opendal::{EntryMode, Operator};

use crate::backend::{BackendResult, ListPage, ListParams, ObjectMeta};

use super::{error::classify, meta, DalService};

/// Drive's MIME type of folders; the other `application/vnd.google-apps.*` types are native
/// documents.
const DRIVE_FOLDER: &str = "application/vnd.google-apps.folder";

/// Entries per page when the caller gives no size (S3's maximum).
const DEFAULT_PAGE: usize = 1000;

/// One listed name: an object (with its metadata) or a common prefix.
enum Item {
    Object(ObjectMeta),
    Prefix,
}

/// Whether `m` is a Google-native document (Docs, Sheets, Slides, a shortcut...).
pub(super) fn google_native(m: &opendal::Metadata) -> bool {
    m.content_type()
        .is_some_and(|t| t.starts_with("application/vnd.google-apps.") && t != DRIVE_FOLDER)
}

/// Whether the folder `dir` holds a file (hidden ones included) directly.
pub(super) async fn holds_files(op: &Operator, dir: &str) -> BackendResult<bool> {
    let listed = entries(op, dir, false, false).await?;
    Ok(listed.iter().any(|(_, m)| !m.is_dir()))
}

/// Insert a listed entry. Of repeated names (Drive) the most recently modified file is kept,
/// the one OpenDAL's path lookup resolves the name to (it asks Drive for
/// `orderBy=modifiedTime desc`), so the size listed is the size read; the others are logged.
fn add(found: &mut BTreeMap<String, Item>, path: String, item: Item) {
    match found.entry(path) {
        std::collections::btree_map::Entry::Vacant(v) => {
            v.insert(item);
        }
        std::collections::btree_map::Entry::Occupied(mut o) => {
            tracing::warn!(key = %o.key(), "two entries share this name: showing the newest, hiding the other");
            if let (Item::Object(old), Item::Object(new)) = (o.get(), &item) {
                if new.last_modified > old.last_modified {
                    o.insert(item);
                }
            }
        }
    }
}

/// One page of `params` on `service`.
pub(super) async fn list(op: &Operator, service: DalService, params: &ListParams) -> BackendResult<ListPage> {
    // Folders exist without marker objects (WebDAV, Drive).
    let implicit_dirs = service.implicit_dirs();
    let hide = service == DalService::Gdrive;
    let prefix = params.prefix.as_str();
    let dir = prefix.rfind('/').map_or("", |i| &prefix[..=i]);
    let mut found: BTreeMap<String, Item> = BTreeMap::new();
    let mut dirs: Vec<String> = Vec::new();
    if params.delimited {
        for (path, m) in entries(op, dir, false, hide).await? {
            if !path.starts_with(prefix) {
                continue;
            }
            if m.is_dir() && path != dir {
                add(&mut found, path, Item::Prefix);
            } else if m.is_dir() {
                dirs.push(path);
            } else {
                add(&mut found, path.clone(), Item::Object(meta(&path, &m)));
            }
        }
        // The listed folder itself: its own marker when it is one (see module docs).
        let has_children = !found.is_empty();
        if let Some(d) = dirs.pop() {
            if !implicit_dirs || !has_children {
                found.insert(d.clone(), Item::Object(ObjectMeta::new(d, 0, None, None)));
            }
        }
    } else {
        // Recursive listings start at the folders the prefix can match, never above them:
        // listing `a/b` walks only `a/b*`, not all of `a/`.
        let roots: Vec<String> = if prefix.len() == dir.len() {
            vec![dir.to_owned()]
        } else {
            let mut r = Vec::new();
            for (path, m) in entries(op, dir, false, hide).await? {
                if path == dir || !path.starts_with(prefix) {
                    continue;
                }
                if m.is_dir() {
                    r.push(path);
                } else {
                    add(&mut found, path.clone(), Item::Object(meta(&path, &m)));
                }
            }
            r
        };
        for root in roots {
            for (path, m) in entries(op, &root, true, hide).await? {
                if !path.starts_with(prefix) || path.is_empty() {
                    continue;
                }
                if m.is_dir() {
                    dirs.push(path);
                } else {
                    add(&mut found, path.clone(), Item::Object(meta(&path, &m)));
                }
            }
        }
        for d in dirs {
            let nonempty = implicit_dirs && found.range(d.clone()..).next().is_some_and(|(k, _)| k.starts_with(&d));
            if !nonempty {
                found
                    .entry(d.clone())
                    .or_insert_with(|| Item::Object(ObjectMeta::new(d, 0, None, None)));
            }
        }
    }
    Ok(page(found, params))
}

/// Cut the sorted names after the continuation token into one page.
fn page(found: BTreeMap<String, Item>, params: &ListParams) -> ListPage {
    let max = params
        .max_keys
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_PAGE);
    let after = params.continuation.as_deref();
    let mut rest = found
        .into_iter()
        .filter(|(k, _)| after.is_none_or(|t| k.as_str() > t))
        .peekable();
    let (mut objects, mut prefixes, mut last) = (Vec::new(), Vec::new(), None);
    for (key, item) in rest.by_ref().take(max) {
        match item {
            Item::Object(m) => objects.push(m),
            Item::Prefix => prefixes.push(key.clone()),
        }
        last = Some(key);
    }
    let next = rest.peek().is_some().then_some(last).flatten();
    ListPage::new(objects, prefixes, next)
}

/// Every entry OpenDAL lists under `dir` ("" is the root), as (key, metadata), without
/// Google-native documents when `hide_native`.
async fn entries(
    op: &Operator,
    dir: &str,
    recursive: bool,
    hide_native: bool,
) -> BackendResult<Vec<(String, opendal::Metadata)>> {
    let path = if dir.is_empty() { "/" } else { dir };
    let lister = op.lister_with(path).recursive(recursive).await;
    let lister = match lister {
        Ok(l) => l,
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(classify("list", dir, &e)),
    };
    let listed: Vec<opendal::Entry> = match lister.try_collect().await {
        Ok(v) => v,
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(classify("list", dir, &e)),
    };
    Ok(listed
        .into_iter()
        .filter_map(|e| {
            let (path, m) = e.into_parts();
            let key = path.trim_start_matches('/').to_owned();
            // The root itself is no key.
            let shown = !(hide_native && google_native(&m));
            (shown && (!key.is_empty() || m.mode() != EntryMode::DIR)).then_some((key, m))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(keys: &[&str]) -> BTreeMap<String, Item> {
        keys.iter()
            .map(|k| {
                let item = if k.ends_with('/') {
                    Item::Prefix
                } else {
                    Item::Object(ObjectMeta::new(*k, 1, None, None))
                };
                ((*k).to_owned(), item)
            })
            .collect()
    }

    #[test]
    fn repeated_names_keep_the_newest_file() {
        let at = |s| Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        let mut found = BTreeMap::new();
        add(
            &mut found,
            "a".into(),
            Item::Object(ObjectMeta::new("a", 1, at(10), None)),
        );
        add(
            &mut found,
            "a".into(),
            Item::Object(ObjectMeta::new("a", 2, at(20), None)),
        );
        add(
            &mut found,
            "a".into(),
            Item::Object(ObjectMeta::new("a", 3, at(15), None)),
        );
        let Some(Item::Object(kept)) = found.get("a") else {
            panic!("a is listed")
        };
        assert_eq!((found.len(), kept.size), (1, 2), "one entry, the newest, never merged");
    }

    #[test]
    fn pages_resume_after_their_token() {
        let all = ["a", "b/", "c", "d"];
        let p1 = page(names(&all), &ListParams::new("", true).with_max_keys(2));
        assert_eq!(p1.objects.len() + p1.common_prefixes.len(), 2);
        assert_eq!(p1.next.as_deref(), Some("b/"));
        let p2 = page(
            names(&all),
            &ListParams::new("", true).with_max_keys(2).with_continuation(p1.next),
        );
        let keys: Vec<_> = p2.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["c", "d"]);
        assert_eq!(p2.next, None, "the last page has no token");
    }
}
