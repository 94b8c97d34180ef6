//! Tenant entries → [`TenantConfig`]s: the `[[tenants]]` of the config file and the files of
//! `tenants_dir`, checked one by one and against each other (unique names, disjoint storage
//! places) in O(n log n), so a config of 100,000 tenants validates in a fraction of a second.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::checks::{
    check_tenant_name, check_url_base, field_at, normalize_path, normalize_prefix, parse_mode, LineIndex,
};
use super::overlap::PlaceIndex;
use super::raw::RawTenant;
use super::tenant_files;
use super::validate::{Source, Validator};
use super::{BackendConfig, MountConfig, TenantConfig};

/// One tenant entry to validate, from the config file or from a tenant file.
pub(super) struct TenantInput {
    pub(super) raw: RawTenant,
    /// The whole entry (a tenant file: its start).
    pub(super) span: Range<usize>,
    /// Index in [`Validator::sources`].
    pub(super) source: usize,
    /// Field path of the entry: `tenants[3]` in the config file, `""` in a tenant file (the
    /// file name already says which tenant).
    pub(super) field: String,
}

impl TenantInput {
    fn field(&self, key: &str) -> String {
        if self.field.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.field)
        }
    }
}

impl Validator {
    /// Read `tenants_dir` (relative to the config file) and append one input per tenant file;
    /// a file that is not a valid tenant entry is an issue in that file. Returns the resolved
    /// directory.
    pub(super) fn tenants_dir(
        &mut self,
        dir: Spanned<PathBuf>,
        base: &Path,
        inputs: &mut Vec<TenantInput>,
    ) -> Option<PathBuf> {
        let path = normalize_path(&base.join(dir.get_ref()));
        let files = match tenant_files::read_dir(&path) {
            Ok(files) => files,
            Err(msg) => {
                self.push(Some(dir.span()), "tenants_dir", msg);
                return Some(path);
            }
        };
        inputs.reserve(files.len());
        for file in files {
            let source = self.sources.len();
            let text = file.text.as_deref().unwrap_or_default();
            self.sources.push(Source {
                file: file.path.clone(),
                lines: LineIndex::new(text),
            });
            let parsed = match &file.text {
                Ok(text) => toml::from_str::<RawTenant>(text).map_err(|e| {
                    let span = e.span();
                    let field = span.as_ref().map(|s| field_at(text, s.start)).unwrap_or_default();
                    (span, field, e.message().trim_end().to_owned())
                }),
                Err(msg) => Err((None, String::new(), msg.clone())),
            };
            match parsed {
                Ok(raw) => inputs.push(TenantInput {
                    raw,
                    span: 0..0,
                    source,
                    field: String::new(),
                }),
                Err((span, field, msg)) => self.push_in(source, span, field, msg),
            }
        }
        Some(path)
    }

