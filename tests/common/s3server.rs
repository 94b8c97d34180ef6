//! A real S3 server (s3s + s3s-fs) on 127.0.0.1 with signature checking, for tests.
//!
//! It runs on its own tokio runtime in a background thread, so tests using any runtime (or
//! none, or child processes) can talk to it. [`TestS3Server::stop`] drops the runtime, which
//! closes the listener and cuts every open connection: a "server died" event.
//!
//! Limits of s3s-fs (gate tests on them): objects are files, so `a` and `a/b` cannot both
//! exist and `dir/` markers cannot be stored; listings omit ETags and scan the whole bucket;
//! HEAD on a directory answers 500; `GetObject` ignores `If-Match`; `ListMultipartUploads` is
//! not implemented; aborting an unknown upload answers AccessDenied.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use byosfs::backend::s3::{S3BackendConfig, S3Credentials};
use byosfs::secret::Secret;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::{S3Auth, SecretKey};
use s3s::service::S3ServiceBuilder;
use s3s::{s3_error, S3Result};
use tokio::sync::oneshot;

/// A running s3s-fs server; stopped on drop.
#[derive(Debug)]
pub struct TestS3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Access key the server accepts.
    pub access_key: String,
    /// Secret key the server accepts.
    pub secret_key: String,
    /// Directory holding the buckets (one subdirectory each).
    pub root: PathBuf,
    counters: Arc<Counters>,
    keys: Keys,
    _dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestS3Server {
    /// Start a server with the given (empty) buckets.
    pub fn start(buckets: &[&str]) -> TestS3Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        for b in buckets {
            std::fs::create_dir(root.join(b)).expect("create bucket dir");
        }
        let access_key = "test-access-key".to_owned();
        let secret_key = "test-secret-key-do-not-use".to_owned();
        // Bind here so the port is known before returning, and the server is accepting
        // (queueing in the backlog) before any test request is made.
        let listener = StdListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let (tx, rx) = oneshot::channel();
        let fs_root = root.clone();
        let counters = Arc::new(Counters::default());
        let c2 = counters.clone();
        let keys: Keys = Arc::new(std::sync::RwLock::new(vec![(access_key.clone(), secret_key.clone())]));
        let k2 = keys.clone();
        let thread = std::thread::Builder::new()
            .name("test-s3-server".to_owned())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("server runtime");
                rt.block_on(serve(listener, fs_root, k2, c2, rx));
                // Dropping the runtime cancels every connection task mid-flight.
                rt.shutdown_background();
            })
            .expect("spawn server thread");
        TestS3Server {
            endpoint,
            access_key,
            secret_key,
            root,
            _dir: dir,
            counters,
            keys,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Accept exactly these `(access key, secret key)` pairs from now on (key rotation: both
    /// during the overlap, then only the new one).
    pub fn set_keys(&self, keys: &[(&str, &str)]) {
        *self.keys.write().unwrap() = keys.iter().map(|(a, s)| ((*a).to_owned(), (*s).to_owned())).collect();
    }

    /// Object GET requests served so far.
    pub fn get_requests(&self) -> u64 {
        self.counters.gets.load(Ordering::Relaxed)
    }

    /// Requests of any kind served so far.
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::Relaxed)
    }

    /// Objects published so far (whole-object PUTs and completed multipart uploads).
    pub fn publishes(&self) -> u64 {
        self.counters.publishes.load(Ordering::Relaxed)
    }

    /// Requests served so far, by operation (subtract two snapshots to count an operation).
    pub fn ops(&self) -> super::opcount::OpSnapshot {
        self.counters.ops.snapshot()
    }

    /// Hold every request for `d` before serving it (a distant server, without a proxy): the
    /// requests a client keeps in flight then show in [`Self::max_in_flight`].
    pub fn set_delay(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counters.delay_us.store(us, Ordering::Relaxed);
    }

    /// Most requests in flight at once since the last [`Self::reset_max_in_flight`].
    pub fn max_in_flight(&self) -> u64 {
        self.counters.max_in_flight.load(Ordering::Relaxed)
    }

    /// Start counting [`Self::max_in_flight`] afresh.
    pub fn reset_max_in_flight(&self) {
        self.counters.max_in_flight.store(0, Ordering::Relaxed);
    }

    /// Stop listening and cut open connections. Idempotent.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// A path-style SDK client for direct upload/inspection.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(&self.access_key, &self.secret_key, None, None, "test"))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// The object `key` of bucket `media`, straight from the server (bypassing byosfs);
    /// `None` if it does not exist.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let client = self.client();
        rt.block_on(async {
            let out = client.get_object().bucket("media").key(key).send().await.ok()?;
            Some(out.body.collect().await.ok()?.into_bytes().to_vec())
        })
    }

    /// Backend configuration for `bucket` on this server, with short timeouts.
    pub fn s3_config(&self, bucket: &str) -> S3BackendConfig {
        S3BackendConfig {
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".to_owned(),
            force_path_style: true,
            bucket: bucket.to_owned(),
            credentials: S3Credentials::Static {
                access_key_id: self.access_key.clone(),
                secret_access_key: Secret::new(self.secret_key.clone()),
                session_token: None,
            },
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_attempts: 2,
            // Both ways of sending bodies get the conformance suite: s3s-fs unsigned (the
            // HTTPS default), moto signed (the plain-HTTP default).
            sign_payload: false,
        }
    }
}

