//! Object storage behind one trait.
//!
//! [`Backend`] speaks object semantics only (keys, ranges, multipart uploads); it knows
//! nothing of inodes or tenants. Implementations: [`s3::S3Backend`] (aws-sdk-s3),
//! [`local::LocalBackend`] (a directory used as a bucket), [`dal::DalBackend`] (WebDAV,
//! Azure Blob and GCS through OpenDAL), `memory::InMemoryBackend`
//! (tests, with op counters). Wrappers: [`prefix::PrefixBackend`] confines a tenant to its
//! key prefix; `fault::FaultBackend` injects failures in tests. The two test doubles exist
//! only with the `test-support` feature (on for this crate's tests, off in the release build).
//!
//! Keys are plain `/`-separated strings. A backend never interprets `..` or `.`: those are
//! ordinary characters in object keys, and the layers above refuse to produce them.

pub mod capabilities;
pub mod dal;
pub mod error;
#[cfg(any(test, feature = "test-support"))]
pub mod fault;
pub mod headers;
pub mod layer;

pub mod local;
#[cfg(any(test, feature = "test-support"))]
pub mod masked;
#[cfg(any(test, feature = "test-support"))]
pub mod memory;
pub mod metered;
pub(crate) mod mtime;
pub(crate) mod paging;
pub mod posix;
pub mod prefix;
pub mod retry;
pub mod s3;
pub(crate) mod swap;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

pub use capabilities::{Capabilities, MultipartLimits};
pub use error::{BackendError, BackendErrorKind, BackendResult};
pub use layer::Layer;
pub use posix::PosixAttrs;

/// An object's entity tag, as the service returned it (quotes included for S3).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ETag(Arc<str>);

impl ETag {
    /// Wrap a raw ETag string.
    pub fn new(s: impl Into<Arc<str>>) -> Self {
        Self(s.into())
    }

    /// The raw string, suitable for an `If-Match` header.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ETag({})", self.0)
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Metadata of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectMeta {
    /// Full key within the backend (for a [`prefix::PrefixBackend`], relative to its prefix).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last-Modified, when the service reports it.
    pub last_modified: Option<SystemTime>,
    /// ETag, when the service reports it (some servers omit it in listings).
    pub etag: Option<ETag>,
    /// Modification time stored with the object (S3 user metadata `mtime`, as rclone and
    /// s3fs write it), when known. `None` in S3 listings, which carry no user metadata:
    /// only `head` reports it there.
    pub mtime: Option<SystemTime>,
    /// Mode, owner and group stored with the object (see [`posix`]); like `mtime`, only
    /// `head` reports them on S3.
    pub posix: PosixAttrs,
    /// The stored Content-Type, where the backend keeps one (S3 `head` only).
    pub content_type: Option<String>,
}

impl ObjectMeta {
    /// Build metadata; the struct is `#[non_exhaustive]` so outside code uses this.
    pub fn new(key: impl Into<String>, size: u64, last_modified: Option<SystemTime>, etag: Option<ETag>) -> Self {
        Self {
            key: key.into(),
            size,
            last_modified,
            etag,
            mtime: None,
            posix: PosixAttrs::default(),
            content_type: None,
        }
    }

    /// The same metadata with a stored Content-Type.
    pub fn with_content_type(mut self, content_type: Option<String>) -> Self {
        self.content_type = content_type;
        self
    }

    /// The same metadata with a stored modification time.
    pub fn with_mtime(mut self, mtime: Option<SystemTime>) -> Self {
        self.mtime = mtime;
        self
    }

