//! The extended attributes byosfs answers: `user.content_type` (read and set: the object's
//! Content-Type) and `user.byosfs.url` (read: a URL for the file, see `crate::url`). Every
//! other name is absent (`ENODATA`) and cannot be set (`ENOTSUP`): nothing else is stored.

use std::ffi::OsStr;
use std::sync::Arc;

use super::{Error, Filesystem, Result};
use crate::backend::PutOptions;
use crate::namespace::{Inode, Kind};
use crate::tenant::Tenant;
use crate::url::UrlRequest;

/// The xattr holding an object's Content-Type.
pub const CONTENT_TYPE_XATTR: &str = "user.content_type";

/// Whether `name` is one byosfs answers (others are refused at once, without a request).
pub fn is_ours(name: &OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n == CONTENT_TYPE_XATTR || UrlRequest::from_xattr_name(n).is_some())
}

impl Filesystem {
    /// The file `ino` and its tenant; directories have neither attribute.
    fn xattr_file(&self, ino: u64) -> Result<(Inode, Arc<Tenant>)> {
        let inode = self.inodes.get(ino)?;
        if inode.kind != Kind::File {
            return Err(Error::expected(libc::EISDIR, "only files have a Content-Type or a URL"));
        }
        let tenant = self.tenant_of(&inode)?;
        Ok((inode, tenant))
    }

    /// The value of xattr `name` of `ino`.
    pub async fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        let absent = || Error::expected(libc::ENODATA, "no such attribute");
        let name = name.to_str().ok_or_else(absent)?;
        if name == CONTENT_TYPE_XATTR {
            let (inode, tenant) = self.xattr_file(ino)?;
            let meta = tenant.backend.head(&inode.key).await?;
            return meta.content_type.map(String::into_bytes).ok_or_else(absent);
        }
        let Some(req) = UrlRequest::from_xattr_name(name) else {
            return Err(absent());
        };
        let req = req?;
        let (inode, tenant) = self.xattr_file(ino)?;
        // Read-only tenants get URLs too: making one changes nothing.
        Ok(tenant.policy.urls.url(&inode.key, req).await?.into_bytes())
    }

    /// Set xattr `name` of `ino`: only `user.content_type`, rewritten in the object's
    /// metadata by a copy onto itself.
    pub async fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8]) -> Result<()> {
        if name.to_str() != Some(CONTENT_TYPE_XATTR) {
            return Err(Error::expected(libc::ENOTSUP, "only user.content_type can be set"));
        }
        let value = std::str::from_utf8(value)
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
            .ok_or_else(|| Error::expected(libc::EINVAL, "a Content-Type is printable ASCII"))?;
        let (inode, tenant) = self.xattr_file(ino)?;
        if tenant.read_only {
            return Err(Error::read_only(&tenant.name));
        }
        if let Some(w) = self.writer(ino) {
            // Publish what is being written first, so the header lands on that content.
            let _ = w.session.lock().await;
            if w.needs_commit.load(std::sync::atomic::Ordering::Acquire) {
                return Err(Error::expected(
                    libc::EBUSY,
                    "file is being written; set it after close",
                ));
            }
        }
        let opts = PutOptions::default().with_headers(Some(value.to_owned()), None);
        let put = tenant.backend.update_metadata(&inode.key, &opts).await?;
        let mut stat = inode.stat;
        stat.etag = put.etag;
        self.inodes.set_stat(ino, stat);
        Ok(())
    }
}
