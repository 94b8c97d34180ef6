//! The Prometheus endpoint: `[metrics] listen` serves `GET /metrics` in the text exposition
//! format (version 0.0.4), rendered on each scrape from the counters of this module's parent.
//!
//! Why no metrics crate: the counters already exist as atomics on structures the hot paths
//! hold (a tenant's `Arc<TenantMetrics>`, the FUSE op table), so recording stays one relaxed
//! add with no name or label lookup, and whether an endpoint is configured changes nothing on
//! those paths. The `metrics` facade would add a recorder lookup and a label hash per
//! event (or handles cached next to ours), and `prometheus-client` a registry mirroring
//! these counters; either is several crates more for a format this module writes in ~150
//! lines. The HTTP side is a minimal HTTP/1.1 responder (one request per connection, `GET
//! /metrics` or 404), not hyper's server: hyper is here for its client only, and turning on
//! its `server` feature rebuilds hyper and the whole AWS SDK stack on top of it for every
//! build of the binary, for a protocol a scraper uses in its simplest form.
//!
//! Labels: `tenant`, `backend` (type), and the fixed sets of [`super::defs`]; never an object key.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::defs::{self, BackendOp, Def};
use super::histogram::{HistogramSnapshot, BOUNDS};

/// The mount's budgets and queues at one moment, read from their owners at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountGauges {
    /// Block cache bytes held.
    pub cache_used: u64,
    /// Block cache budget.
    pub cache_budget: u64,
    /// Blocks evicted so far.
    pub cache_evictions: u64,
    /// Files being written.
    pub uploads: u64,
    /// Part-buffer memory held.
    pub write_used: u64,
    /// Part-buffer memory budget.
    pub write_limit: u64,
    /// Microseconds writers waited for part-buffer memory, in total.
    pub write_wait_us: u64,
    /// Staging bytes reserved.
    pub staging_used: u64,
    /// Staging limit.
    pub staging_limit: u64,
}

/// Where the endpoint reads the mount's gauges.
pub type GaugeSource = Arc<dyn Fn() -> MountGauges + Send + Sync>;

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, d: &Def) {
    let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", d.name, d.help, d.name, d.kind);
}

fn seconds(us: u64) -> String {
    // Display only; microsecond sums stay exact in an f64 up to 2^53 us (285 years).
    #[allow(clippy::cast_precision_loss)]
    let s = us as f64 / 1e6;
    format!("{s}")
}

fn histogram(out: &mut String, d: &Def, labels: &str, h: &HistogramSnapshot) {
    for (i, n) in h.cumulative.iter().enumerate() {
        let le = BOUNDS.get(i).map_or_else(|| "+Inf".to_owned(), |b| format!("{b}"));
        let _ = writeln!(out, "{}_bucket{{{labels},le=\"{le}\"}} {n}", d.name);
    }
    let _ = writeln!(out, "{}_sum{{{labels}}} {}", d.name, seconds(h.sum_us));
    let _ = writeln!(out, "{}_count{{{labels}}} {}", d.name, h.count);
}

