//! HTTP headers for the web: every object a tenant writes carries a Content-Type guessed from
//! its name (`mime_guess`'s table, overridable per extension) and the tenant's Cache-Control.
//!
//! [`HeadersBackend`] wraps a tenant's view, so every way an object comes to be (single PUT,
//! multipart upload, the multipart copy of a large rename) gets the headers without the
//! upload pipeline or the filesystem knowing about them. Options that already name a header
//! win. A server-side `copy` keeps the source's headers (S3's `MetadataDirective=COPY`), so
//! objects written by other tools keep theirs through a rename; only when the new name maps
//! to other headers than the old one (a rename to another extension, such as rsync's
//! `.f.mp4.XyZ12` temporary becoming `f.mp4`) are they rewritten, by
//! [`Backend::update_metadata`] on the copy. Metadata-only updates (mtime, mode) pass
//! through untouched and keep whatever Content-Type the object has.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Backend, BackendResult, BodyStream, Layer, PutOptions, PutResult, UploadId};
use crate::key::extension;

/// The headers one tenant's objects get.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderPolicy {
    /// Cache-Control of every object (`None`: none stored).
    pub cache_control: Option<String>,
    /// Content-Type by lower-case extension (without the dot), ahead of the guess.
    pub content_types: BTreeMap<String, String>,
    /// Cache-Control by lower-case extension, ahead of `cache_control`.
    pub cache_control_by_extension: BTreeMap<String, String>,
}

/// Content-Type of names with no known extension.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

impl HeaderPolicy {
    /// Content-Type for an object named `key`; `None` for directory markers (`a/`).
    pub fn content_type(&self, key: &str) -> Option<String> {
        if key.is_empty() || key.ends_with('/') {
            return None;
        }
        let ext = extension(key);
        if let Some(t) = ext.as_ref().and_then(|e| self.content_types.get(e)) {
            return Some(t.clone());
        }
        let guess = ext.and_then(|e| mime_guess::from_ext(&e).first_raw());
        Some(guess.unwrap_or(DEFAULT_CONTENT_TYPE).to_owned())
    }

    /// Cache-Control for an object named `key`; `None` for directory markers.
    pub fn cache_control(&self, key: &str) -> Option<String> {
        if key.is_empty() || key.ends_with('/') {
            return None;
        }
        extension(key)
            .and_then(|e| self.cache_control_by_extension.get(&e).cloned())
            .or_else(|| self.cache_control.clone())
    }

    /// `opts` with the headers for `key` filled in where it sets none.
    pub fn fill(&self, key: &str, opts: &PutOptions) -> PutOptions {
        let mut o = opts.clone();
        if o.content_type.is_none() {
            o.content_type = self.content_type(key);
        }
        if o.cache_control.is_none() {
            o.cache_control = self.cache_control(key);
        }
        o
    }

    /// The headers to set on a copy from `src` to `dst`, when they differ from the source's.
    pub fn on_rename(&self, src: &str, dst: &str) -> Option<PutOptions> {
        let (ct, cc) = (self.content_type(dst), self.cache_control(dst));
        if ct == self.content_type(src) && cc == self.cache_control(src) {
            return None;
        }
        Some(PutOptions::default().with_headers(ct, cc))
    }
}

/// `inner` with [`HeaderPolicy`] applied to everything written.
#[derive(Debug)]
pub struct HeadersBackend {
    inner: Arc<dyn Backend>,
    policy: HeaderPolicy,
}

impl HeadersBackend {
    /// Apply `policy` to `inner`'s writes.
    pub fn new(inner: Arc<dyn Backend>, policy: HeaderPolicy) -> Self {
        Self { inner, policy }
    }
}

// Writes get the headers; everything else, including `update_metadata` (an mtime or mode
// change keeps the object's Content-Type), goes through unchanged.
#[async_trait]
impl Layer for HeadersBackend {
    fn inner(&self) -> Arc<dyn Backend> {
        self.inner.clone()
    }

