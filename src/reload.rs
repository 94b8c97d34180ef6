//! Live reload: re-read the config file of a running mount and apply the difference.
//!
//! Steps, each of which may refuse the reload before anything changes:
//! 1. load and validate the file in full (`Config::load`; errors carry `file:line`);
//! 2. [`plan`] the difference against the running config (pure, unit-tested): tenants added,
//!    removed, re-pointed (other backend, bucket, endpoint or prefix) or updated in place
//!    (owner, mode, read-only); backends whose connection alone changed (credentials,
//!    timeouts) are *rotated*; settings that cannot change live are listed as needing a
//!    remount;
//! 3. build clients for new and changed backends and probe every added or re-pointed tenant
//!    and one tenant of each rotated backend, as `byosfs check` does, in parallel and bounded
//!    in time;
//! 4. apply: rotated backends swap their client (every later request, also of open files, is
//!    signed with the new keys), the tenant table takes the changes as one generation, and the
//!    kernel forgets the root entries that changed.
//!
//! Work is proportional to the number of changed tenants and backends, except the
//! name-by-name comparison of step 2, a hash lookup per tenant. Reloads are serialised by the
//! state's lock; requests never wait for a reload (they read the tenant table, which takes
//! one short write lock at step 4).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tracing::{info, warn};

use crate::backend::headers::{HeaderPolicy, HeadersBackend};
use crate::backend::metered::MeteredBackend;
use crate::backend::prefix::PrefixBackend;
use crate::backend::s3::{Presigner, S3BackendConfig, S3ClientPool};
use crate::backend::swap::SwapBackend;
use crate::backend::Backend;
use crate::cache::BlockCache;
use crate::config::{BackendConfig, Config, TenantConfig};
use crate::fs::Filesystem;
use crate::fuse::session::KernelCache;
use crate::limits::LimitRules;
use crate::tenant::{TenantChange, TenantPolicy, TenantSpec};
use crate::upload::Uploader;
use crate::url::UrlMaker;

/// Probes run at once during a reload.
const PROBE_CONCURRENCY: usize = 16;
/// Bound on one probe (all its steps, retries included): a reload answers within it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// What a backend change means for the tenants on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackendChange {
    /// Same settings.
    Same,
    /// Same location (type, endpoint, bucket, root, prefix), other connection settings
    /// (credentials, region, timeouts, ...): swap the client, keep tenants and caches.
    Rotate,
    /// Another location, or new: tenants on it are re-pointed.
    Move,
}

fn backend_change(old: Option<&BackendConfig>, new: &BackendConfig) -> BackendChange {
    let Some(old) = old else { return BackendChange::Move };
    if old == new {
        return BackendChange::Same;
    }
    match (old, new) {
        (BackendConfig::S3(a), BackendConfig::S3(b))
            if a.endpoint == b.endpoint && a.bucket == b.bucket && a.prefix == b.prefix =>
        {
            BackendChange::Rotate
        }
        _ => BackendChange::Move,
    }
}

/// One tenant's part of a [`Plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TenantStep {
    /// New name.
    Add,
    /// Name gone.
    Remove,
    /// New storage location.
    Repoint,
    /// Same location, other owner/mode/read-only.
    Update,
    /// Same location, other upload headers, limits or URL settings (and maybe owner/mode).
    Reconfigure,
}

/// The difference between the running config and a new one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Tenant name → what happens to it (only tenants that change).
    pub(crate) tenants: Vec<(String, TenantStep)>,
    /// Backends whose client is rebuilt and swapped in place.
    pub(crate) rotate: Vec<String>,
    /// Backends built anew (added, or moved to another location).
    pub(crate) build: Vec<String>,
    /// Settings that differ but apply only at the next mount.
    pub(crate) needs_remount: Vec<String>,
    /// Budgets resized live, with their new size in bytes.
    pub resize: Vec<(Budget, u64)>,
}

/// A mount-wide budget a reload resizes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Budget {
    /// `[cache] memory`: the block cache (a smaller one evicts at once).
    CacheMemory,
    /// `[write] staging_limit` (a smaller one refuses new staging until enough is released).
    StagingLimit,
}

