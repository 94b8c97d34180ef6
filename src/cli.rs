//! Command line (clap derive) and tracing setup.
//!
//! ```text
//! byosfs mount --config FILE MOUNTPOINT [--daemon] [--allow-other] [--read-only] [--log-level LEVEL]
//! byosfs check --config FILE [--tenant NAME]
//! byosfs reload --mountpoint MNT [--force]
//! byosfs status --mountpoint MNT [--json] [--watch]
//! byosfs migrate --config FILE --tenant T --to BACKEND [--prefix P] [--dry-run] [--freeze] [--switch] ...
//! ```
//! Flags given on the command line override the config file (they can only switch options
//! on, never off). `main` parses [`Cli`], calls [`init_tracing`], loads the config and applies
//! [`MountArgs::apply`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// Level used when neither `--log-level` nor `RUST_LOG` is given.
const DEFAULT_LEVEL: &str = "info";

/// byosfs: mount one directory per tenant, each backed by that tenant's own object storage
/// (S3-compatible or a local directory).
#[derive(Debug, Parser)]
#[command(name = "byosfs", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Log verbosity: error, warn, info, debug or trace (applies to byosfs; other crates stay
    /// at warn), or a full tracing filter such as "byosfs=debug,aws_smithy_runtime=info".
    /// Without it, RUST_LOG is used, then "info". Logs go to stderr.
    #[arg(long, global = true, value_name = "LEVEL", value_parser = parse_level)]
    pub log_level: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount the filesystem (in the foreground unless --daemon).
    Mount(MountArgs),
    /// Validate the config file and check that each tenant's storage is reachable.
    Check(CheckArgs),
    /// Make a running mount re-read its config file (tenants added, removed, moved, keys
    /// rotated) without unmounting. Exits non-zero, changing nothing, if the new file is
    /// invalid or new storage fails its check.
    Reload(ReloadArgs),
    /// Show a running mount's tenants, traffic, uploads and budgets.
    Status(StatusArgs),
    /// Print a URL for a file in a mounted tenant: public_url_base + key when one is set,
    /// else a presigned GET.
    Url(UrlArgs),
    /// Copy a tenant's objects to another backend or prefix, each verified; resumable and
    /// incremental (a rerun copies only what is new or changed). With --freeze and --switch,
    /// move a mounted tenant over without unmounting. Exits non-zero if any object failed.
    Migrate(MigrateArgs),
}

/// `byosfs url`.
#[derive(Debug, Args)]
pub struct UrlArgs {
    /// A file inside a running byosfs mount.
    pub path: PathBuf,

    /// How long a presigned URL stays valid (at most 7d).
    #[arg(long, default_value = "1h", value_parser = parse_expiry)]
    pub expires: std::time::Duration,

    /// Make browsers save the file (Content-Disposition: attachment) instead of showing it.
    #[arg(long)]
    pub download: bool,
}

fn parse_expiry(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::config::units::parse_duration(s)?;
    if d < std::time::Duration::from_secs(1) || d > crate::url::MAX_EXPIRY {
        return Err(format!("{s}: must be between 1s and 7d"));
    }
    Ok(d)
}

