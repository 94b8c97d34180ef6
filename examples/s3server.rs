//! A loopback S3 server (s3s + s3s-fs) for `scripts/bench.sh`.
//!
//! Same stack as the test server in `tests/common/s3server.rs`, as a standalone process so
//! byosfs, rclone, s3fs and the direct client all talk to one server, and its CPU time can
//! be read from `/proc` on its own. Sets `TCP_NODELAY` on every connection: without it the
//! small responses of s3s-fs wait ~40 ms on delayed ACK, which would cap every metadata row.
//!
//! ```text
//! BENCH_AK=... BENCH_SK=... cargo run --release --example s3server -- \
//!     --root DIR --addr 127.0.0.1:0 --endpoint-file FILE [--bucket NAME]...
//! ```
//!
//! Prints nothing; writes `http://127.0.0.1:PORT` to `--endpoint-file` once accepting.
//! `GET /_bench/requests` (no signature; `_` is not valid in a bucket name, so no bucket can
//! collide) answers the requests served so far by operation, one line of `name=value` pairs
//! (`tests/common/opcount.rs`): the bench's requests-per-operation rows.

use std::path::PathBuf;

#[path = "../tests/common/fastfs.rs"]
#[allow(unreachable_pub)]
mod fastfs;
#[path = "../tests/common/opcount.rs"]
#[allow(unreachable_pub, dead_code)]
mod opcount;

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// Command line of the bench S3 server.
#[derive(Debug, Parser)]
struct Args {
    /// Directory holding the buckets (one subdirectory each).
    #[arg(long)]
    root: PathBuf,
    /// Address to listen on; loopback only.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: std::net::SocketAddr,
    /// File to write the endpoint URL to once the listener is bound.
    #[arg(long)]
    endpoint_file: PathBuf,
    /// Buckets to create (empty directories) before serving.
    #[arg(long)]
    bucket: Vec<String>,
    /// Tokio worker threads of the server.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.addr.ip().is_loopback(),
        "the bench server listens on loopback only"
    );
    let ak = std::env::var("BENCH_AK").context("BENCH_AK")?;
    let sk = std::env::var("BENCH_SK").context("BENCH_SK")?;
    for b in &args.bucket {
        std::fs::create_dir_all(args.root.join(b)).with_context(|| format!("create bucket {b}"))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(serve(args, ak, sk))
}

async fn serve(args: Args, ak: String, sk: String) -> anyhow::Result<()> {
    let fs = fastfs::FastFs::new(&args.root).map_err(anyhow::Error::msg)?;
    let service = {
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(ak, sk));
        b.build()
    };
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    // Write then rename, so a reader never sees a partial URL.
    let tmp = args.endpoint_file.with_extension("tmp");
    std::fs::write(&tmp, &endpoint)?;
    std::fs::rename(&tmp, &args.endpoint_file)?;
    let counts = Arc::new(opcount::OpCounts::default());
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let service = service.clone();
        let counts = counts.clone();
        async move {
            if req.uri().path() == "/_bench/requests" {
                let body = format!("{}\n", counts.snapshot());
                return Ok(hyper::Response::new(s3s::Body::from(body)));
            }
            counts.count(&req);
            hyper::service::Service::call(&service, req).await
        }
    });
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let socket = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => continue,
        };
        let _ = socket.set_nodelay(true);
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
