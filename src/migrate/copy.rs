//! Copying one object and proving the copy: the I/O around [`super::verify`].
//!
//! Streamed copies read the source in parts with ranged GETs pinned to the ETag seen by the
//! HEAD (so a source replaced mid-copy fails instead of mixing versions; sources that cannot
//! pin are read unpinned) and write a single PUT up to the part size, a multipart upload with
//! several parts in flight above it, or, to a store without multipart uploads (WebDAV, most
//! OpenDAL services), one `put_stream` fed chunk by chunk. [`route`] chooses from the
//! target's [`Capabilities`]. Every
//! part holds a share of the byte budget (the config's write memory) while it is in memory,
//! so a run's buffers stay within it whatever the concurrency. Server-side copies (source
//! and target in the same bucket) let the service move the bytes.
//!
//! A copy written in one piece hashes what it reads only until the target has shown that its
//! ETags are content MD5s (see [`super::verify::must_hash`]); after that, an object whose
//! source ETag states its MD5 is proven by the target's ETag alone, and that MD5 travels as
//! the PUT's Content-MD5 so the service checks the body on arrival, as `rclone copy` does.
//!
//! The stored mtime, mode, owner and group travel with the object where the target stores
//! them (`user_metadata`). A source object without
//! a stored mtime gets its Last-Modified stored as mtime, so the file's time seen through
//! the mount does not become the time of the migration.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::backend::{
    Backend, BackendError, BackendErrorKind, BodyStream, ByteRange, Capabilities, MultipartLimits, ObjectMeta,
    PutOptions,
};

use super::plan::Version;
use super::verify::{
    check, check_read_back, etag_md5, md5_of, must_hash, shows_md5_etags, Check, Md5Sum, Stored, Written,
};

/// Largest object a single server-side copy request may create (S3's limit).
const MAX_COPY_OBJECT: u64 = 5 * 1024 * 1024 * 1024;

/// Largest piece a streamed `put_stream` copy reads at once: a ranged GET of 8 MiB keeps
/// request overhead small while one chunk per copy is all it holds.
const STREAM_CHUNK: u64 = 8 << 20;

/// How one object is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The service copies (same bucket).
    ServerSide,
    /// Read whole, one `put_opts`.
    Single,
    /// A multipart upload of parts of this length.
    Multipart(u64),
    /// One `put_stream` fed by ranged GETs (a store without multipart uploads).
    Stream,
}

/// Part length for an object of `size` bytes within `limits`: `part_size`, or more when the
/// object would otherwise need more parts than allowed (rounded up to whole MiB).
pub fn part_len(part_size: u64, size: u64, limits: &MultipartLimits) -> u64 {
    let min = size.div_ceil(u64::from(limits.max_parts.max(1))).div_ceil(1 << 20) << 20;
    part_size
        .max(min)
        .clamp(limits.min_part, limits.max_part.max(limits.min_part))
}

/// The route for an object of `size` bytes to a target with `caps`; `server_side` when
/// source and target are one bucket whose service can copy.
pub fn route(caps: &Capabilities, size: u64, part_size: u64, server_side: bool) -> Route {
    if server_side && caps.server_side_copy && (size <= MAX_COPY_OBJECT || caps.part_copy) {
        return Route::ServerSide;
    }
    match caps.multipart {
        _ if size <= part_size => Route::Single,
        Some(limits) => Route::Multipart(part_len(part_size, size, &limits)),
        None => Route::Stream,
    }
}

/// Source and target in the same bucket: keys are copied by the service.
#[derive(Debug, Clone)]
pub struct ServerSide {
    /// The bucket, outside any prefix.
    pub raw: Arc<dyn Backend>,
    /// Source prefix (empty or ending in `/`).
    pub src_prefix: String,
    /// Target prefix (empty or ending in `/`).
    pub dst_prefix: String,
}

