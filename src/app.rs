//! Wiring: user config → backends → tenants → filesystem → FUSE session; and `check`.
//!
//! The only place that translates the user-facing config into each layer's own settings.

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tracing::{error, info, warn};

use crate::backend::dal::{DalBackend, DalConfig, DalSecrets, DalService};
use crate::backend::local::LocalBackend;
use crate::backend::prefix::PrefixBackend;
use crate::backend::retry::{RetryBackend, RetryConfig};
use crate::backend::s3::{Presigner, S3BackendConfig, S3ClientPool, S3Credentials, UploadChecksum};
use crate::backend::swap::SwapBackend;
use crate::backend::Backend;
use crate::cache::disk::{DiskCache, DiskCacheConfig, DiskCacheError};
use crate::cache::BlockCache;
use crate::config::{BackendConfig, ChecksumSetting, Config, Credentials, DalKind, TenantConfig};
use crate::control;
use crate::fs::{Filesystem, FsConfig};
use crate::fuse::session::{mount, MountOptions};
use crate::fuse::FuseAdapter;
use crate::read::ReadConfig;
use crate::recovery::{recover_staging, RecoveryReport};
use crate::reload::{tenant_spec, BuildBackend, Reloader};
use crate::sdnotify::notify_systemd;
use crate::status::MountControl;
use crate::tenant::TenantTable;
use crate::upload::{UploadConfig, Uploader};

/// The client settings of an S3 backend as configured.
pub(crate) fn s3_config(c: &crate::config::S3Config) -> S3BackendConfig {
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
        sign_payload: c.payload_signing.signs(c.endpoint.as_deref()),
    }
}

/// The checksum uploads to `c` carry. `auto`: none when payloads are signed (the service
/// verifies the SigV4 SHA-256 of every body already), else CRC32C where the provider verifies
/// it and Content-MD5 elsewhere, so an unsigned upload is still verified end to end.
fn upload_checksum(c: &crate::config::S3Config) -> UploadChecksum {
    resolve_checksum(
        c.checksum,
        c.payload_signing.signs(c.endpoint.as_deref()),
        c.provider.checksum_crc32c(),
    )
}

