//! Tenants: the directories under the mount root, each bound to a backend view.

use std::collections::HashMap;
use std::sync::Arc;

use crate::backend::Backend;
use crate::namespace::TenantId;

/// One tenant as the filesystem sees it.
#[derive(Debug)]
pub struct Tenant {
    /// Index in the table (also part of block cache keys, so tenants never share blocks).
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
}

/// All tenants of a mount, by id and by name.
#[derive(Debug, Default)]
pub struct TenantTable {
    tenants: Vec<Arc<Tenant>>,
    by_name: HashMap<String, TenantId>,
}

impl TenantTable {
    /// Build the table; names are assumed validated and unique (config validation does it),
    /// a later duplicate is ignored rather than shadowing the first.
    pub fn new(specs: Vec<TenantSpec>) -> Self {
        let mut t = Self::default();
        for s in specs {
            if t.by_name.contains_key(&s.name) {
                continue;
            }
            let Ok(id) = TenantId::try_from(t.tenants.len()) else {
                break;
            };
            t.by_name.insert(s.name.clone(), id);
            t.tenants.push(Arc::new(Tenant {
                id,
                name: s.name,
                backend: s.backend,
                read_only: s.read_only,
                uid: s.uid,
                gid: s.gid,
                mode: s.mode,
                posix_metadata: s.posix_metadata,
                exclusive_create: s.exclusive_create,
            }));
        }
        t
    }

    /// Tenant by id.
    pub fn get(&self, id: TenantId) -> Option<&Arc<Tenant>> {
        self.tenants.get(usize::try_from(id).ok()?)
    }

    /// Tenant by directory name.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.by_name.get(name).and_then(|&id| self.get(id))
    }

    /// All tenants in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.iter()
    }

    /// Number of tenants.
    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}
