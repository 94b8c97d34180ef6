//! [`DalConfig`] → an OpenDAL [`Operator`], one builder per service.
//!
//! Only OpenDAL's built-in layers are on (error context, simulation of missing features,
//! completeness checks); its retry, timeout and logging layers are not compiled in: retries
//! happen once, in `backend/retry.rs`, and errors are logged at the reply site.

use opendal::{services, HttpTransporter, Operator};

use crate::backend::{BackendError, BackendErrorKind, BackendResult};
use crate::secret::Secret;

use super::google::{DriveTransport, OAuthGrant};
use super::DalService;

/// Settings of one OpenDAL-backed store, as `app` translates them from the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DalConfig {
    /// Which store.
    pub service: DalService,
    /// Base URL: the WebDAV root URL (required), or an override of the Azure / GCS service
    /// endpoint (emulators, sovereign clouds), or for Drive the base replacing both Google
    /// hosts (API and OAuth; for tests and proxies).
    pub endpoint: Option<String>,
    /// Azure container or GCS bucket; empty for WebDAV; for Drive the folder path that is
    /// the store's root ("" for My Drive's root).
    pub container: String,
    /// WebDAV user, Azure storage account name, or Drive's OAuth client id.
    pub account: Option<String>,
    /// The secrets, all optional here; `config` checks which a service needs.
    pub secrets: DalSecrets,
}

impl DalConfig {
    /// A config for `service` with no endpoint, container, account or secrets.
    pub fn new(service: DalService) -> Self {
        Self {
            service,
            endpoint: None,
            container: String::new(),
            account: None,
            secrets: DalSecrets::default(),
        }
    }

    /// Set the endpoint.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Set the container or bucket.
    pub fn with_container(mut self, container: impl Into<String>) -> Self {
        self.container = container.into();
        self
    }

    /// Set the WebDAV user or Azure account name.
    pub fn with_account(mut self, account: impl Into<String>) -> Self {
        self.account = Some(account.into());
        self
    }

    /// Set the secrets.
    pub fn with_secrets(mut self, secrets: DalSecrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// Where the objects live, for logs and `check` (no secrets).
    pub fn describe(&self) -> String {
        let name = self.service.name();
        match (self.service, &self.endpoint) {
            (DalService::Webdav, Some(e)) => format!("{name}:{}", e.trim_end_matches('/')),
            (_, Some(e)) => format!("{name}://{}@{}", self.container, e.trim_end_matches('/')),
            (_, None) => format!("{name}://{}", self.container),
        }
    }
}

/// Secret values of a [`DalConfig`]; `Debug` shows none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DalSecrets {
    /// WebDAV password (HTTP basic authentication with [`DalConfig::account`]).
    pub password: Option<Secret>,
    /// WebDAV bearer token, instead of a user and password.
    pub token: Option<Secret>,
    /// Azure storage account key (base64, as the portal shows it).
    pub account_key: Option<Secret>,
    /// Azure shared access signature (the query string, without a leading `?`).
    pub sas_token: Option<Secret>,
    /// A GCS service-account key: the JSON file's contents.
    pub service_account_json: Option<Secret>,
    /// Drive's OAuth client secret.
    pub client_secret: Option<Secret>,
    /// Drive's OAuth refresh token (the grant; access tokens are derived from it).
    pub refresh_token: Option<Secret>,
}

