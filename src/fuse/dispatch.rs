//! The one async bridge: every request becomes a task that owns its reply, polled once on
//! the FUSE thread and moved to the tokio runtime when it has to wait, so the FUSE request
//! loop never waits on the network. Errors are logged once here
//! and answered with the errno chosen by `fs::error`. Requests and errors are counted here
//! too (`crate::metrics`): every request task starts in [`Dispatcher::start`], every error
//! reply goes through [`log_error`], and the two fast paths answered on the FUSE thread call
//! [`counted`].

use std::future::Future;
use std::sync::Arc;

use fuser::{
    Errno, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyWrite,
};
use tracing::{debug, warn, Instrument};

use crate::fair::{SharePermit, Shares};
use crate::fs::{Error, Filesystem};
use crate::namespace::TenantId;

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
    ReplyWrite,
    fuser::ReplyXattr
);

/// Where a request task is first polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Poll {
    /// On the FUSE thread; moved to the runtime only if it has to wait.
    Here,
    /// On the runtime.
    Runtime,
}

/// Spawns filesystem operations and answers their replies.
#[derive(Debug, Clone)]
pub(crate) struct Dispatcher {
    pub(crate) fs: Arc<Filesystem>,
    rt: tokio::runtime::Handle,
    /// Caps requests in flight so a flood of reads cannot exhaust memory, and each tenant
    /// to its share of them (see [`crate::fair`]): a tenant whose storage hangs holds at most
    /// that share, and requests of the root (no tenant) never wait.
    slots: Arc<Shares<TenantId>>,
}

impl Dispatcher {
    /// `max_in_flight` requests at once, one tenant holding at most `share_percent` of them.
    pub(crate) fn new(
        fs: Arc<Filesystem>,
        rt: tokio::runtime::Handle,
        max_in_flight: usize,
        share_percent: u8,
    ) -> Self {
        let global = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
        Self {
            fs,
            rt,
            slots: Arc::new(Shares::new(global, share_percent).idle_first()),
        }
    }

    /// Run `op` (polled here first, see [`Dispatcher::spawn`]); answer with `ok(reply,
    /// value)` or the mapped errno. The reply is consumed exactly once on every path.
    pub(crate) fn run<R, T, Fut>(
        &self,
        name: &'static str,
        req: u64,
        ino: u64,
        reply: R,
        op: impl FnOnce(Arc<Filesystem>) -> Fut,
        ok: impl FnOnce(R, T) + Send + 'static,
    ) where
        R: FailReply,
        T: Send + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        self.run_with(Poll::Here, name, req, ino, reply, op, ok);
    }

    /// [`Dispatcher::run`], first polled where `poll` says: an operation already known to
    /// wait (a read that found its bytes neither cached nor arrived) goes straight to the
    /// runtime, since a first poll here would only be repeated there.
    // Where to poll, the request's name, id and inode, its reply and two closures: a struct
    // would only rename them at every call site.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_with<R, T, Fut>(
        &self,
        poll: Poll,
        name: &'static str,
        req: u64,
        ino: u64,
        reply: R,
        op: impl FnOnce(Arc<Filesystem>) -> Fut,
        ok: impl FnOnce(R, T) + Send + 'static,
    ) where
        R: FailReply,
        T: Send + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let fut = op(self.fs.clone());
        self.start(poll, name, req, ino, async move {
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

    /// Start a request task that answers its reply itself (listings fill the reply as they go).
    ///
    /// The task is polled once here, on the FUSE thread inside the runtime's context, and
    /// handed to the runtime only if it has to wait. Requests the inode table or memory answers
    /// (a lookup of a name known absent, a create, a release, a cached getattr) then reply
    /// without waking a worker: on this 2-core VM the wake-ups, not the work, were most of the
    /// CPU of a `cp -r` of small files (`finish_task_switch` and the scheduler's unlock 45 % of
    /// a profile). The first poll only runs until the first wait, so the loop never waits on
    /// the network; a task woken before the runtime polls it loses nothing, since every tokio
    /// resource re-checks its state when polled.
    pub(crate) fn spawn(&self, name: &'static str, req: u64, ino: u64, fut: impl Future<Output = ()> + Send + 'static) {
        self.start(Poll::Here, name, req, ino, fut);
    }

    /// Start a request about inode `ino` (its parent for a name operation): it waits for a
    /// slot of the tenant `ino` belongs to.
    fn start(
        &self,
        poll: Poll,
        name: &'static str,
        req: u64,
        ino: u64,
        fut: impl Future<Output = ()> + Send + 'static,
    ) {
        let slots = self.slots.clone();
        let tenant = self.fs.tenant_of_ino(ino);
        counted(name);
        let span = tracing::debug_span!("fuse", op = name, req);
        let mut task = Box::pin(
            async move {
                let _permit = match tenant {
                    Some(t) => slots.acquire(t, 1).await,
                    // The root is answered from memory: it never waits behind a tenant.
                    None => SharePermit::none(),
                };
                fut.await;
            }
            .instrument(span),
        );
        if poll == Poll::Here {
            let _rt = self.rt.enter();
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            // A panic stays with its request, as tokio keeps a task's: the reply, dropped
            // while unwinding, answers EIO, and this FUSE thread goes on serving.
            let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.as_mut().poll(&mut cx)));
            match polled {
                Ok(std::task::Poll::Pending) => {}
                Ok(std::task::Poll::Ready(())) => return,
                Err(_) => {
                    warn!(op = name, req, "request panicked");
                    return;
                }
            }
        }
        self.rt.spawn(task);
    }
}