    /// The same metadata with stored POSIX attributes.
    pub fn with_posix(mut self, posix: PosixAttrs) -> Self {
        self.posix = posix;
        self
    }
}

/// Options of [`Backend::put_opts`] and [`Backend::create_multipart_opts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutOptions {
    /// Modification time to store with the object; `None` stores none (readers then fall
    /// back to Last-Modified).
    pub mtime: Option<SystemTime>,
    /// Mode, owner and group to store with the object (unset fields: none stored).
    pub posix: PosixAttrs,
    /// Fail with [`BackendErrorKind::PreconditionFailed`] if the key exists
    /// (`If-None-Match: *`, on PutObject and on the completion of a multipart upload
    /// started with it). Backends that cannot tell atomically (local) ignore it.
    pub create_only: bool,
    /// Content-Type to store; `None` leaves it to the service (new objects) or keeps the
    /// object's own (`update_metadata`). Backends without headers (local) ignore it.
    pub content_type: Option<String>,
    /// Cache-Control to store; `None` as for `content_type`.
    pub cache_control: Option<String>,
    /// The MD5 of the body, when the caller already knows it (a migration from a store whose
    /// ETag is the MD5): a backend that sends a body checksum sends this as Content-MD5
    /// instead of hashing the body again, and the service refuses a body that differs
    /// ([`BackendErrorKind::Corrupted`]). Used by `put_opts` only; others ignore it.
    pub content_md5: Option<[u8; 16]>,
}

impl PutOptions {
    /// Store `mtime` with the object (or none).
    pub fn with_mtime(mut self, mtime: Option<SystemTime>) -> Self {
        self.mtime = mtime;
        self
    }

    /// Store `posix` with the object.
    pub fn with_posix(mut self, posix: PosixAttrs) -> Self {
        self.posix = posix;
        self
    }

    /// Store these HTTP headers with the object (see [`PutOptions::content_type`]).
    pub fn with_headers(mut self, content_type: Option<String>, cache_control: Option<String>) -> Self {
        self.content_type = content_type;
        self.cache_control = cache_control;
        self
    }

    /// Create the object only if the key is free (see [`PutOptions::create_only`]).
    pub fn with_create_only(mut self, create_only: bool) -> Self {
        self.create_only = create_only;
        self
    }

    /// The body's known MD5 (see [`PutOptions::content_md5`]).
    pub fn with_content_md5(mut self, md5: Option<[u8; 16]>) -> Self {
        self.content_md5 = md5;
        self
    }
}

/// A half-open byte range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl ByteRange {
    /// `[start, end)`; an empty range when `end <= start`.
    pub fn new(start: u64, end: u64) -> Self {
        Self {
            start,
            end: end.max(start),
        }
    }

    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Arguments of [`Backend::list`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ListParams {
    /// Only keys starting with this string.
    pub prefix: String,
    /// Group keys by the next `/` after `prefix` into common prefixes.
    pub delimited: bool,
    /// Continuation token from the previous page.
    pub continuation: Option<String>,
    /// Page size hint (services cap it at 1000).
    pub max_keys: Option<u32>,
}

impl ListParams {
    /// List under `prefix`, grouping by `/` when `delimited`.
    pub fn new(prefix: impl Into<String>, delimited: bool) -> Self {
        Self {
            prefix: prefix.into(),
            delimited,
            continuation: None,
            max_keys: None,
        }
    }

    /// Continue from a previous page's token.
    pub fn with_continuation(mut self, token: Option<String>) -> Self {
        self.continuation = token;
        self
    }

    /// Ask for at most `n` entries per page.
    pub fn with_max_keys(mut self, n: u32) -> Self {
        self.max_keys = Some(n);
        self
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ListPage {
    /// Objects on this page, in key order.
    pub objects: Vec<ObjectMeta>,
    /// Common prefixes (each ends with `/`), when the listing was delimited.
    pub common_prefixes: Vec<String>,
    /// Token for the next page; `None` when this is the last page.
    pub next: Option<String>,
}

impl ListPage {
    /// Build a page; the struct is `#[non_exhaustive]` so outside code uses this.
    pub fn new(objects: Vec<ObjectMeta>, common_prefixes: Vec<String>, next: Option<String>) -> Self {
        Self {
            objects,
            common_prefixes,
            next,
        }
    }
}

/// Result of a PUT, copy or multipart completion.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutResult {
    /// ETag of the new object, when reported.
    pub etag: Option<ETag>,
}

impl PutResult {
    /// Build a result.
    pub fn new(etag: Option<ETag>) -> Self {
        Self { etag }
    }
}

/// The id of an in-progress multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(pub String);

/// A part that has been uploaded, as needed to complete the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    /// 1-based part number.
    pub part_number: u32,
    /// ETag the service returned for the part.
    pub etag: ETag,
}

/// An in-progress multipart upload found by [`Backend::list_multipart_uploads`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MultipartUploadInfo {
    /// Key the upload will create.
    pub key: String,
    /// Upload id.
    pub upload_id: UploadId,
    /// When the upload was initiated, if known.
    pub initiated: Option<SystemTime>,
}

