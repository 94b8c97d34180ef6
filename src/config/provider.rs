//! S3-compatible provider presets: what `provider = "r2"` etc. implies for endpoint, region
//! and addressing style. Every derived value can be overridden in the backend table.
//!
//! Sources for the endpoint formats (checked Nov 2026):
//! - aws: no endpoint (the SDK resolves it from the region); virtual-hosted addressing.
//! - r2: `https://<ACCOUNT_ID>.r2.cloudflarestorage.com`, region `auto`
//!   (developers.cloudflare.com/r2/api/s3/ and /r2/get-started/s3).
//! - b2: `https://s3.<region>.backblazeb2.com`, HTTPS only, both addressing styles accepted
//!   (backblaze.com/docs/cloud-storage-call-the-s3-compatible-api).
//! - spaces: `https://<region>.digitaloceanspaces.com`
//!   (docs.digitalocean.com/products/spaces/reference/aws-sdks/).
//! - wasabi: `https://s3.<region>.wasabisys.com`; Wasabi recommends path-style requests
//!   (docs.wasabi.com/docs/rest-api-introduction), so the preset uses them.
//! - minio: endpoint required, path style (MinIO's default deployment has no wildcard DNS).
//! - supabase: `https://<project_ref>.storage.supabase.co/storage/v1/s3`, path style, region
//!   = the project's region (supabase.com/docs/guides/storage/s3/authentication). Supabase
//!   documents both `<ref>.supabase.co` and the "direct storage hostname"
//!   `<ref>.storage.supabase.co`, and recommends the latter for large uploads, which is what a
//!   filesystem does; set `endpoint` to use the other.
//! - custom: endpoint required; path style by default because most self-hosted servers
//!   (Ceph RGW, Garage, SeaweedFS) are reached by IP or a single hostname.

use std::fmt;

use serde::Deserialize;

/// Which S3-compatible service a backend talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Amazon S3.
    Aws,
    /// Cloudflare R2.
    R2,
    /// Backblaze B2 (S3-compatible API).
    B2,
    /// DigitalOcean Spaces.
    Spaces,
    /// Wasabi.
    Wasabi,
    /// MinIO (self-hosted).
    Minio,
    /// Supabase Storage (S3 protocol).
    Supabase,
    /// Any other S3-compatible server.
    Custom,
}

impl Provider {
    /// Whether the service honours `If-None-Match: *` on PutObject and
    /// CompleteMultipartUpload (an exclusive create that two clients cannot both win).
    /// AWS S3 (since August 2024), Cloudflare R2 and MinIO document it; for the others
    /// nothing is documented, so byosfs does not rely on it (`conditional_writes = true`
    /// overrides).
    pub fn conditional_writes(self) -> bool {
        match self {
            Provider::Aws | Provider::R2 | Provider::Minio => true,
            Provider::B2 | Provider::Spaces | Provider::Wasabi | Provider::Supabase | Provider::Custom => false,
        }
    }

    /// Whether the service verifies `x-amz-checksum-crc32c` on PutObject and UploadPart.
    /// AWS (since the 2022 checksum launch), Cloudflare R2 and MinIO document it; the others
    /// get Content-MD5, which every S3-compatible service verifies.
    pub fn checksum_crc32c(self) -> bool {
        match self {
            Provider::Aws | Provider::R2 | Provider::Minio => true,
            Provider::B2 | Provider::Spaces | Provider::Wasabi | Provider::Supabase | Provider::Custom => false,
        }
    }

    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::R2 => "r2",
            Provider::B2 => "b2",
            Provider::Spaces => "spaces",
            Provider::Wasabi => "wasabi",
            Provider::Minio => "minio",
            Provider::Supabase => "supabase",
            Provider::Custom => "custom",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the user wrote, as far as presets care.
#[derive(Debug, Default, Clone)]
pub(crate) struct PresetInput<'a> {
    pub(crate) account_id: Option<&'a str>,
    pub(crate) project_ref: Option<&'a str>,
    pub(crate) region: Option<&'a str>,
    pub(crate) endpoint: Option<&'a str>,
    pub(crate) force_path_style: Option<bool>,
}

