//! The one async bridge: every request becomes a task on the tokio runtime that owns its
//! reply, so the FUSE request loop never waits on the network. Errors are logged once here
//! and answered with the errno chosen by `fs::error`.

use std::future::Future;
use std::sync::Arc;

use fuser::{
    Errno, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyWrite,
};
use tokio::sync::Semaphore;
use tracing::{debug, warn, Instrument};

use crate::fs::{Error, Filesystem};

/// A reply that can carry an errno (each fuser reply type has its own `error`).
pub(crate) trait FailReply: Send + 'static {
    fn fail(self, errno: Errno);
}

macro_rules! fail_reply {
    ($($t:ty),*) => {$(
        impl FailReply for $t {
            fn fail(self, errno: Errno) {
                self.error(errno);
            }
        }
    )*};
}
fail_reply!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyOpen,
    ReplyWrite
);

/// Spawns filesystem operations and answers their replies.
#[derive(Debug, Clone)]
pub(crate) struct Dispatcher {
    pub(crate) fs: Arc<Filesystem>,
    rt: tokio::runtime::Handle,
    /// Caps requests in flight so a flood of reads cannot exhaust memory.
    limit: Arc<Semaphore>,
}

impl Dispatcher {
    pub(crate) fn new(fs: Arc<Filesystem>, rt: tokio::runtime::Handle, max_in_flight: usize) -> Self {
        Self {
            fs,
            rt,
            limit: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }

    /// Run `op` on the runtime; answer with `ok(reply, value)` or the mapped errno.
    /// The reply is consumed exactly once on every path.
    pub(crate) fn run<R, T, Fut>(
        &self,
        name: &'static str,
        req: u64,
        reply: R,
        op: impl FnOnce(Arc<Filesystem>) -> Fut,
        ok: impl FnOnce(R, T) + Send + 'static,
    ) where
        R: FailReply,
        T: Send + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let fut = op(self.fs.clone());
        self.spawn(name, req, async move {
            match fut.await {
                Ok(v) => ok(reply, v),
                Err(e) => {
                    log_error(name, &e);
                    reply.fail(errno(&e));
                }
            }
        });
    }

    /// Run `f` on the calling (FUSE) thread inside the runtime's context, for work that never
    /// waits but may start tasks.
    pub(crate) fn enter<T>(&self, f: impl FnOnce(&Filesystem) -> T) -> T {
        let _rt = self.rt.enter();
        f(&self.fs)
    }

    /// Spawn a request task that answers its reply itself (listings fill the reply as they go).
    pub(crate) fn spawn(&self, name: &'static str, req: u64, fut: impl Future<Output = ()> + Send + 'static) {
        let limit = self.limit.clone();
        let span = tracing::debug_span!("fuse", op = name, req);
        self.rt.spawn(
            async move {
                // The semaphore is never closed, so acquire cannot fail; run anyway if it did.
                let _permit = limit.acquire_owned().await.ok();
                fut.await;
            }
            .instrument(span),
        );
    }
}

/// The errno for an fs error.
pub(crate) fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

/// Log an error once, at a level matching how surprising it is.
pub(crate) fn log_error(op: &str, e: &Error) {
    if e.is_expected() {
        debug!(op, error = %e, "request answered with an error");
    } else {
        warn!(op, error = %e, "request failed");
    }
}
