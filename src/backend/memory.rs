//! In-memory backend: a `BTreeMap` bucket with deterministic ETags and per-operation counters.
//!
//! Product code, not a mock: it implements the full [`Backend`] contract (pagination,
//! delimiters, multipart with replaceable parts, `If-Match`) and is what the filesystem,
//! read-path and upload-path tests run on. Counters let tests assert request counts.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{
    Backend, BackendError, BackendErrorKind, BackendResult, ByteRange, CompletedPart, ETag, ListPage, ListParams,
    MultipartUploadInfo, ObjectMeta, PosixAttrs, PutOptions, PutResult, UploadId, MIN_PART_SIZE,
};

#[derive(Debug, Clone)]
struct Object {
    data: Bytes,
    etag: ETag,
    modified: SystemTime,
    /// Stored mtime (user metadata on S3).
    mtime: Option<SystemTime>,
    /// Stored mode, owner and group (user metadata on S3).
    posix: PosixAttrs,
}

#[derive(Debug, Default)]
struct Upload {
    key: String,
    mtime: Option<SystemTime>,
    posix: PosixAttrs,
    /// Completion fails if the key exists by then (`If-None-Match: *`).
    create_only: bool,
    parts: BTreeMap<u32, (ETag, Bytes)>,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Object>,
    uploads: HashMap<String, Upload>,
    next_id: u64,
}

/// Operations counted by [`InMemoryBackend::count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Op {
    Head,
    Get,
    List,
    Put,
    CreateMultipart,
    UploadPart,
    UploadPartCopy,
    CompleteMultipart,
    AbortMultipart,
    ListMultipart,
    Copy,
    Delete,
    SetMtime,
}

const OPS: usize = 13;

/// A bucket held in memory.
#[derive(Debug, Default)]
pub struct InMemoryBackend {
    state: Mutex<State>,
    counters: [AtomicU64; OPS],
    get_bytes: AtomicU64,
    /// Artificial latency added to every GET, to make read-ahead observable in tests.
    get_delay: Mutex<Option<Duration>>,
}

impl InMemoryBackend {
    /// An empty bucket.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times `op` was called.
    pub fn count(&self, op: Op) -> u64 {
        self.counters[op as usize].load(Ordering::Relaxed)
    }

    /// Total bytes returned by GETs.
    pub fn bytes_read(&self) -> u64 {
        self.get_bytes.load(Ordering::Relaxed)
    }

    /// Reset all counters to zero.
    pub fn reset_counts(&self) {
        for c in &self.counters {
            c.store(0, Ordering::Relaxed);
        }
        self.get_bytes.store(0, Ordering::Relaxed);
    }

    /// Delay every GET by `d` (or not, with `None`).
    pub fn set_get_delay(&self, d: Option<Duration>) {
        *lock(&self.get_delay) = d;
    }

    /// Store an object directly, bypassing counters (test setup).
    pub fn insert(&self, key: &str, data: impl Into<Bytes>) {
        let mut st = lock(&self.state);
        let etag = next_etag(&mut st);
        st.objects.insert(
            key.to_owned(),
            Object {
                data: data.into(),
                etag,
                modified: SystemTime::now(),
                mtime: None,
                posix: PosixAttrs::default(),
            },
        );
    }

    /// Content of `key`, bypassing counters (test assertions).
    pub fn object(&self, key: &str) -> Option<Bytes> {
        lock(&self.state).objects.get(key).map(|o| o.data.clone())
    }

    /// All keys, in order (test assertions).
    pub fn keys(&self) -> Vec<String> {
        lock(&self.state).objects.keys().cloned().collect()
    }

    /// Number of multipart uploads in progress (test assertions).
    pub fn open_uploads(&self) -> usize {
        lock(&self.state).uploads.len()
    }

