//! Inodes: the mapping between inode numbers and (tenant, key, kind), with lookup counts.
//!
//! Keys are not stored: an inode holds its parent and its name, and its key is derived by
//! walking up to the tenant root. Renaming a directory therefore re-keys its whole subtree
//! by changing one inode, and inodes the kernel still caches below it stay correct.
//!
//! Invariants: an inode stays in the table while the kernel holds lookups on it, while it has
//! children in the table, or while it has open handles; it is dropped when all reach zero.
//! Inode numbers are never reused during a mount. All methods take one short `std` lock and
//! never await.

mod absent;
pub mod name;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::backend::{ETag, PosixAttrs};

/// Inode number of the mount root (listing the tenants).
pub const ROOT_INO: u64 = 1;

/// Index of a tenant in the tenant table.
pub type TenantId = u32;

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The mount root.
    Root,
    /// A tenant's top directory (key `""`).
    TenantRoot,
    /// A directory inside a tenant (a common prefix or a `dir/` marker).
    Dir,
    /// A regular file (an object).
    File,
}

impl Kind {
    /// Whether entries can be looked up below it.
    pub fn is_dir(self) -> bool {
        !matches!(self, Kind::File)
    }
}

/// Attributes remembered from the backend (or from local writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: SystemTime,
    /// ETag seen last, if any.
    pub etag: Option<ETag>,
    /// `mtime` is the file's real mtime: from a HEAD (stored mtime, or Last-Modified when
    /// none is stored), a setattr or a local write. `false` when it is a listing's
    /// Last-Modified, which S3 listings give without the stored mtime. The same holds for
    /// `posix`: a listing has none, and on a tenant with POSIX metadata a directory found
    /// by a listing is not known either until its marker was asked.
    pub mtime_known: bool,
    /// The backend's Last-Modified, when this stat came from it (tells object versions
    /// apart when there is no ETag).
    pub last_modified: Option<SystemTime>,
    /// Mode, owner and group stored with the object (`Some(empty)`: none stored, the
    /// tenant's defaults apply). `None`: this stat does not say (a local write, a listing),
    /// so an update keeps what the inode had.
    pub posix: Option<PosixAttrs>,
}

impl Stat {
    /// Attributes of a directory (no backing object). Prefixes have no time of their own; the
    /// time the mount started is a better answer for `ls -l` than 1970.
    pub fn dir() -> Self {
        static MOUNTED: std::sync::OnceLock<SystemTime> = std::sync::OnceLock::new();
        Self::local(0, *MOUNTED.get_or_init(SystemTime::now), None)
    }

    /// Attributes set by this mount (a write, a commit, a setattr): the mtime is known.
    pub fn local(size: u64, mtime: SystemTime, etag: Option<ETag>) -> Self {
        Self {
            size,
            mtime,
            etag,
            mtime_known: true,
            last_modified: None,
            posix: None,
        }
    }

    /// The same attributes with stored POSIX attributes.
    pub fn with_posix(mut self, posix: PosixAttrs) -> Self {
        self.posix = Some(posix);
        self
    }

    /// The stored file type bits (`S_IFMT`), `0` when unknown.
    pub fn file_type(&self) -> u32 {
        self.posix.map_or(0, |p| p.file_type())
    }

    /// Whether `self` and `other` describe the same object version: equal ETags, or, when
    /// either lacks one, equal size and Last-Modified.
    fn same_version(&self, other: &Stat) -> bool {
        match (&self.etag, &other.etag) {
            (Some(a), Some(b)) => a == b,
            _ => self.size == other.size && self.last_modified.is_some() && self.last_modified == other.last_modified,
        }
    }

