//! Copying one object for a rename, with what the store can do (issue 25): a server-side
//! copy (one request, or a multipart copy above S3's 5 GiB limit for a single copy), or,
//! where the store has no such copy, its bytes read by ranged GETs and written again. The
//! choice is a pure function of the store's capabilities and the object's size
//! ([`copy_plan`]); the I/O follows it. Memory stays bounded: a streamed copy holds one
//! chunk (or one part) at a time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::backend::{
    Backend, BackendError, BackendResult, BodyStream, ByteRange, Capabilities, ETag, ObjectMeta, PutOptions,
    MAX_PART_SIZE,
};

/// Size of one ranged GET of a streamed copy.
const STREAM_CHUNK: u64 = 8 * 1024 * 1024;
/// Parts of a multipart copy: 1 GiB keeps far below any part-count limit for what S3 holds.
const COPY_PART: u64 = 1 << 30;
/// Parts of a multipart upload filled by reading (no part copy): small enough to hold one in
/// memory, grown only as the store's part count demands.
const READ_PART: u64 = 8 * 1024 * 1024;
/// Tries of one streamed copy, the first included (a body stream cannot be replayed, so a
/// failed one is rebuilt from the source here; the retry layer passes it through).
const STREAM_ATTEMPTS: u32 = 3;

/// How an object is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyPlan {
    /// One server-side copy request.
    Whole,
    /// A multipart upload whose parts (of this size) are copied server-side.
    PartCopy(u64),
    /// A multipart upload whose parts (of this size) are read and uploaded.
    ReadParts(u64),
    /// One streamed PUT fed by ranged GETs.
    Stream,
}

/// The copy a store with `caps` can make of an object of `size` bytes.
pub(crate) fn copy_plan(caps: &Capabilities, size: u64) -> CopyPlan {
    let part = |want: u64| match caps.multipart {
        Some(l) => {
            let needed = size.div_ceil(u64::from(l.max_parts.max(1)));
            want.max(needed).clamp(l.min_part, l.max_part.max(l.min_part))
        }
        None => want,
    };
    // A store that copies server-side without part copies copies whole objects of any size.
    if caps.server_side_copy && (size <= MAX_PART_SIZE || !caps.part_copy) {
        CopyPlan::Whole
    } else if caps.multipart.is_some() && caps.part_copy {
        CopyPlan::PartCopy(part(COPY_PART))
    } else if caps.multipart.is_some() && size > READ_PART {
        CopyPlan::ReadParts(part(READ_PART))
    } else {
        CopyPlan::Stream
    }
}

/// Copy `src` to `dst` (a rename's first half): content, and the stored mtime, POSIX
/// attributes and Content-Type where the store keeps them.
pub(crate) async fn copy_object(backend: &Arc<dyn Backend>, src: &str, dst: &str) -> BackendResult<()> {
    let caps = backend.capabilities();
    let meta = backend.head(src).await?;
    let plan = copy_plan(&caps, meta.size);
    if plan == CopyPlan::Whole {
        // A server-side copy keeps the stored metadata.
        backend.copy(src, dst).await?;
        return Ok(());
    }
    let opts = if caps.user_metadata {
        PutOptions::default()
            .with_mtime(meta.mtime)
            .with_posix(meta.posix)
            .with_headers(meta.content_type.clone(), None)
    } else {
        PutOptions::default()
    };
    // Pin every read to the version seen by the HEAD where the store can.
    let pin = meta.etag.clone().filter(|_| caps.conditional_get);
    match plan {
        CopyPlan::Whole => Ok(()),
        CopyPlan::PartCopy(part) => multipart(backend, src, dst, &meta, &opts, part, true, pin).await,
        CopyPlan::ReadParts(part) => multipart(backend, src, dst, &meta, &opts, part, false, pin).await,
        CopyPlan::Stream => stream(backend, src, dst, meta.size, &opts, pin).await,
    }
}

/// A multipart upload of `dst` from `src`, parts of `part` bytes copied server-side
/// (`server`) or read and uploaded one at a time; aborted on failure.
#[allow(clippy::too_many_arguments)]
async fn multipart(
    backend: &Arc<dyn Backend>,
    src: &str,
    dst: &str,
    meta: &ObjectMeta,
    opts: &PutOptions,
    part: u64,
    server: bool,
    pin: Option<ETag>,
) -> BackendResult<()> {
    let upload = backend.create_multipart_opts(dst, opts).await?;
    let mut parts = Vec::new();
    let mut start = 0;
    let mut number = 1;
    while start < meta.size {
        let end = (start + part).min(meta.size);
        let range = ByteRange::new(start, end);
        let done = if server {
            backend.upload_part_copy(dst, &upload, number, src, range).await
        } else {
            match read_exact(&**backend, src, range, pin.as_ref()).await {
                Ok(data) => backend.upload_part(dst, &upload, number, data).await,
                Err(e) => Err(e),
            }
        };
        match done {
            Ok(p) => parts.push(p),
            Err(e) => {
                let _ = backend.abort_multipart(dst, &upload).await;
                return Err(e);
            }
        }
        start = end;
        number += 1;
    }
    if let Err(e) = backend.complete_multipart(dst, &upload, &parts).await {
        let _ = backend.abort_multipart(dst, &upload).await;
        return Err(e);
    }
    Ok(())
}

