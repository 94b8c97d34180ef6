//! Counts one tenant's storage traffic for `byosfs status` and the metrics endpoint:
//! requests by operation and outcome, failures by class, bytes fetched and uploaded, GET
//! first-byte and part-upload latency, the last success and failure. Wraps the tenant's view
//! (above the retry layer, so a request retried three times counts once and its latency
//! includes the retries: what the filesystem waited).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{
    Backend, BackendErrorKind, BackendResult, BodyStream, ByteRange, CompletedPart, ETag, ListPage, ListParams,
    MultipartUploadInfo, ObjectMeta, PutOptions, PutResult, UploadId,
};
use crate::metrics::defs::BackendOp;
use crate::metrics::TenantMetrics;

/// `inner`, counted into `metrics`.
#[derive(Debug)]
pub struct MeteredBackend {
    inner: Arc<dyn Backend>,
    metrics: Arc<TenantMetrics>,
}

impl MeteredBackend {
    /// Count `inner`'s requests into `metrics`.
    pub fn new(inner: Arc<dyn Backend>, metrics: Arc<TenantMetrics>) -> Self {
        Self { inner, metrics }
    }

    fn note<T>(&self, op: BackendOp, r: BackendResult<T>) -> BackendResult<T> {
        match &r {
            // A miss or a lost race is an answer: the storage is reachable.
            Ok(_) => self.metrics.request(op, Ok(())),
            Err(e)
                if matches!(
                    e.kind(),
                    BackendErrorKind::NotFound | BackendErrorKind::PreconditionFailed
                ) =>
            {
                self.metrics.request(op, Ok(()));
            }
            Err(e) => self.metrics.request(op, Err(&format!("{:?}", e.kind()))),
        }
        r
    }
}

#[async_trait]
impl Backend for MeteredBackend {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn capabilities(&self) -> crate::backend::Capabilities {
        self.inner.capabilities()
    }

    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        self.note(BackendOp::Head, self.inner.head(key).await)
    }

    async fn get_range(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Bytes> {
        let started = Instant::now();
        let r = self.note(BackendOp::Get, self.inner.get_range(key, range, if_match).await);
        // The whole (small, exact) range is one piece: its arrival is its first byte.
        self.metrics.first_byte.record(started.elapsed());
        if let Ok(b) = &r {
            TenantMetrics::add(&self.metrics.bytes_fetched, b.len());
        }
        r
    }

    async fn get_range_stream(
        &self,
        key: &str,
        range: ByteRange,
        if_match: Option<&ETag>,
    ) -> BackendResult<BodyStream> {
        let started = Instant::now();
        let stream = self.note(BackendOp::Get, self.inner.get_range_stream(key, range, if_match).await)?;
        let metrics = self.metrics.clone();
        let mut first = Some(started);
        // Counted as the body arrives, so a status during a long GET shows it advancing.
        Ok(stream
            .inspect(move |piece| {
                if let Some(t) = first.take() {
                    metrics.first_byte.record(t.elapsed());
                }
                match piece {
                    Ok(b) => TenantMetrics::add(&metrics.bytes_fetched, b.len()),
                    Err(e) => metrics.failure(&format!("{:?}", e.kind())),
                }
            })
            .boxed())
    }

    async fn list(&self, params: &ListParams) -> BackendResult<ListPage> {
        self.note(BackendOp::List, self.inner.list(params).await)
    }

    async fn put(&self, key: &str, data: Bytes) -> BackendResult<PutResult> {
        let len = data.len();
        let r = self.note(BackendOp::Put, self.inner.put(key, data).await);
        if r.is_ok() {
            TenantMetrics::add(&self.metrics.bytes_uploaded, len);
        }
        r
    }

    async fn put_stream(&self, key: &str, size: u64, body: BodyStream, opts: &PutOptions) -> BackendResult<PutResult> {
        let r = self.note(BackendOp::Put, self.inner.put_stream(key, size, body, opts).await);
        if r.is_ok() {
            TenantMetrics::add(
                &self.metrics.bytes_uploaded,
                usize::try_from(size).unwrap_or(usize::MAX),
            );
        }
        r
    }

    async fn create_multipart(&self, key: &str) -> BackendResult<UploadId> {
        self.note(BackendOp::CreateMultipart, self.inner.create_multipart(key).await)
    }

    async fn upload_part(&self, key: &str, upload: &UploadId, part: u32, data: Bytes) -> BackendResult<CompletedPart> {
        let len = data.len();
        let started = Instant::now();
        let r = self.note(
            BackendOp::UploadPart,
            self.inner.upload_part(key, upload, part, data).await,
        );
        self.metrics.part_upload.record(started.elapsed());
        if r.is_ok() {
            TenantMetrics::add(&self.metrics.bytes_uploaded, len);
        }
        r
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload: &UploadId,
        part: u32,
        src: &str,
        range: ByteRange,
    ) -> BackendResult<CompletedPart> {
        let started = Instant::now();
        let r = self.note(
            BackendOp::UploadPartCopy,
            self.inner.upload_part_copy(key, upload, part, src, range).await,
        );
        self.metrics.part_upload.record(started.elapsed());
        r
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[CompletedPart],
    ) -> BackendResult<PutResult> {
        self.note(
            BackendOp::CompleteMultipart,
            self.inner.complete_multipart(key, upload, parts).await,
        )
    }

    async fn abort_multipart(&self, key: &str, upload: &UploadId) -> BackendResult<()> {
        self.note(BackendOp::AbortMultipart, self.inner.abort_multipart(key, upload).await)
    }

    async fn list_multipart_uploads(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        self.note(
            BackendOp::ListMultipartUploads,
            self.inner.list_multipart_uploads(prefix).await,
        )
    }

    async fn copy(&self, src: &str, dst: &str) -> BackendResult<PutResult> {
        self.note(BackendOp::Copy, self.inner.copy(src, dst).await)
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        self.note(BackendOp::Delete, self.inner.delete(key).await)
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<PutResult> {
        let len = data.len();
        let r = self.note(BackendOp::Put, self.inner.put_opts(key, data, opts).await);
        if r.is_ok() {
            TenantMetrics::add(&self.metrics.bytes_uploaded, len);
        }
        r
    }

    async fn create_multipart_opts(&self, key: &str, opts: &PutOptions) -> BackendResult<UploadId> {
        self.note(
            BackendOp::CreateMultipart,
            self.inner.create_multipart_opts(key, opts).await,
        )
    }

    async fn update_metadata(&self, key: &str, opts: &PutOptions) -> BackendResult<PutResult> {
        self.note(BackendOp::UpdateMetadata, self.inner.update_metadata(key, opts).await)
    }
}