/// Why one object could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A request failed (after the backend's retries).
    #[error("{step}: {source}")]
    Backend {
        /// What was being done.
        step: &'static str,
        /// The failure.
        #[source]
        source: BackendError,
    },
    /// The copy does not match the source.
    #[error("verification failed: {0}")]
    Mismatch(String),
    /// Larger than the target store accepts.
    #[error("{size} bytes: larger than the target accepts ({max} bytes)")]
    TooLarge {
        /// The object's size.
        size: u64,
        /// The target's limit.
        max: u64,
    },
}

impl CopyError {
    /// Whether a second attempt may help (a source that vanished will not come back).
    pub fn worth_retrying(&self) -> bool {
        match self {
            Self::Backend { step, source } => !(*step == "head source" && source.kind() == BackendErrorKind::NotFound),
            Self::Mismatch(_) => true,
            Self::TooLarge { .. } => false,
        }
    }
}

fn at(step: &'static str) -> impl FnOnce(BackendError) -> CopyError {
    move |source| CopyError::Backend { step, source }
}

/// Copies objects from `src` to `dst` (both already confined to their prefixes).
#[derive(Debug)]
pub struct Copier {
    /// The source view.
    pub src: Arc<dyn Backend>,
    /// The target view.
    pub dst: Arc<dyn Backend>,
    /// Set when the service can copy between the two.
    pub server_side: Option<ServerSide>,
    /// Part size of streamed multipart copies (≥ 5 MiB).
    pub part_size: u64,
    /// Parts of one object in flight at once.
    pub part_concurrency: usize,
    budget: Semaphore,
    budget_kib: u32,
    /// Set once a hashed copy found the target's ETag to be its MD5 (see the module docs).
    target_shows_md5: AtomicBool,
}

/// Budget permits are KiB, so a `u32` count covers budgets up to 4 TiB.
/// The outcome of a write to the target: a body the target refused as corrupted (its
/// Content-MD5 check) is a verification failure, copied again once; anything else is an
/// error of that step.
fn write_target<T>(res: Result<T, BackendError>) -> Result<(), CopyError> {
    match res {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == BackendErrorKind::Corrupted => {
            Err(CopyError::Mismatch(format!("the target refused the body: {e}")))
        }
        Err(e) => Err(at("write target")(e)),
    }
}

fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

impl Copier {
    /// A copier whose in-memory parts never exceed `budget` bytes in total.
    pub fn new(
        src: Arc<dyn Backend>,
        dst: Arc<dyn Backend>,
        server_side: Option<ServerSide>,
        part_size: u64,
        part_concurrency: usize,
        budget: u64,
    ) -> Self {
        let budget_kib = kib(budget.max(part_size)).max(1);
        Self {
            src,
            dst,
            server_side,
            part_size,
            part_concurrency: part_concurrency.max(1),
            budget: Semaphore::new(budget_kib as usize),
            budget_kib,
            target_shows_md5: AtomicBool::new(false),
        }
    }