impl Budget {
    /// The config key.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::CacheMemory => "cache.memory",
            Self::StagingLimit => "write.staging_limit",
        }
    }
}

/// Effective per-tenant settings, as the tenant table gets them: read-only, uid, gid, mode,
/// POSIX metadata, exclusive create.
fn effective(c: &Config, t: &TenantConfig, owner: (u32, u32)) -> (bool, u32, u32, u16, bool, bool) {
    let s3 = match c.backends.get(&t.backend) {
        Some(BackendConfig::S3(s3)) => Some(s3),
        _ => None,
    };
    (
        t.read_only || c.mount.read_only,
        t.uid.or(c.mount.uid).unwrap_or(owner.0),
        t.gid.or(c.mount.gid).unwrap_or(owner.1),
        t.effective_mode(c.mount.allow_other),
        // The local backend keeps no user metadata: mode and owner stay per tenant there.
        t.posix_metadata && s3.is_some(),
        s3.is_some_and(|s3| s3.conditional_writes),
    )
}

/// Compare `old` (running) with `new`. See the module docs.
pub(crate) fn plan(old: &Config, new: &Config, owner: (u32, u32)) -> Plan {
    let mut p = Plan::default();
    let mut changes = HashMap::new();
    for (name, b) in &new.backends {
        let c = backend_change(old.backends.get(name), b);
        match c {
            BackendChange::Same => {}
            BackendChange::Rotate => p.rotate.push(name.clone()),
            BackendChange::Move => p.build.push(name.clone()),
        }
        changes.insert(name.as_str(), c);
    }
    let old_tenants: HashMap<&str, &TenantConfig> = old.tenants.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut seen = BTreeSet::new();
    for t in &new.tenants {
        seen.insert(t.name.as_str());
        let step = match old_tenants.get(t.name.as_str()) {
            None => Some(TenantStep::Add),
            Some(o) if o.backend != t.backend || o.prefix != t.prefix => Some(TenantStep::Repoint),
            Some(_) if changes.get(t.backend.as_str()) == Some(&BackendChange::Move) => Some(TenantStep::Repoint),
            // Headers, limits and URL settings live in the tenant's backend view and policy:
            // replaced, but the location (and with it the binding) stays.
            Some(o) if o.web != t.web => Some(TenantStep::Reconfigure),
            Some(o) if effective(old, o, owner) != effective(new, t, owner) || o.write_back != t.write_back => {
                Some(TenantStep::Update)
            }
            Some(_) => None,
        };
        if let Some(step) = step {
            p.tenants.push((t.name.clone(), step));
        }
    }
    for t in &old.tenants {
        if !seen.contains(t.name.as_str()) {
            p.tenants.push((t.name.clone(), TenantStep::Remove));
        }
    }
    let (om, nm) = (&old.mount, &new.mount);
    let fixed = [
        ("mount.allow_other", om.allow_other != nm.allow_other),
        (
            "mount.read_only (the mount option; tenants follow it now)",
            om.read_only != nm.read_only,
        ),
        ("mount.fs_name", om.fs_name != nm.fs_name),
        ("mount.attr_ttl", om.attr_ttl != nm.attr_ttl),
        ("mount.entry_ttl", om.entry_ttl != nm.entry_ttl),
        ("mount.threads", om.threads != nm.threads),
        ("mount.max_requests", om.max_requests != nm.max_requests),
        ("mount.tenant_share", om.tenant_share != nm.tenant_share),
        ("mount.control_socket", om.control_socket != nm.control_socket),
        (
            "cache (other than memory)",
            crate::config::CacheConfig {
                memory: new.cache.memory,
                ..old.cache.clone()
            } != new.cache,
        ),
        // `[write] memory` is split into per-tenant shares at mount (crate::fair), which a
        // resize would have to re-cut under writers waiting on them: not live yet.
        ("write.memory", old.write.memory != new.write.memory),
        (
            "write (other than memory and staging_limit)",
            crate::config::WriteConfig {
                memory: new.write.memory,
                staging_limit: new.write.staging_limit,
                ..old.write.clone()
            } != new.write,
        ),
        ("metrics.listen", old.metrics != new.metrics),
    ];
    for (budget, was, now) in [
        (Budget::CacheMemory, old.cache.memory, new.cache.memory),
        (Budget::StagingLimit, old.write.staging_limit, new.write.staging_limit),
    ] {
        if was != now {
            p.resize.push((budget, now));
        }
    }
    p.needs_remount = fixed
        .into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(k, _)| k.to_owned())
        .collect();
    p
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    /// The file does not load or validate (every problem, `file:line: field: message`).
    #[error("{0}")]
    Config(String),
    /// A client could not be built for a new or changed backend.
    #[error("{0}")]
    Build(String),
    /// Probes failed (tenant and the check's error class each); `--force` applies anyway.
    #[error("{}", probe_lines(.0))]
    Probe(Vec<(String, String)>),
}

