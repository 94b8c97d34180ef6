//! Tenants: the directories under the mount root, each bound to a backend view, and the live
//! table that a config reload changes while the mount serves.
//!
//! A [`Tenant`] is immutable. Its [`TenantId`] names one *binding* of a tenant name to a
//! storage location and is never reused during a mount: re-pointing a tenant (other backend,
//! bucket or prefix) retires the old binding and creates a new id. Inodes and block-cache keys
//! carry the id, so nothing cached for the old location can be served for the new one, and an
//! inode of a retired binding can never reach the new location.
//!
//! The table is the single swap point of a reload: [`TenantTable::apply`] takes one write lock
//! and applies a whole batch of changes under it, so every request, which resolves its tenant
//! once under a read lock, sees either all of the previous generation or all of the next.
//! Work per reload is proportional to the number of changes (map inserts and removals), not
//! to the table: a copy-on-write table would copy 100,000 entries to add one.
//!
//! Retired bindings stay reachable by id (not by name) while anything still holds them (open
//! handles keep an `Arc<Tenant>`), so a file opened before its tenant was removed or moved
//! keeps its attributes and finishes against its old backend. Every generation of a binding
//! counts: a handle opened before a reload that kept the id (a freeze, a mode change) holds
//! that older `Tenant`, and must still find it after a later reload retires the id.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, Weak};

use crate::backend::Backend;
use crate::limits::{LimitRules, Usage};
use crate::metrics::TenantMetrics;
use crate::namespace::TenantId;

/// One tenant as the filesystem sees it.
#[derive(Debug)]
pub struct Tenant {
    /// Identity of this binding (also part of block cache keys, so tenants never share
    /// blocks and a re-pointed tenant never sees the old location's blocks).
    pub id: TenantId,
    /// Directory name under the mount root.
    pub name: String,
    /// The tenant's storage, already confined to its prefix.
    pub backend: Arc<dyn Backend>,
    /// Refuse every change with `EROFS`.
    pub read_only: bool,
    /// Owner of everything in the tenant directory.
    pub uid: u32,
    /// Group of everything in the tenant directory.
    pub gid: u32,
    /// Permission bits of directories (files get the same bits without `x`), for what has
    /// no stored mode.
    pub mode: u16,
    /// Mode, owner and group are stored per object, and symlinks and special files exist.
    pub posix_metadata: bool,
    /// The backend makes `create_only` writes atomic (`If-None-Match: *`).
    pub exclusive_create: bool,
    /// Platform limits and the quota usage (shared with the binding's background recount).
    pub policy: Arc<TenantPolicy>,
    /// `close()` stages the file for a background upload (see `upload::writeback`).
    pub write_back: bool,
    /// Its counters (by name: they outlive reloads that re-point or update it).
    pub metrics: Arc<TenantMetrics>,
}

/// Parameters of one tenant, handed over by `app`.
#[derive(Debug)]
pub struct TenantSpec {
    /// Directory name.
    pub name: String,
    /// Backend view (wrap in [`crate::backend::prefix::PrefixBackend`] first).
    pub backend: Arc<dyn Backend>,
    /// Read-only tenant.
    pub read_only: bool,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Directory mode bits.
    pub mode: u16,
    /// Store mode, owner and group per object (the backend must keep user metadata).
    pub posix_metadata: bool,
    /// The backend makes `create_only` writes atomic.
    pub exclusive_create: bool,
    /// Limits and quota usage (`Default`: none).
    pub policy: Arc<TenantPolicy>,
    /// Closed files are uploaded in the background (crash-safe write-back).
    pub write_back: bool,
}

/// A tenant's platform limits and what it uses of its quota.
#[derive(Debug, Default)]
pub struct TenantPolicy {
    /// The rules.
    pub rules: LimitRules,
    /// Bytes counted against the quota (shared by the bindings of one location: a change of
    /// limits keeps the count).
    pub usage: Arc<Usage>,
    /// How often usage is recounted from a listing.
    pub recount: std::time::Duration,
    /// How URLs of the tenant's files are made.
    pub urls: crate::url::UrlMaker,
}