/// The whole exposition: process counters, every tenant's, and `gauges`.
pub fn render(gauges: &MountGauges) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::with_capacity(16 * 1024);
    let tenants = super::tenants();
    let labels: Vec<String> = tenants
        .iter()
        .map(|(name, m)| format!("tenant=\"{}\",backend=\"{}\"", escape(name), m.backend_type()))
        .collect();
    let per_tenant = |out: &mut String, d: &Def, value: &dyn Fn(&super::TenantMetrics) -> u64| {
        header(out, d);
        for ((_, m), l) in tenants.iter().zip(&labels) {
            let _ = writeln!(out, "{}{{{l}}} {}", d.name, value(m));
        }
    };
    let gauge = |out: &mut String, d: &Def, v: u64| {
        header(out, d);
        let _ = writeln!(out, "{} {v}", d.name);
    };

    header(&mut out, &defs::FUSE_REQUESTS);
    for (op, n) in super::fuse_requests() {
        let _ = writeln!(out, "{}{{op=\"{op}\"}} {n}", defs::FUSE_REQUESTS.name);
    }
    header(&mut out, &defs::FUSE_ERRORS);
    for ((op, errno), n) in super::fuse_errors() {
        let name = errno_name(errno);
        let _ = writeln!(out, "{}{{op=\"{op}\",errno=\"{name}\"}} {n}", defs::FUSE_ERRORS.name);
    }

    header(&mut out, &defs::BACKEND_REQUESTS);
    for ((_, m), l) in tenants.iter().zip(&labels) {
        for (op, c) in BackendOp::ALL.iter().zip(&m.ops) {
            for (outcome, n) in [("ok", c.ok.load(Relaxed)), ("error", c.failed.load(Relaxed))] {
                if n > 0 {
                    let op = op.label();
                    let _ = writeln!(
                        out,
                        "{}{{{l},op=\"{op}\",outcome=\"{outcome}\"}} {n}",
                        defs::BACKEND_REQUESTS.name
                    );
                }
            }
        }
    }
    header(&mut out, &defs::BACKEND_ERRORS);
    for ((_, m), l) in tenants.iter().zip(&labels) {
        for (class, n) in m.errors() {
            let _ = writeln!(
                out,
                "{}{{{l},class=\"{}\"}} {n}",
                defs::BACKEND_ERRORS.name,
                escape(&class)
            );
        }
    }
    header(&mut out, &defs::BACKEND_RETRIES);
    for (t, n) in super::retries() {
        let _ = writeln!(out, "{}{{backend=\"{t}\"}} {n}", defs::BACKEND_RETRIES.name);
    }
    for (d, pick) in [
        (
            &defs::GET_FIRST_BYTE,
            (|m: &super::TenantMetrics| m.first_byte.snapshot()) as fn(&super::TenantMetrics) -> HistogramSnapshot,
        ),
        (&defs::PART_UPLOAD, |m: &super::TenantMetrics| m.part_upload.snapshot()),
    ] {
        header(&mut out, d);
        for ((_, m), l) in tenants.iter().zip(&labels) {
            histogram(&mut out, d, l, &pick(m));
        }
    }
    per_tenant(&mut out, &defs::BYTES_FETCHED, &|m| m.bytes_fetched.load(Relaxed));
    per_tenant(&mut out, &defs::BYTES_SERVED, &|m| m.bytes_served.load(Relaxed));
    per_tenant(&mut out, &defs::BYTES_UPLOADED, &|m| m.bytes_uploaded.load(Relaxed));
    per_tenant(&mut out, &defs::READAHEAD_WASTED, &|m| m.readahead_wasted.load(Relaxed));
    per_tenant(&mut out, &defs::CACHE_HITS, &|m| m.cache_hits.load(Relaxed));
    per_tenant(&mut out, &defs::CACHE_MISSES, &|m| m.cache_misses.load(Relaxed));
    gauge(&mut out, &defs::CACHE_EVICTIONS, gauges.cache_evictions);
    gauge(&mut out, &defs::CACHE_BYTES, gauges.cache_used);
    gauge(&mut out, &defs::CACHE_BUDGET, gauges.cache_budget);
    gauge(&mut out, &defs::UPLOADS_IN_FLIGHT, gauges.uploads);
    gauge(&mut out, &defs::WRITE_BUDGET_USED, gauges.write_used);
    gauge(&mut out, &defs::WRITE_BUDGET_LIMIT, gauges.write_limit);
    header(&mut out, &defs::WRITE_BUDGET_WAIT);
    let _ = writeln!(
        out,
        "{} {}",
        defs::WRITE_BUDGET_WAIT.name,
        seconds(gauges.write_wait_us)
    );
    gauge(&mut out, &defs::STAGING_BYTES, gauges.staging_used);
    gauge(&mut out, &defs::STAGING_LIMIT, gauges.staging_limit);
    out
}

