//! The `migrate` command's wiring: config → endpoints, journal path and parameters, and
//! `--write-config`. Like `app.rs`, the one place of this module that reports with `anyhow`.

use std::io::IsTerminal;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::app::{build_backends, default_staging_dir, mounting_user, stable_hash};
use crate::backend::prefix::PrefixBackend;
use crate::config::{BackendConfig, Config};

use super::copy::ServerSide;
use super::report::Report;
use super::{journal_header, migrate, Endpoints, MigrateParams};

/// Objects copied at once unless `--concurrency` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// What the command line asks for.
#[derive(Debug, Clone, Default)]
pub struct MigrateOptions {
    /// Tenant name.
    pub tenant: String,
    /// Target backend name (`[backends.NAME]`).
    pub to: String,
    /// Target prefix within the target backend (after its backend-wide prefix); `None`: the
    /// tenant's prefix within its current backend.
    pub prefix: Option<String>,
    /// Dry run.
    pub dry_run: bool,
    /// Objects at once.
    pub concurrency: Option<usize>,
    /// Journal path; `None`: under the staging directory.
    pub journal: Option<PathBuf>,
    /// `--delete-extraneous`.
    pub delete_extraneous: bool,
    /// `--delete-source`.
    pub delete_source: bool,
    /// Progress bar on a terminal / lines otherwise.
    pub progress: bool,
}

/// Where the tenant goes: a backend of the config and the full key prefix there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Backend name.
    pub backend: String,
    /// The prefix as written in the tenant's config entry (relative to the backend's prefix).
    pub prefix: String,
    /// Full key prefix within the bucket or root ("" or ending in "/").
    pub full_prefix: String,
}

fn normalise(prefix: &str) -> String {
    let t = prefix.trim_matches('/');
    if t.is_empty() {
        String::new()
    } else {
        format!("{t}/")
    }
}

fn backend_prefix(b: &BackendConfig) -> &str {
    b.prefix()
}

/// Resolve the destination of `opts` in `config`, refusing a target that overlaps the source.
pub fn destination(config: &Config, opts: &MigrateOptions) -> anyhow::Result<Destination> {
    let t = config
        .tenant(&opts.tenant)
        .with_context(|| format!("no tenant named {:?} in {}", opts.tenant, config.source.display()))?;
    let from = config
        .backends
        .get(&t.backend)
        .with_context(|| format!("tenant {}: unknown backend {}", t.name, t.backend))?;
    let to = config
        .backends
        .get(&opts.to)
        .with_context(|| format!("no backend named {:?} in {}", opts.to, config.source.display()))?;
    let relative = match &opts.prefix {
        Some(p) => normalise(p),
        None => normalise(t.prefix.strip_prefix(backend_prefix(from)).unwrap_or(&t.prefix)),
    };
    let full_prefix = format!("{}{relative}", backend_prefix(to));
    let src = normalise(&t.prefix);
    if opts.to == t.backend && (full_prefix.starts_with(&src) || src.starts_with(&full_prefix)) {
        bail!(
            "target {}:{full_prefix:?} overlaps the tenant's own prefix {src:?}; choose another --prefix",
            opts.to
        );
    }
    Ok(Destination {
        backend: opts.to.clone(),
        prefix: relative,
        full_prefix,
    })
}

/// The default journal: `<staging dir>/migrate/<tenant>-<hash of source and target>.journal`.
fn default_journal(config: &Config, tenant: &str, header: &str) -> anyhow::Result<PathBuf> {
    let staging = match &config.write.staging_dir {
        Some(d) => d.clone(),
        None => default_staging_dir(&config.source, mounting_user().0),
    };
    let dir = staging.join("migrate");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join(format!("{tenant}-{:016x}.journal", stable_hash(header.as_bytes()))))
}

