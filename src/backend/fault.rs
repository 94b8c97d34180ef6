//! Failure injection around any backend, for tests of retries, error surfacing and aborts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::memory::Op;
use super::{
    Backend, BackendError, BackendErrorKind, BackendResult, BodyStream, ByteRange, CompletedPart, ETag, ListPage,
    ListParams, MultipartUploadInfo, ObjectMeta, PutOptions, PutResult, UploadId,
};

/// Which calls fail, and how.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// Operations the rule applies to; empty means all.
    pub ops: Vec<Op>,
    /// Kind of the injected error.
    pub kind: BackendErrorKind,
    /// Fail only this many matching calls (then pass), or all when `None`.
    pub remaining: Option<u64>,
    /// Let this many matching calls pass before failing.
    pub skip: u64,
}

impl FaultRule {
    /// Fail every matching call with `kind`.
    pub fn always(ops: &[Op], kind: BackendErrorKind) -> Self {
        Self {
            ops: ops.to_vec(),
            kind,
            remaining: None,
            skip: 0,
        }
    }
}

/// Wraps a backend and fails calls that match the current [`FaultRule`].
#[derive(Debug)]
pub struct FaultBackend {
    inner: Arc<dyn Backend>,
    rule: Mutex<Option<FaultRule>>,
    injected: AtomicU64,
}

impl FaultBackend {
    /// Wrap `inner` with no faults.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Self {
            inner,
            rule: Mutex::new(None),
            injected: AtomicU64::new(0),
        }
    }

    /// Replace the rule (`None` heals the backend).
    pub fn set_rule(&self, rule: Option<FaultRule>) {
        *self.rule.lock().unwrap_or_else(|e| e.into_inner()) = rule;
    }

    /// How many failures were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn check(&self, op: Op) -> BackendResult<()> {
        let mut guard = self.rule.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rule) = guard.as_mut() else { return Ok(()) };
        if !rule.ops.is_empty() && !rule.ops.contains(&op) {
            return Ok(());
        }
        if rule.skip > 0 {
            rule.skip -= 1;
            return Ok(());
        }
        match rule.remaining {
            Some(0) => return Ok(()),
            Some(ref mut n) => *n -= 1,
            None => {}
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        Err(BackendError::new(rule.kind, format!("injected fault in {op:?}")))
    }
}

#[async_trait]
impl Backend for FaultBackend {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn capabilities(&self) -> crate::backend::Capabilities {
        self.inner.capabilities()
    }
    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        self.check(Op::Head)?;
        self.inner.head(key).await
    }
    async fn get_range(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Bytes> {
        self.check(Op::Get)?;
        self.inner.get_range(key, range, if_match).await
    }
    async fn list(&self, params: &ListParams) -> BackendResult<ListPage> {
        self.check(Op::List)?;
        self.inner.list(params).await
    }
    async fn put(&self, key: &str, data: Bytes) -> BackendResult<PutResult> {
        self.check(Op::Put)?;
        self.inner.put(key, data).await
    }
    async fn create_multipart(&self, key: &str) -> BackendResult<UploadId> {
        self.check(Op::CreateMultipart)?;
        self.inner.create_multipart(key).await
    }
    async fn upload_part(&self, key: &str, upload: &UploadId, part: u32, data: Bytes) -> BackendResult<CompletedPart> {
        self.check(Op::UploadPart)?;
        self.inner.upload_part(key, upload, part, data).await
    }
    async fn upload_part_copy(
        &self,
        key: &str,
        upload: &UploadId,
        part: u32,
        src: &str,
        range: ByteRange,
    ) -> BackendResult<CompletedPart> {
        self.check(Op::UploadPartCopy)?;
        self.inner.upload_part_copy(key, upload, part, src, range).await
    }
    async fn complete_multipart(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[CompletedPart],
    ) -> BackendResult<PutResult> {
        self.check(Op::CompleteMultipart)?;
        self.inner.complete_multipart(key, upload, parts).await
    }
    async fn abort_multipart(&self, key: &str, upload: &UploadId) -> BackendResult<()> {
        self.check(Op::AbortMultipart)?;
        self.inner.abort_multipart(key, upload).await
    }
    async fn list_multipart_uploads(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        self.check(Op::ListMultipart)?;
        self.inner.list_multipart_uploads(prefix).await
    }
    async fn copy(&self, src: &str, dst: &str) -> BackendResult<PutResult> {
        self.check(Op::Copy)?;
        self.inner.copy(src, dst).await
    }
    async fn delete(&self, key: &str) -> BackendResult<()> {
        self.check(Op::Delete)?;
        self.inner.delete(key).await
    }
    async fn put_opts(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<PutResult> {
        self.check(Op::Put)?;
        self.inner.put_opts(key, data, opts).await
    }
    async fn put_stream(&self, key: &str, size: u64, body: BodyStream, opts: &PutOptions) -> BackendResult<PutResult> {
        self.check(Op::Put)?;
        self.inner.put_stream(key, size, body, opts).await
    }
    async fn create_multipart_opts(&self, key: &str, opts: &PutOptions) -> BackendResult<UploadId> {
        self.check(Op::CreateMultipart)?;
        self.inner.create_multipart_opts(key, opts).await
    }
    async fn update_metadata(&self, key: &str, opts: &PutOptions) -> BackendResult<PutResult> {
        self.check(Op::SetMtime)?;
        self.inner.update_metadata(key, opts).await
    }
}
