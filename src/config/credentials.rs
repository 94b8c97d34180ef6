//! S3 credentials: how the config file names them and how they are resolved at load time.
//!
//! Forms accepted for `credentials` in a `[backends.NAME]` table:
//! - `"default"`: the AWS default chain (environment, profile files, SSO, IMDS, ...),
//!   resolved and refreshed by the SDK. Also the default when the key is absent, but only
//!   for `provider = "aws"` without an endpoint: a backend pointing anywhere else must name
//!   its credentials, so this machine's AWS identity never reaches a third party by default
//!   (`config::validate`).
//! - `{ env = { access_key_id = "VAR", secret_access_key = "VAR", session_token = "VAR" } }`:
//!   read from environment variables now; a missing variable is an error naming it.
//! - `{ file = "path" }`: a small `key = value` secrets file (relative to the config file's
//!   directory). Like ssh with private keys, a file that group or others can access is
//!   refused, because a secret that leaked through permissions is already compromised; so
//!   is a file owned by another user or reached through a symlink.
//! - `{ access_key_id = "...", secret_access_key = "..." }`: inline, refused unless the backend
//!   also sets `allow_inline_secrets = true` (then a warning is logged): config files get
//!   committed, copied and pasted into bug reports.
//!
//! Secret values live only in [`Secret`], never in error messages.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use crate::secret::Secret;

/// Resolved credentials for one S3 backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Fixed keys (from the environment, a secrets file or, if allowed, inline).
    Static {
        /// Access key id. Not a secret by itself, but only shown in `Debug` as given.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: Secret,
        /// Session token for temporary credentials (also a secret).
        session_token: Option<Secret>,
    },
    /// Let the AWS SDK find credentials (env, profile, SSO, instance metadata...).
    DefaultChain,
}

/// Names of environment variables holding the keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvNames {
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    session_token: Option<String>,
}

/// `credentials` as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawCredentials {
    DefaultChain,
    Env(EnvNames),
    File(PathBuf),
    Inline {
        access_key_id: String,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    },
}

/// A string deserialized straight into a [`Secret`], so raw config structs never hold a
/// secret in a plain `String`.
#[derive(Debug)]
struct SecretString(Secret);

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|s| SecretString(Secret::new(s)))
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsTable {
    env: Option<EnvNames>,
    file: Option<PathBuf>,
    access_key_id: Option<String>,
    secret_access_key: Option<SecretString>,
    session_token: Option<SecretString>,
}

const FORMS: &str = "\"default\", { env = { access_key_id = \"VAR\", secret_access_key = \"VAR\" } }, \
                     { file = \"path\" } or inline keys with allow_inline_secrets = true";