impl Drop for TestS3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The key pairs the server accepts, changeable while it runs.
type Keys = Arc<std::sync::RwLock<Vec<(String, String)>>>;

/// Like s3s's `SimpleAuth` over a changeable key list; an unknown access key is
/// `InvalidAccessKeyId` as on AWS (SimpleAuth answers `NotSignedUp`).
struct AwsLikeAuth(Keys);

#[async_trait::async_trait]
impl S3Auth for AwsLikeAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        let keys = self.0.read().map_err(|_| s3_error!(InternalError))?;
        match keys.iter().find(|(a, _)| a == access_key) {
            Some((_, s)) => Ok(SecretKey::from(s.clone())),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// Requests seen by the server.
#[derive(Debug, Default)]
pub struct Counters {
    /// Object GETs (ranged or whole), not listings.
    pub gets: AtomicU64,
    /// All requests.
    pub requests: AtomicU64,
    /// Objects published: whole-object PUTs (not parts, not copies) and completed multipart
    /// uploads.
    pub publishes: AtomicU64,
    /// All requests, by operation.
    pub ops: super::opcount::OpCounts,
    /// Delay before serving each request, in microseconds (see `set_delay`).
    pub delay_us: AtomicU64,
    /// Requests being served now, and the most at once.
    pub in_flight: AtomicU64,
    /// See `in_flight`.
    pub max_in_flight: AtomicU64,
}

async fn serve(
    listener: StdListener,
    root: PathBuf,
    keys: Keys,
    counters: Arc<Counters>,
    mut stop: oneshot::Receiver<()>,
) {
    let fs = super::fastfs::FastFs::new(&root).expect("s3s-fs root");
    let service = {
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(AwsLikeAuth(keys));
        b.build()
    };
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    // Count object GETs (not listings) so tests can assert request counts at the server.
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let is_list = req
            .uri()
            .query()
            .is_some_and(|q| q.contains("list-type") || q.contains("uploads"));
        let has_key = req.uri().path().trim_start_matches('/').contains('/');
        if req.method() == hyper::Method::GET && has_key && !is_list {
            counters.gets.fetch_add(1, Ordering::Relaxed);
        }
        let query = req.uri().query().unwrap_or("");
        let whole_put = req.method() == hyper::Method::PUT
            && has_key
            && !query.contains("partNumber=")
            && !req.headers().contains_key("x-amz-copy-source");
        let completion = req.method() == hyper::Method::POST && query.contains("uploadId=");
        if whole_put || completion {
            counters.publishes.fetch_add(1, Ordering::Relaxed);
        }
        counters.requests.fetch_add(1, Ordering::Relaxed);
        counters.ops.count(&req);
        let service = service.clone();
        let counters = counters.clone();
        async move {
            let now = counters.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            counters.max_in_flight.fetch_max(now, Ordering::Relaxed);
            let delay = counters.delay_us.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_micros(delay)).await;
            }
            let res = hyper::service::Service::call(&service, req).await;
            counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            res
        }
    });
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let socket = tokio::select! {
            res = listener.accept() => match res {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = &mut stop => break,
        };
        // Without this, s3s-fs's small responses wait ~40 ms on delayed ACK.
        let _ = socket.set_nodelay(true);
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