    /// `new` replacing `old`, except that a listing (mtime not known) of the same object
    /// version keeps the known mtime: refreshing a directory must not turn a stored mtime
    /// back into Last-Modified.
    /// A stat that does not say what POSIX attributes are stored keeps the old ones.
    fn refreshed(old: &Stat, mut new: Stat) -> Stat {
        if new.posix.is_none() {
            new.posix = old.posix;
        }
        if old.mtime_known && !new.mtime_known && old.same_version(&new) {
            Stat {
                mtime: old.mtime,
                mtime_known: true,
                ..new
            }
        } else {
            new
        }
    }
}

/// A copy of an inode's state, taken under the lock.
#[derive(Debug, Clone)]
pub struct Inode {
    /// Inode number.
    pub ino: u64,
    /// Parent inode (the root is its own parent).
    pub parent: u64,
    /// Tenant, for everything below the root.
    pub tenant: Option<TenantId>,
    /// Key relative to the tenant's prefix (no trailing `/`; `""` for a tenant root).
    pub key: String,
    /// What it is.
    pub kind: Kind,
    /// Last known attributes.
    pub stat: Stat,
    /// When `stat` was last confirmed by the backend (or set by a local write).
    pub validated: Instant,
}

#[derive(Debug)]
struct Node {
    parent: u64,
    name: String,
    tenant: Option<TenantId>,
    kind: Kind,
    stat: Stat,
    validated: Instant,
    lookups: u64,
    children: u64,
    open: u64,
    /// Still reachable by name from its parent (false after unlink/rename-over).
    linked: bool,
    /// For a directory: every child it has on the backend is in the table, as proven at this
    /// instant (it was created here while its name was proven absent, or a listing that began
    /// then put every entry in the table). Cleared when a child leaves the table for any
    /// reason other than a removal done here.
    complete: Option<Instant>,
    /// For a file: the version (ETag) whose pages the kernel may hold, i.e. the version the
    /// last open for reading pinned. Kept apart from `stat`, which a lookup refreshes without
    /// the kernel's pages changing: an open compares against this, or a replaced object's
    /// stale pages would be kept.
    pages: Option<ETag>,
}

#[derive(Debug)]
struct Table {
    nodes: HashMap<u64, Node>,
    /// Ordered so the siblings after a name can be walked (stat-ahead), in key order.
    children: BTreeMap<(u64, String), u64>,
    next: u64,
    absent: absent::Absent,
}

/// What the table knows of one name in a directory ([`InodeTable::known`]).
#[derive(Debug, Clone)]
pub enum Known {
    /// The inode linked under that name.
    Child(Inode),
    /// No such child, as proven at this instant (within `negative_ttl`).
    Absent(Instant),
    /// Neither: only the backend can tell.
    Unknown,
}

/// Errors from the inode table.
#[derive(Debug, thiserror::Error)]
pub enum InodeError {
    /// The kernel referred to an inode we do not know (forgotten, or never issued).
    #[error("unknown inode {0}")]
    Unknown(u64),
}

/// The inode table of one mount.
#[derive(Debug)]
pub struct InodeTable {
    /// The only lock of this module; never held across an await or a call out of it.
    table: Mutex<Table>,
    /// How long a name proven absent is trusted (0: never).
    negative_ttl: Duration,
}

impl Default for InodeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl InodeTable {
    /// A table holding only the root, remembering no absent names.
    pub fn new() -> Self {
        Self::with_negative_ttl(Duration::ZERO)
    }