/// `byosfs migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Config file (TOML) naming the tenant and the target backend.
    #[arg(short, long, value_name = "FILE", env = "BYOSFS_CONFIG")]
    pub config: PathBuf,

    /// The tenant to move.
    #[arg(long, value_name = "NAME")]
    pub tenant: String,

    /// Target backend: a [backends.NAME] of the config.
    #[arg(long, value_name = "BACKEND")]
    pub to: String,

    /// Key prefix in the target (after the backend's own prefix); default: the tenant's
    /// current prefix. "" is the bucket's root.
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,

    /// List what would be copied and the byte total; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Objects copied at once (default 8; large objects also copy several parts at once).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: Option<u16>,

    /// Print the final report as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Journal of verified objects (default: under the staging directory, one per tenant,
    /// source and target).
    #[arg(long, value_name = "PATH")]
    pub journal: Option<PathBuf>,

    /// Delete target objects that are not in the source (default: only report them).
    #[arg(long)]
    pub delete_extraneous: bool,

    /// After a run in which every object verified, delete the source objects.
    #[arg(long)]
    pub delete_source: bool,

    /// Confirm --delete-source without a prompt (required when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,

    /// Make the tenant read-only in the running mount before this pass (the final delta
    /// pass); it stays read-only until --switch, --unfreeze or a remount.
    #[arg(long)]
    pub freeze: bool,

    /// After a pass in which every object verified, point the tenant at the target in the
    /// running mount, and print the config change to keep.
    #[arg(long)]
    pub switch: bool,

    /// Make a frozen tenant writable again and exit (copies nothing).
    #[arg(long, conflicts_with_all = ["freeze", "switch"])]
    pub unfreeze: bool,

    /// With --switch: also write the change into the config file (the old one is kept as
    /// FILE.bak-<time>).
    #[arg(long, requires = "switch")]
    pub write_config: bool,

    /// Mount point of the running mount (for --freeze, --switch, --unfreeze).
    #[arg(short, long, value_name = "MNT")]
    pub mountpoint: Option<PathBuf>,

    /// Control socket path of the running mount, instead of --mountpoint.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// How to reach a running mount's control socket.
#[derive(Debug, Args)]
pub struct SocketArgs {
    /// Mount point of the running mount (finds its control socket at the default path).
    #[arg(short, long, value_name = "MNT", required_unless_present = "socket")]
    pub mountpoint: Option<PathBuf>,

    /// Control socket path, when the mount's config sets [mount] control_socket.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// `byosfs reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// Which mount.
    #[command(flatten)]
    pub target: SocketArgs,

    /// Apply even if new or changed storage fails its check (those tenants show as
    /// unreachable in status).
    #[arg(long)]
    pub force: bool,
}

/// `byosfs status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Which mount.
    #[command(flatten)]
    pub target: SocketArgs,

    /// Print the raw status as JSON.
    #[arg(long)]
    pub json: bool,

    /// Refresh every second until interrupted.
    #[arg(long)]
    pub watch: bool,
}

/// `byosfs mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// Config file (TOML); see config.example.toml.
    #[arg(short, long, value_name = "FILE", env = "BYOSFS_CONFIG")]
    pub config: PathBuf,

    /// Empty directory to mount on; each tenant appears as a subdirectory.
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,

    /// Detach from the terminal after the mount is ready (default: stay in the foreground;
    /// stop with Ctrl-C or `fusermount3 -u MOUNTPOINT`).
    #[arg(long)]
    pub daemon: bool,

    /// Let users other than the one mounting access the files (overrides [mount]
    /// allow_other; non-root users need user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,

    /// Mount every tenant read-only (overrides [mount] read_only and per-tenant settings).
    #[arg(long)]
    pub read_only: bool,
}

impl MountArgs {
    /// Apply command-line overrides to a loaded config.
    pub fn apply(&self, config: &mut Config) {
        apply_overrides(config, self.allow_other, self.read_only);
    }
}

/// The overrides of [`MountArgs`], as a function a reload applies to each re-read file.
pub fn apply_overrides(config: &mut Config, allow_other: bool, read_only: bool) {
    if allow_other {
        config.mount.allow_other = true;
    }
    if read_only {
        config.mount.read_only = true;
        for tenant in &mut config.tenants {
            tenant.read_only = true;
        }
    }
}

/// `byosfs check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Config file (TOML) to validate.
    #[arg(short, long, value_name = "FILE", env = "BYOSFS_CONFIG")]
    pub config: PathBuf,

    /// Check only this tenant's storage (the whole file is still validated).
    #[arg(long, value_name = "NAME")]
    pub tenant: Option<String>,
}

/// Expand a bare level to a filter for byosfs only; pass anything else through.
fn level_to_filter(level: &str) -> String {
    let level = level.trim();
    match level.to_ascii_lowercase().as_str() {
        "error" | "warn" | "info" | "debug" | "trace" | "off" => {
            format!("warn,byosfs={}", level.to_ascii_lowercase())
        }
        _ => level.to_owned(),
    }
}

/// clap value parser: refuse filters tracing cannot parse, at argument parsing time.
fn parse_level(level: &str) -> Result<String, String> {
    EnvFilter::try_new(level_to_filter(level))
        .map(|_| level.to_owned())
        .map_err(|e| format!("{e}; use error, warn, info, debug, trace or a tracing filter directive"))
}

