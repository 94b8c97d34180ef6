//! A backend whose connection can be replaced while it is in use: credential rotation.
//!
//! A reload that changes only a backend's credentials (a secrets file's new contents, another
//! environment variable) builds a client with the new keys and [`SwapBackend::swap`]s it in.
//! Every request made afterwards, including those of files opened before, goes through the new
//! client and is signed with the new keys; requests already in flight finish on the old one,
//! which they hold. The location (endpoint, bucket, prefix) never changes through a swap, so
//! object keys, ETags and cached blocks stay valid; a new location is a new tenant binding
//! instead (see `crate::tenant`).
//!
//! The backend's [`Presigner`] rides along: URLs are signed locally, so a rotation must
//! reach it too, or `byosfs url` would keep signing with the old keys.

use std::sync::{Arc, RwLock};

use super::s3::Presigner;
use super::{Backend, Layer};

/// `inner`, replaceable at any time by one with the same location.
#[derive(Debug)]
pub(crate) struct SwapBackend {
    /// Read once per request (a pointer copy under a read lock), never held across an await.
    inner: RwLock<Arc<dyn Backend>>,
    /// Signs URLs with the settings `inner` was built from (empty for non-S3 backends).
    presigner: Arc<Presigner>,
}

impl SwapBackend {
    /// Wrap `inner`, whose URLs `presigner` signs.
    pub(crate) fn new(inner: Arc<dyn Backend>, presigner: Presigner) -> Self {
        Self {
            inner: RwLock::new(inner),
            presigner: Arc::new(presigner),
        }
    }

    /// The presigner of this backend (follows [`Self::swap`]).
    pub(crate) fn presigner(&self) -> Arc<Presigner> {
        self.presigner.clone()
    }

    /// The backend requests go to now.
    pub(crate) fn current(&self) -> Arc<dyn Backend> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Send every later request to `next` (same location, other credentials), and sign every
    /// later URL with `signing` (the settings `next` was built from).
    pub(crate) fn swap(&self, next: Arc<dyn Backend>, signing: Option<crate::backend::s3::S3BackendConfig>) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = next;
        self.presigner.set(signing);
    }
}

impl Layer for SwapBackend {
    fn inner(&self) -> Arc<dyn Backend> {
        self.current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::InMemoryBackend;
    use bytes::Bytes;

    #[tokio::test]
    async fn requests_after_a_swap_go_to_the_new_backend() {
        let old = Arc::new(InMemoryBackend::new());
        let new = Arc::new(InMemoryBackend::new());
        let swap = SwapBackend::new(old.clone(), Presigner::default());
        Backend::put(&swap, "a", Bytes::from_static(b"1")).await.unwrap();
        swap.swap(new.clone(), None);
        Backend::put(&swap, "b", Bytes::from_static(b"2")).await.unwrap();
        assert!(old.head("a").await.is_ok() && old.head("b").await.is_err());
        assert!(new.head("b").await.is_ok() && new.head("a").await.is_err());
    }
}
