//! `byosfs status`: what a running mount reports over its control socket, and how the CLI
//! shows it.
//!
//! [`MountControl`] answers the control socket's requests inside the mount process;
//! [`StatusReport`] is the JSON it sends (`byosfs status --json` prints it as is), and
//! [`render`] the text the CLI prints otherwise.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cache::BlockCache;
use crate::control::{ControlHandler, Request, Response};
use crate::fs::Filesystem;
use crate::reload::Reloader;
use crate::upload::Uploader;

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
    /// Of those, failed.
    pub failures: u64,
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
}

/// A file being written and not yet committed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UploadStatus {
    /// Tenant.
    pub tenant: String,
    /// Object key within the tenant.
    pub key: String,
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
    /// Block cache bytes held.
    pub cache_used: u64,
    /// Block cache budget.
    pub cache_budget: u64,
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
}

impl MountControl {
    async fn status(&self) -> StatusReport {
        let tenants = self.fs.tenants();
        StatusReport {
            generation: tenants.generation(),
            uptime_s: self.started.elapsed().as_secs(),
            now_ms: crate::metrics::unix_ms(),
            config: self.reloader.source().await.display().to_string(),
            control_socket: self.socket.display().to_string(),
            cache_used: self.cache.used_bytes(),
            cache_budget: self.cache.budget_bytes(),
            tenants: tenants
                .snapshot()
                .iter()
                .map(|t| {
                    let m = &t.metrics;
                    TenantStatus {
                        name: t.name.clone(),
                        location: t.backend.describe(),
                        read_only: t.read_only,
                        requests: m.requests.load(Ordering::Relaxed),
                        failures: m.failures.load(Ordering::Relaxed),
                        last_success_ms: m.last_success_ms(),
                        last_failure: m.last_failure(),
                        bytes_fetched: m.bytes_fetched.load(Ordering::Relaxed),
                        bytes_served: m.bytes_served.load(Ordering::Relaxed),
                        bytes_uploaded: m.bytes_uploaded.load(Ordering::Relaxed),
                    }
                })
                .collect(),
            uploads: self
                .uploader
                .live_sessions()
                .into_iter()
                .map(|s| UploadStatus {
                    tenant: s.owner,
                    key: s.key,
                })
                .collect(),
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

fn answer(r: Result<String, String>) -> Response {
    let ok = r.is_ok();
    Response {
        ok,
        message: r.unwrap_or_else(|e| e),
        body: serde_json::Value::Null,
    }
}

fn mib(bytes: u64) -> String {
    // Display only: the precision lost in the conversion does not matter.
    #[allow(clippy::cast_precision_loss)]
    let m = bytes as f64 / (1024.0 * 1024.0);
    format!("{m:.1} MiB")
}

/// The report as text, for a terminal.
pub fn render(r: &StatusReport) -> String {
    let mut out = format!(
        "config {} (generation {}), up {} s\ncache {} of {}\n",
        r.config,
        r.generation,
        r.uptime_s,
        mib(r.cache_used),
        mib(r.cache_budget)
    );
    out.push_str(&format!("{} tenant(s)\n", r.tenants.len()));
    let ago = |ms: u64| format!("{} s ago", r.now_ms.saturating_sub(ms) / 1000);
    for t in &r.tenants {
        let ro = if t.read_only { " (read-only)" } else { "" };
        out.push_str(&format!("  {:<20} {}{ro}\n", t.name, t.location));
        let ok = t.last_success_ms.map_or_else(|| "never".to_owned(), ago);
        let failed = t
            .last_failure
            .as_ref()
            .map_or_else(|| "never".to_owned(), |(ms, class)| format!("{class}, {}", ago(*ms)));
        out.push_str(&format!(
            "    {} requests ({} failed), last ok {ok}, last failure {failed}\n    fetched {}, served {}, uploaded {}\n",
            t.requests,
            t.failures,
            mib(t.bytes_fetched),
            mib(t.bytes_served),
            mib(t.bytes_uploaded)
        ));
    }
    let wb = &r.write_back;
    if wb.files > 0 {
        out.push_str(&format!(
            "write-back: {} file(s), {} waiting for upload ({} uploading, {} failing)\n",
            wb.files,
            mib(wb.bytes),
            wb.uploading,
            wb.failing
        ));
        for i in &wb.items {
            let state = match (&i.last_error, i.uploading) {
                (_, true) => "uploading".to_owned(),
                (Some(e), false) => format!("failed {} time(s): {e}", i.attempts),
                (None, false) => "queued".to_owned(),
            };
            out.push_str(&format!("  {}/{} ({} bytes) {state}\n", i.tenant, i.key, i.size));
        }
    }
    if !r.uploads.is_empty() {
        out.push_str(&format!("{} upload(s) in flight\n", r.uploads.len()));
        for u in &r.uploads {
            out.push_str(&format!("  {}/{}\n", u.tenant, u.key));
        }
    }
    out
}
