//! What an OpenDAL store can do, as byosfs's [`Capabilities`]: derived from the
//! [`opendal::Capability`] its service declares, narrowed to what [`super::DalBackend`]
//! actually implements on top of it.

use crate::backend::Capabilities;

use super::DalService;

/// The capabilities of `service`, whose OpenDAL operator declares `cap`.
pub(super) fn capabilities(service: DalService, cap: &opendal::Capability) -> Capabilities {
    Capabilities {
        // OpenDAL's multi-part writers (Azure blocks, GCS resumable uploads) hide their
        // parts behind a `Writer`: there is no part number to replace and no upload id to
        // resume or abort later, so they back `put_stream`, not the multipart methods.
        multipart: None,
        part_copy: false,
        server_side_copy: cap.copy,
        conditional_get: cap.read_with_if_match && service.stable_etags(),
        conditional_put: cap.write_with_if_not_exists,
        stable_etags: service.stable_etags(),
        max_object_size: match service {
            // Drive's published limit (5,120 GB); OpenDAL declares none.
            DalService::Gdrive => Some(5120 * 1000 * 1000 * 1000),
            _ => cap.write_total_max_size.and_then(|n| u64::try_from(n).ok()),
        },
        // Drive keys files by id; a folder may hold two files of one name.
        duplicate_names: service == DalService::Gdrive,
        // mtime, mode and owner are not stored yet (OpenDAL's user metadata could carry
        // them: a follow-up), so reads fall back to Last-Modified and the tenant's mode.
        user_metadata: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_and_conditions_follow_the_service() {
        let cap = opendal::Capability {
            copy: true,
            read_with_if_match: true,
            write_with_if_not_exists: true,
            ..Default::default()
        };
        let az = capabilities(DalService::Azblob, &cap);
        assert!(az.server_side_copy && az.conditional_get && az.conditional_put && az.stable_etags);
        assert_eq!(az.multipart, None);
        // A WebDAV server's ETag is whatever it makes of size and mtime: not a version pin.
        let dav = capabilities(DalService::Webdav, &cap);
        assert!(!dav.conditional_get && !dav.stable_etags);
        // Drive: names repeat, no ETags to pin a read, no create-only write.
        let drive = capabilities(DalService::Gdrive, &cap);
        assert!(drive.duplicate_names && !drive.conditional_get && !drive.stable_etags);
        assert!(!az.duplicate_names);
        let bare = capabilities(DalService::Gcs, &opendal::Capability::default());
        assert!(!bare.server_side_copy && !bare.conditional_put);
    }
}
