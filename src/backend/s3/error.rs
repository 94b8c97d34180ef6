//! S3 answers and SDK failures as [`BackendError`]s: the one place that reads S3 status codes
//! and error codes ([`kind_from_response`], used by both the SDK and the plain GET client).

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::backend::{BackendError, BackendErrorKind};

/// Turn an SDK error into a [`BackendError`] (the S3 answer through [`kind_from_response`]).
pub fn classify<E>(op: &str, key: &str, err: SdkError<E>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let context = if key.is_empty() {
        op.to_owned()
    } else {
        format!("{op} {key}")
    };
    let kind = match &err {
        SdkError::TimeoutError(_) => BackendErrorKind::Timeout,
        SdkError::DispatchFailure(d) => {
            if d.is_timeout() {
                BackendErrorKind::Timeout
            } else if chain_mentions_tls(&err) {
                BackendErrorKind::Tls
            } else if d.is_io() || d.is_other() {
                BackendErrorKind::Unreachable
            } else {
                BackendErrorKind::Other
            }
        }
        SdkError::ConstructionFailure(_) => BackendErrorKind::InvalidRequest,
        _ => {
            let status = err.raw_response().map(|r| r.status().as_u16());
            kind_from_response(status, err.code())
        }
    };
    BackendError::new(kind, context).with_source(err)
}

/// Service answer (status + S3 error code) → kind. HEAD answers carry no body, hence no
/// code, so the status alone must give a sensible kind.
pub(super) fn kind_from_response(status: Option<u16>, code: Option<&str>) -> BackendErrorKind {
    use BackendErrorKind as K;
    match code {
        Some("NoSuchKey" | "NotFound") => return K::NotFound,
        Some("NoSuchBucket") => return K::BucketNotFound,
        Some("NoSuchUpload") => return K::NoSuchUpload,
        Some("PreconditionFailed") => return K::PreconditionFailed,
        Some("InvalidAccessKeyId") => return K::InvalidAccessKey,
        Some("SignatureDoesNotMatch") => return K::SignatureMismatch,
        Some("ExpiredToken" | "TokenRefreshRequired") => return K::ExpiredCredentials,
        Some("AccessDenied" | "AllAccessDisabled" | "AccountProblem") => return K::AccessDenied,
        Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded" | "TooManyRequests") => {
            return K::Throttled
        }
        // A skewed request is retried: both clients sign the next attempt with the server's
        // clock (the SDK by its own interceptor, `get` from the error's Date header).
        Some("RequestTimeout" | "InternalError" | "ServiceUnavailable" | "RequestTimeTooSkewed") => {
            return K::Transient
        }
        Some("NotImplemented") => return K::Unsupported,
        Some("BadDigest" | "InvalidDigest" | "XAmzContentChecksumMismatch" | "XAmzContentSHA256Mismatch") => {
            return K::Corrupted
        }
        _ => {}
    }
    match status {
        Some(404) => K::NotFound,
        Some(412) => K::PreconditionFailed,
        Some(401 | 403) => K::AccessDenied,
        Some(429 | 503) => K::Throttled,
        Some(501) => K::Unsupported,
        Some(s) if s >= 500 => K::Transient,
        Some(s) if s >= 400 => K::InvalidRequest,
        _ => K::Other,
    }
}

pub(super) fn chain_mentions_tls(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    // Bounded: error chains are short, but never trust a cycle.
    for _ in 0..16 {
        let Some(e) = cur else { return false };
        let s = e.to_string().to_ascii_lowercase();
        if s.contains("certificate") || s.contains("tls") || s.contains("handshake") || s.contains("ssl") {
            return true;
        }
        cur = e.source();
    }
    false
}

pub(super) fn is_invalid_range<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    err.code() == Some("InvalidRange") || err.raw_response().map(|r| r.status().as_u16()) == Some(416)
}
