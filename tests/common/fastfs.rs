//! s3s-fs with two hot paths replaced: GetObject bodies and CompleteMultipartUpload.
//!
//! s3s-fs 0.14.1 streams a GetObject body as 4 KiB reads of a `tokio::fs::File`, each one a
//! blocking-pool task and a thread wakeup: on this 2-core machine the server then spends about
//! 10 s of CPU per GiB it serves, which caps every read row of the benchmark and every client
//! alike. [`FastFs`] keeps everything s3s-fs decides for a GET (key lookup, range checks,
//! ETag, metadata, errors) and only replaces the body with one blocking task that reads the
//! same byte range in 1 MiB chunks.
//!
//! Its CompleteMultipartUpload copies every part into the object through 64 KiB `tokio::fs`
//! reads and writes and hashes all of it again with MD5: about 190 MB/s on one core, 4-8 s
//! per GiB on this machine (docs/performance.md, "Sixth round"), during which every client only waits.
//! [`FastFs`] concatenates the parts with `std::io::copy`, which on Linux copies file to file
//! inside the kernel (`copy_file_range`), and builds the multipart ETag from the part MD5s
//! that s3s-fs's own UploadPart computed and returned (kept beside each part file), so no
//! byte is hashed twice. It writes the object, its metadata and its ETag to the same files,
//! in the same formats, as s3s-fs does, so every other operation reads them unchanged. Where
//! it cannot be sure it would do exactly that (conditional headers, keys with `.`/`..`/empty
//! segments, a part without its recorded MD5), it leaves the completion to s3s-fs. Every
//! other operation is s3s-fs's own.
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

/// An s3s-fs file system with fast GetObject bodies and multipart completion.
#[derive(Debug)]
pub struct FastFs {
    inner: s3s_fs::FileSystem,
    files: Layout,
}

impl FastFs {
    /// Serve the buckets under `root` (one directory each), as `s3s_fs::FileSystem::new` does.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, String> {
        let root = root.into();
        let inner = s3s_fs::FileSystem::new(&root).map_err(|e| format!("s3s-fs root: {e:?}"))?;
        let root = std::fs::canonicalize(&root).map_err(|e| format!("s3s-fs root: {e}"))?;
        Ok(Self {
            inner,
            files: Layout { root },
        })
    }
}

/// What [`Layout::complete`] needs of a CompleteMultipartUpload request.
struct Completion {
    bucket: String,
    key: String,
    upload_id: String,
    access_key: Option<String>,
    /// Part numbers and the ETags the client sent for them.
    parts: Vec<(i32, Option<String>)>,
}

/// S3's smallest part, except for the last one.
const MIN_PART: u64 = 5 * 1024 * 1024;

