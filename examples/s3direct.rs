//! Direct S3 access for `scripts/bench.sh`: the "no FUSE" rows, and fast setup uploads.
//!
//! Reads go through byosfs's own S3 backend (`backend::s3`, whose GETs bypass the SDK's
//! per-request work); everything else uses the SDK with the backend's settings (checksums only
//! when required). The difference to a byosfs row is then the filesystem, not the HTTP stack.
//! Credentials and endpoint come from `BENCH_ENDPOINT`, `BENCH_AK`, `BENCH_SK`. Each command
//! prints one line of `name=value` pairs on stdout for the script to parse.
//!
//! ```text
//! s3direct get      --bucket B --key K [--concurrency 8] [--part 8MiB]   # whole object, ranged GETs
//! s3direct put      --bucket B --key K --size N [--file F] [--part 8MiB] [--concurrency 4]
//! s3direct rand     --bucket B --key K --bs N --count N                  # one at a time, random offsets
//! s3direct interleave --bucket B --key K [--chunk 1MiB]                  # two sequential readers
//! s3direct ttfb     --bucket B --key K [--count 5] [--len 65536]
//! s3direct list     --bucket B --prefix P
//! s3direct presign  --bucket B --key K                                # URL for ffmpeg
//! s3direct putdir   --bucket B --prefix P --dir D [--concurrency 1]
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use byosfs::backend::s3::{S3Backend, S3BackendConfig, S3ClientPool, S3Credentials};
use byosfs::backend::{Backend as _, ByteRange};
use byosfs::secret::Secret;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures::StreamExt as _;
use tokio::task::JoinSet;

const MIB: u64 = 1 << 20;

