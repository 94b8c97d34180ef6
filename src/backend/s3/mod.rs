//! S3-compatible object storage through `aws-sdk-s3` (AWS, R2, B2, MinIO, s3s, ...).
//!
//! One [`aws_sdk_s3::Client`] per distinct connection setting, shared through
//! [`S3ClientPool`] so every tenant on the same endpoint and credentials reuses one
//! connection pool. Range GETs go out through the plain client of [`get`] where it behaves
//! as the SDK would. An S3 answer (status and error code) becomes a [`BackendErrorKind`] in
//! one function, [`kind_from_response`], for both clients; transport failures are
//! classified per client ([`classify`] for SDK errors, `get` for hyper's). Nothing above
//! this module looks at HTTP status codes.
//!
//! Every attempt is bounded by the request timeout, including the reading of a GET body
//! (the SDK's own attempt timeout ends when the headers arrive). The mount builds clients
//! with `max_attempts = 1` and retries in one place, [`super::retry::RetryBackend`]; with
//! more attempts configured here the SDK retries its requests (standard mode) and
//! [`S3Backend::get_range`] re-issues, at once, a GET that failed with a retryable error,
//! for standalone use.
//!
//! A stored mtime is the user metadata `x-amz-meta-mtime` (see [`super::mtime`]), mode, owner
//! and group `x-amz-meta-mode`/`-uid`/`-gid` (see [`super::posix`]), written by
//! `put_opts`/`create_multipart_opts` and by `update_metadata`, which copies the object onto
//! itself with `MetadataDirective=REPLACE` (keeping Content-Type and other metadata).
//!
//! `create_only` sends `If-None-Match: *` on PutObject and, for uploads started with it, on
//! CompleteMultipartUpload (the ids of such uploads are remembered here until completed or
//! aborted).
//!
//! Layout: this file holds the [`Backend`] operations; `client.rs` the settings and the
//! client pool, `get.rs` the plain GET client, `body.rs` GET bodies, `error.rs` the
//! classification of answers and transport failures.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart as SdkCompletedPart, EncodingType, MetadataDirective};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};

mod body;
mod checksum;
mod client;
mod error;
mod get;
mod presign;

pub use self::checksum::UploadChecksum;
pub use self::client::{S3BackendConfig, S3ClientPool, S3Credentials};
pub use self::presign::Presigner;

use self::body::{to_usize, BodyReader, GetBody, OpenedGet};
use self::checksum::{compare_part, Echo, PartAnswer, PartSizes};
pub use self::error::classify;
use self::error::{chain_mentions_tls, is_invalid_range, kind_from_response};
use super::posix;
use super::{
    Backend, BackendError, BackendErrorKind, BackendResult, BodyStream, ByteRange, CompletedPart, ETag, ListPage,
    ListParams, MultipartUploadInfo, ObjectMeta, PutOptions, PutResult, UploadId, MAX_PART_SIZE,
};

/// Send a PutObject or UploadPart request with its body hashed into the signature or, when
/// the backend does not sign payloads, as `UNSIGNED-PAYLOAD`. A macro because the SDK offers
/// `disable_payload_signing` on each operation's own customizer type only.
macro_rules! send_body {
    ($backend:expr, $req:expr) => {
        if $backend.sign_payload {
            $req.send().await
        } else {
            $req.customize().disable_payload_signing().send().await
        }
    };
}