    async fn hold(&self, bytes: u64) -> Option<SemaphorePermit<'_>> {
        self.budget
            .acquire_many(kib(bytes).clamp(1, self.budget_kib))
            .await
            .ok()
    }

    /// Part length of a multipart copy of `size` bytes to the target (see [`part_len`]).
    pub fn part_len(&self, size: u64) -> u64 {
        let limits = self.dst.capabilities().multipart.unwrap_or(MultipartLimits::S3);
        part_len(self.part_size, size, &limits)
    }

    /// The ETag to pin source reads to, where the source can.
    fn pin<'a>(&self, src: &'a ObjectMeta) -> Option<&'a crate::backend::ETag> {
        src.etag.as_ref().filter(|_| self.src.capabilities().conditional_get)
    }

    /// Copy `key` and verify it; a failed attempt is repeated once. Returns the target's
    /// version as a listing would show it (for the journal).
    pub async fn copy_verified(&self, key: &str) -> Result<Version, CopyError> {
        match self.copy_once(key, false).await {
            Ok(v) => Ok(v),
            Err(e) if e.worth_retrying() => {
                tracing::warn!(key, error = %e, "copy failed; copying again");
                self.copy_once(key, true).await
            }
            Err(e) => Err(e),
        }
    }

    async fn copy_once(&self, key: &str, retry: bool) -> Result<Version, CopyError> {
        let src = self.src.head(key).await.map_err(at("head source"))?;
        let caps = self.dst.capabilities();
        if let Some(max) = caps.max_object_size.filter(|max| src.size > *max) {
            return Err(CopyError::TooLarge { size: src.size, max });
        }
        // A store without user metadata would drop it; verification then expects none.
        let opts = if caps.user_metadata {
            PutOptions::default()
                .with_mtime(src.mtime.or(src.last_modified))
                .with_posix(src.posix)
                .with_headers(src.content_type.clone(), None)
        } else {
            PutOptions::default()
        };
        let written = match (
            route(&caps, src.size, self.part_size, self.server_side.is_some()),
            &self.server_side,
        ) {
            (Route::ServerSide, Some(ss)) => {
                self.copy_server_side(ss, &src, &opts).await?;
                None
            }
            (Route::Multipart(part), _) => Some(self.copy_multipart(&src, &opts, part).await?),
            (Route::Stream, _) => Some(self.copy_stream(&src, &opts, retry).await?),
            (Route::Single | Route::ServerSide, _) => Some(self.copy_single(&src, &opts, retry).await?),
        };
        let dst = self.dst.head(key).await.map_err(at("head target"))?;
        let stored = Stored {
            size: dst.size,
            etag: dst.etag.as_ref().map(|e| e.as_str().to_owned()),
            mtime: dst.mtime,
            posix: dst.posix,
        };
        let verdict = match &written {
            Some(w) => match check(w, src.etag.as_ref().map(|e| e.as_str()), &stored) {
                Check::NeedReadBack => {
                    let part = if w.parts.is_some() {
                        self.part_len(w.size)
                    } else {
                        w.size.max(1)
                    };
                    let mine = w.parts.clone().or(w.md5.map(|d| vec![d])).unwrap_or_default();
                    check_read_back(&mine, &self.digests(&self.dst, key, w.size, part).await?)
                }
                other => other,
            },
            None => self.check_server_side(&src, &opts, &stored, key).await?,
        };
        if written.as_ref().is_some_and(|w| shows_md5_etags(w, &stored, &verdict)) {
            self.target_shows_md5.store(true, Ordering::Relaxed);
        }
        match verdict {
            Check::Match => Ok(Version::of(&dst)),
            Check::Mismatch(why) => Err(CopyError::Mismatch(why)),
            Check::NeedReadBack => Err(CopyError::Mismatch("undecided".to_owned())),
        }
    }

    async fn copy_single(&self, src: &ObjectMeta, opts: &PutOptions, retry: bool) -> Result<Written, CopyError> {
        let source_md5 = src.etag.as_ref().and_then(|e| etag_md5(e.as_str()));
        let hashed = must_hash(
            source_md5.as_ref(),
            self.target_shows_md5.load(Ordering::Relaxed),
            retry,
        );
        let _permit = self.hold(src.size).await;
        // Nothing to read for an empty object (the local backend refuses reads of directory
        // markers).
        let data = if src.size == 0 {
            bytes::Bytes::new()
        } else {
            self.src
                .get_range(&src.key, ByteRange::new(0, src.size), self.pin(src))
                .await
                .map_err(at("read source"))?
        };
        if data.len() as u64 != src.size {
            return Err(CopyError::Mismatch(format!(
                "source read returned {} of {} bytes",
                data.len(),
                src.size
            )));
        }
        let md5 = match (hashed, source_md5) {
            (false, Some(d)) => d,
            _ => md5_of(&data),
        };
        if source_md5.is_some_and(|d| d != md5) {
            // Nothing written: the read went wrong (or the source changed under its ETag).
            return Err(CopyError::Mismatch(
                "bytes read differ from the source's ETag".to_owned(),
            ));
        }
        let opts = opts.clone().with_content_md5(Some(md5));
        write_target(self.dst.put_opts(&src.key, data, &opts).await)?;
        Ok(Written {
            size: src.size,
            md5: Some(md5),
            hashed,
            parts: None,
            mtime: opts.mtime,
            posix: opts.posix,
        })
    }

    /// One `put_stream` of `src`, fed by ranged GETs of one chunk at a time and hashed as it
    /// passes where [`must_hash`] says so: the copy to a store without multipart uploads.
    /// One chunk of the byte budget is held while the stream runs (a store that streams holds
    /// no more; the trait's gathering default is for stores whose objects fit in memory).
    async fn copy_stream(&self, src: &ObjectMeta, opts: &PutOptions, retry: bool) -> Result<Written, CopyError> {
        let source_md5 = src.etag.as_ref().and_then(|e| etag_md5(e.as_str()));
        let hashed = must_hash(
            source_md5.as_ref(),
            self.target_shows_md5.load(Ordering::Relaxed),
            retry,
        );
        let chunk = STREAM_CHUNK.min(self.part_size).max(1);
        let _permit = self.hold(chunk).await;
        let hasher = Arc::new(std::sync::Mutex::new(hashed.then(Md5::new)));
        let body = chunks(
            self.src.clone(),
            src.key.clone(),
            src.size,
            chunk,
            self.pin(src).cloned(),
            hasher.clone(),
        );
        let opts = opts.clone().with_content_md5(source_md5);
        write_target(self.dst.put_stream(&src.key, src.size, body, &opts).await)?;
        let computed = hasher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map(|h| -> Md5Sum { h.finalize().into() });
        let md5 = match (computed, source_md5) {
            (Some(d), Some(s)) if d != s => {
                return Err(CopyError::Mismatch(
                    "bytes read differ from the source's ETag".to_owned(),
                ));
            }
            (Some(d), _) | (None, Some(d)) => d,
            (None, None) => return Err(CopyError::Mismatch("nothing to verify the copy with".to_owned())),
        };
        Ok(Written {
            size: src.size,
            md5: Some(md5),
            hashed,
            parts: None,
            mtime: opts.mtime,
            posix: opts.posix,
        })
    }

    async fn copy_multipart(&self, src: &ObjectMeta, opts: &PutOptions, part: u64) -> Result<Written, CopyError> {
        let n = src.size.div_ceil(part);
        let upload = self
            .dst
            .create_multipart_opts(&src.key, opts)
            .await
            .map_err(at("start upload"))?;
        let result: Result<Vec<_>, CopyError> = futures::stream::iter(0..n)
            .map(|i| {
                let upload = &upload;
                async move {
                    let range = ByteRange::new(i * part, ((i + 1) * part).min(src.size));
                    let _permit = self.hold(range.len()).await;
                    let data = self
                        .src
                        .get_range(&src.key, range, self.pin(src))
                        .await
                        .map_err(at("read source"))?;
                    if data.len() as u64 != range.len() {
                        return Err(CopyError::Mismatch(format!(
                            "source read returned {} of {} bytes",
                            data.len(),
                            range.len()
                        )));
                    }
                    let md5 = md5_of(&data);
                    let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
                    let done = self
                        .dst
                        .upload_part(&src.key, upload, number, data)
                        .await
                        .map_err(at("write part"))?;
                    Ok((done, md5))
                }
            })
            .buffered(self.part_concurrency)
            .try_collect()
            .await;
        let parts = match result {
            Ok(p) => p,
            Err(e) => {
                let _ = self.dst.abort_multipart(&src.key, &upload).await;
                return Err(e);
            }
        };
        let (completed, md5s): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        if let Err(e) = self.dst.complete_multipart(&src.key, &upload, &completed).await {
            let _ = self.dst.abort_multipart(&src.key, &upload).await;
            return Err(at("complete upload")(e));
        }
        Ok(Written {
            size: src.size,
            md5: None,
            hashed: true,
            parts: Some(md5s),
            mtime: opts.mtime,
            posix: opts.posix,
        })
    }

    async fn copy_server_side(&self, ss: &ServerSide, src: &ObjectMeta, opts: &PutOptions) -> Result<(), CopyError> {
        let from = format!("{}{}", ss.src_prefix, src.key);
        let to = format!("{}{}", ss.dst_prefix, src.key);
        if src.size <= MAX_COPY_OBJECT {
            ss.raw.copy(&from, &to).await.map_err(at("server-side copy"))?;
            if src.mtime.is_none() {
                // Keep the time the mount showed (Last-Modified) as the copy's stored mtime.
                ss.raw.update_metadata(&to, opts).await.map_err(at("store mtime"))?;
            }
            return Ok(());
        }
        let part = self.part_len(src.size).max(MAX_COPY_OBJECT / 5);
        let n = src.size.div_ceil(part);
        let upload = ss
            .raw
            .create_multipart_opts(&to, opts)
            .await
            .map_err(at("start upload"))?;
        let result: Result<Vec<_>, CopyError> = futures::stream::iter(0..n)
            .map(|i| {
                let (upload, from, to) = (&upload, &from, &to);
                async move {
                    let range = ByteRange::new(i * part, ((i + 1) * part).min(src.size));
                    let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
                    ss.raw
                        .upload_part_copy(to, upload, number, from, range)
                        .await
                        .map_err(at("copy part"))
                }
            })
            .buffered(self.part_concurrency)
            .try_collect()
            .await;
        let parts = match result {
            Ok(p) => p,
            Err(e) => {
                let _ = ss.raw.abort_multipart(&to, &upload).await;
                return Err(e);
            }
        };
        if let Err(e) = ss.raw.complete_multipart(&to, &upload, &parts).await {
            let _ = ss.raw.abort_multipart(&to, &upload).await;
            return Err(at("complete upload")(e));
        }
        Ok(())
    }

    /// A server-side copy: equal comparable ETags prove it, else both sides are read back.
    async fn check_server_side(
        &self,
        src: &ObjectMeta,
        opts: &PutOptions,
        stored: &Stored,
        key: &str,
    ) -> Result<Check, CopyError> {
        if stored.size != src.size {
            return Ok(Check::Mismatch(format!(
                "size {} in the target, {} in the source",
                stored.size, src.size
            )));
        }
        if stored.mtime != opts.mtime {
            return Ok(Check::Mismatch("stored mtime differs".to_owned()));
        }
        if !stored.posix.is_empty() && stored.posix != src.posix {
            return Ok(Check::Mismatch("stored mode/uid/gid differ".to_owned()));
        }
        let same_etag = match (&src.etag, &stored.etag) {
            (Some(a), Some(b)) => {
                let (a, b) = (a.as_str(), b.as_str());
                (super::verify::is_plain_md5(a) || super::verify::is_multipart_md5(a)) && a == b
            }
            _ => false,
        };
        if same_etag {
            return Ok(Check::Match);
        }
        let part = self.part_len(src.size);
        let theirs = self.digests(&self.src, key, src.size, part).await?;
        Ok(check_read_back(
            &theirs,
            &self.digests(&self.dst, key, src.size, part).await?,
        ))
    }

    /// MD5 of each `part`-sized piece of `key` (one digest for an empty object), read as a
    /// stream so nothing but the current piece is held.
    async fn digests(
        &self,
        backend: &Arc<dyn Backend>,
        key: &str,
        size: u64,
        part: u64,
    ) -> Result<Vec<Md5Sum>, CopyError> {
        let n = size.div_ceil(part).max(1);
        let mut out = Vec::new();
        for i in 0..n {
            let range = ByteRange::new(i * part, ((i + 1) * part).min(size));
            let mut h = Md5::new();
            if !range.is_empty() {
                let mut body = backend
                    .get_range_stream(key, range, None)
                    .await
                    .map_err(at("read back"))?;
                let mut got = 0u64;
                while let Some(piece) = body.try_next().await.map_err(at("read back"))? {
                    got += piece.len() as u64;
                    h.update(&piece);
                }
                if got != range.len() {
                    return Ok(vec![]);
                }
            }
            out.push(h.finalize().into());
        }
        Ok(out)
    }
}

