//! Names of every metric byosfs exports, with their help text: the one list that the
//! Prometheus endpoint, `byosfs status` and the docs' table (docs/operations.md) follow.
//!
//! Labels are `tenant` and `backend` (the tenant's backend *type*, `s3` or `local`) and, where
//! a metric has them, the FUSE operation, errno, backend operation, outcome or error class:
//! all from small fixed sets. An object key is never a label (a key per series would grow
//! without bound and leak customers' file names into monitoring).

/// One exported metric: its name (Prometheus `byosfs_` prefix included), kind and help.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    /// Full metric name.
    pub name: &'static str,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// One-line description (the `# HELP` text).
    pub help: &'static str,
}

const fn def(name: &'static str, kind: &'static str, help: &'static str) -> Def {
    Def { name, kind, help }
}

/// FUSE requests by operation (`op`).
pub const FUSE_REQUESTS: Def = def("byosfs_fuse_requests_total", "counter", "FUSE requests by operation");
/// FUSE requests answered with an error, by operation and errno name.
pub const FUSE_ERRORS: Def = def(
    "byosfs_fuse_errors_total",
    "counter",
    "FUSE requests answered with an error, by operation and errno",
);
/// Requests to a tenant's storage by operation and outcome (`ok`, `error`); above the retry
/// layer, so a request retried three times counts once.
pub const BACKEND_REQUESTS: Def = def(
    "byosfs_backend_requests_total",
    "counter",
    "Requests to a tenant's storage by operation and outcome (after retries)",
);
/// Failed storage requests by error class (`Timeout`, `PermissionDenied`, ...).
pub const BACKEND_ERRORS: Def = def(
    "byosfs_backend_errors_total",
    "counter",
    "Failed storage requests by error class",
);
/// Retries of storage requests (attempts beyond the first), by backend type.
pub const BACKEND_RETRIES: Def = def(
    "byosfs_backend_retries_total",
    "counter",
    "Storage request attempts beyond the first, by backend type",
);
/// Time from sending a GET to its first body byte.
pub const GET_FIRST_BYTE: Def = def(
    "byosfs_backend_get_first_byte_seconds",
    "histogram",
    "Time from sending a ranged GET to its first body byte",
);
/// Time to upload one multipart part (or server-side part copy).
pub const PART_UPLOAD: Def = def(
    "byosfs_backend_part_upload_seconds",
    "histogram",
    "Time to upload one multipart part (data or server-side copy)",
);
/// Object bytes received from storage (reads and read-ahead).
pub const BYTES_FETCHED: Def = def(
    "byosfs_bytes_fetched_total",
    "counter",
    "Object bytes received from storage (reads and read-ahead)",
);
/// Bytes handed to readers.
pub const BYTES_SERVED: Def = def("byosfs_bytes_served_total", "counter", "Bytes handed to readers");
/// Bytes sent to storage (single PUTs and multipart parts).
pub const BYTES_UPLOADED: Def = def(
    "byosfs_bytes_uploaded_total",
    "counter",
    "Bytes sent to storage (single PUTs and multipart parts)",
);
/// Read-ahead bytes fetched and never served by the handle that fetched them.
pub const READAHEAD_WASTED: Def = def(
    "byosfs_readahead_wasted_bytes_total",
    "counter",
    "Bytes fetched for a file handle that it never served (read-ahead past where reading stopped)",
);
/// Reads answered from memory (cached block, or read-ahead already arrived).
pub const CACHE_HITS: Def = def(
    "byosfs_cache_hits_total",
    "counter",
    "Reads answered from memory without waiting for storage",
);
/// Reads that had to wait for storage.
pub const CACHE_MISSES: Def = def("byosfs_cache_misses_total", "counter", "Reads that waited for storage");
/// Blocks evicted from the block cache to make room.
pub const CACHE_EVICTIONS: Def = def(
    "byosfs_cache_evictions_total",
    "counter",
    "Blocks evicted from the block cache to make room",
);
/// Block cache bytes held.
pub const CACHE_BYTES: Def = def("byosfs_cache_bytes", "gauge", "Block cache bytes held");
/// Block cache budget.
pub const CACHE_BUDGET: Def = def("byosfs_cache_budget_bytes", "gauge", "Block cache budget");
/// Files being written (write sessions alive).
pub const UPLOADS_IN_FLIGHT: Def = def(
    "byosfs_uploads_in_flight",
    "gauge",
    "Files being written and not yet committed",
);
/// Part-buffer memory held.
pub const WRITE_BUDGET_USED: Def = def(
    "byosfs_write_budget_bytes",
    "gauge",
    "Part-buffer memory held by writers",
);
/// Part-buffer memory budget.
pub const WRITE_BUDGET_LIMIT: Def = def("byosfs_write_budget_limit_bytes", "gauge", "Part-buffer memory budget");
/// Time writers waited for part-buffer memory.
pub const WRITE_BUDGET_WAIT: Def = def(
    "byosfs_write_budget_wait_seconds_total",
    "counter",
    "Time writers waited for part-buffer memory",
);
/// Staging bytes reserved.
pub const STAGING_BYTES: Def = def("byosfs_staging_bytes", "gauge", "Local staging bytes reserved");
/// Staging limit.
pub const STAGING_LIMIT: Def = def("byosfs_staging_limit_bytes", "gauge", "Local staging limit");

