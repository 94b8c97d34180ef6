//! Configuration: a TOML file → validated, fully resolved, typed [`Config`].
//!
//! Pipeline: `toml` + serde into `raw` structs (unknown keys and wrong types are errors, with
//! their line) → `validate` applies defaults and presets, checks every rule and collects *all*
//! problems → [`Config`], in which nothing is optional that has a default, sizes are bytes,
//! durations are [`Duration`]s, tenants know their backend and full key prefix, and
//! credentials have been read (environment variables and secrets files are read at load time,
//! so a typo fails `byosfs check`, not the first upload).
//!
//! Errors look like `config.toml:14: tenants[2].backend: unknown backend "r3" (defined: "r2",
//! "local")` (0-based array index) and never contain secret values. This module depends on
//! nothing else in the crate except [`crate::secret`]; `app` translates it into the
//! per-layer configs.

mod checks;
mod credentials;
mod dal;
mod overlap;
mod provider;
mod raw;
mod tenant_files;
mod tenants;
pub(crate) mod units;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use credentials::Credentials;
pub use provider::Provider;

/// Smallest S3 multipart part (except the last). Same value as `backend::MIN_PART_SIZE`,
/// repeated because config must not depend on the backend layer.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Largest S3 multipart part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Absolute path of the file this was loaded from.
    pub source: PathBuf,
    /// `tenants_dir`, absolute: a directory of one-tenant files whose tenants follow the
    /// `[[tenants]]` of the file in [`Config::tenants`]. `None` when not set.
    pub tenants_dir: Option<PathBuf>,
    /// FUSE mount options.
    pub mount: MountConfig,
    /// Read path: block cache and read-ahead.
    pub cache: CacheConfig,
    /// Write path: multipart uploads and staging.
    pub write: WriteConfig,
    /// Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Backends by name. Every backend here is referenced by at least one tenant or not
    /// (unused ones are kept, with a warning logged).
    pub backends: BTreeMap<String, BackendConfig>,
    /// Tenants in file order (then the tenant files of `tenants_dir` in name order); names
    /// are unique.
    pub tenants: Vec<TenantConfig>,
}

/// `[mount]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountConfig {
    /// Let other users access the mount (`allow_other`; needs `user_allow_other` in
    /// /etc/fuse.conf for non-root). Default false.
    pub allow_other: bool,
    /// Refuse all writes on every tenant. Default false.
    pub read_only: bool,
    /// Default owner of files; `None`: the uid of the mounting process.
    pub uid: Option<u32>,
    /// Default group of files; `None`: the gid of the mounting process.
    pub gid: Option<u32>,
    /// Filesystem name shown in `mount`/`df`. Default "byosfs".
    pub fs_name: String,
    /// How long the kernel may cache attributes. Default 1s.
    pub attr_ttl: Duration,
    /// How long the kernel may cache name lookups. Default 1s.
    pub entry_ttl: Duration,
    /// FUSE event-loop threads. Default 4.
    pub threads: usize,
    /// Requests handled at once, all tenants together. Default 1024.
    pub max_requests: usize,
    /// Percent of every shared limit (requests in flight, write memory, staging space) one
    /// tenant may hold, so a tenant whose storage hangs cannot stall the others. Default 50.
    pub tenant_share: u8,
    /// Control socket of `byosfs reload`/`status` (absolute); `None`: the default path
    /// named after the mount point (see `control::default_socket_path`).
    pub control_socket: Option<PathBuf>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Address serving Prometheus `/metrics`; `None` (default): no endpoint.
    pub listen: Option<std::net::SocketAddr>,
}