    fn bump(&self, op: Op) {
        self.counters[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn store(
        &self,
        key: &str,
        data: Bytes,
        mtime: Option<SystemTime>,
        posix: PosixAttrs,
        create_only: bool,
    ) -> BackendResult<PutResult> {
        let mut st = lock(&self.state);
        if create_only && st.objects.contains_key(key) {
            return Err(BackendError::new(
                BackendErrorKind::PreconditionFailed,
                format!("{key} exists (If-None-Match)"),
            ));
        }
        let etag = next_etag(&mut st);
        st.objects.insert(
            key.to_owned(),
            Object {
                data,
                etag: etag.clone(),
                modified: SystemTime::now(),
                mtime,
                posix,
            },
        );
        Ok(PutResult::new(Some(etag)))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map half-updated (every update is a
    // single insert/remove), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn next_etag(st: &mut State) -> ETag {
    st.next_id += 1;
    ETag::new(format!("\"mem-{}\"", st.next_id))
}

fn no_upload(upload: &UploadId) -> BackendError {
    BackendError::new(BackendErrorKind::NoSuchUpload, format!("upload {}", upload.0))
}

#[async_trait]
impl Backend for InMemoryBackend {
    fn describe(&self) -> String {
        "memory://".to_owned()
    }
    fn capabilities(&self) -> crate::backend::Capabilities {
        crate::backend::Capabilities::S3
    }

    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        self.bump(Op::Head);
        let st = lock(&self.state);
        let o = st.objects.get(key).ok_or_else(|| BackendError::not_found(key))?;
        Ok(
            ObjectMeta::new(key, o.data.len() as u64, Some(o.modified), Some(o.etag.clone()))
                .with_mtime(o.mtime)
                .with_posix(o.posix),
        )
    }

    async fn get_range(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Bytes> {
        self.bump(Op::Get);
        let delay = *lock(&self.get_delay);
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let st = lock(&self.state);
        let o = st.objects.get(key).ok_or_else(|| BackendError::not_found(key))?;
        if let Some(want) = if_match {
            if *want != o.etag {
                return Err(BackendError::new(
                    BackendErrorKind::PreconditionFailed,
                    format!("get {key}"),
                ));
            }
        }
        let len = o.data.len() as u64;
        let start = range.start.min(len);
        let end = range.end.min(len);
        let out = o
            .data
            .slice(usize::try_from(start).unwrap_or(usize::MAX)..usize::try_from(end).unwrap_or(usize::MAX));
        self.get_bytes.fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    async fn list(&self, params: &ListParams) -> BackendResult<ListPage> {
        self.bump(Op::List);
        let st = lock(&self.state);
        let max = params.max_keys.unwrap_or(1000).clamp(1, 1000) as usize;
        let mut objects = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut count = 0;
        let mut next = None;
        // The continuation token is the last key (or common prefix) returned.
        let start = params.continuation.clone().unwrap_or_default();
        for (key, o) in st.objects.range(params.prefix.clone()..) {
            if !key.starts_with(&params.prefix) {
                break;
            }
            if !start.is_empty() && key.as_str() <= start.as_str() {
                continue;
            }
            if params.delimited {
                if let Some(pos) = key[params.prefix.len()..].find('/') {
                    let cp = &key[..params.prefix.len() + pos + 1];
                    if prefixes.last().map(String::as_str) == Some(cp) || (!start.is_empty() && cp <= start.as_str()) {
                        continue;
                    }
                    if count == max {
                        next = prefixes
                            .last()
                            .cloned()
                            .max(objects.last().map(|o: &ObjectMeta| o.key.clone()));
                        break;
                    }
                    prefixes.push(cp.to_owned());
                    count += 1;
                    continue;
                }
            }
            if count == max {
                next = prefixes
                    .last()
                    .cloned()
                    .max(objects.last().map(|o: &ObjectMeta| o.key.clone()));
                break;
            }
            objects.push(ObjectMeta::new(
                key.clone(),
                o.data.len() as u64,
                Some(o.modified),
                Some(o.etag.clone()),
            ));
            count += 1;
        }
        Ok(ListPage::new(objects, prefixes, next))
    }

    async fn put(&self, key: &str, data: Bytes) -> BackendResult<PutResult> {
        self.put_opts(key, data, &PutOptions::default()).await
    }

    async fn create_multipart(&self, key: &str) -> BackendResult<UploadId> {
        self.create_multipart_opts(key, &PutOptions::default()).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload: &UploadId,
        part_number: u32,
        data: Bytes,
    ) -> BackendResult<CompletedPart> {
        self.bump(Op::UploadPart);
        let mut st = lock(&self.state);
        let etag = next_etag(&mut st);
        let up = st
            .uploads
            .get_mut(&upload.0)
            .filter(|u| u.key == key)
            .ok_or_else(|| no_upload(upload))?;
        up.parts.insert(part_number, (etag.clone(), data));
        Ok(CompletedPart { part_number, etag })
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload: &UploadId,
        part_number: u32,
        src: &str,
        range: ByteRange,
    ) -> BackendResult<CompletedPart> {
        self.bump(Op::UploadPartCopy);
        let mut st = lock(&self.state);
        let data = {
            let o = st.objects.get(src).ok_or_else(|| BackendError::not_found(src))?;
            let len = o.data.len() as u64;
            if range.end > len {
                return Err(BackendError::new(
                    BackendErrorKind::InvalidRequest,
                    format!("copy range past end of {src}"),
                ));
            }
            o.data
                .slice(usize::try_from(range.start).unwrap_or(0)..usize::try_from(range.end).unwrap_or(0))
        };
        let etag = next_etag(&mut st);
        let up = st
            .uploads
            .get_mut(&upload.0)
            .filter(|u| u.key == key)
            .ok_or_else(|| no_upload(upload))?;
        up.parts.insert(part_number, (etag.clone(), data));
        Ok(CompletedPart { part_number, etag })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[CompletedPart],
    ) -> BackendResult<PutResult> {
        self.bump(Op::CompleteMultipart);
        let (data, mtime, posix, create_only) = {
            let st = lock(&self.state);
            let up = st
                .uploads
                .get(&upload.0)
                .filter(|u| u.key == key)
                .ok_or_else(|| no_upload(upload))?;
            let mut buf = BytesMut::new();
            let mut last = 0;
            for (i, p) in parts.iter().enumerate() {
                let (etag, data) = up.parts.get(&p.part_number).ok_or_else(|| {
                    BackendError::new(
                        BackendErrorKind::InvalidRequest,
                        format!("part {} missing", p.part_number),
                    )
                })?;
                if *etag != p.etag || p.part_number <= last {
                    return Err(BackendError::new(
                        BackendErrorKind::InvalidRequest,
                        "part list out of order or stale",
                    ));
                }
                // S3 rejects small parts except the last one; so do we, so tests catch it.
                if i + 1 < parts.len() && (data.len() as u64) < MIN_PART_SIZE {
                    return Err(BackendError::new(BackendErrorKind::InvalidRequest, "EntityTooSmall"));
                }
                last = p.part_number;
                buf.extend_from_slice(data);
            }
            (buf.freeze(), up.mtime, up.posix, up.create_only)
        };
        let res = self.store(key, data, mtime, posix, create_only)?;
        lock(&self.state).uploads.remove(&upload.0);
        Ok(res)
    }

    async fn abort_multipart(&self, _key: &str, upload: &UploadId) -> BackendResult<()> {
        self.bump(Op::AbortMultipart);
        lock(&self.state).uploads.remove(&upload.0);
        Ok(())
    }

    async fn list_multipart_uploads(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        self.bump(Op::ListMultipart);
        let st = lock(&self.state);
        let mut v: Vec<_> = st
            .uploads
            .iter()
            .filter(|(_, u)| u.key.starts_with(prefix))
            .map(|(id, u)| MultipartUploadInfo::new(u.key.clone(), UploadId(id.clone()), None))
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(v)
    }

    async fn copy(&self, src: &str, dst: &str) -> BackendResult<PutResult> {
        self.bump(Op::Copy);
        // Like S3's default `MetadataDirective=COPY`, the stored metadata travels with the copy.
        let (data, mtime, posix) = lock(&self.state)
            .objects
            .get(src)
            .map(|o| (o.data.clone(), o.mtime, o.posix))
            .ok_or_else(|| BackendError::not_found(src))?;
        self.store(dst, data, mtime, posix, false)
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        self.bump(Op::Delete);
        lock(&self.state).objects.remove(key);
        Ok(())
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<PutResult> {
        self.bump(Op::Put);
        self.store(key, data, opts.mtime, opts.posix, opts.create_only)
    }

    async fn create_multipart_opts(&self, key: &str, opts: &PutOptions) -> BackendResult<UploadId> {
        self.bump(Op::CreateMultipart);
        let mut st = lock(&self.state);
        st.next_id += 1;
        let id = format!("upload-{}", st.next_id);
        st.uploads.insert(
            id.clone(),
            Upload {
                key: key.to_owned(),
                mtime: opts.mtime,
                posix: opts.posix,
                create_only: opts.create_only,
                parts: BTreeMap::new(),
            },
        );
        Ok(UploadId(id))
    }

    async fn update_metadata(&self, key: &str, opts: &PutOptions) -> BackendResult<PutResult> {
        self.bump(Op::SetMtime);
        let mut st = lock(&self.state);
        let o = st.objects.get_mut(key).ok_or_else(|| BackendError::not_found(key))?;
        // Content is unchanged, so the ETag is too (as for a single-part object on S3).
        o.mtime = opts.mtime.or(o.mtime);
        o.posix = o.posix.overlaid(opts.posix);
        o.modified = SystemTime::now();
        Ok(PutResult::new(Some(o.etag.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(parts: &[&'static str]) -> crate::backend::BodyStream {
        let items: Vec<BackendResult<Bytes>> = parts.iter().map(|p| Ok(Bytes::from_static(p.as_bytes()))).collect();
        Box::pin(futures::stream::iter(items))
    }

    #[tokio::test]
    async fn default_put_stream_publishes_only_a_body_of_the_announced_size() {
        let b = InMemoryBackend::new();
        let opts = PutOptions::default();
        b.put_stream("ok", 6, pieces(&["abc", "def"]), &opts).await.unwrap();
        assert_eq!(b.get_range("ok", ByteRange::new(0, 6), None).await.unwrap(), "abcdef");
        for (key, parts) in [("short", &["abc"][..]), ("long", &["abc", "defg"][..])] {
            let err = b.put_stream(key, 6, pieces(parts), &opts).await.unwrap_err();
            assert_eq!(err.kind(), BackendErrorKind::InvalidRequest, "{key}");
            assert_eq!(
                b.head(key).await.unwrap_err().kind(),
                BackendErrorKind::NotFound,
                "{key} was published"
            );
        }
    }

    #[tokio::test]
    async fn delimited_listing_paginates_prefixes_and_objects() {
        let b = InMemoryBackend::new();
        for k in ["a/1", "a/2", "b", "c/x/y", "d"] {
            b.insert(k, "x");
        }
        let mut seen_objects = Vec::new();
        let mut seen_prefixes = Vec::new();
        let mut token = None;
        for _ in 0..10 {
            let page = b
                .list(&ListParams::new("", true).with_max_keys(1).with_continuation(token))
                .await
                .unwrap();
            seen_objects.extend(page.objects.into_iter().map(|o| o.key));
            seen_prefixes.extend(page.common_prefixes);
            token = page.next;
            if token.is_none() {
                break;
            }
        }
        assert_eq!(seen_objects, vec!["b", "d"]);
        assert_eq!(seen_prefixes, vec!["a/", "c/"]);
    }
}