fn probe_lines(failures: &[(String, String)]) -> String {
    let lines: Vec<String> = failures.iter().map(|(t, e)| format!("tenant {t}: probe {e}")).collect();
    format!("{} (nothing changed; --force applies it anyway)", lines.join("\n"))
}

/// What an applied reload did.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct ReloadReport {
    /// The tenant table generation now current.
    pub(crate) generation: u64,
    /// Tenants that appeared.
    pub(crate) added: Vec<String>,
    /// Tenants that went away.
    pub(crate) removed: Vec<String>,
    /// Tenants bound to a new storage location.
    pub(crate) repointed: Vec<String>,
    /// Tenants whose owner, mode, read-only flag, upload headers, limits or URL settings
    /// changed (same location, same binding).
    pub(crate) updated: Vec<String>,
    /// Backends whose connection (credentials, ...) was replaced.
    pub(crate) rotated: Vec<String>,
    /// Settings left as they are until the next mount.
    pub(crate) needs_remount: Vec<String>,
    /// Budgets resized live (config key, new size in bytes).
    pub resized: Vec<(String, u64)>,
    /// Tenants applied although their probe failed (`--force`), with the failure.
    pub(crate) unreachable: Vec<(String, String)>,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "generation {}", self.generation)?;
        for (what, names) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("re-pointed", &self.repointed),
            ("updated", &self.updated),
            ("rotated backends", &self.rotated),
        ] {
            if !names.is_empty() {
                write!(f, "; {what}: {}", names.join(", "))?;
            }
        }
        if self.added.len() + self.removed.len() + self.repointed.len() + self.updated.len() + self.rotated.len() == 0 {
            f.write_str("; no tenant changes")?;
        }
        for (k, v) in &self.resized {
            write!(f, "\nresized: {k} = {v} bytes")?;
        }
        for k in &self.needs_remount {
            write!(f, "\nneeds a remount: {k} changed")?;
        }
        for (t, e) in &self.unreachable {
            write!(f, "\nunreachable (forced): tenant {t}: {e}")?;
        }
        Ok(())
    }
}

/// Builds the client of one backend (given by `app`, which owns the translation of the user
/// config into backend settings).
pub(crate) type BuildBackend = Box<
    dyn Fn(
            String,
            BackendConfig,
            Arc<S3ClientPool>,
        ) -> futures::future::BoxFuture<'static, Result<Arc<dyn Backend>, String>>
        + Send
        + Sync,
>;

/// The running config and the live backend objects it was built into.
#[derive(Debug)]
struct State {
    config: Config,
    backends: HashMap<String, Arc<SwapBackend>>,
}

