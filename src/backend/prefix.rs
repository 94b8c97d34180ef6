//! Confines a tenant to its key prefix.
//!
//! Every key going down gets the prefix prepended; every key coming up must start with it
//! (anything else is dropped, whatever the service returned) and has it stripped. Keys with
//! `.`/`..`/empty segments are refused before they reach the service, because some HTTP
//! stacks and S3 gateways normalise such paths and would let a request land outside the
//! prefix. The layers above never produce such keys; this is the last line of defence.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Backend, BackendError, BackendErrorKind, BackendResult, BodyStream, ByteRange, CompletedPart, ETag, ListPage,
    ListParams, MultipartUploadInfo, ObjectMeta, PutOptions, PutResult, UploadId,
};

/// A view of `inner` restricted to keys under `prefix`.
#[derive(Debug, Clone)]
pub struct PrefixBackend {
    inner: Arc<dyn Backend>,
    /// Empty, or ends with `/`.
    prefix: String,
}

impl PrefixBackend {
    /// Wrap `inner`; `prefix` is normalised to end with `/` (an empty prefix is the whole bucket).
    pub fn new(inner: Arc<dyn Backend>, prefix: &str) -> Self {
        let trimmed = prefix.trim_matches('/');
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        };
        Self { inner, prefix }
    }

    /// The normalised prefix (empty or ending in `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full(&self, key: &str) -> BackendResult<String> {
        if !is_safe_key(key) {
            return Err(BackendError::new(
                BackendErrorKind::InvalidRequest,
                format!("refused unsafe key {key:?}"),
            ));
        }
        Ok(format!("{}{}", self.prefix, key))
    }

    fn strip<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())
    }
}

/// Whether `key` (relative to a prefix) is free of segments that a path normaliser could
/// resolve outside the prefix. A trailing `/` (directory marker) is allowed; the empty key is
/// allowed only for listings, which go through [`PrefixBackend::list`] separately.
/// The rules are [`crate::key::ValidKey`]'s.
pub fn is_safe_key(key: &str) -> bool {
    crate::key::ValidKey::parse(key).is_ok()
}

#[async_trait]
impl Backend for PrefixBackend {
    fn describe(&self) -> String {
        format!("{}/{}", self.inner.describe().trim_end_matches('/'), self.prefix)
    }
    fn capabilities(&self) -> crate::backend::Capabilities {
        self.inner.capabilities()
    }

    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        let mut m = self.inner.head(&self.full(key)?).await?;
        m.key = key.to_owned();
        Ok(m)
    }

    async fn get_range(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Bytes> {
        self.inner.get_range(&self.full(key)?, range, if_match).await
    }

    async fn get_range_stream(
        &self,
        key: &str,
        range: ByteRange,
        if_match: Option<&ETag>,
    ) -> BackendResult<BodyStream> {
        self.inner.get_range_stream(&self.full(key)?, range, if_match).await
    }

    async fn list(&self, params: &ListParams) -> BackendResult<ListPage> {
        if !params.prefix.is_empty() && !is_safe_key(&params.prefix) {
            return Err(BackendError::new(
                BackendErrorKind::InvalidRequest,
                "refused unsafe list prefix",
            ));
        }
        let mut p = params.clone();
        p.prefix = format!("{}{}", self.prefix, params.prefix);
        let page = self.inner.list(&p).await?;
        let objects = page
            .objects
            .into_iter()
            .filter_map(|mut o| {
                // The prefix's own `tenant/` marker is not an object inside the tenant.
                let rel = self.strip(&o.key).filter(|r| !r.is_empty())?.to_owned();
                o.key = rel;
                Some(o)
            })
            .collect();
        let common_prefixes = page
            .common_prefixes
            .iter()
            .filter_map(|cp| self.strip(cp).map(str::to_owned))
            .collect();
        Ok(ListPage::new(objects, common_prefixes, page.next))
    }

    async fn put(&self, key: &str, data: Bytes) -> BackendResult<PutResult> {
        self.inner.put(&self.full(key)?, data).await
    }

    async fn create_multipart(&self, key: &str) -> BackendResult<UploadId> {
        self.inner.create_multipart(&self.full(key)?).await
    }

    async fn upload_part(&self, key: &str, upload: &UploadId, part: u32, data: Bytes) -> BackendResult<CompletedPart> {
        self.inner.upload_part(&self.full(key)?, upload, part, data).await
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload: &UploadId,
        part: u32,
        src: &str,
        range: ByteRange,
    ) -> BackendResult<CompletedPart> {
        self.inner
            .upload_part_copy(&self.full(key)?, upload, part, &self.full(src)?, range)
            .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[CompletedPart],
    ) -> BackendResult<PutResult> {
        self.inner.complete_multipart(&self.full(key)?, upload, parts).await
    }

    async fn abort_multipart(&self, key: &str, upload: &UploadId) -> BackendResult<()> {
        self.inner.abort_multipart(&self.full(key)?, upload).await
    }

    async fn list_multipart_uploads(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        let full = if prefix.is_empty() {
            self.prefix.clone()
        } else {
            self.full(prefix)?
        };
        let v = self.inner.list_multipart_uploads(&full).await?;
        Ok(v.into_iter()
            .filter_map(|mut u| {
                u.key = self.strip(&u.key)?.to_owned();
                Some(u)
            })
            .collect())
    }

    async fn copy(&self, src: &str, dst: &str) -> BackendResult<PutResult> {
        self.inner.copy(&self.full(src)?, &self.full(dst)?).await
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        self.inner.delete(&self.full(key)?).await
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<PutResult> {
        self.inner.put_opts(&self.full(key)?, data, opts).await
    }

    async fn put_stream(&self, key: &str, size: u64, body: BodyStream, opts: &PutOptions) -> BackendResult<PutResult> {
        self.inner.put_stream(&self.full(key)?, size, body, opts).await
    }

    async fn create_multipart_opts(&self, key: &str, opts: &PutOptions) -> BackendResult<UploadId> {
        self.inner.create_multipart_opts(&self.full(key)?, opts).await
    }

    async fn update_metadata(&self, key: &str, opts: &PutOptions) -> BackendResult<PutResult> {
        self.inner.update_metadata(&self.full(key)?, opts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::InMemoryBackend;

    #[test]
    fn unsafe_keys_are_refused() {
        for k in [
            "",
            "/a",
            "../x",
            "a/../../b",
            "./a",
            "a//b",
            "a/./b",
            "..",
            ".",
            "a\0b",
            "a\\b",
            "/",
        ] {
            assert!(!is_safe_key(k), "{k:?} should be unsafe");
        }
        for k in ["a", "a/b", "dir/", "a..b", ".hidden", "a/.b"] {
            assert!(is_safe_key(k), "{k:?} should be safe");
        }
    }

    #[tokio::test]
    async fn string_prefix_of_another_tenant_is_not_visible() {
        let mem = Arc::new(InMemoryBackend::new());
        mem.insert("acme/a", "1");
        mem.insert("acme2/b", "2");
        mem.insert("acme", "3");
        let acme = PrefixBackend::new(mem.clone(), "acme");
        let page = acme.list(&ListParams::new("", false)).await.unwrap();
        let keys: Vec<_> = page.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, vec!["a"]);
        acme.put("x", Bytes::from_static(b"y")).await.unwrap();
        assert!(mem.object("acme/x").is_some());
        assert!(acme.put("../acme2/b", Bytes::new()).await.is_err());
        assert_eq!(mem.object("acme2/b").unwrap(), Bytes::from_static(b"2"));
    }
}
