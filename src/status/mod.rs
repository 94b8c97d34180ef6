//! `byosfs status`: what a running mount reports over its control socket, and how the CLI
//! shows it.
//!
//! [`MountControl`] answers the control socket's requests inside the mount process;
//! [`StatusReport`] is the JSON it sends (`byosfs status --json` prints it as is), and
//! [`render`] the text the CLI prints otherwise. The report has one section per concern
//! (tenants, uploads, budgets): a new concern adds a field to [`StatusReport`], a builder
//! here and a `render` section, without touching the others. Rates come from the mount's own
//! once-a-second samples ([`rates`]).

pub mod rates;
mod render;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use self::render::render;
use crate::cache::BlockCache;
use crate::control::{ControlHandler, Request, Response};
use crate::fs::Filesystem;
use crate::reload::Reloader;
use crate::upload::{LiveSession, Uploader};
use rates::Rates;

/// One tenant's line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TenantStatus {
    /// Directory name.
    pub name: String,
    /// Where its files are (`s3://bucket/prefix/`, `file:///root/prefix/`).
    pub location: String,
    /// Writes refused.
    pub read_only: bool,
    /// Requests sent to its storage.
    pub requests: u64,
    /// Requests per second over the last sample interval (about a second); `None` in the
    /// mount's first second.
    #[serde(default)]
    pub requests_per_s: Option<f64>,
    /// Of those, failed.
    pub failures: u64,
    /// Failures by error class.
    #[serde(default)]
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Unix time (ms) of the last request answered.
    pub last_success_ms: Option<u64>,
    /// Unix time (ms) and error class of the last failure.
    pub last_failure: Option<(u64, String)>,
    /// Bytes received from storage (reads and read-ahead).
    pub bytes_fetched: u64,
    /// Bytes handed to readers.
    pub bytes_served: u64,
    /// Bytes sent to storage.
    pub bytes_uploaded: u64,
    /// Reads answered from memory.
    #[serde(default)]
    pub cache_hits: u64,
    /// Reads that waited for storage.
    #[serde(default)]
    pub cache_misses: u64,
    /// `cache_hits / (hits + misses)`; `None` before the first read.
    #[serde(default)]
    pub cache_hit_ratio: Option<f64>,
    /// Read-ahead bytes fetched and never served (counted when the handle closes).
    #[serde(default)]
    pub readahead_wasted: u64,
}

/// A file being written and not yet committed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UploadStatus {
    /// Tenant.
    pub tenant: String,
    /// Object key within the tenant.
    pub key: String,
    /// The file's size as written so far.
    #[serde(default)]
    pub bytes_written: u64,
    /// Bytes of it the part uploads have sent so far (a small file is sent whole at its
    /// commit, so this stays 0 until then).
    #[serde(default)]
    pub bytes_uploaded: u64,
    /// Part requests completed.
    #[serde(default)]
    pub parts_done: u64,
    /// Parts the file has at its current size.
    #[serde(default)]
    pub parts_total: u64,
    /// Upload speed over the last sample interval, bytes per second.
    #[serde(default)]
    pub bytes_per_s: Option<f64>,
}

/// Mount-wide budgets: what is held of each, and its limit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// Block cache bytes held.
    pub cache_used: u64,
    /// Block cache budget.
    pub cache_budget: u64,
    /// Blocks evicted to make room so far.
    pub cache_evictions: u64,
    /// Part-buffer memory held.
    pub write_used: u64,
    /// Part-buffer memory budget.
    pub write_limit: u64,
    /// Time writers have waited for part-buffer memory, in total (ms).
    pub write_wait_ms: u64,
    /// Staging bytes reserved.
    pub staging_used: u64,
    /// Staging limit.
    pub staging_limit: u64,
}

