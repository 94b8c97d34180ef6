//! The body of a range GET, from whichever client sent it: each piece bounded by the request
//! timeout, the whole checked against Content-Length.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::get;
use crate::backend::{BackendError, BackendErrorKind, BackendResult};

/// A GET whose response headers have arrived.
pub(super) struct OpenedGet {
    pub(super) body: GetBody,
    pub(super) content_length: Option<u64>,
}

/// The body of a GET, from whichever client sent it.
pub(super) enum GetBody {
    Sdk(ByteStream),
    Plain(hyper::body::Incoming),
}

impl GetBody {
    async fn next(&mut self) -> Option<Result<Bytes, Box<dyn std::error::Error + Send + Sync>>> {
        match self {
            Self::Sdk(b) => b.next().await.map(|r| r.map_err(Into::into)),
            Self::Plain(b) => get::next_piece(b).await.map_err(Into::into).transpose(),
        }
    }
}

/// The body of a GET being read: each piece must arrive within the request timeout (a slow
/// but moving body is fine, a stalled one is not), and the whole must match Content-Length.
pub(super) struct BodyReader {
    body: GetBody,
    key: String,
    idle: Duration,
    received: u64,
    expected: Option<u64>,
}

impl BodyReader {
    pub(super) fn new(opened: OpenedGet, key: &str, idle: Duration) -> Self {
        Self {
            body: opened.body,
            key: key.to_owned(),
            idle,
            received: 0,
            expected: opened.content_length,
        }
    }

    pub(super) async fn next_piece(&mut self) -> BackendResult<Option<Bytes>> {
        match tokio::time::timeout(self.idle, self.body.next()).await {
            Err(_) => Err(BackendError::new(
                BackendErrorKind::Timeout,
                format!("get {}: no body bytes for {:?}", self.key, self.idle),
            )),
            Ok(Some(Err(e))) => Err(BackendError::new(
                BackendErrorKind::Transient,
                format!("get {}: reading body", self.key),
            )
            .with_boxed_source(e)),
            Ok(Some(Ok(piece))) => {
                self.received += u64::try_from(piece.len()).unwrap_or(u64::MAX);
                Ok(Some(piece))
            }
            Ok(None) => match self.expected {
                Some(n) if n != self.received => Err(BackendError::new(
                    BackendErrorKind::Transient,
                    format!("get {}: body truncated ({} of {n} bytes)", self.key, self.received),
                )),
                _ => Ok(None),
            },
        }
    }

    pub(super) async fn next(mut self) -> BackendResult<Option<(Bytes, Self)>> {
        Ok(self.next_piece().await?.map(|piece| (piece, self)))
    }
}

pub(super) fn to_usize(n: u64) -> usize {
    // Only a capacity hint: a range too large for memory fails at the allocation anyway.
    usize::try_from(n).unwrap_or(usize::MAX)
}
