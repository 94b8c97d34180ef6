//! The filesystem's error type and THE mapping from every lower-layer error to an errno.
//!
//! Matches are exhaustive on purpose (no `_ =>`): a new error variant below must be given an
//! errno here, deliberately. Nothing else in the crate chooses errno values.

use std::fmt;

use crate::backend::{BackendError, BackendErrorKind};
use crate::limits::LimitError;
use crate::namespace::name::NameError;
use crate::namespace::InodeError;
use crate::read::ReadError;
use crate::upload::UploadError;
use crate::url::UrlError;

/// An error answered to the kernel: an errno plus what to log.
pub struct Error {
    errno: i32,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    /// Expected outcomes (a lookup of a missing name) are logged at DEBUG, not WARN.
    expected: bool,
}

/// Result of filesystem operations.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with an explicit errno, for conditions the fs itself detects.
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        Self {
            errno,
            message: message.into(),
            source: None,
            expected: false,
        }
    }

    /// An errno that is a normal answer (ENOENT on lookup, ENOTEMPTY, EEXIST...).
    pub fn expected(errno: i32, message: impl Into<String>) -> Self {
        Self {
            errno,
            message: message.into(),
            source: None,
            expected: true,
        }
    }

    /// `ENOENT` as a normal answer.
    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::expected(libc::ENOENT, format!("{what}: not found"))
    }

    /// `EROFS` for a read-only tenant.
    pub fn read_only(tenant: &str) -> Self {
        Self::expected(libc::EROFS, format!("tenant {tenant} is read-only"))
    }

    /// The errno to reply with.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// Whether this is a routine answer rather than a failure worth a warning.
    pub fn is_expected(&self) -> bool {
        self.expected
    }

    fn with_source(errno: i32, message: String, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            errno,
            message,
            source: Some(Box::new(source)),
            expected: false,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (errno {})", self.message, self.errno)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// errno for a backend error kind.
pub fn backend_errno(kind: BackendErrorKind) -> i32 {
    match kind {
        BackendErrorKind::NotFound => libc::ENOENT,
        BackendErrorKind::PreconditionFailed => libc::ESTALE,
        BackendErrorKind::AccessDenied
        | BackendErrorKind::InvalidAccessKey
        | BackendErrorKind::SignatureMismatch
        | BackendErrorKind::ExpiredCredentials => libc::EACCES,
        BackendErrorKind::InvalidRequest => libc::EINVAL,
        BackendErrorKind::NoSpace => libc::ENOSPC,
        BackendErrorKind::Unsupported => libc::ENOTSUP,
        // A dead or hung endpoint is an I/O error to applications, as on a failing disk.
        BackendErrorKind::Timeout
        | BackendErrorKind::BucketNotFound
        | BackendErrorKind::Throttled
        | BackendErrorKind::Unreachable
        | BackendErrorKind::Tls
        | BackendErrorKind::Transient
        | BackendErrorKind::NoSuchUpload
        | BackendErrorKind::Protocol
        // A body the service refused as corrupted, or a completed object of the wrong size.
        | BackendErrorKind::Corrupted
        | BackendErrorKind::Other => libc::EIO,
    }
}

impl From<BackendError> for Error {
    fn from(e: BackendError) -> Self {
        let errno = backend_errno(e.kind());
        let expected = e.kind() == BackendErrorKind::NotFound;
        let message = match e.kind() {
            // Says what to do: an EACCES alone reads like a permissions problem.
            BackendErrorKind::ExpiredCredentials => {
                "backend request failed: the credentials have expired or were revoked (ExpiredToken, \
                 invalid_grant); renew the session token or the OAuth refresh token"
            }
            _ => "backend request failed",
        };
        let mut err = Self::with_source(errno, message.to_owned(), e);
        err.expected = expected;
        err
    }
}

impl From<InodeError> for Error {
    fn from(e: InodeError) -> Self {
        match e {
            InodeError::Unknown(_) => Self::with_source(libc::ESTALE, "stale inode".to_owned(), e),
        }
    }
}

impl From<NameError> for Error {
    fn from(e: NameError) -> Self {
        match e {
            NameError::TooLong => Self::expected(libc::ENAMETOOLONG, e.to_string()),
            NameError::Invalid => Self::expected(libc::EINVAL, e.to_string()),
        }
    }
}

impl From<ReadError> for Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::ObjectChanged { .. } => Self::with_source(libc::ESTALE, "object changed while open".into(), e),
            ReadError::Backend(b) => b.into(),
        }
    }
}

impl From<LimitError> for Error {
    fn from(e: LimitError) -> Self {
        // Refusals by platform policy are answers, not failures of the mount (the refusal is
        // logged once, naming the rule, where it is decided).
        let errno = match e {
            LimitError::TooLarge { .. } => libc::EFBIG,
            LimitError::OverQuota { .. } => libc::EDQUOT,
            LimitError::Extension { .. } => libc::EPERM,
        };
        let message = e.to_string();
        let mut err = Self::with_source(errno, message, e);
        err.expected = true;
        err
    }
}

impl From<UrlError> for Error {
    fn from(e: UrlError) -> Self {
        match e {
            // Not ENODATA or ENOTSUP: `byosfs url` tells them from "not a byosfs file".
            UrlError::NoUrl => Self::expected(libc::EADDRNOTAVAIL, e.to_string()),
            UrlError::Expiry(_) => Self::expected(libc::EINVAL, e.to_string()),
            UrlError::Backend(b) => b.into(),
        }
    }
}

impl From<UploadError> for Error {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Backend(b) => b.into(),
            UploadError::StagingFull => Self::with_source(libc::ENOSPC, "write staging area full".into(), e),
            UploadError::Io(ref io) => {
                let errno = io.raw_os_error().unwrap_or(libc::EIO);
                Self::with_source(errno, "staging file IO failed".into(), e)
            }
            UploadError::TooLarge { .. } => Self::with_source(libc::EFBIG, "file too large".into(), e),
            UploadError::Evicted { .. } | UploadError::DataLost => {
                Self::with_source(libc::EIO, "write failed".into(), e)
            }
            UploadError::InvalidConfig(_) => Self::with_source(libc::EINVAL, "upload configuration".into(), e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_corruption_have_their_own_errnos() {
        let e = Error::from(LimitError::TooLarge { size: 2, max: 1 });
        assert_eq!(e.errno(), libc::EFBIG);
        let e = Error::from(LimitError::OverQuota {
            used: 1,
            more: 1,
            quota: 1,
        });
        assert_eq!(e.errno(), libc::EDQUOT);
        let e = Error::from(LimitError::Extension {
            name: "a.exe".into(),
            rule: "denied_extensions".into(),
        });
        assert_eq!(e.errno(), libc::EPERM);
        assert!(e.to_string().contains("denied_extensions"));
        let e = Error::from(BackendError::new(BackendErrorKind::Corrupted, "put a"));
        assert_eq!(e.errno(), libc::EIO);
        assert!(!BackendErrorKind::Corrupted.is_retryable());
    }

    #[test]
    fn expired_session_tokens_are_eacces_and_say_so() {
        let e = Error::from(BackendError::new(BackendErrorKind::ExpiredCredentials, "get a.mp4"));
        assert_eq!(e.errno(), libc::EACCES);
        assert!(!e.is_expected());
        let shown = e.to_string();
        assert!(shown.contains("expired") && shown.contains("session token"), "{shown}");
        assert!(!BackendErrorKind::ExpiredCredentials.is_retryable());
    }
}