/// One closed file waiting for its write-back upload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WriteBackItem {
    /// Tenant.
    pub tenant: String,
    /// Object key within the tenant.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// Uploading now.
    pub uploading: bool,
    /// Failed attempts so far (retried with backoff).
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// The write-back queue: closed files staged locally, not in the bucket yet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WriteBackStatus {
    /// Files queued.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Uploading now.
    pub uploading: usize,
    /// Files whose last attempt failed.
    pub failing: usize,
    /// Some of them: failing first, then by key.
    pub items: Vec<WriteBackItem>,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusReport {
    /// Tenant table generation (0 at mount, +1 per applied reload).
    pub generation: u64,
    /// Seconds since the mount started.
    pub uptime_s: u64,
    /// Unix time (ms) of this report, to read the `*_ms` times against.
    pub now_ms: u64,
    /// The config file reloads re-read.
    pub config: String,
    /// This control socket.
    pub control_socket: String,
    /// Block cache bytes held (also in `budgets`; kept for existing readers).
    pub cache_used: u64,
    /// Block cache budget.
    pub cache_budget: u64,
    /// Budgets and their use.
    #[serde(default)]
    pub budgets: BudgetStatus,
    /// Tenants, in name order.
    pub tenants: Vec<TenantStatus>,
    /// Files being written.
    pub uploads: Vec<UploadStatus>,
    /// The write-back queue (tenants with `write_back = true`).
    #[serde(default)]
    pub write_back: WriteBackStatus,
}

/// The control socket's handler in a mount.
#[derive(Debug)]
pub struct MountControl {
    /// Applies reloads.
    pub(crate) reloader: Arc<Reloader>,
    /// The filesystem.
    pub fs: Arc<Filesystem>,
    /// Write sessions.
    pub uploader: Arc<Uploader>,
    /// Block cache.
    pub cache: Arc<BlockCache>,
    /// When the mount started.
    pub started: Instant,
    /// The control socket's path.
    pub socket: std::path::PathBuf,
    /// The last two samples of the counters rates are computed from.
    pub rates: Mutex<Rates>,
}

fn requests_key(tenant: &str) -> String {
    format!("requests/{tenant}")
}

fn upload_key(s: &LiveSession) -> String {
    // The progress record identifies the session for its lifetime.
    format!("upload/{:p}", Arc::as_ptr(&s.progress))
}

fn ratio(hits: u64, misses: u64) -> Option<f64> {
    // Display only: the precision lost in the conversion does not matter.
    #[allow(clippy::cast_precision_loss)]
    let r = (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64);
    r
}

impl rates::Sampled for MountControl {
    fn rates(&self) -> &Mutex<Rates> {
        &self.rates
    }

    fn sample(&self) -> HashMap<String, u64> {
        let mut v: HashMap<String, u64> = self
            .fs
            .tenants()
            .snapshot()
            .iter()
            .map(|t| (requests_key(&t.name), t.metrics.requests.load(Ordering::Relaxed)))
            .collect();
        for s in self.uploader.live_sessions() {
            v.insert(upload_key(&s), s.progress.bytes_uploaded.load(Ordering::Relaxed));
        }
        v
    }
}

impl MountControl {
    /// Start sampling the counters for rates (once a second, while `self` lives). Must run
    /// inside the tokio runtime.
    pub fn start_sampling(self: &Arc<Self>) {
        rates::spawn_sampler(Arc::downgrade(self));
    }

    fn budgets(&self) -> BudgetStatus {
        BudgetStatus {
            cache_used: self.cache.used_bytes(),
            cache_budget: self.cache.budget_bytes(),
            cache_evictions: self.cache.evictions(),
            write_used: self.uploader.memory_in_use(),
            write_limit: self.uploader.memory_limit(),
            write_wait_ms: self.uploader.memory_wait_us() / 1000,
            staging_used: self.uploader.staging_in_use(),
            staging_limit: self.uploader.staging_limit(),
        }
    }

    fn uploads(&self, rates: &Rates) -> Vec<UploadStatus> {
        let layout = self.uploader.layout();
        self.uploader
            .live_sessions()
            .into_iter()
            .map(|s| {
                let p = &s.progress;
                let written = p.written.load(Ordering::Relaxed);
                let parts_total = match written.checked_sub(1).and_then(|last| layout.part_index(last)) {
                    Some(i) => u64::from(i) + 1,
                    None => 0,
                };
                UploadStatus {
                    bytes_per_s: rates.per_second(&upload_key(&s)),
                    tenant: s.owner,
                    key: s.key,
                    bytes_written: written,
                    bytes_uploaded: p.bytes_uploaded.load(Ordering::Relaxed),
                    parts_done: p.parts_done.load(Ordering::Relaxed),
                    parts_total,
                }
            })
            .collect()
    }

