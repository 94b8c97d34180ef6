//! Pure checks on single values (names, prefixes, endpoints, modes, paths) and helpers to
//! locate a position in the config text. No IO; every function is unit-tested here.

use std::path::{Component, Path, PathBuf};

/// Longest file name on Linux filesystems (NAME_MAX).
const NAME_MAX: usize = 255;

pub(crate) fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A tenant name becomes one directory entry.
pub(crate) fn check_tenant_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid directory name"));
    }
    if name.contains('/') {
        return Err(format!(
            "{name:?} contains '/'; a tenant name is a single directory name"
        ));
    }
    if name.len() > NAME_MAX {
        return Err(format!("is {} bytes long; the limit is {NAME_MAX}", name.len()));
    }
    if has_control(name) {
        return Err(format!("{name:?} contains control characters"));
    }
    // The name is the default key prefix of the tenant (`<name>/`): the key rules apply.
    if !crate::key::is_valid_segment(name) {
        return Err(format!("{name:?} contains '\\', which some storage reads as '/'"));
    }
    Ok(())
}

/// "" or `seg/seg/`: no leading '/', no empty, "." or ".." segments, no control characters.
pub(crate) fn normalize_prefix(prefix: &str) -> Result<String, String> {
    if prefix.is_empty() {
        return Ok(String::new());
    }
    if prefix.starts_with('/') {
        return Err(format!(
            "{prefix:?} must not start with '/'; write it relative to the bucket root"
        ));
    }
    if has_control(prefix) {
        return Err(format!("{prefix:?} contains control characters"));
    }
    // The key rules of `crate::key`, with the offending segment named.
    let key = crate::key::ValidKey::parse(prefix).map_err(|e| {
        let body = prefix.strip_suffix('/').unwrap_or(prefix);
        let bad = body
            .split('/')
            .find(|s| !crate::key::is_valid_segment(s))
            .unwrap_or(body);
        match e {
            crate::key::KeyError::EmptySegment => format!("{prefix:?} contains an empty segment (\"//\")"),
            crate::key::KeyError::DotSegment => format!("{prefix:?} contains a {bad:?} segment"),
            _ => format!("{prefix:?} is not a valid key prefix: {e} in {bad:?}"),
        }
    })?;
    Ok(format!("{}/", key.as_str().strip_suffix('/').unwrap_or(key.as_str())))
}

/// `endpoint` with any `userinfo@` of its authority replaced by `<redacted>@`.
pub(crate) fn redact_userinfo(endpoint: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return endpoint.into();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>{}", &rest[at..]).into(),
        None => endpoint.into(),
    }
}

/// `http(s)://host[:port][/path]`, returned without a trailing '/'.
pub(crate) fn check_endpoint(endpoint: &str) -> Result<String, String> {
    check_http_url("endpoint", endpoint)
}

/// A `public_url_base`: the same form as an endpoint (URLs are this base + a key, so a query
/// or fragment would swallow the key).
pub(crate) fn check_url_base(base: &str) -> Result<String, String> {
    check_http_url("public_url_base", base)
}

/// `http(s)://host[:port][/path]` (the value of `what`), returned without a trailing '/'.
fn check_http_url(what: &str, endpoint: &str) -> Result<String, String> {
    // A `user:password@` in the URL is refused, and never echoed in the message.
    let shown = redact_userinfo(endpoint);
    let bad = |why: &str| format!("invalid {what} {shown:?}: {why}; expected http(s)://host[:port][/path]");
    let lower = endpoint.to_ascii_lowercase();
    let rest = if lower.starts_with("https://") || lower.starts_with("http://") {
        endpoint.split_once("://").map_or("", |(_, r)| r)
    } else {
        return Err(bad("the scheme must be http:// or https://"));
    };
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if authority.contains('@') {
        return Err(bad("credentials do not belong in the URL"));
    }
    if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("no query, fragment or spaces allowed"));
    }
    let host_end = if authority.starts_with('[') {
        authority.find(']').map(|i| i + 1).ok_or_else(|| bad("unclosed '['"))?
    } else {
        authority.find(':').unwrap_or(authority.len())
    };
    let (host, port) = authority.split_at(host_end);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ipv6) => !ipv6.is_empty() && ipv6.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.'),
        None => !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)),
    };
    if !host_ok {
        return Err(bad("the host must be a DNS name or an IP address"));
    }
    if let Some(port) = port.strip_prefix(':') {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad("the port must be a number from 1 to 65535"));
        }
    } else if !port.is_empty() {
        return Err(bad("unexpected text after the host"));
    }
    Ok(endpoint.trim_end_matches('/').to_owned())
}

/// "0750", "750" or "0o750" → 0o750; at most 0o7777.
pub(crate) fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let octal = !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if octal && mode <= 0o7777 => Ok(mode),
        _ => Err(format!(
            "invalid mode {text:?}: expected octal permission bits such as \"0750\""
        )),
    }
}