/// `ENOENT` for 2, the number itself for an errno without a common name.
fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ESTALE => "ESTALE",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EAGAIN => "EAGAIN",
        libc::EINTR => "EINTR",
        libc::ENOTSUP => "ENOTSUP",
        _ => return errno.to_string(),
    };
    name.to_owned()
}

/// A bound Prometheus endpoint (not yet serving).
#[derive(Debug)]
pub struct Endpoint {
    listener: TcpListener,
}

impl Endpoint {
    /// Bind `addr`. Must run inside the tokio runtime.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
        })
    }

    /// The address bound (the port chosen, for `:0`).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve scrapes until the runtime shuts down, one task per connection.
    pub fn serve(self, gauges: GaugeSource) {
        tokio::spawn(async move {
            loop {
                let stream = match self.listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        warn!(error = %e, "metrics endpoint: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let gauges = gauges.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &gauges).await {
                        debug!(error = %e, "metrics connection ended");
                    }
                });
            }
        });
    }
}

/// Longest request head read (a scraper's is a few hundred bytes).
const MAX_HEAD: usize = 8192;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Read one request head and answer it; the connection closes after the answer.
async fn answer(mut stream: TcpStream, gauges: &GaugeSource) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request not sent in time"))??;
    let response = respond(&head, gauges);
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The whole HTTP response to a request whose head is `head`.
fn respond(head: &[u8], gauges: &GaugeSource) -> String {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(&gauges())),
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", "not found: try /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET /metrics\n".to_owned()),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    #[test]
    fn the_exposition_has_every_metric_labelled_by_tenant_and_never_a_key() {
        let m = super::super::tenant("exporter-test");
        m.set_backend_type("local");
        m.request(BackendOp::Get, Ok(()));
        m.request(BackendOp::UploadPart, Err("Timeout"));
        m.first_byte.record(Duration::from_millis(3));
        super::super::TenantMetrics::add(&m.bytes_served, 4096);
        let text = render(&MountGauges {
            cache_budget: 100,
            write_wait_us: 1_500_000,
            ..MountGauges::default()
        });
        for d in defs::ALL {
            assert!(text.contains(&format!("# TYPE {} {}", d.name, d.kind)), "{}", d.name);
        }
        let l = "tenant=\"exporter-test\",backend=\"local\"";
        assert!(
            text.contains(&format!("byosfs_bytes_served_total{{{l}}} 4096")),
            "{text}"
        );
        assert!(text.contains(&format!(
            "byosfs_backend_requests_total{{{l},op=\"upload_part\",outcome=\"error\"}} 1"
        )));
        assert!(text.contains(&format!("byosfs_backend_errors_total{{{l},class=\"Timeout\"}} 1")));
        assert!(text.contains(&format!(
            "byosfs_backend_get_first_byte_seconds_bucket{{{l},le=\"0.005\"}} 1"
        )));
        assert!(text.contains("byosfs_write_budget_wait_seconds_total 1.5"));
        assert!(text.contains("byosfs_cache_budget_bytes 100"));
        // Every sample line is `name{labels} value` or `name value`, labels from fixed keys.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let keys: Vec<&str> = line
                .split(['{', ','])
                .skip(1)
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
                .collect();
            for k in keys {
                assert!(
                    ["tenant", "backend", "op", "outcome", "class", "errno", "le"].contains(&k),
                    "unexpected label {k} in {line}"
                );
            }
        }
    }

    #[test]
    fn the_endpoint_answers_metrics_and_404_otherwise() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let addr = rt.block_on(async {
            let e = Endpoint::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let addr = e.local_addr().unwrap();
            e.serve(Arc::new(|| MountGauges {
                staging_limit: 77,
                ..MountGauges::default()
            }));
            addr
        });
        let get = |path: &str| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ok = get("/metrics");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("byosfs_staging_limit_bytes 77"), "{ok}");
        assert!(get("/").starts_with("HTTP/1.1 404"));
    }
}
