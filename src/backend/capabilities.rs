//! What a store can do, declared by each backend so the layers above ask instead of
//! assuming S3 (issue 25). Wrappers report their inner backend's capabilities unchanged
//! unless they change what is possible.

use super::{MAX_PARTS, MAX_PART_SIZE, MIN_PART_SIZE};

/// Multipart uploads and the limits their parts must respect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultipartLimits {
    /// Smallest part other than the last.
    pub min_part: u64,
    /// Largest part.
    pub max_part: u64,
    /// Most parts in one upload.
    pub max_parts: u32,
}

impl MultipartLimits {
    /// The limits S3 and its compatibles (R2, B2, MinIO...) publish.
    pub const S3: MultipartLimits = MultipartLimits {
        min_part: MIN_PART_SIZE,
        max_part: MAX_PART_SIZE,
        max_parts: MAX_PARTS,
    };
}

/// The operations and guarantees of one store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Multipart uploads (create / upload part / complete / abort / list); `None`: objects
    /// are written by one `put`.
    pub multipart: Option<MultipartLimits>,
    /// `upload_part_copy`: a part filled from a range of an existing object, server-side.
    pub part_copy: bool,
    /// `copy`: a whole object copied server-side.
    pub server_side_copy: bool,
    /// `get_range` honours `if_match` (reads can pin one version by ETag).
    pub conditional_get: bool,
    /// `put_opts` with `create_only` fails when the key exists (If-None-Match: *).
    pub conditional_put: bool,
    /// An object's ETag changes exactly when its content does.
    pub stable_etags: bool,
    /// Largest object the store accepts; `None`: no limit byosfs needs to know.
    pub max_object_size: Option<u64>,
    /// Two entries of one folder may carry the same name (Google Drive).
    pub duplicate_names: bool,
    /// Stores an object's mtime, POSIX attributes and headers beside its content.
    pub user_metadata: bool,
}

impl Capabilities {
    /// S3 and its compatibles: everything the trait describes.
    pub const S3: Capabilities = Capabilities {
        multipart: Some(MultipartLimits::S3),
        part_copy: true,
        server_side_copy: true,
        conditional_get: true,
        conditional_put: true,
        stable_etags: true,
        // S3's published limit (5 TiB), below what 10,000 parts of 5 GiB could hold.
        max_object_size: Some(5 << 40),
        duplicate_names: false,
        user_metadata: true,
    };
}
