//! Presigned GETs with a backend's *current* connection settings.
//!
//! A URL is signed locally with the keys of a client; `byosfs url` must use the keys the
//! backend uses now, not those of the mount's start. One [`Presigner`] belongs to one
//! configured backend (it rides along the backend's `SwapBackend`); a reload that rotates the
//! backend's credentials [`Presigner::set`]s the new settings, and the next URL is signed with
//! them. The SDK client is built on first use and kept until the next rotation.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::OnceCell;

use super::{S3Backend, S3BackendConfig, S3ClientPool};
use crate::backend::BackendResult;

/// Signs GET URLs for one backend; empty (no URL) for a backend that is not S3.
#[derive(Debug, Default)]
pub struct Presigner {
    /// Replaced as a whole on rotation: a URL being signed keeps the settings it started with.
    current: RwLock<Option<Arc<Signer>>>,
}

#[derive(Debug)]
struct Signer {
    config: S3BackendConfig,
    client: OnceCell<S3Backend>,
}

impl Presigner {
    /// A presigner for `config` (`None`: not an S3 backend, no presigned URLs).
    pub fn new(config: Option<S3BackendConfig>) -> Self {
        let p = Self::default();
        p.set(config);
        p
    }

    /// Sign every later URL with `config` (the rotated credentials).
    pub fn set(&self, config: Option<S3BackendConfig>) {
        let next = config.map(|config| {
            Arc::new(Signer {
                config,
                client: OnceCell::new(),
            })
        });
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
    }

    /// A presigned GET of `key` (full key in the bucket); `Ok(None)` when this backend has no
    /// presigned URLs. See [`S3Backend::presign_get`].
    pub async fn presign_get(
        &self,
        key: &str,
        expires: Duration,
        download: Option<&str>,
    ) -> BackendResult<Option<String>> {
        let Some(signer) = self.current.read().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(None);
        };
        let client = signer
            .client
            .get_or_try_init(|| async { S3ClientPool::new().backend(&signer.config).await })
            .await?;
        client.presign_get(key, expires, download).await.map(Some)
    }
}