/// One change of a reload.
#[derive(Debug)]
pub enum TenantChange {
    /// A new tenant name.
    Add(TenantSpec),
    /// The tenant of that name goes away.
    Remove(String),
    /// Same name, new storage location: a new binding (new id) replaces the old one.
    Repoint(TenantSpec),
    /// Same name and location, other ownership/mode/read-only: the binding keeps its id and
    /// backend, so open files and cached blocks stay valid.
    Update(TenantSpec),
    /// Same name and location, other upload headers, limits or URL settings: the binding keeps
    /// its id (inodes, cached blocks and the write-back files pending under it stay valid:
    /// they belong to the location, not to the settings) and takes the spec's backend view and
    /// rules; the quota usage counted so far carries over.
    Reconfigure(TenantSpec),
}

/// What [`TenantTable::apply`] did, for kernel invalidation and the reload report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The generation now current.
    pub generation: u64,
    /// Names that appeared.
    pub added: Vec<String>,
    /// Names that disappeared.
    pub removed: Vec<String>,
    /// Names bound to a new location.
    pub repointed: Vec<String>,
    /// Names whose settings changed in place.
    pub updated: Vec<String>,
}

impl Applied {
    /// Names whose directory entry under the root the kernel must forget.
    pub fn root_entries_changed(&self) -> impl Iterator<Item = &str> {
        self.added
            .iter()
            .chain(&self.removed)
            .chain(&self.repointed)
            .map(String::as_str)
    }
}

#[derive(Debug, Default)]
struct Tables {
    generation: u64,
    next_id: TenantId,
    /// Live bindings by name; ordered so the root lists in a stable order.
    by_name: BTreeMap<String, Arc<Tenant>>,
    /// Live bindings by id.
    by_id: HashMap<TenantId, Arc<Tenant>>,
    /// Generations of bindings no longer live (retired, or replaced by an update that kept the
    /// id), by id: any of them may be what an open handle holds.
    retired: HashMap<TenantId, Vec<Weak<Tenant>>>,
}

impl Tables {
    fn bind(&mut self, s: TenantSpec, id: Option<TenantId>) -> Option<Arc<Tenant>> {
        let id = match id {
            Some(id) => id,
            None => {
                let id = self.next_id;
                self.next_id = self.next_id.checked_add(1)?;
                id
            }
        };
        let t = Arc::new(Tenant {
            id,
            metrics: crate::metrics::tenant(&s.name),
            name: s.name,
            backend: s.backend,
            read_only: s.read_only,
            uid: s.uid,
            gid: s.gid,
            mode: s.mode,
            posix_metadata: s.posix_metadata,
            exclusive_create: s.exclusive_create,
            policy: s.policy,
            write_back: s.write_back,
        });
        self.by_id.insert(id, t.clone());
        self.by_name.insert(t.name.clone(), t.clone());
        Some(t)
    }

    /// Keep `t` reachable by id for the handles that hold it, after it stops being live.
    fn supersede(&mut self, t: &Arc<Tenant>) {
        self.retired.entry(t.id).or_default().push(Arc::downgrade(t));
    }

    fn retire(&mut self, name: &str) -> Option<Arc<Tenant>> {
        let t = self.by_name.remove(name)?;
        self.by_id.remove(&t.id);
        self.supersede(&t);
        Some(t)
    }
}

/// All tenants of a mount, by id and by name. See the module docs for the reload model.
#[derive(Debug, Default)]
pub struct TenantTable {
    /// The one lock of this module: held only for map access, never across an await.
    inner: RwLock<Tables>,
}

