//! Directory listings (streamed page by page) and namespace changes: mkdir, rmdir, unlink,
//! rename.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tracing::{debug, info};

use super::attr::{attr_of, DirEntry, DirReplier};
use super::copy::{copy_object, copy_plan, CopyPlan};
use super::handles::Handle;
use super::{listed_stat_of, Entry, Error, Filesystem, NewNode, Result};
use crate::backend::paging::{ListGuard, MAX_LISTING_ENTRIES};
use crate::backend::{BackendErrorKind, ListParams, PutOptions};
use crate::namespace::name::{child_key, dir_prefix, entry_name, validate_name};
use crate::namespace::{Inode, Kind, Stat, TenantId};
use crate::tenant::Tenant;

/// One listed name before it becomes a directory entry.
#[derive(Debug, Clone)]
struct Listed {
    name: String,
    tenant: Option<TenantId>,
    kind: Kind,
    stat: Stat,
}

/// State of one open directory: entries fetched so far and where the listing continues.
///
/// Offsets handed to the kernel are indexes into `entries` (plus one), so they stay valid
/// while more pages are fetched; only a page the kernel has not reached yet is requested.
#[derive(Debug)]
pub struct DirStream {
    ino: u64,
    entries: Vec<Listed>,
    seen: HashSet<String>,
    next: Option<String>,
    done: bool,
    /// When the first page was asked for: a listing read to its end shows every child that
    /// existed then.
    started: Option<Instant>,
    /// The directory was offered to the inode table as complete (once per stream).
    offered: bool,
    /// Stops a listing the server never ends (created with the first page).
    guard: Option<ListGuard>,
}

impl Filesystem {
    /// Open directory `ino` for listing.
    pub async fn opendir(&self, ino: u64) -> Result<u64> {
        let inode = self.inodes.get(ino)?;
        if !inode.kind.is_dir() {
            return Err(Error::expected(libc::ENOTDIR, "not a directory"));
        }
        let mut stream = DirStream {
            ino,
            entries: Vec::new(),
            seen: HashSet::new(),
            next: None,
            done: false,
            started: None,
            offered: false,
            guard: None,
        };
        if inode.kind == Kind::Root {
            // Tenant names are unique: no need for `push`'s duplicate check (a set of 100,000
            // names per opendir of the root). One generation of the table, in name order.
            let tenants = self.tenants.snapshot();
            stream.entries.reserve(tenants.len());
            for t in tenants {
                stream.entries.push(Listed {
                    name: t.name.clone(),
                    tenant: Some(t.id),
                    kind: Kind::TenantRoot,
                    stat: Stat::dir(),
                });
            }
            stream.done = true;
        } else {
            // Closed files still queued for write-back, and files still being written, are not
            // in the bucket yet (or only in an older version): show them first.
            if let Some(t) = inode.tenant.and_then(|id| self.tenants.get(id)) {
                let prefix = dir_prefix(&inode.key);
                for (key, p) in self.writeback.pending_under(super::writeback::scope(&t), &prefix) {
                    match key.get(prefix.len()..).and_then(entry_name) {
                        Some(name) if !name.contains('/') => stream.push(Listed {
                            name: name.to_owned(),
                            tenant: inode.tenant,
                            kind: Kind::File,
                            stat: super::writeback::pending_stat(&t, &p),
                        }),
                        _ => {}
                    }
                }
            }
            for child in self.inodes.open_children(ino) {
                if let Some(name) = child.key.rsplit('/').next() {
                    stream.push(Listed {
                        name: name.to_owned(),
                        tenant: inode.tenant,
                        kind: Kind::File,
                        stat: child.stat.clone(),
                    });
                }
            }
        }
        Ok(self.handles.insert(Handle::Dir(tokio::sync::Mutex::new(stream))))
    }

