//! S3 answers and SDK failures as [`BackendError`]s: the one place that reads S3 status codes
//! and error codes ([`kind_from_response`], used by both the SDK and the plain GET client).

use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::date_time::{DateTime, Format};

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
    let retry_after = err
        .raw_response()
        .and_then(|r| r.headers().get("retry-after"))
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    BackendError::new(kind, context)
        .with_retry_after(retry_after)
        .with_source(err)
}

/// A `Retry-After` header (RFC 9110: delay-seconds or an HTTP-date) as a wait from `now`;
/// `None` for a value that is neither (a date in the past is no wait).
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Longer than any wait anyone honours; saturate rather than fail on huge values.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = SystemTime::try_from(DateTime::from_str(value, Format::HttpDate).ok()?).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00 UTC
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        // A date already past is no wait; anything else is not a Retry-After.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "-5", "1.5", "soon", "99999999999999999999999"] {
            let got = parse_retry_after(bad, now);
            assert!(bad.starts_with('9') || got.is_none(), "{bad:?} -> {got:?}");
        }
        assert!(parse_retry_after("99999999999999999999999", now).unwrap() > Duration::from_secs(1 << 40));
    }
}