/// Applies reloads to one mount.
pub(crate) struct Reloader {
    state: tokio::sync::Mutex<State>,
    fs: Arc<Filesystem>,
    /// The budgets a reload resizes live.
    cache: Arc<BlockCache>,
    uploader: Arc<Uploader>,
    kernel: std::sync::Mutex<Option<KernelCache>>,
    owner: (u32, u32),
    /// Command-line overrides (`--read-only`, `--allow-other`) applied to every reloaded file.
    overrides: Box<dyn Fn(&mut Config) + Send + Sync>,
    build: BuildBackend,
    pool: Arc<S3ClientPool>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// The Content-Type and Cache-Control rules of a tenant.
fn header_policy(w: &crate::config::TenantWeb) -> HeaderPolicy {
    HeaderPolicy {
        cache_control: w.cache_control.clone(),
        content_types: w.content_types.clone(),
        cache_control_by_extension: w.cache_control_by_extension.clone(),
    }
}

/// How the URLs of `t`'s files are made: its own base, its backend's, or presigned GETs by
/// its backend's presigner.
fn url_maker(config: &Config, t: &TenantConfig, backend: &SwapBackend) -> UrlMaker {
    let backend_base = match config.backends.get(&t.backend) {
        Some(BackendConfig::S3(s3)) => s3.public_url_base.clone(),
        _ => None,
    };
    UrlMaker::new(
        t.web.public_url_base.clone(),
        backend_base,
        t.prefix.clone(),
        backend.presigner(),
    )
}

/// What URLs of backend `b` are signed with: the settings its client is built from.
pub(crate) fn signing(b: &BackendConfig) -> Option<S3BackendConfig> {
    match b {
        BackendConfig::S3(s3) => Some(crate::app::s3_config(s3)),
        _ => None,
    }
}

/// A tenant's spec on `backend`: the view confined to its prefix, with its upload headers,
/// counted for `status`.
pub(crate) fn tenant_spec(
    config: &Config,
    t: &TenantConfig,
    backend: &Arc<SwapBackend>,
    owner: (u32, u32),
) -> TenantSpec {
    let (read_only, uid, gid, mode, posix_metadata, exclusive_create) = effective(config, t, owner);
    let write_back = t.write_back;
    let view: Arc<dyn Backend> = Arc::new(PrefixBackend::new(backend.clone(), &t.prefix));
    let view: Arc<dyn Backend> = Arc::new(HeadersBackend::new(view, header_policy(&t.web)));
    let metrics = crate::metrics::tenant(&t.name);
    metrics.set_backend_type(
        config
            .backends
            .get(&t.backend)
            .map_or("unknown", BackendConfig::type_name),
    );
    TenantSpec {
        name: t.name.clone(),
        backend: Arc::new(MeteredBackend::new(view, metrics)),
        read_only,
        uid,
        gid,
        mode,
        posix_metadata,
        exclusive_create,
        policy: Arc::new(TenantPolicy {
            rules: LimitRules {
                max_file_size: t.web.max_file_size,
                quota: t.web.quota,
                allowed_extensions: t.web.allowed_extensions.clone(),
                denied_extensions: t.web.denied_extensions.clone(),
            },
            usage: Default::default(),
            recount: t.web.quota_recount,
            urls: url_maker(config, t, backend),
        }),
        write_back,
    }
}

impl Reloader {
    /// A reloader for `fs`, mounted from `config` with `backends` (one per config entry).
    pub(crate) fn new(
        config: Config,
        backends: HashMap<String, Arc<SwapBackend>>,
        fs: Arc<Filesystem>,
        (cache, uploader): (Arc<BlockCache>, Arc<Uploader>),
        owner: (u32, u32),
        overrides: Box<dyn Fn(&mut Config) + Send + Sync>,
        build: BuildBackend,
    ) -> Self {
        Self {
            state: tokio::sync::Mutex::new(State { config, backends }),
            fs,
            cache,
            uploader,
            kernel: std::sync::Mutex::new(None),
            owner,
            overrides,
            build,
            pool: Arc::new(S3ClientPool::new()),
        }
    }

    /// Where to send kernel invalidations (set once mounted; tests without a kernel skip it).
    pub(crate) fn set_kernel(&self, kernel: KernelCache) {
        *self.kernel.lock().unwrap_or_else(|e| e.into_inner()) = Some(kernel);
    }

    /// The running config's file.
    pub(crate) async fn source(&self) -> std::path::PathBuf {
        self.state.lock().await.config.source.clone()
    }

