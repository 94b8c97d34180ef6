//! Retries with exponential backoff and full jitter around any backend.
//!
//! The one place byosfs retries backend requests: the S3 client is built with a single
//! attempt (see `app.rs`) so attempts do not multiply across layers. Only errors whose kind
//! [`is_retryable`](super::BackendErrorKind::is_retryable) (throttling, timeouts, transient
//! server errors, unreachable endpoints) are repeated; everything else is returned at once.
//!
//! Each operation is bounded twice: by [`RetryConfig::max_attempts`] and, when set, by
//! [`RetryConfig::deadline`], measured from the first attempt. The deadline also cuts an
//! attempt in flight, so a hung endpoint turns into [`BackendErrorKind::Timeout`] within it.
//!
//! A server that says when to come back (`Retry-After` on a 429 or 503) is obeyed: the wait
//! before the retry is at least what it asked (asking sooner only earns another refusal and
//! adds to its load), up to [`RETRY_AFTER_MAX`]; a longer wait is not sat out inside a file
//! operation, the error is returned at once ([`retry_delay`]).
//!
//! Idempotency: every operation but two may simply be repeated (a part upload replaces the
//! part, a PUT or copy replaces the object, deletes and aborts of absent things succeed).
//! - `complete_multipart` whose response was lost may have completed: the retry then gets
//!   `NoSuchUpload`. In that case (and only after an attempt of the same call ended with a
//!   retryable error) the key is HEADed; if it exists and its ETag does not contradict the
//!   part count (S3's `"…-N"` multipart ETag form), the completion is taken as ours.
//! - `create_multipart` whose response was lost leaves an unused upload on the service; it
//!   holds no data and is reclaimed by the orphaned-upload cleanup or a lifecycle rule.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use tracing::{debug, info, warn};

use super::{
    Backend, BackendError, BackendErrorKind, BackendResult, BodyStream, ByteRange, CompletedPart, ETag, ListPage,
    ListParams, MultipartUploadInfo, ObjectMeta, PutOptions, PutResult, UploadId,
};

/// How [`RetryBackend`] retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts per operation, including the first (at least 1).
    pub max_attempts: u32,
    /// Backoff cap before the first retry; doubles per retry (full jitter below the cap).
    pub base_delay: Duration,
    /// Upper bound of any one backoff.
    pub max_delay: Duration,
    /// Total time one operation may take, retries and backoff included; `None` = unbounded
    /// (then only attempts and the backend's own per-request timeouts bound it).
    pub deadline: Option<Duration>,
}

impl Default for RetryConfig {
    /// 3 attempts, 100 ms doubling up to 5 s, no total deadline.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            deadline: None,
        }
    }
}

/// Longest server-requested wait (`Retry-After`) a retry sits out. Beyond it the operation
/// fails at once: an application blocked in `read()` for minutes is worse than an error.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);

/// The wait before a retry: the jittered `backoff`, or the server's `retry_after` when it
/// asked for longer; `None` (give up now) when the server asked for more than
/// [`RETRY_AFTER_MAX`].
pub fn retry_delay(backoff: Duration, retry_after: Option<Duration>) -> Option<Duration> {
    match retry_after {
        Some(wait) if wait > RETRY_AFTER_MAX => None,
        Some(wait) => Some(wait.max(backoff)),
        None => Some(backoff),
    }
}

