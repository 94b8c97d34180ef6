//! Wiring: user config → backends → tenants → filesystem → FUSE session; and `check`.
//!
//! The only place that translates the user-facing config into each layer's own settings.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tracing::{error, info, warn};

use crate::backend::local::LocalBackend;
use crate::backend::prefix::PrefixBackend;
use crate::backend::retry::{RetryBackend, RetryConfig};
use crate::backend::s3::{S3BackendConfig, S3ClientPool, S3Credentials};
use crate::backend::Backend;
use crate::cache::BlockCache;
use crate::config::{BackendConfig, Config, Credentials, TenantConfig};
use crate::fs::{Filesystem, FsConfig};
use crate::fuse::session::{mount, MountOptions};
use crate::fuse::FuseAdapter;
use crate::read::ReadConfig;
use crate::tenant::{TenantSpec, TenantTable};
use crate::upload::{UploadConfig, Uploader};

fn s3_config(c: &crate::config::S3Config) -> S3BackendConfig {
    S3BackendConfig {
        endpoint: c.endpoint.clone(),
        region: c.region.clone(),
        force_path_style: c.force_path_style,
        bucket: c.bucket.clone(),
        credentials: match &c.credentials {
            Credentials::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => S3Credentials::Static {
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.clone(),
                session_token: session_token.clone(),
            },
            Credentials::DefaultChain => S3Credentials::DefaultChain,
        },
        connect_timeout: c.connect_timeout,
        request_timeout: c.request_timeout,
        // Retries happen in one place, `RetryBackend`; SDK retries would multiply with ours.
        max_attempts: 1,
    }
}

/// Retry policy of an S3 backend: the configured attempts, each bounded by the request
/// timeout, and the whole operation by `attempts × request_timeout`, so a hung endpoint
/// becomes an error (EIO) within that time.
fn s3_retry(c: &crate::config::S3Config) -> RetryConfig {
    let attempts = c.max_attempts.max(1);
    RetryConfig {
        max_attempts: attempts,
        deadline: Some(c.request_timeout.saturating_mul(attempts)),
        ..RetryConfig::default()
    }
}

/// Build one backend per `[backends.NAME]` (S3 clients shared where settings are equal),
/// each wrapped in a [`RetryBackend`].
pub async fn build_backends(config: &Config) -> anyhow::Result<HashMap<String, Arc<dyn Backend>>> {
    let pool = S3ClientPool::new();
    let mut out: HashMap<String, Arc<dyn Backend>> = HashMap::new();
    for (name, b) in &config.backends {
        let (backend, retry): (Arc<dyn Backend>, RetryConfig) = match b {
            BackendConfig::S3(c) => (
                Arc::new(
                    pool.backend(&s3_config(c))
                        .await
                        .with_context(|| format!("backend {name}: creating S3 client"))?,
                ),
                s3_retry(c),
            ),
            BackendConfig::Local(c) => {
                std::fs::create_dir_all(&c.root)
                    .with_context(|| format!("backend {name}: creating {}", c.root.display()))?;
                (
                    Arc::new(LocalBackend::new(c.root.clone()).with_context(|| format!("backend {name}"))?),
                    RetryConfig::default(),
                )
            }
        };
        out.insert(name.clone(), Arc::new(RetryBackend::new(backend, retry)));
    }
    Ok(out)
}

/// The view of one tenant: its backend confined to its prefix.
pub fn tenant_backend(
    t: &TenantConfig,
    backends: &HashMap<String, Arc<dyn Backend>>,
) -> anyhow::Result<Arc<dyn Backend>> {
    let inner = backends
        .get(&t.backend)
        .with_context(|| format!("tenant {}: unknown backend {}", t.name, t.backend))?;
    Ok(Arc::new(PrefixBackend::new(inner.clone(), &t.prefix)))
}

fn tenant_table(
    config: &Config,
    backends: &HashMap<String, Arc<dyn Backend>>,
    owner: (u32, u32),
) -> anyhow::Result<TenantTable> {
    let mut specs = Vec::new();
    for t in &config.tenants {
        specs.push(TenantSpec {
            name: t.name.clone(),
            backend: tenant_backend(t, backends)?,
            read_only: t.read_only || config.mount.read_only,
            uid: t.uid.or(config.mount.uid).unwrap_or(owner.0),
            gid: t.gid.or(config.mount.gid).unwrap_or(owner.1),
            mode: u16::try_from(t.mode & 0o7777).unwrap_or(0o755),
        });
    }
    Ok(TenantTable::new(specs))
}