    /// List directory handle `fh` from `offset`. With `plus`, every entry the replier accepts
    /// is a kernel reference (readdirplus) and gets an inode.
    pub async fn readdir(&self, fh: u64, offset: u64, plus: bool, replier: &mut (dyn DirReplier + Send)) -> Result<()> {
        let h = self
            .handles
            .get(fh)
            .ok_or_else(|| Error::new(libc::EBADF, format!("unknown handle {fh}")))?;
        let Handle::Dir(stream) = &*h else {
            return Err(Error::new(libc::ENOTDIR, "not a directory handle"));
        };
        let mut stream = stream.lock().await;
        let dir = self.inodes.get(stream.ino)?;
        let ttl = self.config.attr_ttl;
        // Offsets 1 and 2 are "." and "..".
        let mut pos = offset;
        if pos == 0 {
            let e = DirEntry {
                ino: dir.ino,
                offset: 1,
                name: ".".into(),
                attr: self.attr(&dir),
            };
            if replier.add(&e, ttl) {
                return Ok(());
            }
            pos = 1;
        }
        if pos == 1 {
            let parent = self.inodes.get(dir.parent).unwrap_or_else(|_| dir.clone());
            let e = DirEntry {
                ino: parent.ino,
                offset: 2,
                name: "..".into(),
                attr: self.attr(&parent),
            };
            if replier.add(&e, ttl) {
                return Ok(());
            }
            pos = 2;
        }
        let tenant = dir.tenant.and_then(|id| self.tenants.get(id));
        let posix = tenant.as_ref().is_some_and(|t| t.posix_metadata);
        let owner = |l: &Listed| l.tenant.and_then(|id| self.tenants.get_any(id));
        // Bounded: each round either emits an entry, fetches a page, or returns.
        loop {
            let idx = usize::try_from(pos - 2).unwrap_or(usize::MAX);
            if idx >= stream.entries.len() {
                if stream.done {
                    self.offer_complete(&dir, &mut stream);
                    return Ok(());
                }
                let Some(tenant) = &tenant else { return Ok(()) };
                self.fetch_page(tenant, &dir, &mut stream).await?;
                continue;
            }
            let l = &stream.entries[idx];
            let next_offset = pos + 1;
            let mut entry_ttl = ttl;
            // Entries handed over without a node: the kernel holds no reference to them.
            let mut unlinked = false;
            let entry = if plus {
                let inode = self
                    .inodes
                    .upsert_child(dir.ino, &l.name, l.tenant, l.kind, l.stat.clone(), 0)?;
                let mut ino = inode.ino;
                if !inode.stat.mtime_known && posix {
                    // Mode, owner and even the type (a symlink?) are only in the HEAD: node id
                    // 0 tells the kernel to create no inode from this entry, so it never
                    // checks permissions against guessed bits; `stat` looks the name up.
                    ino = 0;
                    unlinked = true;
                } else if inode.kind == Kind::File && !inode.stat.mtime_known {
                    // Not cacheable: the kernel would answer stat() with Last-Modified, and
                    // `rsync -a` would see every file as changed. A lookup HEADs it.
                    entry_ttl = std::time::Duration::ZERO;
                }
                DirEntry {
                    ino,
                    offset: next_offset,
                    name: l.name.clone(),
                    attr: self.attr(&inode),
                }
            } else {
                let known = self.inodes.child(dir.ino, &l.name);
                let ino = known.as_ref().map_or(placeholder_ino(next_offset), |i| i.ino);
                // A looked-up entry knows its type (a symlink, say) better than the listing.
                let stat = match known {
                    Some(i) if i.kind == l.kind && i.stat.mtime_known => i.stat,
                    _ => l.stat.clone(),
                };
                let inode = Inode {
                    ino,
                    parent: dir.ino,
                    tenant: l.tenant,
                    key: String::new(),
                    kind: l.kind,
                    stat,
                    validated: std::time::Instant::now(),
                };
                let attr = attr_of(&inode, owner(l).as_deref(), self.config.root_owner);
                DirEntry {
                    ino,
                    offset: next_offset,
                    name: l.name.clone(),
                    attr,
                }
            };
            if replier.add(&entry, entry_ttl) {
                return Ok(());
            }
            if plus && !unlinked {
                // Accepted by the kernel: now it holds a reference. If a concurrent unlink
                // dropped the inode meanwhile, the name is gone and the kernel's reference
                // answers ESTALE, as for any removed file; re-adding it would resurrect it.
                self.inodes.add_lookups(entry.ino, 1);
            }
            pos = next_offset;
        }
    }