impl<'de> Deserialize<'de> for RawCredentials {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CredVisitor;
        impl<'de> Visitor<'de> for CredVisitor {
            type Value = RawCredentials;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "one of {FORMS}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawCredentials, E> {
                match v {
                    "default" => Ok(RawCredentials::DefaultChain),
                    // Never echo the string: it might be a key pasted in the wrong place.
                    _ => Err(E::custom(format!(
                        "the only string form is \"default\"; use one of {FORMS}"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawCredentials, A::Error> {
                let table = CredentialsTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                table.into_raw().map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_any(CredVisitor)
    }
}

impl CredentialsTable {
    fn into_raw(self) -> Result<RawCredentials, String> {
        let inline = self.access_key_id.is_some() || self.secret_access_key.is_some() || self.session_token.is_some();
        let forms = usize::from(self.env.is_some()) + usize::from(self.file.is_some()) + usize::from(inline);
        if forms != 1 {
            return Err(format!(
                "use exactly one of `env`, `file` or inline keys (forms: {FORMS})"
            ));
        }
        if let Some(env) = self.env {
            return Ok(RawCredentials::Env(env));
        }
        if let Some(file) = self.file {
            return Ok(RawCredentials::File(file));
        }
        match (self.access_key_id, self.secret_access_key) {
            (Some(access_key_id), Some(secret)) => Ok(RawCredentials::Inline {
                access_key_id,
                secret_access_key: secret.0,
                session_token: self.session_token.map(|s| s.0),
            }),
            _ => Err("inline credentials need both access_key_id and secret_access_key".to_owned()),
        }
    }
}

/// Resolve credentials now: read environment variables and secrets files. `base` is the
/// config file's directory; `env` looks up a variable (injectable for tests). Errors name
/// variables and files, never values.
pub(crate) fn resolve(
    raw: &RawCredentials,
    base: &Path,
    allow_inline: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, String> {
    match raw {
        RawCredentials::DefaultChain => Ok(Credentials::DefaultChain),
        RawCredentials::Env(names) => {
            let get = |var: &str| {
                env(var)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("environment variable {var} is not set (or empty)"))
            };
            Ok(Credentials::Static {
                access_key_id: get(&names.access_key_id)?,
                secret_access_key: Secret::new(get(&names.secret_access_key)?),
                session_token: names.session_token.as_deref().map(get).transpose()?.map(Secret::new),
            })
        }
        RawCredentials::File(path) => read_secrets_file(&base.join(path)),
        RawCredentials::Inline {
            access_key_id,
            secret_access_key,
            session_token,
        } => {
            if !allow_inline {
                return Err(
                    "inline secrets are refused; move them to { env = ... } or { file = ... }, \
                            or set allow_inline_secrets = true in this backend table"
                        .to_owned(),
                );
            }
            Ok(Credentials::Static {
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.clone(),
                session_token: session_token.clone(),
            })
        }
    }
}

/// Read a secrets file: `key = value` lines (value optionally quoted), `#`/`;` comments,
/// `[section]` lines ignored. Keys: `access_key_id`, `secret_access_key`, `session_token`,
/// each also with the `aws_` prefix used by `~/.aws/credentials`.
pub(crate) fn read_secrets_file(path: &Path) -> Result<Credentials, String> {
    let shown = path.display();
    let values = read_key_values(
        path,
        &["access_key_id", "secret_access_key", "session_token"],
        Some("aws_"),
    )?;
    let mut values = values;
    let (key_id, secret, token) = (
        values.remove("access_key_id"),
        values.remove("secret_access_key"),
        values.remove("session_token"),
    );
    match (key_id, secret) {
        (Some(access_key_id), Some(secret)) => Ok(Credentials::Static {
            access_key_id: access_key_id.expose().to_owned(),
            secret_access_key: secret,
            session_token: token,
        }),
        _ => Err(format!(
            "secrets file {shown} must set access_key_id and secret_access_key"
        )),
    }
}

/// Read a private file (see [`read_private_file`]) of `key = value` lines: `#`/`;` comments
/// and `[section]` lines ignored, values optionally quoted, each key one of `allowed` (after
/// removing `alias_prefix`, such as the `aws_` of `~/.aws/credentials`) and set once.
pub(crate) fn read_key_values(
    path: &Path,
    allowed: &[&str],
    alias_prefix: Option<&str>,
) -> Result<std::collections::BTreeMap<String, Secret>, String> {
    let shown = path.display();
    let text = read_private_file(path, MAX_SECRETS_FILE)?;
    let mut values = std::collections::BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') || line.starts_with('[') {
            continue;
        }
        let lineno = index + 1;
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("{shown}:{lineno}: expected `key = value`"));
        };
        let key = key.trim();
        let value = unquote(value.trim()).to_owned();
        let name = alias_prefix.and_then(|p| key.strip_prefix(p)).unwrap_or(key);
        if !allowed.contains(&name) {
            // The key name is safe to show; the value is not.
            return Err(format!(
                "{shown}:{lineno}: unknown key `{name}` (valid: {})",
                allowed.join(", ")
            ));
        }
        if values.insert(name.to_owned(), Secret::new(value)).is_some() {
            return Err(format!("{shown}:{lineno}: `{key}` is set twice"));
        }
    }
    Ok(values)
}

/// The text of a file that holds secrets, read only if it is safe to trust: a regular file
/// of the user running byosfs, not reached through a symlink, that group and others cannot
/// access (as ssh demands of private keys), at most `max` bytes.
pub(crate) fn read_private_file(path: &Path, max: u64) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