/// Run one pass of `opts` against `config`; returns the report and the destination.
pub fn run(config: &Config, opts: &MigrateOptions) -> anyhow::Result<(Report, Destination)> {
    let dest = destination(config, opts)?;
    let t = config
        .tenant(&opts.tenant)
        .with_context(|| format!("no tenant named {:?}", opts.tenant))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(async {
        let backends = build_backends(config).await?;
        let raw_from = backends.get(&t.backend).context("source backend")?.clone();
        let raw_to = backends.get(&dest.backend).context("target backend")?.clone();
        // One S3 bucket that copies by itself: the service moves the bytes. (The local
        // backend declares S3's capabilities but keeps no POSIX metadata a copy could fix.)
        let server_side = (dest.backend == t.backend
            && matches!(config.backends.get(&t.backend), Some(BackendConfig::S3(_)))
            && raw_to.capabilities().server_side_copy)
            .then(|| ServerSide {
                raw: raw_to.clone(),
                src_prefix: normalise(&t.prefix),
                dst_prefix: dest.full_prefix.clone(),
            });
        let ep = Endpoints {
            source: Arc::new(PrefixBackend::new(raw_from, &t.prefix)),
            target: Arc::new(PrefixBackend::new(raw_to, &dest.full_prefix)),
            server_side,
        };
        let journal = match &opts.journal {
            Some(p) => p.clone(),
            None => default_journal(config, &t.name, &journal_header(&ep))?,
        };
        let params = MigrateParams {
            concurrency: opts.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            part_size: config.write.part_size,
            part_concurrency: config.write.max_concurrent_parts,
            budget: config.write.memory,
            dry_run: opts.dry_run,
            delete_extraneous: opts.delete_extraneous,
            delete_source: opts.delete_source,
            journal,
            progress_bar: opts.progress,
            progress_every: (opts.progress && !std::io::stderr().is_terminal()).then_some(Duration::from_secs(10)),
        };
        anyhow::Ok(migrate(&ep, &params).await?)
    })?;
    Ok((report, dest))
}

/// The lines of the tenant's config entry that keep the switch.
pub fn config_change(tenant: &str, dest: &Destination) -> String {
    format!(
        "[[tenants]]\nname = {tenant:?}\nbackend = {:?}\nprefix = {:?}\n",
        dest.backend, dest.prefix
    )
}

fn is_key(line: &str, key: &str) -> bool {
    line.trim_start()
        .strip_prefix(key)
        .is_some_and(|rest| rest.trim_start().starts_with('='))
}

/// `text` with the `[[tenants]]` entry named `tenant` set to `dest` (its `backend` and
/// `prefix` lines replaced, or added after its `name` line). `None` when the entry is not
/// in this text in the plain `name = "..."` form (tenant files, inline tables): edit by hand.
pub fn rewrite_config(text: &str, tenant: &str, dest: &Destination) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let name_line = |l: &str| {
        is_key(l, "name")
            && l.split_once('=')
                .map(|(_, v)| v.split('#').next().unwrap_or("").trim() == format!("{tenant:?}"))
                .unwrap_or(false)
    };
    // The entry: from its [[tenants]] header to the next table header.
    let mut start = None;
    for (i, l) in lines.iter().enumerate() {
        if l.trim() == "[[tenants]]" {
            let end = lines[i + 1..]
                .iter()
                .position(|l| l.trim_start().starts_with('['))
                .map_or(lines.len(), |p| i + 1 + p);
            if lines[i + 1..end].iter().any(|l| name_line(l)) {
                start = Some((i, end));
                break;
            }
        }
    }
    let (start, end) = start?;
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 2);
    out.extend(lines[..start + 1].iter().map(|s| (*s).to_owned()));
    for l in &lines[start + 1..end] {
        if is_key(l, "backend") || is_key(l, "prefix") {
            continue;
        }
        out.push((*l).to_owned());
        if name_line(l) {
            out.push(format!("backend = {:?}", dest.backend));
            out.push(format!("prefix = {:?}", dest.prefix));
        }
    }
    out.extend(lines[end..].iter().map(|s| (*s).to_owned()));
    let mut s = out.join("\n");
    if text.ends_with('\n') {
        s.push('\n');
    }
    Some(s)
}

