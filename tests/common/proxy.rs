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
//! stalls, [`Fault::Trickle`] passes the head and then one byte every few seconds. Hung
//! connections end when the proxy stops.
//!
//! Bounded: heads over 64 KiB are refused, at most 256 connections are served at once,
//! draining a refused request gives up after 5 s, and [`FaultProxy::stop`] (also on drop)
//! drops the runtime, cutting every connection.

use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};

const MAX_HEAD: usize = 64 * 1024;
const MAX_CONNECTIONS: usize = 256;
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// One way to fail a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection before reading the request (a reset / refused-like failure).
    Reset,
    /// Read the request head, then close without answering.
    Drop,
    /// Answer this HTTP status with an S3 error body, without contacting the server.
    Status(u16),
    /// Wait, then forward normally.
    Delay(Duration),
    /// Read the request and never answer (until the proxy stops).
    Hang,
    /// Forward, but pass only the first `after` bytes of the response, then stall.
    StallBody {
        /// Response bytes (head included) passed before stalling.
        after: usize,
    },
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
}

impl FaultPlan {
    /// No faults: a transparent proxy.
    pub fn none() -> Self {
        Self {
            fraction: 0.0,
            faults: Vec::new(),
            methods: Vec::new(),
        }
    }

    /// `fraction` of all requests fail with one of `faults`.
    pub fn random(fraction: f64, faults: &[Fault]) -> Self {
        Self {
            fraction,
            faults: faults.to_vec(),
            methods: Vec::new(),
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
}

#[derive(Debug)]
struct Shared {
    upstream: String,
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

    /// Draw a fault for a request with `method` (`None` before the head is read).
    fn draw(&self, plan: &FaultPlan, method: Option<&str>) -> Option<Fault> {
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
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = StdListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let shared = Arc::new(Shared {
            upstream,
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
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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

async fn handle(mut client: TcpStream, shared: Arc<Shared>) {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let plan = shared.plan();
    // Without a method filter the fault is drawn before reading, so Reset can hit a
    // connection before any byte is read; with a filter Reset degrades to Drop.
    let forced = shared.forced.lock().unwrap().is_some();
    let early = (plan.methods.is_empty() || forced).then(|| shared.draw(&plan, None));
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
        None => shared.draw(&plan, Some(&method)),
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
            answer_error(&mut client, code, &method).await;
            return;
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    let Ok(mut upstream) = TcpStream::connect(&shared.upstream).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
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

async fn answer_error(client: &mut TcpStream, code: u16, method: &str) {
    let (reason, s3code) = match code {
        503 => ("Service Unavailable", "SlowDown"),
        500 => ("Internal Server Error", "InternalError"),
        429 => ("Too Many Requests", "TooManyRequests"),
        _ => ("Error", "InjectedFault"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{s3code}</Code><Message>injected by the test proxy</Message></Error>"
    );
    let mut resp = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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