    /// Re-read the config file and apply it; see the module docs.
    pub(crate) async fn reload(&self, force: bool) -> Result<ReloadReport, ReloadError> {
        let mut state = self.state.lock().await;
        let source = state.config.source.clone();
        let new = Config::load(&source).map_err(|e| ReloadError::Config(e.to_string()));
        // Same thread as the parse (no await since): its TOML document is the bulk of the
        // memory to hand back, as at mount.
        crate::memory::release_free_memory();
        let mut new = new?;
        (self.overrides)(&mut new);
        let plan = plan(&state.config, &new, self.owner);

        // Clients for new, moved and rotated backends; nothing is installed yet.
        let mut built: HashMap<String, Arc<dyn Backend>> = HashMap::new();
        for name in plan.build.iter().chain(&plan.rotate) {
            let Some(cfg) = new.backends.get(name) else { continue };
            let b = (self.build)(name.clone(), cfg.clone(), self.pool.clone())
                .await
                .map_err(ReloadError::Build)?;
            built.insert(name.clone(), b);
        }
        let view = |t: &TenantConfig| -> Option<Arc<dyn Backend>> {
            let inner: Arc<dyn Backend> = match built.get(&t.backend) {
                Some(b) => b.clone(),
                None => state.backends.get(&t.backend)?.clone(),
            };
            Some(Arc::new(PrefixBackend::new(inner, &t.prefix)))
        };

        // Probe added and re-pointed tenants, and one tenant of each rotated backend.
        let mut targets: Vec<(String, Arc<dyn Backend>)> = Vec::new();
        for (name, step) in &plan.tenants {
            if matches!(step, TenantStep::Add | TenantStep::Repoint) {
                if let Some(v) = new.tenant(name).and_then(view) {
                    targets.push((name.clone(), v));
                }
            }
        }
        for b in &plan.rotate {
            if let Some(t) = new.tenants.iter().find(|t| &t.backend == b) {
                if let Some(v) = view(t) {
                    targets.push((format!("{} (backend {b})", t.name), v));
                }
            }
        }
        let failures = probe_all(targets).await;
        if !failures.is_empty() && !force {
            warn!(failures = failures.len(), "reload refused: probes failed");
            return Err(ReloadError::Probe(failures));
        }

        // Apply. Rotations first: a tenant moved onto a rotated backend gets the new client.
        for name in &plan.rotate {
            if let (Some(swap), Some(b)) = (state.backends.get(name), built.remove(name)) {
                swap.swap(b, new.backends.get(name).and_then(signing));
            }
        }
        for name in &plan.build {
            if let Some(b) = built.remove(name) {
                let presigner = Presigner::new(new.backends.get(name).and_then(signing));
                state
                    .backends
                    .insert(name.clone(), Arc::new(SwapBackend::new(b, presigner)));
            }
        }
        state.backends.retain(|name, _| new.backends.contains_key(name));
        let mut changes = Vec::with_capacity(plan.tenants.len());
        for (name, step) in &plan.tenants {
            if *step == TenantStep::Remove {
                changes.push(TenantChange::Remove(name.clone()));
                continue;
            }
            let Some(t) = new.tenant(name) else { continue };
            let Some(b) = state.backends.get(&t.backend) else {
                continue;
            };
            let spec = tenant_spec(&new, t, b, self.owner);
            changes.push(match step {
                TenantStep::Add => TenantChange::Add(spec),
                TenantStep::Repoint => TenantChange::Repoint(spec),
                TenantStep::Reconfigure => TenantChange::Reconfigure(spec),
                TenantStep::Update | TenantStep::Remove => TenantChange::Update(spec),
            });
        }
        let applied = self.fs.apply_tenants(changes);
        for &(budget, bytes) in &plan.resize {
            match budget {
                Budget::CacheMemory => self.cache.set_budget(bytes),
                Budget::StagingLimit => self.uploader.set_staging_limit(bytes),
            }
        }
        let kernel = self.kernel.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(kernel) = kernel {
            let names: Vec<String> = applied.root_entries_changed().map(str::to_owned).collect();
            if !names.is_empty() {
                // Blocking writes to /dev/fuse that wait for lookups in the root: off the runtime.
                let _ =
                    tokio::task::spawn_blocking(move || kernel.forget_root_entries(names.iter().map(String::as_str)))
                        .await;
            }
        }
        state.config = new;
        let report = ReloadReport {
            generation: applied.generation,
            added: applied.added,
            removed: applied.removed,
            repointed: applied.repointed,
            updated: applied.updated,
            rotated: plan.rotate,
            needs_remount: plan.needs_remount,
            resized: plan.resize.iter().map(|(b, v)| (b.key().to_owned(), *v)).collect(),
            unreachable: failures,
        };
        info!(%report, "config reloaded");
        Ok(report)
    }
}

impl Reloader {
    /// Make `tenant` read-only (`frozen`) or as configured again, keeping its binding (open
    /// files and cached blocks stay valid). Lasts until the tenant is re-pointed, changed by a
    /// reload, or the mount restarts.
    pub(crate) async fn freeze(&self, tenant: &str, frozen: bool) -> Result<String, String> {
        let state = self.state.lock().await;
        let t = state
            .config
            .tenant(tenant)
            .ok_or_else(|| format!("no tenant {tenant}"))?;
        let b = state
            .backends
            .get(&t.backend)
            .ok_or_else(|| format!("no backend {}", t.backend))?;
        let mut spec = tenant_spec(&state.config, t, b, self.owner);
        spec.read_only |= frozen;
        self.fs.apply_tenants(vec![TenantChange::Update(spec)]);
        let what = if frozen { "read-only" } else { "writable as configured" };
        info!(tenant, what, "tenant frozen state changed");
        Ok(format!("{tenant}: {what}"))
    }

