//! Copying one object and proving the copy: the I/O around [`super::verify`].
//!
//! Streamed copies read the source in parts with ranged GETs pinned to the ETag seen by the
//! HEAD (so a source replaced mid-copy fails instead of mixing versions) and write a single
//! PUT up to the part size, a multipart upload with several parts in flight above it. Every
//! part holds a share of the byte budget (the config's write memory) while it is in memory,
//! so a run's buffers stay within it whatever the concurrency. Server-side copies (source
//! and target in the same bucket) let the service move the bytes.
//!
//! The stored mtime, mode, owner and group travel with the object. A source object without
//! a stored mtime gets its Last-Modified stored as mtime, so the file's time seen through
//! the mount does not become the time of the migration.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::backend::{Backend, BackendError, BackendErrorKind, ByteRange, ObjectMeta, PutOptions, MAX_PARTS};

use super::plan::Version;
use super::verify::{check, check_read_back, md5_of, Check, Md5Sum, Stored, Written};

/// Largest object a single server-side copy request may create (S3's limit).
const MAX_COPY_OBJECT: u64 = 5 * 1024 * 1024 * 1024;

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
}

impl CopyError {
    /// Whether a second attempt may help (a source that vanished will not come back).
    pub fn worth_retrying(&self) -> bool {
        match self {
            Self::Backend { step, source } => !(*step == "head source" && source.kind() == BackendErrorKind::NotFound),
            Self::Mismatch(_) => true,
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
}

/// Budget permits are KiB, so a `u32` count covers budgets up to 4 TiB.
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
        }
    }

    async fn hold(&self, bytes: u64) -> Option<SemaphorePermit<'_>> {
        self.budget
            .acquire_many(kib(bytes).clamp(1, self.budget_kib))
            .await
            .ok()
    }

    /// Part length for an object of `size` bytes: the part size, or more when the object
    /// would otherwise need more than 10 000 parts (rounded up to whole MiB).
    pub fn part_len(&self, size: u64) -> u64 {
        let min = size.div_ceil(u64::from(MAX_PARTS)).div_ceil(1 << 20) << 20;
        self.part_size.max(min)
    }

    /// Copy `key` and verify it; a failed attempt is repeated once. Returns the target's
    /// version as a listing would show it (for the journal).
    pub async fn copy_verified(&self, key: &str) -> Result<Version, CopyError> {
        match self.copy_once(key).await {
            Ok(v) => Ok(v),
            Err(e) if e.worth_retrying() => {
                tracing::warn!(key, error = %e, "copy failed; copying again");
                self.copy_once(key).await
            }
            Err(e) => Err(e),
        }
    }

    async fn copy_once(&self, key: &str) -> Result<Version, CopyError> {
        let src = self.src.head(key).await.map_err(at("head source"))?;
        let opts = PutOptions::default()
            .with_mtime(src.mtime.or(src.last_modified))
            .with_posix(src.posix)
            .with_headers(src.content_type.clone(), None);
        let written = match &self.server_side {
            Some(ss) => {
                self.copy_server_side(ss, &src, &opts).await?;
                None
            }
            None if src.size <= self.part_size => Some(self.copy_single(&src, &opts).await?),
            None => Some(self.copy_multipart(&src, &opts).await?),
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
        match verdict {
            Check::Match => Ok(Version::of(&dst)),
            Check::Mismatch(why) => Err(CopyError::Mismatch(why)),
            Check::NeedReadBack => Err(CopyError::Mismatch("undecided".to_owned())),
        }
    }

    async fn copy_single(&self, src: &ObjectMeta, opts: &PutOptions) -> Result<Written, CopyError> {
        let _permit = self.hold(src.size).await;
        // Nothing to read for an empty object (the local backend refuses reads of directory
        // markers).
        let data = if src.size == 0 {
            bytes::Bytes::new()
        } else {
            self.src
                .get_range(&src.key, ByteRange::new(0, src.size), src.etag.as_ref())
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
        let md5 = md5_of(&data);
        self.dst
            .put_opts(&src.key, data, opts)
            .await
            .map_err(at("write target"))?;
        Ok(Written {
            size: src.size,
            md5: Some(md5),
            parts: None,
            mtime: opts.mtime,
            posix: opts.posix,
        })
    }

    async fn copy_multipart(&self, src: &ObjectMeta, opts: &PutOptions) -> Result<Written, CopyError> {
        let part = self.part_len(src.size);
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
                        .get_range(&src.key, range, src.etag.as_ref())
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