/// `[cache]`: the read path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Block cache budget in bytes. Default 512 MiB.
    pub memory: u64,
    /// Cache block size in bytes, a power of two ≤ `memory`. Default 1 MiB: the kernel's read
    /// size on a root mount, so a read is one block (a zero-copy reply); small reads after a seek
    /// GET exactly their bytes whatever the block size.
    pub block_size: u64,
    /// First read-ahead window of a sequential stream. Default 1 MiB.
    pub readahead_initial: u64,
    /// Read-ahead window cap (the window doubles up to this). Default 64 MiB.
    pub readahead_max: u64,
    /// Sequential streams tracked per open file. Default 4.
    pub max_streams: usize,
    /// How long object metadata (size, ETag, listings) is trusted. Default 1s.
    pub metadata_ttl: Duration,
    /// How long "no such object" is trusted. Default 1s.
    pub negative_ttl: Duration,
    /// Directory of the disk block cache (absolute), kept across mounts; `None`: no disk
    /// cache (the default).
    pub disk_dir: Option<PathBuf>,
    /// Hard cap on the disk cache's bytes, ≥ `block_size`. Default 10 GiB.
    pub disk_size: u64,
}

/// `[write]`: the write path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteConfig {
    /// Multipart part size in bytes, in [5 MiB, 5 GiB]. Default 8 MiB. With S3's 10 000
    /// part limit this caps a file at `part_size * 10 000` (80 GB at the default).
    pub part_size: u64,
    /// Write buffer budget in bytes shared by all open files, ≥ `part_size`. Default 256 MiB.
    pub memory: u64,
    /// Parts uploaded concurrently per file. Default 4.
    pub max_concurrent_parts: usize,
    /// Directory for data that must be rewritten before upload (seeking writers);
    /// `None`: a private directory under the system temp dir. Absolute.
    pub staging_dir: Option<PathBuf>,
    /// Staging disk budget in bytes. Default 10 GiB.
    pub staging_limit: u64,
    /// Largest directory rename (in objects copied) that is allowed. Default 1000.
    pub max_rename_entries: usize,
}

/// A storage backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// An S3-compatible service.
    S3(S3Config),
    /// A local directory used as a bucket.
    Local(LocalConfig),
    /// WebDAV, Azure Blob Storage, Google Cloud Storage or Google Drive (through OpenDAL).
    Dal(DalBackendConfig),
}

impl BackendConfig {
    /// The `type` value, also the backend type `status` and metrics show.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::S3(_) => "s3",
            Self::Local(_) => "local",
            Self::Dal(d) => d.kind.name(),
        }
    }

    /// Backend-wide key prefix, "" or ending in "/".
    pub fn prefix(&self) -> &str {
        match self {
            Self::S3(s) => &s.prefix,
            Self::Local(l) => &l.prefix,
            Self::Dal(d) => &d.prefix,
        }
    }
}

/// `type` of a [`DalBackendConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DalKind {
    /// `type = "webdav"`.
    Webdav,
    /// `type = "azblob"`: Azure Blob Storage.
    Azblob,
    /// `type = "gcs"`: Google Cloud Storage.
    Gcs,
    /// `type = "gdrive"`: Google Drive.
    Gdrive,
}

impl DalKind {
    /// The `type` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Webdav => "webdav",
            Self::Azblob => "azblob",
            Self::Gcs => "gcs",
            Self::Gdrive => "gdrive",
        }
    }
}

/// `[backends.NAME]` with `type = "webdav"`, `"azblob"`, `"gcs"` or `"gdrive"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DalBackendConfig {
    /// Which store.
    pub kind: DalKind,
    /// WebDAV root URL (required there); for Azure and GCS an endpoint override (emulators);
    /// for Drive the base URL replacing Google's API and OAuth hosts (tests, proxies).
    pub endpoint: Option<String>,
    /// Azure container or GCS bucket; empty for WebDAV; Drive's root folder path ("" = My Drive).
    pub container: String,
    /// WebDAV user name or Azure storage account name.
    pub account: Option<String>,
    /// Backend-wide key prefix, "" or ending in "/"; already included in each tenant's prefix.
    pub prefix: String,
    /// Secrets read at load time: `password`/`token` (WebDAV), `account_key`/`sas_token`
    /// (Azure), `service_account_json` (GCS, the contents of `service_account_file`),
    /// `client_id`/`client_secret`/`refresh_token` (Drive).
    pub secrets: BTreeMap<String, crate::secret::Secret>,
}