    /// Point `tenant` at `prefix` (full key prefix) of `backend`, a backend of the running
    /// config, as a reload that re-points it would: open files finish against the old
    /// location, new opens see the new one. The running config records the change, so a
    /// reload of a file that has it changes nothing and one that lacks it moves the tenant back.
    pub(crate) async fn switch(&self, tenant: &str, backend: &str, prefix: &str) -> Result<String, String> {
        let mut state = self.state.lock().await;
        let i = state
            .config
            .tenants
            .iter()
            .position(|t| t.name == tenant)
            .ok_or_else(|| format!("no tenant {tenant}"))?;
        let b = state.backends.get(backend).cloned().ok_or_else(|| {
            format!("backend {backend} is not in the running config: add it to the file and run byosfs reload first")
        })?;
        let mut t = state.config.tenants[i].clone();
        t.backend = backend.to_owned();
        t.prefix = prefix.to_owned();
        let spec = tenant_spec(&state.config, &t, &b, self.owner);
        let applied = self.fs.apply_tenants(vec![TenantChange::Repoint(spec)]);
        let kernel = self.kernel.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(kernel) = kernel {
            let names: Vec<String> = applied.root_entries_changed().map(str::to_owned).collect();
            let _ =
                tokio::task::spawn_blocking(move || kernel.forget_root_entries(names.iter().map(String::as_str))).await;
        }
        state.config.tenants[i] = t;
        info!(tenant, backend, prefix, "tenant switched");
        Ok(format!("{tenant} now on {backend} under {prefix:?}"))
    }
}

/// Probe `targets` in parallel (bounded); the failures, as `(name, "step failed: class")`.
async fn probe_all(targets: Vec<(String, Arc<dyn Backend>)>) -> Vec<(String, String)> {
    // Spawned tasks rather than a buffered stream: each probe is `'static`, which keeps the
    // reload future `Send` for the control socket's handler.
    let limit = Arc::new(tokio::sync::Semaphore::new(PROBE_CONCURRENCY));
    let mut set = tokio::task::JoinSet::new();
    for target in targets {
        let limit = limit.clone();
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            probe_one(target).await
        });
    }
    let mut failures = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Some(f)) => failures.push(f),
            Ok(None) => {}
            Err(e) => failures.push(("(probe)".to_owned(), format!("probe task failed: {e}"))),
        }
    }
    failures.sort();
    failures
}