/// Lexical normalization (no filesystem access: the directory may not exist yet).
pub(crate) fn normalize_path(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // "/.." is "/".
                Some(Component::RootDir | Component::Prefix(_)) => {}
                Some(Component::ParentDir | Component::CurDir) | None => out.push(component),
            },
            other => out.push(other),
        }
    }
    out
}

/// Where each line of a text starts, so the line of an offset is a binary search: a config
/// of 100,000 tenants reports lines for each of them, and counting newlines from the top
/// every time made loading quadratic.
#[derive(Debug)]
pub(crate) struct LineIndex {
    /// Byte offset of the first byte of every line after the first.
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let starts = text
            .bytes()
            .enumerate()
            .filter(|(_, b)| *b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        Self { starts }
    }

    /// 1-based line of a byte offset (same answer as [`line_of`]).
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset) + 1
    }
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

/// Best-effort dotted key path at a byte offset, for errors `toml` reports with a span but
/// without the key path: the nearest table header above plus the key on that line.
pub(crate) fn field_at(text: &str, offset: usize) -> String {
    let line_index = line_of(text, offset) - 1;
    let lines: Vec<&str> = text.lines().collect();
    let mut table = String::new();
    for line in lines.iter().take(line_index + 1).rev() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim();
            let header = format!("[[{name}]]");
            let count = lines
                .iter()
                .take(line_index + 1)
                .filter(|l| l.trim().starts_with(&header))
                .count();
            table = format!("{name}[{}]", count.saturating_sub(1));
            break;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = name.trim().to_owned();
            break;
        }
    }
    let key = lines
        .get(line_index)
        .map(|l| l.trim())
        .filter(|l| !l.starts_with('['))
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .unwrap_or_default();
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_normalize() {
        assert_eq!(normalize_prefix(""), Ok(String::new()));
        assert_eq!(normalize_prefix("a"), Ok("a/".to_owned()));
        assert_eq!(normalize_prefix("a/b/"), Ok("a/b/".to_owned()));
        assert_eq!(
            normalize_prefix("a..b/.c"),
            Ok("a..b/.c/".to_owned()),
            "dots inside names are fine"
        );
        for bad in ["/", "/a", "a//b", "..", "a/./b", "a/..", "a\nb", "a\\..\\b/"] {
            assert!(normalize_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tenant_names() {
        for ok in ["acme", "a b", "ünï", ".hidden", "x".repeat(255).as_str()] {
            assert!(check_tenant_name(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", ".", "..", "a/b", "a\u{7f}", "a\\b", "x".repeat(256).as_str()] {
            assert!(check_tenant_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(check_endpoint("https://h.example/"), Ok("https://h.example".to_owned()));
        assert_eq!(check_endpoint("http://[::1]:9000"), Ok("http://[::1]:9000".to_owned()));
        for bad in [
            "h.example",
            "https://",
            "http://:80",
            "http://h:0",
            "http://h:x",
            "http://[::1",
            "http://h]x",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn endpoint_passwords_are_refused_and_never_echoed() {
        for url in [
            "https://user:hunter2@s3.example.com",
            "http://user:hunter2@127.0.0.1:9000/base",
            "https://a@b:hunter2@h:x",
        ] {
            let err = check_endpoint(url).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("<redacted>@"), "{err}");
        }
        assert_eq!(redact_userinfo("http://h/a@b"), "http://h/a@b");
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0750"), Ok(0o750));
        assert_eq!(parse_mode("755"), Ok(0o755));
        assert_eq!(parse_mode("0o1777"), Ok(0o1777));
        for bad in ["", "0o", "rwx", "0800", "17777", "-1", "+7"] {
            assert!(parse_mode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_normalize_lexically() {
        assert_eq!(normalize_path(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize_path(Path::new("/../a")), PathBuf::from("/a"));
    }

    #[test]
    fn field_paths_for_parse_errors() {
        let text = "top = 1\n[cache]\nmemory = 1\n[[tenants]]\nname = \"a\"\n[[tenants]]\nname = 2\n";
        assert_eq!(field_at(text, 0), "top");
        assert_eq!(field_at(text, text.find("memory").unwrap()), "cache.memory");
        assert_eq!(field_at(text, text.find("name = 2").unwrap()), "tenants[1].name");
        assert_eq!(field_at(text, text.find("[cache]").unwrap()), "cache");
        assert_eq!(line_of(text, text.find("name = 2").unwrap()), 7);
        assert_eq!(line_of(text, usize::MAX), 8);
        let index = LineIndex::new(text);
        for offset in (0..text.len()).chain([usize::MAX]) {
            assert_eq!(index.line(offset), line_of(text, offset), "offset {offset}");
        }
    }
}