/// `[backends.NAME]` with `type = "s3"`, presets applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The preset the values were derived from.
    pub provider: Provider,
    /// Endpoint URL (`http(s)://host[:port][/path]`); `None`: AWS resolves it from the region.
    pub endpoint: Option<String>,
    /// Signing region.
    pub region: String,
    /// Path-style (`host/bucket/key`) instead of virtual-hosted addressing.
    pub force_path_style: bool,
    /// Bucket name (non-empty).
    pub bucket: String,
    /// Backend-wide key prefix, "" or ending in "/"; already included in each tenant's prefix.
    pub prefix: String,
    /// Resolved credentials.
    pub credentials: Credentials,
    /// Per-attempt timeout of one request. Default 60s.
    pub request_timeout: Duration,
    /// TCP/TLS connect timeout. Default 5s.
    pub connect_timeout: Duration,
    /// Attempts per request including the first, ≥ 1. Default 3.
    pub max_attempts: u32,
    /// Whether upload bodies are covered by the SigV4 signature. Default `auto`.
    pub payload_signing: PayloadSigning,
    /// The service honours `If-None-Match: *` on PutObject and CompleteMultipartUpload, so
    /// exclusive creates are atomic across clients. Default: the provider preset's
    /// [`Provider::conditional_writes`].
    pub conditional_writes: bool,
    /// Checksum each upload body carries (`checksum`; see [`ChecksumSetting`]).
    pub checksum: ChecksumSetting,
    /// Base URL of public reads (an R2 custom domain, a CDN) for `byosfs url`; ends in `/`.
    pub public_url_base: Option<String>,
}

/// `checksum` of an S3 backend: what each PutObject and UploadPart carries for the service to
/// verify the body it received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumSetting {
    /// CRC32C where the provider verifies it (aws, r2, minio), else Content-MD5; none when
    /// payloads are signed, whose SigV4 SHA-256 the service verifies already.
    #[default]
    Auto,
    /// `x-amz-checksum-crc32c` (hardware CRC: cheap).
    Crc32c,
    /// `Content-MD5` (~1.5 s of CPU per GiB).
    Md5,
    /// None.
    None,
}

/// `payload_signing` of an S3 backend: whether SigV4 signs the SHA-256 of each upload body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadSigning {
    /// Sign over plain HTTP, where nothing else protects the bytes in transit; send
    /// `UNSIGNED-PAYLOAD` over HTTPS, where TLS does (the hash costs ~0.5 s of CPU per GiB).
    #[default]
    Auto,
    /// Always hash and sign upload bodies.
    Always,
    /// Never: for trusted plain-HTTP links (loopback, a sidecar proxy).
    Never,
}

impl PayloadSigning {
    /// Whether to sign bodies sent to `endpoint` (`None`: AWS's own endpoints, always HTTPS).
    pub fn signs(self, endpoint: Option<&str>) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => endpoint.is_some_and(|e| e.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://"))),
        }
    }
}

/// `[backends.NAME]` with `type = "local"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// Absolute root directory (relative paths in the file are resolved against the config
    /// file's directory). May not exist yet: the app creates it.
    pub root: PathBuf,
    /// Backend-wide key prefix, "" or ending in "/"; already included in each tenant's prefix.
    pub prefix: String,
    /// Total deadline of one operation on the disk (`request_timeout`, default 300 s): a root
    /// on a filesystem that stops answering (an NFS hard mount) fails its requests with a
    /// timeout instead of holding them, and their tenant's slots, forever.
    pub request_timeout: Duration,
}

/// One `[[tenants]]` entry, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantConfig {
    /// Directory name under the mount point; a valid single path component.
    pub name: String,
    /// Key of this tenant's backend in [`Config::backends`].
    pub backend: String,
    /// Full key prefix within the bucket/root (backend prefix + tenant prefix, or
    /// `"<name>/"` for tenants placed on the default backend without a prefix). "" or
    /// ending in "/"; never contains "." or ".." segments; no two tenants on the same
    /// storage have equal or nested prefixes.
    pub prefix: String,
    /// Refuse writes in this tenant (also forced by [`MountConfig::read_only`]).
    pub read_only: bool,
    /// Owner of this tenant's files; falls back to [`MountConfig::uid`].
    pub uid: Option<u32>,
    /// Group of this tenant's files; falls back to [`MountConfig::gid`].
    pub gid: Option<u32>,
    /// Permission bits of the tenant's directories (files get the same bits without execute).
    /// `None` when not configured: 0o755, or 0o700 when the mount has `allow_other` (decided
    /// where the mount is set up, after command-line overrides). With `posix_metadata`, only
    /// for what has no stored mode.
    pub mode: Option<u32>,
    /// Store mode, owner and group per file and directory (s3fs's `x-amz-meta-mode`/`uid`/
    /// `gid`), and keep symlinks and special files. Default on; effective on S3 backends only.
    pub posix_metadata: bool,
    /// Headers for the web, URLs and limits (issue 22).
    pub web: TenantWeb,
    /// Crash-safe write-back: `close()` returns once the file is staged and journaled
    /// locally; the upload follows in the background. Default off.
    pub write_back: bool,
}

