//! URLs for files: what `byosfs url` prints and the xattr `user.byosfs.url` holds.
//!
//! A tenant with a public URL base (its own, or its backend's: an R2 custom domain, a CDN)
//! gets `base + percent-encoded key`: the tenant's base is its own root (keys relative to the
//! tenant), the backend's the bucket's (full keys, the tenant prefix included). Otherwise an
//! S3 tenant gets a presigned GET (SigV4 query signing, at most 7 days). A local-directory
//! tenant without a base has no URL.
//!
//! The request travels as an xattr name, so `byosfs url` asks the running mount through the
//! kernel, with the caller's own access to the path: `user.byosfs.url` (one hour, inline) or
//! `user.byosfs.url:expires=SECONDS[,download]`.

use std::time::Duration;

use std::sync::Arc;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::backend::s3::Presigner;
use crate::backend::BackendError;

/// The xattr that holds a file's URL.
pub const URL_XATTR: &str = "user.byosfs.url";
/// Longest validity of a presigned URL (SigV4's limit).
pub const MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Validity when none is asked for.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(3600);

/// RFC 3986 unreserved characters and `/` stay; everything else is percent-encoded.
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// What a URL is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlRequest {
    /// Validity of a presigned URL.
    pub expires: Duration,
    /// Ask the browser to save the file rather than show it.
    pub download: bool,
}

impl Default for UrlRequest {
    fn default() -> Self {
        Self {
            expires: DEFAULT_EXPIRY,
            download: false,
        }
    }
}

impl UrlRequest {
    /// The xattr name carrying this request.
    pub fn xattr_name(&self) -> String {
        let mut s = format!("{URL_XATTR}:expires={}", self.expires.as_secs());
        if self.download {
            s.push_str(",download");
        }
        s
    }

    /// Parse an xattr name: `None` when it is not a URL request at all.
    pub fn from_xattr_name(name: &str) -> Option<Result<Self, UrlError>> {
        let rest = name.strip_prefix(URL_XATTR)?;
        if rest.is_empty() {
            return Some(Ok(Self::default()));
        }
        let params = rest.strip_prefix(':')?;
        let mut req = Self::default();
        for p in params.split(',') {
            match p.split_once('=') {
                Some(("expires", secs)) => match secs.parse::<u64>() {
                    Ok(s) if s > 0 && Duration::from_secs(s) <= MAX_EXPIRY => req.expires = Duration::from_secs(s),
                    _ => return Some(Err(UrlError::Expiry(secs.to_owned()))),
                },
                None if p == "download" => req.download = true,
                _ => return Some(Err(UrlError::Expiry(p.to_owned()))),
            }
        }
        Some(Ok(req))
    }
}

/// Why no URL could be made.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// A local-directory tenant without `public_url_base`.
    #[error("no URL for this backend: a local-directory tenant needs public_url_base")]
    NoUrl,
    /// The expiry is not between 1 s and 7 days.
    #[error("invalid URL request {0:?}: expiry must be 1 s to 7 days")]
    Expiry(String),
    /// Presigning failed (credentials could not be resolved).
    #[error("presigning failed")]
    Backend(#[source] BackendError),
}

/// How one tenant's URLs are made.
#[derive(Debug, Default, Clone)]
pub struct UrlMaker {
    /// The tenant's own base (keys relative to the tenant).
    pub tenant_base: Option<String>,
    /// The backend's base (full keys).
    pub backend_base: Option<String>,
    /// The tenant's key prefix within the bucket.
    pub prefix: String,
    /// The backend's presigner: shared with the backend, so URLs are signed with the
    /// credentials it uses now, also after a reload rotated them.
    signer: Arc<Presigner>,
}

impl UrlMaker {
    /// A maker for a tenant at `prefix`, presigning through `signer`.
    pub fn new(
        tenant_base: Option<String>,
        backend_base: Option<String>,
        prefix: String,
        signer: Arc<Presigner>,
    ) -> Self {
        Self {
            tenant_base,
            backend_base,
            prefix,
            signer,
        }
    }