/// Build the operator of `c`.
pub(super) fn operator(c: &DalConfig) -> BackendResult<Operator> {
    let built = match c.service {
        DalService::Webdav => {
            let Some(endpoint) = &c.endpoint else {
                return Err(invalid("a webdav backend needs an endpoint"));
            };
            let mut b = services::Webdav::default().endpoint(endpoint).root("/");
            if let Some(user) = &c.account {
                b = b.username(user);
            }
            if let Some(p) = &c.secrets.password {
                b = b.password(p.expose());
            }
            if let Some(t) = &c.secrets.token {
                b = b.token(t.expose());
            }
            Operator::new(b)
        }
        DalService::Azblob => {
            let mut b = services::Azblob::default().container(&c.container).root("/");
            let account = c.account.as_deref().unwrap_or_default();
            let endpoint = match &c.endpoint {
                Some(e) => e.clone(),
                None => format!("https://{account}.blob.core.windows.net"),
            };
            b = b.endpoint(&endpoint).account_name(account);
            if let Some(k) = &c.secrets.account_key {
                b = b.account_key(k.expose());
            }
            if let Some(s) = &c.secrets.sas_token {
                b = b.sas_token(s.expose().trim_start_matches('?'));
            }
            Operator::new(b)
        }
        DalService::Gcs => {
            let mut b = services::Gcs::default().bucket(&c.container).root("/");
            if let Some(e) = &c.endpoint {
                b = b.endpoint(e);
            }
            match &c.secrets.service_account_json {
                Some(json) => {
                    let encoded = base64_simd::STANDARD.encode_to_string(json.expose().as_bytes());
                    b = b.credential(&encoded);
                }
                // No key: an emulator, or a public bucket. Never this machine's own Google
                // identity (metadata server, gcloud files): a tenant must name its own.
                None => b = b.skip_signature().disable_vm_metadata().disable_config_load(),
            }
            Operator::new(b)
        }
        DalService::Gdrive => return gdrive(c),
    };
    built.map_err(|e| super::error::classify("configure", &c.describe(), &e))
}

/// A Drive operator, its HTTP through [`DriveTransport`] (refresh on 401, endpoint override).
fn gdrive(c: &DalConfig) -> BackendResult<Operator> {
    let (Some(client_id), Some(client_secret), Some(refresh_token)) =
        (&c.account, &c.secrets.client_secret, &c.secrets.refresh_token)
    else {
        return Err(invalid(
            "a gdrive backend needs an OAuth client id, client secret and refresh token",
        ));
    };
    let root = format!("/{}/", c.container.trim_matches('/')).replace("//", "/");
    let b = services::Gdrive::default()
        .root(&root)
        .client_id(client_id)
        .client_secret(client_secret.expose())
        .refresh_token(refresh_token.expose());
    let op = Operator::new(b).map_err(|e| super::error::classify("configure", &c.describe(), &e))?;
    let grant = OAuthGrant {
        client_id: client_id.clone(),
        client_secret: client_secret.clone(),
        refresh_token: refresh_token.clone(),
    };
    let transport = DriveTransport::new(op.context().http_transport().clone(), c.endpoint.clone(), grant);
    let ctx = op.context().with_http_transport(HttpTransporter::new(transport));
    Ok(op.with_context(ctx))
}

fn invalid(msg: &str) -> BackendError {
    BackendError::new(BackendErrorKind::InvalidRequest, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_describe_show_no_secret() {
        let c = DalConfig::new(DalService::Azblob)
            .with_container("media")
            .with_account("acct")
            .with_secrets(DalSecrets {
                account_key: Some(Secret::new("S3CR3T-KEY")),
                sas_token: Some(Secret::new("sig=S3CR3T-SAS")),
                ..DalSecrets::default()
            });
        let shown = format!("{c:?} {}", c.describe());
        assert!(!shown.contains("S3CR3T"), "{shown}");
        assert_eq!(c.describe(), "azblob://media");
    }

    #[test]
    fn webdav_needs_an_endpoint() {
        let err = operator(&DalConfig::new(DalService::Webdav)).unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::InvalidRequest);
        assert!(operator(&DalConfig::new(DalService::Webdav).with_endpoint("http://127.0.0.1:1/dav")).is_ok());
    }

    #[test]
    fn gdrive_needs_its_grant() {
        let bare = DalConfig::new(DalService::Gdrive).with_account("client");
        assert_eq!(operator(&bare).unwrap_err().kind(), BackendErrorKind::InvalidRequest);
        let full = bare.with_container("byosfs/media").with_secrets(DalSecrets {
            client_secret: Some(Secret::new("S3CR3T-CLIENT")),
            refresh_token: Some(Secret::new("S3CR3T-GRANT")),
            ..DalSecrets::default()
        });
        assert!(operator(&full).is_ok());
        let shown = format!("{full:?} {}", full.describe());
        assert!(!shown.contains("S3CR3T"), "{shown}");
    }
}