/// Build the filesystem for `config` (used by `mount` and by tests that skip the kernel).
pub async fn build_filesystem(config: &Config, owner: (u32, u32)) -> anyhow::Result<Filesystem> {
    let backends = build_backends(config).await?;
    let tenants = tenant_table(config, &backends, owner)?;
    let cache = Arc::new(BlockCache::new(config.cache.memory, config.cache.block_size));
    let staging_dir = match &config.write.staging_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("byosfs-staging-{}", std::process::id())),
    };
    let uploader = Uploader::new(UploadConfig {
        part_size: config.write.part_size,
        max_concurrent_parts: config.write.max_concurrent_parts,
        memory_budget: config.write.memory,
        staging_dir,
        staging_limit: config.write.staging_limit,
    })
    .context("setting up the write staging area")?;
    let read = ReadConfig {
        initial_window: config.cache.readahead_initial,
        max_window: config.cache.readahead_max,
        max_streams: config.cache.max_streams,
        ..ReadConfig::default()
    };
    let fs_config = FsConfig {
        attr_ttl: config.mount.attr_ttl,
        metadata_ttl: config.cache.metadata_ttl,
        root_owner: owner,
        read,
        max_rename_entries: config.write.max_rename_entries,
    };
    Ok(Filesystem::new(tenants, cache, uploader, fs_config))
}

/// Mount and serve until unmounted from outside or interrupted (SIGINT/SIGTERM).
pub fn run_mount(config: Config, mountpoint: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(mountpoint)
        .with_context(|| format!("mount point {} is not accessible", mountpoint.display()))?;
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", mountpoint.display());
    }
    let owner = (meta.uid(), meta.gid());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("byosfs-worker")
        .build()?;
    let fs = rt.block_on(build_filesystem(&config, owner))?;
    let fs = Arc::new(fs);
    let max_ra = u32::try_from(config.cache.readahead_initial.min(1 << 20)).unwrap_or(1 << 20);
    let adapter = FuseAdapter::new(fs.clone(), rt.handle().clone(), 1024, max_ra);
    let opts = MountOptions {
        allow_other: config.mount.allow_other,
        read_only: config.mount.read_only,
        fs_name: config.mount.fs_name.clone(),
        threads: config.mount.threads,
    };
    let mut mounted = mount(adapter, mountpoint, &opts).with_context(|| {
        format!(
            "mounting at {} (is fuse3 installed and /dev/fuse usable?)",
            mountpoint.display()
        )
    })?;
    info!(mountpoint = %mountpoint.display(), tenants = fs.tenants().len(), "mounted");

    let interrupted = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        // Polled: fuser gives no async notification when the kernel side goes away.
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return true,
                Some(_) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => return true,
                _ = tick.tick() => if mounted.is_finished() { return false },
            }
        }
    });
    if interrupted {
        info!("signal received, unmounting");
        if let Err(e) = mounted.unmount() {
            error!(error = %e, "unmount failed (files still open?)");
        }
    }
    if let Err(e) = mounted.join() {
        warn!(error = %e, "FUSE session ended with an error");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    rt.block_on(async {
        // Bounded wait for releases the kernel sent just before unmount.
        while fs.open_handles() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    if fs.open_handles() > 0 {
        warn!(
            open = fs.open_handles(),
            "unmounted with files still open; their unsaved data is lost"
        );
    }
    rt.shutdown_timeout(Duration::from_secs(5));
    info!("unmounted");
    Ok(())
}

/// Probe every tenant (or one); print one line each. Returns whether all passed.
pub fn run_check(config: Config, only: Option<&str>) -> anyhow::Result<bool> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let backends = build_backends(&config).await?;
        let tenants: Vec<&TenantConfig> = config
            .tenants
            .iter()
            .filter(|t| only.is_none_or(|n| n == t.name))
            .collect();
        if tenants.is_empty() {
            bail!(
                "no tenant named {:?} in {}",
                only.unwrap_or_default(),
                config.source.display()
            );
        }
        let mut all_ok = true;
        for t in tenants {
            let backend = tenant_backend(t, &backends)?;
            let desc = backend.describe();
            match crate::check::probe(backend.as_ref()).await {
                Ok(report) => {
                    println!("ok   {:<20} {desc} ({} ms)", t.name, report.total().as_millis());
                }
                Err(e) => {
                    all_ok = false;
                    println!("FAIL {:<20} {desc}: {e}", t.name);
                }
            }
        }
        Ok(all_ok)
    })
}
