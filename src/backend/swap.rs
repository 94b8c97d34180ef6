//! A backend whose connection can be replaced while it is in use: credential rotation.
//!
//! A reload that changes only a backend's credentials (a secrets file's new contents, another
//! environment variable) builds a client with the new keys and [`SwapBackend::swap`]s it in.
//! Every request made afterwards, including those of files opened before, goes through the new
//! client and is signed with the new keys; requests already in flight finish on the old one,
//! which they hold. The location (endpoint, bucket, prefix) never changes through a swap, so
//! object keys, ETags and cached blocks stay valid; a new location is a new tenant binding
//! instead (see `crate::tenant`).

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Backend, BackendResult, BodyStream, ByteRange, CompletedPart, ETag, ListPage, ListParams, MultipartUploadInfo,
    ObjectMeta, PutOptions, PutResult, UploadId,
};

/// `inner`, replaceable at any time by one with the same location.
#[derive(Debug)]
pub(crate) struct SwapBackend {
    /// Read once per request (a pointer copy under a read lock), never held across an await.
    inner: RwLock<Arc<dyn Backend>>,
}

impl SwapBackend {
    /// Wrap `inner`.
    pub(crate) fn new(inner: Arc<dyn Backend>) -> Self {
        Self {
            inner: RwLock::new(inner),
        }
    }

    /// The backend requests go to now.
    pub(crate) fn current(&self) -> Arc<dyn Backend> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Send every later request to `next` (same location, other credentials).
    pub(crate) fn swap(&self, next: Arc<dyn Backend>) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = next;
    }
}

#[async_trait]
impl Backend for SwapBackend {
    fn describe(&self) -> String {
        self.current().describe()
    }

    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        self.current().head(key).await
    }

    async fn get_range(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Bytes> {
        self.current().get_range(key, range, if_match).await
    }

    async fn get_range_stream(
        &self,
        key: &str,
        range: ByteRange,
        if_match: Option<&ETag>,
    ) -> BackendResult<BodyStream> {
        self.current().get_range_stream(key, range, if_match).await
    }

    async fn list(&self, params: &ListParams) -> BackendResult<ListPage> {
        self.current().list(params).await
    }

    async fn put(&self, key: &str, data: Bytes) -> BackendResult<PutResult> {
        self.current().put(key, data).await
    }

    async fn create_multipart(&self, key: &str) -> BackendResult<UploadId> {
        self.current().create_multipart(key).await
    }

    async fn upload_part(&self, key: &str, upload: &UploadId, part: u32, data: Bytes) -> BackendResult<CompletedPart> {
        self.current().upload_part(key, upload, part, data).await
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload: &UploadId,
        part: u32,
        src: &str,
        range: ByteRange,
    ) -> BackendResult<CompletedPart> {
        self.current().upload_part_copy(key, upload, part, src, range).await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[CompletedPart],
    ) -> BackendResult<PutResult> {
        self.current().complete_multipart(key, upload, parts).await
    }

    async fn abort_multipart(&self, key: &str, upload: &UploadId) -> BackendResult<()> {
        self.current().abort_multipart(key, upload).await
    }

    async fn list_multipart_uploads(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        self.current().list_multipart_uploads(prefix).await
    }

    async fn copy(&self, src: &str, dst: &str) -> BackendResult<PutResult> {
        self.current().copy(src, dst).await
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        self.current().delete(key).await
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<PutResult> {
        self.current().put_opts(key, data, opts).await
    }

    async fn create_multipart_opts(&self, key: &str, opts: &PutOptions) -> BackendResult<UploadId> {
        self.current().create_multipart_opts(key, opts).await
    }

    async fn update_metadata(&self, key: &str, opts: &PutOptions) -> BackendResult<PutResult> {
        self.current().update_metadata(key, opts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::InMemoryBackend;

    #[tokio::test]
    async fn requests_after_a_swap_go_to_the_new_backend() {
        let old = Arc::new(InMemoryBackend::new());
        let new = Arc::new(InMemoryBackend::new());
        let swap = SwapBackend::new(old.clone());
        swap.put("a", Bytes::from_static(b"1")).await.unwrap();
        swap.swap(new.clone());
        swap.put("b", Bytes::from_static(b"2")).await.unwrap();
        assert!(old.head("a").await.is_ok() && old.head("b").await.is_err());
        assert!(new.head("b").await.is_ok() && new.head("a").await.is_err());
    }
}