/// Install the global tracing subscriber: stderr, filter from `level` (see
/// [`Cli::log_level`]), else `RUST_LOG`, else "info". Calling it twice is harmless (the
/// second call does nothing), which keeps tests simple.
pub fn init_tracing(level: Option<&str>) {
    let mut rejected = None;
    let filter = match level.map(level_to_filter) {
        Some(directives) => EnvFilter::try_new(&directives).unwrap_or_else(|e| {
            rejected = Some(format!("--log-level {directives:?}: {e}"));
            EnvFilter::new(DEFAULT_LEVEL)
        }),
        None => match EnvFilter::try_from_default_env() {
            Ok(filter) => filter,
            Err(e) => {
                if std::env::var_os(EnvFilter::DEFAULT_ENV).is_some() {
                    rejected = Some(format!("RUST_LOG: {e}"));
                }
                EnvFilter::new(DEFAULT_LEVEL)
            }
        },
    };
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::logline::OneLine(std::io::stderr))
        .try_init()
        .is_ok();
    if let (true, Some(why)) = (installed, rejected) {
        tracing::warn!("ignoring invalid log filter ({why}); using {DEFAULT_LEVEL:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("byosfs").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn mount_defaults_to_foreground() {
        let cli = parse(&["mount", "--config", "c.toml", "/mnt/x"]).unwrap();
        let Command::Mount(m) = cli.command else {
            panic!("expected mount");
        };
        assert_eq!(m.config, PathBuf::from("c.toml"));
        assert_eq!(m.mountpoint, PathBuf::from("/mnt/x"));
        assert!(!m.daemon && !m.allow_other && !m.read_only);
        assert_eq!(cli.log_level, None);
    }

    #[test]
    fn mount_flags() {
        let cli = parse(&[
            "mount",
            "-c",
            "c.toml",
            "/mnt/x",
            "--daemon",
            "--allow-other",
            "--read-only",
            "--log-level",
            "debug",
        ])
        .unwrap();
        let Command::Mount(m) = cli.command else {
            panic!("expected mount");
        };
        assert!(m.daemon && m.allow_other && m.read_only);
        assert_eq!(cli.log_level.as_deref(), Some("debug"));
    }

    #[test]
    fn check_with_tenant() {
        let cli = parse(&["--log-level", "warn", "check", "--config", "c.toml", "--tenant", "acme"]).unwrap();
        let Command::Check(c) = cli.command else {
            panic!("expected check");
        };
        assert_eq!(c.tenant.as_deref(), Some("acme"));
        assert_eq!(cli.log_level.as_deref(), Some("warn"));
    }

    #[test]
    fn bad_invocations_are_rejected() {
        assert!(
            parse(&["mount", "--config", "c.toml"]).is_err(),
            "mountpoint is required"
        );
        assert!(parse(&["mount", "/mnt/x", "--config", "c.toml", "--log-level", "byosfs=loud"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
    }

    #[test]
    fn help_explains_every_flag() {
        let mut cmd = Cli::command();
        // Global args reach subcommands when the command is built.
        cmd.build();
        let mount = cmd.find_subcommand_mut("mount").unwrap().render_long_help().to_string();
        for flag in [
            "--config",
            "MOUNTPOINT",
            "--daemon",
            "--allow-other",
            "--read-only",
            "--log-level",
        ] {
            assert!(mount.contains(flag), "mount help lacks {flag}:\n{mount}");
        }
        let check = cmd.find_subcommand_mut("check").unwrap().render_long_help().to_string();
        assert!(check.contains("--tenant") && check.contains("--config"), "{check}");
    }

    #[test]
    fn level_expansion() {
        assert_eq!(level_to_filter("debug"), "warn,byosfs=debug");
        assert_eq!(level_to_filter("byosfs=trace,hyper=info"), "byosfs=trace,hyper=info");
        assert!(parse_level("TRACE").is_ok());
    }

    #[test]
    fn init_tracing_twice_is_harmless() {
        init_tracing(Some("debug"));
        init_tracing(None);
        tracing::debug!("still alive");
    }
}