async fn probe_one((name, backend): (String, Arc<dyn Backend>)) -> Option<(String, String)> {
    match tokio::time::timeout(PROBE_TIMEOUT, crate::check::probe(backend.as_ref())).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some((name, e.to_string())),
        Err(_) => Some((name, format!("timed out after {} s", PROBE_TIMEOUT.as_secs()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(tenants: &str, extra: &str) -> Config {
        let text = format!(
            r#"
{extra}
[backends.a]
type = "local"
root = "/tmp/byosfs-plan-test-a"
[backends.b]
type = "local"
root = "/tmp/byosfs-plan-test-b"
{tenants}
"#
        );
        Config::from_toml(&text, Path::new("/tmp/plan.toml")).unwrap()
    }

    fn tenant(name: &str, backend: &str, extra: &str) -> String {
        format!("[[tenants]]\nname = \"{name}\"\nbackend = \"{backend}\"\nprefix = \"{name}/\"\n{extra}\n")
    }

    #[test]
    fn plan_names_each_change_once() {
        let old = config(
            &[
                tenant("keep", "a", ""),
                tenant("gone", "a", ""),
                tenant("moves", "a", ""),
                tenant("chmod", "a", ""),
            ]
            .concat(),
            "",
        );
        let new = config(
            &[
                tenant("keep", "a", ""),
                tenant("moves", "b", ""),
                tenant("chmod", "a", "mode = \"0700\""),
                tenant("new", "b", ""),
            ]
            .concat(),
            "[cache]\nmemory = \"64MiB\"\n",
        );
        let p = plan(&old, &new, (1, 1));
        let mut steps = p.tenants.clone();
        steps.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            steps,
            vec![
                ("chmod".to_owned(), TenantStep::Update),
                ("gone".to_owned(), TenantStep::Remove),
                ("moves".to_owned(), TenantStep::Repoint),
                ("new".to_owned(), TenantStep::Add),
            ]
        );
        assert!(p.build.is_empty() && p.rotate.is_empty());
        assert!(p.needs_remount.is_empty(), "{:?}", p.needs_remount);
        assert_eq!(p.resize, vec![(Budget::CacheMemory, 64 << 20)]);
        let other = config(
            &tenant("keep", "a", ""),
            "[cache]\nmemory = \"64MiB\"\nblock_size = \"2MiB\"\n[write]\nmemory = \"128MiB\"\nstaging_limit = \"1GiB\"\n",
        );
        let p = plan(&new, &other, (1, 1));
        assert_eq!(
            p.needs_remount,
            vec!["cache (other than memory)".to_owned(), "write.memory".to_owned()]
        );
        assert_eq!(p.resize, vec![(Budget::StagingLimit, 1 << 30)]);
        assert_eq!(plan(&new, &new, (1, 1)), Plan::default(), "no change, no work");
    }

    #[test]
    fn a_moved_backend_repoints_its_tenants() {
        let old = config(&tenant("t", "a", ""), "");
        let text = format!(
            "[backends.a]\ntype = \"local\"\nroot = \"/tmp/elsewhere\"\n{}",
            tenant("t", "a", "")
        );
        let new = Config::from_toml(&text, Path::new("/tmp/plan.toml")).unwrap();
        let p = plan(&old, &new, (1, 1));
        assert_eq!(p.tenants, vec![("t".to_owned(), TenantStep::Repoint)]);
        assert_eq!(p.build, vec!["a".to_owned()]);
    }

    #[test]
    fn web_and_limit_settings_keep_the_binding_a_new_location_does_not() {
        let old = config(&tenant("t", "a", ""), "");
        for web in [
            "cache_control = \"max-age=60\"",
            "max_file_size = \"1MiB\"",
            "public_url_base = \"https://cdn.example/\"",
        ] {
            let new = config(&tenant("t", "a", web), "");
            let p = plan(&old, &new, (1, 1));
            assert_eq!(p.tenants, vec![("t".to_owned(), TenantStep::Reconfigure)], "{web}");
            assert!(p.build.is_empty() && p.rotate.is_empty(), "{web}");
        }
        // Headers changed and the backend moved: the location wins.
        let text = format!(
            "[backends.a]\ntype = \"local\"\nroot = \"/tmp/elsewhere\"\n{}",
            tenant("t", "a", "cache_control = \"no-cache\"")
        );
        let moved = Config::from_toml(&text, Path::new("/tmp/plan.toml")).unwrap();
        assert_eq!(
            plan(&old, &moved, (1, 1)).tenants,
            vec![("t".to_owned(), TenantStep::Repoint)]
        );
    }
}
