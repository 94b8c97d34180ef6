//! Raw config → [`Config`]: defaults, presets, path resolution and every validation rule.
//!
//! The validator keeps going after a problem (using placeholder values) so that one run
//! reports everything wrong with a file; a `Config` is returned only when no issue was found.
//! Defaults live here, next to the rule that uses them; the doc comments on the typed structs
//! and `config.example.toml` repeat them for readers.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::checks::{
    check_endpoint, check_url_base, field_at, has_control, normalize_path, normalize_prefix, LineIndex,
};
use super::credentials::{self, Credentials, RawCredentials};
use super::provider::{self, PresetInput, Provider};
use super::raw::{BackendKind, RawBackend, RawCache, RawConfig, RawMount, RawWrite};
use super::tenants::TenantInput;
use super::units::{ByteSize, DurationValue};
use super::{
    BackendConfig, CacheConfig, Config, ConfigError, ConfigIssue, LocalConfig, MountConfig, S3Config, WriteConfig,
    MAX_PART_SIZE, MIN_PART_SIZE,
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
/// A local backend's default total deadline per operation: generous, since one operation may
/// copy a multi-GiB part.
const LOCAL_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Smallest cache block: one page; smaller blocks only add per-block overhead.
const MIN_BLOCK_SIZE: u64 = 4 * KIB;

/// Backend names listed in an "unknown backend" message: enough to spot a typo, and a
/// config of 1,000 backends and 1,000 bad tenants still makes 1,000 short messages.
const LISTED_BACKENDS: usize = 20;

/// Parse and validate; `env` looks up environment variables.
pub(super) fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut v = Validator {
        sources: vec![Source {
            file: path.to_owned(),
            lines: LineIndex::new(text),
        }],
        issues: Vec::new(),
        invalid_backends: BTreeSet::new(),
        defined: None,
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span();
            let field = span.as_ref().map(|s| field_at(text, s.start)).unwrap_or_default();
            v.push(span, field, e.message().trim_end());
            return Err(ConfigError::Invalid(v.issues));
        }
    };
    let source = match std::path::absolute(path) {
        Ok(p) => normalize_path(&p),
        Err(e) => {
            v.push(None, "", format!("cannot resolve the config file's directory: {e}"));
            return Err(ConfigError::Invalid(v.issues));
        }
    };
    let base = source
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let config = v.config(raw, source, &base, env);
    if v.issues.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(v.issues))
    }
}

/// A file issues can point into: the config file (index 0) or one tenant file.
pub(super) struct Source {
    pub(super) file: PathBuf,
    pub(super) lines: LineIndex,
}

pub(super) struct Validator {
    pub(super) sources: Vec<Source>,
    pub(super) issues: Vec<ConfigIssue>,
    /// Backends defined in the file that failed validation.
    invalid_backends: BTreeSet<String>,
    /// The "defined: ..." list, built once (the backends do not change while tenants are
    /// checked, and every unknown-backend message repeats it).
    defined: Option<String>,
}

impl Validator {
    pub(super) fn push(&mut self, span: Option<Range<usize>>, field: impl Into<String>, message: impl Into<String>) {
        self.push_in(0, span, field, message);
    }

    /// An issue in `sources[source]`.
    pub(super) fn push_in(
        &mut self,
        source: usize,
        span: Option<Range<usize>>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let Some(src) = self.sources.get(source) else { return };
        self.issues.push(ConfigIssue {
            file: src.file.clone(),
            line: span.map(|s| src.lines.line(s.start)),
            field: field.into(),
            message: message.into(),
        });
    }

    pub(super) fn line(&self, source: usize, offset: usize) -> usize {
        self.sources.get(source).map_or(0, |s| s.lines.line(offset))
    }

    /// "line 14" within the same file, "tenants.d/acme.toml:1" in another one.
    pub(super) fn place(&self, from: usize, (source, line): (usize, usize)) -> String {
        match self.sources.get(source) {
            Some(s) if source != from => format!("{}:{line}", s.file.display()),
            _ => format!("line {line}"),
        }
    }