    /// The gauges the Prometheus endpoint reads at each scrape.
    pub fn gauges(&self) -> crate::metrics::exporter::MountGauges {
        let b = self.budgets();
        crate::metrics::exporter::MountGauges {
            cache_used: b.cache_used,
            cache_budget: b.cache_budget,
            cache_evictions: b.cache_evictions,
            uploads: u64::try_from(self.uploader.live_sessions().len()).unwrap_or(u64::MAX),
            write_used: b.write_used,
            write_limit: b.write_limit,
            write_wait_us: self.uploader.memory_wait_us(),
            staging_used: b.staging_used,
            staging_limit: b.staging_limit,
        }
    }

    async fn status(&self) -> StatusReport {
        let tenants = self.fs.tenants();
        let config = self.reloader.source().await.display().to_string();
        let rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        let budgets = self.budgets();
        StatusReport {
            generation: tenants.generation(),
            uptime_s: self.started.elapsed().as_secs(),
            now_ms: crate::metrics::unix_ms(),
            config,
            control_socket: self.socket.display().to_string(),
            cache_used: budgets.cache_used,
            cache_budget: budgets.cache_budget,
            budgets,
            tenants: tenants
                .snapshot()
                .iter()
                .map(|t| {
                    let m = &t.metrics;
                    let (hits, misses) = (
                        m.cache_hits.load(Ordering::Relaxed),
                        m.cache_misses.load(Ordering::Relaxed),
                    );
                    TenantStatus {
                        name: t.name.clone(),
                        location: t.backend.describe(),
                        read_only: t.read_only,
                        requests: m.requests.load(Ordering::Relaxed),
                        requests_per_s: rates.per_second(&requests_key(&t.name)),
                        failures: m.failures.load(Ordering::Relaxed),
                        errors: m.errors(),
                        last_success_ms: m.last_success_ms(),
                        last_failure: m.last_failure(),
                        bytes_fetched: m.bytes_fetched.load(Ordering::Relaxed),
                        bytes_served: m.bytes_served.load(Ordering::Relaxed),
                        bytes_uploaded: m.bytes_uploaded.load(Ordering::Relaxed),
                        cache_hits: hits,
                        cache_misses: misses,
                        cache_hit_ratio: ratio(hits, misses),
                        readahead_wasted: m.readahead_wasted.load(Ordering::Relaxed),
                    }
                })
                .collect(),
            uploads: self.uploads(&rates),
            write_back: write_back_status(self.fs.write_back().summary()),
        }
    }
}

fn write_back_status(s: crate::upload::writeback::QueueSummary) -> WriteBackStatus {
    WriteBackStatus {
        files: s.files,
        bytes: s.bytes,
        uploading: s.uploading,
        failing: s.failing,
        items: s
            .items
            .into_iter()
            .map(|p| WriteBackItem {
                tenant: p.owner,
                key: p.key,
                size: p.size,
                uploading: p.uploading,
                attempts: p.attempts,
                last_error: p.last_error,
            })
            .collect(),
    }
}

/// How long `byosfs migrate --freeze` waits for a tenant's write-back queue (the client's
/// control timeout is longer).
const WRITE_BACK_SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

fn answer(r: Result<String, String>) -> Response {
    let ok = r.is_ok();
    Response {
        ok,
        message: r.unwrap_or_else(|e| e),
        body: serde_json::Value::Null,
    }
}

#[async_trait::async_trait]
impl ControlHandler for MountControl {
    async fn handle(&self, request: Request) -> Response {
        match request {
            Request::Reload { force } => match self.reloader.reload(force).await {
                Ok(report) => Response {
                    ok: true,
                    message: report.to_string(),
                    body: serde_json::to_value(&report).unwrap_or_default(),
                },
                Err(e) => Response {
                    ok: false,
                    message: e.to_string(),
                    body: serde_json::Value::Null,
                },
            },
            Request::Freeze { tenant, frozen } => answer(self.reloader.freeze(&tenant, frozen).await),
            Request::SettleWriteBack { tenant } => answer(
                self.fs
                    .settle_tenant(&tenant, WRITE_BACK_SETTLE_LIMIT)
                    .await
                    .map(|n| format!("{tenant}: {n} file(s) closed with write-back uploaded"))
                    .map_err(|e| e.to_string()),
            ),
            Request::Switch {
                tenant,
                backend,
                prefix,
            } => answer(self.reloader.switch(&tenant, &backend, &prefix).await),
            Request::Status => {
                let report = self.status().await;
                Response {
                    ok: true,
                    message: String::new(),
                    body: serde_json::to_value(&report).unwrap_or_default(),
                }
            }
        }
    }
}
