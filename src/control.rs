//! The control socket of a running mount: `byosfs reload` and `byosfs status` talk to it.
//!
//! A Unix stream socket, mode 0600 in a 0700 directory, that accepts only the mount's own
//! uid and root (checked on each connection with `SO_PEERCRED`, so a socket path made
//! reachable by mistake still refuses other users). One request per connection: a line of
//! JSON ([`Request`]) in, a line of JSON ([`Response`]) out.
//!
//! Default path, named after the mount point (so `--mountpoint` finds it):
//! `$XDG_RUNTIME_DIR/byosfs/<escaped mount point>.sock` for a user, `/run/byosfs/...` for root
//! (without `XDG_RUNTIME_DIR`: `/tmp/byosfs-<uid>/...`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

/// A request to the mount.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Re-read the config file.
    Reload {
        /// Apply even if probes of new or changed storage fail.
        force: bool,
    },
    /// Report the mount's state.
    Status,
    /// Make a tenant read-only (`frozen`) or writable again, until it is re-pointed or the
    /// mount restarts (`byosfs migrate --freeze`).
    Freeze {
        /// Tenant name.
        tenant: String,
        /// Read-only or not.
        frozen: bool,
    },
    /// Wait (bounded) until the tenant's files closed with write-back are uploaded
    /// (`byosfs migrate --freeze`, before the final pass).
    SettleWriteBack {
        /// Tenant name.
        tenant: String,
    },
    /// Point a tenant at another backend of the running config (`byosfs migrate --switch`).
    Switch {
        /// Tenant name.
        tenant: String,
        /// Backend name.
        backend: String,
        /// Full key prefix there.
        prefix: String,
    },
}

/// The mount's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// Human-readable outcome (the reason when `ok` is false).
    pub message: String,
    /// Structured result (reload report, status).
    #[serde(default)]
    pub body: serde_json::Value,
}

/// What the socket serves.
#[async_trait::async_trait]
pub trait ControlHandler: Send + Sync {
    /// Answer one request.
    async fn handle(&self, request: Request) -> Response;
}

/// Longest request line accepted (a request is a few dozen bytes).
const MAX_REQUEST: usize = 4096;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// `/mnt/media files` → `mnt-media\x20files`: the mount point as one file name, as
/// `systemd-escape --path` would (lossless enough to tell mounts apart; long paths are
/// hashed to stay within the 108-byte socket path limit).
fn escape_mountpoint(mountpoint: &Path) -> String {
    let s = mountpoint.to_string_lossy();
    let trimmed = s.trim_matches('/');
    let mut out = String::new();
    for c in trimmed.chars() {
        match c {
            '/' => out.push('-'),
            c if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':') => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    if out.len() > 60 {
        // FNV-1a, stable across builds (the client computes the same name).
        let h = s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        out = format!("{}-{h:016x}", out.chars().take(40).collect::<String>());
    }
    out
}

/// The default socket directory for `uid`: root's `/run/byosfs`; a user's
/// `$XDG_RUNTIME_DIR/byosfs`; a system service's `$RUNTIME_DIRECTORY` (systemd's
/// `RuntimeDirectory=byosfs` makes it `/run/byosfs`, where root's client looks too); else
/// `/tmp/byosfs-<uid>`.
fn default_dir(uid: u32) -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if uid == 0 {
        return PathBuf::from("/run/byosfs");
    }
    if let Some(d) = var("XDG_RUNTIME_DIR") {
        return d.join("byosfs");
    }
    // systemd may list several directories, separated by ':'; the first is ours.
    if let Some(d) = var("RUNTIME_DIRECTORY") {
        if let Some(first) = d.to_string_lossy().split(':').next().filter(|s| !s.is_empty()) {
            return PathBuf::from(first);
        }
    }
    PathBuf::from(format!("/tmp/byosfs-{uid}"))
}

/// The default control socket of the mount at `mountpoint` (canonical) run by `uid`.
pub fn default_socket_path(mountpoint: &Path, uid: u32) -> PathBuf {
    default_dir(uid).join(format!("{}.sock", escape_mountpoint(mountpoint)))
}