/// `size` bytes of `key` as a body stream, one ranged GET of `chunk` bytes at a time, each
/// made when the consumer asks for it and fed to `hasher` (when set) as it passes. A short
/// read ends the stream with an error, so a truncated source is never published.
fn chunks(
    backend: Arc<dyn Backend>,
    key: String,
    size: u64,
    chunk: u64,
    pin: Option<crate::backend::ETag>,
    hasher: Arc<std::sync::Mutex<Option<Md5>>>,
) -> BodyStream {
    Box::pin(futures::stream::try_unfold(0u64, move |start| {
        let (backend, key, pin, hasher) = (backend.clone(), key.clone(), pin.clone(), hasher.clone());
        async move {
            if start >= size {
                return Ok(None);
            }
            let range = ByteRange::new(start, (start + chunk).min(size));
            let data = backend.get_range(&key, range, pin.as_ref()).await?;
            if data.len() as u64 != range.len() {
                return Err(BackendError::new(
                    BackendErrorKind::PreconditionFailed,
                    format!("{key}: source read returned {} of {} bytes", data.len(), range.len()),
                ));
            }
            if let Some(h) = hasher.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                h.update(&data);
            }
            Ok(Some((data, range.end)))
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn no_multipart() -> Capabilities {
        Capabilities {
            multipart: None,
            part_copy: false,
            server_side_copy: false,
            ..Capabilities::S3
        }
    }

    #[test]
    fn routes_follow_the_targets_capabilities() {
        let s3 = Capabilities::S3;
        assert_eq!(route(&s3, 8 * MIB, 8 * MIB, false), Route::Single);
        assert_eq!(route(&s3, 8 * MIB + 1, 8 * MIB, false), Route::Multipart(8 * MIB));
        assert_eq!(route(&s3, 1, 8 * MIB, true), Route::ServerSide);
        // Above 5 GiB a server-side copy needs part copies.
        let whole_only = Capabilities {
            part_copy: false,
            ..Capabilities::S3
        };
        assert_eq!(route(&whole_only, 6 << 30, 8 * MIB, true), Route::Multipart(8 * MIB));
        assert_eq!(route(&s3, 6 << 30, 8 * MIB, true), Route::ServerSide);
        // No multipart: one streamed PUT above the part size, and no server-side copy.
        let dav = no_multipart();
        assert_eq!(route(&dav, 8 * MIB, 8 * MIB, false), Route::Single);
        assert_eq!(route(&dav, 8 * MIB + 1, 8 * MIB, false), Route::Stream);
        assert_eq!(route(&dav, 1, 8 * MIB, true), Route::Single);
    }

    #[test]
    fn part_length_respects_the_stores_limits() {
        let s3 = MultipartLimits::S3;
        assert_eq!(part_len(8 * MIB, 100 * MIB, &s3), 8 * MIB);
        // 10,000 parts at most: 100 GiB needs parts of at least 11 MiB (rounded up).
        assert_eq!(part_len(8 * MIB, 100 << 30, &s3), 11 * MIB);
        let small = MultipartLimits {
            min_part: 10 * MIB,
            max_part: 20 * MIB,
            max_parts: 3,
        };
        assert_eq!(part_len(8 * MIB, 12 * MIB, &small), 10 * MIB, "raised to the minimum");
        assert_eq!(part_len(64 * MIB, 12 * MIB, &small), 20 * MIB, "capped at the maximum");
    }
}