    fn config(&mut self, raw: RawConfig, source: PathBuf, base: &Path, env: &dyn Fn(&str) -> Option<String>) -> Config {
        let mut mount = self.mount(raw.mount);
        mount.control_socket = mount.control_socket.map(|p| normalize_path(&base.join(p)));
        let metrics = self.metrics(raw.metrics);
        let cache = self.cache(raw.cache, base);
        let write = self.write(raw.write, base);
        let mut backends = BTreeMap::new();
        let mut locations = BTreeMap::new();
        for (name, backend) in raw.backends {
            match self.backend(&name, backend, base, env) {
                Some((config, location)) => {
                    locations.insert(name.clone(), location);
                    backends.insert(name, config);
                }
                None => {
                    self.invalid_backends.insert(name);
                }
            }
        }
        let default_backend = raw.defaults.backend.and_then(|b| {
            if backends.contains_key(b.get_ref()) || self.backend_defined_but_invalid(&b) {
                Some(b.into_inner())
            } else {
                let msg = format!("unknown backend {:?} ({})", b.get_ref(), self.defined(&backends));
                self.push(Some(b.span()), "defaults.backend", msg);
                None
            }
        });
        let mut inputs: Vec<TenantInput> = raw
            .tenants
            .into_iter()
            .enumerate()
            .map(|(i, t)| TenantInput {
                span: t.span(),
                raw: t.into_inner(),
                source: 0,
                field: format!("tenants[{i}]"),
            })
            .collect();
        let issues_before = self.issues.len();
        let tenants_dir = raw.tenants_dir.and_then(|d| self.tenants_dir(d, base, &mut inputs));
        // Tenant files that failed to load already explain why there are none.
        if inputs.is_empty() && self.issues.len() == issues_before {
            let mut msg = "no tenants defined; add at least one [[tenants]] table with a name".to_owned();
            if let Some(dir) = &tenants_dir {
                msg.push_str(&format!(" or a NAME.toml file to {}", dir.display()));
            }
            self.push(None, "tenants", msg);
        }
        let tenants = self.tenants(inputs, &backends, default_backend.as_deref(), &mount, &locations);
        let used: BTreeSet<&str> = tenants.iter().map(|t| t.backend.as_str()).collect();
        for name in backends.keys().filter(|n| !used.contains(n.as_str())) {
            tracing::warn!(backend = %name, "backend is not used by any tenant");
        }
        Config {
            source,
            tenants_dir,
            mount,
            cache,
            write,
            metrics,
            backends,
            tenants,
        }
    }