/// s3s-fs names upload files after a UUID it parses from the id; anything else is not its own
/// id and must not reach a path.
fn upload_id_ok(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Keys that s3s-fs maps to `root/bucket/key` unchanged (it resolves `.`, `..` and empty
/// segments virtually).
fn plain_key(key: &str) -> bool {
    key.split('/').all(|s| !matches!(s, "" | "." | ".."))
}

fn io_err(e: std::io::Error) -> s3s::S3Error {
    s3s::s3_error!(e, InternalError)
}

/// The files s3s-fs keeps under its root, as far as a GET or a completion touches them.
#[derive(Debug, Clone)]
struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Where the MD5 of a part is kept (beside s3s-fs's `.upload_id-{id}.part-{n}`).
    fn part_md5_path(&self, upload_id: &str, part: i32) -> PathBuf {
        self.root.join(format!(".upload_id-{upload_id}.part-{part}.md5"))
    }

    /// s3s-fs's name for a file of object metadata (`what`: `metadata` or `internal`).
    fn object_file(&self, bucket: &str, key: &str, upload: Option<&str>, what: &str) -> PathBuf {
        let enc = |s: &str| base64_simd::URL_SAFE_NO_PAD.encode_to_string(s);
        let u = upload.map(|u| format!(".upload-{u}")).unwrap_or_default();
        self.root
            .join(format!(".bucket-{}.object-{}{u}.{what}.json", enc(bucket), enc(key)))
    }

    /// A part's data file, as s3s-fs names it.
    fn part_path(&self, upload_id: &str, part: i32) -> PathBuf {
        self.root.join(format!(".upload_id-{upload_id}.part-{part}"))
    }

    /// s3s-fs's record of an open upload: the JSON of its creator's access key.
    fn upload_record(&self, upload_id: &str) -> PathBuf {
        self.root.join(format!(".upload-{upload_id}.json"))
    }
}

impl FastFs {
    /// Complete the upload as s3s-fs would, without copying bytes through user space or
    /// hashing them again; `None` when the request is one to leave to s3s-fs.
    async fn fast_complete(
        &self,
        req: &S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<Option<CompleteMultipartUploadOutput>> {
        let input = &req.input;
        if input.if_match.is_some()
            || input.if_none_match.is_some()
            || !plain_key(&input.key)
            || !upload_id_ok(&input.upload_id)
        {
            return Ok(None);
        }
        let Some(parts) = input.multipart_upload.as_ref().and_then(|m| m.parts.as_ref()) else {
            return Ok(None);
        };
        let mut list = Vec::with_capacity(parts.len());
        for p in parts {
            let Some(n) = p.part_number else { return Ok(None) };
            let etag = match &p.e_tag {
                Some(ETag::Strong(v) | ETag::Weak(v)) => Some(v.clone()),
                None => None,
            };
            list.push((n, etag));
        }
        let c = Completion {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            upload_id: input.upload_id.clone(),
            access_key: req.credentials.as_ref().map(|c| c.access_key.clone()),
            parts: list,
        };
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || files.complete(&c))
            .await
            .map_err(|e| s3s::s3_error!(InternalError, "{e}"))?
    }
}

impl Layout {
    fn complete(&self, c: &Completion) -> S3Result<Option<CompleteMultipartUploadOutput>> {
        let id = &c.upload_id;
        let owner: Option<String> = match std::fs::read(self.upload_record(id)) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| s3s::s3_error!(InternalError, "{e}"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(s3s::s3_error!(NoSuchUpload)),
            Err(e) => return Err(io_err(e)),
        };
        if owner != c.access_key {
            return Err(s3s::s3_error!(AccessDenied));
        }
        if c.parts.is_empty() {
            return Err(s3s::s3_error!(InvalidPart, "You must specify at least one part"));
        }
        // Check every part before anything changes, so a refused completion can be retried.
        if c.parts.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(s3s::s3_error!(InvalidPartOrder));
        }
        let mut md5s = Vec::with_capacity(c.parts.len());
        for (i, (n, etag)) in c.parts.iter().enumerate() {
            let Ok(md5) = std::fs::read_to_string(self.part_md5_path(id, *n)) else {
                // Uploaded some other way (UploadPartCopy): s3s-fs hashes it.
                return Ok(None);
            };
            if etag.as_ref().is_some_and(|e| *e != md5) {
                return Err(s3s::s3_error!(InvalidPart, "part {n}: ETag does not match"));
            }
            let len = std::fs::metadata(self.part_path(id, *n))
                .map_err(|_| s3s::s3_error!(InvalidPart, "part {n} was not uploaded"))?
                .len();
            if i + 1 < c.parts.len() && len < MIN_PART {
                return Err(s3s::s3_error!(EntityTooSmall));
            }
            let mut raw = [0u8; 16];
            for (k, b) in raw.iter_mut().enumerate() {
                *b = md5
                    .get(2 * k..2 * k + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| s3s::s3_error!(InternalError, "part {n}: bad MD5 record"))?;
            }
            md5s.push(raw);
        }
        let object = self.root.join(&c.bucket).join(&c.key);
        if let Some(dir) = object.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        // A `.tmp.*.internal.part` name, which s3s-fs removes at start-up if this is cut short.
        let tmp = self.root.join(format!(".tmp.fastfs-{id}.internal.part"));
        let copied = (|| {
            let mut out = std::fs::File::create(&tmp)?;
            for (n, _) in &c.parts {
                let mut part = std::fs::File::open(self.part_path(id, *n))?;
                std::io::copy(&mut part, &mut out)?;
            }
            std::fs::rename(&tmp, &object)
        })();
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(e));
        }
        let mut all = <md5::Md5 as md5::Digest>::new();
        for raw in &md5s {
            md5::Digest::update(&mut all, raw);
        }
        let hex: String = md5::Digest::finalize(all).iter().map(|b| format!("{b:02x}")).collect();
        let e_tag = format!("{hex}-{}", md5s.len());
        // The object's attributes, saved at CreateMultipartUpload, become the object's own.
        let meta = self.object_file(&c.bucket, &c.key, Some(id), "metadata");
        let meta_final = self.object_file(&c.bucket, &c.key, None, "metadata");
        if std::fs::rename(&meta, &meta_final).is_err() {
            let _ = std::fs::remove_file(&meta_final);
        }
        // A fresh record: checksums kept for an earlier object of this key no longer apply.
        let info = serde_json::json!({ "e_tag": e_tag }).to_string();
        let info_path = self.object_file(&c.bucket, &c.key, None, "internal");
        let info_tmp = self.root.join(format!(".tmp.fastfs-{id}.info.internal.part"));
        std::fs::write(&info_tmp, info)
            .and_then(|()| std::fs::rename(&info_tmp, &info_path))
            .map_err(io_err)?;
        let _ = std::fs::remove_file(self.upload_record(id));
        for (n, _) in &c.parts {
            let _ = std::fs::remove_file(self.part_path(id, *n));
            let _ = std::fs::remove_file(self.part_md5_path(id, *n));
        }
        Ok(Some(CompleteMultipartUploadOutput {
            bucket: Some(c.bucket.clone()),
            key: Some(c.key.clone()),
            e_tag: Some(ETag::Strong(e_tag)),
            ..Default::default()
        }))
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
macro_rules! fast_fs_s3 {
    ($($method:ident: $input:ident => $output:ident),* $(,)?) => {
        #[async_trait::async_trait]
        impl S3 for FastFs {
            $(
                async fn $method(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    self.inner.$method(req).await
                }
            )*

            async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
                // s3s-fs resolves `.`, `..` and empty segments virtually; such keys keep its
                // own body rather than risk reading another file.
                let plain = plain_key(&req.input.key);
                let path = self.files.root.join(&req.input.bucket).join(&req.input.key);
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

            async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
                let md5_path = upload_id_ok(&req.input.upload_id)
                    .then(|| self.files.part_md5_path(&req.input.upload_id, req.input.part_number));
                let resp = self.inner.upload_part(req).await?;
                if let (Some(path), Some(ETag::Strong(md5))) = (md5_path, &resp.output.e_tag) {
                    // A part whose MD5 could not be kept is completed by s3s-fs instead.
                    let _ = std::fs::write(path, md5);
                }
                Ok(resp)
            }

            async fn complete_multipart_upload(
                &self,
                req: S3Request<CompleteMultipartUploadInput>,
            ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
                match self.fast_complete(&req).await? {
                    Some(output) => Ok(S3Response::new(output)),
                    None => self.inner.complete_multipart_upload(req).await,
                }
            }
        }
    };
}

fast_fs_s3! {
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
    upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput,
    list_parts: ListPartsInput => ListPartsOutput,
    abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput,
}
