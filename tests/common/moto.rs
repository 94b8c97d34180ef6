//! A moto S3 server (`python3 -m moto.server`) on 127.0.0.1, for cases s3s-fs cannot serve
//! (directory markers next to objects, `a` and `a/b` together, `If-Match`, listing uploads).
//!
//! Install: `pip install 'moto[server]'` (moto 5.x; pulls Flask and Werkzeug). When
//! python3 or moto is missing, [`MotoServer::start`] returns `None` and callers skip,
//! saying so on stderr. moto accepts any credentials, so auth tests use s3s instead.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use byosfs::backend::s3::{S3BackendConfig, S3Credentials};
use byosfs::secret::Secret;

/// A running moto server; killed (by PID) on drop.
#[derive(Debug)]
pub struct MotoServer {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    port: u16,
    child: Child,
}

impl MotoServer {
    /// Start moto and create `buckets`; `None` if moto is not installed or fails to start.
    pub fn start(buckets: &[&str]) -> Option<MotoServer> {
        // Ask the OS for a free port; the tiny race with another process is acceptable in tests.
        let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut server = MotoServer {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = server.child.try_wait() {
                return None; // Exited: moto missing or broken.
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for b in buckets {
            if !server.create_bucket(b) {
                return None;
            }
        }
        Some(server)
    }

    /// Create a bucket with a raw path-style PUT (moto does not check signatures).
    fn create_bucket(&mut self, bucket: &str) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let req = format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).unwrap_or(0);
        buf[..n].starts_with(b"HTTP/1.1 200") || buf[..n].starts_with(b"HTTP/1.0 200")
    }

    /// Backend configuration for `bucket` (any credentials work on moto).
    pub fn s3_config(&self, bucket: &str) -> S3BackendConfig {
        S3BackendConfig {
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".to_owned(),
            force_path_style: true,
            bucket: bucket.to_owned(),
            credentials: S3Credentials::Static {
                access_key_id: "testing".to_owned(),
                secret_access_key: Secret::new("testing"),
                session_token: None,
            },
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(20),
            max_attempts: 2,
            // Both ways of sending bodies get the conformance suite: s3s-fs unsigned (the
            // HTTPS default), moto signed (the plain-HTTP default).
            sign_payload: true,
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // `Child::kill` signals exactly this PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