impl TenantTable {
    /// Build the table; names are assumed validated and unique (config validation does it),
    /// a later duplicate is ignored rather than shadowing the first.
    pub fn new(specs: Vec<TenantSpec>) -> Self {
        let mut t = Tables::default();
        for s in specs {
            if t.by_name.contains_key(&s.name) {
                continue;
            }
            if t.bind(s, None).is_none() {
                break;
            }
        }
        Self { inner: RwLock::new(t) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        // Every mutation keeps the maps consistent before anything can panic.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Live tenant by id (`None` once a reload removed or re-pointed it).
    pub fn get(&self, id: TenantId) -> Option<Arc<Tenant>> {
        self.read().by_id.get(&id).cloned()
    }

    /// Tenant by id, live or retired but still held by an open file.
    pub fn get_any(&self, id: TenantId) -> Option<Arc<Tenant>> {
        let t = self.read();
        t.by_id
            .get(&id)
            .cloned()
            .or_else(|| t.retired.get(&id)?.iter().find_map(Weak::upgrade))
    }

    /// Live tenant by directory name.
    pub fn by_name(&self, name: &str) -> Option<Arc<Tenant>> {
        self.read().by_name.get(name).cloned()
    }

    /// All live tenants, in name order (one consistent generation).
    pub fn snapshot(&self) -> Vec<Arc<Tenant>> {
        self.read().by_name.values().cloned().collect()
    }

    /// The current generation: 0 at mount, +1 per applied reload.
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Number of live tenants.
    pub fn len(&self) -> usize {
        self.read().by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Apply a batch of changes as one new generation. Changes that do not fit the table
    /// (adding a name that exists, removing one that does not) are skipped: `app` computes
    /// the batch from the same table, so they only happen if two reloads race, and then the
    /// later one's view wins name by name.
    pub fn apply(&self, changes: Vec<TenantChange>) -> Applied {
        let mut t = self.inner.write().unwrap_or_else(|e| e.into_inner());
        // Retired bindings nothing holds any more: dropped here, at a cost bounded by the
        // number of bindings earlier reloads retired.
        t.retired.retain(|_, gens| {
            gens.retain(|w| w.strong_count() > 0);
            !gens.is_empty()
        });
        let mut out = Applied::default();
        for c in changes {
            match c {
                TenantChange::Add(s) => {
                    if t.by_name.contains_key(&s.name) {
                        continue;
                    }
                    let name = s.name.clone();
                    if t.bind(s, None).is_some() {
                        out.added.push(name);
                    }
                }
                TenantChange::Remove(name) => {
                    if t.retire(&name).is_some() {
                        out.removed.push(name);
                    }
                }
                TenantChange::Repoint(s) => {
                    let name = s.name.clone();
                    t.retire(&name);
                    if t.bind(s, None).is_some() {
                        out.repointed.push(name);
                    }
                }
                TenantChange::Update(s) => {
                    let Some(old) = t.by_name.get(&s.name).cloned() else {
                        continue;
                    };
                    let name = s.name.clone();
                    // Same location: keep the id (inodes, cached blocks) and the backend
                    // object (connections, open uploads).
                    let spec = TenantSpec {
                        backend: old.backend.clone(),
                        // Same rules (a change of limits re-points); keep the usage counted.
                        policy: old.policy.clone(),
                        ..s
                    };
                    t.supersede(&old);
                    t.bind(spec, Some(old.id));
                    out.updated.push(name);
                }
                TenantChange::Reconfigure(s) => {
                    let Some(old) = t.by_name.get(&s.name).cloned() else {
                        continue;
                    };
                    let name = s.name.clone();
                    let policy = Arc::new(TenantPolicy {
                        rules: s.policy.rules.clone(),
                        // Same location, same bytes stored: the count and open writers' shares stay.
                        usage: old.policy.usage.clone(),
                        recount: s.policy.recount,
                        urls: s.policy.urls.clone(),
                    });
                    t.supersede(&old);
                    t.bind(TenantSpec { policy, ..s }, Some(old.id));
                    out.updated.push(name);
                }
            }
        }
        t.generation += 1;
        out.generation = t.generation;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::InMemoryBackend;

    fn spec(name: &str, backend: &Arc<dyn Backend>, mode: u16) -> TenantSpec {
        TenantSpec {
            name: name.to_owned(),
            backend: backend.clone(),
            read_only: false,
            uid: 1,
            gid: 1,
            mode,
            posix_metadata: false,
            exclusive_create: false,
            policy: Default::default(),
            write_back: false,
        }
    }

    #[test]
    fn reload_changes_only_what_it_names() {
        let a: Arc<dyn Backend> = Arc::new(InMemoryBackend::new());
        let b: Arc<dyn Backend> = Arc::new(InMemoryBackend::new());
        let table = TenantTable::new(vec![spec("x", &a, 0o755), spec("y", &a, 0o755), spec("z", &a, 0o755)]);
        let (x, y, z) = (
            table.by_name("x").unwrap(),
            table.by_name("y").unwrap(),
            table.by_name("z").unwrap(),
        );
        let applied = table.apply(vec![
            TenantChange::Add(spec("w", &a, 0o755)),
            TenantChange::Remove("x".into()),
            TenantChange::Repoint(spec("y", &b, 0o755)),
            TenantChange::Update(spec("z", &b, 0o700)),
        ]);
        assert_eq!(applied.generation, 1);
        assert_eq!(
            (applied.added, applied.removed, applied.repointed, applied.updated),
            (vec!["w".into()], vec!["x".into()], vec!["y".into()], vec!["z".into()])
        );
        // Removed: gone by name and as a live id, still reachable while held.
        assert!(table.by_name("x").is_none() && table.get(x.id).is_none());
        assert_eq!(table.get_any(x.id).unwrap().name, "x");
        // Re-pointed: a new id on the new backend; the old binding is retired.
        let y2 = table.by_name("y").unwrap();
        assert_ne!(y2.id, y.id);
        assert!(Arc::ptr_eq(&y2.backend, &b));
        assert!(table.get(y.id).is_none());
        // Updated: same id and backend object, new mode.
        let z2 = table.by_name("z").unwrap();
        assert_eq!((z2.id, z2.mode), (z.id, 0o700));
        assert!(Arc::ptr_eq(&z2.backend, &a), "an update never swaps storage");
        // Names in order; ids never reused.
        let names: Vec<_> = table.snapshot().iter().map(|t| t.name.clone()).collect();
        assert_eq!(names, ["w", "y", "z"]);
        let w = table.by_name("w").unwrap();
        assert!(![x.id, y.id, z.id].contains(&w.id) && w.id != y2.id);
        // Once nothing holds a retired binding, it is gone for good.
        drop(x);
        table.apply(vec![]);
        assert!(table.get_any(0).is_none());
        assert_eq!(table.generation(), 2);
    }

    #[test]
    fn a_reconfigure_keeps_the_binding_and_the_usage_and_takes_the_new_view_and_rules() {
        let a: Arc<dyn Backend> = Arc::new(InMemoryBackend::new());
        let view: Arc<dyn Backend> = Arc::new(InMemoryBackend::new());
        let table = TenantTable::new(vec![spec("t", &a, 0o755)]);
        let t = table.by_name("t").unwrap();
        t.policy.usage.set_counted(1000, 0);
        let mut s = spec("t", &view, 0o700);
        s.policy = Arc::new(TenantPolicy {
            rules: LimitRules {
                quota: Some(5000),
                ..LimitRules::default()
            },
            ..TenantPolicy::default()
        });
        let applied = table.apply(vec![TenantChange::Reconfigure(s)]);
        assert_eq!(applied.updated, ["t"]);
        assert!(applied.repointed.is_empty());
        let t2 = table.by_name("t").unwrap();
        assert_eq!(
            t2.id, t.id,
            "same location, same binding (inodes, blocks, write-back scope)"
        );
        assert!(Arc::ptr_eq(&t2.backend, &view), "the new view (headers) is taken");
        assert_eq!((t2.mode, t2.policy.rules.quota), (0o700, Some(5000)));
        assert!(Arc::ptr_eq(&t2.policy.usage, &t.policy.usage), "usage carried over");
        assert_eq!(t2.policy.usage.used(), 1000);
    }

    /// `migrate --freeze` then `--switch`: a reload that keeps the id (the freeze) and then
    /// one that re-points. A file opened before the freeze holds the first generation, which
    /// must stay reachable by its id after the re-point retires the id.
    #[test]
    fn a_handle_from_before_an_update_finds_its_binding_after_a_repoint() {
        let a: Arc<dyn Backend> = Arc::new(InMemoryBackend::new());
        let b: Arc<dyn Backend> = Arc::new(InMemoryBackend::new());
        let table = TenantTable::new(vec![spec("t", &a, 0o755)]);
        let held = table.by_name("t").unwrap();
        table.apply(vec![TenantChange::Reconfigure(spec("t", &a, 0o555))]);
        table.apply(vec![TenantChange::Repoint(spec("t", &b, 0o755))]);
        assert!(table.get(held.id).is_none(), "not live any more");
        let found = table.get_any(held.id).expect("held by an open handle");
        assert!(Arc::ptr_eq(&found, &held));
        // Once the handle closes, every generation of the id is gone.
        drop((held, found));
        table.apply(vec![]);
        assert!(table.get_any(0).is_none());
    }
}
