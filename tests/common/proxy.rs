//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1, placed between byosfs and a test S3 server.
//!
//! Every client connection carries exactly one request: the proxy reads the request head,
//! forces `Connection: close` on it and, unless a fault is drawn, forwards it over a fresh
//! upstream connection and pipes both directions until they close. The server then closes
//! after its response and the client opens a new connection for the next request, so faults
//! are decided per request without the proxy having to frame bodies.
//!
//! Faults (drawn per request with probability [`FaultPlan::fraction`]):
//! [`Fault::Reset`] closes the connection before reading anything, [`Fault::Drop`] closes it
//! after reading the request head, [`Fault::Status`] answers an S3-style error (503 SlowDown,
//! 500 InternalError, ...), [`Fault::Delay`] forwards after a pause, [`Fault::Hang`] never
//! answers, [`Fault::StallBody`] forwards only the first bytes of the response and then
//! stalls, [`Fault::FlipBody`] flips one bit of the request body, [`Fault::Trickle`] passes
//! the head and then one byte every few seconds. Hung connections end when the proxy stops.
//!
//! Bounded: heads over 64 KiB are refused, at most 256 connections are served at once (4096 on a link),
//! draining a refused request gives up after 5 s, and [`FaultProxy::stop`] (also on drop)
//! drops the runtime, cutting every connection.
//!
//! A [`Link`] makes the proxy a simulated wide-area link ([`FaultProxy::start_link`]): every
//! chunk of bytes is held for the one-way delay in each direction, a new connection first
//! waits one round trip (the TCP handshake), and an optional rate caps each direction for all
//! connections together. Delays are per chunk in flight, so a long transfer is delayed, not
//! slowed: bytes read at `t` are released at `t + delay` while later chunks are already on
//! their way (up to [`WINDOW`] bytes per connection and direction, like a TCP window). In
//! this mode connections are kept alive and no faults are drawn: it is a network, not a
//! fault injector. `examples/wanproxy.rs` runs the same code for `scripts/bench.sh --rtt`.

use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};

const MAX_HEAD: usize = 64 * 1024;
const MAX_CONNECTIONS: usize = 256;
/// Connections of a [`Link`] served at once: clients keep idle connections open in their
/// pools, so the bound is far above what they use at once.
const MAX_LINK_CONNECTIONS: usize = 4096;
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Bytes a [`Link`] holds in flight per connection and direction (a TCP window): a single
/// connection moves at most this much per one-way delay, 1.6 GB/s at 10 ms.
pub const WINDOW: usize = 16 << 20;
/// Largest chunk read at once by a [`Link`] pipe.
const CHUNK: usize = 64 * 1024;

/// A simulated network between the clients and the server (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Link {
    /// Delay of each direction (half the round trip).
    pub one_way: Duration,
    /// Bytes per second per direction, shared by all connections; `None`: unlimited.
    pub rate: Option<u64>,
}

impl Link {
    /// A link with round trip `rtt` and an optional rate in bytes per second.
    pub fn new(rtt: Duration, rate: Option<u64>) -> Self {
        Self {
            one_way: rtt / 2,
            rate: rate.filter(|&r| r > 0),
        }
    }
}

/// One direction of a [`Link`]: when the wire is free again (for the rate).
#[derive(Debug)]
struct Wire {
    link: Link,
    busy_until: Mutex<Instant>,
}

impl Wire {
    fn new(link: Link) -> Self {
        Self {
            link,
            busy_until: Mutex::new(Instant::now()),
        }
    }

    /// When `n` bytes read now arrive at the other end: after the wire has sent everything
    /// queued before them at the rate, plus the one-way delay.
    fn arrival(&self, n: usize) -> Instant {
        let now = Instant::now();
        let Some(rate) = self.link.rate else {
            return now + self.link.one_way;
        };
        let mut busy = self.busy_until.lock().unwrap();
        let start = (*busy).max(now);
        let done = start + Duration::from_secs_f64(n as f64 / rate as f64);
        *busy = done;
        done + self.link.one_way
    }
}

