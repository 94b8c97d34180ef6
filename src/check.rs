//! Connection probe: the "test connection" button.
//!
//! [`probe`] exercises what the filesystem needs from a backend, in order: list the bucket
//! (catches a missing bucket even on servers that create buckets on write), put a small object
//! under a unique key, head it, read a range back and compare, create and abort a multipart
//! upload, delete the object. The first failing step is reported with a message a user can
//! act on ("put failed: signature mismatch (wrong secret access key?)"). The probe object is
//! deleted even when a later step fails.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::backend::{Backend, BackendError, BackendErrorKind, ByteRange, ListParams};

/// One step of the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeStep {
    /// List one key of the bucket.
    List,
    /// Write a small object.
    Put,
    /// Read its metadata.
    Head,
    /// Read a byte range back and compare.
    Get,
    /// Create and abort a multipart upload.
    Multipart,
    /// Delete the object.
    Delete,
}

impl fmt::Display for ProbeStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::List => "list",
            Self::Put => "put",
            Self::Head => "head",
            Self::Get => "get",
            Self::Multipart => "multipart",
            Self::Delete => "delete",
        })
    }
}

/// How long one successful step took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepTiming {
    /// The step.
    pub step: ProbeStep,
    /// Wall-clock latency of its request(s).
    pub latency: Duration,
}

/// A successful probe.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// What was probed ([`Backend::describe`]).
    pub backend: String,
    /// The key used for the probe object (already deleted).
    pub key: String,
    /// Every step, in order.
    pub steps: Vec<StepTiming>,
}

impl ProbeReport {
    /// Sum of all step latencies.
    pub fn total(&self) -> Duration {
        self.steps.iter().map(|s| s.latency).sum()
    }
}

/// The first step that failed.
#[derive(Debug, thiserror::Error)]
pub struct ProbeError {
    /// Which step failed.
    pub step: ProbeStep,
    /// Why.
    #[source]
    pub error: BackendError,
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.step, self.error.kind().describe())?;
        // Kinds whose description alone does not say what to fix get their context.
        match self.error.kind() {
            BackendErrorKind::Other
            | BackendErrorKind::Protocol
            | BackendErrorKind::InvalidRequest
            | BackendErrorKind::Unsupported => {
                write!(f, " ({})", self.error.context())
            }
            _ => Ok(()),
        }
    }
}

/// Payload of the probe object: non-trivial bytes, so a ranged read can be checked.
const PAYLOAD: &[u8] = b"byosfs connection check: 0123456789abcdefghijklmnopqrstuvwxyz";
/// The range read back (`[start, end)`): excludes both ends, so an ignored `Range` header shows.
const RANGE: (usize, usize) = (9, 40);

fn probe_key() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(".byosfs-check-{:x}-{t:x}-{n}", std::process::id())
}

/// Run the probe against `backend`. See the module docs for the steps.
pub async fn probe(backend: &dyn Backend) -> Result<ProbeReport, ProbeError> {
    let key = probe_key();
    let mut steps = Vec::with_capacity(6);
    let fail = |step, error| ProbeError { step, error };

    let t = Instant::now();
    backend
        .list(&ListParams::new(".byosfs-check-", false).with_max_keys(1))
        .await
        .map_err(|e| fail(ProbeStep::List, e))?;
    steps.push(StepTiming {
        step: ProbeStep::List,
        latency: t.elapsed(),
    });

    let t = Instant::now();
    backend
        .put(&key, Bytes::from_static(PAYLOAD))
        .await
        .map_err(|e| fail(ProbeStep::Put, e))?;
    steps.push(StepTiming {
        step: ProbeStep::Put,
        latency: t.elapsed(),
    });

    let checked = check_object(backend, &key, &mut steps).await;
    // Clean up whatever happened after the put; a cleanup failure is reported only when
    // everything else succeeded (otherwise the first failure is the useful one).
    let t = Instant::now();
    let deleted = backend.delete(&key).await;
    checked?;
    deleted.map_err(|e| fail(ProbeStep::Delete, e))?;
    steps.push(StepTiming {
        step: ProbeStep::Delete,
        latency: t.elapsed(),
    });
    tracing::debug!(backend = %backend.describe(), "connection check passed");
    Ok(ProbeReport {
        backend: backend.describe(),
        key,
        steps,
    })
}

