//! A test layer that makes any backend look like a lesser store (issue 25): it declares
//! fewer [`Capabilities`] and refuses, with [`BackendErrorKind::Unsupported`], every
//! operation the declaration takes away. Code above the trait that still assumes S3 (a
//! multipart upload, a server-side copy, an `If-Match` read, a metadata update) then fails
//! loudly in tests instead of passing on an in-memory backend that can do everything.
//!
//! What a real store without a capability does silently, the mask does too: without
//! `user_metadata` the stored mtime, POSIX attributes and headers are dropped on writes and
//! absent from `head` and listings; without `conditional_put`, `create_only` is ignored.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Backend, BackendError, BackendErrorKind, BackendResult, BodyStream, ByteRange, Capabilities, CompletedPart, ETag,
    Layer, ListPage, ListParams, MultipartUploadInfo, ObjectMeta, PosixAttrs, PutOptions, PutResult, UploadId,
};

/// `inner` seen through a smaller set of capabilities; see the module docs.
#[derive(Debug)]
pub struct MaskedBackend {
    inner: Arc<dyn Backend>,
    caps: Capabilities,
}

impl MaskedBackend {
    /// Show `inner` with `caps` (each capability must be one `inner` has; the mask only
    /// takes away).
    pub fn new(inner: Arc<dyn Backend>, caps: Capabilities) -> Self {
        Self { inner, caps }
    }

    /// A WebDAV-like store: no multipart, no copies, no conditional requests, no user
    /// metadata, objects up to `max_object_size`.
    pub fn minimal(inner: Arc<dyn Backend>, max_object_size: Option<u64>) -> Self {
        Self::new(
            inner,
            Capabilities {
                multipart: None,
                part_copy: false,
                server_side_copy: false,
                conditional_get: false,
                conditional_put: false,
                stable_etags: false,
                max_object_size,
                duplicate_names: false,
                user_metadata: false,
            },
        )
    }

    fn refuse<T>(&self, what: &str) -> BackendResult<T> {
        Err(BackendError::new(
            BackendErrorKind::Unsupported,
            format!("{what}: masked capability"),
        ))
    }

    fn need_multipart(&self, what: &str) -> BackendResult<()> {
        match self.caps.multipart {
            Some(_) => Ok(()),
            None => self.refuse(what),
        }
    }

    fn check_if_match(&self, if_match: Option<&ETag>) -> BackendResult<()> {
        match if_match {
            Some(_) if !self.caps.conditional_get => self.refuse("get with If-Match"),
            _ => Ok(()),
        }
    }

    fn check_size(&self, size: u64) -> BackendResult<()> {
        match self.caps.max_object_size {
            Some(max) if size > max => Err(BackendError::new(
                BackendErrorKind::InvalidRequest,
                format!("object of {size} bytes exceeds the store's limit of {max}"),
            )),
            _ => Ok(()),
        }
    }

    /// The options as this store keeps them.
    fn options(&self, opts: &PutOptions) -> PutOptions {
        let mut o = opts.clone();
        if !self.caps.user_metadata {
            o = o
                .with_mtime(None)
                .with_posix(PosixAttrs::default())
                .with_headers(None, None);
        }
        if !self.caps.conditional_put {
            o = o.with_create_only(false);
        }
        o
    }

    /// Metadata as this store reports it.
    fn meta(&self, m: ObjectMeta) -> ObjectMeta {
        if self.caps.user_metadata {
            return m;
        }
        m.with_mtime(None)
            .with_posix(PosixAttrs::default())
            .with_content_type(None)
    }
}

#[async_trait]
impl Layer for MaskedBackend {
    fn inner(&self) -> Arc<dyn Backend> {
        self.inner.clone()
    }
    fn describe(&self) -> String {
        format!("masked({})", self.inner.describe())
    }
    fn capabilities(&self) -> Capabilities {
        self.caps
    }
    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        Ok(self.meta(self.inner.head(key).await?))
    }
    async fn get_range(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Bytes> {
        self.check_if_match(if_match)?;
        self.inner.get_range(key, range, if_match).await
    }
    async fn get_range_stream(
        &self,
        key: &str,
        range: ByteRange,
        if_match: Option<&ETag>,
    ) -> BackendResult<BodyStream> {
        self.check_if_match(if_match)?;
        self.inner.get_range_stream(key, range, if_match).await
    }
    async fn list(&self, params: &ListParams) -> BackendResult<ListPage> {
        let mut page = self.inner.list(params).await?;
        page.objects = page.objects.into_iter().map(|m| self.meta(m)).collect();
        Ok(page)
    }
    async fn put(&self, key: &str, data: Bytes) -> BackendResult<PutResult> {
        Layer::put_opts(self, key, data, &PutOptions::default()).await
    }
    async fn put_opts(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<PutResult> {
        self.check_size(data.len() as u64)?;
        self.inner.put_opts(key, data, &self.options(opts)).await
    }
    async fn put_stream(&self, key: &str, size: u64, body: BodyStream, opts: &PutOptions) -> BackendResult<PutResult> {
        self.check_size(size)?;
        self.inner.put_stream(key, size, body, &self.options(opts)).await
    }
    async fn create_multipart(&self, key: &str) -> BackendResult<UploadId> {
        Layer::create_multipart_opts(self, key, &PutOptions::default()).await
    }
    async fn create_multipart_opts(&self, key: &str, opts: &PutOptions) -> BackendResult<UploadId> {
        self.need_multipart("create_multipart")?;
        self.inner.create_multipart_opts(key, &self.options(opts)).await
    }
    async fn upload_part(&self, key: &str, upload: &UploadId, part: u32, data: Bytes) -> BackendResult<CompletedPart> {
        self.need_multipart("upload_part")?;
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
        if self.caps.multipart.is_none() || !self.caps.part_copy {
            return self.refuse("upload_part_copy");
        }
        self.inner.upload_part_copy(key, upload, part, src, range).await
    }
    async fn complete_multipart(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[CompletedPart],
    ) -> BackendResult<PutResult> {
        self.need_multipart("complete_multipart")?;
        self.inner.complete_multipart(key, upload, parts).await
    }
    async fn abort_multipart(&self, key: &str, upload: &UploadId) -> BackendResult<()> {
        self.need_multipart("abort_multipart")?;
        self.inner.abort_multipart(key, upload).await
    }
    async fn list_multipart_uploads(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        self.need_multipart("list_multipart_uploads")?;
        self.inner.list_multipart_uploads(prefix).await
    }
    async fn copy(&self, src: &str, dst: &str) -> BackendResult<PutResult> {
        if !self.caps.server_side_copy {
            return self.refuse("copy");
        }
        self.inner.copy(src, dst).await
    }
    async fn update_metadata(&self, key: &str, opts: &PutOptions) -> BackendResult<PutResult> {
        if !self.caps.user_metadata {
            return self.refuse("update_metadata");
        }
        self.inner.update_metadata(key, opts).await
    }
}