    /// A table holding only the root that trusts a name proven absent for `negative_ttl`.
    pub fn with_negative_ttl(negative_ttl: Duration) -> Self {
        let root = Node {
            parent: ROOT_INO,
            name: String::new(),
            tenant: None,
            kind: Kind::Root,
            stat: Stat::dir(),
            validated: Instant::now(),
            lookups: 1,
            children: 0,
            open: 0,
            linked: true,
            complete: None,
            pages: None,
        };
        let mut nodes = HashMap::new();
        nodes.insert(ROOT_INO, root);
        Self {
            table: Mutex::new(Table {
                nodes,
                children: BTreeMap::new(),
                next: ROOT_INO + 1,
                absent: absent::Absent::default(),
            }),
            negative_ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every mutation below keeps the maps consistent before it can panic, so a poisoned
        // lock still guards a usable table.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tenant `ino` belongs to (`None` for the root or an unknown inode), without a
    /// snapshot: asked once per request by the dispatcher.
    pub fn tenant(&self, ino: u64) -> Option<TenantId> {
        self.lock().nodes.get(&ino).and_then(|n| n.tenant)
    }

    /// Snapshot of `ino`.
    pub fn get(&self, ino: u64) -> Result<Inode, InodeError> {
        let t = self.lock();
        snapshot(&t, ino).ok_or(InodeError::Unknown(ino))
    }

    /// The names among the `n` children of `parent` after `after` (in key order) that are
    /// files whose stored mtime is not known yet: the entries `ls -l` will stat next. Looks at
    /// `n` entries at most, so a lookup pays the same whatever the directory holds.
    pub fn files_missing_mtime_after(&self, parent: u64, after: &str, n: usize) -> Vec<String> {
        use std::ops::Bound::{Excluded, Unbounded};
        let t = self.lock();
        t.children
            .range((Excluded((parent, after.to_owned())), Unbounded))
            .take_while(|((p, _), _)| *p == parent)
            .take(n)
            .filter(|(_, ino)| {
                t.nodes
                    .get(ino)
                    .is_some_and(|node| node.kind == Kind::File && !node.stat.mtime_known && node.open == 0)
            })
            .map(|((_, name), _)| name.clone())
            .collect()
    }

    /// The inode currently linked as `name` in `parent`, if the table knows one.
    pub fn child(&self, parent: u64, name: &str) -> Option<Inode> {
        let t = self.lock();
        let ino = *t.children.get(&(parent, name.to_owned()))?;
        snapshot(&t, ino)
    }

    /// Record that `name` in `parent` is a `kind` with `stat`, reusing the existing inode when
    /// the kind matches, and add `lookups` kernel references to it.
    pub fn upsert_child(
        &self,
        parent: u64,
        name: &str,
        tenant: Option<TenantId>,
        kind: Kind,
        stat: Stat,
        lookups: u64,
    ) -> Result<Inode, InodeError> {
        let mut t = self.lock();
        if !t.nodes.contains_key(&parent) {
            return Err(InodeError::Unknown(parent));
        }
        let key = (parent, name.to_owned());
        t.absent.forget(&key);
        if let Some(&ino) = t.children.get(&key) {
            if let Some(n) = t.nodes.get_mut(&ino) {
                // A tenant root bound to another tenant binding (a reload re-pointed the
                // name) is replaced like a kind change: the old binding's inodes never serve
                // the new one.
                if n.kind == kind && n.tenant == tenant {
                    // A file being written keeps its local size until the upload completes.
                    // A listing says nothing about a known directory's own attributes (its
                    // marker's metadata), and a directory has no version to compare.
                    let listed_dir = kind == Kind::Dir && n.stat.mtime_known && !stat.mtime_known;
                    if (n.open == 0 || kind != Kind::File) && !listed_dir {
                        n.stat = Stat::refreshed(&n.stat, stat);
                    }
                    n.validated = Instant::now();
                    n.lookups += lookups;
                    return snapshot(&t, ino).ok_or(InodeError::Unknown(ino));
                }
            }
            // Kind changed (file replaced by a directory or vice versa): detach the old inode.
            unlink_locked(&mut t, parent, name);
        }
        let ino = t.next;
        t.next += 1;
        t.nodes.insert(
            ino,
            Node {
                parent,
                name: name.to_owned(),
                tenant,
                kind,
                stat,
                validated: Instant::now(),
                lookups,
                children: 0,
                open: 0,
                linked: true,
                complete: None,
                pages: None,
            },
        );
        t.children.insert(key, ino);
        if let Some(p) = t.nodes.get_mut(&parent) {
            p.children += 1;
        }
        snapshot(&t, ino).ok_or(InodeError::Unknown(ino))
    }

    /// Add `n` kernel references to `ino`, which the caller just got from
    /// [`InodeTable::upsert_child`] (a readdirplus entry the kernel accepted): one map lookup
    /// instead of a second upsert, for each of the 100,000 entries of a large root. Nothing
    /// happens if `ino` left the table meanwhile.
    pub fn add_lookups(&self, ino: u64, n: u64) {
        if let Some(node) = self.lock().nodes.get_mut(&ino) {
            node.lookups += n;
        }
    }

    /// Replace the attributes of `ino` (after a HEAD, a write or a completed upload).
    pub fn set_stat(&self, ino: u64, stat: Stat) {
        let mut t = self.lock();
        if let Some(n) = t.nodes.get_mut(&ino) {
            n.stat = Stat::refreshed(&n.stat, stat);
            n.validated = Instant::now();
        }
    }

    /// An open for reading pins version `etag` of `ino`: returns whether the kernel's pages
    /// of `ino` are of that version already (so the open may keep them), and records that
    /// they are from now on.
    pub fn pin_pages(&self, ino: u64, etag: Option<&ETag>) -> bool {
        let mut t = self.lock();
        let Some(n) = t.nodes.get_mut(&ino) else {
            return false;
        };
        let same = etag.is_some() && n.pages.as_ref() == etag;
        n.pages = etag.cloned();
        same
    }

    /// Mark the cached attributes of everything below directory `dir` as stale. After a
    /// directory rename the moved objects are copies, whose ETags may differ from the
    /// originals' (a multipart object copied whole on S3, any blob on Azure): the next open
    /// must HEAD, not pin a version that no longer exists.
    pub fn invalidate_below(&self, dir: u64) {
        let mut t = self.lock();
        let below: Vec<u64> = t
            .nodes
            .iter()
            .filter(|&(&ino, _)| ino != dir && descends_from(&t.nodes, ino, dir))
            .map(|(&ino, _)| ino)
            .collect();
        let stale = Instant::now() - std::time::Duration::from_secs(3600 * 24);
        for ino in below {
            if let Some(n) = t.nodes.get_mut(&ino) {
                n.validated = stale;
            }
        }
    }

    /// Mark the cached attributes of `ino` as stale.
    pub fn invalidate(&self, ino: u64) {
        let mut t = self.lock();
        if let Some(n) = t.nodes.get_mut(&ino) {
            n.validated = Instant::now() - std::time::Duration::from_secs(3600 * 24);
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut t = self.lock();
        if let Some(node) = t.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
        }
        maybe_drop(&mut t, ino);
    }

    /// A handle was opened on `ino`.
    pub fn open(&self, ino: u64) {
        if let Some(n) = self.lock().nodes.get_mut(&ino) {
            n.open += 1;
        }
    }

    /// A handle on `ino` was released.
    pub fn close(&self, ino: u64) {
        let mut t = self.lock();
        if let Some(n) = t.nodes.get_mut(&ino) {
            n.open = n.open.saturating_sub(1);
        }
        maybe_drop(&mut t, ino);
    }

    /// Detach `name` from `parent` after it was removed from the backend (unlink, rmdir):
    /// it is now known to be absent. The inode lives on while referenced.
    pub fn unlink(&self, parent: u64, name: &str) {
        let mut t = self.lock();
        unlink_locked(&mut t, parent, name);
        t.absent
            .note((parent, name.to_owned()), Instant::now(), self.negative_ttl);
    }

    /// A reload removed or re-pointed tenant `name`: its directory leaves the root, so the
    /// next lookup of the name binds a fresh inode to the current binding. The old subtree
    /// lives on while the kernel or open files reference it.
    pub fn detach_tenant(&self, name: &str) {
        let mut t = self.lock();
        unlink_locked(&mut t, ROOT_INO, name);
    }

    /// Whether `ino` has open handles.
    pub fn is_open(&self, ino: u64) -> bool {
        self.lock().nodes.get(&ino).is_some_and(|n| n.open > 0)
    }

    /// The backend proved, at `since`, that `name` in `parent` does not exist. Ignored if the
    /// table holds such a child (created here meanwhile: it wins).
    pub fn note_absent(&self, parent: u64, name: &str, since: Instant) {
        let mut t = self.lock();
        let key = (parent, name.to_owned());
        if !t.children.contains_key(&key) {
            t.absent.note(key, since, self.negative_ttl);
        }
    }

    /// When `name` in `parent` was last proven absent, if that is recent enough to trust: a
    /// failed lookup or a removal here, or the name missing from a directory known complete.
    /// `None` when the table holds such a child or nothing recent is known.
    pub fn absent_since(&self, parent: u64, name: &str) -> Option<Instant> {
        match self.known(parent, name) {
            Known::Absent(at) => Some(at),
            Known::Child(_) | Known::Unknown => None,
        }
    }

    /// What the table knows of `name` in `parent`, under one lock: the child it holds, a
    /// recent proof that there is none (see [`InodeTable::absent_since`]), or nothing.
    pub fn known(&self, parent: u64, name: &str) -> Known {
        let t = self.lock();
        let key = (parent, name.to_owned());
        if let Some(&ino) = t.children.get(&key) {
            return snapshot(&t, ino).map_or(Known::Unknown, Known::Child);
        }
        let ttl = self.negative_ttl;
        let listed = t
            .nodes
            .get(&parent)
            .and_then(|n| n.complete)
            .filter(|at| at.elapsed() < ttl);
        t.absent
            .since(&key, ttl)
            .max(listed)
            .map_or(Known::Unknown, Known::Absent)
    }

    /// Since when directory `dir` is known complete (every child of it on the backend is in
    /// the table), if that proof is still within `negative_ttl`.
    pub fn complete_since(&self, dir: u64) -> Option<Instant> {
        let t = self.lock();
        t.nodes
            .get(&dir)
            .and_then(|n| n.complete)
            .filter(|at| at.elapsed() < self.negative_ttl)
    }

    /// Children of `dir` in the table (a bound for how much a re-listing would fetch).
    pub fn child_count(&self, dir: u64) -> u64 {
        self.lock().nodes.get(&dir).map_or(0, |n| n.children)
    }

    /// Directory `dir` had no children at `since` (created here while its name was proven
    /// absent), so names not in the table are absent until the proof expires.
    pub fn mark_empty(&self, dir: u64, since: Instant) {
        self.mark_listed(dir, since, std::iter::empty());
    }

    /// A listing of `dir` that started at `since` showed exactly `names`: if every one of them
    /// is a child in the table now, names not in the table are absent until the proof
    /// expires. Refused (nothing changes) when one is missing: the table could not answer for
    /// it. A newer proof is never replaced by an older one.
    pub fn mark_listed<'a>(&self, dir: u64, since: Instant, mut names: impl Iterator<Item = &'a str>) {
        let mut t = self.lock();
        if !names.all(|name| t.children.contains_key(&(dir, name.to_owned()))) {
            return;
        }
        if let Some(n) = t.nodes.get_mut(&dir) {
            if n.kind.is_dir() && n.complete.is_none_or(|c| c < since) {
                n.complete = Some(since);
            }
        }
    }

    /// Move `name` in `parent` to `new_name` in `new_parent`, replacing whatever was there.
    pub fn rename(&self, parent: u64, name: &str, new_parent: u64, new_name: &str) {
        let mut t = self.lock();
        unlink_locked(&mut t, new_parent, new_name);
        t.absent.forget(&(new_parent, new_name.to_owned()));
        t.absent
            .note((parent, name.to_owned()), Instant::now(), self.negative_ttl);
        let Some(ino) = t.children.remove(&(parent, name.to_owned())) else {
            return;
        };
        if let Some(p) = t.nodes.get_mut(&parent) {
            p.children = p.children.saturating_sub(1);
        }
        if let Some(n) = t.nodes.get_mut(&ino) {
            n.parent = new_parent;
            n.name = new_name.to_owned();
        }
        t.children.insert((new_parent, new_name.to_owned()), ino);
        if let Some(p) = t.nodes.get_mut(&new_parent) {
            p.children += 1;
        }
        maybe_drop(&mut t, parent);
    }

    /// Names of children of `parent` that exist only locally (files being written that are
    /// not yet in the bucket), so listings can include them.
    pub fn open_children(&self, parent: u64) -> Vec<Inode> {
        let t = self.lock();
        t.children
            .iter()
            .filter(|((p, _), _)| *p == parent)
            .filter_map(|(_, &ino)| {
                let n = t.nodes.get(&ino)?;
                (n.open > 0 && n.kind == Kind::File)
                    .then(|| snapshot(&t, ino))
                    .flatten()
            })
            .collect()
    }

    /// Number of inodes held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().nodes.len()
    }