/// Command line of the direct client.
#[derive(Debug, Parser)]
struct Args {
    /// Bucket to use.
    #[arg(long, global = true, default_value = "bench")]
    bucket: String,
    /// Send upload bodies as `UNSIGNED-PAYLOAD` (byosfs's `payload_signing = "never"`, and its
    /// default over HTTPS) instead of hashing them into the signature.
    #[arg(long, global = true)]
    unsigned: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

/// One measurement or setup step.
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Read a whole object with `concurrency` ranged GETs of `part` bytes in flight.
    Get {
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value_t = 8 * MIB)]
        part: u64,
    },
    /// Multipart upload of `size` bytes (generated, or from `file`).
    Put {
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 0)]
        size: u64,
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long, default_value_t = 8 * MIB)]
        part: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// `count` reads of `bs` bytes at random aligned offsets, one at a time (fio iodepth=1).
    Rand {
        #[arg(long)]
        key: String,
        #[arg(long)]
        bs: u64,
        #[arg(long)]
        count: usize,
    },
    /// Two sequential readers (from 0 and from the middle) in `chunk`-sized GETs, in parallel.
    Interleave {
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = MIB)]
        chunk: u64,
    },
    /// Latency of `len` bytes at `count` random offsets: median.
    Ttfb {
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 5)]
        count: usize,
        #[arg(long, default_value_t = 65536)]
        len: u64,
    },
    /// List every object under `prefix`.
    List {
        #[arg(long)]
        prefix: String,
    },
    /// A presigned GET URL (for ffmpeg over HTTP: the direct media rows).
    Presign {
        #[arg(long)]
        key: String,
    },
    /// Upload every file under `dir` to `prefix` + relative path.
    Putdir {
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let line = rt.block_on(run(args))?;
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

fn client() -> anyhow::Result<Client> {
    let endpoint = std::env::var("BENCH_ENDPOINT").context("BENCH_ENDPOINT")?;
    let ak = std::env::var("BENCH_AK").context("BENCH_AK")?;
    let sk = std::env::var("BENCH_SK").context("BENCH_SK")?;
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .credentials_provider(Credentials::new(ak, sk, None, None, "bench"))
        .build();
    Ok(Client::from_conf(conf))
}

/// byosfs's S3 backend for `bucket`, with the mount's client settings.
async fn backend(bucket: &str) -> anyhow::Result<Arc<S3Backend>> {
    let cfg = S3BackendConfig {
        endpoint: Some(std::env::var("BENCH_ENDPOINT").context("BENCH_ENDPOINT")?),
        region: "us-east-1".to_owned(),
        force_path_style: true,
        bucket: bucket.to_owned(),
        credentials: S3Credentials::Static {
            access_key_id: std::env::var("BENCH_AK").context("BENCH_AK")?,
            secret_access_key: Secret::new(std::env::var("BENCH_SK").context("BENCH_SK")?),
            session_token: None,
        },
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(30),
        max_attempts: 1,
        sign_payload: true,
    };
    Ok(Arc::new(S3ClientPool::new().backend(&cfg).await?))
}

async fn run(args: Args) -> anyhow::Result<String> {
    let c = client()?;
    let b = args.bucket.as_str();
    let reader = backend(b).await?;
    let r = &reader;
    match args.cmd {
        Cmd::Get { key, concurrency, part } => {
            let size = object_size(&c, b, &key).await?;
            let t = Instant::now();
            let ranges: Vec<(u64, u64)> = (0..size.div_ceil(part))
                .map(|i| (i * part, ((i + 1) * part).min(size)))
                .collect();
            let n = fetch_ranges(r, &key, ranges, concurrency).await?;
            anyhow::ensure!(n == size, "read {n} of {size} bytes");
            Ok(rate_line(n, t.elapsed()))
        }
        Cmd::Put {
            key,
            size,
            file,
            part,
            concurrency,
        } => {
            let how = PutHow {
                part,
                concurrency,
                unsigned: args.unsigned,
            };
            put(&c, b, &key, size, file.as_deref(), how).await
        }
        Cmd::Rand { key, bs, count } => {
            let size = object_size(&c, b, &key).await?;
            let blocks = (size / bs).max(1);
            let mut rng = Lcg(0x9e37_79b9_7f4a_7c15);
            let mut lat = Vec::with_capacity(count);
            let t = Instant::now();
            for _ in 0..count {
                let off = rng.below(blocks) * bs;
                let t1 = Instant::now();
                get_range(r, &key, off, (off + bs).min(size)).await?;
                lat.push(t1.elapsed());
            }
            let total = t.elapsed();
            lat.sort();
            let iops = count as f64 / total.as_secs_f64();
            Ok(format!(
                "iops={iops:.1} mbps={:.1} p50_us={} p99_us={}",
                iops * bs as f64 / 1e6,
                pct(&lat, 50).as_micros(),
                pct(&lat, 99).as_micros()
            ))
        }
        Cmd::Interleave { key, chunk } => {
            let size = object_size(&c, b, &key).await?;
            let half = size / 2;
            let t = Instant::now();
            let mut set = JoinSet::new();
            for (start, end) in [(0, half), (half, size)] {
                let (r, key) = (reader.clone(), key.clone());
                set.spawn(async move {
                    let mut off = start;
                    while off < end {
                        let e = (off + chunk).min(end);
                        get_range(&r, &key, off, e).await?;
                        off = e;
                    }
                    anyhow::Ok(end - start)
                });
            }
            let mut n = 0;
            while let Some(r) = set.join_next().await {
                n += r??;
            }
            Ok(rate_line(n, t.elapsed()))
        }
        Cmd::Ttfb { key, count, len } => {
            let size = object_size(&c, b, &key).await?;
            let mut rng = Lcg(0x2545_f491_4f6c_dd1d);
            let mut lat = Vec::with_capacity(count);
            for _ in 0..count {
                let off = rng.below(size.saturating_sub(len).max(1));
                let t = Instant::now();
                get_range(r, &key, off, (off + len).min(size)).await?;
                lat.push(t.elapsed());
            }
            lat.sort();
            Ok(format!("median_ms={:.2}", pct(&lat, 50).as_secs_f64() * 1e3))
        }
        Cmd::List { prefix } => {
            let t = Instant::now();
            let mut n = 0u64;
            let mut pages = c.list_objects_v2().bucket(b).prefix(prefix).into_paginator().send();
            while let Some(page) = pages.next().await {
                n += page?.contents().len() as u64;
            }
            Ok(format!("count={n} secs={:.3}", t.elapsed().as_secs_f64()))
        }
        Cmd::Presign { key } => {
            let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(6 * 3600))?;
            let req = c.get_object().bucket(b).key(key).presigned(cfg).await?;
            Ok(req.uri().to_owned())
        }
        Cmd::Putdir {
            prefix,
            dir,
            concurrency,
        } => {
            let unsigned = args.unsigned;
            let mut files = Vec::new();
            walk(&dir, &mut files)?;
            let t = Instant::now();
            let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
            let mut set = JoinSet::new();
            let mut bytes = 0u64;
            for f in &files {
                let rel = f.strip_prefix(&dir)?.to_string_lossy().into_owned();
                let data = Bytes::from(std::fs::read(f)?);
                bytes += data.len() as u64;
                let (c, b, key) = (c.clone(), b.to_owned(), format!("{prefix}{rel}"));
                let permit = sem.clone().acquire_owned().await?;
                set.spawn(async move {
                    let _permit = permit;
                    let req = c.put_object().bucket(b).key(key).body(ByteStream::from(data));
                    if unsigned {
                        req.customize().disable_payload_signing().send().await?;
                    } else {
                        req.send().await?;
                    }
                    anyhow::Ok(())
                });
            }
            while let Some(r) = set.join_next().await {
                r??;
            }
            Ok(format!(
                "files={} bytes={bytes} secs={:.3}",
                files.len(),
                t.elapsed().as_secs_f64()
            ))
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            walk(&e.path(), out)?;
        } else {
            out.push(e.path());
        }
    }
    Ok(())
}

