//! A misbehaving S3 endpoint on 127.0.0.1, built for one misbehaviour at a time: listings
//! that loop or never end, GET bodies that ignore `Range` or trickle, 200s with garbage. It
//! answers every HEAD with 404 and counts the requests and body bytes it sends.
//!
//! Bounded: every response ends (a trickle stops after [`TRICKLE_BYTES`] bytes), and
//! [`HostileServer`]'s drop shuts its runtime down, cutting every connection.

use std::convert::Infallible;
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use tokio::sync::oneshot;

/// Bytes a trickling body sends before it ends.
pub const TRICKLE_BYTES: usize = 64;

/// What the server does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Every listing page holds one key, says "truncated" and gives the same token.
    ListRepeatsToken,
    /// Every listing page is empty, says "truncated" and gives a new token.
    ListEmptyForever,
    /// Listings answer 200 with bytes that are not XML.
    ListGarbage,
    /// GETs answer 200 with `len` bytes whatever range was asked (a server ignoring Range).
    GetIgnoresRange { len: usize },
    /// GETs send their headers, then one byte every `every`.
    GetTrickles { every: Duration },
}

/// The server; stops on drop.
#[derive(Debug)]
pub struct HostileServer {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    counters: Arc<Counters>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Counters {
    lists: AtomicU64,
    body_bytes: AtomicU64,
}

type Body = BoxBody<Bytes, Infallible>;

impl HostileServer {
    /// Start serving `how` on a free loopback port.
    pub fn start(how: Misbehaviour) -> HostileServer {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let counters = Arc::new(Counters::default());
        let (tx, mut rx) = oneshot::channel::<()>();
        let c2 = counters.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    let socket = tokio::select! {
                        r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                        _ = &mut rx => break,
                    };
                    let c = c2.clone();
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let c = c.clone();
                        async move { Ok::<_, Infallible>(answer(how, &c, &req)) }
                    });
                    let conn = http.serve_connection(TokioIo::new(socket), svc).into_owned();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
            });
            rt.shutdown_background();
        });
        HostileServer {
            endpoint,
            counters,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Listing requests answered.
    pub fn lists(&self) -> u64 {
        self.counters.lists.load(Ordering::Relaxed)
    }

    /// GET body bytes handed to the connection so far.
    pub fn body_bytes(&self) -> u64 {
        self.counters.body_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn full(status: u16, body: impl Into<Bytes>) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(status)
        .body(Full::new(body.into()).boxed())
        .expect("response")
}

fn answer(how: Misbehaviour, c: &Counters, req: &hyper::Request<hyper::body::Incoming>) -> hyper::Response<Body> {
    let query = req.uri().query().unwrap_or("");
    if req.method() == hyper::Method::HEAD {
        return full(404, Bytes::new());
    }
    if req.method() != hyper::Method::GET {
        return full(501, Bytes::new());
    }
    if query.contains("list-type=2") {
        let n = c.lists.fetch_add(1, Ordering::Relaxed);
        let prefix = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("prefix="))
            .unwrap_or("")
            .replace("%2F", "/");
        return match how {
            Misbehaviour::ListRepeatsToken => full(200, list_xml(&prefix, &[format!("{prefix}f{n}")], "same")),
            Misbehaviour::ListEmptyForever => full(200, list_xml(&prefix, &[], &format!("t{n}"))),
            Misbehaviour::ListGarbage => full(200, "\u{0}\u{1}not xml at all <<<"),
            _ => full(200, list_xml(&prefix, &[format!("{prefix}file.bin")], "")),
        };
    }
    match how {
        Misbehaviour::GetIgnoresRange { len } => {
            c.body_bytes.fetch_add(len as u64, Ordering::Relaxed);
            hyper::Response::builder()
                .status(200)
                .header("content-length", len)
                .header("etag", "\"e\"")
                .body(Full::new(Bytes::from(vec![7u8; len])).boxed())
                .expect("response")
        }
        Misbehaviour::GetTrickles { every } => {
            let stream = futures::stream::unfold(0usize, move |i| async move {
                if i >= TRICKLE_BYTES {
                    return None;
                }
                tokio::time::sleep(every).await;
                Some((Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"x"))), i + 1))
            });
            hyper::Response::builder()
                .status(206)
                .header("etag", "\"e\"")
                .body(StreamBody::new(stream).boxed())
                .expect("response")
        }
        _ => full(404, Bytes::new()),
    }
}

fn list_xml(prefix: &str, keys: &[String], next: &str) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    x.push_str(&format!(
        "<Name>media</Name><Prefix>{prefix}</Prefix><KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter><IsTruncated>{}</IsTruncated>",
        keys.len(),
        !next.is_empty()
    ));
    for k in keys {
        x.push_str(&format!(
            "<Contents><Key>{k}</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>\"e\"</ETag><Size>1048576</Size><StorageClass>STANDARD</StorageClass></Contents>"
        ));
    }
    if !next.is_empty() {
        x.push_str(&format!("<NextContinuationToken>{next}</NextContinuationToken>"));
    }
    x.push_str("</ListBucketResult>");
    x
}
