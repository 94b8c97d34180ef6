//! Open file and directory handles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::read::ObjectReader;
use crate::tenant::Tenant;
use crate::upload::WriteSession;

use super::dir::DirStream;

/// State shared by every handle that writes one inode: all writers of a file write the same
/// session, as on a local filesystem where two descriptors share one inode.
#[derive(Debug)]
pub struct WriteState {
    /// Inode being written.
    pub ino: u64,
    /// Tenant of the file.
    pub tenant: Arc<Tenant>,
    /// The upload session. Lock order: this lock is taken after none of the fs's std locks.
    pub session: tokio::sync::Mutex<WriteSession>,
    /// Something is not published yet: data, size or mtime changed, or the file was created
    /// or truncated, since the last commit. The last release commits it.
    pub needs_commit: AtomicBool,
    /// Data, size or mtime changed since open or the last commit. Only then does a flush or
    /// fsync commit: a close with nothing written (the shell's close of the descriptor it has
    /// just `dup2`ed onto stdout for `cmd > file`) must not publish the file truncated.
    pub written: AtomicBool,
    /// The file was unlinked while open: discard instead of committing.
    pub unlinked: AtomicBool,
    /// Open handles sharing this state.
    pub handles: AtomicUsize,
    /// Size of the object the session started from (0 for a new or truncated file).
    pub base_size: u64,
    /// Bytes of this file counted in the tenant's quota usage (see `fs/limits.rs`).
    pub accounted: AtomicU64,
    /// A limit refused a write: nothing of this session may be published (see `fs/limits.rs`).
    pub refused: Mutex<Option<crate::limits::LimitError>>,
}

/// What a file handle refers to.
#[derive(Debug)]
pub enum Handle {
    /// Read-only open of an object, with its own read-ahead state.
    Read {
        /// Inode.
        ino: u64,
        /// Reader pinned to the object version seen at open.
        reader: ObjectReader,
        /// The tenant binding at open: held so a reload that removes or moves the tenant
        /// leaves this file's attributes and storage in place until it is closed.
        tenant: Arc<Tenant>,
    },
    /// Read-only open of a closed file still queued for write-back: reads its staged bytes.
    Pending {
        /// Inode.
        ino: u64,
        /// The staged content (stays readable after its upload deletes it).
        file: crate::upload::writeback::PendingFile,
        /// The tenant, for its counters.
        tenant: Arc<Tenant>,
    },
    /// Open for writing (or reading a file that is being written), with the process (thread
    /// group) that opened it: only its `close()` commits, see [`super::Filesystem::flush`].
    Write(Arc<WriteState>, u32),
    /// An open directory.
    Dir(tokio::sync::Mutex<DirStream>),
}

/// Handle number → handle.
#[derive(Debug, Default)]
pub struct HandleTable {
    map: Mutex<HashMap<u64, Arc<Handle>>>,
    next: AtomicU64,
}

impl HandleTable {
    /// Register a handle and return its number.
    pub fn insert(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(fh, Arc::new(h));
        fh
    }

    /// The handle `fh`, if open.
    pub fn get(&self, fh: u64) -> Option<Arc<Handle>> {
        self.lock().get(&fh).cloned()
    }

    /// Close `fh`.
    pub fn remove(&self, fh: u64) -> Option<Arc<Handle>> {
        self.lock().remove(&fh)
    }

    /// Number of open handles.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Handle>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}
