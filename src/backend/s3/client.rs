//! Connection settings of an S3 bucket, and the pool that shares one SDK client and one
//! plain GET transport among every backend with equal settings (tenants on the same
//! endpoint and credentials reuse one connection pool).

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::Client;
use tokio::sync::Mutex;

use super::{get, S3Backend};
use crate::backend::{BackendError, BackendErrorKind, BackendResult};
use crate::secret::Secret;

/// Where and how to reach one bucket. Built by `app.rs` from the user configuration.
#[derive(Debug, Clone)]
pub struct S3BackendConfig {
    /// Custom endpoint URL (`http://` allowed); `None` uses AWS's endpoint for `region`.
    pub endpoint: Option<String>,
    /// Signing region; `"auto"` for Cloudflare R2.
    pub region: String,
    /// Path-style addressing (MinIO, s3s); AWS and R2 use virtual-host style.
    pub force_path_style: bool,
    /// Bucket name.
    pub bucket: String,
    /// How to authenticate.
    pub credentials: S3Credentials,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Deadline of one attempt (also bounds reading a GET body).
    pub request_timeout: Duration,
    /// Attempts per request, including the first (SDK standard retry). The mount sets 1 and
    /// retries in [`super::retry::RetryBackend`] instead.
    pub max_attempts: u32,
    /// Whether upload bodies (PutObject, UploadPart) are hashed into the SigV4 signature;
    /// `false` sends `UNSIGNED-PAYLOAD` (see `config::PayloadSigning`).
    pub sign_payload: bool,
}

/// Credentials for an S3 endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Credentials {
    /// Fixed keys from the configuration.
    Static {
        /// Access key id (not secret; shown in errors is fine).
        access_key_id: String,
        /// Secret access key.
        secret_access_key: Secret,
        /// Session token for temporary credentials.
        session_token: Option<Secret>,
    },
    /// The AWS default provider chain (env, profile, SSO, IMDS, ...).
    DefaultChain,
}

impl Hash for S3Credentials {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Self::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                0u8.hash(state);
                access_key_id.hash(state);
                secret_access_key.expose().hash(state);
                session_token.as_ref().map(Secret::expose).hash(state);
            }
            Self::DefaultChain => 1u8.hash(state),
        }
    }
}

/// Everything that makes two clients different; the bucket is not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    endpoint: Option<String>,
    region: String,
    force_path_style: bool,
    credentials: S3Credentials,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_attempts: u32,
}

impl ClientKey {
    fn of(cfg: &S3BackendConfig) -> Self {
        Self {
            endpoint: cfg.endpoint.clone(),
            region: cfg.region.clone(),
            force_path_style: cfg.force_path_style,
            credentials: cfg.credentials.clone(),
            connect_timeout: cfg.connect_timeout,
            request_timeout: cfg.request_timeout,
            max_attempts: cfg.max_attempts,
        }
    }
}

/// Shares one SDK client and one plain GET transport (each with its connection pool) among all
/// backends with equal settings.
#[derive(Default)]
pub struct S3ClientPool {
    clients: Mutex<HashMap<ClientKey, Clients>>,
}

/// The SDK client of one connection setting, and its plain GET transport or why it has none.
type Clients = (Client, Result<get::Transport, &'static str>);

impl fmt::Debug for S3ClientPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3ClientPool").finish_non_exhaustive()
    }
}

impl S3ClientPool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// Distinct clients built so far.
    #[cfg(test)]
    pub(super) async fn client_count(&self) -> usize {
        self.clients.lock().await.len()
    }

    /// A backend for `cfg.bucket`, reusing a client when one with the same settings exists.
    /// Does not contact the service (see `check::probe` for that).
    pub async fn backend(&self, cfg: &S3BackendConfig) -> Result<S3Backend, BackendError> {
        validate(cfg)?;
        let key = ClientKey::of(cfg);
        let mut clients = self.clients.lock().await;
        let (client, transport) = match clients.get(&key) {
            Some(c) => c.clone(),
            None => {
                let c = (build_client(cfg).await, get::Transport::new(cfg));
                clients.insert(key, c.clone());
                c
            }
        };
        drop(clients);
        let plain_get = match transport {
            Ok(t) => get::PlainGet::new(t, cfg).await,
            Err(why) => Err(why),
        };
        let plain_get = match plain_get {
            Ok(p) => Some(p),
            Err(why) => {
                tracing::debug!(bucket = %cfg.bucket, reason = why, "reads go through the SDK");
                None
            }
        };
        Ok(S3Backend {
            client,
            plain_get,
            bucket: cfg.bucket.clone(),
            endpoint: cfg.endpoint.clone(),
            request_timeout: cfg.request_timeout,
            body_attempts: cfg.max_attempts.max(1),
            sign_payload: cfg.sign_payload,
            create_only_uploads: Default::default(),
            checksum: Default::default(),
            part_sizes: Default::default(),
        })
    }
}

fn validate(cfg: &S3BackendConfig) -> BackendResult<()> {
    let invalid = |msg: &str| Err(BackendError::new(BackendErrorKind::InvalidRequest, msg.to_owned()));
    if cfg.bucket.is_empty() || cfg.bucket.contains('/') {
        return invalid("bucket name must be non-empty and contain no '/'");
    }
    if cfg.region.is_empty() {
        return invalid("region must not be empty (use \"auto\" for R2)");
    }
    if let Some(ep) = &cfg.endpoint {
        if !(ep.starts_with("http://") || ep.starts_with("https://")) {
            return invalid("endpoint must start with http:// or https://");
        }
    }
    Ok(())
}

async fn build_client(cfg: &S3BackendConfig) -> Client {
    let region = Region::new(cfg.region.clone());
    let builder = match &cfg.credentials {
        S3Credentials::DefaultChain => {
            let sdk = aws_config::defaults(BehaviorVersion::latest())
                .region(region.clone())
                .load()
                .await;
            aws_sdk_s3::config::Builder::from(&sdk)
        }
        S3Credentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } => aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(Credentials::new(
                access_key_id.clone(),
                secret_access_key.expose().to_owned(),
                session_token.as_ref().map(|t| t.expose().to_owned()),
                None,
                "byosfs-config",
            )),
    };
    let mut builder = builder
        .region(region)
        .force_path_style(cfg.force_path_style)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(cfg.connect_timeout)
                .operation_attempt_timeout(cfg.request_timeout)
                .build(),
        )
        .retry_config(if cfg.max_attempts <= 1 {
            RetryConfig::disabled()
        } else {
            RetryConfig::standard().with_max_attempts(cfg.max_attempts)
        })
        // The SDK default (since 2025) computes CRC32 over every upload body and validates
        // response checksums: CPU work per part, and several non-AWS servers reject or
        // mangle the extra trailer headers. Only send checksums where S3 requires them.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        // Upload stall detection fires falsely while a slow server processes a fully sent
        // body; our own per-attempt timeout covers that. Downloads keep it, with a grace
        // period no shorter than the request timeout so a slow-but-alive stream survives.
        .stalled_stream_protection(
            StalledStreamProtectionConfig::enabled()
                .upload_enabled(false)
                .grace_period(cfg.request_timeout.max(Duration::from_secs(5)))
                .build(),
        );
    if let Some(ep) = &cfg.endpoint {
        builder = builder.endpoint_url(ep.clone());
    }
    Client::from_conf(builder.build())
}