/// Every metric, in the order the endpoint writes them.
pub const ALL: &[Def] = &[
    FUSE_REQUESTS,
    FUSE_ERRORS,
    BACKEND_REQUESTS,
    BACKEND_ERRORS,
    BACKEND_RETRIES,
    GET_FIRST_BYTE,
    PART_UPLOAD,
    BYTES_FETCHED,
    BYTES_SERVED,
    BYTES_UPLOADED,
    READAHEAD_WASTED,
    CACHE_HITS,
    CACHE_MISSES,
    CACHE_EVICTIONS,
    CACHE_BYTES,
    CACHE_BUDGET,
    UPLOADS_IN_FLIGHT,
    WRITE_BUDGET_USED,
    WRITE_BUDGET_LIMIT,
    WRITE_BUDGET_WAIT,
    STAGING_BYTES,
    STAGING_LIMIT,
];

/// Storage operations, as the `op` label of [`BACKEND_REQUESTS`] names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the names say it
pub enum BackendOp {
    Head,
    Get,
    List,
    Put,
    CreateMultipart,
    UploadPart,
    UploadPartCopy,
    CompleteMultipart,
    AbortMultipart,
    ListMultipartUploads,
    Copy,
    Delete,
    UpdateMetadata,
}

impl BackendOp {
    /// Every operation, in label order.
    pub const ALL: [BackendOp; 13] = [
        Self::Head,
        Self::Get,
        Self::List,
        Self::Put,
        Self::CreateMultipart,
        Self::UploadPart,
        Self::UploadPartCopy,
        Self::CompleteMultipart,
        Self::AbortMultipart,
        Self::ListMultipartUploads,
        Self::Copy,
        Self::Delete,
        Self::UpdateMetadata,
    ];

    /// The `op` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Head => "head",
            Self::Get => "get",
            Self::List => "list",
            Self::Put => "put",
            Self::CreateMultipart => "create_multipart",
            Self::UploadPart => "upload_part",
            Self::UploadPartCopy => "upload_part_copy",
            Self::CompleteMultipart => "complete_multipart",
            Self::AbortMultipart => "abort_multipart",
            Self::ListMultipartUploads => "list_multipart_uploads",
            Self::Copy => "copy",
            Self::Delete => "delete",
            Self::UpdateMetadata => "update_metadata",
        }
    }
}

/// FUSE operations counted by name (the names `fuse/mod.rs` gives the dispatcher); anything
/// else is counted as `other`.
pub const FUSE_OPS: &[&str] = &[
    "lookup",
    "getattr",
    "setattr",
    "mkdir",
    "symlink",
    "readlink",
    "mknod",
    "unlink",
    "rmdir",
    "rename",
    "open",
    "read",
    "write",
    "flush",
    "release",
    "fsync",
    "opendir",
    "readdir",
    "readdirplus",
    "create",
    "other",
];