    /// Validate every tenant entry: name, backend, prefix, mode, then uniqueness of names and
    /// disjoint storage places, in input order (the later of two colliding tenants is refused).
    pub(super) fn tenants(
        &mut self,
        inputs: Vec<TenantInput>,
        backends: &BTreeMap<String, BackendConfig>,
        default_backend: Option<&str>,
        mount: &MountConfig,
        locations: &BTreeMap<String, String>,
    ) -> Vec<TenantConfig> {
        let mut tenants = Vec::with_capacity(inputs.len());
        // Name → (source, line) of its first definition.
        let mut seen: HashMap<String, (usize, usize)> = HashMap::with_capacity(inputs.len());
        // Storage places of the tenants accepted so far → (index in `tenants`, source, line).
        let mut placed: PlaceIndex<(usize, usize, usize)> = PlaceIndex::default();
        for input in inputs {
            let t = &input.raw;
            let (t_span, source) = (input.span.clone(), input.source);
            let f = |key: &str| input.field(key);
            let issues_before = self.issues.len();
            let name = t.name.get_ref().clone();
            if let Err(msg) = check_tenant_name(&name) {
                self.push_in(source, Some(t.name.span()), f("name"), msg);
            } else if let Some(&first) = seen.get(&name) {
                let msg = format!(
                    "duplicate tenant name {name:?} (first defined at {})",
                    self.place(source, first)
                );
                self.push_in(source, Some(t.name.span()), f("name"), msg);
            } else {
                seen.insert(name.clone(), (source, self.line(source, t.name.span().start)));
            }
            let (backend, on_default) = match (&t.backend, default_backend) {
                (Some(b), _) if backends.contains_key(b.get_ref()) => {
                    (b.get_ref().clone(), Some(b.get_ref().as_str()) == default_backend)
                }
                (Some(b), _) => {
                    if !self.backend_defined_but_invalid(b) {
                        let msg = format!("unknown backend {:?} ({})", b.get_ref(), self.defined(backends));
                        self.push_in(source, Some(b.span()), f("backend"), msg);
                    }
                    (String::new(), false)
                }
                (None, Some(d)) => (d.to_owned(), true),
                (None, None) => {
                    let msg = format!(
                        "no backend given and no [defaults] backend; set backend = \"NAME\" here or in [defaults] ({})",
                        self.defined(backends)
                    );
                    self.push_in(source, Some(t_span.clone()), f("backend"), msg);
                    (String::new(), false)
                }
            };
            // A tenant on the shared default backend gets its own folder; one that names a
            // dedicated backend gets the whole bucket unless it says otherwise.
            let own = match &t.prefix {
                Some(p) => normalize_prefix(p.get_ref()).unwrap_or_else(|msg| {
                    self.push_in(source, Some(p.span()), f("prefix"), msg);
                    String::new()
                }),
                None if on_default && check_tenant_name(&name).is_ok() => format!("{name}/"),
                None => String::new(),
            };
            let backend_prefix = backends.get(&backend).map_or("", BackendConfig::prefix);
            let prefix = format!("{backend_prefix}{own}");
            let mode = t.mode.as_ref().map(|m| {
                parse_mode(m.get_ref()).unwrap_or_else(|msg| {
                    self.push_in(source, Some(m.span()), f("mode"), msg);
                    0
                })
            });
            if let Some(u) = &t.public_url_base {
                if let Err(msg) = check_url_base(u.get_ref()) {
                    self.push_in(source, Some(u.span()), f("public_url_base"), msg);
                }
            }
            if self.issues.len() != issues_before {
                continue;
            }
            if let Some(location) = locations.get(&backend) {
                let line = self.line(source, t_span.start);
                if let Err((j, other_source, other_line)) =
                    placed.insert(format!("{location}{prefix}"), (tenants.len(), source, line))
                {
                    let other = &tenants_name(&tenants, j);
                    let msg = format!(
                        "prefix {prefix:?} on backend {backend:?} overlaps tenant {other:?} ({}): \
                         tenants on the same storage need disjoint prefixes such as \"{name}/\"",
                        self.place(source, (other_source, other_line))
                    );
                    let at = t.prefix.as_ref().map_or(t_span.clone(), Spanned::span);
                    self.push_in(source, Some(at), f("prefix"), msg);
                    continue;
                }
            }
            tenants.push(TenantConfig {
                name,
                backend,
                prefix,
                read_only: t.read_only.unwrap_or(false),
                uid: t.uid.or(mount.uid),
                gid: t.gid.or(mount.gid),
                mode,
                posix_metadata: t.posix_metadata.unwrap_or(true),
                web: web_of(t),
                write_back: t.write_back.unwrap_or(false),
            });
        }
        tenants
    }
}

fn tenants_name(tenants: &[TenantConfig], index: usize) -> String {
    tenants.get(index).map(|t| t.name.clone()).unwrap_or_default()
}

/// Lower-case extensions without a leading dot (`".MP4"` and `"mp4"` are the same rule).
fn extensions(v: &[String]) -> Vec<String> {
    v.iter()
        .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
        .collect()
}

/// The URL base with exactly one trailing `/`.
fn url_base(s: &str) -> String {
    format!("{}/", s.trim_end_matches('/'))
}

/// The web settings of `t` (see [`super::TenantWeb`]; defaults documented there).
fn web_of(t: &super::raw::RawTenant) -> super::TenantWeb {
    let lower = |m: &Option<std::collections::BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| (k.trim_start_matches('.').to_ascii_lowercase(), v.clone()))
            .collect()
    };
    super::TenantWeb {
        cache_control: t.cache_control.clone(),
        content_types: lower(&t.content_types),
        cache_control_by_extension: lower(&t.cache_control_by_extension),
        public_url_base: t.public_url_base.as_ref().map(|u| url_base(u.get_ref())),
        max_file_size: t.max_file_size.as_ref().map(|s| s.get_ref().0),
        quota: t.quota.as_ref().map(|s| s.get_ref().0),
        quota_recount: t
            .quota_recount
            .as_ref()
            .map_or(std::time::Duration::from_secs(3600), |d| d.0),
        allowed_extensions: t.allowed_extensions.as_deref().map(extensions),
        denied_extensions: t.denied_extensions.as_deref().map(extensions).unwrap_or_default(),
    }
}
