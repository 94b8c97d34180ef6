//! Requests counted by S3 operation at a loopback test server, so tests and the benchmark can
//! say how many round trips a filesystem operation cost (issue 26). Shared by
//! `tests/common/s3server.rs` and the bench server `examples/s3server.rs`.
//!
//! The operation is told from the method, the query and the headers only (no body), the way
//! S3 itself routes a request; requests without an object key (listings, bucket calls) are
//! told apart from object requests by the path.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// One kind of S3 request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Object GET (whole or ranged).
    Get,
    /// HEAD of an object (or a bucket).
    Head,
    /// Whole-object PUT (not a part, not a copy).
    Put,
    /// UploadPart.
    Part,
    /// CopyObject or UploadPartCopy.
    Copy,
    /// ListObjects(V2) and ListMultipartUploads.
    List,
    /// CreateMultipartUpload and CompleteMultipartUpload.
    Post,
    /// DeleteObject(s) and AbortMultipartUpload.
    Delete,
    /// Anything else.
    Other,
}

impl Op {
    /// The kind of a request with this method, path (`/bucket/key`), query and a copy-source
    /// header or not.
    pub fn classify(method: &str, path: &str, query: &str, copy_source: bool) -> Op {
        let has_key = path
            .trim_start_matches('/')
            .split_once('/')
            .is_some_and(|(_, key)| !key.is_empty());
        // ListObjects(V2) and ListMultipartUploads (`GET ?uploads`); `POST ?uploads` creates one.
        let listing = query.contains("list-type") || query.contains("uploads") || !has_key;
        match method {
            "GET" if listing => Op::List,
            "GET" => Op::Get,
            "HEAD" => Op::Head,
            "PUT" if copy_source => Op::Copy,
            "PUT" if query.contains("partNumber=") => Op::Part,
            "PUT" => Op::Put,
            "POST" if query.contains("delete") => Op::Delete,
            "POST" => Op::Post,
            "DELETE" => Op::Delete,
            _ => Op::Other,
        }
    }
}

/// Counters per [`Op`]; relaxed atomics, read as a [`OpSnapshot`].
#[derive(Debug, Default)]
pub struct OpCounts {
    counts: [AtomicU64; 9],
}

impl OpCounts {
    /// Count one request of kind `op`.
    pub fn add(&self, op: Op) {
        self.counts[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Count one HTTP request (see [`Op::classify`]).
    pub fn count<B>(&self, req: &http::Request<B>) {
        let op = Op::classify(
            req.method().as_str(),
            req.uri().path(),
            req.uri().query().unwrap_or(""),
            req.headers().contains_key("x-amz-copy-source"),
        );
        self.add(op);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> OpSnapshot {
        let c = |op: Op| self.counts[op as usize].load(Ordering::Relaxed);
        OpSnapshot {
            get: c(Op::Get),
            head: c(Op::Head),
            put: c(Op::Put),
            part: c(Op::Part),
            copy: c(Op::Copy),
            list: c(Op::List),
            post: c(Op::Post),
            delete: c(Op::Delete),
            other: c(Op::Other),
        }
    }
}

/// Requests per kind at one instant; subtract two to count what happened in between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpSnapshot {
    /// [`Op::Get`].
    pub get: u64,
    /// [`Op::Head`].
    pub head: u64,
    /// [`Op::Put`].
    pub put: u64,
    /// [`Op::Part`].
    pub part: u64,
    /// [`Op::Copy`].
    pub copy: u64,
    /// [`Op::List`].
    pub list: u64,
    /// [`Op::Post`].
    pub post: u64,
    /// [`Op::Delete`].
    pub delete: u64,
    /// [`Op::Other`].
    pub other: u64,
}

impl OpSnapshot {
    /// Every request.
    pub fn total(&self) -> u64 {
        self.get + self.head + self.put + self.part + self.copy + self.list + self.post + self.delete + self.other
    }

    /// What happened since `earlier`.
    pub fn since(&self, earlier: &OpSnapshot) -> OpSnapshot {
        OpSnapshot {
            get: self.get - earlier.get,
            head: self.head - earlier.head,
            put: self.put - earlier.put,
            part: self.part - earlier.part,
            copy: self.copy - earlier.copy,
            list: self.list - earlier.list,
            post: self.post - earlier.post,
            delete: self.delete - earlier.delete,
            other: self.other - earlier.other,
        }
    }
}

impl fmt::Display for OpSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "total={} get={} head={} put={} part={} copy={} list={} post={} delete={} other={}",
            self.total(),
            self.get,
            self.head,
            self.put,
            self.part,
            self.copy,
            self.list,
            self.post,
            self.delete,
            self.other
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart_like_s3_routes_them() {
        assert_eq!(Op::classify("GET", "/b/k", "", false), Op::Get);
        assert_eq!(Op::classify("GET", "/b", "list-type=2&prefix=a", false), Op::List);
        assert_eq!(Op::classify("GET", "/b/", "", false), Op::List);
        assert_eq!(Op::classify("HEAD", "/b/k", "", false), Op::Head);
        assert_eq!(Op::classify("PUT", "/b/k", "", false), Op::Put);
        assert_eq!(Op::classify("PUT", "/b/k", "partNumber=1&uploadId=x", false), Op::Part);
        assert_eq!(Op::classify("PUT", "/b/k", "", true), Op::Copy);
        assert_eq!(Op::classify("GET", "/b", "uploads", false), Op::List);
        assert_eq!(Op::classify("POST", "/b/k", "uploads", false), Op::Post);
        assert_eq!(Op::classify("POST", "/b/k", "uploadId=x", false), Op::Post);
        assert_eq!(Op::classify("DELETE", "/b/k", "", false), Op::Delete);
    }
}
