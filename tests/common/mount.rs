//! A real byosfs mount for tests: the release/debug binary as a child process, a config file
//! written for the test, a temporary mount point, and cleanup by PID on drop.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether real mounts can run here. Outside CI a missing `/dev/fuse` skips loudly; under
/// `CI=true` it is a failure.
pub fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists() && which("fusermount3");
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but FUSE is unusable (/dev/fuse or fusermount3 missing): mount tests cannot be skipped in CI"
        );
        eprintln!("SKIPPING mount test: /dev/fuse or fusermount3 missing (install fuse3)");
    }
    ok
}

/// Whether `cmd` is on PATH.
pub fn which(cmd: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// A mounted byosfs.
#[derive(Debug)]
pub struct Mount {
    child: Option<Child>,
    mountpoint: PathBuf,
    /// Holds the config, the mount point and the local backend roots.
    pub dir: tempfile::TempDir,
    stderr_path: PathBuf,
}

impl Mount {
    /// Mount with `config` (TOML text). `env` is passed to the process (credentials).
    pub fn start(config: &str, env: &[(&str, &str)]) -> Mount {
        Self::start_prepared(config, env, |_| {})
    }

    /// [`Mount::start`], calling `prepare` with the test directory (holding `mnt`, the
    /// config and the backend roots) just before byosfs starts.
    pub fn start_prepared(config: &str, env: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Mount {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("byosfs.toml");
        std::fs::write(&cfg, config).expect("write config");
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).expect("mountpoint");
        prepare(dir.path());
        let stderr_path = dir.path().join("byosfs.log");
        let log = std::fs::File::create(&stderr_path).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_byosfs"));
        cmd.arg("mount").arg("--config").arg(&cfg).arg(&mountpoint);
        cmd.env(
            "RUST_LOG",
            std::env::var("BYOSFS_TEST_LOG").unwrap_or_else(|_| "byosfs=info".into()),
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn byosfs");
        let mut m = Mount {
            child: Some(child),
            mountpoint,
            dir,
            stderr_path,
        };
        m.wait_mounted();
        m
    }

    fn wait_mounted(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if is_mounted(&self.mountpoint) {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("byosfs exited before mounting ({status}):\n{}", self.log());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("byosfs did not mount within 20 s:\n{}", self.log());
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The process id of the byosfs process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What byosfs logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Unmount and wait for the process to exit; returns its log.
    pub fn unmount(&mut self) -> String {
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("fusermount3").arg("-u").arg(&self.mountpoint).status();
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("fusermount3").arg("-uz").arg(&self.mountpoint).status();
        }
        self.log()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Whether `path` is a mount point right now.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*p))
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

/// sha256 of bytes, hex.
pub fn sha256(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(data))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Deterministic pseudo-random bytes (xorshift), so files differ in every block.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A `[backends.s3]` table for `endpoint` (bucket `media`, path style, keys from the
/// `TEST_AK`/`TEST_SK` variables that [`Mount::start_s3`] sets), followed by `rest`: the
/// test's own `[cache]`/`[write]` tables (they may come after it) and `[[tenants]]`.
pub fn s3_config(endpoint: &str, backend_extra: &str, rest: &str) -> String {
    format!(
        r#"
[backends.s3]
type = "s3"
provider = "custom"
endpoint = "{endpoint}"
region = "us-east-1"
force_path_style = true
bucket = "media"
credentials = {{ env = {{ access_key_id = "TEST_AK", secret_access_key = "TEST_SK" }} }}
{backend_extra}
{rest}
"#
    )
}

impl Mount {
    /// Mount `config` with the test server's credentials in `TEST_AK`/`TEST_SK`.
    pub fn start_s3(config: &str, server: &super::s3server::TestS3Server) -> Mount {
        Mount::start(
            config,
            &[("TEST_AK", &server.access_key), ("TEST_SK", &server.secret_key)],
        )
    }
}

/// Close `f` and return what `close(2)` said: a drop ignores it, and on byosfs a close is
/// where a commit (or a write-back hand-off) reports its failure.
#[allow(dead_code)]
#[allow(unsafe_code)]
pub fn close_checked(f: std::fs::File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd`; nothing else owns or closes it.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
