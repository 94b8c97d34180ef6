//! Backend errors: one kind per cause a caller must treat differently.
//!
//! Each backend classifies its native errors into a [`BackendErrorKind`] in exactly one
//! function (for S3: `s3::classify`). Nothing above the backend looks at HTTP codes or SDK
//! types. Whether an error is worth retrying is a property of its kind.

use std::fmt;
use std::time::Duration;

/// What went wrong, as far as callers need to know.
///
/// New variants may be added; callers mapping kinds (only `fs/error.rs` and `check`) match
/// exhaustively so that a new variant forces a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The key does not exist.
    NotFound,
    /// The bucket (or local root directory) does not exist.
    BucketNotFound,
    /// `If-Match` failed: the object changed since it was opened.
    PreconditionFailed,
    /// Credentials are valid but not allowed to do this.
    AccessDenied,
    /// The access key id is unknown to the service.
    InvalidAccessKey,
    /// The request signature does not match: almost always a wrong secret key.
    SignatureMismatch,
    /// The session token has expired (`ExpiredToken`, `TokenRefreshRequired`), or an OAuth
    /// refresh token was revoked or expired (`invalid_grant`): credentials must be renewed.
    /// Not retried: the same token fails again (credentials of the AWS default chain are
    /// refreshed by the SDK before they expire).
    ExpiredCredentials,
    /// The service asked us to slow down (503 SlowDown, 429).
    Throttled,
    /// The request did not finish within its deadline.
    Timeout,
    /// No connection could be made (DNS, refused, reset before a response).
    Unreachable,
    /// TLS handshake or certificate failure.
    Tls,
    /// A server-side or transport failure that may succeed when retried (5xx, reset).
    Transient,
    /// The request was malformed or refused as invalid (4xx that is none of the above).
    InvalidRequest,
    /// The multipart upload id is unknown (completed, aborted, or expired).
    NoSuchUpload,
    /// Local storage is full.
    NoSpace,
    /// The backend does not implement this operation.
    Unsupported,
    /// The server's answer broke the protocol: a listing that repeats its continuation token
    /// or never ends, a body longer than the range asked for. Not retried: it would again.
    Protocol,
    /// The service refused a body whose checksum did not match the one sent with it
    /// (BadDigest), or assembled an object of another size than the parts sent. Not retried:
    /// the upload fails and publishes nothing, so a corrupting path is noticed, not hidden.
    Corrupted,
    /// Anything else.
    Other,
}

impl BackendErrorKind {
    /// Whether repeating the same request may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Throttled | Self::Timeout | Self::Transient | Self::Unreachable
        )
    }

    /// A short human description, used in `check` output and error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::NotFound => "not found",
            Self::BucketNotFound => "bucket not found",
            Self::PreconditionFailed => "object changed since it was opened",
            Self::AccessDenied => "access denied",
            Self::InvalidAccessKey => "access key id not recognised",
            Self::SignatureMismatch => "signature mismatch (wrong secret access key?)",
            Self::ExpiredCredentials => {
                "credentials expired or revoked (renew the session token, or the OAuth refresh token)"
            }
            Self::Throttled => "throttled by the service",
            Self::Timeout => "request timed out",
            Self::Unreachable => "endpoint unreachable",
            Self::Tls => "TLS error",
            Self::Transient => "transient server error",
            Self::InvalidRequest => "invalid request",
            Self::NoSuchUpload => "multipart upload not found",
            Self::NoSpace => "no space left on local storage",
            Self::Unsupported => "operation not supported by this backend",
            Self::Protocol => "the server broke the S3 protocol",
            Self::Corrupted => "upload corrupted in transit (checksum or size mismatch)",
            Self::Other => "backend error",
        }
    }
}

/// An error from a [`Backend`](super::Backend) operation.
///
/// `context` names the operation and key (never credentials); `source` keeps the native error.
#[derive(Debug)]
pub struct BackendError {
    kind: BackendErrorKind,
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    /// How long the server asked the client to wait before trying again (`Retry-After` of a
    /// 429 or 503), when it said.
    retry_after: Option<Duration>,
}

impl BackendError {
    /// A new error of `kind` with a context message.
    pub fn new(kind: BackendErrorKind, context: impl Into<String>) -> Self {
        Self {
            kind,
            context: context.into(),
            source: None,
            retry_after: None,
        }
    }

    /// Record the wait the server asked for before a retry (its `Retry-After`).
    #[must_use]
    pub fn with_retry_after(mut self, wait: Option<Duration>) -> Self {
        self.retry_after = wait;
        self
    }

    /// The wait the server asked for before a retry, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Attach the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Attach an already boxed underlying error.
    pub fn with_boxed_source(mut self, source: Box<dyn std::error::Error + Send + Sync + 'static>) -> Self {
        self.source = Some(source);
        self
    }

    /// The classified kind.
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// Whether the operation may succeed if repeated.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// The context message (operation and key).
    pub fn context(&self) -> &str {
        &self.context
    }

    /// Shorthand for a [`BackendErrorKind::NotFound`] error.
    pub fn not_found(key: &str) -> Self {
        Self::new(BackendErrorKind::NotFound, format!("no such key: {key}"))
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.describe(), self.context)?;
        // Walk the chain so one log line holds the root cause.
        let mut src: Option<&(dyn std::error::Error + 'static)> = self.source.as_deref().map(|e| e as _);
        while let Some(e) = src {
            write!(f, ": {e}")?;
            src = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for BackendError {}

/// Result alias for backend operations.
pub type BackendResult<T> = Result<T, BackendError>;
