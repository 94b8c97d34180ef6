//! `byosfs` command line: `mount` and `check`.

use std::path::Path;
use std::process::{Command as Process, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use byosfs::cli::{init_tracing, Cli, Command};
use byosfs::config::Config;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_level.as_deref());
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("byosfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

extern "C" {
    /// mimalloc's `mi_collect`: free what it can, and with `force` return freed pages to the
    /// OS now instead of after its purge delay. Part of the C library `mimalloc` links.
    fn mi_collect(force: bool);
}

/// Return the memory the config parser used and freed to the OS. Parsing a config of 100,000
/// tenants builds a TOML document of ~100 MiB that is dropped once the typed config exists;
/// mimalloc would keep those pages resident for the life of the mount (RSS after mounting
/// 101,000 tenants: 214 MiB without this, about 105 MiB with it; docs/scale.md).
#[allow(unsafe_code)] // one allocator call; the `mimalloc` crate has no safe wrapper for it
fn release_free_memory() {
    // SAFETY: mi_collect takes a plain bool, may be called from any thread at any time, and
    // only reorganises the allocator's own free memory.
    unsafe { mi_collect(true) };
}

fn load(path: &Path) -> anyhow::Result<Config> {
    // ConfigError's Display lists every problem as `file:line: field: message`.
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Mount(args) => {
            let mut config = load(&args.config)?;
            release_free_memory();
            args.apply(&mut config);
            if args.daemon {
                return daemonize(&args.mountpoint);
            }
            byosfs::app::run_mount(config, &args.mountpoint)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => {
            let config = load(&args.config)?;
            let ok = byosfs::app::run_check(config, args.tenant.as_deref())?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// Run this same command without `--daemon` in a new session, detached from the terminal,
/// and return once the mount is up (or report why it did not come up).
fn daemonize(mountpoint: &Path) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("locating the byosfs executable")?;
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--daemon").collect();
    let mut child = Process::new(exe)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the background process")?;
    let mountpoint = std::fs::canonicalize(mountpoint).context("resolving the mount point")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if is_mounted(&mountpoint) {
            println!("byosfs mounted at {} (pid {})", mountpoint.display(), child.id());
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("background byosfs exited before mounting ({status}); see its log above");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!(
        "byosfs did not mount {} within 30 s (pid {})",
        mountpoint.display(),
        child.id()
    )
}

fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*p))
}
