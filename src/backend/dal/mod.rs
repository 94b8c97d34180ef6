//! WebDAV, Azure Blob Storage, Google Cloud Storage and Google Drive through Apache OpenDAL.
//!
//! One crate gives a maintained client per store, with each store's HTTP errors classified in
//! one place and its abilities declared as an [`opendal::Capability`]; [`DalBackend`] puts the
//! [`Backend`] trait on an OpenDAL [`Operator`]. Split by concern: `build` (config →
//! operator), `error` (OpenDAL errors → [`BackendError`]), `caps` (OpenDAL capability →
//! [`Capabilities`]), `list` (S3-shaped pages from directory listers), `google` (Drive's
//! HTTP transport: access-token refresh on 401, endpoint override).
//!
//! Objects are written whole, by one `put` or a streamed `put_stream` through OpenDAL's
//! writer (Azure blocks, GCS resumable chunks; one PUT for WebDAV): these stores have no
//! multipart upload byosfs can address part by part, so the multipart methods answer
//! [`BackendErrorKind::Unsupported`] and [`Capabilities::multipart`] is `None`.

mod build;
mod caps;
mod error;
mod google;
mod list;

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use opendal::Operator;

pub use build::{DalConfig, DalSecrets};

use super::{
    Backend, BackendError, BackendErrorKind, BackendResult, BodyStream, ByteRange, Capabilities, CompletedPart, ETag,
    ListPage, ListParams, MultipartUploadInfo, ObjectMeta, PutOptions, PutResult, UploadId,
};
use error::classify;

/// Chunk OpenDAL's writer sends at once (Azure block, GCS resumable chunk): 8 MiB, the
/// default part size of byosfs's S3 uploads, so write memory is bounded the same way.
const WRITE_CHUNK: usize = 8 * 1024 * 1024;

/// The stores reached through OpenDAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DalService {
    /// A WebDAV server (Nextcloud, ownCloud, rclone, Apache mod_dav...).
    Webdav,
    /// Azure Blob Storage (block blobs).
    Azblob,
    /// Google Cloud Storage.
    Gcs,
    /// Google Drive (a folder tree of files whose names may repeat).
    Gdrive,
}

impl DalService {
    /// The config file's `type` value, also the backend type in `status` and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Webdav => "webdav",
            Self::Azblob => "azblob",
            Self::Gcs => "gcs",
            Self::Gdrive => "gdrive",
        }
    }

    /// An object's ETag changes exactly when its content does (Azure and GCS version
    /// every write; a WebDAV server derives its ETag as it likes, often from size and mtime;
    /// OpenDAL reports no ETag for Drive files).
    fn stable_etags(self) -> bool {
        matches!(self, Self::Azblob | Self::Gcs)
    }

    /// Folders exist by themselves, without marker objects (see `list`).
    fn implicit_dirs(self) -> bool {
        matches!(self, Self::Webdav | Self::Gdrive)
    }
}

/// A [`Backend`] over an OpenDAL operator.
pub struct DalBackend {
    op: Operator,
    service: DalService,
    description: String,
    caps: Capabilities,
}

// Hand-written: the operator's own Debug shows its service's settings.
impl std::fmt::Debug for DalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DalBackend")
            .field("store", &self.description)
            .finish_non_exhaustive()
    }
}

impl DalBackend {
    /// A backend for `config`. Makes no request: `byosfs check` probes the store.
    pub fn new(config: &DalConfig) -> BackendResult<Self> {
        // OpenDAL's process-wide HTTP transport (reqwest), installed once; without its
        // `auto-register-services` constructor nothing installs it before main.
        opendal::install_default();
        let op = build::operator(config)?;
        let caps = caps::capabilities(config.service, &op.info().capability());
        Ok(Self {
            op,
            service: config.service,
            description: config.describe(),
            caps,
        })
    }

    /// Which store this is.
    pub fn service(&self) -> DalService {
        self.service
    }

    fn unsupported(&self, what: &str) -> BackendError {
        BackendError::new(
            BackendErrorKind::Unsupported,
            format!("{what} is not available on {} backends", self.service.name()),
        )
    }

    /// OpenDAL's stat of `key`, with Google-native documents (Docs, Sheets...) reported as
    /// absent: they have no bytes to read (docs/backends.md, "Google Drive").
    async fn stat(&self, op: &str, key: &str) -> BackendResult<opendal::Metadata> {
        let m = self.op.stat(key).await.map_err(|e| classify(op, key, &e))?;
        if self.service == DalService::Gdrive && list::google_native(&m) {
            return Err(BackendError::new(
                BackendErrorKind::NotFound,
                format!("{op} {key}: a Google-native document (hidden)"),
            ));
        }
        Ok(m)
    }