/// One bucket on an S3-compatible service.
#[derive(Clone)]
pub struct S3Backend {
    client: Client,
    /// Sends GETs when the settings allow (see [`get`]); `None`: the SDK sends them.
    plain_get: Option<get::PlainGet>,
    bucket: String,
    endpoint: Option<String>,
    request_timeout: Duration,
    body_attempts: u32,
    sign_payload: bool,
    /// Multipart uploads started with `create_only`: their completion is conditional.
    create_only_uploads: Arc<Mutex<HashSet<String>>>,
    /// The checksum every upload body carries (see [`checksum`]).
    checksum: UploadChecksum,
    /// Bytes sent per part, to check completed sizes (only while `checksum` is on).
    part_sizes: Arc<PartSizes>,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A key or prefix as listed. Listings ask for `encoding-type=url` because XML 1.0 cannot
/// carry most control characters: without it one object named `a\x01b` makes the whole
/// listing unparseable (the directory becomes unreadable), and XML end-of-line handling
/// turns a listed `\r` into `\n` (the name then points at another key). Services that do not
/// support the encoding do not echo `EncodingType`, and their keys are taken verbatim.
/// Decoding follows S3 (form encoding: `+` is a space, `%2B` a plus); a key that does not
/// decode to UTF-8 is dropped rather than shown under a different name.
fn listed_key(raw: &str, url: bool) -> Option<String> {
    if !url {
        return Some(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn to_system_time(t: Option<&DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

/// The stored mtime and POSIX attributes in `x-amz-meta-*` user metadata.
fn stored_of(metadata: Option<&HashMap<String, String>>) -> (Option<SystemTime>, posix::PosixAttrs) {
    metadata.map(posix::from_metadata).unwrap_or_default()
}

/// User metadata for a new object carrying `opts` (`None` when there is nothing to store).
fn metadata_of(opts: &PutOptions) -> Option<HashMap<String, String>> {
    let mut m = HashMap::new();
    posix::merge_into(&mut m, opts.mtime, opts.posix);
    (!m.is_empty()).then_some(m)
}

/// `If-None-Match: *` when `create_only`.
fn none_match(create_only: bool) -> Option<String> {
    create_only.then(|| "*".to_owned())
}

fn to_size(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

fn missing(op: &str, what: &str) -> BackendError {
    BackendError::new(BackendErrorKind::Other, format!("{op}: response lacks {what}"))
}

/// Percent-encode a key for `x-amz-copy-source` (keeps `/` and RFC 3986 unreserved bytes).
fn encode_copy_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `Range`-style value for the inclusive byte interval of a non-empty `range`.
fn range_header(range: ByteRange) -> String {
    format!("bytes={}-{}", range.start, range.end - 1)
}

impl S3Backend {
    /// The bucket this backend addresses.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The same backend, with every upload body carrying `checksum` for the service to
    /// verify and every multipart completion checked against the bytes sent (unless `None`).
    pub fn with_checksum(mut self, checksum: UploadChecksum) -> Self {
        self.checksum = checksum;
        self
    }

    /// A presigned GET URL of `key` (SigV4 query signing, valid for `expires`, at most 7
    /// days), with `Content-Disposition: attachment` in the response when `download` names
    /// the file. Signs locally; nothing is sent.
    pub async fn presign_get(&self, key: &str, expires: Duration, download: Option<&str>) -> BackendResult<String> {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires)
            .map_err(|e| BackendError::new(BackendErrorKind::InvalidRequest, format!("presign {key}: {e}")))?;
        let disposition = download.map(|name| {
            // RFC 6266: an ASCII fallback plus the UTF-8 name, percent-encoded.
            let ascii: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() && c != '"' && c != '\\' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!(
                "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
                encode_copy_key(name)
            )
        });
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_response_content_disposition(disposition)
            .presigned(config)
            .await
            .map_err(|e| classify("presign", key, e))?;
        Ok(req.uri().to_owned())
    }

    fn forget_create_only(&self, upload: &UploadId) {
        self.create_only_uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&upload.0);
    }

    fn copy_source(&self, src: &str) -> String {
        format!("{}/{}", self.bucket, encode_copy_key(src))
    }

    /// After a multipart completion: the object must hold the `expected` bytes sent. A
    /// mismatch means the service assembled something else; the object is then published
    /// already (S3 has no way back), so the error says so.
    async fn check_completed_size(&self, key: &str, expected: u64, etag: Option<&str>) -> BackendResult<()> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .set_if_match(etag.map(str::to_owned))
            .send()
            .await
            .map_err(|e| classify("check completed size", key, e));
        let size = match head {
            Ok(h) => to_size(h.content_length()),
            // Replaced by another writer in between: its size says nothing about ours.
            Err(e) if e.kind() == BackendErrorKind::PreconditionFailed => return Ok(()),
            Err(e) => return Err(e),
        };
        if size == expected {
            return Ok(());
        }
        Err(BackendError::new(
            BackendErrorKind::Corrupted,
            format!("complete multipart {key}: the service stored {size} bytes, {expected} were sent"),
        ))
    }

    /// Send a ranged GET, up to the response headers. `Ok(None)` = range not satisfiable.
    /// Through the plain client when this backend has one (see [`get`]), else the SDK.
    async fn open_get(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Option<OpenedGet>> {
        if let Some(plain) = &self.plain_get {
            return Ok(plain.open(key, range, if_match).await?.map(|o| OpenedGet {
                content_length: o.content_length,
                body: GetBody::Plain(o.body),
            }));
        }
        let res = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(range_header(range))
            .set_if_match(if_match.map(|e| e.as_str().to_owned()))
            .send()
            .await;
        match res {
            Ok(o) => Ok(Some(OpenedGet {
                content_length: o.content_length().and_then(|n| u64::try_from(n).ok()),
                body: GetBody::Sdk(o.body),
            })),
            Err(e) if is_invalid_range(&e) => Ok(None),
            Err(e) => Err(classify("get", key, e)),
        }
    }

    /// One GET attempt including the body read. `Ok(None)` = range not satisfiable.
    async fn get_once(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Option<Bytes>> {
        let Some(opened) = self.open_get(key, range, if_match).await? else {
            return Ok(None);
        };
        let mut body = BodyReader::new(opened, key, self.request_timeout, range.len())?;
        // One piece (a small range usually arrives in one) is returned as it is, uncopied.
        let mut first = None;
        let mut rest = BytesMut::new();
        while let Some(piece) = body.next_piece().await? {
            match &first {
                None => first = Some(piece),
                Some(head) => {
                    if rest.is_empty() {
                        rest.reserve(to_usize(range.len()));
                        rest.extend_from_slice(head);
                    }
                    rest.extend_from_slice(&piece);
                }
            }
        }
        Ok(Some(if rest.is_empty() {
            first.unwrap_or_default()
        } else {
            rest.freeze()
        }))
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn describe(&self) -> String {
        match &self.endpoint {
            Some(ep) => format!("s3://{} at {ep}", self.bucket),
            None => format!("s3://{}", self.bucket),
        }
    }
    fn capabilities(&self) -> crate::backend::Capabilities {
        crate::backend::Capabilities::S3
    }

    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify("head", key, e))?;
        let (mtime, posix) = stored_of(out.metadata());
        Ok(ObjectMeta::new(
            key,
            to_size(out.content_length()),
            to_system_time(out.last_modified()),
            out.e_tag().map(ETag::new),
        )
        .with_mtime(mtime)
        .with_posix(posix)
        .with_content_type(out.content_type().map(str::to_owned)))
    }

    async fn get_range(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Bytes> {
        if range.is_empty() {
            // S3 cannot express an empty range; still report a missing key or changed ETag.
            let meta = self.head(key).await?;
            if let (Some(want), Some(have)) = (if_match, meta.etag.as_ref()) {
                if want != have {
                    return Err(BackendError::new(
                        BackendErrorKind::PreconditionFailed,
                        format!("get {key}"),
                    ));
                }
            }
            return Ok(Bytes::new());
        }
        let mut attempt = 1;
        loop {
            match self.get_once(key, range, if_match).await {
                Ok(body) => return Ok(body.unwrap_or_default()),
                Err(e) if e.is_retryable() && attempt < self.body_attempts => {
                    tracing::debug!(key, attempt, error = %e, "retrying GET after body failure");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn get_range_stream(
        &self,
        key: &str,
        range: ByteRange,
        if_match: Option<&ETag>,
    ) -> BackendResult<BodyStream> {
        if range.is_empty() {
            return Ok(super::one_piece(self.get_range(key, range, if_match).await?));
        }
        let Some(opened) = self.open_get(key, range, if_match).await? else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        let body = BodyReader::new(opened, key, self.request_timeout, range.len())?;
        Ok(Box::pin(futures::stream::try_unfold(body, BodyReader::next)))
    }

    async fn list(&self, params: &ListParams) -> BackendResult<ListPage> {
        let max_keys = params.max_keys.map(|n| i32::try_from(n.min(1000)).unwrap_or(1000));
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&params.prefix)
            .set_delimiter(params.delimited.then(|| "/".to_owned()))
            .set_continuation_token(params.continuation.clone())
            .set_max_keys(max_keys)
            .encoding_type(EncodingType::Url)
            .send()
            .await
            .map_err(|e| classify("list", &params.prefix, e))?;
        let url = out.encoding_type() == Some(&EncodingType::Url);
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectMeta::new(
                    listed_key(o.key()?, url)?,
                    to_size(o.size()),
                    to_system_time(o.last_modified()),
                    o.e_tag().map(ETag::new),
                ))
            })
            .collect();
        let common_prefixes = out
            .common_prefixes()
            .iter()
            .filter_map(|p| listed_key(p.prefix()?, url))
            .collect();
        let next = if out.is_truncated() == Some(true) {
            out.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok(ListPage::new(objects, common_prefixes, next))
    }

    async fn put(&self, key: &str, data: Bytes) -> BackendResult<PutResult> {
        self.put_opts(key, data, &PutOptions::default()).await
    }

    async fn create_multipart(&self, key: &str) -> BackendResult<UploadId> {
        self.create_multipart_opts(key, &PutOptions::default()).await
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<PutResult> {
        let len = i64::try_from(data.len()).unwrap_or(i64::MAX);
        let sum = self.checksum.of_known(&data, opts.content_md5.as_ref());
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_metadata(metadata_of(opts))
            .set_content_type(opts.content_type.clone())
            .set_cache_control(opts.cache_control.clone())
            .set_if_none_match(none_match(opts.create_only))
            .set_content_md5(sum.md5)
            .set_checksum_crc32_c(sum.crc32c)
            .content_length(len)
            .body(ByteStream::from(data));
        let out = send_body!(self, req).map_err(|e| classify("put", key, e))?;
        Ok(PutResult::new(out.e_tag().map(ETag::new)))
    }

    async fn create_multipart_opts(&self, key: &str, opts: &PutOptions) -> BackendResult<UploadId> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_metadata(metadata_of(opts))
            .set_content_type(opts.content_type.clone())
            .set_cache_control(opts.cache_control.clone())
            .send()
            .await
            .map_err(|e| classify("create multipart", key, e))?;
        let id = out
            .upload_id()
            .map(|id| UploadId(id.to_owned()))
            .ok_or_else(|| missing("create multipart", "UploadId"))?;
        if opts.create_only {
            self.create_only_uploads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.0.clone());
        }
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload: &UploadId,
        part_number: u32,
        data: Bytes,
    ) -> BackendResult<CompletedPart> {
        let part = part_no(part_number)?;
        let len = i64::try_from(data.len()).unwrap_or(i64::MAX);
        let sum = self.checksum.of(&data);
        let sent = data.len() as u64;
        let req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .part_number(part)
            .set_content_md5(sum.md5.clone())
            .set_checksum_crc32_c(sum.crc32c.clone())
            .content_length(len)
            .body(ByteStream::from(data));
        let out = send_body!(self, req).map_err(|e| classify("upload part", key, e))?;
        let etag = out.e_tag().ok_or_else(|| missing("upload part", "ETag"))?;
        if self.checksum != UploadChecksum::None {
            // The service may not have verified the header: check what it answered (see
            // `checksum`).
            let answer = PartAnswer {
                etag: Some(etag),
                crc32c: out.checksum_crc32_c(),
                encrypted: out.server_side_encryption().is_some() || out.sse_customer_algorithm().is_some(),
            };
            let (crc, md5) = compare_part(&sum, &answer);
            let altered = |what: &str| {
                BackendError::new(
                    BackendErrorKind::Corrupted,
                    format!("upload part {key} #{part_number}: {what} of the bytes sent"),
                )
            };
            if crc == Echo::Differs {
                return Err(altered("the CRC32C the service answered is not that"));
            }
            if md5 == Echo::Differs && self.part_sizes.md5_etags_proven() {
                return Err(altered("its ETag is not the MD5"));
            }
            self.part_sizes.record(&upload.0, part_number, sent, md5);
        }
        Ok(CompletedPart {
            part_number,
            etag: ETag::new(etag),
        })
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload: &UploadId,
        part_number: u32,
        src: &str,
        range: ByteRange,
    ) -> BackendResult<CompletedPart> {
        if range.is_empty() {
            return Err(BackendError::new(
                BackendErrorKind::InvalidRequest,
                format!("upload part copy {key}: empty source range"),
            ));
        }
        let part = part_no(part_number)?;
        let out = self
            .client
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .part_number(part)
            .copy_source(self.copy_source(src))
            .copy_source_range(range_header(range))
            .send()
            .await
            .map_err(|e| classify("upload part copy", key, e))?;
        let etag = out
            .copy_part_result()
            .and_then(|r| r.e_tag())
            .ok_or_else(|| missing("upload part copy", "ETag"))?;
        if self.checksum != UploadChecksum::None {
            self.part_sizes
                .record(&upload.0, part_number, range.len(), Echo::Unknown);
        }
        Ok(CompletedPart {
            part_number,
            etag: ETag::new(etag),
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[CompletedPart],
    ) -> BackendResult<PutResult> {
        let mut sdk_parts = Vec::with_capacity(parts.len());
        for p in parts {
            sdk_parts.push(
                SdkCompletedPart::builder()
                    .part_number(part_no(p.part_number)?)
                    .e_tag(p.etag.as_str())
                    .build(),
            );
        }
        let create_only = self
            .create_only_uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&upload.0);
        let sent = match self.checksum {
            UploadChecksum::None => None,
            _ => self.part_sizes.take(&upload.0, parts.iter().map(|p| p.part_number)),
        };
        if let Some(part) = sent.and_then(|s| s.corrupted) {
            // Not completed: the caller aborts the upload, and nothing is published.
            return Err(BackendError::new(
                BackendErrorKind::Corrupted,
                format!("complete multipart {key}: part {part}: its ETag is not the MD5 of the bytes sent"),
            ));
        }
        let expected = sent.and_then(|s| s.total);
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .set_if_none_match(none_match(create_only))
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(sdk_parts)).build())
            .send()
            .await
            .map_err(|e| classify("complete multipart", key, e))?;
        self.forget_create_only(upload);
        if let Some(expected) = expected {
            self.check_completed_size(key, expected, out.e_tag()).await?;
        }
        Ok(PutResult::new(out.e_tag().map(ETag::new)))
    }

    async fn abort_multipart(&self, key: &str, upload: &UploadId) -> BackendResult<()> {
        let res = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .send()
            .await;
        self.forget_create_only(upload);
        self.part_sizes.forget(&upload.0);
        match res.map_err(|e| classify("abort multipart", key, e)) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), BackendErrorKind::NoSuchUpload | BackendErrorKind::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list_multipart_uploads(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        let mut v = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        // Bounded: 1000 pages of 1000 uploads is far beyond any sane bucket.
        for _ in 0..1000 {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .encoding_type(EncodingType::Url)
                .send()
                .await
                .map_err(|e| classify("list multipart uploads", prefix, e))?;
            let url = out.encoding_type() == Some(&EncodingType::Url);
            for u in out.uploads() {
                if let (Some(k), Some(id)) = (u.key().and_then(|k| listed_key(k, url)), u.upload_id()) {
                    v.push(MultipartUploadInfo::new(
                        k,
                        UploadId(id.to_owned()),
                        to_system_time(u.initiated()),
                    ));
                }
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            id_marker = out.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        Ok(v)
    }

    async fn copy(&self, src: &str, dst: &str) -> BackendResult<PutResult> {
        let out = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(dst)
            .copy_source(self.copy_source(src))
            .send()
            .await
            .map_err(|e| classify("copy", src, e))?;
        Ok(PutResult::new(
            out.copy_object_result().and_then(|r| r.e_tag()).map(ETag::new),
        ))
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        let res = self.client.delete_object().bucket(&self.bucket).key(key).send().await;
        match res.map_err(|e| classify("delete", key, e)) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == BackendErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn update_metadata(&self, key: &str, opts: &PutOptions) -> BackendResult<PutResult> {
        // REPLACE drops every header not sent again, so read them first.
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify("update metadata", key, e))?;
        if to_size(head.content_length()) > MAX_PART_SIZE {
            return Err(BackendError::new(
                BackendErrorKind::Unsupported,
                format!("update metadata {key}: objects above 5 GiB need a multipart copy"),
            ));
        }
        let mut metadata = head.metadata().cloned().unwrap_or_default();
        posix::merge_into(&mut metadata, opts.mtime, opts.posix);
        let out = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(key)
            .copy_source(self.copy_source(key))
            // Replaced in between: fail rather than stamp our mtime on someone else's data.
            .set_copy_source_if_match(head.e_tag().map(str::to_owned))
            .metadata_directive(MetadataDirective::Replace)
            .set_metadata(Some(metadata))
            .set_content_type(
                opts.content_type
                    .clone()
                    .or_else(|| head.content_type().map(str::to_owned)),
            )
            .set_content_encoding(head.content_encoding().map(str::to_owned))
            .set_content_disposition(head.content_disposition().map(str::to_owned))
            .set_content_language(head.content_language().map(str::to_owned))
            .set_cache_control(
                opts.cache_control
                    .clone()
                    .or_else(|| head.cache_control().map(str::to_owned)),
            )
            .send()
            .await
            .map_err(|e| classify("update metadata", key, e))?;
        Ok(PutResult::new(
            out.copy_object_result().and_then(|r| r.e_tag()).map(ETag::new),
        ))
    }
}

fn part_no(n: u32) -> BackendResult<i32> {
    match i32::try_from(n) {
        Ok(p) if (1..=10_000).contains(&p) => Ok(p),
        _ => Err(BackendError::new(
            BackendErrorKind::InvalidRequest,
            format!("part number {n} outside 1..=10000"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use test_case::test_case;

    #[test]
    fn listed_keys_are_url_decoded_only_when_the_service_encoded_them() {
        assert_eq!(
            listed_key("a%01b/c%0D%0A+d%2Be%25", true).as_deref(),
            Some("a\u{1}b/c\r\n d+e%")
        );
        assert_eq!(listed_key("caf%C3%A9", true).as_deref(), Some("caf\u{e9}"));
        // Verbatim when the response did not say it was encoded.
        assert_eq!(listed_key("a+b%20", false).as_deref(), Some("a+b%20"));
        // Broken escapes and non-UTF-8 are dropped, never shown as another name.
        for bad in ["a%", "a%2", "a%zz", "%FF"] {
            assert_eq!(listed_key(bad, true), None, "{bad}");
        }
    }

    #[test_case(Some(404), None => BackendErrorKind::NotFound; "head 404 without body")]
    #[test_case(Some(403), None => BackendErrorKind::AccessDenied; "head 403 without body")]
    #[test_case(Some(404), Some("NoSuchBucket") => BackendErrorKind::BucketNotFound)]
    #[test_case(Some(404), Some("NoSuchKey") => BackendErrorKind::NotFound)]
    #[test_case(Some(404), Some("NoSuchUpload") => BackendErrorKind::NoSuchUpload)]
    #[test_case(Some(412), Some("PreconditionFailed") => BackendErrorKind::PreconditionFailed)]
    #[test_case(Some(412), None => BackendErrorKind::PreconditionFailed; "412 without body")]
    #[test_case(Some(403), Some("SignatureDoesNotMatch") => BackendErrorKind::SignatureMismatch)]
    #[test_case(Some(403), Some("InvalidAccessKeyId") => BackendErrorKind::InvalidAccessKey)]
    #[test_case(Some(403), Some("AccessDenied") => BackendErrorKind::AccessDenied)]
    #[test_case(Some(400), Some("ExpiredToken") => BackendErrorKind::ExpiredCredentials)]
    #[test_case(Some(400), Some("TokenRefreshRequired") => BackendErrorKind::ExpiredCredentials)]
    #[test_case(Some(503), Some("SlowDown") => BackendErrorKind::Throttled)]
    #[test_case(Some(503), None => BackendErrorKind::Throttled; "503 without body")]
    #[test_case(Some(429), None => BackendErrorKind::Throttled)]
    #[test_case(Some(500), Some("InternalError") => BackendErrorKind::Transient)]
    #[test_case(Some(502), None => BackendErrorKind::Transient)]
    #[test_case(Some(400), Some("InvalidArgument") => BackendErrorKind::InvalidRequest)]
    #[test_case(Some(501), Some("NotImplemented") => BackendErrorKind::Unsupported)]
    #[test_case(Some(400), Some("BadDigest") => BackendErrorKind::Corrupted)]
    #[test_case(Some(400), Some("XAmzContentChecksumMismatch") => BackendErrorKind::Corrupted)]
    fn response_kinds(status: Option<u16>, code: Option<&str>) -> BackendErrorKind {
        kind_from_response(status, code)
    }

    #[test]
    fn mtime_metadata_is_found_in_any_case_and_ignored_when_foreign() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let m = HashMap::from([("Mtime".to_owned(), "1700000000.123456789".to_owned())]);
        assert_eq!(stored_of(Some(&m)).0, Some(t));
        let m = HashMap::from([("mtime".to_owned(), "yesterday".to_owned())]);
        assert_eq!(stored_of(Some(&m)).0, None);
        assert_eq!(stored_of(None).0, None);
        let opts = PutOptions::default().with_mtime(Some(t));
        assert_eq!(
            metadata_of(&opts).unwrap().get("mtime").map(String::as_str),
            Some("1700000000.123456789")
        );
        assert!(metadata_of(&PutOptions::default()).is_none());
    }

    #[test]
    fn copy_source_is_percent_encoded() {
        assert_eq!(encode_copy_key("a b/ü+?.txt"), "a%20b/%C3%BC%2B%3F.txt");
    }

    #[test]
    fn part_numbers_are_range_checked() {
        assert!(part_no(0).is_err());
        assert!(part_no(10_001).is_err());
        assert_eq!(part_no(7).unwrap(), 7);
    }

    /// Accepts `n` requests on loopback and answers each with an empty 200 carrying an ETag,
    /// returning what was sent. A wire capture, not a server: it checks what goes out, while
    /// the conformance suite checks the same calls against real servers.
    async fn capture(n: usize) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = Vec::new();
            while seen.len() < n {
                let mut chunk = [0u8; 4096];
                let got = conn.read(&mut chunk).await.unwrap();
                assert!(got > 0, "connection closed early");
                buf.extend_from_slice(&chunk[..got]);
                let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                let Some(head_end) = text.find("\r\n\r\n") else {
                    continue;
                };
                let len: usize = text[..head_end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() < head_end + 4 + len {
                    continue;
                }
                // As sent: the request line keeps its case (percent-encoding is upper case).
                seen.push(String::from_utf8_lossy(&buf[..head_end]).into_owned());
                buf.drain(..head_end + 4 + len);
                conn.write_all(b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n")
                    .await
                    .unwrap();
            }
            seen
        });
        (url, task)
    }

    #[test_case(true ; "signed bodies carry their sha256")]
    #[test_case(false ; "unsigned bodies say so")]
    #[tokio::test]
    async fn payload_signing_reaches_the_wire(sign: bool) {
        let (url, task) = capture(2).await;
        let cfg = S3BackendConfig {
            endpoint: Some(url),
            region: "us-east-1".to_owned(),
            force_path_style: true,
            bucket: "b".to_owned(),
            credentials: S3Credentials::Static {
                access_key_id: "AKID".to_owned(),
                secret_access_key: Secret::new("secret"),
                session_token: None,
            },
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_attempts: 1,
            sign_payload: sign,
        };
        let backend = S3ClientPool::new().backend(&cfg).await.unwrap();
        backend.put("k", Bytes::from_static(b"hello")).await.unwrap();
        let upload = UploadId("u".to_owned());
        backend
            .upload_part("k", &upload, 1, Bytes::from_static(b"part"))
            .await
            .unwrap();
        let heads = task.await.unwrap();
        use sha2::Digest as _;
        for (head, body) in heads.iter().zip([&b"hello"[..], &b"part"[..]]) {
            let want = if sign {
                format!("{:x}", sha2::Sha256::digest(body))
            } else {
                "unsigned-payload".to_owned()
            };
            let head = head.to_ascii_lowercase();
            assert!(head.contains(&format!("x-amz-content-sha256: {want}")), "{head}");
        }
    }

    fn capture_cfg(url: String) -> S3BackendConfig {
        S3BackendConfig {
            endpoint: Some(url),
            region: "us-east-1".to_owned(),
            force_path_style: true,
            bucket: "b".to_owned(),
            credentials: S3Credentials::Static {
                access_key_id: "AKID".to_owned(),
                secret_access_key: Secret::new("secret"),
                session_token: None,
            },
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            max_attempts: 1,
            sign_payload: false,
        }
    }

    /// The plain GET client must put exactly the SDK's path on the wire (S3 signs the path as
    /// sent) and sign the same scope and headers; real servers then check the signatures in
    /// `tests/backend_conformance.rs` (`odd_key_names`).
    #[tokio::test]
    async fn plain_gets_send_the_sdk_path_and_signature_scope() {
        if get::proxy_in_env() {
            eprintln!("SKIPPED: a proxy in the environment sends reads through the SDK");
            return;
        }
        let etag = ETag::new("\"e\"");
        for key in [
            "a b/c+d=e&f",
            "caf\u{e9}/x!y'z(1)*",
            "%2e%2e/..%2F",
            "t\tab\u{1}",
            "q?x#y[z]",
        ] {
            let mut heads = Vec::new();
            for plain in [false, true] {
                let (url, task) = capture(1).await;
                let mut backend = S3ClientPool::new().backend(&capture_cfg(url)).await.unwrap();
                assert!(backend.plain_get.is_some(), "static credentials use the plain client");
                if !plain {
                    backend.plain_get = None;
                }
                // The capture server answers with an empty body: the result is not the point.
                let _ = backend.get_range(key, ByteRange::new(5, 15), Some(&etag)).await;
                heads.push(task.await.unwrap().remove(0));
            }
            // The SDK adds `?x-id=GetObject`, an operation hint S3 does not need.
            let path = |h: &str| {
                let line = h.lines().next().unwrap_or_default();
                line.split(' ')
                    .nth(1)
                    .unwrap_or_default()
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            };
            assert_eq!(path(&heads[0]), path(&heads[1]), "{key:?}");
            assert!(path(&heads[1]).starts_with("/b/"), "{}", heads[1]);
            for head in &heads {
                let head = head.to_ascii_lowercase();
                assert!(head.contains("range: bytes=5-14"), "{head}");
                assert!(head.contains("if-match: \"e\""), "{head}");
                assert!(
                    head.contains("authorization: aws4-hmac-sha256 credential=akid/"),
                    "{head}"
                );
                assert!(head.contains("/us-east-1/s3/aws4_request"), "{head}");
                for signed in ["host", "if-match", "range", "x-amz-content-sha256", "x-amz-date"] {
                    let list = head.split("signedheaders=").nth(1).unwrap_or_default();
                    let list = list.split(',').next().unwrap_or_default();
                    assert!(list.split(';').any(|h| h == signed), "{signed} not signed: {head}");
                }
            }
        }
    }

    /// A server whose clock is an hour ahead refuses the first GET as skewed; the next one is
    /// signed with the server's time.
    #[tokio::test]
    async fn reads_sign_with_the_servers_clock_after_a_skew_error() {
        use aws_smithy_types::date_time::Format;
        if get::proxy_in_env() {
            eprintln!("SKIPPED: a proxy in the environment sends reads through the SDK");
            return;
        }
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let ahead = SystemTime::now() + Duration::from_secs(3600);
        let date = DateTime::from(ahead).fmt(Format::HttpDate).unwrap();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let (mut heads, mut buf) = (Vec::new(), Vec::new());
            while heads.len() < 2 {
                let mut chunk = [0u8; 4096];
                let got = conn.read(&mut chunk).await.unwrap();
                assert!(got > 0, "connection closed early");
                buf.extend_from_slice(&chunk[..got]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                heads.push(String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase());
                buf.drain(..end + 4);
                let reply = if heads.len() == 1 {
                    let body = "<Error><Code>RequestTimeTooSkewed</Code></Error>";
                    format!(
                        "HTTP/1.1 403 Forbidden\r\nDate: {date}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: 0\r\n\r\n".to_owned()
                };
                conn.write_all(reply.as_bytes()).await.unwrap();
            }
            heads
        });
        let backend = S3ClientPool::new().backend(&capture_cfg(url)).await.unwrap();
        let err = backend.get_range("k", ByteRange::new(0, 10), None).await.unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::Transient, "retryable: {err}");
        let _ = backend.get_range("k", ByteRange::new(0, 10), None).await;
        let heads = task.await.unwrap();
        // `x-amz-date: 20261204T103000Z` as seconds since the epoch.
        let signed_at = |head: &str| {
            let v = head
                .lines()
                .find_map(|l| l.strip_prefix("x-amz-date: "))
                .unwrap()
                .to_uppercase();
            let iso = format!(
                "{}-{}-{}T{}:{}:{}Z",
                &v[0..4],
                &v[4..6],
                &v[6..8],
                &v[9..11],
                &v[11..13],
                &v[13..15]
            );
            DateTime::from_str(&iso, Format::DateTime).unwrap().secs()
        };
        let secs = |t: SystemTime| DateTime::from(t).secs();
        assert!(
            (signed_at(&heads[0]) - secs(SystemTime::now())).abs() < 60,
            "{}",
            heads[0]
        );
        assert!((signed_at(&heads[1]) - secs(ahead)).abs() < 60, "{}", heads[1]);
    }

    #[tokio::test]
    async fn default_chain_credentials_read_through_the_sdk() {
        let mut cfg = capture_cfg("http://127.0.0.1:9".to_owned());
        cfg.credentials = S3Credentials::DefaultChain;
        let backend = S3ClientPool::new().backend(&cfg).await.unwrap();
        assert!(backend.plain_get.is_none());
    }

    #[tokio::test]
    async fn pool_shares_clients_and_hides_secret() {
        let cfg = S3BackendConfig {
            endpoint: Some("http://127.0.0.1:9".to_owned()),
            region: "auto".to_owned(),
            force_path_style: true,
            bucket: "b1".to_owned(),
            credentials: S3Credentials::Static {
                access_key_id: "AKID".to_owned(),
                secret_access_key: Secret::new("super-secret-value"),
                session_token: None,
            },
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            max_attempts: 1,
            sign_payload: true,
        };
        let pool = S3ClientPool::new();
        let a = pool.backend(&cfg).await.unwrap();
        let mut cfg2 = cfg.clone();
        cfg2.bucket = "b2".to_owned();
        let b = pool.backend(&cfg2).await.unwrap();
        assert_eq!(pool.client_count().await, 1);
        assert_eq!(b.bucket(), "b2");
        assert_eq!(a.plain_get.is_some(), !get::proxy_in_env());
        let text = format!("{a:?} {cfg:?} {} {:?}", a.describe(), a.plain_get);
        assert!(!text.contains("super-secret-value"), "{text}");
        let mut bad = cfg.clone();
        bad.bucket = String::new();
        assert_eq!(
            pool.backend(&bad).await.unwrap_err().kind(),
            BackendErrorKind::InvalidRequest
        );
    }
}
