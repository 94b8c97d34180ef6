//! s3s-fs with GetObject bodies read in 1 MiB chunks.
//!
//! s3s-fs 0.14.1 streams a GetObject body as 4 KiB reads of a `tokio::fs::File`, each one a
//! blocking-pool task and a thread wakeup: on this 2-core machine the server then spends about
//! 10 s of CPU per GiB it serves, which caps every read row of the benchmark and every client
//! alike. [`FastGet`] keeps everything s3s-fs decides for a GET (key lookup, range checks,
//! ETag, metadata, errors) and only replaces the body with one blocking task that reads the
//! same byte range in 1 MiB chunks. Every other operation is s3s-fs's own.
//!
//! Included by path from `tests/common/s3server.rs` and `examples/s3server.rs`, so the tests and
//! the benchmark serve objects the same way.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, S3};

/// Body chunk: large enough that a chunk's wakeup and syscall cost is small per byte, small
/// enough that a short range GET does not read far past its end.
const CHUNK: usize = 1 << 20;

/// An s3s-fs file system whose GetObject bodies are read in large chunks.
#[derive(Debug)]
pub struct FastGet {
    inner: s3s_fs::FileSystem,
    root: PathBuf,
}

impl FastGet {
    /// Serve the buckets under `root` (one directory each), as `s3s_fs::FileSystem::new` does.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, String> {
        let root = root.into();
        let inner = s3s_fs::FileSystem::new(&root).map_err(|e| format!("s3s-fs root: {e:?}"))?;
        let root = std::fs::canonicalize(&root).map_err(|e| format!("s3s-fs root: {e}"))?;
        Ok(Self { inner, root })
    }
}

/// Receives the chunks a blocking reader task sends.
struct ChunkStream {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
}

impl futures::Stream for ChunkStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Stream `len` bytes of `path` from `start`, one chunk at a time. Stops when the receiver is
/// dropped (the client went away).
fn read_chunks(path: PathBuf, start: u64, len: u64) -> ChunkStream {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let mut file = match std::fs::File::open(&path).and_then(|mut f| f.seek(SeekFrom::Start(start)).map(|_| f)) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
            let mut buf = BytesMut::zeroed(n);
            let chunk = match file.read_exact(&mut buf) {
                Ok(()) => Ok(buf.freeze()),
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
            left -= n as u64;
        }
    });
    ChunkStream { rx }
}

/// Methods passed to s3s-fs unchanged.
macro_rules! fast_get_s3 {
    ($($method:ident: $input:ident => $output:ident),* $(,)?) => {
        #[async_trait::async_trait]
        impl S3 for FastGet {
            $(
                async fn $method(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    self.inner.$method(req).await
                }
            )*

            async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
                // s3s-fs resolves `.`, `..` and empty segments virtually; such keys keep its
                // own body rather than risk reading another file.
                let plain = req.input.key.split('/').all(|s| !matches!(s, "" | "." | ".."));
                let path = self.root.join(&req.input.bucket).join(&req.input.key);
                let range = req.input.range;
                let mut resp = self.inner.get_object(req).await?;
                if !plain {
                    return Ok(resp);
                }
                // s3s-fs checked the range against the same file; redo it for the offsets.
                let len = std::fs::metadata(&path).map_err(|e| s3s::s3_error!(e, NoSuchKey))?.len();
                let span = match range {
                    None => 0..len,
                    Some(r) => r.check(len)?,
                };
                resp.output.body = Some(StreamingBlob::wrap(read_chunks(path, span.start, span.end - span.start)));
                Ok(resp)
            }
        }
    };
}

fast_get_s3! {
    create_bucket: CreateBucketInput => CreateBucketOutput,
    copy_object: CopyObjectInput => CopyObjectOutput,
    delete_bucket: DeleteBucketInput => DeleteBucketOutput,
    delete_object: DeleteObjectInput => DeleteObjectOutput,
    delete_objects: DeleteObjectsInput => DeleteObjectsOutput,
    get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput,
    head_bucket: HeadBucketInput => HeadBucketOutput,
    head_object: HeadObjectInput => HeadObjectOutput,
    list_buckets: ListBucketsInput => ListBucketsOutput,
    list_objects: ListObjectsInput => ListObjectsOutput,
    list_objects_v2: ListObjectsV2Input => ListObjectsV2Output,
    put_object: PutObjectInput => PutObjectOutput,
    create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput,
    upload_part: UploadPartInput => UploadPartOutput,
    upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput,
    list_parts: ListPartsInput => ListPartsOutput,
    complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput,
    abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput,
}