    /// Whether only the root is held.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }
}

fn unlink_locked(t: &mut Table, parent: u64, name: &str) {
    let Some(ino) = t.children.remove(&(parent, name.to_owned())) else {
        return;
    };
    if let Some(n) = t.nodes.get_mut(&ino) {
        n.linked = false;
    }
    // The parent keeps counting the node until it is dropped: an unlinked file that is still
    // open needs its parent chain to derive its key.
    maybe_drop(t, ino);
}

/// Drop `ino` if nothing references it any more, then reconsider its parent.
fn maybe_drop(t: &mut Table, mut ino: u64) {
    // Bounded by the tree depth; each step removes one node.
    loop {
        if ino == ROOT_INO {
            return;
        }
        let Some(n) = t.nodes.get(&ino) else { return };
        if n.lookups > 0 || n.children > 0 || n.open > 0 || (n.kind == Kind::TenantRoot && n.linked) {
            return;
        }
        let (parent, name, linked) = (n.parent, n.name.clone(), n.linked);
        t.nodes.remove(&ino);
        let forgotten = linked && t.children.get(&(parent, name.clone())) == Some(&ino);
        if forgotten {
            t.children.remove(&(parent, name));
        }
        if let Some(p) = t.nodes.get_mut(&parent) {
            p.children = p.children.saturating_sub(1);
            // The child still exists on the backend but no longer in the table.
            if forgotten {
                p.complete = None;
            }
        }
        ino = parent;
    }
}