fn resolve_checksum(setting: ChecksumSetting, signed: bool, crc32c: bool) -> UploadChecksum {
    match setting {
        ChecksumSetting::None => UploadChecksum::None,
        ChecksumSetting::Md5 => UploadChecksum::Md5,
        ChecksumSetting::Crc32c => UploadChecksum::Crc32c,
        ChecksumSetting::Auto if signed => UploadChecksum::None,
        ChecksumSetting::Auto if crc32c => UploadChecksum::Crc32c,
        ChecksumSetting::Auto => UploadChecksum::Md5,
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

/// The backend layer's settings of a WebDAV, Azure, GCS or Drive backend.
fn dal_config(c: &crate::config::DalBackendConfig) -> DalConfig {
    let service = match c.kind {
        DalKind::Webdav => DalService::Webdav,
        DalKind::Azblob => DalService::Azblob,
        DalKind::Gcs => DalService::Gcs,
        DalKind::Gdrive => DalService::Gdrive,
    };
    let secret = |name: &str| c.secrets.get(name).cloned();
    let secrets = DalSecrets {
        password: secret("password"),
        token: secret("token"),
        account_key: secret("account_key"),
        sas_token: secret("sas_token"),
        service_account_json: secret("service_account_json"),
        client_secret: secret("client_secret"),
        refresh_token: secret("refresh_token"),
    };
    let mut out = DalConfig::new(service)
        .with_container(c.container.clone())
        .with_secrets(secrets);
    if let Some(e) = &c.endpoint {
        out = out.with_endpoint(e.clone());
    }
    if let Some(a) = &c.account {
        out = out.with_account(a.clone());
    }
    if let Some(id) = c.secrets.get("client_id") {
        // Drive's OAuth client id: not secret, but kept with its client secret.
        out = out.with_account(id.expose().to_owned());
    }
    out
}

/// Retry policy of an OpenDAL backend: OpenDAL's own retry and timeout layers are not
/// compiled in, so this is the only retry (3 attempts) and the only bound on a hung
/// request: a minute per attempt, as the S3 default `request_timeout`.
fn dal_retry() -> RetryConfig {
    RetryConfig {
        deadline: Some(Duration::from_secs(180)),
        ..RetryConfig::default()
    }
}

/// Build one backend per `[backends.NAME]` (S3 clients shared where settings are equal),
/// each wrapped in a [`RetryBackend`].
pub async fn build_backends(config: &Config) -> anyhow::Result<HashMap<String, Arc<dyn Backend>>> {
    let pool = S3ClientPool::new();
    let mut out: HashMap<String, Arc<dyn Backend>> = HashMap::new();
    for (name, b) in &config.backends {
        out.insert(name.clone(), build_backend(name, b, &pool).await?);
    }
    Ok(out)
}

/// The backend of one `[backends.NAME]`, wrapped in a [`RetryBackend`].
pub async fn build_backend(name: &str, b: &BackendConfig, pool: &S3ClientPool) -> anyhow::Result<Arc<dyn Backend>> {
    let (backend, retry, kind): (Arc<dyn Backend>, RetryConfig, &'static str) = match b {
        BackendConfig::S3(c) => (
            Arc::new(
                pool.backend(&s3_config(c))
                    .await
                    .with_context(|| format!("backend {name}: creating S3 client"))?
                    .with_checksum(upload_checksum(c)),
            ),
            s3_retry(c),
            "s3",
        ),
        BackendConfig::Local(c) => {
            std::fs::create_dir_all(&c.root)
                .with_context(|| format!("backend {name}: creating {}", c.root.display()))?;
            (
                Arc::new(
                    LocalBackend::new(c.root.clone())
                        .with_context(|| format!("backend {name}"))?
                        .with_request_timeout(c.request_timeout),
                ),
                RetryConfig::default(),
                "local",
            )
        }
        BackendConfig::Dal(c) => (
            Arc::new(DalBackend::new(&dal_config(c)).with_context(|| format!("backend {name}"))?),
            dal_retry(),
            c.kind.name(),
        ),
    };
    Ok(Arc::new(RetryBackend::new(backend, retry).counted_as(kind)))
}

/// [`build_backend`] as the reloader calls it.
fn reload_builder() -> BuildBackend {
    Box::new(|name, cfg, pool| {
        Box::pin(async move { build_backend(&name, &cfg, &pool).await.map_err(|e| format!("{e:#}")) })
    })
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

/// One [`SwapBackend`] per config entry: the objects a reload rotates in place.
fn swappable(config: &Config, backends: HashMap<String, Arc<dyn Backend>>) -> HashMap<String, Arc<SwapBackend>> {
    backends
        .into_iter()
        .map(|(name, b)| {
            let presigner = Presigner::new(config.backends.get(&name).and_then(crate::reload::signing));
            (name, Arc::new(SwapBackend::new(b, presigner)))
        })
        .collect()
}

fn tenant_table(
    config: &Config,
    backends: &HashMap<String, Arc<SwapBackend>>,
    owner: (u32, u32),
) -> anyhow::Result<TenantTable> {
    let mut specs = Vec::with_capacity(config.tenants.len());
    let mut shared = Vec::new();
    for t in &config.tenants {
        let b = backends
            .get(&t.backend)
            .with_context(|| format!("tenant {}: unknown backend {}", t.name, t.backend))?;
        let spec = tenant_spec(config, t, b, owner);
        if spec.mode & 0o077 != 0 {
            shared.push(format!("{} ({:04o})", t.name, spec.mode));
        }
        specs.push(spec);
    }
    if config.mount.allow_other {
        if shared.is_empty() {
            info!("allow_other: every tenant is private to its owner (mode 0700 unless configured)");
        } else {
            warn!(
                tenants = %shared.join(", "),
                "allow_other: these tenants are readable by other local users (their mode grants group or others access)"
            );
        }
    }
    Ok(TenantTable::new(specs))
}

/// Count (and periodically recount) the usage of every tenant with a quota, until the
/// filesystem is gone.
async fn quota_counts(fs: std::sync::Weak<Filesystem>) {
    loop {
        let Some(f) = fs.upgrade() else { return };
        f.recount_quotas().await;
        // Tenants with a quota may appear by reload: look again at least once a minute.
        let tick = f.quota_tick().unwrap_or(Duration::from_secs(60));
        drop(f);
        tokio::time::sleep(tick).await;
    }
}

/// The user running byosfs (effective uid and gid): the default owner of every file.
pub fn mounting_user() -> (u32, u32) {
    (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw())
}

/// How long a clean shutdown waits for files being written, unless
/// `BYOSFS_SHUTDOWN_TIMEOUT` (seconds) says otherwise.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// Bound on each abort request of startup recovery.
const RECOVERY_ABORT_TIMEOUT: Duration = Duration::from_secs(30);

/// The clean-shutdown wait: `BYOSFS_SHUTDOWN_TIMEOUT` in seconds, else 60 s.
fn shutdown_timeout() -> Duration {
    match std::env::var("BYOSFS_SHUTDOWN_TIMEOUT") {
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
            _ => {
                warn!(value = %v, "BYOSFS_SHUTDOWN_TIMEOUT is not a number of seconds; using the default");
                DEFAULT_SHUTDOWN_TIMEOUT
            }
        },
        Err(_) => DEFAULT_SHUTDOWN_TIMEOUT,
    }
}

/// FNV-1a: a hash that never changes between builds (std's `DefaultHasher` may), so the
/// default staging directory of a config stays the same across upgrades.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The staging directory used when the config names none: stable across restarts, so the
/// next mount of the same config finds a crashed run's leftovers, and distinct per config
/// file. `$XDG_STATE_HOME/byosfs/staging-<hash>` if set, else
/// `/var/tmp/byosfs-<uid>/staging-<hash>` (`/var/tmp` survives reboots, `/tmp` may not).
pub fn default_staging_dir(config_path: &Path, uid: u32) -> PathBuf {
    let canonical = std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let name = format!("staging-{:016x}", stable_hash(canonical.as_os_str().as_encoded_bytes()));
    match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(state) => PathBuf::from(state).join("byosfs").join(name),
        None => Path::new("/var/tmp").join(format!("byosfs-{uid}")).join(name),
    }
}

/// The staging directory for `config`, created; the default one is checked to be ours
/// (`/var/tmp` is shared by all users).
fn staging_dir(config: &Config) -> anyhow::Result<PathBuf> {
    if let Some(d) = &config.write.staging_dir {
        return Ok(d.clone());
    }
    let uid = mounting_user().0;
    let dir = default_staging_dir(&config.source, uid);
    // Private from the first directory created (`byosfs-<uid>` in the shared /var/tmp).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating staging directory {}", dir.display()))?;
    if let Some(parent) = dir.parent() {
        let meta = std::fs::symlink_metadata(parent)?;
        if !meta.is_dir() || meta.uid() != uid {
            bail!(
                "staging directory {} is not a directory owned by uid {uid}; set [write] staging_dir",
                parent.display()
            );
        }
    }
    Ok(dir)
}

/// Longest an unmount waits for the disk cache's queue (at most 64 MiB of blocks, well under a
/// second on a working disk).
const DISK_CACHE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The disk cache of `[cache] disk_dir`, if set. A directory that is not private (or not a
/// cache) fails the mount; one in use by another mount is skipped with a warning, since the
/// mount works without it.
fn disk_cache(config: &Config) -> anyhow::Result<Option<Arc<DiskCache>>> {
    let Some(path) = &config.cache.disk_dir else {
        return Ok(None);
    };
    let dir = crate::upload::root::open_private_dir(path, "disk cache directory", "[cache] disk_dir")
        .map_err(anyhow::Error::msg)?;
    let disk_config = DiskCacheConfig {
        path: path.clone(),
        capacity: config.cache.disk_size,
        block_size: config.cache.block_size,
    };
    match DiskCache::open(dir, disk_config) {
        Ok(d) => Ok(Some(d)),
        Err(e @ DiskCacheError::InUse(_)) => {
            warn!(error = %e, "running without the disk cache");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Build the filesystem for `config` (used by `mount` and by tests that skip the kernel).
pub async fn build_filesystem(config: &Config, owner: (u32, u32)) -> anyhow::Result<Filesystem> {
    Ok(build_with_uploader(config, owner).await?.0)
}

/// The filesystem, its uploader and the live backend objects (for reloads).
struct Built {
    fs: Filesystem,
    uploader: Arc<Uploader>,
    cache: Arc<BlockCache>,
    backends: HashMap<String, Arc<SwapBackend>>,
}

async fn build_with_uploader(config: &Config, owner: (u32, u32)) -> anyhow::Result<(Filesystem, Arc<Uploader>)> {
    let b = build(config, owner).await?;
    Ok((b.fs, b.uploader))
}

async fn build(config: &Config, owner: (u32, u32)) -> anyhow::Result<Built> {
    let backends = swappable(config, build_backends(config).await?);
    let tenants = tenant_table(config, &backends, owner)?;
    let cache = Arc::new(
        BlockCache::new(config.cache.memory, config.cache.block_size).with_tenant_share(config.mount.tenant_share),
    );
    let staging_dir = staging_dir(config)?;
    let uploader = Uploader::with_tenant_share(
        UploadConfig {
            part_size: config.write.part_size,
            max_concurrent_parts: config.write.max_concurrent_parts,
            memory_budget: config.write.memory,
            staging_dir,
            staging_limit: config.write.staging_limit,
        },
        config.mount.tenant_share,
    )
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
        negative_ttl: config.cache.negative_ttl,
        write_back: crate::upload::writeback::WriteBackConfig::default(),
    };
    let disk = disk_cache(config)?;
    Ok(Built {
        fs: Filesystem::new(tenants, cache.clone(), uploader.clone(), fs_config).with_disk_cache(disk),
        uploader,
        cache,
        backends,
    })
}

/// Turn transparent huge pages off for this process.
///
/// The allocator advises the kernel to back its arenas with 2 MiB pages, and where the
/// kernel then compacts memory to find one (the default `defrag=madvise`), a fault in a
/// read's path stalls it for milliseconds: with THP, 5-7 % of random 256 KiB reads on a fresh
/// mount took over 3 ms (p99 6-8 ms); without, 0.1-1 % (p99 1.2-3 ms) at 205-372 instead of
/// 195-237 MB/s (fio latency logs, docs/performance.md "Fifth round"; `scripts/bench.sh` row
/// `rand256k_p99`). Block-cache blocks are at most a few MiB, so huge pages buy little TLB reach;
/// sequential reads pay 4 KiB faults instead, a few percent of CPU while the cache first fills.
#[allow(unsafe_code)] // one libc call; there is no safe wrapper in our dependencies
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        // Older kernels lack it; everything works as before, with THP's latency spikes.
        info!(error = %std::io::Error::last_os_error(), "transparent huge pages left enabled");
    }
}

/// Mount and serve until unmounted from outside or interrupted (SIGINT/SIGTERM); SIGHUP and
/// the control socket reload the config file. `overrides` (the command line's) are applied
/// to every re-read file as they were to `config`.
pub fn run_mount(
    config: Config,
    mountpoint: &Path,
    overrides: Box<dyn Fn(&mut Config) + Send + Sync>,
) -> anyhow::Result<()> {
    let meta = std::fs::metadata(mountpoint)
        .with_context(|| format!("mount point {} is not accessible", mountpoint.display()))?;
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", mountpoint.display());
    }
    // Files belong to the user who mounts unless [mount]/[[tenants]] uid and gid say
    // otherwise (not to the mount point's owner: root mounting on someone's directory
    // would hand them every tenant).
    let owner = mounting_user();
    disable_transparent_huge_pages();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("byosfs-worker")
        .build()?;
    let started = Instant::now();
    let Built {
        fs,
        uploader,
        cache,
        backends,
    } = rt.block_on(build(&config, owner))?;
    let fs = Arc::new(fs);
    // Quota usage is counted in the background: the mount does not wait for the listing.
    rt.spawn(quota_counts(Arc::downgrade(&fs)));
    // Before serving: abort what a crashed earlier run left (see `recovery`).
    if let Some(staging) = uploader.root().parent() {
        // Closed files a crashed run staged for write-back join this mount's queue here, so
        // lookups show them from the first request on; their uploads start at once.
        let report = rt.block_on(recover_staging(
            staging,
            fs.tenants(),
            RECOVERY_ABORT_TIMEOUT,
            Some(fs.write_back()),
        ));
        if report != RecoveryReport::default() {
            info!(
                crashed_runs = report.crashed_runs,
                aborted = report.aborted,
                kept = report.kept,
                discarded_bytes = report.discarded_bytes,
                write_back_adopted = report.adopted,
                write_back_kept = report.adopt_kept,
                "crash recovery done"
            );
        }
    }
    // Registered before mounting: from here on SIGTERM/SIGINT mean a clean shutdown.
    let mut signals = rt.block_on(async { Signals::new() });
    let canonical_mnt = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_owned());
    let socket_path = config
        .mount
        .control_socket
        .clone()
        .unwrap_or_else(|| control::default_socket_path(&canonical_mnt, control::euid()));
    let reloader = Arc::new(Reloader::new(
        config.clone(),
        backends,
        fs.clone(),
        (cache.clone(), uploader.clone()),
        owner,
        overrides,
        reload_builder(),
    ));
    let handler = Arc::new(MountControl {
        reloader: reloader.clone(),
        fs: fs.clone(),
        uploader: uploader.clone(),
        cache,
        started,
        socket: socket_path.clone(),
        rates: Default::default(),
    });
    rt.block_on(async { handler.start_sampling() });
    if let Some(addr) = config.metrics.listen {
        // A configured endpoint that cannot bind is a startup error, like a bad config.
        let endpoint = rt
            .block_on(crate::metrics::exporter::Endpoint::bind(addr))
            .with_context(|| format!("metrics.listen: cannot listen on {addr}"))?;
        let gauges = handler.clone();
        let _rt = rt.enter();
        endpoint.serve(Arc::new(move || gauges.gauges()));
        info!(%addr, "serving Prometheus metrics on /metrics");
    }
    // Bound before mounting, so `byosfs status` works as soon as the mount is visible.
    // The mount works without its socket (reload by SIGHUP still does): a failure is logged.
    let _socket = rt.block_on(async {
        match control::ControlSocket::bind(&socket_path) {
            Ok(mut s) => {
                s.serve(control::euid(), handler);
                Some(s)
            }
            Err(e) => {
                warn!(path = %socket_path.display(), error = %e, "control socket not available; reload with SIGHUP");
                None
            }
        }
    });
    let max_ra = u32::try_from(config.cache.readahead_initial.min(1 << 20)).unwrap_or(1 << 20);
    let adapter = FuseAdapter::new(
        fs.clone(),
        rt.handle().clone(),
        config.mount.max_requests,
        config.mount.tenant_share,
        max_ra,
    );
    let opts = MountOptions {
        allow_other: config.mount.allow_other,
        read_only: config.mount.read_only,
        fs_name: config.mount.fs_name.clone(),
        threads: config.mount.threads,
        kernel_readahead: Some(max_ra),
    };
    let mut mounted = mount(adapter, mountpoint, &opts).with_context(|| {
        format!(
            "mounting at {} (is fuse3 installed and /dev/fuse usable?)",
            mountpoint.display()
        )
    })?;
    reloader.set_kernel(mounted.kernel_cache());
    info!(
        mountpoint = %mountpoint.display(),
        tenants = fs.tenants().len(),
        control_socket = %socket_path.display(),
        "mounted"
    );
    notify_systemd("READY=1");

    let grace = shutdown_timeout();
    let interrupted = rt.block_on(async {
        // Polled: fuser gives no async notification when the kernel side goes away.
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                sig = signals.next_event() => {
                    if sig == Signal::Stop {
                        return true;
                    }
                    notify_systemd("RELOADING=1");
                    match reloader.reload(false).await {
                        Ok(_) => {}
                        Err(e) => error!(error = %e, "SIGHUP: reload refused, nothing changed"),
                    }
                    notify_systemd("READY=1");
                }
                _ = tick.tick() => if mounted.is_finished() { return false },
            }
        }
    });
    notify_systemd("STOPPING=1");
    let deadline = Instant::now() + grace;
    let mut detached = false;
    if interrupted {
        info!(
            timeout_s = grace.as_secs_f64(),
            "signal received: waiting for files being written to be closed and committed, then unmounting"
        );
        // Keep serving meanwhile: writers finish and close, and their last close commits.
        let finished = rt.block_on(async {
            loop {
                if uploader.live_sessions().is_empty() || mounted.is_finished() {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                tokio::select! {
                    () = signals.next() => {
                        warn!("second signal: not waiting any longer");
                        return false;
                    }
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        if !finished {
            report_unfinished(&uploader);
        }
        if !mounted.is_finished() {
            if let Err(e) = mounted.unmount() {
                // Files are still open (readers, or writers past the timeout): detach lazily;
                // exiting then ends the FUSE connection and their next call fails.
                warn!(error = %e, "unmount refused (files still open); detaching the mount lazily");
                lazy_detach(mountpoint);
                detached = true;
            }
        }
    }
    let left = if detached {
        uploader.live_sessions()
    } else {
        if let Err(e) = mounted.join() {
            warn!(error = %e, "FUSE session ended with an error");
        }
        // Releases the kernel sent just before the unmount may still be committing.
        let left = rt.block_on(async {
            while !uploader.live_sessions().is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            uploader.live_sessions()
        });
        if !left.is_empty() {
            report_unfinished(&uploader);
        }
        left
    };
    drain_write_back(&rt, &fs, &mut signals, grace);
    rt.shutdown_timeout(Duration::from_secs(5));
    if let Some(disk) = fs.disk_cache() {
        // Blocks still queued for the disk cache are written, so the next mount has them;
        // bounded, since the cache is an optimisation and exit must not hang on a slow disk.
        if !disk.flush(DISK_CACHE_FLUSH_TIMEOUT) {
            warn!("disk cache: blocks still queued at exit are not cached");
        }
    }
    if !left.is_empty() {
        bail!(
            "{} file(s) could not be committed before shutdown (see the log)",
            left.len()
        );
    }
    info!("unmounted");
    Ok(())
}

/// Upload what write-back still holds before exiting, logging progress, for at most `grace`
/// (`BYOSFS_SHUTDOWN_TIMEOUT`) or until a signal. What is left stays staged and journaled:
/// the next mount of this config uploads it before serving those names from the bucket.
fn drain_write_back(rt: &tokio::runtime::Runtime, fs: &Filesystem, signals: &mut Signals, grace: Duration) {
    let wb = fs.write_back().clone();
    if wb.is_idle() {
        return;
    }
    let s = wb.summary();
    info!(
        files = s.files,
        bytes = s.bytes,
        timeout_s = grace.as_secs_f64(),
        "write-back: uploading closed files before exiting (a signal stops waiting; nothing is lost)"
    );
    let left = rt.block_on(wb.drain(async {
        tokio::select! {
            () = signals.next() => warn!("signal received: not waiting for write-back uploads any longer"),
            () = tokio::time::sleep(grace) => {}
        }
    }));
    if left.files == 0 {
        info!("write-back: every closed file is uploaded");
    } else {
        warn!(
            files = left.files,
            bytes = left.bytes,
            "write-back: closed files not uploaded yet stay staged and journaled; the next mount of this config uploads them"
        );
        for p in &left.items {
            warn!(tenant = %p.owner, key = ?p.key, attempts = p.attempts, error = ?p.last_error, "write-back: still staged");
        }
    }
}

/// One log line per write session that did not finish: its uncommitted data is not in the
/// bucket (the last committed version is; the next mount aborts the multipart upload).
fn report_unfinished(uploader: &Uploader) {
    for s in uploader.live_sessions() {
        warn!(
            tenant = %s.owner,
            key = ?s.key,
            "shutdown: file still open for writing or still committing; data written since its last close/fsync is not saved"
        );
    }
}

/// `fusermount3 -u -z`: detach the mount now, whatever is still open.
fn lazy_detach(mountpoint: &Path) {
    match std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(mountpoint)
        .status()
    {
        Ok(st) if st.success() => {}
        Ok(st) => error!(status = %st, "fusermount3 -u -z failed"),
        Err(e) => error!(error = %e, "could not run fusermount3"),
    }
}

/// SIGINT and SIGTERM as one stream of "stop" requests; SIGHUP as "reload".
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        // Needs a runtime context (the caller is inside `block_on`).
        Self {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    async fn next(&mut self) {
        tokio::select! {
            () = recv(&mut self.term) => {}
            () = recv(&mut self.int) => {}
        }
    }

    /// The next stop or reload request.
    async fn next_event(&mut self) -> Signal {
        tokio::select! {
            () = recv(&mut self.term) => Signal::Stop,
            () = recv(&mut self.int) => Signal::Stop,
            () = recv(&mut self.hup) => Signal::Reload,
        }
    }
}

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// SIGTERM, SIGINT.
    Stop,
    /// SIGHUP.
    Reload,
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_checksums_only_unsigned_payloads_with_the_providers_best() {
        use ChecksumSetting as S;
        assert_eq!(resolve_checksum(S::Auto, true, true), UploadChecksum::None);
        assert_eq!(resolve_checksum(S::Auto, false, true), UploadChecksum::Crc32c);
        assert_eq!(resolve_checksum(S::Auto, false, false), UploadChecksum::Md5);
        assert_eq!(resolve_checksum(S::Md5, true, true), UploadChecksum::Md5);
        assert_eq!(resolve_checksum(S::None, false, true), UploadChecksum::None);
    }

    #[test]
    fn default_staging_dir_is_stable_and_per_config() {
        let a = default_staging_dir(Path::new("relative/none/a.toml"), 1000);
        assert_eq!(a, default_staging_dir(Path::new("relative/none/a.toml"), 1000));
        assert_ne!(a, default_staging_dir(Path::new("relative/none/b.toml"), 1000));
        assert!(a.to_string_lossy().contains("staging-"));
        // FNV-1a reference value: the name must not change between builds.
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