/// Copy `src` to `dst`, each chunk released at its arrival time on `wire`. Chunks are
/// timestamped when read, so throughput is not divided by the delay. Ends (shutting `dst`
/// down after the last chunk) when `src` closes or `dst` fails.
async fn delayed_copy<R, W>(mut src: R, mut dst: W, wire: Arc<Wire>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(WINDOW / CHUNK);
    let writer = tokio::spawn(async move {
        while let Some((at, data)) = rx.recv().await {
            tokio::time::sleep_until(at.into()).await;
            if dst.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = dst.shutdown().await;
    });
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if tx.send((wire.arrival(n), buf[..n].to_vec())).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// One way to fail a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection before reading the request (a reset / refused-like failure).
    Reset,
    /// Read the request head, then close without answering.
    Drop,
    /// Answer this HTTP status with an S3 error body, without contacting the server.
    Status(u16),
    /// Answer 503 SlowDown with `Retry-After: retry_after` (seconds), without contacting the
    /// server.
    SlowDown {
        /// The wait the answer asks for, in seconds.
        retry_after: u32,
    },
    /// Wait, then forward normally.
    Delay(Duration),
    /// Read the request and never answer (until the proxy stops).
    Hang,
    /// Forward, but pass only the first `after` bytes of the response, then stall.
    StallBody {
        /// Response bytes (head included) passed before stalling.
        after: usize,
    },
    /// Forward with one bit of the request body flipped (corruption in transit that TLS
    /// would have caught, and only a body checksum catches without it).
    FlipBody,
    /// Forward; answer with the response's `Content-Length` one larger (a HEAD reporting a
    /// size the object does not have; for answers without a body only).
    InflateLength,
    /// Forward; pass the response's head, then one byte every `every` (a HEAD's answer, which
    /// has no body, trickles from its status line on), until the client gives up.
    Trickle {
        /// Pause before each trickled byte.
        every: Duration,
    },
}

/// Which requests fail and how.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Fraction of requests that get a fault, 0.0 ..= 1.0.
    pub fraction: f64,
    /// Faults to draw from (uniformly); empty means no faults.
    pub faults: Vec<Fault>,
    /// Only requests with one of these methods (`GET`, `PUT`, ...) may fail; empty = all.
    pub methods: Vec<&'static str>,
    /// Only requests whose head contains this (ASCII case-insensitive) may fail.
    pub matching: Option<&'static str>,
}

impl FaultPlan {
    /// No faults: a transparent proxy.
    pub fn none() -> Self {
        Self {
            fraction: 0.0,
            faults: Vec::new(),
            methods: Vec::new(),
            matching: None,
        }
    }

    /// `fraction` of all requests fail with one of `faults`.
    pub fn random(fraction: f64, faults: &[Fault]) -> Self {
        Self {
            fraction,
            faults: faults.to_vec(),
            methods: Vec::new(),
            matching: None,
        }
    }

    /// Every request fails with `fault`.
    pub fn always(fault: Fault) -> Self {
        Self::random(1.0, &[fault])
    }

    /// Restrict faults to requests with these methods.
    pub fn for_methods(mut self, methods: &[&'static str]) -> Self {
        self.methods = methods.to_vec();
        self
    }

    /// Restrict faults to requests whose head (request line and headers) contains `text`
    /// (e.g. `partNumber=2&` for one part of each multipart upload).
    pub fn matching(mut self, text: &'static str) -> Self {
        self.matching = Some(text);
        self
    }
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    /// Simulated network (link mode); `None`: plain loopback, one request per connection.
    link: Option<Link>,
    /// The two directions of the link: client to server, server to client.
    wires: Option<(Arc<Wire>, Arc<Wire>)>,
    plan: Mutex<FaultPlan>,
    /// Faults forced on the next requests, ahead of the plan: (how many, which).
    forced: Mutex<Option<(u64, Fault)>>,
    rng: Mutex<u64>,
    requests: AtomicU64,
    faults: AtomicU64,
}

impl Shared {
    fn plan(&self) -> FaultPlan {
        self.plan.lock().unwrap().clone()
    }

    fn random(&self) -> u64 {
        let mut x = self.rng.lock().unwrap();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// Draw a fault for a request with `method` and `head` (`None` before the head is read).
    fn draw(&self, plan: &FaultPlan, method: Option<&str>, head: Option<&str>) -> Option<Fault> {
        {
            let mut forced = self.forced.lock().unwrap();
            if let Some((n, f)) = forced.as_mut() {
                let f = f.clone();
                *n -= 1;
                if *n == 0 {
                    *forced = None;
                }
                return Some(f);
            }
        }
        if plan.faults.is_empty() || plan.fraction <= 0.0 {
            return None;
        }
        if let Some(m) = method {
            if !plan.methods.is_empty() && !plan.methods.contains(&m) {
                return None;
            }
        }
        if let (Some(text), Some(head)) = (plan.matching, head) {
            if !head.to_ascii_lowercase().contains(&text.to_ascii_lowercase()) {
                return None;
            }
        }
        let roll = (self.random() % 1_000_000) as f64 / 1_000_000.0;
        if roll >= plan.fraction {
            return None;
        }
        let i = (self.random() % plan.faults.len() as u64) as usize;
        Some(plan.faults[i].clone())
    }
}

/// A running proxy; stopped on drop.
#[derive(Debug)]
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, to use as the S3 endpoint.
    pub endpoint: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Proxy to `upstream` (`http://127.0.0.1:PORT`), with no faults until [`Self::set_plan`].
    pub fn start(upstream: &str) -> FaultProxy {
        Self::start_with(upstream, None, "127.0.0.1:0")
    }