    /// A listing read to its end, every entry of which the kernel took as readdirplus (so each
    /// is in the inode table): the directory is complete as of the first page, and a name not
    /// in it is absent for `negative_ttl` (`ls` then `cp` asks nothing for the new names). A
    /// plain readdir puts no entries in the table, so the table refuses the claim.
    fn offer_complete(&self, dir: &Inode, stream: &mut DirStream) {
        if stream.offered {
            return;
        }
        stream.offered = true;
        if let Some(started) = stream.started {
            self.inodes
                .mark_listed(dir.ino, started, stream.entries.iter().map(|l| l.name.as_str()));
        }
    }

    async fn fetch_page(&self, tenant: &Tenant, dir: &Inode, stream: &mut DirStream) -> Result<()> {
        if stream.started.is_none() {
            stream.started = Some(Instant::now());
        }
        let params = ListParams::new(dir_prefix(&dir.key), true).with_continuation(stream.next.take());
        let page = tenant.backend.list(&params).await?;
        stream
            .guard
            .get_or_insert_with(|| ListGuard::new(&listing_name(tenant, &dir.key), MAX_LISTING_ENTRIES))
            .check(&page)?;
        let plen = dir_prefix(&dir.key).len();
        // On a tenant with POSIX metadata a directory's mode is on its marker, which the
        // listing does not show: not known until looked up.
        let dir_stat = Stat {
            mtime_known: !tenant.posix_metadata,
            ..Stat::dir()
        };
        // Within a page, a directory wins over an object of the same name (as in lookup).
        for cp in &page.common_prefixes {
            if let Some(name) = cp.get(plen..).and_then(entry_name) {
                stream.push(Listed {
                    name: name.to_owned(),
                    tenant: dir.tenant,
                    kind: Kind::Dir,
                    stat: dir_stat.clone(),
                });
            }
        }
        for o in &page.objects {
            let Some(rel) = o.key.get(plen..) else { continue };
            if rel.ends_with('/') {
                continue; // the directory's own marker, or an odd `a//` key
            }
            if let Some(name) = entry_name(rel) {
                stream.push(Listed {
                    name: name.to_owned(),
                    tenant: dir.tenant,
                    kind: Kind::File,
                    stat: listed_stat_of(o),
                });
            }
        }
        stream.next = page.next;
        stream.done = stream.next.is_none();
        Ok(())
    }

    /// Close a directory handle.
    pub fn releasedir(&self, fh: u64) {
        self.handles.remove(fh);
    }

    pub(super) fn writable_tenant(&self, dir: &Inode) -> Result<Arc<Tenant>> {
        let t = self.tenant_of(dir)?;
        if t.read_only {
            return Err(Error::read_only(&t.name));
        }
        Ok(t)
    }

    pub(super) fn child_dir(&self, parent: u64) -> Result<Inode> {
        let dir = self.inodes.get(parent)?;
        match dir.kind {
            Kind::Root => Err(Error::expected(libc::EPERM, "tenants are defined in the configuration")),
            Kind::File => Err(Error::expected(libc::ENOTDIR, "not a directory")),
            Kind::TenantRoot | Kind::Dir => Ok(dir),
        }
    }

    /// Create directory `name`, persisted as a `name/` marker object so it survives a remount
    /// (carrying its mode, owner and group on a tenant with POSIX metadata).
    pub async fn mkdir(&self, parent: u64, name: &OsStr, new: NewNode) -> Result<Entry> {
        let dir = self.child_dir(parent)?;
        let tenant = self.writable_tenant(&dir)?;
        let name = validate_name(name)?;
        let key = child_key(&dir.key, name);
        // The kernel looked the name up just before (mkdir is exclusive): if nothing was
        // there, neither an object nor anything below `name/`, the new directory is empty.
        let empty_since = self.inodes.absent_since(parent, name);
        let mtime = SystemTime::now();
        let mut stat = Stat::local(0, mtime, None);
        let mut opts = PutOptions::default();
        if tenant.posix_metadata {
            let posix = self.new_posix(&dir, libc::S_IFDIR, new);
            opts = opts.with_posix(posix).with_mtime(Some(mtime));
            stat = stat.with_posix(posix);
        }
        tenant
            .backend
            .put_opts(&format!("{key}/"), bytes::Bytes::new(), &opts)
            .await?;
        let inode = self
            .inodes
            .upsert_child(parent, name, Some(tenant.id), Kind::Dir, stat, 1)?;
        if let Some(at) = empty_since {
            self.inodes.mark_empty(inode.ino, at);
        }
        Ok(self.entry(&inode))
    }