/// Rewrite the config file at `path` for the switch, keeping the old one as
/// `<path>.bak-<unix time>`; the new text must load and place the tenant at `dest`.
pub fn write_config(path: &Path, tenant: &str, dest: &Destination) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let Some(new) = rewrite_config(&text, tenant, dest) else {
        bail!(
            "tenant {tenant} is not a plain [[tenants]] entry of {}; make this change by hand:\n{}",
            path.display(),
            config_change(tenant, dest)
        );
    };
    let parsed = Config::from_toml(&new, path).map_err(|e| anyhow::anyhow!("the rewritten config is invalid: {e}"))?;
    let t = parsed
        .tenant(tenant)
        .context("tenant vanished from the rewritten config")?;
    if t.backend != dest.backend || normalise(&t.prefix) != dest.full_prefix {
        bail!(
            "the rewritten config does not place {tenant} at {}:{}",
            dest.backend,
            dest.full_prefix
        );
    }
    let backup = PathBuf::from(format!("{}.bak-{}", path.display(), crate::metrics::unix_ms() / 1000));
    std::fs::copy(path, &backup).with_context(|| format!("backing up to {}", backup.display()))?;
    let tmp = PathBuf::from(format!("{}.migrate-tmp", path.display()));
    std::fs::write(&tmp, new).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(backup)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[backends.home]
type = "local"
root = "/tmp/byosfs-migrate-cmd-home"
[backends.away]
type = "local"
root = "/tmp/byosfs-migrate-cmd-away"
prefix = "bp/"

[[tenants]]
name = "other"
backend = "home"
prefix = "other/"

[[tenants]]
name = "acme"   # the customer
backend = "home"
prefix = "acme/"
read_only = false

[cache]
"#;

    fn cfg(text: &str) -> Config {
        Config::from_toml(text, Path::new("/tmp/migrate-cmd.toml")).unwrap()
    }

    fn opts(to: &str, prefix: Option<&str>) -> MigrateOptions {
        MigrateOptions {
            tenant: "acme".into(),
            to: to.into(),
            prefix: prefix.map(str::to_owned),
            ..MigrateOptions::default()
        }
    }

    #[test]
    fn destination_defaults_to_the_same_relative_prefix() {
        let c = cfg(CONFIG);
        let d = destination(&c, &opts("away", None)).unwrap();
        assert_eq!((d.prefix.as_str(), d.full_prefix.as_str()), ("acme/", "bp/acme/"));
        let d = destination(&c, &opts("away", Some(""))).unwrap();
        assert_eq!(d.full_prefix, "bp/");
        assert!(destination(&c, &opts("home", None)).is_err(), "same place");
        assert!(
            destination(&c, &opts("home", Some(""))).is_err(),
            "target contains the source"
        );
        assert!(
            destination(&c, &opts("home", Some("acme/sub"))).is_err(),
            "source contains the target"
        );
        assert!(destination(&c, &opts("home", Some("acme2"))).is_ok());
        assert!(destination(&c, &opts("nowhere", None)).is_err());
    }

    #[test]
    fn rewrite_touches_only_the_tenants_entry() {
        let dest = Destination {
            backend: "away".into(),
            prefix: "x/".into(),
            full_prefix: "bp/x/".into(),
        };
        let new = rewrite_config(CONFIG, "acme", &dest).unwrap();
        let c = cfg(&new);
        let t = c.tenant("acme").unwrap();
        assert_eq!((t.backend.as_str(), t.prefix.as_str()), ("away", "bp/x/"));
        assert_eq!(c.tenant("other").unwrap().backend, "home");
        assert!(new.contains("name = \"acme\"   # the customer\nbackend = \"away\"\nprefix = \"x/\"\nread_only"));
        assert!(rewrite_config(CONFIG, "nobody", &dest).is_none());
    }

    #[test]
    fn write_config_keeps_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, CONFIG).unwrap();
        let dest = Destination {
            backend: "away".into(),
            prefix: "acme/".into(),
            full_prefix: "bp/acme/".into(),
        };
        let backup = write_config(&path, "acme", &dest).unwrap();
        assert_eq!(std::fs::read_to_string(backup).unwrap(), CONFIG);
        assert_eq!(Config::load(&path).unwrap().tenant("acme").unwrap().backend, "away");
    }
}
