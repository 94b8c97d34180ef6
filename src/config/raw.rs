//! The config file as serde sees it: every table `deny_unknown_fields`, every optional key an
//! `Option` (defaults are applied in `validate`, where they are documented once), and values
//! that may be rejected later wrapped in `Spanned` so the error can name their line.
//!
//! Backends are one flat table with a `type` key rather than a serde-tagged enum: tagged enums
//! buffer their content, which loses `Spanned` positions and turns every typo into "data did
//! not match any variant". Keys that do not belong to the chosen type are refused in
//! `validate` with a message naming the type.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::credentials::{RawCredentials, RawSecrets};
use super::provider::Provider;
use super::units::{ByteSize, DurationValue};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// A directory of tenant files (see `tenant_files`); top-level, so before any table.
    pub(crate) tenants_dir: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub(crate) mount: RawMount,
    #[serde(default)]
    pub(crate) cache: RawCache,
    #[serde(default)]
    pub(crate) write: RawWrite,
    #[serde(default)]
    pub(crate) defaults: RawDefaults,
    #[serde(default)]
    pub(crate) metrics: RawMetrics,
    #[serde(default)]
    pub(crate) backends: BTreeMap<String, Spanned<RawBackend>>,
    #[serde(default)]
    pub(crate) tenants: Vec<Spanned<RawTenant>>,
}

/// `[mount]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMount {
    pub(crate) allow_other: Option<bool>,
    pub(crate) read_only: Option<bool>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) fs_name: Option<Spanned<String>>,
    pub(crate) attr_ttl: Option<DurationValue>,
    pub(crate) entry_ttl: Option<DurationValue>,
    pub(crate) threads: Option<Spanned<usize>>,
    pub(crate) max_requests: Option<Spanned<usize>>,
    pub(crate) tenant_share: Option<Spanned<u8>>,
    pub(crate) control_socket: Option<PathBuf>,
}

/// `[metrics]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub(crate) listen: Option<Spanned<String>>,
}

/// `[cache]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    pub(crate) memory: Option<Spanned<ByteSize>>,
    pub(crate) block_size: Option<Spanned<ByteSize>>,
    pub(crate) readahead_initial: Option<Spanned<ByteSize>>,
    pub(crate) readahead_max: Option<Spanned<ByteSize>>,
    pub(crate) max_streams: Option<Spanned<usize>>,
    pub(crate) metadata_ttl: Option<DurationValue>,
    pub(crate) negative_ttl: Option<DurationValue>,
    pub(crate) disk_dir: Option<PathBuf>,
    pub(crate) disk_size: Option<Spanned<ByteSize>>,
}

/// `[write]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWrite {
    pub(crate) part_size: Option<Spanned<ByteSize>>,
    pub(crate) memory: Option<Spanned<ByteSize>>,
    pub(crate) max_concurrent_parts: Option<Spanned<usize>>,
    pub(crate) staging_dir: Option<PathBuf>,
    pub(crate) staging_limit: Option<ByteSize>,
    pub(crate) max_rename_entries: Option<Spanned<usize>>,
}

/// `[defaults]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    pub(crate) backend: Option<Spanned<String>>,
}

/// `type = ...` of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BackendKind {
    S3,
    Local,
    Webdav,
    Azblob,
    Gcs,
    Gdrive,
}