/// The errno for an fs error.
pub(crate) fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

/// Count a request of `op` answered without a task (the read and write fast paths).
pub(crate) fn counted(op: &str) {
    crate::metrics::fuse_request(op);
}

/// Log an error once, at a level matching how surprising it is, and count it.
pub(crate) fn log_error(op: &str, e: &Error) {
    crate::metrics::fuse_error(op, e.errno());
    if e.is_expected() {
        debug!(op, error = %e, "request answered with an error");
    } else {
        warn!(op, error = %e, "request failed");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread::{self, ThreadId};
    use std::time::Duration;

    use super::*;
    use crate::cache::BlockCache;
    use crate::fs::FsConfig;
    use crate::tenant::TenantTable;
    use crate::upload::{UploadConfig, Uploader};

    fn dispatcher(rt: &tokio::runtime::Runtime, staging: &std::path::Path) -> Dispatcher {
        let uploader = Uploader::new(UploadConfig {
            staging_dir: staging.to_owned(),
            ..UploadConfig::default()
        })
        .unwrap();
        let cache = Arc::new(BlockCache::new(1 << 20, 1 << 20));
        let fs = Filesystem::new(TenantTable::new(Vec::new()), cache, uploader, FsConfig::default());
        Dispatcher::new(Arc::new(fs), rt.handle().clone(), 8, 50)
    }

    #[test]
    fn a_ready_request_answers_on_the_fuse_thread_and_a_waiting_one_on_the_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let staging = tempfile::tempdir().unwrap();
        let d = dispatcher(&rt, staging.path());
        let here = thread::current().id();
        let (tx, rx) = mpsc::channel::<(&str, ThreadId)>();

        let t = tx.clone();
        d.spawn("ready", 1, 1, async move {
            t.send(("ready", thread::current().id())).unwrap();
        });
        // Answered before `spawn` returned, without a worker.
        assert_eq!(rx.try_recv().unwrap(), ("ready", here));

        // A request that panics does not take the FUSE thread with it.
        d.spawn("panics", 4, 1, async { panic!("a bug in one request") });
        let t = tx.clone();
        d.spawn("after", 5, 1, async move {
            t.send(("after", thread::current().id())).unwrap();
        });
        assert_eq!(rx.try_recv().unwrap(), ("after", here));

        let t = tx.clone();
        d.spawn("waits", 2, 1, async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            t.send(("waits", thread::current().id())).unwrap();
        });
        assert!(rx.try_recv().is_err(), "a waiting request returns at once");
        let (name, on) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(name, "waits");
        assert_ne!(on, here);

        // Known to wait: never polled here, even if it would be ready.
        let t = tx.clone();
        d.start(Poll::Runtime, "runtime", 3, 1, async move {
            t.send(("runtime", thread::current().id())).unwrap();
        });
        let (name, on) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(name, "runtime");
        assert_ne!(on, here);
    }
}