/// Paths a client tries for `mountpoint`: its own default, then root's.
pub fn candidate_paths(mountpoint: &Path, uid: u32) -> Vec<PathBuf> {
    let mut v = vec![default_socket_path(mountpoint, uid)];
    if uid != 0 {
        v.push(default_socket_path(mountpoint, 0));
    }
    v
}

/// This process's effective uid.
pub fn euid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is this process's effective uid (no unsafe libc call needed).
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

/// A listening control socket; the file is removed on drop.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl ControlSocket {
    /// Bind `path` (mode 0600; its directory is created 0700). A stale socket file left by a
    /// crashed mount is replaced; one that still answers is not (another mount owns it).
    /// Must run inside the tokio runtime.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            }
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use by another running mount", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self {
            path: path.to_owned(),
            listener: Some(listener),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serve connections until the runtime shuts down. Each connection is answered in its
    /// own task; peers other than `owner` and root are refused before reading anything.
    pub fn serve(&mut self, owner: u32, handler: Arc<dyn ControlHandler>) {
        let Some(listener) = self.listener.take() else { return };
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, owner, handler).await {
                        debug!(error = %e, "control connection ended");
                    }
                });
            }
        });
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer(stream: UnixStream, owner: u32, handler: Arc<dyn ControlHandler>) -> std::io::Result<()> {
    let peer = stream.peer_cred()?.uid();
    let (read, mut write) = stream.into_split();
    if peer != owner && peer != 0 {
        warn!(
            peer_uid = peer,
            "control socket: refused a connection from another user"
        );
        let r = Response {
            ok: false,
            message: format!("permission denied: uid {peer} is neither the mount's owner ({owner}) nor root"),
            body: serde_json::Value::Null,
        };
        return send(&mut write, &r).await;
    }
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST as u64);
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request not sent in time"))??;
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Ok(req) => handler.handle(req).await,
        Err(e) => Response {
            ok: false,
            message: format!("bad request: {e}"),
            body: serde_json::Value::Null,
        },
    };
    send(&mut write, &response).await
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, r: &Response) -> std::io::Result<()> {
    let mut text = serde_json::to_string(r).map_err(std::io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

/// Send `request` to the socket at `path` and wait (up to `timeout`) for the answer. Used by
/// the CLI, which has no runtime.
pub fn call(path: &Path, request: &Request, timeout: Duration) -> std::io::Result<Response> {
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut text = serde_json::to_string(request).map_err(std::io::Error::other)?;
    text.push('\n');
    // A refused peer is answered before it has sent anything, and the server closes: the
    // write then fails, but the refusal is waiting to be read.
    let written = stream.write_all(text.as_bytes());
    let mut line = String::new();
    let read = BufReader::new(stream).read_line(&mut line);
    if line.trim().is_empty() {
        written?;
        read?;
    }
    serde_json::from_str(line.trim()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unreadable answer from {}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_follow_the_mount_point() {
        assert_eq!(escape_mountpoint(Path::new("/mnt/media")), "mnt-media");
        assert_eq!(escape_mountpoint(Path::new("/mnt/a b")), "mnt-a\\x20b");
        assert_eq!(escape_mountpoint(Path::new("/")), "-");
        let long = escape_mountpoint(Path::new(&format!("/{}", "x".repeat(200))));
        assert!(long.len() < 70, "{long}");
        assert_eq!(
            default_socket_path(Path::new("/mnt/m"), 0),
            PathBuf::from("/run/byosfs/mnt-m.sock")
        );
    }

    struct Echo;
    #[async_trait::async_trait]
    impl ControlHandler for Echo {
        async fn handle(&self, request: Request) -> Response {
            Response {
                ok: true,
                message: format!("{request:?}"),
                body: serde_json::Value::Null,
            }
        }
    }

    #[test]
    fn a_request_gets_its_answer_and_the_socket_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("c.sock");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut sock = rt.block_on(async { ControlSocket::bind(&path) }).unwrap();
        rt.block_on(async { sock.serve(euid(), Arc::new(Echo)) });
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let r = call(&path, &Request::Reload { force: true }, Duration::from_secs(5)).unwrap();
        assert!(r.ok && r.message.contains("force: true"), "{r:?}");
        // A second bind on a live socket is refused rather than stealing it.
        assert!(rt.block_on(async { ControlSocket::bind(&path) }).is_err());
        drop(sock);
        assert!(!path.exists());
    }
}