    /// Refuse to write over a Google-native document: OpenDAL would send bytes to the
    /// document's id, replacing a Doc the mount does not even show.
    async fn refuse_native(&self, key: &str) -> BackendResult<()> {
        match self.op.stat(key).await {
            Ok(m) if list::google_native(&m) => Err(BackendError::new(
                BackendErrorKind::AccessDenied,
                format!("put {key}: a Google-native document has this name"),
            )),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(classify("put", key, &e)),
        }
    }

    /// Fail with `PreconditionFailed` when `key` exists (create-only on stores that cannot
    /// refuse atomically; see `put_opts`).
    async fn refuse_existing(&self, key: &str) -> BackendResult<()> {
        match self.head(key).await {
            Ok(_) => Err(BackendError::new(
                BackendErrorKind::PreconditionFailed,
                format!("put {key}: the key exists"),
            )),
            Err(e) if e.kind() == BackendErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn write(&self, key: &str, body: BodyStream, size: u64, opts: &PutOptions) -> BackendResult<PutResult> {
        if key.ends_with('/') {
            // A directory marker: OpenDAL writes it as a folder (WebDAV MKCOL) or an empty
            // `dir/` object (Azure, GCS).
            if size != 0 {
                return Err(BackendError::new(
                    BackendErrorKind::InvalidRequest,
                    format!("put {key}: a key ending in '/' is a directory marker and holds no bytes"),
                ));
            }
            self.op.create_dir(key).await.map_err(|e| classify("put", key, &e))?;
            return Ok(PutResult::new(None));
        }
        if opts.create_only && !self.caps.conditional_put {
            self.refuse_existing(key).await?;
        }
        if self.service == DalService::Gdrive {
            self.refuse_native(key).await?;
        }
        let cap = self.op.info().capability();
        let mut w = self.op.writer_with(key);
        if cap.write_can_multi {
            w = w.chunk(WRITE_CHUNK);
        }
        if opts.create_only && cap.write_with_if_not_exists {
            w = w.if_not_exists(true);
        }
        if let (Some(ct), true) = (&opts.content_type, cap.write_with_content_type) {
            w = w.content_type(ct);
        }
        if let (Some(cc), true) = (&opts.cache_control, cap.write_with_cache_control) {
            w = w.cache_control(cc);
        }
        let mut writer = w.await.map_err(|e| classify("put", key, &e))?;
        // A one-shot store (WebDAV: one PUT per object) takes exactly one `write`: a second
        // fails, so its body is gathered first (held in memory until sent; docs/backends.md).
        let one_shot = !cap.write_can_multi;
        let mut gathered: Vec<Bytes> = Vec::new();
        let mut sent = 0u64;
        let mut body = body;
        let fed: BackendResult<()> = async {
            while let Some(piece) = body.try_next().await? {
                sent += piece.len() as u64;
                if sent > size {
                    return Err(BackendError::new(
                        BackendErrorKind::InvalidRequest,
                        "put_stream: body longer than its size",
                    ));
                }
                if one_shot {
                    gathered.push(piece);
                } else {
                    writer.write(piece).await.map_err(|e| classify("put", key, &e))?;
                }
            }
            if sent != size {
                return Err(BackendError::new(
                    BackendErrorKind::InvalidRequest,
                    "put_stream: body shorter than its size",
                ));
            }
            if one_shot {
                let whole = opendal::Buffer::from(std::mem::take(&mut gathered));
                writer.write(whole).await.map_err(|e| classify("put", key, &e))?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = fed {
            // Nothing is published: the writer's staged blocks or session are dropped.
            let _ = writer.abort().await;
            return Err(e);
        }
        let m = writer.close().await.map_err(|e| classify("put", key, &e))?;
        Ok(PutResult::new(m.etag().map(ETag::new)))
    }
}

/// byosfs metadata from OpenDAL's.
fn meta(key: &str, m: &opendal::Metadata) -> ObjectMeta {
    let size = if m.is_dir() { 0 } else { m.content_length() };
    ObjectMeta::new(
        key,
        size,
        m.last_modified().map(SystemTime::from),
        m.etag().map(ETag::new),
    )
    .with_content_type(m.content_type().map(str::to_owned))
}

#[async_trait]
impl Backend for DalBackend {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        let m = self.stat("head", key).await?;
        Ok(meta(key, &m))
    }

    async fn get_range(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Bytes> {
        let body = self.get_range_stream(key, range, if_match).await?;
        let pieces: Vec<Bytes> = body.try_collect().await?;
        Ok(match pieces.len() {
            1 => pieces.into_iter().next().unwrap_or_default(),
            _ => pieces.concat().into(),
        })
    }

    async fn get_range_stream(
        &self,
        key: &str,
        range: ByteRange,
        if_match: Option<&ETag>,
    ) -> BackendResult<BodyStream> {
        let mut r = self.op.reader_with(key);
        if let Some(tag) = if_match.filter(|_| self.caps.conditional_get) {
            r = r.if_match(tag.as_str());
        }
        let reader = r.await.map_err(|e| classify("get", key, &e))?;
        // Ranges reaching past the end are cut to the object's size, as S3 answers them;
        // the size costs a stat, which OpenDAL's reader needs to bound the range anyway.
        let m = self.stat("get", key).await?;
        let size = m.content_length();
        if let (Some(want), Some(have)) = (if_match.filter(|_| self.caps.conditional_get), m.etag()) {
            if want.as_str() != have {
                return Err(BackendError::new(
                    BackendErrorKind::PreconditionFailed,
                    format!("get {key}: the object changed"),
                ));
            }
        }
        let (start, end) = (range.start.min(size), range.end.min(size));
        if start >= end {
            return Ok(super::one_piece(Bytes::new()));
        }
        let stream = reader
            .into_stream(start..end)
            .await
            .map_err(|e| classify("get", key, &e))?;
        let key = key.to_owned();
        Ok(stream
            .map(move |piece| piece.map(|b| b.to_bytes()).map_err(|e| classify("get", &key, &e)))
            .boxed())
    }

    async fn list(&self, params: &ListParams) -> BackendResult<ListPage> {
        list::list(&self.op, self.service, params).await
    }

    async fn put(&self, key: &str, data: Bytes) -> BackendResult<PutResult> {
        self.put_opts(key, data, &PutOptions::default()).await
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<PutResult> {
        let size = data.len() as u64;
        self.write(key, super::one_piece(data), size, opts).await
    }

    async fn put_stream(&self, key: &str, size: u64, body: BodyStream, opts: &PutOptions) -> BackendResult<PutResult> {
        self.write(key, body, size, opts).await
    }

    async fn create_multipart(&self, _key: &str) -> BackendResult<UploadId> {
        Err(self.unsupported("multipart upload"))
    }

    async fn create_multipart_opts(&self, _key: &str, _opts: &PutOptions) -> BackendResult<UploadId> {
        Err(self.unsupported("multipart upload"))
    }

    async fn upload_part(&self, _: &str, _: &UploadId, _: u32, _: Bytes) -> BackendResult<CompletedPart> {
        Err(self.unsupported("multipart upload"))
    }

    async fn upload_part_copy(
        &self,
        _: &str,
        _: &UploadId,
        _: u32,
        _: &str,
        _: ByteRange,
    ) -> BackendResult<CompletedPart> {
        Err(self.unsupported("multipart copy"))
    }

    async fn complete_multipart(&self, _: &str, _: &UploadId, _: &[CompletedPart]) -> BackendResult<PutResult> {
        Err(self.unsupported("multipart upload"))
    }

    async fn abort_multipart(&self, _key: &str, _upload: &UploadId) -> BackendResult<()> {
        // No upload can exist here, so there is nothing to abort (recovery may still ask).
        Ok(())
    }

    async fn list_multipart_uploads(&self, _prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        Ok(Vec::new())
    }

    async fn copy(&self, src: &str, dst: &str) -> BackendResult<PutResult> {
        if !self.caps.server_side_copy {
            return Err(self.unsupported("server-side copy"));
        }
        // OpenDAL's copy of an absent source may surface as another kind on some servers;
        // the head makes NotFound exact, as S3 reports it.
        self.stat("copy", src).await?;
        if self.service == DalService::Gdrive {
            self.refuse_native(dst).await?;
        }
        if src.ends_with('/') {
            // A directory marker holds no bytes, and OpenDAL copies files only: make the
            // target's marker (folder) instead.
            return self
                .write(dst, super::one_piece(Bytes::new()), 0, &PutOptions::default())
                .await;
        }
        self.op.copy(src, dst).await.map_err(|e| classify("copy", src, &e))?;
        let etag = self.op.stat(dst).await.ok().and_then(|m| m.etag().map(ETag::new));
        Ok(PutResult::new(etag))
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        if key.ends_with('/') && self.service.implicit_dirs() {
            // A WebDAV DELETE of a folder removes everything in it; a marker delete on S3
            // removes one object. Refuse when the folder still holds a file; empty subfolders
            // (left by a directory rename, which moves files) go with it.
            // Hidden entries count: trashing a Drive folder takes a Google Doc in it along.
            if list::holds_files(&self.op, key).await? {
                return Err(BackendError::new(
                    BackendErrorKind::InvalidRequest,
                    format!("delete {key}: the folder is not empty"),
                ));
            }
        }
        match self.op.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(classify("delete", key, &e)),
        }
    }

    async fn update_metadata(&self, key: &str, _opts: &PutOptions) -> BackendResult<PutResult> {
        self.head(key).await?;
        Err(self.unsupported("stored metadata"))
    }
}