/// Endpoint, region and addressing after applying a preset and the overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) endpoint: Option<String>,
    pub(crate) region: String,
    pub(crate) force_path_style: bool,
}

/// A required field the preset could not do without: (field, why).
pub(crate) type Missing = (&'static str, String);

/// Region used by SigV4 when the server ignores it (MinIO's own default).
const NEUTRAL_REGION: &str = "us-east-1";

/// Apply `provider`'s preset to `input`. Explicit `endpoint`/`region`/`force_path_style`
/// always win over derived ones.
pub(crate) fn resolve(provider: Provider, input: &PresetInput<'_>) -> Result<Resolved, Vec<Missing>> {
    let mut missing = Vec::new();
    let need_region = |missing: &mut Vec<Missing>, example: &str| -> String {
        match input.region {
            Some(r) => r.to_owned(),
            None => {
                missing.push((
                    "region",
                    format!("provider \"{provider}\" needs a region, e.g. region = \"{example}\""),
                ));
                String::new()
            }
        }
    };
    let need_endpoint = |missing: &mut Vec<Missing>, example: &str| {
        if input.endpoint.is_none() {
            missing.push((
                "endpoint",
                format!("provider \"{provider}\" needs an endpoint, e.g. endpoint = \"{example}\""),
            ));
        }
    };
    let explicit_endpoint = input.endpoint.map(str::to_owned);
    // Derived endpoints only matter when no explicit one was given, so their inputs are
    // required only then.
    let (endpoint, region, path_style) = match provider {
        Provider::Aws => (explicit_endpoint, need_region(&mut missing, "eu-west-1"), false),
        Provider::R2 => {
            let endpoint = match (explicit_endpoint, input.account_id) {
                (Some(e), _) => Some(e),
                (None, Some(account)) => Some(format!("https://{account}.r2.cloudflarestorage.com")),
                (None, None) => {
                    missing.push((
                        "account_id",
                        "provider \"r2\" needs account_id (the 32-hex-digit Cloudflare account id) or an explicit endpoint"
                            .to_owned(),
                    ));
                    None
                }
            };
            (endpoint, input.region.unwrap_or("auto").to_owned(), false)
        }
        Provider::B2 | Provider::Spaces | Provider::Wasabi => {
            let example = match provider {
                Provider::B2 => "us-west-004",
                Provider::Spaces => "nyc3",
                _ => "eu-central-1",
            };
            let region = need_region(&mut missing, example);
            let endpoint = explicit_endpoint.or_else(|| {
                input.region.map(|r| match provider {
                    Provider::B2 => format!("https://s3.{r}.backblazeb2.com"),
                    Provider::Spaces => format!("https://{r}.digitaloceanspaces.com"),
                    _ => format!("https://s3.{r}.wasabisys.com"),
                })
            });
            (endpoint, region, provider == Provider::Wasabi)
        }
        Provider::Minio | Provider::Custom => {
            need_endpoint(&mut missing, "http://127.0.0.1:9000");
            (
                explicit_endpoint,
                input.region.unwrap_or(NEUTRAL_REGION).to_owned(),
                true,
            )
        }
        Provider::Supabase => {
            let region = need_region(&mut missing, "eu-central-1");
            let endpoint = match (explicit_endpoint, input.project_ref) {
                (Some(e), _) => Some(e),
                (None, Some(project)) => Some(format!("https://{project}.storage.supabase.co/storage/v1/s3")),
                (None, None) => {
                    missing.push((
                        "project_ref",
                        "provider \"supabase\" needs project_ref (the <ref> in https://<ref>.supabase.co) or an explicit endpoint"
                            .to_owned(),
                    ));
                    None
                }
            };
            (endpoint, region, true)
        }
    };
    if !missing.is_empty() {
        return Err(missing);
    }
    Ok(Resolved {
        endpoint,
        region,
        force_path_style: input.force_path_style.unwrap_or(path_style),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn input<'a>(region: Option<&'a str>, account: Option<&'a str>, project: Option<&'a str>) -> PresetInput<'a> {
        PresetInput {
            account_id: account,
            project_ref: project,
            region,
            ..PresetInput::default()
        }
    }

    #[test_case(Provider::Aws, input(Some("eu-west-1"), None, None), None, "eu-west-1", false)]
    #[test_case(
        Provider::R2,
        input(None, Some("abc123"), None),
        Some("https://abc123.r2.cloudflarestorage.com"),
        "auto",
        false
    )]
    #[test_case(
        Provider::B2,
        input(Some("us-west-004"), None, None),
        Some("https://s3.us-west-004.backblazeb2.com"),
        "us-west-004",
        false
    )]
    #[test_case(
        Provider::Spaces,
        input(Some("nyc3"), None, None),
        Some("https://nyc3.digitaloceanspaces.com"),
        "nyc3",
        false
    )]
    #[test_case(
        Provider::Wasabi,
        input(Some("eu-central-1"), None, None),
        Some("https://s3.eu-central-1.wasabisys.com"),
        "eu-central-1",
        true
    )]
    #[test_case(
        Provider::Supabase,
        input(Some("eu-central-1"), None, Some("xyzref")),
        Some("https://xyzref.storage.supabase.co/storage/v1/s3"),
        "eu-central-1",
        true
    )]
    fn presets(provider: Provider, input: PresetInput<'_>, endpoint: Option<&str>, region: &str, path_style: bool) {
        let resolved = resolve(provider, &input).unwrap();
        assert_eq!(resolved.endpoint.as_deref(), endpoint);
        assert_eq!(resolved.region, region);
        assert_eq!(resolved.force_path_style, path_style);
    }

    #[test]
    fn minio_and_custom_need_an_endpoint_and_use_path_style() {
        for provider in [Provider::Minio, Provider::Custom] {
            let missing = resolve(provider, &PresetInput::default()).unwrap_err();
            assert_eq!(missing.len(), 1);
            assert_eq!(missing[0].0, "endpoint");
            let resolved = resolve(
                provider,
                &PresetInput {
                    endpoint: Some("http://127.0.0.1:9000"),
                    ..PresetInput::default()
                },
            )
            .unwrap();
            assert_eq!(resolved.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
            assert_eq!(resolved.region, "us-east-1");
            assert!(resolved.force_path_style);
        }
    }

    #[test_case(Provider::Aws, &["region"])]
    #[test_case(Provider::R2, &["account_id"])]
    #[test_case(Provider::B2, &["region"])]
    #[test_case(Provider::Spaces, &["region"])]
    #[test_case(Provider::Wasabi, &["region"])]
    #[test_case(Provider::Supabase, &["region", "project_ref"])]
    fn missing_required_fields(provider: Provider, fields: &[&str]) {
        let missing = resolve(provider, &PresetInput::default()).unwrap_err();
        let names: Vec<_> = missing.iter().map(|(f, _)| *f).collect();
        assert_eq!(names, fields);
        assert!(missing.iter().all(|(_, why)| why.contains(provider.as_str())));
    }

    #[test]
    fn overrides_win() {
        let resolved = resolve(
            Provider::R2,
            &PresetInput {
                account_id: Some("abc"),
                region: Some("wnam"),
                endpoint: Some("https://abc.eu.r2.cloudflarestorage.com"),
                force_path_style: Some(true),
                ..PresetInput::default()
            },
        )
        .unwrap();
        assert_eq!(
            resolved.endpoint.as_deref(),
            Some("https://abc.eu.r2.cloudflarestorage.com")
        );
        assert_eq!(resolved.region, "wnam");
        assert!(resolved.force_path_style);
    }
}