async fn check_object(backend: &dyn Backend, key: &str, steps: &mut Vec<StepTiming>) -> Result<(), ProbeError> {
    let fail = |step, error| ProbeError { step, error };
    let size = u64::try_from(PAYLOAD.len()).unwrap_or(u64::MAX);

    let t = Instant::now();
    let meta = backend.head(key).await.map_err(|e| fail(ProbeStep::Head, e))?;
    if meta.size != size {
        return Err(fail(
            ProbeStep::Head,
            BackendError::new(
                BackendErrorKind::Other,
                format!("size {} reported for a {size}-byte object", meta.size),
            ),
        ));
    }
    steps.push(StepTiming {
        step: ProbeStep::Head,
        latency: t.elapsed(),
    });

    let t = Instant::now();
    let to_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let range = ByteRange::new(to_u64(RANGE.0), to_u64(RANGE.1));
    // Pinned as the filesystem's reads are, where the store can.
    let pin = meta.etag.as_ref().filter(|_| backend.capabilities().conditional_get);
    let got = backend
        .get_range(key, range, pin)
        .await
        .map_err(|e| fail(ProbeStep::Get, e))?;
    let want = PAYLOAD.get(RANGE.0..RANGE.1).unwrap_or_default();
    if got.as_ref() != want {
        return Err(fail(
            ProbeStep::Get,
            BackendError::new(
                BackendErrorKind::Other,
                format!(
                    "range read returned {} bytes that differ from what was written",
                    got.len()
                ),
            ),
        ));
    }
    steps.push(StepTiming {
        step: ProbeStep::Get,
        latency: t.elapsed(),
    });

    if backend.capabilities().multipart.is_none() {
        // Nothing to probe: uploads to this store are single streamed PUTs (the Put step).
        return Ok(());
    }
    let t = Instant::now();
    let mp_key = format!("{key}-multipart");
    let upload = backend
        .create_multipart(&mp_key)
        .await
        .map_err(|e| fail(ProbeStep::Multipart, e))?;
    backend
        .abort_multipart(&mp_key, &upload)
        .await
        .map_err(|e| fail(ProbeStep::Multipart, e))?;
    steps.push(StepTiming {
        step: ProbeStep::Multipart,
        latency: t.elapsed(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::fault::{FaultBackend, FaultRule};
    use crate::backend::memory::{InMemoryBackend, Op};

    #[tokio::test]
    async fn passes_on_memory_and_leaves_nothing() {
        let mem = InMemoryBackend::new();
        let report = probe(&mem).await.unwrap();
        let steps: Vec<_> = report.steps.iter().map(|s| s.step).collect();
        assert_eq!(
            steps,
            vec![
                ProbeStep::List,
                ProbeStep::Put,
                ProbeStep::Head,
                ProbeStep::Get,
                ProbeStep::Multipart,
                ProbeStep::Delete
            ]
        );
        assert!(mem.keys().is_empty());
        assert_eq!(mem.open_uploads(), 0);
        assert!(report.key.starts_with(".byosfs-check-"));
    }

    #[tokio::test]
    async fn later_failure_still_deletes_probe_object() {
        let mem = Arc::new(InMemoryBackend::new());
        let faulty = FaultBackend::new(mem.clone());
        faulty.set_rule(Some(FaultRule::always(
            &[Op::CreateMultipart],
            BackendErrorKind::AccessDenied,
        )));
        let err = probe(&faulty).await.unwrap_err();
        assert_eq!(err.step, ProbeStep::Multipart);
        assert_eq!(err.to_string(), "multipart failed: access denied");
        assert!(mem.keys().is_empty(), "probe object left behind: {:?}", mem.keys());
    }

    #[tokio::test]
    async fn message_reads_like_advice() {
        let faulty = FaultBackend::new(Arc::new(InMemoryBackend::new()));
        faulty.set_rule(Some(FaultRule::always(&[Op::Put], BackendErrorKind::SignatureMismatch)));
        let err = probe(&faulty).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "put failed: signature mismatch (wrong secret access key?)"
        );
    }
}