/// `[backends.NAME]`; which keys are allowed depends on `type`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    #[serde(rename = "type")]
    pub(crate) kind: BackendKind,
    // s3
    pub(crate) provider: Option<Provider>,
    pub(crate) account_id: Option<Spanned<String>>,
    pub(crate) project_ref: Option<Spanned<String>>,
    pub(crate) region: Option<Spanned<String>>,
    pub(crate) endpoint: Option<Spanned<String>>,
    pub(crate) force_path_style: Option<bool>,
    pub(crate) bucket: Option<Spanned<String>>,
    pub(crate) prefix: Option<Spanned<String>>,
    pub(crate) credentials: Option<Spanned<RawCredentials>>,
    pub(crate) allow_inline_secrets: Option<bool>,
    pub(crate) request_timeout: Option<DurationValue>,
    pub(crate) connect_timeout: Option<DurationValue>,
    pub(crate) max_attempts: Option<Spanned<u32>>,
    pub(crate) payload_signing: Option<super::PayloadSigning>,
    pub(crate) conditional_writes: Option<bool>,
    pub(crate) checksum: Option<super::ChecksumSetting>,
    pub(crate) public_url_base: Option<Spanned<String>>,
    // local
    pub(crate) root: Option<Spanned<PathBuf>>,
    // webdav, azblob, gcs, gdrive (with endpoint, bucket and prefix above)
    pub(crate) username: Option<Spanned<String>>,
    pub(crate) account_name: Option<Spanned<String>>,
    pub(crate) container: Option<Spanned<String>>,
    pub(crate) secrets: Option<Spanned<RawSecrets>>,
    pub(crate) service_account_file: Option<Spanned<PathBuf>>,
    // gdrive
    pub(crate) root_folder: Option<Spanned<String>>,
}

impl RawBackend {
    /// Names of the WebDAV/Azure/GCS-only keys that are set (for "not valid for type"
    /// errors on the other types).
    pub(crate) fn dal_keys_set(&self) -> Vec<&'static str> {
        let flags = [
            ("username", self.username.is_some()),
            ("account_name", self.account_name.is_some()),
            ("container", self.container.is_some()),
            ("secrets", self.secrets.is_some()),
            ("service_account_file", self.service_account_file.is_some()),
            ("root_folder", self.root_folder.is_some()),
        ];
        flags
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| name)
            .collect()
    }

    /// Names of the S3-only keys that are set (for "not valid for type local" errors);
    /// `request_timeout` is shared with local backends and checked by the S3 path itself.
    pub(crate) fn s3_keys_set(&self) -> Vec<&'static str> {
        let flags = [
            ("provider", self.provider.is_some()),
            ("account_id", self.account_id.is_some()),
            ("project_ref", self.project_ref.is_some()),
            ("region", self.region.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("force_path_style", self.force_path_style.is_some()),
            ("bucket", self.bucket.is_some()),
            ("credentials", self.credentials.is_some()),
            ("allow_inline_secrets", self.allow_inline_secrets.is_some()),
            ("connect_timeout", self.connect_timeout.is_some()),
            ("max_attempts", self.max_attempts.is_some()),
            ("payload_signing", self.payload_signing.is_some()),
            ("conditional_writes", self.conditional_writes.is_some()),
            ("checksum", self.checksum.is_some()),
            ("public_url_base", self.public_url_base.is_some()),
        ];
        flags
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| name)
            .collect()
    }
}

/// One `[[tenants]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTenant {
    pub(crate) name: Spanned<String>,
    pub(crate) backend: Option<Spanned<String>>,
    pub(crate) prefix: Option<Spanned<String>>,
    pub(crate) read_only: Option<bool>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) mode: Option<Spanned<String>>,
    pub(crate) posix_metadata: Option<bool>,
    // issue 22: web serving and limits
    pub(crate) cache_control: Option<String>,
    pub(crate) content_types: Option<BTreeMap<String, String>>,
    pub(crate) cache_control_by_extension: Option<BTreeMap<String, String>>,
    pub(crate) public_url_base: Option<Spanned<String>>,
    pub(crate) max_file_size: Option<Spanned<ByteSize>>,
    pub(crate) quota: Option<Spanned<ByteSize>>,
    pub(crate) quota_recount: Option<DurationValue>,
    pub(crate) allowed_extensions: Option<Vec<String>>,
    pub(crate) denied_extensions: Option<Vec<String>>,
    pub(crate) write_back: Option<bool>,
}