impl RetryConfig {
    /// The backoff cap before retry number `retry` (1-based): `base * 2^(retry-1)`, at most
    /// `max_delay`. The actual sleep is uniform in `[0, cap]` (full jitter).
    pub fn backoff_cap(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Wraps a backend and retries its retryable failures; counts what it did.
#[derive(Debug)]
pub struct RetryBackend {
    inner: Arc<dyn Backend>,
    config: RetryConfig,
    // Shared with resumed GET bodies, which outlive the call that started them.
    retries: Arc<AtomicU64>,
    exhausted: Arc<AtomicU64>,
    /// xorshift64 state for jitter; racing updates only cost randomness quality.
    rng: AtomicU64,
    /// The backend type retries are counted under (`byosfs_backend_retries_total`).
    kind: &'static str,
}

impl RetryBackend {
    /// Wrap `inner` with `config` (`max_attempts` 0 is treated as 1).
    pub fn new(inner: Arc<dyn Backend>, config: RetryConfig) -> Self {
        static INSTANCES: AtomicU64 = AtomicU64::new(1);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Mix in a sequence number so backends created in the same nanosecond still differ.
        let seq = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let seed = (u64::from(nanos) << 17) ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self {
            inner,
            config,
            retries: Arc::new(AtomicU64::new(0)),
            exhausted: Arc::new(AtomicU64::new(0)),
            rng: AtomicU64::new(seed | 1),
            kind: "unknown",
        }
    }

    /// Count retries under backend type `kind` (`s3`, `local`) in the process metrics.
    pub fn counted_as(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    /// The retry settings.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// Retries performed so far (attempts beyond the first, over all operations).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Operations that failed with a retryable error after using up their attempts or deadline.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    fn next_random(&self) -> u64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        x
    }

    /// Full jitter: uniform in `[0, backoff_cap(retry)]`.
    fn backoff(&self, retry: u32) -> Duration {
        let cap = self.config.backoff_cap(retry);
        let cap_us = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.next_random() % cap_us.saturating_add(1))
    }

    /// Run `attempt` until it succeeds, fails for good, or attempts/deadline run out.
    async fn run<T, F, Fut>(&self, op: &'static str, key: &str, mut attempt: F) -> BackendResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = BackendResult<T>>,
    {
        let started = Instant::now();
        let deadline = self.config.deadline.map(|d| started + d);
        let max = self.config.max_attempts.max(1);
        let mut n = 1;
        loop {
            let res = match deadline {
                Some(dl) => match tokio::time::timeout_at(dl.into(), attempt()).await {
                    Ok(r) => r,
                    Err(_) => Err(BackendError::new(
                        BackendErrorKind::Timeout,
                        format!("{op} {key}: no answer within {:?} ({n} attempts)", started.elapsed()),
                    )),
                },
                None => attempt().await,
            };
            let err = match res {
                Ok(v) => {
                    if n > 1 {
                        debug!(op, key, attempts = n, "succeeded after retrying");
                    }
                    return Ok(v);
                }
                Err(e) => e,
            };
            if !err.is_retryable() {
                return Err(err);
            }
            let delay = retry_delay(self.backoff(n), err.retry_after());
            let past_deadline = delay.is_none_or(|d| deadline.is_some_and(|dl| Instant::now() + d >= dl));
            let Some(delay) = delay.filter(|_| n < max && !past_deadline) else {
                self.exhausted.fetch_add(1, Ordering::Relaxed);
                warn!(
                    op, key, attempts = n, elapsed = ?started.elapsed(), retry_after = ?err.retry_after(),
                    error = %err, "giving up after retries"
                );
                return Err(err);
            };
            self.retries.fetch_add(1, Ordering::Relaxed);
            crate::metrics::retried(self.kind);
            debug!(op, key, attempt = n, ?delay, error = %err, "retrying");
            tokio::time::sleep(delay).await;
            n += 1;
        }
    }

    /// `complete_multipart` answered `NoSuchUpload` after an attempt whose outcome is unknown:
    /// accept if the object is there and its ETag does not contradict our part count.
    async fn confirm_completed(&self, key: &str, parts: usize, err: BackendError) -> BackendResult<PutResult> {
        let meta = match self.inner.head(key).await {
            Ok(m) => m,
            Err(_) => return Err(err),
        };
        if let Some(n) = meta.etag.as_ref().and_then(multipart_etag_parts) {
            if usize::try_from(n).ok() != Some(parts) {
                return Err(err);
            }
        }
        info!(
            key,
            "complete multipart: earlier response lost; object present, taking the completion as ours"
        );
        Ok(PutResult::new(meta.etag))
    }
}

/// The part count of an S3 multipart ETag (`"hex-N"`), if `etag` has that form.
fn multipart_etag_parts(etag: &ETag) -> Option<u32> {
    let (hash, n) = etag.as_str().trim_matches('"').rsplit_once('-')?;
    if hash.is_empty() || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    n.parse().ok()
}

/// A GET body that, when it breaks with a retryable error, re-requests the bytes not yet
/// delivered (pinned to the same ETag) and carries on, so a connection reset 900 MiB into a
/// large range costs one more request, not the range again.
struct ResumingBody {
    inner: Arc<dyn Backend>,
    key: String,
    etag: ETag,
    range: ByteRange,
    received: u64,
    body: BodyStream,
    /// Resumptions so far; each counts as one attempt of the retry budget.
    resumed: u32,
    config: RetryConfig,
    retries: Arc<AtomicU64>,
    exhausted: Arc<AtomicU64>,
    kind: &'static str,
}

impl ResumingBody {
    async fn next(mut self) -> BackendResult<Option<(Bytes, Self)>> {
        use futures::StreamExt as _;
        loop {
            let err = match self.body.next().await {
                Some(Ok(piece)) => {
                    self.received += u64::try_from(piece.len()).unwrap_or(u64::MAX);
                    return Ok(Some((piece, self)));
                }
                None => return Ok(None),
                Some(Err(e)) => e,
            };
            if !err.is_retryable() || self.received >= self.range.len() {
                return Err(err);
            }
            self.reopen(err).await?;
        }
    }

    /// Replace the broken body with a GET of the rest of the range.
    async fn reopen(&mut self, mut err: BackendError) -> BackendResult<()> {
        let rest = ByteRange::new(self.range.start + self.received, self.range.end);
        loop {
            if self.resumed + 1 >= self.config.max_attempts {
                self.exhausted.fetch_add(1, Ordering::Relaxed);
                warn!(key = self.key, received = self.received, error = %err, "giving up resuming GET body");
                return Err(err);
            }
            // Half the cap: no jitter source here, and resumptions are rare and per-stream.
            let Some(delay) = retry_delay(self.config.backoff_cap(self.resumed + 1) / 2, err.retry_after()) else {
                self.exhausted.fetch_add(1, Ordering::Relaxed);
                warn!(key = self.key, retry_after = ?err.retry_after(), error = %err, "giving up resuming GET body");
                return Err(err);
            };
            self.resumed += 1;
            self.retries.fetch_add(1, Ordering::Relaxed);
            crate::metrics::retried(self.kind);
            debug!(key = self.key, received = self.received, ?delay, error = %err, "resuming GET body");
            tokio::time::sleep(delay).await;
            match self.inner.get_range_stream(&self.key, rest, Some(&self.etag)).await {
                Ok(body) => {
                    self.body = body;
                    return Ok(());
                }
                Err(e) if e.is_retryable() => err = e,
                Err(e) => return Err(e),
            }
        }
    }
}

#[async_trait]
impl Backend for RetryBackend {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn capabilities(&self) -> crate::backend::Capabilities {
        self.inner.capabilities()
    }

    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        self.run("head", key, || self.inner.head(key)).await
    }

    async fn get_range(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Bytes> {
        self.run("get", key, || self.inner.get_range(key, range, if_match))
            .await
    }

    async fn get_range_stream(
        &self,
        key: &str,
        range: ByteRange,
        if_match: Option<&ETag>,
    ) -> BackendResult<BodyStream> {
        let body = self
            .run("get", key, || self.inner.get_range_stream(key, range, if_match))
            .await?;
        // Without a pinned version, bytes fetched on resumption could come from a newer object
        // than those already delivered; such a body fails as a whole instead.
        let Some(etag) = if_match.cloned() else {
            return Ok(body);
        };
        let resume = ResumingBody {
            inner: self.inner.clone(),
            key: key.to_owned(),
            etag,
            range,
            received: 0,
            body,
            resumed: 0,
            config: self.config.clone(),
            retries: self.retries.clone(),
            exhausted: self.exhausted.clone(),
            kind: self.kind,
        };
        Ok(Box::pin(futures::stream::try_unfold(resume, ResumingBody::next)))
    }

    async fn list(&self, params: &ListParams) -> BackendResult<ListPage> {
        self.run("list", &params.prefix, || self.inner.list(params)).await
    }

    async fn put(&self, key: &str, data: Bytes) -> BackendResult<PutResult> {
        self.run("put", key, || self.inner.put(key, data.clone())).await
    }

    async fn create_multipart(&self, key: &str) -> BackendResult<UploadId> {
        self.run("create multipart", key, || self.inner.create_multipart(key))
            .await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload: &UploadId,
        part_number: u32,
        data: Bytes,
    ) -> BackendResult<CompletedPart> {
        self.run("upload part", key, || {
            self.inner.upload_part(key, upload, part_number, data.clone())
        })
        .await
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload: &UploadId,
        part_number: u32,
        src: &str,
        range: ByteRange,
    ) -> BackendResult<CompletedPart> {
        self.run("upload part copy", key, || {
            self.inner.upload_part_copy(key, upload, part_number, src, range)
        })
        .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[CompletedPart],
    ) -> BackendResult<PutResult> {
        // Set once an attempt ended in a way that may hide a completion (lost response).
        let unsure = AtomicBool::new(false);
        let unsure = &unsure;
        self.run("complete multipart", key, || async move {
            match self.inner.complete_multipart(key, upload, parts).await {
                Err(e) if e.kind() == BackendErrorKind::NoSuchUpload && unsure.load(Ordering::Relaxed) => {
                    self.confirm_completed(key, parts.len(), e).await
                }
                Err(e) => {
                    if e.is_retryable() {
                        unsure.store(true, Ordering::Relaxed);
                    }
                    Err(e)
                }
                Ok(r) => Ok(r),
            }
        })
        .await
    }

    async fn abort_multipart(&self, key: &str, upload: &UploadId) -> BackendResult<()> {
        self.run("abort multipart", key, || self.inner.abort_multipart(key, upload))
            .await
    }

    async fn list_multipart_uploads(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        self.run("list multipart uploads", prefix, || {
            self.inner.list_multipart_uploads(prefix)
        })
        .await
    }

    async fn copy(&self, src: &str, dst: &str) -> BackendResult<PutResult> {
        self.run("copy", dst, || self.inner.copy(src, dst)).await
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        self.run("delete", key, || self.inner.delete(key)).await
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<PutResult> {
        self.run("put", key, || self.inner.put_opts(key, data.clone(), opts))
            .await
    }

    /// Not retried here: a body stream cannot be replayed, so the caller (who can reopen its
    /// source) retries. Forwarded as a stream, not gathered by the trait's default.
    async fn put_stream(&self, key: &str, size: u64, body: BodyStream, opts: &PutOptions) -> BackendResult<PutResult> {
        self.inner.put_stream(key, size, body, opts).await
    }

    async fn create_multipart_opts(&self, key: &str, opts: &PutOptions) -> BackendResult<UploadId> {
        self.run("create multipart", key, || self.inner.create_multipart_opts(key, opts))
            .await
    }

    async fn update_metadata(&self, key: &str, opts: &PutOptions) -> BackendResult<PutResult> {
        self.run("update metadata", key, || self.inner.update_metadata(key, opts))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fault::{FaultBackend, FaultRule};
    use crate::backend::memory::{InMemoryBackend, Op};
    use crate::backend::MIN_PART_SIZE;

    fn fast(max_attempts: u32) -> RetryConfig {
        RetryConfig {
            max_attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            deadline: None,
        }
    }

    fn stack(config: RetryConfig) -> (Arc<InMemoryBackend>, Arc<FaultBackend>, RetryBackend) {
        let mem = Arc::new(InMemoryBackend::new());
        let fault = Arc::new(FaultBackend::new(mem.clone()));
        let retry = RetryBackend::new(fault.clone(), config);
        (mem, fault, retry)
    }

    fn fail_next(fault: &FaultBackend, op: Op, kind: BackendErrorKind, n: u64) {
        fault.set_rule(Some(FaultRule {
            ops: vec![op],
            kind,
            remaining: Some(n),
            skip: 0,
        }));
    }

    #[tokio::test]
    async fn retried_get_succeeds_and_is_counted() {
        let (mem, fault, retry) = stack(fast(5));
        mem.insert("k", Bytes::from_static(b"hello world"));
        fail_next(&fault, Op::Get, BackendErrorKind::Throttled, 3);
        let got = retry.get_range("k", ByteRange::new(0, 5), None).await.unwrap();
        assert_eq!(&got[..], b"hello");
        assert_eq!(fault.injected(), 3);
        assert_eq!(retry.retries(), 3);
        assert_eq!(retry.exhausted(), 0);
        // The fault layer fails before the inner call: only the successful GET reached it.
        assert_eq!(mem.count(Op::Get), 1);
    }

    #[test_case::test_case(BackendErrorKind::AccessDenied)]
    #[test_case::test_case(BackendErrorKind::NotFound)]
    #[test_case::test_case(BackendErrorKind::PreconditionFailed)]
    #[test_case::test_case(BackendErrorKind::NoSuchUpload)]
    #[test_case::test_case(BackendErrorKind::InvalidRequest)]
    #[tokio::test]
    async fn non_retryable_errors_are_not_retried(kind: BackendErrorKind) {
        let (mem, fault, retry) = stack(fast(5));
        mem.insert("k", Bytes::from_static(b"x"));
        fault.set_rule(Some(FaultRule::always(&[Op::Head], kind)));
        let err = retry.head("k").await.unwrap_err();
        assert_eq!(err.kind(), kind);
        assert_eq!(fault.injected(), 1);
        assert_eq!(retry.retries(), 0);
        assert_eq!(retry.exhausted(), 0);
    }

    #[test_case::test_case(BackendErrorKind::Throttled)]
    #[test_case::test_case(BackendErrorKind::Timeout)]
    #[test_case::test_case(BackendErrorKind::Transient)]
    #[test_case::test_case(BackendErrorKind::Unreachable)]
    #[tokio::test]
    async fn attempts_are_bounded(kind: BackendErrorKind) {
        let (mem, fault, retry) = stack(fast(4));
        let up = mem.create_multipart("big").await.unwrap();
        fault.set_rule(Some(FaultRule::always(&[Op::UploadPart], kind)));
        let err = retry
            .upload_part("big", &up, 1, Bytes::from_static(b"data"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), kind);
        assert_eq!(fault.injected(), 4);
        assert_eq!(retry.retries(), 3);
        assert_eq!(retry.exhausted(), 1);
        assert_eq!(mem.count(Op::UploadPart), 0);
    }

    #[tokio::test]
    async fn every_operation_is_retried() {
        let (mem, fault, retry) = stack(fast(3));
        let part = Bytes::from(vec![7u8; usize::try_from(MIN_PART_SIZE).unwrap()]);
        let kind = BackendErrorKind::Transient;
        let mut expected = 0;
        let mut arm = |op: Op| {
            fail_next(&fault, op, kind, 2);
            expected += 2;
            expected
        };

        let e = arm(Op::Put);
        retry.put("src", part.clone()).await.unwrap();
        assert_eq!(fault.injected(), e);
        let e = arm(Op::Head);
        assert_eq!(retry.head("src").await.unwrap().size, MIN_PART_SIZE);
        assert_eq!(fault.injected(), e);
        let e = arm(Op::Get);
        assert_eq!(
            retry.get_range("src", ByteRange::new(0, 3), None).await.unwrap().len(),
            3
        );
        assert_eq!(fault.injected(), e);
        let e = arm(Op::List);
        assert_eq!(retry.list(&ListParams::new("", false)).await.unwrap().objects.len(), 1);
        assert_eq!(fault.injected(), e);
        let e = arm(Op::Copy);
        retry.copy("src", "copy").await.unwrap();
        assert_eq!(fault.injected(), e);
        let e = arm(Op::CreateMultipart);
        let up = retry.create_multipart("dst").await.unwrap();
        assert_eq!(fault.injected(), e);
        let e = arm(Op::UploadPart);
        let p1 = retry.upload_part("dst", &up, 1, part.clone()).await.unwrap();
        assert_eq!(fault.injected(), e);
        let e = arm(Op::UploadPartCopy);
        let p2 = retry
            .upload_part_copy("dst", &up, 2, "src", ByteRange::new(0, 10))
            .await
            .unwrap();
        assert_eq!(fault.injected(), e);
        let e = arm(Op::ListMultipart);
        assert_eq!(retry.list_multipart_uploads("").await.unwrap().len(), 1);
        assert_eq!(fault.injected(), e);
        let e = arm(Op::CompleteMultipart);
        retry.complete_multipart("dst", &up, &[p1, p2]).await.unwrap();
        assert_eq!(fault.injected(), e);
        assert_eq!(mem.object("dst").unwrap().len(), part.len() + 10);
        let up2 = mem.create_multipart("gone").await.unwrap();
        let e = arm(Op::AbortMultipart);
        retry.abort_multipart("gone", &up2).await.unwrap();
        assert_eq!(fault.injected(), e);
        assert_eq!(mem.open_uploads(), 0);
        let e = arm(Op::Delete);
        retry.delete("copy").await.unwrap();
        assert_eq!(fault.injected(), e);
        assert!(mem.object("copy").is_none());
        assert_eq!(retry.retries(), e);
        assert_eq!(retry.exhausted(), 0);
    }

    #[tokio::test]
    async fn deadline_cuts_a_hung_attempt() {
        let mem = Arc::new(InMemoryBackend::new());
        mem.insert("k", Bytes::from_static(b"abc"));
        mem.set_get_delay(Some(Duration::from_secs(30)));
        let retry = RetryBackend::new(
            mem.clone(),
            RetryConfig {
                deadline: Some(Duration::from_millis(300)),
                ..fast(10)
            },
        );
        let t = Instant::now();
        let err = retry.get_range("k", ByteRange::new(0, 3), None).await.unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::Timeout);
        assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn deadline_stops_retrying() {
        let (_mem, fault, retry) = stack(RetryConfig {
            max_attempts: 1000,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(40),
            deadline: Some(Duration::from_millis(300)),
        });
        fault.set_rule(Some(FaultRule::always(&[], BackendErrorKind::Unreachable)));
        let t = Instant::now();
        let err = retry.list(&ListParams::new("", true)).await.unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::Unreachable);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // Backoffs average 10-20 ms: far fewer than 1000 attempts fit in 300 ms.
        assert!(fault.injected() > 2 && fault.injected() < 100, "{}", fault.injected());
        assert_eq!(retry.exhausted(), 1);
    }

    #[test]
    fn a_servers_retry_after_is_waited_out_up_to_the_limit() {
        let backoff = Duration::from_millis(200);
        assert_eq!(retry_delay(backoff, None), Some(backoff));
        // A longer requested wait wins over the backoff, a shorter one does not shorten it.
        assert_eq!(
            retry_delay(backoff, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(retry_delay(backoff, Some(Duration::ZERO)), Some(backoff));
        assert_eq!(retry_delay(backoff, Some(RETRY_AFTER_MAX)), Some(RETRY_AFTER_MAX));
        // Minutes: not sat out inside a file operation.
        assert_eq!(
            retry_delay(backoff, Some(RETRY_AFTER_MAX + Duration::from_secs(1))),
            None
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let cfg = RetryConfig {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            deadline: None,
        };
        assert_eq!(cfg.backoff_cap(1), Duration::from_millis(100));
        assert_eq!(cfg.backoff_cap(2), Duration::from_millis(200));
        assert_eq!(cfg.backoff_cap(4), Duration::from_millis(800));
        assert_eq!(cfg.backoff_cap(5), Duration::from_secs(1));
        assert_eq!(cfg.backoff_cap(u32::MAX), Duration::from_secs(1));
        let r = RetryBackend::new(Arc::new(InMemoryBackend::new()), cfg);
        let samples: Vec<Duration> = (0..200).map(|_| r.backoff(3)).collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_millis(400)));
        // Full jitter spreads over the whole interval, not around its top.
        assert!(samples.iter().any(|d| *d < Duration::from_millis(100)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(300)));
    }

    async fn collect(mut body: BodyStream) -> BackendResult<Vec<u8>> {
        use futures::StreamExt as _;
        let mut out = Vec::new();
        while let Some(piece) = body.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_broken_get_body_resumes_where_it_stopped_pinned_to_the_etag() {
        let flaky = Arc::new(Flaky::default());
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        flaky.inner.insert("k", Bytes::from(data.clone()));
        let etag = flaky.inner.head("k").await.unwrap().etag.unwrap();
        flaky.break_bodies.store(2, Ordering::Relaxed);
        let retry = RetryBackend::new(flaky.clone(), fast(3));
        let range = ByteRange::new(100, 900);
        let body = retry.get_range_stream("k", range, Some(&etag)).await.unwrap();
        assert_eq!(collect(body).await.unwrap(), &data[100..900]);
        // 400 bytes, then half of the remaining 400, then the last 200: each request asks for
        // exactly what is missing, with the version pinned.
        let streams = flaky.streams.lock().unwrap().clone();
        let ranges: Vec<ByteRange> = streams.iter().map(|(r, _)| *r).collect();
        assert_eq!(
            ranges,
            [
                ByteRange::new(100, 900),
                ByteRange::new(500, 900),
                ByteRange::new(700, 900)
            ]
        );
        assert!(streams.iter().all(|(_, e)| e.as_ref() == Some(&etag)));
        assert_eq!(retry.retries(), 2);
    }

    #[tokio::test]
    async fn a_broken_get_body_fails_after_the_attempts_or_without_a_pinned_version() {
        let flaky = Arc::new(Flaky::default());
        flaky.inner.insert("k", Bytes::from(vec![7u8; 1000]));
        let etag = flaky.inner.head("k").await.unwrap().etag.unwrap();
        let retry = RetryBackend::new(flaky.clone(), fast(2));
        flaky.break_bodies.store(5, Ordering::Relaxed);
        let body = retry
            .get_range_stream("k", ByteRange::new(0, 1000), Some(&etag))
            .await
            .unwrap();
        assert_eq!(collect(body).await.unwrap_err().kind(), BackendErrorKind::Transient);
        assert_eq!(flaky.streams.lock().unwrap().len(), 2);
        assert_eq!(retry.exhausted(), 1);
        // Unpinned: resuming could splice two versions, so the error surfaces at once.
        flaky.streams.lock().unwrap().clear();
        let body = retry
            .get_range_stream("k", ByteRange::new(0, 1000), None)
            .await
            .unwrap();
        assert!(collect(body).await.is_err());
        assert_eq!(flaky.streams.lock().unwrap().len(), 1);
    }

    #[test]
    fn multipart_etag_form() {
        assert_eq!(
            multipart_etag_parts(&ETag::new("\"9b2cf535f27731c974343645a3985328-12\"")),
            Some(12)
        );
        assert_eq!(
            multipart_etag_parts(&ETag::new("\"9b2cf535f27731c974343645a3985328\"")),
            None
        );
        assert_eq!(multipart_etag_parts(&ETag::new("\"mem-3\"")), None);
    }

    /// Over the in-memory backend: completes multipart uploads for real and then reports a
    /// transient failure (a response lost on the way back) `lose` times, and breaks `break_bodies`
    /// GET bodies halfway; records every streamed GET.
    #[derive(Debug, Default)]
    struct Flaky {
        inner: Arc<InMemoryBackend>,
        lose: AtomicU64,
        break_bodies: AtomicU64,
        streams: std::sync::Mutex<Vec<(ByteRange, Option<ETag>)>>,
    }

    #[async_trait]
    impl Backend for Flaky {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn capabilities(&self) -> crate::backend::Capabilities {
            self.inner.capabilities()
        }
        async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
            self.inner.head(key).await
        }
        async fn get_range(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Bytes> {
            self.inner.get_range(key, range, if_match).await
        }
        async fn get_range_stream(
            &self,
            key: &str,
            range: ByteRange,
            if_match: Option<&ETag>,
        ) -> BackendResult<BodyStream> {
            self.streams.lock().unwrap().push((range, if_match.cloned()));
            let data = self.inner.get_range(key, range, if_match).await?;
            let (head, tail) = (data.slice(..data.len() / 2), data.slice(data.len() / 2..));
            let broken = self
                .break_bodies
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            let tail = if broken {
                Err(BackendError::new(BackendErrorKind::Transient, "connection reset"))
            } else {
                Ok(tail)
            };
            Ok(Box::pin(futures::stream::iter([Ok(head), tail])))
        }
        async fn list(&self, params: &ListParams) -> BackendResult<ListPage> {
            self.inner.list(params).await
        }
        async fn put(&self, key: &str, data: Bytes) -> BackendResult<PutResult> {
            self.inner.put(key, data).await
        }
        async fn create_multipart(&self, key: &str) -> BackendResult<UploadId> {
            self.inner.create_multipart(key).await
        }
        async fn upload_part(&self, key: &str, up: &UploadId, n: u32, data: Bytes) -> BackendResult<CompletedPart> {
            self.inner.upload_part(key, up, n, data).await
        }
        async fn upload_part_copy(
            &self,
            key: &str,
            up: &UploadId,
            n: u32,
            src: &str,
            range: ByteRange,
        ) -> BackendResult<CompletedPart> {
            self.inner.upload_part_copy(key, up, n, src, range).await
        }
        async fn complete_multipart(
            &self,
            key: &str,
            up: &UploadId,
            parts: &[CompletedPart],
        ) -> BackendResult<PutResult> {
            let res = self.inner.complete_multipart(key, up, parts).await;
            if self.lose.load(Ordering::Relaxed) > 0 {
                self.lose.fetch_sub(1, Ordering::Relaxed);
                return Err(BackendError::new(BackendErrorKind::Transient, "connection reset"));
            }
            res
        }
        async fn abort_multipart(&self, key: &str, up: &UploadId) -> BackendResult<()> {
            self.inner.abort_multipart(key, up).await
        }
        async fn list_multipart_uploads(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
            self.inner.list_multipart_uploads(prefix).await
        }
        async fn copy(&self, src: &str, dst: &str) -> BackendResult<PutResult> {
            self.inner.copy(src, dst).await
        }
        async fn delete(&self, key: &str) -> BackendResult<()> {
            self.inner.delete(key).await
        }
        async fn put_opts(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<PutResult> {
            self.inner.put_opts(key, data, opts).await
        }
        async fn create_multipart_opts(&self, key: &str, opts: &PutOptions) -> BackendResult<UploadId> {
            self.inner.create_multipart_opts(key, opts).await
        }
        async fn update_metadata(&self, key: &str, opts: &PutOptions) -> BackendResult<PutResult> {
            self.inner.update_metadata(key, opts).await
        }
    }

    #[tokio::test]
    async fn complete_with_lost_response_is_accepted_when_object_exists() {
        let mem = Arc::new(InMemoryBackend::new());
        let lossy = Arc::new(Flaky {
            inner: mem.clone(),
            lose: AtomicU64::new(1),
            ..Flaky::default()
        });
        let retry = RetryBackend::new(lossy, fast(3));
        let up = retry.create_multipart("obj").await.unwrap();
        let p = retry
            .upload_part("obj", &up, 1, Bytes::from_static(b"payload"))
            .await
            .unwrap();
        let res = retry.complete_multipart("obj", &up, &[p]).await.unwrap();
        assert_eq!(res.etag, mem.head("obj").await.unwrap().etag);
        assert_eq!(mem.object("obj").unwrap(), Bytes::from_static(b"payload"));
        assert_eq!(retry.retries(), 1);
        assert_eq!(mem.count(Op::CompleteMultipart), 2);
    }

    #[tokio::test]
    async fn first_attempt_no_such_upload_is_an_error_even_if_the_key_exists() {
        let (mem, _fault, retry) = stack(fast(3));
        mem.insert("obj", Bytes::from_static(b"someone else's"));
        let part = CompletedPart {
            part_number: 1,
            etag: ETag::new("\"x\""),
        };
        let err = retry
            .complete_multipart("obj", &UploadId("never-created".to_owned()), &[part])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::NoSuchUpload);
        assert_eq!(mem.count(Op::Head), 0);
    }

    #[tokio::test]
    async fn lost_completion_with_object_missing_stays_an_error() {
        let mem = Arc::new(InMemoryBackend::new());
        let lossy = Arc::new(Flaky {
            inner: mem.clone(),
            lose: AtomicU64::new(1),
            ..Flaky::default()
        });
        let retry = RetryBackend::new(lossy, fast(3));
        let up = retry.create_multipart("obj").await.unwrap();
        let p = retry
            .upload_part("obj", &up, 1, Bytes::from_static(b"payload"))
            .await
            .unwrap();
        retry
            .complete_multipart("obj", &up, std::slice::from_ref(&p))
            .await
            .unwrap();
        // Someone deletes the object; a second completion of the same (finished) upload must
        // not claim success: its first attempt is certain, so NoSuchUpload is reported.
        mem.delete("obj").await.unwrap();
        let err = retry.complete_multipart("obj", &up, &[p]).await.unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::NoSuchUpload);
    }
}