    /// Remove an empty directory; `ENOTEMPTY` otherwise.
    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        let dir = self.child_dir(parent)?;
        let tenant = self.writable_tenant(&dir)?;
        let name = validate_name(name)?;
        let key = child_key(&dir.key, name);
        if !self
            .writeback
            .pending_under(super::writeback::scope(&tenant), &dir_prefix(&key))
            .is_empty()
        {
            return Err(Error::expected(
                libc::ENOTEMPTY,
                format!("{key}: files waiting for upload inside"),
            ));
        }
        if let Some(child) = self.inodes.child(parent, name) {
            if !self.inodes.open_children(child.ino).is_empty() {
                return Err(Error::expected(
                    libc::ENOTEMPTY,
                    format!("{key}: files being written inside"),
                ));
            }
        }
        let marker = dir_prefix(&key);
        let page = tenant
            .backend
            .list(&ListParams::new(marker.clone(), false).with_max_keys(2))
            .await?;
        if page.objects.iter().any(|o| o.key != marker) {
            return Err(Error::expected(libc::ENOTEMPTY, format!("{key}: directory not empty")));
        }
        tenant.backend.delete(&marker).await?;
        self.inodes.unlink(parent, name);
        Ok(())
    }

    /// Remove file `name`. A file still open for writing can finish; nothing will be stored.
    pub async fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        let dir = self.child_dir(parent)?;
        let tenant = self.writable_tenant(&dir)?;
        let name = validate_name(name)?;
        let key = child_key(&dir.key, name);
        let mut freed = 0;
        if let Some(child) = self.inodes.child(parent, name) {
            if child.kind.is_dir() {
                return Err(Error::expected(libc::EISDIR, "is a directory"));
            }
            freed = child.stat.size;
            if let Some(w) = self.writer(child.ino) {
                w.unlinked.store(true, Ordering::Release);
                freed = w.accounted.load(Ordering::Acquire);
            }
        }
        // Not uploaded yet: never will be. One uploading now finishes before the delete.
        self.writeback.cancel(super::writeback::scope(&tenant), &key).await;
        // A running quota count must know of the delete before the bucket does.
        tenant.policy.usage.note(&key, freed, freed);
        match tenant.backend.delete(&key).await {
            Ok(()) => tenant.policy.usage.resize(None, &key, freed, 0).unwrap_or(()),
            Err(e) if e.kind() == BackendErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        self.inodes.unlink(parent, name);
        Ok(())
    }

    /// Rename a file (server-side copy, then delete) or a directory of up to
    /// `max_rename_entries` objects (`EXDEV` above, so `mv` falls back to copy + delete).
    pub async fn rename(&self, parent: u64, name: &OsStr, new_parent: u64, new_name: &OsStr, flags: u32) -> Result<()> {
        let (src_dir, dst_dir) = (self.child_dir(parent)?, self.child_dir(new_parent)?);
        let tenant = self.writable_tenant(&src_dir)?;
        if dst_dir.tenant != src_dir.tenant {
            return Err(Error::expected(libc::EXDEV, "rename across tenants"));
        }
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(Error::expected(
                libc::EINVAL,
                "RENAME_EXCHANGE is not supported on object storage",
            ));
        }
        let (name, new_name) = (validate_name(name)?, validate_name(new_name)?);
        let (src, dst) = (child_key(&src_dir.key, name), child_key(&dst_dir.key, new_name));
        if src == dst {
            return Ok(());
        }
        // Renames work on objects: closed files still queued for write-back (the source, the
        // target, or anything in a directory being moved) are uploaded first.
        self.settle(&tenant, &src).await?;
        self.settle(&tenant, &dst).await?;
        if !self.writeback.is_idle() {
            self.writeback
                .wait_under(super::writeback::scope(&tenant), &dir_prefix(&src))
                .await?;
        }
        let kind = match self.inodes.child(parent, name) {
            Some(c) if self.fresh(&c) || self.writer(c.ino).is_some() => c.kind,
            _ => self.resolve(&tenant, &src).await?.0,
        };
        let target = match self.inodes.child(new_parent, new_name) {
            Some(c) => Some(c.kind),
            None => match self.resolve(&tenant, &dst).await {
                Ok((k, _)) => Some(k),
                Err(e) if e.errno() == libc::ENOENT => None,
                Err(e) => return Err(e),
            },
        };
        if flags & libc::RENAME_NOREPLACE != 0 && target.is_some() {
            return Err(Error::expected(libc::EEXIST, format!("{dst} exists")));
        }
        match (kind.is_dir(), target.map(Kind::is_dir)) {
            (true, Some(false)) => return Err(Error::expected(libc::ENOTDIR, format!("{dst} is not a directory"))),
            (false, Some(true)) => return Err(Error::expected(libc::EISDIR, format!("{dst} is a directory"))),
            _ => {}
        }
        if kind.is_dir() {
            self.rename_dir(&tenant, &src, &dst).await?;
            if let Some(moved) = self.inodes.child(parent, name) {
                self.inodes.invalidate_below(moved.ino);
            }
        } else {
            // A rename is a way to create a name: the tenant's extension rules apply to it.
            self.check_name(&tenant, new_name)?;
            let claimed = flags & libc::RENAME_NOREPLACE != 0 && self.claim(&tenant, &dst).await?;
            // The bytes move from `src` to `dst` (the usage is unchanged): a running quota
            // count must know before the bucket does, and forget it if the rename fails.
            let moved = self.inodes.child(parent, name).map(|c| {
                self.writer(c.ino)
                    .map_or(c.stat.size, |w| w.accounted.load(Ordering::Acquire))
            });
            let replaced = self.inodes.child(new_parent, new_name).map_or(0, |c| c.stat.size);
            let usage = &tenant.policy.usage;
            if let Some(size) = moved {
                usage.note(&src, size, 0);
                usage.note(&dst, replaced, size);
            }
            if let Err(e) = self.rename_file(&tenant, parent, name, &src, &dst).await {
                if let Some(size) = moved {
                    usage.note(&src, 0, size);
                    usage.note(&dst, size, replaced);
                }
                if claimed {
                    // Our own empty claim: the name is free again.
                    let _ = tenant.backend.delete(&dst).await;
                }
                return Err(e);
            }
        }
        self.inodes.rename(parent, name, new_parent, new_name);
        Ok(())
    }

    /// Claim the free name `dst` for a `RENAME_NOREPLACE` with an empty conditional PUT
    /// (`If-None-Match: *`), on providers that honour it: the lookup above saw the name free,
    /// but another mount may store it until the copy lands, and only the bucket can decide
    /// between two such renames (or a rename and an `O_EXCL` create). `false`: no claim made
    /// (the provider has no conditional writes; the lookup is all there is, as documented).
    async fn claim(&self, tenant: &Tenant, dst: &str) -> Result<bool> {
        if !tenant.exclusive_create {
            return Ok(false);
        }
        let opts = PutOptions::default().with_create_only(true);
        match tenant.backend.put_opts(dst, bytes::Bytes::new(), &opts).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == BackendErrorKind::PreconditionFailed => {
                Err(Error::expected(libc::EEXIST, format!("{dst} exists")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn rename_file(&self, tenant: &Tenant, parent: u64, name: &str, src: &str, dst: &str) -> Result<()> {
        if let Some(w) = self.inodes.child(parent, name).and_then(|c| self.writer(c.ino)) {
            // Open for writing: what is not committed yet is committed under the new key by
            // the writer's own close or fsync, never published early by the rename. The object
            // under the old key (the last committed or the replaced version), if there is one,
            // moves with the name, so it stays readable until the new content is complete,
            // and an unwritten range of it is still the session's base (read from `dst`).
            let mut s = w.session.lock().await;
            match copy_object(&tenant.backend, src, dst).await.map_err(Error::from) {
                Ok(()) => s.set_key(dst.to_owned()),
                // A new file nobody has committed yet: no object to move.
                Err(e) if e.errno() == libc::ENOENT => {
                    s.set_key(dst.to_owned());
                    info!(tenant = %tenant.name, src, dst, "renamed a file not stored yet");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            drop(s);
            tenant.backend.delete(src).await?;
            info!(tenant = %tenant.name, src, dst, "renamed file");
            return Ok(());
        }
        copy_object(&tenant.backend, src, dst).await?;
        tenant.backend.delete(src).await?;
        info!(tenant = %tenant.name, src, dst, "renamed file");
        Ok(())
    }

    async fn rename_dir(&self, tenant: &Tenant, src: &str, dst: &str) -> Result<()> {
        let (sp, dp) = (dir_prefix(src), dir_prefix(dst));
        // Target must be empty (POSIX): only its own marker may exist.
        let page = tenant
            .backend
            .list(&ListParams::new(dp.clone(), false).with_max_keys(2))
            .await?;
        if page.objects.iter().any(|o| o.key != dp) {
            return Err(Error::expected(libc::ENOTEMPTY, format!("{dst} is not empty")));
        }
        let mut keys = Vec::new();
        let mut token = None;
        let limit = self.config.max_rename_entries;
        let mut guard = ListGuard::new(&listing_name(tenant, src), MAX_LISTING_ENTRIES);
        // Bounded by the limit and the guard: we stop listing as soon as either is exceeded.
        loop {
            let page = tenant
                .backend
                .list(&ListParams::new(sp.clone(), false).with_continuation(token))
                .await?;
            guard.check(&page)?;
            keys.extend(page.objects.into_iter().map(|o| (o.key, o.size)));
            if keys.len() > limit {
                return Err(Error::expected(
                    libc::EXDEV,
                    format!("{src}: more than {limit} objects; raise write.max_rename_entries or copy"),
                ));
            }
            token = page.next;
            if token.is_none() {
                break;
            }
        }
        // A running quota count must know of the moves before the bucket does (undone below
        // if the rename fails).
        let targets: Vec<String> = keys
            .iter()
            .map(|(key, _)| format!("{dp}{}", key.get(sp.len()..).unwrap_or_default()))
            .collect();
        let usage = &tenant.policy.usage;
        for ((key, size), target) in keys.iter().zip(&targets) {
            usage.note(key, *size, 0);
            usage.note(target, 0, *size);
        }
        let res = self.move_objects(tenant, &keys, &targets, &sp, &dp).await;
        if res.is_err() {
            for ((key, size), target) in keys.iter().zip(&targets) {
                usage.note(key, 0, *size);
                usage.note(target, *size, 0);
            }
        }
        res?;
        debug!(tenant = %tenant.name, src, dst, objects = keys.len(), "renamed directory");
        Ok(())
    }

    /// Copy `keys` to `targets`, then delete them and the `sp` marker (see `rename_dir`).
    async fn move_objects(
        &self,
        tenant: &Tenant,
        keys: &[(String, u64)],
        targets: &[String],
        sp: &str,
        dp: &str,
    ) -> Result<()> {
        let caps = tenant.backend.capabilities();
        for ((key, size), target) in keys.iter().zip(targets) {
            if copy_plan(&caps, *size) == CopyPlan::Whole {
                // The listing gave the size: no HEAD needed for a one-request copy.
                tenant.backend.copy(key, target).await?;
            } else {
                copy_object(&tenant.backend, key, target).await?;
            }
        }
        if keys.is_empty() {
            // An empty directory exists only as this mount's inode or a marker: persist it.
            tenant.backend.put(dp, bytes::Bytes::new()).await?;
        }
        // Children before their folders (reverse key order: `a/b/c` before `a/b/`): a store
        // with real folders (WebDAV) refuses to delete one that still has entries.
        for (key, _) in keys.iter().rev() {
            tenant.backend.delete(key).await?;
        }
        tenant.backend.delete(sp).await?;
        Ok(())
    }
}

impl DirStream {
    fn push(&mut self, l: Listed) {
        if self.seen.insert(l.name.clone()) {
            self.entries.push(l);
        }
    }
}

/// Inode number shown by plain readdir for an entry the kernel has not looked up yet. The
/// kernel does not use it to address the file; it only has to be non-zero.
fn placeholder_ino(offset: u64) -> u64 {
    (1 << 63) | offset
}

/// A listing's name in errors: the tenant and the directory, escaped (a key may hold any byte).
fn listing_name(tenant: &Tenant, dir: &str) -> String {
    format!("of tenant {:?} in {:?}", tenant.name, dir)
}