fn snapshot(t: &Table, ino: u64) -> Option<Inode> {
    let n = t.nodes.get(&ino)?;
    Some(Inode {
        ino,
        parent: n.parent,
        tenant: n.tenant,
        key: key_of(t, ino)?,
        kind: n.kind,
        stat: n.stat.clone(),
        validated: n.validated,
    })
}

/// Key of `ino` relative to its tenant root, derived from the parent chain.
fn key_of(t: &Table, ino: u64) -> Option<String> {
    let mut parts = Vec::new();
    let mut cur = ino;
    // Depth is bounded by the number of nodes; a cycle would be a bug, so stop rather than spin.
    for _ in 0..=t.nodes.len() {
        let n = t.nodes.get(&cur)?;
        match n.kind {
            Kind::Root | Kind::TenantRoot => {
                parts.reverse();
                return Some(parts.join("/"));
            }
            Kind::Dir | Kind::File => {
                parts.push(n.name.as_str());
                cur = n.parent;
            }
        }
    }
    None
}

/// Whether `ino` lies below `dir` (its parent chain reaches `dir`; bounded against a cycle).
fn descends_from(nodes: &HashMap<u64, Node>, mut ino: u64, dir: u64) -> bool {
    for _ in 0..4096 {
        match nodes.get(&ino) {
            Some(n) if n.parent == dir => return true,
            Some(n) if n.parent != ino => ino = n.parent,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64) -> Stat {
        Stat::local(size, SystemTime::UNIX_EPOCH, None)
    }

    /// As a listing reports an object: Last-Modified as mtime, not known to be the real one.
    fn listed(size: u64, etag: Option<&str>, last_modified: u64) -> Stat {
        let lm = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(last_modified);
        Stat {
            size,
            mtime: lm,
            etag: etag.map(ETag::new),
            mtime_known: false,
            last_modified: Some(lm),
            posix: None,
        }
    }

    #[test]
    fn listing_keeps_known_mtime_of_the_same_version_only() {
        let (t, root) = setup();
        let stored = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(5);
        let known = |etag: Option<&str>, lm: u64| Stat {
            mtime: stored,
            mtime_known: true,
            ..listed(3, etag, lm)
        };
        let f = t
            .upsert_child(root, "f", Some(0), Kind::File, known(Some("e1"), 100), 1)
            .unwrap();
        let same = t
            .upsert_child(root, "f", Some(0), Kind::File, listed(3, Some("e1"), 200), 0)
            .unwrap();
        assert_eq!((same.stat.mtime, same.stat.mtime_known), (stored, true));
        t.set_stat(f.ino, listed(3, Some("e2"), 200));
        let changed = t.get(f.ino).unwrap();
        assert_eq!(
            changed.stat.mtime,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(200)
        );
        assert!(!changed.stat.mtime_known);
        // Without ETags, size and Last-Modified decide.
        t.set_stat(f.ino, known(None, 100));
        t.set_stat(f.ino, listed(3, None, 100));
        assert_eq!(t.get(f.ino).unwrap().stat.mtime, stored);
        t.set_stat(f.ino, listed(3, None, 101));
        assert!(!t.get(f.ino).unwrap().stat.mtime_known);
        // A known mtime (HEAD, setattr) always replaces.
        t.set_stat(f.ino, known(Some("e1"), 100));
        t.set_stat(f.ino, Stat::local(3, SystemTime::UNIX_EPOCH, Some(ETag::new("e1"))));
        assert_eq!(t.get(f.ino).unwrap().stat.mtime, SystemTime::UNIX_EPOCH);
    }

    fn setup() -> (InodeTable, u64) {
        let t = InodeTable::new();
        let tenant = t
            .upsert_child(ROOT_INO, "acme", Some(0), Kind::TenantRoot, Stat::dir(), 1)
            .unwrap();
        (t, tenant.ino)
    }

    #[test]
    fn keys_follow_directory_renames() {
        let (t, root) = setup();
        let d = t.upsert_child(root, "a", Some(0), Kind::Dir, Stat::dir(), 1).unwrap();
        let f = t.upsert_child(d.ino, "f.mp4", Some(0), Kind::File, file(3), 1).unwrap();
        assert_eq!(f.key, "a/f.mp4");
        t.rename(root, "a", root, "b");
        assert_eq!(t.get(f.ino).unwrap().key, "b/f.mp4");
        assert!(t.child(root, "a").is_none());
        assert_eq!(t.child(root, "b").unwrap().ino, d.ino);
    }

    #[test]
    fn a_renamed_directorys_descendants_are_revalidated_and_nothing_else() {
        let (t, root) = setup();
        let a = t.upsert_child(root, "a", Some(0), Kind::Dir, Stat::dir(), 1).unwrap();
        let sub = t
            .upsert_child(a.ino, "sub", Some(0), Kind::Dir, Stat::dir(), 1)
            .unwrap();
        let f = t.upsert_child(sub.ino, "f", Some(0), Kind::File, file(3), 1).unwrap();
        let g = t.upsert_child(root, "g", Some(0), Kind::File, file(3), 1).unwrap();
        t.invalidate_below(a.ino);
        let hour = std::time::Duration::from_secs(3600);
        for ino in [sub.ino, f.ino] {
            assert!(t.get(ino).unwrap().validated.elapsed() > hour, "{ino} still fresh");
        }
        for ino in [a.ino, g.ino, root] {
            assert!(t.get(ino).unwrap().validated.elapsed() < hour, "{ino} invalidated");
        }
    }

    #[test]
    fn inodes_are_stable_and_freed_on_forget() {
        let (t, root) = setup();
        let a = t.upsert_child(root, "x", Some(0), Kind::File, file(1), 1).unwrap();
        let b = t.upsert_child(root, "x", Some(0), Kind::File, file(2), 1).unwrap();
        assert_eq!(a.ino, b.ino);
        assert_eq!(b.stat.size, 2);
        let before = t.len();
        t.forget(a.ino, 1);
        assert_eq!(t.len(), before);
        t.forget(a.ino, 1);
        assert_eq!(t.len(), before - 1);
        let c = t.upsert_child(root, "x", Some(0), Kind::File, file(2), 1).unwrap();
        assert_ne!(c.ino, a.ino, "inode numbers are never reused");
    }

    #[test]
    fn parent_outlives_children_and_open_files_outlive_unlink() {
        let (t, root) = setup();
        let d = t.upsert_child(root, "d", Some(0), Kind::Dir, Stat::dir(), 1).unwrap();
        let f = t.upsert_child(d.ino, "f", Some(0), Kind::File, file(1), 1).unwrap();
        t.forget(d.ino, 1);
        assert!(t.get(d.ino).is_ok(), "still has a child");
        t.open(f.ino);
        t.unlink(d.ino, "f");
        t.forget(f.ino, 1);
        assert!(t.get(f.ino).is_ok(), "still open");
        t.close(f.ino);
        assert!(t.get(f.ino).is_err());
        assert!(t.get(d.ino).is_err(), "parent freed with its last child");
    }

    #[test]
    fn absence_never_hides_a_child_in_the_table() {
        let t = InodeTable::with_negative_ttl(Duration::from_secs(60));
        let root = t
            .upsert_child(ROOT_INO, "acme", Some(0), Kind::TenantRoot, Stat::dir(), 1)
            .unwrap()
            .ino;
        // A create lands while a lookup of the same name still waits for the backend.
        let asked = Instant::now();
        t.upsert_child(root, "x", Some(0), Kind::File, file(1), 1).unwrap();
        t.note_absent(root, "x", asked);
        assert!(t.absent_since(root, "x").is_none());
        // Renamed away: the old name is absent, the new one is not.
        t.rename(root, "x", root, "y");
        assert!(t.absent_since(root, "x").is_some());
        assert!(t.absent_since(root, "y").is_none());
        // Proven absent, then created here, then removed here.
        t.note_absent(root, "z", Instant::now());
        t.upsert_child(root, "z", Some(0), Kind::File, file(1), 1).unwrap();
        assert!(t.absent_since(root, "z").is_none());
        t.unlink(root, "z");
        assert!(t.absent_since(root, "z").is_some());
        // An empty directory answers for every name not in the table, from its proof's time.
        let d = t.upsert_child(root, "d", Some(0), Kind::Dir, Stat::dir(), 1).unwrap();
        let proof = Instant::now() - Duration::from_secs(5);
        t.mark_empty(d.ino, proof);
        assert_eq!(t.absent_since(d.ino, "anything"), Some(proof));
        // A table that trusts nothing answers nothing.
        let never = InodeTable::new();
        never.note_absent(ROOT_INO, "q", Instant::now());
        assert!(never.absent_since(ROOT_INO, "q").is_none());
    }

    #[test]
    fn kind_change_gets_a_new_inode() {
        let (t, root) = setup();
        let a = t.upsert_child(root, "x", Some(0), Kind::File, file(1), 1).unwrap();
        let b = t.upsert_child(root, "x", Some(0), Kind::Dir, Stat::dir(), 1).unwrap();
        assert_ne!(a.ino, b.ino);
        assert_eq!(t.child(root, "x").unwrap().kind, Kind::Dir);
    }
}
