//! Mounting: fuser session options, the session thread, and unmount on request.

use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use fuser::{MountOption, SessionACL, SessionUnmounter};
use tracing::{debug, info};

use super::FuseAdapter;

/// How to mount.
#[derive(Debug, Clone)]
pub(crate) struct MountOptions {
    /// Let other local users in (the kernel then enforces each tenant's uid/gid/mode).
    pub(crate) allow_other: bool,
    /// Mount read-only.
    pub(crate) read_only: bool,
    /// Source name shown in `mount` / `/proc/mounts`.
    pub(crate) fs_name: String,
    /// FUSE event-loop threads reading requests from the kernel.
    pub(crate) threads: usize,
    /// Kernel read-ahead to set for the mount, in bytes (`None`: leave the kernel's default).
    pub(crate) kernel_readahead: Option<u32>,
}

/// A running mount.
#[derive(Debug)]
pub(crate) struct Mounted {
    unmounter: SessionUnmounter,
    thread: JoinHandle<io::Result<()>>,
    kernel: KernelCache,
}

/// Tells the kernel to drop what it caches about the root's entries (after a reload).
#[derive(Debug, Clone)]
pub(crate) struct KernelCache {
    notifier: fuser::Notifier,
}

impl KernelCache {
    /// Forget the cached dentries `names` under the mount root (and with them the whole
    /// subtree the kernel cached below each), and the root's attributes. Blocks while the
    /// kernel waits for lookups in the root to finish: call it off the FUSE threads and off
    /// the async runtime's workers.
    pub(crate) fn forget_root_entries<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let root = fuser::INodeNo::ROOT;
        for name in names {
            // ENOENT: the kernel had nothing cached under that name, which is fine.
            if let Err(e) = self.notifier.inval_entry(root, std::ffi::OsStr::new(name)) {
                debug!(name, error = %e, "kernel entry not invalidated");
            }
        }
        if let Err(e) = self.notifier.inval_inode(root, 0, 0) {
            debug!(error = %e, "kernel root attributes not invalidated");
        }
    }
}

impl Mounted {
    /// Ask the kernel to unmount; the session thread then ends.
    pub(crate) fn unmount(&mut self) -> io::Result<()> {
        self.unmounter.unmount()
    }

    /// Whether the session has ended (e.g. `fusermount3 -u` from outside).
    pub(crate) fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Handle for kernel cache invalidation.
    pub(crate) fn kernel_cache(&self) -> KernelCache {
        self.kernel.clone()
    }

    /// Wait for the session thread to end.
    pub(crate) fn join(self) -> io::Result<()> {
        self.thread
            .join()
            .map_err(|_| io::Error::other("FUSE session thread panicked"))?
    }
}

/// Mount `adapter` at `mountpoint` and serve it from a background thread.
pub(crate) fn mount(adapter: FuseAdapter, mountpoint: &Path, opts: &MountOptions) -> io::Result<Mounted> {
    let mut options = vec![
        MountOption::FSName(opts.fs_name.clone()),
        MountOption::Subtype("byosfs".to_owned()),
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
        // The kernel checks uid/gid/mode itself, so tenants' owners are enforced for every user.
        MountOption::DefaultPermissions,
    ];
    if opts.read_only {
        options.push(MountOption::RO);
    }
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(1));
    let mut session = fuser::Session::new(adapter, mountpoint, &config)?;
    let unmounter = session.unmount_callable();
    let kernel = KernelCache {
        notifier: session.notifier(),
    };
    let mut after_run = session.unmount_callable();
    let thread = std::thread::Builder::new()
        .name("fuse-session".to_owned())
        .spawn(move || {
            let result = session.run();
            // The session ends when the kernel side went away (`fusermount3 -u`, or our own
            // unmount): take the mount out of the session here, so dropping the session does
            // not unmount a second time and log fuser's "Failed to umount filesystem: Invalid
            // argument" WARN on every clean unmount. EINVAL here means "already unmounted".
            if let Err(e) = after_run.unmount() {
                debug!(error = %e, "mount already gone when the session ended");
            }
            result
        })?;
    if let Some(bytes) = opts.kernel_readahead {
        tune_kernel_readahead(mountpoint, bytes);
    }
    Ok(Mounted {
        unmounter,
        thread,
        kernel,
    })
}

/// Raise the kernel's read-ahead for this mount to `bytes`.
///
/// The kernel caps a FUSE mount's read-ahead at its backing device's `read_ahead_kb`, 128 KiB by
/// default, whatever `max_readahead` INIT negotiated: a sequential reader then costs one FUSE
/// round trip (two context switches, a task, a reply copy) per 128 KiB. At 1 MiB the same
/// read takes an eighth of the requests. Only root may write the setting; anyone else keeps
/// the default, which is correct, only slower, so a failure is logged and ignored.
fn tune_kernel_readahead(mountpoint: &Path, bytes: u32) {
    use std::os::unix::fs::MetadataExt as _;
    // The stat waits for the kernel's INIT to be answered, which sets the device's read-ahead
    // once; writing it before that would be overwritten.
    let dev = match std::fs::metadata(mountpoint) {
        Ok(m) => m.dev(),
        Err(e) => {
            debug!(error = %e, "kernel read-ahead left at its default: cannot stat the mount");
            return;
        }
    };
    let path = bdi_readahead_path(dev);
    let kib = (bytes / 1024).max(4);
    match std::fs::write(&path, format!("{kib}\n")) {
        Ok(()) => debug!(path = %path.display(), kib, "kernel read-ahead raised"),
        Err(e) => info!(
            path = %path.display(),
            error = %e,
            "kernel read-ahead left at its default (needs root): sequential reads arrive in 128 KiB requests"
        ),
    }
}

/// `/sys/class/bdi/MAJOR:MINOR/read_ahead_kb` of the device `dev` (a FUSE mount's anonymous
/// device, `0:N`).
fn bdi_readahead_path(dev: u64) -> PathBuf {
    PathBuf::from(format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdi_path_splits_the_device_number() {
        // FUSE mounts get anonymous devices with major 0; glibc's encoding puts minor bits
        // above 255 at bit 20.
        let dev = libc::makedev(0, 40);
        assert_eq!(
            bdi_readahead_path(dev),
            PathBuf::from("/sys/class/bdi/0:40/read_ahead_kb")
        );
        let dev = libc::makedev(0, 300);
        assert_eq!(
            bdi_readahead_path(dev),
            PathBuf::from("/sys/class/bdi/0:300/read_ahead_kb")
        );
    }
}