    async fn put(&self, key: &str, data: Bytes) -> BackendResult<PutResult> {
        Layer::put_opts(self, key, data, &PutOptions::default()).await
    }

    async fn create_multipart(&self, key: &str) -> BackendResult<UploadId> {
        Layer::create_multipart_opts(self, key, &PutOptions::default()).await
    }

    async fn copy(&self, src: &str, dst: &str) -> BackendResult<PutResult> {
        let copied = self.inner.copy(src, dst).await?;
        match self.policy.on_rename(src, dst) {
            // A second server-side copy (onto itself): CopyObject cannot both keep the
            // source's user metadata (stored mtime, mode) and replace one header.
            Some(opts) => self.inner.update_metadata(dst, &opts).await,
            None => Ok(copied),
        }
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<PutResult> {
        self.inner.put_opts(key, data, &self.policy.fill(key, opts)).await
    }

    async fn put_stream(&self, key: &str, size: u64, body: BodyStream, opts: &PutOptions) -> BackendResult<PutResult> {
        self.inner
            .put_stream(key, size, body, &self.policy.fill(key, opts))
            .await
    }

    async fn create_multipart_opts(&self, key: &str, opts: &PutOptions) -> BackendResult<UploadId> {
        self.inner
            .create_multipart_opts(key, &self.policy.fill(key, opts))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn policy() -> HeaderPolicy {
        HeaderPolicy {
            cache_control: Some("public, max-age=3600".into()),
            content_types: BTreeMap::from([("m3u8".into(), "application/vnd.apple.mpegurl".into())]),
            cache_control_by_extension: BTreeMap::from([("m3u8".into(), "no-cache".into())]),
        }
    }

    #[test_case("v/a.mp4" => Some("video/mp4".to_owned()))]
    #[test_case("A.JPG" => Some("image/jpeg".to_owned()); "upper case extension")]
    #[test_case("index.html" => Some("text/html".to_owned()))]
    #[test_case("live/x.m3u8" => Some("application/vnd.apple.mpegurl".to_owned()); "override")]
    #[test_case("blob.zzqx" => Some(DEFAULT_CONTENT_TYPE.to_owned()); "unknown extension")]
    #[test_case("Makefile" => Some(DEFAULT_CONTENT_TYPE.to_owned()); "no extension")]
    #[test_case(".bashrc" => Some(DEFAULT_CONTENT_TYPE.to_owned()); "dot file")]
    #[test_case("dir/" => None; "directory marker")]
    fn content_type_of(key: &str) -> Option<String> {
        policy().content_type(key)
    }

    #[test]
    fn cache_control_per_extension_then_per_tenant() {
        let p = policy();
        assert_eq!(p.cache_control("x.m3u8").as_deref(), Some("no-cache"));
        assert_eq!(p.cache_control("x.ts").as_deref(), Some("public, max-age=3600"));
        assert_eq!(p.cache_control("d/"), None);
        assert_eq!(HeaderPolicy::default().cache_control("x.ts"), None);
    }

    #[test]
    fn options_that_name_a_header_win() {
        let opts = PutOptions::default().with_headers(Some("text/plain".into()), None);
        let filled = policy().fill("a.mp4", &opts);
        assert_eq!(filled.content_type.as_deref(), Some("text/plain"));
        assert_eq!(filled.cache_control.as_deref(), Some("public, max-age=3600"));
    }

    #[test]
    fn renames_rewrite_headers_only_when_the_name_maps_to_others() {
        let p = policy();
        assert_eq!(
            p.on_rename("a.mp4", "b/c.mp4"),
            None,
            "same extension: the copy keeps its own"
        );
        let o = p.on_rename(".a.mp4.XyZ12", "a.mp4").unwrap();
        assert_eq!(o.content_type.as_deref(), Some("video/mp4"));
        assert_eq!(o.mtime, None, "only headers are replaced");
    }
}