    /// The public URL of `key` (relative to the tenant), if a base is set.
    pub fn public(&self, key: &str) -> Option<String> {
        if let Some(base) = &self.tenant_base {
            return Some(format!("{base}{}", utf8_percent_encode(key, KEY_SET)));
        }
        let base = self.backend_base.as_ref()?;
        let full = format!("{}{key}", self.prefix);
        Some(format!("{base}{}", utf8_percent_encode(&full, KEY_SET)))
    }

    /// A URL for `key` (relative to the tenant).
    pub async fn url(&self, key: &str, req: UrlRequest) -> Result<String, UrlError> {
        if let Some(u) = self.public(key) {
            return Ok(u);
        }
        if req.expires.is_zero() || req.expires > MAX_EXPIRY {
            return Err(UrlError::Expiry(format!("{}s", req.expires.as_secs())));
        }
        let name = key.rsplit('/').next().unwrap_or(key);
        let full = format!("{}{key}", self.prefix);
        self.signer
            .presign_get(&full, req.expires, req.download.then_some(name))
            .await
            .map_err(UrlError::Backend)?
            .ok_or(UrlError::NoUrl)
    }
}

/// Ask the mount holding `path` for a URL (the client side of `byosfs url`), by reading the
/// request's xattr. Errors are sentences for the user.
pub fn ask_mount(path: &std::path::Path, req: UrlRequest) -> Result<String, String> {
    let shown = path.display();
    let mut buf = vec![0u8; 16 * 1024];
    match rustix::fs::getxattr(path, req.xattr_name().as_str(), &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            String::from_utf8(buf).map_err(|_| format!("{shown}: the mount answered a URL that is not UTF-8"))
        }
        Err(e) if e == rustix::io::Errno::ADDRNOTAVAIL => Err(format!(
            "{shown}: no URL for this backend (a local-directory tenant needs public_url_base)"
        )),
        Err(e) if e == rustix::io::Errno::ISDIR => Err(format!("{shown}: is a directory; URLs are for files")),
        Err(e) if e == rustix::io::Errno::NOENT => Err(format!("{shown}: no such file")),
        // What any other filesystem answers for an attribute it does not have.
        Err(e) if e == rustix::io::Errno::NODATA || e == rustix::io::Errno::NOTSUP => {
            Err(format!("{shown}: not a file inside a tenant of a running byosfs mount"))
        }
        Err(e) => Err(format!("{shown}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_names_carry_the_request() {
        let r = UrlRequest {
            expires: Duration::from_secs(90),
            download: true,
        };
        assert_eq!(r.xattr_name(), "user.byosfs.url:expires=90,download");
        assert_eq!(UrlRequest::from_xattr_name(&r.xattr_name()).unwrap().unwrap(), r);
        assert_eq!(
            UrlRequest::from_xattr_name("user.byosfs.url").unwrap().unwrap(),
            UrlRequest::default()
        );
        assert!(UrlRequest::from_xattr_name("user.content_type").is_none());
        assert!(UrlRequest::from_xattr_name("user.byosfs.urlx").is_none());
        let week_and_a_second = format!("user.byosfs.url:expires={}", 7 * 24 * 3600 + 1);
        assert!(UrlRequest::from_xattr_name(&week_and_a_second).unwrap().is_err());
        assert!(UrlRequest::from_xattr_name("user.byosfs.url:expires=0")
            .unwrap()
            .is_err());
    }

    #[test]
    fn public_urls_encode_keys_and_pick_the_right_base() {
        let m = UrlMaker::new(
            None,
            Some("https://cdn.example/".into()),
            "t/acme/".into(),
            Arc::default(),
        );
        assert_eq!(
            m.public("v/a b+ü.mp4").as_deref(),
            Some("https://cdn.example/t/acme/v/a%20b%2B%C3%BC.mp4")
        );
        let m = UrlMaker::new(
            Some("https://acme.example/".into()),
            Some("https://cdn/".into()),
            "t/".into(),
            Arc::default(),
        );
        assert_eq!(m.public("x.jpg").as_deref(), Some("https://acme.example/x.jpg"));
        assert!(UrlMaker::default().public("x").is_none());
    }

    #[tokio::test]
    async fn a_local_tenant_without_a_base_has_no_url() {
        let e = UrlMaker::default().url("x", UrlRequest::default()).await.unwrap_err();
        assert!(e.to_string().contains("no URL for this backend"), "{e}");
    }
}