/// How a multipart upload is sent.
struct PutHow {
    part: u64,
    concurrency: usize,
    unsigned: bool,
}

async fn put(c: &Client, b: &str, key: &str, size: u64, file: Option<&Path>, how: PutHow) -> anyhow::Result<String> {
    let PutHow {
        part,
        concurrency,
        unsigned,
    } = how;
    let data: Bytes = match file {
        Some(f) => Bytes::from(std::fs::read(f)?),
        // One part-sized pattern, reused for every part: generation must not be measured.
        None => Bytes::from((0..part).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
    };
    let size = if file.is_some() { data.len() as u64 } else { size };
    let t = Instant::now();
    let up = c.create_multipart_upload().bucket(b).key(key).send().await?;
    let id = up.upload_id().context("no upload id")?.to_owned();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    let nparts = size.div_ceil(part).max(1);
    for i in 0..nparts {
        let len = (size - i * part).min(part);
        let body = if file.is_some() {
            data.slice(usize::try_from(i * part)?..usize::try_from(i * part + len)?)
        } else {
            data.slice(..usize::try_from(len)?)
        };
        let permit = sem.clone().acquire_owned().await?;
        let (c, b, key, id) = (c.clone(), b.to_owned(), key.to_owned(), id.clone());
        let pn = i32::try_from(i + 1)?;
        set.spawn(async move {
            let _permit = permit;
            let req = c
                .upload_part()
                .bucket(b)
                .key(key)
                .upload_id(id)
                .part_number(pn)
                .body(ByteStream::from(body));
            let r = if unsigned {
                req.customize().disable_payload_signing().send().await?
            } else {
                req.send().await?
            };
            anyhow::Ok(
                CompletedPart::builder()
                    .part_number(pn)
                    .set_e_tag(r.e_tag().map(str::to_owned))
                    .build(),
            )
        });
    }
    let mut parts = Vec::new();
    while let Some(r) = set.join_next().await {
        parts.push(r??);
    }
    parts.sort_by_key(|p| p.part_number());
    // The server's completion is timed apart: some servers (s3s-fs) copy every part there.
    let t_complete = Instant::now();
    c.complete_multipart_upload()
        .bucket(b)
        .key(key)
        .upload_id(id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await?;
    Ok(format!(
        "{} complete_secs={:.3}",
        rate_line(size, t.elapsed()),
        t_complete.elapsed().as_secs_f64()
    ))
}

async fn object_size(c: &Client, b: &str, key: &str) -> anyhow::Result<u64> {
    let h = c.head_object().bucket(b).key(key).send().await?;
    Ok(u64::try_from(h.content_length().unwrap_or(0))?)
}

/// GET `[start, end)`, body drained as it arrives; returns the bytes received.
async fn get_range(r: &S3Backend, key: &str, start: u64, end: u64) -> anyhow::Result<u64> {
    let mut body = r.get_range_stream(key, ByteRange::new(start, end), None).await?;
    let mut n = 0u64;
    while let Some(piece) = body.next().await {
        n += piece?.len() as u64;
    }
    Ok(n)
}

async fn fetch_ranges(
    r: &Arc<S3Backend>,
    key: &str,
    ranges: Vec<(u64, u64)>,
    concurrency: usize,
) -> anyhow::Result<u64> {
    let mut set = JoinSet::new();
    let mut total = 0;
    for (s, e) in ranges {
        if set.len() >= concurrency.max(1) {
            if let Some(n) = set.join_next().await {
                total += n??;
            }
        }
        let (r, key) = (r.clone(), key.to_owned());
        set.spawn(async move { get_range(&r, &key, s, e).await });
    }
    while let Some(n) = set.join_next().await {
        total += n??;
    }
    Ok(total)
}

fn rate_line(bytes: u64, d: Duration) -> String {
    format!(
        "bytes={bytes} secs={:.3} mbps={:.1}",
        d.as_secs_f64(),
        bytes as f64 / d.as_secs_f64() / 1e6
    )
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() - 1) * p / 100]
}

/// Deterministic offsets, so every run and every filesystem reads the same places.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}