impl MultipartUploadInfo {
    /// Build an entry.
    pub fn new(key: impl Into<String>, upload_id: UploadId, initiated: Option<SystemTime>) -> Self {
        Self {
            key: key.into(),
            upload_id,
            initiated,
        }
    }
}

/// Minimum size of every part but the last, fixed by S3.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Maximum size of one part, fixed by S3.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Maximum number of parts in one upload, fixed by S3.
pub const MAX_PARTS: u32 = 10_000;

/// A GET body arriving in pieces, in order (see [`Backend::get_range_stream`]).
pub type BodyStream = futures::stream::BoxStream<'static, BackendResult<Bytes>>;

/// A body that is already all here, as one piece.
pub fn one_piece(data: Bytes) -> BodyStream {
    Box::pin(futures::stream::once(async move { Ok(data) }))
}

/// Object storage, as every tenant sees it.
///
/// Object-safe so tenants can mix backends behind `Arc<dyn Backend>`. All methods are
/// cancel-safe in the sense that dropping a future leaves no local state behind (an
/// abandoned multipart upload may remain on the service until aborted).
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// A short description for logs and `check` output (`s3://bucket/prefix`), never secrets.
    fn describe(&self) -> String;

    /// What this store can do. Required (no default) so a wrapper cannot hide its inner
    /// backend's limits by forgetting to forward them.
    fn capabilities(&self) -> Capabilities;

    /// Metadata of `key`; [`BackendErrorKind::NotFound`] if absent.
    async fn head(&self, key: &str) -> BackendResult<ObjectMeta>;

    /// Bytes `range` of `key`. With `if_match`, fails with
    /// [`BackendErrorKind::PreconditionFailed`] if the object's ETag differs. A range reaching
    /// past the end is truncated to the object's size.
    async fn get_range(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Bytes>;

    /// [`Backend::get_range`] delivered as its body arrives, so a caller can use the first
    /// bytes of a large range while the rest is still on the wire. Failures before the body
    /// starts are returned by the call; failures mid-body end the stream with an error item.
    /// The stream does not check its total length: callers compare it with what they asked for.
    ///
    /// The default fetches the whole range and yields it as one piece, which is right for
    /// backends whose reads are local and for wrappers that only observe calls.
    async fn get_range_stream(
        &self,
        key: &str,
        range: ByteRange,
        if_match: Option<&ETag>,
    ) -> BackendResult<BodyStream> {
        Ok(one_piece(self.get_range(key, range, if_match).await?))
    }

    /// One page of keys under `params.prefix`, in key order.
    async fn list(&self, params: &ListParams) -> BackendResult<ListPage>;

    /// Create or replace `key` with `data` in one request.
    async fn put(&self, key: &str, data: Bytes) -> BackendResult<PutResult>;

    /// Start a multipart upload for `key`.
    async fn create_multipart(&self, key: &str) -> BackendResult<UploadId>;

    /// Upload (or replace) part `part_number` (1-based) of an upload.
    async fn upload_part(
        &self,
        key: &str,
        upload: &UploadId,
        part_number: u32,
        data: Bytes,
    ) -> BackendResult<CompletedPart>;

    /// Fill part `part_number` with `range` of the existing object `src` (server-side copy).
    async fn upload_part_copy(
        &self,
        key: &str,
        upload: &UploadId,
        part_number: u32,
        src: &str,
        range: ByteRange,
    ) -> BackendResult<CompletedPart>;

    /// Finish an upload; `parts` in ascending part order. The object appears atomically.
    async fn complete_multipart(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[CompletedPart],
    ) -> BackendResult<PutResult>;

    /// Abandon an upload, freeing its parts. Aborting an unknown upload is not an error.
    async fn abort_multipart(&self, key: &str, upload: &UploadId) -> BackendResult<()>;

    /// In-progress multipart uploads whose key starts with `prefix`.
    async fn list_multipart_uploads(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>>;

    /// Server-side copy of a whole object of at most 5 GiB (larger objects: multipart copy).
    async fn copy(&self, src: &str, dst: &str) -> BackendResult<PutResult>;

    /// Delete `key`. Deleting an absent key is not an error.
    async fn delete(&self, key: &str) -> BackendResult<()>;

    // The three methods below were added for stored mtimes; they have no default body on
    // purpose, so a wrapper cannot silently drop the options by forgetting to forward them.

    /// [`Backend::put`] with options (stored mtime and POSIX attributes; with
    /// `create_only`, `If-None-Match: *` where the service honours it).
    async fn put_opts(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<PutResult>;

    /// Create or replace `key` with the `size` bytes `body` yields, sent as they arrive (the
    /// writer for stores without multipart uploads: OpenDAL's writers, a WebDAV PUT). A body
    /// that ends early or runs long fails with [`BackendErrorKind::InvalidRequest`] and
    /// publishes nothing.
    ///
    /// The default gathers the body and calls [`Backend::put_opts`], which is right where a
    /// whole object fits in memory (the in-memory and local backends, small objects); backends
    /// that can stream override it. A stream cannot be replayed, so callers that can reopen
    /// their source (a staged file) retry a failed call themselves.
    async fn put_stream(&self, key: &str, size: u64, body: BodyStream, opts: &PutOptions) -> BackendResult<PutResult> {
        use futures::TryStreamExt as _;
        let mut buf = bytes::BytesMut::with_capacity(usize::try_from(size).unwrap_or(0).min(64 << 20));
        let mut body = body;
        while let Some(piece) = body.try_next().await? {
            if buf.len() as u64 + piece.len() as u64 > size {
                return Err(BackendError::new(
                    BackendErrorKind::InvalidRequest,
                    "put_stream: body longer than its size",
                ));
            }
            buf.extend_from_slice(&piece);
        }
        if buf.len() as u64 != size {
            return Err(BackendError::new(
                BackendErrorKind::InvalidRequest,
                "put_stream: body shorter than its size",
            ));
        }
        self.put_opts(key, buf.freeze(), opts).await
    }

    /// [`Backend::create_multipart`] with options; they apply to the completed object.
    async fn create_multipart_opts(&self, key: &str, opts: &PutOptions) -> BackendResult<UploadId>;

    /// Store the mtime, the POSIX attributes and the headers set in `opts` with the existing
    /// object `key`, keeping its content and every field `opts` leaves unset (on S3, its
    /// Content-Type, Cache-Control and other user metadata unless `opts` replaces them). The result carries the object's ETag
    /// afterwards, which may differ from before. [`BackendErrorKind::NotFound`] if absent;
    /// [`BackendErrorKind::Unsupported`] where the backend cannot do it (S3 objects above
    /// 5 GiB, which would need a multipart copy; POSIX attributes on the local backend).
    async fn update_metadata(&self, key: &str, opts: &PutOptions) -> BackendResult<PutResult>;
}