    let shown = path.display();
    // Not through a symlink (whoever can change the link chooses the keys and where they
    // go) and never blocking on a FIFO; the checks below are on the file actually read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                format!("secrets file {shown} is a symbolic link; refusing to follow it: name the file itself")
            }
            _ => format!("cannot read secrets file {shown}: {e}"),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read secrets file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("secrets file {shown} is not a regular file"));
    }
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(format!(
            "secrets file {shown} is owned by uid {}, not by the user running byosfs (uid {uid}); \
             refusing to use it: `chown` it to that user",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "secrets file {shown} is accessible by group/others (mode {mode:04o}); \
             refusing to use it: run `chmod 600 {shown}`"
        ));
    }
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read secrets file {shown}: {e}"))?;
    if text.len() as u64 > max {
        return Err(format!("secrets file {shown} is larger than {max} bytes"));
    }
    Ok(text)
}

/// A secrets file holds three short lines; anything this large is not one.
const MAX_SECRETS_FILE: u64 = 64 * 1024;

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(quote).and_then(|v| v.strip_suffix(quote)) {
            return inner;
        }
    }
    value
}

/// `secrets` of a WebDAV, Azure or GCS backend as written: secret name → environment
/// variable, or a private `key = value` file. The names a type accepts are checked when
/// resolved, so one form serves every type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecrets {
    env: Option<std::collections::BTreeMap<String, String>>,
    file: Option<PathBuf>,
}

