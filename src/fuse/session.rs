//! Mounting: fuser session options, the session thread, and unmount on request.

use std::io;
use std::path::Path;
use std::thread::JoinHandle;

use fuser::{MountOption, SessionACL, SessionUnmounter};

use super::FuseAdapter;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Let other local users in (the kernel then enforces each tenant's uid/gid/mode).
    pub allow_other: bool,
    /// Mount read-only.
    pub read_only: bool,
    /// Source name shown in `mount` / `/proc/mounts`.
    pub fs_name: String,
    /// FUSE event-loop threads reading requests from the kernel.
    pub threads: usize,
}

/// A running mount.
#[derive(Debug)]
pub struct Mounted {
    unmounter: SessionUnmounter,
    thread: JoinHandle<io::Result<()>>,
}

impl Mounted {
    /// Ask the kernel to unmount; the session thread then ends.
    pub fn unmount(&mut self) -> io::Result<()> {
        self.unmounter.unmount()
    }

    /// Whether the session has ended (e.g. `fusermount3 -u` from outside).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Wait for the session thread to end.
    pub fn join(self) -> io::Result<()> {
        self.thread
            .join()
            .map_err(|_| io::Error::other("FUSE session thread panicked"))?
    }
}

/// Mount `adapter` at `mountpoint` and serve it from a background thread.
pub fn mount(adapter: FuseAdapter, mountpoint: &Path, opts: &MountOptions) -> io::Result<Mounted> {
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
    let thread = std::thread::Builder::new()
        .name("fuse-session".to_owned())
        .spawn(move || session.run())?;
    Ok(Mounted { unmounter, thread })
}