    /// A simulated network link to `upstream` (see the module docs), listening on `addr`
    /// (loopback).
    pub fn start_link(upstream: &str, link: Link, addr: &str) -> FaultProxy {
        Self::start_with(upstream, Some(link), addr)
    }

    fn start_with(upstream: &str, link: Option<Link>, addr: &str) -> FaultProxy {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = StdListener::bind(addr).expect("bind loopback");
        assert!(
            listener.local_addr().expect("local addr").ip().is_loopback(),
            "the proxy listens on loopback only"
        );
        listener.set_nonblocking(true).expect("nonblocking");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let wires = link.map(|l| (Arc::new(Wire::new(l)), Arc::new(Wire::new(l))));
        let shared = Arc::new(Shared {
            upstream,
            link,
            wires,
            plan: Mutex::new(FaultPlan::none()),
            forced: Mutex::new(None),
            rng: Mutex::new(0x2545_F491_4F6C_DD1D),
            requests: AtomicU64::new(0),
            faults: AtomicU64::new(0),
        });
        let (tx, rx) = oneshot::channel();
        let s2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".to_owned())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(accept_loop(listener, s2, rx));
                // Cuts every connection, hung ones included.
                rt.shutdown_background();
            })
            .expect("spawn proxy thread");
        FaultProxy {
            endpoint,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Replace the fault plan (applies to connections accepted from now on).
    pub fn set_plan(&self, plan: FaultPlan) {
        *self.shared.plan.lock().unwrap() = plan;
    }

    /// Fail exactly the next `n` requests with `fault` (then follow the plan again).
    pub fn fail_next(&self, n: u64, fault: Fault) {
        *self.shared.forced.lock().unwrap() = Some((n, fault));
    }

    /// Requests (connections) seen so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Faults injected so far (delays included).
    pub fn faults(&self) -> u64 {
        self.shared.faults.load(Ordering::Relaxed)
    }

    /// Stop listening and cut every connection. Idempotent.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(listener: StdListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let max = if shared.link.is_some() {
        MAX_LINK_CONNECTIONS
    } else {
        MAX_CONNECTIONS
    };
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = &mut stop => break,
        };
        let socket = tokio::select! {
            res = listener.accept() => match res {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = &mut stop => break,
        };
        let _ = socket.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            handle(socket, shared).await;
            drop(permit);
        });
    }
}

async fn handle(client: TcpStream, shared: Arc<Shared>) {
    if let (Some(link), Some((up, down))) = (shared.link, shared.wires.clone()) {
        shared.requests.fetch_add(1, Ordering::Relaxed);
        // The TCP handshake: the client's first bytes leave one round trip after it connected.
        tokio::time::sleep(link.one_way * 2).await;
        let Ok(upstream) = TcpStream::connect(&shared.upstream).await else {
            return;
        };
        let _ = upstream.set_nodelay(true);
        let (cr, cw) = client.into_split();
        let (ur, uw) = upstream.into_split();
        let to_server = tokio::spawn(delayed_copy(cr, uw, up));
        delayed_copy(ur, cw, down).await;
        let _ = to_server.await;
        return;
    }
    handle_request(client, shared).await;
}

