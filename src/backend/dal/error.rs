//! OpenDAL errors → [`BackendError`], in this one function.
//!
//! OpenDAL's services already classify HTTP answers into an [`opendal::ErrorKind`] and mark
//! those worth repeating (5xx, 429, timeouts, connection failures) as temporary; this maps
//! that onto byosfs's kinds so the one retry place (`backend/retry.rs`) decides about
//! retries, and `check` and `fs/error.rs` see the same taxonomy as on S3.
//!
//! The native error is not kept as a source: its context can carry a request URL, and an
//! Azure SAS token travels in the query string. Its text is kept with every query string cut.

use std::fmt;

use opendal::ErrorKind;

use crate::backend::{BackendError, BackendErrorKind};

/// Classify an OpenDAL error from operation `op` on `key`.
pub(super) fn classify(op: &str, key: &str, e: &opendal::Error) -> BackendError {
    let kind = kind_of(e.kind(), e.is_temporary(), &e.to_string());
    BackendError::new(kind, format!("{op} {key}")).with_source(Redacted(redact_queries(&e.to_string())))
}

/// The kind for an OpenDAL kind, its temporary flag and its text. Pure, so the table is
/// tested without a server.
fn kind_of(kind: ErrorKind, temporary: bool, text: &str) -> BackendErrorKind {
    // OAuth's answer to a refresh token that was revoked or expired (RFC 6749 §5.2; Google
    // words it "Token has been expired or revoked."): no retry helps, a new grant does.
    // OpenDAL's Drive service reports it as an unexpected 400 with the body as text.
    if text.contains("invalid_grant") {
        return BackendErrorKind::ExpiredCredentials;
    }
    match kind {
        ErrorKind::NotFound => BackendErrorKind::NotFound,
        ErrorKind::PermissionDenied => BackendErrorKind::AccessDenied,
        ErrorKind::RateLimited => BackendErrorKind::Throttled,
        // `If-Match` failed, or `If-None-Match: *` / create-only found the key taken.
        ErrorKind::ConditionNotMatch | ErrorKind::AlreadyExists => BackendErrorKind::PreconditionFailed,
        ErrorKind::Unsupported => BackendErrorKind::Unsupported,
        ErrorKind::ConfigInvalid
        | ErrorKind::IsADirectory
        | ErrorKind::NotADirectory
        | ErrorKind::IsSameFile
        | ErrorKind::RangeNotSatisfied => BackendErrorKind::InvalidRequest,
        ErrorKind::Conflict if temporary => BackendErrorKind::Transient,
        ErrorKind::Unexpected if temporary => transport_kind(text),
        ErrorKind::Conflict | ErrorKind::Unexpected => BackendErrorKind::Other,
        // `ErrorKind` is non-exhaustive: a kind added by a later OpenDAL is kept retryable
        // when OpenDAL says so, else reported as it is.
        _ if temporary => BackendErrorKind::Transient,
        _ => BackendErrorKind::Other,
    }
}

/// A temporary failure below HTTP: the reqwest transport words a refused connection, a
/// timeout and a TLS failure differently, and they need different advice in `check`.
fn transport_kind(text: &str) -> BackendErrorKind {
    let t = text.to_ascii_lowercase();
    if t.contains("certificate") || t.contains("tls") || t.contains("handshake") {
        BackendErrorKind::Tls
    } else if t.contains("timed out") || t.contains("timeout") {
        BackendErrorKind::Timeout
    } else if t.contains("connection refused")
        || t.contains("error trying to connect")
        || t.contains("dns error")
        || t.contains("client error (connect)")
    {
        BackendErrorKind::Unreachable
    } else {
        BackendErrorKind::Transient
    }
}

/// `text` with everything from a `?` to the end of each URL removed (SAS tokens, signatures).
fn redact_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_url = false;
    let mut skipping = false;
    let mut prev = ' ';
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let ends = c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '}' | ')' | ']' | '>');
        if ends {
            in_url = false;
            skipping = false;
        } else if !in_url && c == ':' && chars.get(i + 1) == Some(&'/') && prev.is_ascii_alphabetic() {
            in_url = true;
        } else if in_url && c == '?' {
            skipping = true;
            out.push_str("?<redacted>");
        }
        if !skipping {
            out.push(c);
        }
        prev = c;
    }
    out
}

/// The native error's text, redacted, as the source of a [`BackendError`].
#[derive(Debug)]
struct Redacted(String);

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Redacted {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_backend_taxonomy() {
        let k = |kind, temporary| kind_of(kind, temporary, "");
        assert_eq!(k(ErrorKind::NotFound, false), BackendErrorKind::NotFound);
        assert_eq!(k(ErrorKind::PermissionDenied, false), BackendErrorKind::AccessDenied);
        assert_eq!(k(ErrorKind::RateLimited, true), BackendErrorKind::Throttled);
        assert_eq!(
            k(ErrorKind::ConditionNotMatch, false),
            BackendErrorKind::PreconditionFailed
        );
        assert_eq!(k(ErrorKind::Unexpected, true), BackendErrorKind::Transient);
        assert_eq!(k(ErrorKind::Unexpected, false), BackendErrorKind::Other);
        assert_eq!(k(ErrorKind::Unsupported, false), BackendErrorKind::Unsupported);
        assert!(k(ErrorKind::RateLimited, true).is_retryable());
        assert!(!k(ErrorKind::PermissionDenied, false).is_retryable());
        let revoked = r#"Unexpected, context: { status: 400 } => {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}"#;
        assert_eq!(
            kind_of(ErrorKind::Unexpected, false, revoked),
            BackendErrorKind::ExpiredCredentials
        );
    }

    #[test]
    fn transport_failures_get_their_own_kind() {
        let t = |text| kind_of(ErrorKind::Unexpected, true, text);
        assert_eq!(
            t("send http request: error sending request: client error (Connect): tcp connect error: Connection refused"),
            BackendErrorKind::Unreachable
        );
        assert_eq!(t("operation timed out"), BackendErrorKind::Timeout);
        assert_eq!(t("invalid peer certificate: UnknownIssuer"), BackendErrorKind::Tls);
        assert_eq!(t("status 503"), BackendErrorKind::Transient);
    }

    #[test]
    fn query_strings_never_survive() {
        let text =
            "Unexpected at read, context: { url: https://acct.blob.core.windows.net/c/k?sv=2022&sig=SECRET } => x";
        let r = redact_queries(text);
        assert!(!r.contains("SECRET") && !r.contains("sv=2022"), "{r}");
        assert!(r.contains("https://acct.blob.core.windows.net/c/k?<redacted> }"), "{r}");
        assert_eq!(redact_queries("a plain message? yes"), "a plain message? yes");
    }
}
