//! Keeping a directory's completeness proof fresh while files are created in it.
//!
//! Each file `cp -r` creates costs the kernel a lookup of its new name first. In a directory
//! known complete (created here, or listed to its end: see `namespace`), that lookup is
//! answered "absent" from memory, but only for `negative_ttl` after the proof: a directory
//! filled one file per round trip outlives it after a few dozen files at 20-80 ms, and from
//! then on every file would cost a HEAD and a LIST before its PUT. So when a lookup is answered
//! from a proof older than half its lifetime, the directory is listed again in the background:
//! if every name the listing shows is in the inode table (the files this mount created are),
//! the proof is renewed from the instant the listing started; if another client added a name,
//! nothing is renewed and the proof lapses as it would have. Lookups never wait for it, and
//! the trust given to a negative answer stays what `negative_ttl` says.
//!
//! Bounded: one listing per directory at a time, only for directories whose table holds at
//! most [`RELIST_MAX_CHILDREN`] children (one page), and a listing with more pages is dropped.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Filesystem;
use crate::backend::ListParams;
use crate::namespace::name::{dir_prefix, entry_name};
use crate::namespace::Inode;
use crate::tenant::Tenant;

/// Largest directory (children in the table) re-listed to renew its proof: one LIST page.
pub(super) const RELIST_MAX_CHILDREN: u64 = 1000;

/// Directories being re-listed (inode numbers), so one listing at a time serves each.
#[derive(Debug, Default)]
pub(super) struct Relisting(Mutex<HashSet<u64>>);

impl Filesystem {
    /// A lookup in `dir` was answered "absent" from a proof given at `proven`: renew the
    /// directory's completeness proof in the background if it is past half its lifetime.
    pub(super) fn renew_complete_if_due(&self, dir: &Inode, proven: Instant, tenant: &Arc<Tenant>) {
        if proven.elapsed() < self.config.negative_ttl / 2
            || self.inodes.complete_since(dir.ino) != Some(proven)
            || self.inodes.child_count(dir.ino) > RELIST_MAX_CHILDREN
        {
            return;
        }
        if !self
            .relisting
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.ino)
        {
            return;
        }
        let (inodes, relisting, tenant) = (self.inodes.clone(), self.relisting.clone(), tenant.clone());
        let (ino, prefix) = (dir.ino, dir_prefix(&dir.key));
        tokio::spawn(async move {
            let started = Instant::now();
            let params = ListParams::new(prefix.clone(), true).with_max_keys(1000);
            // A failure or a second page: no renewal, the proof lapses on its own.
            if let Ok(page) = tenant.backend.list(&params).await {
                if page.next.is_none() {
                    let names: Vec<&str> = page
                        .common_prefixes
                        .iter()
                        .filter_map(|cp| cp.get(prefix.len()..))
                        .chain(page.objects.iter().filter_map(|o| o.key.get(prefix.len()..)))
                        .filter(|rel| !rel.is_empty())
                        .filter_map(entry_name)
                        .collect();
                    inodes.mark_listed(ino, started, names.into_iter());
                }
            }
            relisting.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&ino);
        });
    }
}
