//! A forwarding layer (OpenDAL's `LayeredAccess`): a wrapper around another backend implements
//! [`Layer`], names its inner backend, and writes only the methods it changes; every other
//! [`Backend`] method goes to the inner backend unchanged. Every `L: Layer` is a `Backend`.
//!
//! Forwarding passes each call as it came (`put_opts` to `put_opts`, `get_range_stream` to
//! `get_range_stream`), so a layer cannot drop options or a streamed body by forgetting a
//! method. A layer that must see *every* request of one kind (fault injection, request
//! counters) overrides each method of that kind, including the streaming and `_opts` forms.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Backend, BackendResult, BodyStream, ByteRange, Capabilities, CompletedPart, ETag, ListPage, ListParams,
    MultipartUploadInfo, ObjectMeta, PutOptions, PutResult, UploadId,
};

/// A backend that wraps another; see the module docs. Call a layer's own methods from inside
/// its impl as `Layer::method(self, ..)` (`Backend` has the same names).
#[async_trait]
pub trait Layer: Send + Sync + std::fmt::Debug {
    /// The backend calls go to (an `Arc` so a layer may swap it, see `swap`).
    fn inner(&self) -> Arc<dyn Backend>;

    /// See [`Backend::describe`].
    fn describe(&self) -> String {
        self.inner().describe()
    }
    /// See [`Backend::capabilities`].
    fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }
    /// See [`Backend::head`].
    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        self.inner().head(key).await
    }
    /// See [`Backend::get_range`].
    async fn get_range(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Bytes> {
        self.inner().get_range(key, range, if_match).await
    }
    /// See [`Backend::get_range_stream`].
    async fn get_range_stream(
        &self,
        key: &str,
        range: ByteRange,
        if_match: Option<&ETag>,
    ) -> BackendResult<BodyStream> {
        self.inner().get_range_stream(key, range, if_match).await
    }
    /// See [`Backend::list`].
    async fn list(&self, params: &ListParams) -> BackendResult<ListPage> {
        self.inner().list(params).await
    }
    /// See [`Backend::put`].
    async fn put(&self, key: &str, data: Bytes) -> BackendResult<PutResult> {
        self.inner().put(key, data).await
    }
    /// See [`Backend::create_multipart`].
    async fn create_multipart(&self, key: &str) -> BackendResult<UploadId> {
        self.inner().create_multipart(key).await
    }
    /// See [`Backend::upload_part`].
    async fn upload_part(&self, key: &str, upload: &UploadId, part: u32, data: Bytes) -> BackendResult<CompletedPart> {
        self.inner().upload_part(key, upload, part, data).await
    }
    /// See [`Backend::upload_part_copy`].
    async fn upload_part_copy(
        &self,
        key: &str,
        upload: &UploadId,
        part: u32,
        src: &str,
        range: ByteRange,
    ) -> BackendResult<CompletedPart> {
        self.inner().upload_part_copy(key, upload, part, src, range).await
    }
    /// See [`Backend::complete_multipart`].
    async fn complete_multipart(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[CompletedPart],
    ) -> BackendResult<PutResult> {
        self.inner().complete_multipart(key, upload, parts).await
    }
    /// See [`Backend::abort_multipart`].
    async fn abort_multipart(&self, key: &str, upload: &UploadId) -> BackendResult<()> {
        self.inner().abort_multipart(key, upload).await
    }
    /// See [`Backend::list_multipart_uploads`].
    async fn list_multipart_uploads(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        self.inner().list_multipart_uploads(prefix).await
    }
    /// See [`Backend::copy`].
    async fn copy(&self, src: &str, dst: &str) -> BackendResult<PutResult> {
        self.inner().copy(src, dst).await
    }
    /// See [`Backend::delete`].
    async fn delete(&self, key: &str) -> BackendResult<()> {
        self.inner().delete(key).await
    }
    /// See [`Backend::put_opts`].
    async fn put_opts(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<PutResult> {
        self.inner().put_opts(key, data, opts).await
    }
    /// See [`Backend::put_stream`].
    async fn put_stream(&self, key: &str, size: u64, body: BodyStream, opts: &PutOptions) -> BackendResult<PutResult> {
        self.inner().put_stream(key, size, body, opts).await
    }
    /// See [`Backend::create_multipart_opts`].
    async fn create_multipart_opts(&self, key: &str, opts: &PutOptions) -> BackendResult<UploadId> {
        self.inner().create_multipart_opts(key, opts).await
    }
    /// See [`Backend::update_metadata`].
    async fn update_metadata(&self, key: &str, opts: &PutOptions) -> BackendResult<PutResult> {
        self.inner().update_metadata(key, opts).await
    }
}

#[async_trait]
impl<L: Layer> Backend for L {
    fn describe(&self) -> String {
        Layer::describe(self)
    }
    fn capabilities(&self) -> Capabilities {
        Layer::capabilities(self)
    }
    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        Layer::head(self, key).await
    }
    async fn get_range(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Bytes> {
        Layer::get_range(self, key, range, if_match).await
    }
    async fn get_range_stream(
        &self,
        key: &str,
        range: ByteRange,
        if_match: Option<&ETag>,
    ) -> BackendResult<BodyStream> {
        Layer::get_range_stream(self, key, range, if_match).await
    }
    async fn list(&self, params: &ListParams) -> BackendResult<ListPage> {
        Layer::list(self, params).await
    }
    async fn put(&self, key: &str, data: Bytes) -> BackendResult<PutResult> {
        Layer::put(self, key, data).await
    }
    async fn create_multipart(&self, key: &str) -> BackendResult<UploadId> {
        Layer::create_multipart(self, key).await
    }
    async fn upload_part(&self, key: &str, upload: &UploadId, part: u32, data: Bytes) -> BackendResult<CompletedPart> {
        Layer::upload_part(self, key, upload, part, data).await
    }
    async fn upload_part_copy(
        &self,
        key: &str,
        upload: &UploadId,
        part: u32,
        src: &str,
        range: ByteRange,
    ) -> BackendResult<CompletedPart> {
        Layer::upload_part_copy(self, key, upload, part, src, range).await
    }
    async fn complete_multipart(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[CompletedPart],
    ) -> BackendResult<PutResult> {
        Layer::complete_multipart(self, key, upload, parts).await
    }
    async fn abort_multipart(&self, key: &str, upload: &UploadId) -> BackendResult<()> {
        Layer::abort_multipart(self, key, upload).await
    }
    async fn list_multipart_uploads(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        Layer::list_multipart_uploads(self, prefix).await
    }
    async fn copy(&self, src: &str, dst: &str) -> BackendResult<PutResult> {
        Layer::copy(self, src, dst).await
    }
    async fn delete(&self, key: &str) -> BackendResult<()> {
        Layer::delete(self, key).await
    }
    async fn put_opts(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<PutResult> {
        Layer::put_opts(self, key, data, opts).await
    }
    async fn put_stream(&self, key: &str, size: u64, body: BodyStream, opts: &PutOptions) -> BackendResult<PutResult> {
        Layer::put_stream(self, key, size, body, opts).await
    }
    async fn create_multipart_opts(&self, key: &str, opts: &PutOptions) -> BackendResult<UploadId> {
        Layer::create_multipart_opts(self, key, opts).await
    }
    async fn update_metadata(&self, key: &str, opts: &PutOptions) -> BackendResult<PutResult> {
        Layer::update_metadata(self, key, opts).await
    }
}
