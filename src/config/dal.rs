//! Validation of `type = "webdav" | "azblob" | "gcs" | "gdrive"` backends.
//!
//! Keys: `endpoint` (WebDAV: required; Azure, GCS: an override, for emulators), `container`
//! (Azure) or `bucket` (GCS), `username` (WebDAV) or `account_name` (Azure), `prefix`, and
//! `secrets = { env = { NAME = "VAR" } }` or `{ file = "path" }` (a private `key = value`
//! file, checked as S3 secrets files are). GCS takes `service_account_file`, a private JSON
//! key file, or no key at all when `endpoint` names an emulator. Drive takes `root_folder`
//! (a folder path, default My Drive's root) and the secrets `client_id`, `client_secret`,
//! `refresh_token`; its `endpoint` replaces Google's API and OAuth hosts (tests, proxies).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::checks::{check_endpoint, has_control};
use super::credentials::{read_private_file, resolve_secrets};
use super::raw::{BackendKind, RawBackend};
use super::validate::Validator;
use super::{DalBackendConfig, DalKind};
use crate::secret::Secret;

/// A service-account key is a few KiB of JSON.
const MAX_KEY_FILE: u64 = 256 * 1024;

impl Validator {
    /// Validate a WebDAV, Azure or GCS backend (`kind` is one of those).
    pub(super) fn dal(
        &mut self,
        name: &str,
        raw: &RawBackend,
        span: Range<usize>,
        prefix: String,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> DalBackendConfig {
        let field = |key: &str| format!("backends.{name}.{key}");
        let kind = match raw.kind {
            BackendKind::Azblob => DalKind::Azblob,
            BackendKind::Gcs => DalKind::Gcs,
            BackendKind::Gdrive => DalKind::Gdrive,
            _ => DalKind::Webdav,
        };
        let type_name = kind.name();
        // Keys of other types, and of this family that this type does not take.
        let mut foreign: Vec<&str> = raw
            .s3_keys_set()
            .into_iter()
            .filter(|k| !matches!(*k, "endpoint" | "bucket"))
            .collect();
        let own: &[&str] = match kind {
            DalKind::Webdav => &["endpoint", "username", "secrets"],
            DalKind::Azblob => &["endpoint", "account_name", "container", "secrets"],
            DalKind::Gcs => &["endpoint", "bucket", "service_account_file"],
            DalKind::Gdrive => &["endpoint", "root_folder", "secrets"],
        };
        foreign.extend(raw.dal_keys_set().into_iter().filter(|k| !own.contains(k)));
        if raw.bucket.is_some() && !own.contains(&"bucket") {
            foreign.push("bucket");
        }
        if raw.root.is_some() {
            foreign.push("root");
        }
        for key in foreign {
            let msg = format!(
                "not valid for type = \"{type_name}\" (valid keys: type, prefix, {})",
                own.join(", ")
            );
            self.push(Some(span.clone()), field(key), msg);
        }
        let endpoint = raw.endpoint.as_ref().and_then(|e| match check_endpoint(e.get_ref()) {
            Ok(e) => Some(e),
            Err(msg) => {
                self.push(Some(e.span()), field("endpoint"), msg);
                None
            }
        });
        if kind == DalKind::Webdav && raw.endpoint.is_none() {
            let msg = "missing; a webdav backend needs endpoint = \"https://host/remote.php/dav/files/USER/\"";
            self.push(Some(span.clone()), field("endpoint"), msg);
        }
        let container = match kind {
            DalKind::Webdav => String::new(),
            DalKind::Gdrive => self.root_folder(raw, &field),
            DalKind::Azblob => self.required_name(&raw.container, "container", &field, &span, type_name),
            DalKind::Gcs => self.required_name(&raw.bucket, "bucket", &field, &span, type_name),
        };
        let account = match kind {
            DalKind::Webdav => raw.username.as_ref().map(|u| u.get_ref().clone()),
            DalKind::Azblob => Some(self.required_name(&raw.account_name, "account_name", &field, &span, type_name)),
            DalKind::Gcs | DalKind::Gdrive => None,
        };
        let secrets = self.dal_secrets(kind, raw, &field, &span, endpoint.is_some(), base, env);
        DalBackendConfig {
            kind,
            endpoint,
            container,
            account,
            prefix,
            secrets,
        }
    }

    /// Drive's root folder: a folder path below My Drive, "" for its root.
    fn root_folder(&mut self, raw: &RawBackend, field: &dyn Fn(&str) -> String) -> String {
        let Some(v) = &raw.root_folder else {
            return String::new();
        };
        let path = v.get_ref().trim_matches('/');
        if has_control(path)
            || path.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") && !path.is_empty()
        {
            let msg = "must be a folder path like \"byosfs/media\" (no empty, . or .. segments)";
            self.push(Some(v.span()), field("root_folder"), msg);
            return String::new();
        }
        path.to_owned()
    }

    /// A required, non-empty, single-segment name (container, bucket, account).
    fn required_name(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        field: &dyn Fn(&str) -> String,
        span: &Range<usize>,
        type_name: &str,
    ) -> String {
        match value {
            Some(v) if v.get_ref().is_empty() || v.get_ref().contains('/') || has_control(v.get_ref()) => {
                let msg = "must be non-empty, without '/'; put key prefixes in `prefix`";
                self.push(Some(v.span()), field(key), msg);
                String::new()
            }
            Some(v) => v.get_ref().clone(),
            None => {
                let msg = format!("missing; a {type_name} backend needs {key} = \"<name>\"");
                self.push(Some(span.clone()), field(key), msg);
                String::new()
            }
        }
    }

    /// The secrets of a backend, read now; which names are allowed and needed depends on
    /// the type.
    #[allow(clippy::too_many_arguments)]
    fn dal_secrets(
        &mut self,
        kind: DalKind,
        raw: &RawBackend,
        field: &dyn Fn(&str) -> String,
        span: &Range<usize>,
        has_endpoint: bool,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> BTreeMap<String, Secret> {
        let allowed: &[&str] = match kind {
            DalKind::Webdav => &["password", "token"],
            DalKind::Azblob => &["account_key", "sas_token"],
            DalKind::Gcs => &[],
            DalKind::Gdrive => &["client_id", "client_secret", "refresh_token"],
        };
        let mut out = BTreeMap::new();
        if let Some(s) = &raw.secrets {
            match resolve_secrets(s.get_ref(), base, allowed, env) {
                Ok(v) => out = v,
                Err(msg) => self.push(Some(s.span()), field("secrets"), msg),
            }
        }
        match kind {
            DalKind::Webdav => {
                if out.contains_key("password") && raw.username.is_none() {
                    let msg = "a password needs a username (or use a bearer `token`)";
                    self.push(Some(span.clone()), field("username"), msg);
                }
            }
            DalKind::Azblob => {
                let n = usize::from(out.contains_key("account_key")) + usize::from(out.contains_key("sas_token"));
                if n != 1 && raw.secrets.as_ref().is_none_or(|s| resolve_ok(s, base, allowed, env)) {
                    let msg = "an azblob backend needs exactly one of the secrets account_key or sas_token: \
                               secrets = { env = { account_key = \"VAR\" } } or { file = \"path\" }";
                    self.push(Some(span.clone()), field("secrets"), msg);
                }
            }
            DalKind::Gdrive => {
                let missing: Vec<&str> = allowed.iter().copied().filter(|k| !out.contains_key(*k)).collect();
                if !missing.is_empty() && raw.secrets.as_ref().is_none_or(|s| resolve_ok(s, base, allowed, env)) {
                    let msg = format!(
                        "a gdrive backend needs the secrets client_id, client_secret and refresh_token \
                         (missing: {}): secrets = {{ env = {{ refresh_token = \"VAR\", ... }} }} or {{ file = \"path\" }}",
                        missing.join(", ")
                    );
                    self.push(Some(span.clone()), field("secrets"), msg);
                }
            }
            DalKind::Gcs => match &raw.service_account_file {
                Some(path) => match read_private_file(&base.join(path.get_ref()), MAX_KEY_FILE) {
                    Ok(json) => {
                        out.insert("service_account_json".to_owned(), Secret::new(json));
                    }
                    Err(msg) => self.push(Some(path.span()), field("service_account_file"), msg),
                },
                None if !has_endpoint => {
                    let msg = "missing; a gcs backend needs service_account_file = \"path/key.json\" \
                               (or an endpoint of an emulator, which takes no key)";
                    self.push(Some(span.clone()), field("service_account_file"), msg);
                }
                None => {}
            },
        }
        out
    }
}

/// Whether `secrets` resolves (its own error is reported already otherwise).
fn resolve_ok(
    s: &Spanned<super::credentials::RawSecrets>,
    base: &Path,
    allowed: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
) -> bool {
    resolve_secrets(s.get_ref(), base, allowed, env).is_ok()
}