async fn handle_request(mut client: TcpStream, shared: Arc<Shared>) {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let plan = shared.plan();
    // Without a method filter the fault is drawn before reading, so Reset can hit a
    // connection before any byte is read; with a filter Reset degrades to Drop.
    let forced = shared.forced.lock().unwrap().is_some();
    let early =
        ((plan.methods.is_empty() && plan.matching.is_none()) || forced).then(|| shared.draw(&plan, None, None));
    if let Some(Some(Fault::Reset)) = early {
        shared.faults.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let Some((head, rest)) = read_head(&mut client).await else {
        return;
    };
    let Some(method) = head.split(' ').next().map(str::to_owned) else {
        return;
    };
    let fault = match early {
        Some(f) => f,
        None => shared.draw(&plan, Some(&method), Some(&head)),
    };
    if fault.is_some() {
        shared.faults.fetch_add(1, Ordering::Relaxed);
    }
    match fault {
        Some(Fault::Drop | Fault::Reset) => return,
        Some(Fault::Hang) => {
            // Silent until the client gives up (or the proxy stops).
            drain(&mut client).await;
            return;
        }
        Some(Fault::Status(code)) => {
            answer_error(&mut client, code, &method, None).await;
            return;
        }
        Some(Fault::SlowDown { retry_after }) => {
            answer_error(&mut client, 503, &method, Some(retry_after)).await;
            return;
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    let Ok(mut upstream) = TcpStream::connect(&shared.upstream).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let mut rest = rest;
    if fault == Some(Fault::FlipBody) {
        if rest.is_empty() {
            let mut buf = vec![0u8; 64 * 1024];
            if let Ok(n) = client.read(&mut buf).await {
                rest.extend_from_slice(&buf[..n]);
            }
        }
        if let Some(b) = rest.last_mut() {
            *b ^= 0x01;
        }
    }
    let mut out = force_close(&head).into_bytes();
    out.extend_from_slice(&rest);
    if upstream.write_all(&out).await.is_err() {
        return;
    }
    match fault {
        Some(Fault::StallBody { after }) => {
            let (mut cr, mut cw) = client.into_split();
            let (mut ur, mut uw) = upstream.into_split();
            let up = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut uw).await;
            });
            let mut buf = vec![0u8; 64 * 1024];
            let mut passed = 0;
            while passed < after {
                let n = match ur.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n.min(after - passed),
                };
                if cw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                passed += n;
            }
            // Silent from here until the client gives up (closes) or the proxy stops.
            let _ = up.await;
        }
        Some(Fault::Trickle { every }) => {
            let (mut cr, mut cw) = client.into_split();
            let (mut ur, mut uw) = upstream.into_split();
            let up = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut uw).await;
            });
            // Read the whole response (bounded by what the test server sends), then pass it
            // on: the head at once (only the status line for a HEAD), the rest byte by byte.
            let mut resp = Vec::new();
            let _ = (&mut ur).take(64 << 20).read_to_end(&mut resp).await;
            let line_end = resp.windows(2).position(|w| w == b"\r\n").map_or(resp.len(), |p| p + 2);
            let head_end = resp
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(resp.len(), |p| p + 4);
            let at_once = if method == "HEAD" { line_end } else { head_end };
            if cw.write_all(&resp[..at_once]).await.is_ok() {
                for b in &resp[at_once..] {
                    tokio::time::sleep(every).await;
                    if cw.write_all(std::slice::from_ref(b)).await.is_err() {
                        break;
                    }
                }
            }
            up.abort();
        }
        Some(Fault::InflateLength) => {
            let (mut cr, mut cw) = client.into_split();
            let (mut ur, mut uw) = upstream.into_split();
            let up = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut uw).await;
            });
            // The upstream closes after its answer (`Connection: close`), whose head is all.
            let mut resp = Vec::new();
            let _ = (&mut ur).take(1 << 20).read_to_end(&mut resp).await;
            let text = String::from_utf8_lossy(&resp).into_owned();
            let mut out = String::with_capacity(text.len());
            for line in text.split_inclusive("\r\n") {
                let lower = line.to_ascii_lowercase();
                match lower.strip_prefix("content-length:").map(|v| v.trim().parse::<u64>()) {
                    Some(Ok(n)) => out.push_str(&format!("Content-Length: {}\r\n", n + 1)),
                    _ => out.push_str(line),
                }
            }
            let _ = cw.write_all(out.as_bytes()).await;
            up.abort();
        }
        _ => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    }
}

/// Read up to the end of the request head; returns the head (without the blank line) and any
/// bytes read past it.
async fn read_head(client: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).into_owned();
            return Some((head, buf[pos + 4..].to_vec()));
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    }
}

/// The head with any `Connection` header replaced by `Connection: close`, blank line included.
fn force_close(head: &str) -> String {
    let mut out = String::with_capacity(head.len() + 32);
    for line in head.split("\r\n") {
        if line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

async fn answer_error(client: &mut TcpStream, code: u16, method: &str, retry_after: Option<u32>) {
    let (reason, s3code) = match code {
        503 => ("Service Unavailable", "SlowDown"),
        500 => ("Internal Server Error", "InternalError"),
        429 => ("Too Many Requests", "TooManyRequests"),
        _ => ("Error", "InjectedFault"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{s3code}</Code><Message>injected by the test proxy</Message></Error>"
    );
    let retry_after = retry_after.map_or(String::new(), |s| format!("Retry-After: {s}\r\n"));
    let mut resp = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n{retry_after}Connection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        resp.push_str(&body);
    }
    if client.write_all(resp.as_bytes()).await.is_err() {
        return;
    }
    let _ = client.shutdown().await;
    // Read what the client still sends (a request body) so closing does not turn into a
    // reset that would destroy the answer before the client reads it.
    let _ = tokio::time::timeout(DRAIN_LIMIT, drain(client)).await;
}

/// Read and discard until the client closes.
async fn drain(client: &mut TcpStream) {
    let mut sink = vec![0u8; 64 * 1024];
    loop {
        match client.read(&mut sink).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}