/// Resolve `raw` now into secret name → value, every name one of `allowed`. Errors name
/// variables, files and keys, never values.
pub(crate) fn resolve_secrets(
    raw: &RawSecrets,
    base: &Path,
    allowed: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<std::collections::BTreeMap<String, Secret>, String> {
    match (&raw.env, &raw.file) {
        (Some(names), None) => {
            let mut out = std::collections::BTreeMap::new();
            for (name, var) in names {
                if !allowed.contains(&name.as_str()) {
                    return Err(format!("unknown secret `{name}` (valid: {})", allowed.join(", ")));
                }
                let value = env(var)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("environment variable {var} is not set (or empty)"))?;
                out.insert(name.clone(), Secret::new(value));
            }
            Ok(out)
        }
        (None, Some(file)) => read_key_values(&base.join(file), allowed, None),
        _ => Err("use exactly one of { env = { NAME = \"VAR\" } } or { file = \"path\" }".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[derive(Debug, serde::Deserialize)]
    struct Probe {
        credentials: RawCredentials,
    }

    fn parse(text: &str) -> Result<RawCredentials, String> {
        toml::from_str::<Probe>(text)
            .map(|p| p.credentials)
            .map_err(|e| e.message().to_owned())
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn forms_parse() {
        assert_eq!(parse("credentials = \"default\""), Ok(RawCredentials::DefaultChain));
        assert_eq!(
            parse("credentials = { file = \"s.ini\" }"),
            Ok(RawCredentials::File(PathBuf::from("s.ini")))
        );
        let env = parse("credentials = { env = { access_key_id = \"A\", secret_access_key = \"B\" } }").unwrap();
        assert!(matches!(env, RawCredentials::Env(ref n) if n.access_key_id == "A" && n.secret_access_key == "B"));
    }

    #[test]
    fn bad_forms_are_explained_without_echoing_values() {
        let err = parse("credentials = \"AKIAXXXXSECRETISH\"").unwrap_err();
        assert!(err.contains("\"default\"") && !err.contains("SECRETISH"), "{err}");
        let err = parse("credentials = { file = \"a\", env = { access_key_id = \"A\", secret_access_key = \"B\" } }")
            .unwrap_err();
        assert!(err.contains("exactly one"), "{err}");
        let err = parse("credentials = { secret_access_key = \"hunter2\" }").unwrap_err();
        assert!(err.contains("both") && !err.contains("hunter2"), "{err}");
        let err = parse("credentials = { envv = 1 }").unwrap_err();
        assert!(err.contains("unknown field `envv`"), "{err}");
    }

    #[test]
    fn env_resolution_names_the_missing_variable_only() {
        let raw =
            parse("credentials = { env = { access_key_id = \"MY_ID\", secret_access_key = \"MY_SECRET\" } }").unwrap();
        let err = resolve(&raw, Path::new("."), false, &no_env).unwrap_err();
        assert!(err.contains("MY_ID"), "{err}");
        let only_id = |v: &str| (v == "MY_ID").then(|| "AKIA1".to_owned());
        let err = resolve(&raw, Path::new("."), false, &only_id).unwrap_err();
        assert!(err.contains("MY_SECRET") && !err.contains("AKIA1"), "{err}");
        let both = |v: &str| Some(format!("value-of-{v}"));
        let creds = resolve(&raw, Path::new("."), false, &both).unwrap();
        let Credentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } = &creds
        else {
            panic!("expected static credentials, got {creds:?}");
        };
        assert_eq!(access_key_id, "value-of-MY_ID");
        assert_eq!(secret_access_key.expose(), "value-of-MY_SECRET");
        assert!(session_token.is_none());
        assert!(!format!("{creds:?}").contains("value-of-MY_SECRET"));
    }

    #[test]
    fn inline_needs_opt_in() {
        let raw = parse("credentials = { access_key_id = \"AK\", secret_access_key = \"hunter2\" }").unwrap();
        let err = resolve(&raw, Path::new("."), false, &no_env).unwrap_err();
        assert!(
            err.contains("allow_inline_secrets") && !err.contains("hunter2"),
            "{err}"
        );
        let creds = resolve(&raw, Path::new("."), true, &no_env).unwrap();
        assert!(
            matches!(creds, Credentials::Static { ref secret_access_key, .. } if secret_access_key.expose() == "hunter2")
        );
        assert!(!format!("{raw:?} {creds:?}").contains("hunter2"));
    }

    fn secrets_file(dir: &Path, mode: u32, body: &str) -> PathBuf {
        let path = dir.join("secrets.ini");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(body.as_bytes()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn secrets_file_permissions_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let body = "access_key_id = AK\nsecret_access_key = \"hunter2\"\n";
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let path = secrets_file(dir.path(), mode, body);
            let err = read_secrets_file(&path).unwrap_err();
            assert!(
                err.contains("chmod 600") && err.contains(&format!("{mode:04o}")),
                "{err}"
            );
            assert!(!err.contains("hunter2"));
        }
        for mode in [0o600, 0o400] {
            let path = secrets_file(dir.path(), mode, body);
            let creds = read_secrets_file(&path).unwrap();
            assert!(
                matches!(creds, Credentials::Static { ref access_key_id, ref secret_access_key, session_token: None }
                    if access_key_id == "AK" && secret_access_key.expose() == "hunter2")
            );
        }
    }

    #[test]
    fn secrets_file_must_be_the_users_own_file_not_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = secrets_file(dir.path(), 0o600, "access_key_id = AK\nsecret_access_key = hunter2\n");
        let link = dir.path().join("link.ini");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = read_secrets_file(&link).unwrap_err();
        assert!(err.contains("symbolic link") && !err.contains("hunter2"), "{err}");
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&real, Some(65534), None).unwrap();
            let err = read_secrets_file(&real).unwrap_err();
            assert!(err.contains("owned by uid 65534"), "{err}");
        }
    }

    #[test]
    fn secrets_file_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = secrets_file(
            dir.path(),
            0o600,
            "# comment\n[default]\naws_access_key_id=AK\naws_secret_access_key='s3cr3t'\n; x\naws_session_token = tok\n",
        );
        let creds = read_secrets_file(&path).unwrap();
        assert!(matches!(creds, Credentials::Static { ref session_token, .. }
            if session_token.as_ref().map(Secret::expose) == Some("tok")));

        let path = secrets_file(dir.path(), 0o600, "access_key_id = AK\npassword = hunter2\n");
        let err = read_secrets_file(&path).unwrap_err();
        assert!(
            err.contains(":2:") && err.contains("password") && !err.contains("hunter2"),
            "{err}"
        );

        let path = secrets_file(dir.path(), 0o600, "access_key_id = AK\n");
        assert!(read_secrets_file(&path).unwrap_err().contains("must set"));

        let err = read_secrets_file(&dir.path().join("absent")).unwrap_err();
        assert!(err.contains("absent"), "{err}");
    }

    #[test]
    fn relative_secrets_file_resolves_against_base() {
        let dir = tempfile::tempdir().unwrap();
        secrets_file(dir.path(), 0o600, "access_key_id = AK\nsecret_access_key = S\n");
        let raw = RawCredentials::File(PathBuf::from("secrets.ini"));
        assert!(resolve(&raw, dir.path(), false, &no_env).is_ok());
    }
}
