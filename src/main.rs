//! `byosfs` command line: `mount`, `check`, and `reload`/`status` of a running mount.

use std::path::Path;
use std::process::{Command as Process, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use byosfs::cli::{apply_overrides, init_tracing, Cli, Command, MigrateArgs, SocketArgs};
use byosfs::config::Config;
use byosfs::control::{self, Request};

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

fn load(path: &Path) -> anyhow::Result<Config> {
    // ConfigError's Display lists every problem as `file:line: field: message`.
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Mount(args) => {
            let mut config = load(&args.config)?;
            byosfs::memory::release_free_memory();
            args.apply(&mut config);
            if args.daemon {
                return daemonize(&args.mountpoint);
            }
            let (allow_other, read_only) = (args.allow_other, args.read_only);
            let overrides = Box::new(move |c: &mut Config| apply_overrides(c, allow_other, read_only));
            byosfs::app::run_mount(config, &args.mountpoint, overrides)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload(args) => {
            let r = ask(&args.target, &Request::Reload { force: args.force }, RELOAD_TIMEOUT)?;
            if r.ok {
                println!("{}", r.message);
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("byosfs: reload refused: {}", r.message);
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Status(args) => loop {
            let r = ask(&args.target, &Request::Status, STATUS_TIMEOUT)?;
            if !r.ok {
                anyhow::bail!("{}", r.message);
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&r.body)?);
            } else {
                let report: byosfs::status::StatusReport =
                    serde_json::from_value(r.body).context("reading the mount's status")?;
                if args.watch {
                    // Clear the terminal and go home, as `watch` does.
                    print!("\x1b[2J\x1b[H");
                }
                print!(
                    "{}",
                    byosfs::status::render(&report, std::io::IsTerminal::is_terminal(&std::io::stdout()))
                );
            }
            if !args.watch {
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(Duration::from_secs(1));
        },
        Command::Url(args) => {
            let req = byosfs::url::UrlRequest {
                expires: args.expires,
                download: args.download,
            };
            let url = byosfs::url::ask_mount(&args.path, req).map_err(anyhow::Error::msg)?;
            println!("{url}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate(args) => migrate(&args),
        Command::Check(args) => {
            let config = load(&args.config)?;
            let ok = byosfs::app::run_check(config, args.tenant.as_deref())?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// `byosfs migrate`: freeze, one pass, switch; see `byosfs migrate --help`.
fn migrate(args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    use byosfs::migrate::command;
    use std::io::IsTerminal;
    let live = (args.freeze || args.switch || args.unfreeze) && !args.dry_run;
    let target = SocketArgs {
        mountpoint: args.mountpoint.clone(),
        socket: args.socket.clone(),
    };
    if live && target.mountpoint.is_none() && target.socket.is_none() {
        anyhow::bail!("--freeze, --switch and --unfreeze need --mountpoint (or --socket) of the running mount");
    }
    let control = |request: Request| -> anyhow::Result<String> {
        let r = ask(&target, &request, RELOAD_TIMEOUT)?;
        if r.ok {
            Ok(r.message)
        } else {
            anyhow::bail!("the mount refused: {}", r.message)
        }
    };
    if args.unfreeze {
        eprintln!(
            "{}",
            control(Request::Freeze {
                tenant: args.tenant.clone(),
                frozen: false
            })?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.delete_source && !args.yes && !args.dry_run {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!("--delete-source deletes the tenant's source objects after the copy; add --yes to confirm");
        }
        eprint!(
            "Delete {}'s source objects once all are verified in the target? [y/N] ",
            args.tenant
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            anyhow::bail!("not confirmed");
        }
    }
    let config = load(&args.config)?;
    let opts = command::MigrateOptions {
        tenant: args.tenant.clone(),
        to: args.to.clone(),
        prefix: args.prefix.clone(),
        dry_run: args.dry_run,
        concurrency: args.concurrency.map(usize::from),
        journal: args.journal.clone(),
        delete_extraneous: args.delete_extraneous,
        delete_source: args.delete_source,
        progress: !args.json,
    };
    // Refuse a bad target before freezing anything.
    command::destination(&config, &opts)?;
    if args.freeze && !args.dry_run {
        eprintln!(
            "{}",
            control(Request::Freeze {
                tenant: args.tenant.clone(),
                frozen: true
            })?
        );
        wait_for_writers(&target, &args.tenant)?;
        // Files closed with write-back are not in the bucket yet: the final pass must see them.
        let settled = control(Request::SettleWriteBack {
            tenant: args.tenant.clone(),
        })
        .with_context(|| {
            format!(
                "{} stays read-only; rerun once its uploads succeed, or `byosfs migrate --unfreeze` to give up",
                args.tenant
            )
        })?;
        eprintln!("{settled}");
    }
    let (report, dest) = command::run(&config, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    if !report.ok() {
        if args.freeze {
            eprintln!(
                "byosfs: {} stays read-only; rerun, or `byosfs migrate --unfreeze` to give up",
                args.tenant
            );
        }
        return Ok(ExitCode::FAILURE);
    }
    if args.switch && !args.dry_run {
        if args.write_config {
            let backup = command::write_config(&args.config, &args.tenant, &dest)?;
            eprintln!(
                "wrote {} (previous version: {})",
                args.config.display(),
                backup.display()
            );
        }
        eprintln!(
            "{}",
            control(Request::Switch {
                tenant: args.tenant.clone(),
                backend: dest.backend.clone(),
                prefix: dest.full_prefix.clone(),
            })?
        );
        if !args.write_config {
            eprintln!(
                "keep the switch across reloads and restarts: set in {}\n{}",
                args.config.display(),
                command::config_change(&args.tenant, &dest)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// After a freeze, wait (up to a minute) until files the tenant had open for writing are
/// committed, so the delta pass sees them.
fn wait_for_writers(target: &SocketArgs, tenant: &str) -> anyhow::Result<()> {
    for _ in 0..600 {
        let r = ask(target, &Request::Status, STATUS_TIMEOUT)?;
        let report: byosfs::status::StatusReport =
            serde_json::from_value(r.body).context("reading the mount's status")?;
        if !report.uploads.iter().any(|u| u.tenant == tenant) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("{tenant} still has files open for writing after 60 s; close them and rerun")
}

/// A reload probes new storage (bounded at 20 s per probe, in parallel) before it answers.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Status is answered from memory.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Send `request` to the mount chosen by `target`: `--socket`, else the default socket paths
/// of `--mountpoint` (this user's, then root's).
fn ask(target: &SocketArgs, request: &Request, timeout: Duration) -> anyhow::Result<control::Response> {
    let paths = match (&target.socket, &target.mountpoint) {
        (Some(s), _) => vec![s.clone()],
        (None, Some(m)) => {
            let m = std::fs::canonicalize(m).with_context(|| format!("mount point {}", m.display()))?;
            control::candidate_paths(&m, control::euid())
        }
        (None, None) => anyhow::bail!("give --mountpoint or --socket"),
    };
    let mut last = None;
    for p in &paths {
        match control::call(p, request, timeout) {
            Ok(r) => return Ok(r),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && paths.len() > 1 => last = Some((p.clone(), e)),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", p.display())),
        }
    }
    match last {
        Some((p, e)) => anyhow::bail!(
            "no control socket for this mount ({}: {e}); is it mounted by byosfs?",
            p.display()
        ),
        None => anyhow::bail!("no control socket found"),
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