/// `range` of `key`, failing if the object has become shorter (a copy must not publish a
/// truncated object).
async fn read_exact(backend: &dyn Backend, key: &str, range: ByteRange, pin: Option<&ETag>) -> BackendResult<Bytes> {
    let data = backend.get_range(key, range, pin).await?;
    if data.len() as u64 != range.len() {
        return Err(BackendError::new(
            crate::backend::BackendErrorKind::PreconditionFailed,
            format!("{key} changed during a copy"),
        ));
    }
    Ok(data)
}

/// One streamed PUT of `dst` fed by ranged GETs of `src`, retried from the start when the
/// failure is retryable.
async fn stream(
    backend: &Arc<dyn Backend>,
    src: &str,
    dst: &str,
    size: u64,
    opts: &PutOptions,
    pin: Option<ETag>,
) -> BackendResult<()> {
    let mut attempt = 1;
    loop {
        let body = ranged_body(backend.clone(), src.to_owned(), size, pin.clone());
        match backend.put_stream(dst, size, body, opts).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_retryable() && attempt < STREAM_ATTEMPTS => {
                tracing::debug!(src, dst, attempt, error = %e, "streamed copy failed; starting again");
                tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `size` bytes of `key` as a body stream, one ranged GET per chunk, each made when the
/// consumer asks for it.
fn ranged_body(backend: Arc<dyn Backend>, key: String, size: u64, pin: Option<ETag>) -> BodyStream {
    Box::pin(futures::stream::try_unfold(0u64, move |start| {
        let (backend, key, pin) = (backend.clone(), key.clone(), pin.clone());
        async move {
            if start >= size {
                return Ok(None);
            }
            let range = ByteRange::new(start, (start + STREAM_CHUNK).min(size));
            let data = read_exact(&*backend, &key, range, pin.as_ref()).await?;
            Ok(Some((data, range.end)))
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MultipartLimits;

    const GIB: u64 = 1 << 30;

    fn caps(multipart: bool, part_copy: bool, server_side_copy: bool) -> Capabilities {
        Capabilities {
            multipart: multipart.then_some(MultipartLimits::S3),
            part_copy,
            server_side_copy,
            ..Capabilities::S3
        }
    }

    #[test]
    fn s3_copies_server_side_whole_or_by_parts() {
        assert_eq!(copy_plan(&Capabilities::S3, 0), CopyPlan::Whole);
        assert_eq!(copy_plan(&Capabilities::S3, 5 * GIB), CopyPlan::Whole);
        assert_eq!(copy_plan(&Capabilities::S3, 5 * GIB + 1), CopyPlan::PartCopy(GIB));
    }

    #[test]
    fn without_part_copy_big_objects_are_read() {
        assert_eq!(
            copy_plan(&caps(true, false, false), 6 * GIB),
            CopyPlan::ReadParts(8 << 20)
        );
        assert_eq!(copy_plan(&caps(true, false, false), 1 << 20), CopyPlan::Stream);
        // A whole-object copy without a size limit beats reading the bytes.
        assert_eq!(copy_plan(&caps(true, false, true), 6 * GIB), CopyPlan::Whole);
    }

    #[test]
    fn without_any_copy_or_multipart_the_bytes_stream() {
        assert_eq!(copy_plan(&caps(false, false, false), 6 * GIB), CopyPlan::Stream);
        assert_eq!(copy_plan(&caps(false, false, false), 0), CopyPlan::Stream);
    }

    #[test]
    fn read_parts_grow_to_fit_the_part_count() {
        let mut c = caps(true, false, false);
        c.multipart = Some(MultipartLimits {
            min_part: 1,
            max_part: GIB,
            max_parts: 100,
        });
        // 10 GiB in at most 100 parts: at least 103 MiB each.
        assert_eq!(copy_plan(&c, 10 * GIB), CopyPlan::ReadParts((10 * GIB).div_ceil(100)));
    }
}