/// A tenant's web-serving settings and platform limits. Limits are platform policy for what
/// is written through this mount, not protection against writers that reach the bucket
/// directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantWeb {
    /// Cache-Control stored with every object.
    pub cache_control: Option<String>,
    /// Content-Type by lower-case extension, ahead of the built-in table.
    pub content_types: BTreeMap<String, String>,
    /// Cache-Control by lower-case extension, ahead of `cache_control`.
    pub cache_control_by_extension: BTreeMap<String, String>,
    /// Base URL for `byosfs url` (ends in `/`), ahead of the backend's.
    pub public_url_base: Option<String>,
    /// Largest file a write may make (EFBIG beyond).
    pub max_file_size: Option<u64>,
    /// Bytes the tenant may hold (EDQUOT beyond).
    pub quota: Option<u64>,
    /// How often usage is recounted from a listing (objects written by other clients).
    pub quota_recount: Duration,
    /// Only these lower-case extensions may be created (`None`: any).
    pub allowed_extensions: Option<Vec<String>>,
    /// These lower-case extensions may not be created.
    pub denied_extensions: Vec<String>,
}

impl TenantConfig {
    /// Permission bits of the tenant: as configured, else 0755, or 0700 when other users can
    /// reach the mount (`allow_other`), so no tenant is shared with them unless it says so.
    pub fn effective_mode(&self, allow_other: bool) -> u16 {
        let default: u16 = if allow_other { 0o700 } else { 0o755 };
        self.mode
            .and_then(|m| u16::try_from(m & 0o7777).ok())
            .unwrap_or(default)
    }
}

impl Config {
    /// Read, parse and validate `path`. Relative paths inside are resolved against the
    /// file's directory; environment variables and secrets files are read now.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parse and validate `text` as if it had been read from `path` (used for error
    /// messages and to resolve relative paths).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        validate::parse(text, path, &|var| std::env::var(var).ok())
    }

    /// The tenant called `name` (a linear search: for tests and one-off lookups).
    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// The backend a tenant uses (always present in a validated config).
    pub fn backend_of(&self, tenant: &TenantConfig) -> Option<&BackendConfig> {
        self.backends.get(&tenant.backend)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        /// The path given.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file has syntax errors, unknown keys, wrong types or invalid values. All problems
    /// found are kept; the message lists the first [`MAX_LISTED_ISSUES`], one per line, then
    /// how many more there are.
    #[error("{}", Issues(.0))]
    Invalid(Vec<ConfigIssue>),
}

impl ConfigError {
    /// The individual problems (empty for [`ConfigError::Read`]).
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid(issues) => issues,
        }
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The config file, as given.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted path of the offending key, e.g. `tenants[2].backend` (may be empty for syntax
    /// errors).
    pub field: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Problems listed in a [`ConfigError::Invalid`] message. A generated config can hold
/// thousands of the same mistake; the first hundred show the pattern, and a message of
/// 100,000 lines would bury it.
pub const MAX_LISTED_ISSUES: usize = 100;

struct Issues<'a>(&'a [ConfigIssue]);

impl fmt::Display for Issues<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().take(MAX_LISTED_ISSUES).enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        if let Some(more) = self.0.len().checked_sub(MAX_LISTED_ISSUES).filter(|m| *m > 0) {
            write!(f, "\n... and {more} more")?;
        }
        Ok(())
    }
}
