//! The body of a range GET, from whichever client sent it: each piece bounded by the request
//! timeout, the whole checked against Content-Length.

use std::time::{Duration, Instant};

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

/// Slowest body rate a GET may keep up to its end: with the request timeout it makes the
/// whole GET's deadline, so a server that sends a byte every few seconds (never idle long
/// enough for the per-piece timeout) cannot hold a request, and its slot, forever. 32 KiB/s
/// is far below any link a media mount is used over; an 8 MiB read-ahead GET gets 256 s.
const MIN_BODY_RATE: u64 = 32 * 1024;

/// The body of a GET being read: each piece must arrive within the request timeout (a slow
/// but moving body is fine, a stalled one is not), the whole within a deadline that grows with
/// its length, and it must match Content-Length and never exceed the range asked for (a server
/// that ignores `Range` and sends the whole object is stopped at once, not read into memory).
pub(super) struct BodyReader {
    body: GetBody,
    key: String,
    idle: Duration,
    deadline: Instant,
    received: u64,
    expected: Option<u64>,
    limit: u64,
}

impl BodyReader {
    /// `range_len`: how many bytes were asked for.
    pub(super) fn new(opened: OpenedGet, key: &str, idle: Duration, range_len: u64) -> BackendResult<Self> {
        if let Some(n) = opened.content_length.filter(|&n| n > range_len) {
            return Err(too_long(key, n, range_len));
        }
        let body_time = Duration::from_secs(range_len / MIN_BODY_RATE);
        Ok(Self {
            body: opened.body,
            key: key.to_owned(),
            idle,
            deadline: Instant::now() + idle + body_time,
            received: 0,
            expected: opened.content_length,
            limit: range_len,
        })
    }

    pub(super) async fn next_piece(&mut self) -> BackendResult<Option<Bytes>> {
        let wait = self.idle.min(self.deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wait, self.body.next()).await {
            Err(_) if Instant::now() >= self.deadline => Err(BackendError::new(
                BackendErrorKind::Timeout,
                format!(
                    "get {:?}: body too slow ({} bytes by the deadline)",
                    self.key, self.received
                ),
            )),
            Err(_) => Err(BackendError::new(
                BackendErrorKind::Timeout,
                format!("get {:?}: no body bytes for {:?}", self.key, self.idle),
            )),
            Ok(Some(Err(e))) => Err(BackendError::new(
                BackendErrorKind::Transient,
                format!("get {:?}: reading body", self.key),
            )
            .with_boxed_source(e)),
            Ok(Some(Ok(piece))) => {
                self.received += u64::try_from(piece.len()).unwrap_or(u64::MAX);
                if self.received > self.limit {
                    return Err(too_long(&self.key, self.received, self.limit));
                }
                Ok(Some(piece))
            }
            Ok(None) => match self.expected {
                Some(n) if n != self.received => Err(BackendError::new(
                    BackendErrorKind::Transient,
                    format!("get {:?}: body truncated ({} of {n} bytes)", self.key, self.received),
                )),
                _ => Ok(None),
            },
        }
    }

    pub(super) async fn next(mut self) -> BackendResult<Option<(Bytes, Self)>> {
        Ok(self.next_piece().await?.map(|piece| (piece, self)))
    }
}

/// The server sent more than the range asked for: not retried, since it would again.
fn too_long(key: &str, got: u64, asked: u64) -> BackendError {
    BackendError::new(
        BackendErrorKind::Protocol,
        format!("get {key:?}: the server sent {got} bytes or more for a range of {asked} (it ignored Range?)"),
    )
}

pub(super) fn to_usize(n: u64) -> usize {
    // Only a capacity hint: a range too large for memory fails at the allocation anyway.
    usize::try_from(n).unwrap_or(usize::MAX)
}