    fn metrics(&mut self, raw: super::raw::RawMetrics) -> super::MetricsConfig {
        let listen = raw
            .listen
            .and_then(|l| match l.get_ref().parse::<std::net::SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    let msg = "must be an IP address and port, such as \"127.0.0.1:9464\"";
                    self.push(Some(l.span()), "metrics.listen", msg);
                    None
                }
            });
        super::MetricsConfig { listen }
    }

    /// "defined: ..." list for unknown-backend messages, including backends that failed
    /// validation (they are defined, just wrong).
    pub(super) fn defined(&mut self, backends: &BTreeMap<String, BackendConfig>) -> String {
        if let Some(d) = &self.defined {
            return d.clone();
        }
        let names: BTreeSet<&String> = backends.keys().chain(&self.invalid_backends).collect();
        let d = if names.is_empty() {
            "no backends are defined; add a [backends.NAME] table".to_owned()
        } else {
            let shown: Vec<String> = names.iter().take(LISTED_BACKENDS).map(|k| format!("{k:?}")).collect();
            match names.len().saturating_sub(LISTED_BACKENDS) {
                0 => format!("defined: {}", shown.join(", ")),
                more => format!("defined: {}, ... and {more} more", shown.join(", ")),
            }
        };
        self.defined = Some(d.clone());
        d
    }

    /// A backend that failed validation still exists for reference purposes: tenants using it
    /// are not also reported as using an "unknown backend".
    pub(super) fn backend_defined_but_invalid(&self, name: &Spanned<String>) -> bool {
        self.invalid_backends.contains(name.get_ref())
    }

    fn mount(&mut self, raw: RawMount) -> MountConfig {
        let fs_name = match raw.fs_name {
            Some(n) if n.get_ref().is_empty() || n.get_ref().contains([',', '=']) || has_control(n.get_ref()) => {
                let msg = "must be non-empty, without ',', '=' or control characters (it becomes a mount option)";
                self.push(Some(n.span()), "mount.fs_name", msg);
                String::new()
            }
            Some(n) => n.into_inner(),
            None => "byosfs".to_owned(),
        };
        let threads = self.range(raw.threads, "mount.threads", 4, 1, 256);
        let max_requests = self.range(raw.max_requests, "mount.max_requests", 1024, 16, 65535);
        let share = crate::fair::DEFAULT_SHARE_PERCENT;
        let tenant_share = self.range(raw.tenant_share, "mount.tenant_share", share, 1, 100);
        MountConfig {
            allow_other: raw.allow_other.unwrap_or(false),
            read_only: raw.read_only.unwrap_or(false),
            uid: raw.uid,
            gid: raw.gid,
            fs_name,
            attr_ttl: dur(raw.attr_ttl, Duration::from_secs(1)),
            entry_ttl: dur(raw.entry_ttl, Duration::from_secs(1)),
            threads,
            max_requests,
            tenant_share,
            control_socket: raw.control_socket,
        }
    }

    fn cache(&mut self, raw: RawCache, base: &Path) -> CacheConfig {
        let memory = size(&raw.memory, 512 * MIB);
        // Same default as `cache::DEFAULT_BLOCK_SIZE` (config may not depend on cache; see STYLE).
        let block_size = size(&raw.block_size, MIB);
        let span = |s: &Option<Spanned<ByteSize>>| s.as_ref().map(Spanned::span);
        if !block_size.is_power_of_two() || block_size < MIN_BLOCK_SIZE {
            let msg =
                format!("{block_size} bytes is not a power of two ≥ 4KiB; use e.g. \"256KiB\", \"1MiB\" or \"4MiB\"");
            self.push(span(&raw.block_size), "cache.block_size", msg);
        } else if block_size > memory {
            let msg = format!("block_size ({block_size} bytes) is larger than cache.memory ({memory} bytes)");
            self.push(span(&raw.block_size), "cache.block_size", msg);
        }
        let readahead_initial = size(&raw.readahead_initial, MIB);
        let readahead_max = size(&raw.readahead_max, 64 * MIB);
        if readahead_initial == 0 {
            self.push(span(&raw.readahead_initial), "cache.readahead_initial", "must be > 0");
        }
        if readahead_initial > readahead_max {
            let msg =
                format!("readahead_initial ({readahead_initial} bytes) exceeds readahead_max ({readahead_max} bytes)");
            self.push(span(&raw.readahead_initial), "cache.readahead_initial", msg);
        }
        if readahead_max > memory {
            let msg = format!(
                "readahead_max ({readahead_max} bytes) exceeds cache.memory ({memory} bytes): read-ahead would evict itself"
            );
            self.push(span(&raw.readahead_max), "cache.readahead_max", msg);
        }
        let disk_size = size(&raw.disk_size, 10 * GIB);
        if disk_size < block_size {
            let msg = format!("disk_size ({disk_size} bytes) must hold at least one block ({block_size} bytes)");
            self.push(span(&raw.disk_size), "cache.disk_size", msg);
        }
        CacheConfig {
            memory,
            block_size,
            readahead_initial,
            readahead_max,
            max_streams: self.range(raw.max_streams, "cache.max_streams", 4, 1, 1024),
            metadata_ttl: dur(raw.metadata_ttl, Duration::from_secs(1)),
            negative_ttl: dur(raw.negative_ttl, Duration::from_secs(1)),
            disk_dir: raw.disk_dir.map(|d| normalize_path(&base.join(d))),
            disk_size,
        }
    }

    fn write(&mut self, raw: RawWrite, base: &Path) -> WriteConfig {
        let part_size = size(&raw.part_size, 8 * MIB);
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
            let msg =
                format!("{part_size} bytes is outside the S3 part size limits; use a size from \"5MiB\" to \"5GiB\"");
            self.push(raw.part_size.as_ref().map(Spanned::span), "write.part_size", msg);
        }
        let memory = size(&raw.memory, 256 * MIB);
        if memory < part_size {
            let msg =
                format!("write.memory ({memory} bytes) must hold at least one part (part_size = {part_size} bytes)");
            self.push(raw.memory.as_ref().map(Spanned::span), "write.memory", msg);
        }
        WriteConfig {
            part_size,
            memory,
            max_concurrent_parts: self.range(raw.max_concurrent_parts, "write.max_concurrent_parts", 4, 1, 64),
            staging_dir: raw.staging_dir.map(|d| normalize_path(&base.join(d))),
            staging_limit: raw.staging_limit.map_or(10 * GIB, |s| s.0),
            max_rename_entries: raw.max_rename_entries.map_or(1000, Spanned::into_inner),
        }
    }

    /// An integer setting with a default and an inclusive range.
    fn range<T>(&mut self, value: Option<Spanned<T>>, field: &str, default: T, min: T, max: T) -> T
    where
        T: PartialOrd + Copy + std::fmt::Display,
    {
        match value {
            None => default,
            Some(v) if (min..=max).contains(v.get_ref()) => v.into_inner(),
            Some(v) => {
                self.push(
                    Some(v.span()),
                    field,
                    format!("{} is out of range; use {min} to {max}", v.get_ref()),
                );
                default
            }
        }
    }

    /// Validate one backend; returns it and its storage location (for overlap checks).
    fn backend(
        &mut self,
        name: &str,
        raw: Spanned<RawBackend>,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<(BackendConfig, String)> {
        let span = raw.span();
        let raw = raw.into_inner();
        let field = |key: &str| format!("backends.{name}.{key}");
        let issues_before = self.issues.len();
        if name.is_empty() || has_control(name) {
            self.push(
                Some(span.clone()),
                format!("backends.{name:?}"),
                "backend names must be non-empty and printable",
            );
        }
        let prefix = match &raw.prefix {
            Some(p) => normalize_prefix(p.get_ref()).unwrap_or_else(|msg| {
                self.push(Some(p.span()), field("prefix"), msg);
                String::new()
            }),
            None => String::new(),
        };
        let (config, location) = match raw.kind {
            BackendKind::Webdav | BackendKind::Azblob | BackendKind::Gcs | BackendKind::Gdrive => {
                let dal = self.dal(name, &raw, span, prefix, base, env);
                let location = format!(
                    "{}:{}/{}/",
                    dal.kind.name(),
                    dal.endpoint.as_deref().unwrap_or("default").to_ascii_lowercase(),
                    dal.container
                );
                (BackendConfig::Dal(dal), location)
            }
            BackendKind::Local => {
                for key in raw.s3_keys_set().into_iter().chain(raw.dal_keys_set()) {
                    let msg = "not valid for type = \"local\" (valid keys: type, root, prefix, request_timeout)";
                    self.push(Some(span.clone()), field(key), msg);
                }
                let root = match &raw.root {
                    Some(r) if r.get_ref().as_os_str().is_empty() => {
                        self.push(
                            Some(r.span()),
                            field("root"),
                            "must not be empty; e.g. root = \"./byosfs-data\"",
                        );
                        PathBuf::new()
                    }
                    Some(r) => normalize_path(&base.join(r.get_ref())),
                    None => {
                        let msg = "missing; a local backend needs root = \"<directory>\"";
                        self.push(Some(span.clone()), field("root"), msg);
                        PathBuf::new()
                    }
                };
                let request_timeout = raw.request_timeout.as_ref().map_or(LOCAL_REQUEST_TIMEOUT, |d| d.0);
                if request_timeout.is_zero() {
                    self.push(
                        Some(span.clone()),
                        field("request_timeout"),
                        "must be > 0, e.g. \"300s\"",
                    );
                }
                let location = format!("local:{}/", root.to_string_lossy().trim_end_matches('/'));
                let local = LocalConfig {
                    root,
                    prefix,
                    request_timeout,
                };
                (BackendConfig::Local(local), location)
            }
            BackendKind::S3 => {
                if let Some(r) = &raw.root {
                    let msg = "not valid for type = \"s3\" (root is for type = \"local\")";
                    self.push(Some(r.span()), field("root"), msg);
                }
                for key in raw.dal_keys_set() {
                    let msg = "not valid for type = \"s3\" (it belongs to type webdav, azblob or gcs)";
                    self.push(Some(span.clone()), field(key), msg);
                }
                let s3 = self.s3(name, &raw, span, prefix, base, env);
                let location = format!(
                    "s3:{}/{}/",
                    s3.endpoint.as_deref().unwrap_or("aws").to_ascii_lowercase(),
                    s3.bucket
                );
                (BackendConfig::S3(s3), location)
            }
        };
        (self.issues.len() == issues_before).then_some((config, location))
    }

    fn s3(
        &mut self,
        name: &str,
        raw: &RawBackend,
        span: Range<usize>,
        prefix: String,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> S3Config {
        let field = |key: &str| format!("backends.{name}.{key}");
        let provider = raw.provider.unwrap_or(if raw.endpoint.is_some() {
            Provider::Custom
        } else {
            Provider::Aws
        });
        // Values that end up in a hostname must be plain DNS labels.
        for (key, value) in [
            ("account_id", &raw.account_id),
            ("project_ref", &raw.project_ref),
            ("region", &raw.region),
        ] {
            if let Some(v) = value {
                let ok = !v.get_ref().is_empty()
                    && v.get_ref()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !ok {
                    self.push(
                        Some(v.span()),
                        field(key),
                        "must be non-empty letters, digits, '-' or '_'",
                    );
                }
            }
        }
        let input = PresetInput {
            account_id: raw.account_id.as_ref().map(|v| v.get_ref().as_str()),
            project_ref: raw.project_ref.as_ref().map(|v| v.get_ref().as_str()),
            region: raw.region.as_ref().map(|v| v.get_ref().as_str()),
            endpoint: raw.endpoint.as_ref().map(|v| v.get_ref().as_str()),
            force_path_style: raw.force_path_style,
        };
        let resolved = match provider::resolve(provider, &input) {
            Ok(r) => r,
            Err(missing) => {
                for (key, why) in missing {
                    self.push(Some(span.clone()), field(key), why);
                }
                provider::Resolved {
                    endpoint: None,
                    region: String::new(),
                    force_path_style: false,
                }
            }
        };
        let endpoint = resolved.endpoint.and_then(|e| match check_endpoint(&e) {
            Ok(e) => Some(e),
            Err(msg) => {
                let at = raw.endpoint.as_ref().map_or(span.clone(), Spanned::span);
                self.push(Some(at), field("endpoint"), msg);
                None
            }
        });
        let bucket = match &raw.bucket {
            Some(b) if b.get_ref().trim().is_empty() => {
                self.push(Some(b.span()), field("bucket"), "must not be empty");
                String::new()
            }
            Some(b) if b.get_ref().contains('/') || b.get_ref().chars().any(char::is_whitespace) => {
                let msg = "a bucket name has no '/' or spaces; put key prefixes in `prefix`";
                self.push(Some(b.span()), field("bucket"), msg);
                String::new()
            }
            Some(b) => b.get_ref().clone(),
            None => {
                self.push(
                    Some(span.clone()),
                    field("bucket"),
                    "missing; an s3 backend needs bucket = \"<name>\"",
                );
                String::new()
            }
        };
        // The default chain holds this machine's AWS identity (instance role, ~/.aws): sent
        // only to AWS unless the config asks for it by name.
        let third_party = (provider != Provider::Aws || raw.endpoint.is_some()).then(|| {
            endpoint
                .as_deref()
                .map_or_else(|| format!("provider \"{provider}\""), |e| format!("endpoint {e}"))
        });
        let credentials = self.credentials(name, raw, &span, base, env, third_party.as_deref());
        let timeout = |v: Option<DurationValue>, default: Duration| v.map_or(default, |d| d.0);
        let request_timeout = timeout(raw.request_timeout, Duration::from_secs(60));
        let connect_timeout = timeout(raw.connect_timeout, Duration::from_secs(5));
        for (key, value) in [
            ("request_timeout", request_timeout),
            ("connect_timeout", connect_timeout),
        ] {
            if value.is_zero() {
                self.push(Some(span.clone()), field(key), "must be > 0, e.g. \"30s\"");
            }
        }
        S3Config {
            provider,
            endpoint,
            region: resolved.region,
            force_path_style: resolved.force_path_style,
            bucket,
            prefix,
            credentials,
            request_timeout,
            connect_timeout,
            max_attempts: self.range(raw.max_attempts.clone(), &field("max_attempts"), 3, 1, 20),
            payload_signing: raw.payload_signing.unwrap_or_default(),
            conditional_writes: raw.conditional_writes.unwrap_or(provider.conditional_writes()),
            checksum: raw.checksum.unwrap_or_default(),
            public_url_base: raw
                .public_url_base
                .as_ref()
                .and_then(|u| match check_url_base(u.get_ref()) {
                    Ok(base) => Some(format!("{base}/")),
                    Err(msg) => {
                        self.push(Some(u.span()), field("public_url_base"), msg);
                        None
                    }
                }),
        }
    }

    fn credentials(
        &mut self,
        name: &str,
        raw: &RawBackend,
        span: &Range<usize>,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        third_party: Option<&str>,
    ) -> Credentials {
        let allow_inline = raw.allow_inline_secrets.unwrap_or(false);
        let (creds, at) = match (&raw.credentials, third_party) {
            (Some(c), _) => (c.get_ref(), c.span()),
            (None, None) => (&RawCredentials::DefaultChain, span.clone()),
            (None, Some(target)) => {
                let msg = format!(
                    "missing; a backend with {target} must name its credentials: \
                     {{ env = {{ access_key_id = \"VAR\", secret_access_key = \"VAR\" }} }} or {{ file = \"path\" }}. \
                     The AWS default chain (instance role, ~/.aws) is used without asking only for provider = \"aws\" \
                     without an endpoint; write credentials = \"default\" to send it to this endpoint"
                );
                self.push(Some(span.clone()), format!("backends.{name}.credentials"), msg);
                return Credentials::DefaultChain;
            }
        };
        match credentials::resolve(creds, base, allow_inline, env) {
            Ok(c) => {
                if matches!(creds, RawCredentials::Inline { .. }) {
                    tracing::warn!(
                        backend = name,
                        "inline secrets in the config file (allow_inline_secrets = true); prefer env or file"
                    );
                }
                c
            }
            Err(msg) => {
                self.push(Some(at), format!("backends.{name}.credentials"), msg);
                Credentials::DefaultChain
            }
        }
    }
}

fn size(value: &Option<Spanned<ByteSize>>, default: u64) -> u64 {
    value.as_ref().map_or(default, |v| v.get_ref().0)
}

fn dur(value: Option<DurationValue>, default: Duration) -> Duration {
    value.map_or(default, |v| v.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    const ENV_CONFIG: &str = r#"
[backends.r2]
type = "s3"
provider = "r2"
account_id = "abc"
bucket = "media"
credentials = { env = { access_key_id = "R2_ID", secret_access_key = "R2_SECRET", session_token = "R2_TOKEN" } }

[[tenants]]
name = "acme"
backend = "r2"
"#;

    #[test]
    fn env_credentials_are_read_at_load_time() {
        let env = env_of(&[
            ("R2_ID", "AKID"),
            ("R2_SECRET", "sssh-value"),
            ("R2_TOKEN", "tok-value"),
        ]);
        let config = parse(ENV_CONFIG, Path::new("/etc/byosfs.toml"), &env).unwrap();
        let Some(BackendConfig::S3(s3)) = config.backends.get("r2") else {
            panic!("expected s3 backend");
        };
        let Credentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } = &s3.credentials
        else {
            panic!("expected static credentials");
        };
        assert_eq!(access_key_id, "AKID");
        assert_eq!(secret_access_key.expose(), "sssh-value");
        assert_eq!(session_token.as_ref().map(|t| t.expose()), Some("tok-value"));
        let dump = format!("{config:?}");
        assert!(!dump.contains("sssh-value") && !dump.contains("tok-value"), "{dump}");
    }

    #[test]
    fn missing_env_var_names_variable_not_values() {
        let env = env_of(&[("R2_ID", "AKID"), ("R2_SECRET", "sssh-value")]);
        let err = parse(ENV_CONFIG, Path::new("/etc/byosfs.toml"), &env).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("/etc/byosfs.toml:7: backends.r2.credentials:"),
            "{text}"
        );
        assert!(
            text.contains("R2_TOKEN") && !text.contains("sssh-value") && !text.contains("AKID"),
            "{text}"
        );
    }

    /// The commented-out examples in config.example.toml must be valid too once enabled.
    #[test]
    fn example_with_every_section_enabled() {
        let example = include_str!("../../config.example.toml");
        let mut out = String::new();
        let mut in_block = false;
        for line in example.lines() {
            let body = line.strip_prefix("# ");
            let starts = body.is_some_and(|b| b.starts_with("[backends.") || b.starts_with("[[tenants]]"));
            in_block = starts || (in_block && body.is_some());
            match body {
                Some(b) if in_block => out.push_str(b),
                _ => out.push_str(line),
            }
            out.push('\n');
        }
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("minio-secrets.ini");
        std::fs::write(&secrets, "access_key_id = minio\nsecret_access_key = minio-secret\n").unwrap();
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
        for (name, text) in [
            ("azure.secrets", "account_key = c2VjcmV0\n"),
            ("gcs-key.json", "{\"type\": \"service_account\"}\n"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let env = env_of(&[
            ("NEXTCLOUD_APP_PASSWORD", "e"),
            ("R2_ACCESS_KEY_ID", "a"),
            ("R2_SECRET_ACCESS_KEY", "b"),
            ("SUPABASE_S3_KEY_ID", "c"),
            ("SUPABASE_S3_SECRET", "d"),
            ("GDRIVE_CLIENT_ID", "f"),
            ("GDRIVE_CLIENT_SECRET", "g"),
            ("GDRIVE_REFRESH_TOKEN", "h"),
        ]);
        let config = parse(&out, &dir.path().join("config.toml"), &env).unwrap_or_else(|e| panic!("{e}\n{out}"));
        let names: Vec<_> = config.tenants.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["acme", "globex", "acme-media", "initech", "umbrella", "hooli"]);
        assert_eq!(config.backends.len(), 9);
        assert_eq!(
            config.tenant("initech").map(|t| t.prefix.as_str()),
            Some("byosfs/initech/")
        );
        assert_eq!(config.tenant("hooli").map(|t| t.prefix.as_str()), Some(""));
    }

    #[test]
    fn relative_config_path_is_made_absolute() {
        let config = parse(
            "[defaults]\nbackend = \"l\"\n[backends.l]\ntype = \"local\"\nroot = \"d\"\n[[tenants]]\nname = \"a\"\n",
            Path::new("conf/byosfs.toml"),
            &|_| None,
        )
        .unwrap();
        assert!(config.source.is_absolute());
        let Some(BackendConfig::Local(local)) = config.backends.get("l") else {
            panic!("expected local backend");
        };
        assert!(
            local.root.is_absolute() && local.root.ends_with("conf/d"),
            "{:?}",
            local.root
        );
    }
}
