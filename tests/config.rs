//! Config loading through the public API: every validation rule, error format, example file.

// test_case expands to functions clippy does not recognise as tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use byosfs::cli::{Cli, Command};
use byosfs::config::{BackendConfig, Config, ConfigError, ConfigIssue, Credentials, PayloadSigning, Provider};
use clap::Parser;
use test_case::test_case;

const BASE: &str = r#"
[defaults]
backend = "local"

[backends.local]
type = "local"
root = "./data"

[[tenants]]
name = "acme"
"#;

fn path() -> &'static Path {
    Path::new("/srv/byosfs/config.toml")
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, path())
}

fn issues(text: &str) -> Vec<ConfigIssue> {
    match load(text) {
        Ok(c) => panic!("expected errors, config loaded: {c:#?}"),
        Err(e) => {
            assert!(!e.issues().is_empty());
            e.issues().to_vec()
        }
    }
}

/// The issue for `field`; fails with all issues shown if there is none.
fn issue(text: &str, field: &str) -> ConfigIssue {
    let all = issues(text);
    all.iter()
        .find(|i| i.field == field)
        .cloned()
        .unwrap_or_else(|| panic!("no issue for {field}; got {all:#?}"))
}

fn line_of(text: &str, needle: &str) -> usize {
    let offset = text.find(needle).unwrap_or_else(|| panic!("{needle} not in text"));
    text[..offset].matches('\n').count() + 1
}

fn with(extra: &str) -> String {
    format!("{BASE}\n{extra}")
}

/// An s3 backend table; credentials from the default chain unless `body` names some (a
/// backend with an endpoint must name them).
fn s3_backend(name: &str, body: &str) -> String {
    let creds = if body.contains("credentials") {
        ""
    } else {
        "credentials = \"default\"\n"
    };
    format!("[backends.{name}]\ntype = \"s3\"\n{creds}{body}\n")
}

#[test_case("endpoint = \"http://10.0.0.5:9000\"", true; "custom endpoint")]
#[test_case("provider = \"r2\"\naccount_id = \"abc\"", true; "r2")]
#[test_case("provider = \"aws\"\nregion = \"eu-west-1\"\nendpoint = \"https://vpce.example\"", true; "aws with endpoint")]
#[test_case("region = \"eu-west-1\"", false; "aws")]
fn third_party_endpoints_must_name_credentials(body: &str, refused: bool) {
    let text =
        format!("[backends.m]\ntype = \"s3\"\nbucket = \"b\"\n{body}\n\n[[tenants]]\nname = \"t\"\nbackend = \"m\"\n");
    if refused {
        let issue = issue(&text, "backends.m.credentials");
        assert!(
            issue.message.contains("must name its credentials") && issue.message.contains("credentials = \"default\""),
            "{issue}"
        );
        // Asking for the default chain by name is allowed.
        let named = text.replace("bucket = \"b\"", "bucket = \"b\"\ncredentials = \"default\"");
        assert_eq!(
            s3_of(&load(&named).unwrap(), "m").credentials,
            Credentials::DefaultChain
        );
    } else {
        assert_eq!(s3_of(&load(&text).unwrap(), "m").credentials, Credentials::DefaultChain);
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let config = load(BASE).unwrap();
    assert_eq!(config.source, PathBuf::from("/srv/byosfs/config.toml"));
    assert!(!config.mount.allow_other && !config.mount.read_only);
    assert_eq!(config.mount.fs_name, "byosfs");
    assert_eq!(config.mount.attr_ttl, Duration::from_secs(1));
    assert_eq!(config.mount.entry_ttl, Duration::from_secs(1));
    assert_eq!(config.mount.threads, 4);
    assert_eq!((config.mount.uid, config.mount.gid), (None, None));
    assert_eq!(config.cache.memory, 512 << 20);
    assert_eq!(config.cache.block_size, 1 << 20);
    assert_eq!(config.cache.readahead_initial, 1 << 20);
    assert_eq!(config.cache.readahead_max, 64 << 20);
    assert_eq!(config.cache.max_streams, 4);
    assert_eq!(config.cache.metadata_ttl, Duration::from_secs(1));
    assert_eq!(config.cache.negative_ttl, Duration::from_secs(1));
    assert_eq!(config.write.part_size, 8 << 20);
    assert_eq!(config.write.memory, 256 << 20);
    assert_eq!(config.write.max_concurrent_parts, 4);
    assert_eq!(config.write.staging_dir, None);
    assert_eq!(config.write.staging_limit, 10 << 30);
    assert_eq!(config.write.max_rename_entries, 1000);
    let BackendConfig::Local(local) = &config.backends["local"] else {
        panic!("expected local backend");
    };
    assert_eq!(local.root, PathBuf::from("/srv/byosfs/data"));
    assert_eq!(local.request_timeout, Duration::from_secs(300));
    let acme = config.tenant("acme").unwrap();
    assert_eq!(acme.backend, "local");
    assert_eq!(acme.prefix, "acme/");
    assert_eq!(acme.mode, None);
    assert!(!acme.read_only);
    assert!(config.backend_of(acme).is_some());
}

#[test]
fn explicit_values_and_units() {
    let text = r#"
[mount]
allow_other = true
uid = 1000
gid = 100
fs_name = "media"
attr_ttl = "500ms"
entry_ttl = "2s"
threads = 8

[cache]
memory = "1GiB"
block_size = "256KiB"
readahead_initial = "512KiB"
readahead_max = "32MiB"
max_streams = 2
metadata_ttl = "1m"
negative_ttl = "0"

[write]
part_size = "16MiB"
memory = 134217728
max_concurrent_parts = 8
staging_dir = "../scratch"
staging_limit = "1.5GiB"
max_rename_entries = 10

[backends.disk]
type = "local"
root = "/var/lib/byosfs"
prefix = "tenants"

[[tenants]]
name = "acme"
backend = "disk"
prefix = "a/b/"
uid = 5
mode = "0750"
read_only = true

[[tenants]]
name = "globex"
backend = "disk"
prefix = "g"
"#;
    let config = load(text).unwrap();
    assert!(config.mount.allow_other);
    assert_eq!(config.mount.attr_ttl, Duration::from_millis(500));
    assert_eq!(config.mount.entry_ttl, Duration::from_secs(2));
    assert_eq!(config.mount.threads, 8);
    assert_eq!(config.cache.memory, 1 << 30);
    assert_eq!(config.cache.block_size, 256 << 10);
    assert_eq!(config.cache.readahead_initial, 512 << 10);
    assert_eq!(config.cache.readahead_max, 32 << 20);
    assert_eq!(config.cache.metadata_ttl, Duration::from_secs(60));
    assert_eq!(config.cache.negative_ttl, Duration::ZERO);
    assert_eq!(config.write.part_size, 16 << 20);
    assert_eq!(config.write.memory, 128 << 20);
    assert_eq!(config.write.staging_dir, Some(PathBuf::from("/srv/scratch")));
    assert_eq!(config.write.staging_limit, 3 << 29);
    let acme = config.tenant("acme").unwrap();
    assert_eq!(acme.prefix, "tenants/a/b/", "backend prefix + tenant prefix");
    assert_eq!((acme.uid, acme.gid), (Some(5), Some(100)), "gid falls back to [mount]");
    assert_eq!(acme.mode, Some(0o750));
    assert!(acme.read_only);
    let globex = config.tenant("globex").unwrap();
    assert_eq!(globex.prefix, "tenants/g/");
    assert_eq!((globex.uid, globex.gid), (Some(1000), Some(100)));
}

#[test]
fn example_file_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<_> = config.tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["acme", "globex"]);
    assert!(config.tenants.iter().all(|t| t.backend == "local"));
    assert_eq!(config.tenant("globex").unwrap().prefix, "globex/");
    let BackendConfig::Local(local) = &config.backends["local"] else {
        panic!("expected local backend");
    };
    assert_eq!(local.root, Path::new(env!("CARGO_MANIFEST_DIR")).join("byosfs-data"));
}

#[test]
fn error_format_names_file_line_field_and_valid_choices() {
    let text = with(&format!(
        "{}\n[[tenants]]\nname = \"globex\"\nbackend = \"r3\"\n",
        s3_backend("r2", "provider = \"r2\"\naccount_id = \"abc\"\nbucket = \"b\"")
    ));
    let err = load(&text).unwrap_err();
    let line = line_of(&text, "backend = \"r3\"");
    assert_eq!(
        err.to_string(),
        format!(
            "/srv/byosfs/config.toml:{line}: tenants[1].backend: unknown backend \"r3\" (defined: \"local\", \"r2\")"
        )
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = with("[cache]\nblock_size = \"3MiB\"\n[write]\npart_size = \"1MiB\"\n[[tenants]]\nname = \"..\"\n");
    let fields: Vec<_> = issues(&text).into_iter().map(|i| i.field).collect();
    for f in ["cache.block_size", "write.part_size", "tenants[1].name"] {
        assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
    }
}

#[test]
fn unreadable_file_is_an_error_with_its_path() {
    let err = Config::load(Path::new("/nonexistent/byosfs.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/byosfs.toml"));
}

#[test_case("[mount]\nallow_othr = true\n", "mount.allow_othr", "allow_other"; "mount")]
#[test_case("[cache]\nmemroy = \"1GiB\"\n", "cache.memroy", "memory"; "cache")]
#[test_case("[write]\npartsize = \"8MiB\"\n", "write.partsize", "part_size"; "write")]
#[test_case("[defaults]\nbackend = \"local\"\nbucket = \"x\"\n", "defaults.bucket", "backend"; "defaults")]
#[test_case("[backends.local]\ntype = \"local\"\nroot = \"x\"\nroute = 1\n", "backends.local.route", "root"; "backend")]
#[test_case("[[tenants]]\nname = \"acme\"\nprefx = \"a\"\n", "tenants[0].prefx", "prefix"; "tenant")]
#[test_case("[mounts]\n", "mounts", "mount"; "top level")]
fn unknown_keys(text: &str, field: &str, suggestion: &str) {
    let all = issues(text);
    assert_eq!(all.len(), 1, "{all:#?}");
    let issue = &all[0];
    assert!(issue.message.contains("unknown field"), "{issue}");
    assert!(issue.message.contains(suggestion), "valid keys are listed: {issue}");
    assert_eq!(issue.field, field);
    assert!(issue.line.is_some(), "{issue}");
}

#[test]
fn unknown_key_reports_its_line() {
    let text = "[cache]\nmemory = \"1GiB\"\n\n[write]\nmemory = \"1GiB\"\nbogus = 1\n";
    let all = issues(text);
    assert_eq!(all[0].line, Some(6), "{all:#?}");
    assert_eq!(all[0].field, "write.bogus");
}

#[test_case("[mount]\nthreads = \"four\"\n", "mount.threads"; "string for int")]
#[test_case("[mount]\nallow_other = \"yes\"\n", "mount.allow_other"; "string for bool")]
#[test_case("[cache]\nmemory = true\n", "cache.memory"; "bool for size")]
#[test_case("[cache]\nmemory = \"12 parsecs\"\n", "cache.memory"; "bad unit")]
#[test_case("[cache]\nmetadata_ttl = 5\n", "cache.metadata_ttl"; "duration without unit")]
#[test_case("[backends.x]\ntype = \"s4\"\n", "backends.x.type"; "unknown backend type")]
#[test_case("[backends.x]\ntype = \"s3\"\nprovider = \"gcs\"\nbucket = \"b\"\n", "backends.x.provider"; "unknown provider")]
#[test_case("[backends.x]\ntype = \"s3\"\npayload_signing = \"sometimes\"\nbucket = \"b\"\n", "backends.x.payload_signing"; "unknown payload signing")]
#[test_case("tenants = 3\n", "tenants"; "scalar for array")]
fn wrong_types(text: &str, field: &str) {
    let all = issues(text);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].field, field, "{all:#?}");
    let line = all[0].line.unwrap();
    assert!(text.lines().nth(line - 1).is_some());
}

#[test]
fn duplicate_tenant_names() {
    let text = with("[[tenants]]\nname = \"acme\"\nprefix = \"other/\"\n");
    let issue = issue(&text, "tenants[1].name");
    assert!(issue.message.contains("duplicate tenant name \"acme\""), "{issue}");
    assert!(
        issue
            .message
            .contains(&format!("line {}", line_of(&text, "name = \"acme\""))),
        "{issue}"
    );
}

#[test_case(""; "empty")]
#[test_case("."; "dot")]
#[test_case(".."; "dotdot")]
#[test_case("a/b"; "slash")]
#[test_case("/"; "root")]
#[test_case("tab\there"; "control")]
fn invalid_tenant_names(name: &str) {
    let text = format!("{BASE}\n[[tenants]]\nname = {name:?}\n");
    let issue = issue(&text, "tenants[1].name");
    assert_eq!(issue.line, Some(line_of(&text, &format!("name = {name:?}"))));
}

#[test]
fn tenant_name_length_limit() {
    let ok = "x".repeat(255);
    assert!(load(&format!("{BASE}\n[[tenants]]\nname = \"{ok}\"\n")).is_ok());
    let long = "é".repeat(128); // 256 bytes
    let issue = issue(&format!("{BASE}\n[[tenants]]\nname = \"{long}\"\n"), "tenants[1].name");
    assert!(issue.message.contains("255"), "{issue}");
}

#[test]
fn no_tenants() {
    let text = "[backends.local]\ntype = \"local\"\nroot = \"d\"\n";
    let issue = issue(text, "tenants");
    assert!(issue.message.contains("[[tenants]]"));
}

#[test]
fn tenant_without_backend_and_no_default() {
    let text = "[backends.local]\ntype = \"local\"\nroot = \"d\"\n[[tenants]]\nname = \"acme\"\n";
    let issue = issue(text, "tenants[0].backend");
    assert!(
        issue.message.contains("[defaults]") && issue.message.contains("\"local\""),
        "{issue}"
    );
    assert_eq!(issue.line, Some(4));
}

#[test]
fn unknown_default_backend() {
    let text = "[defaults]\nbackend = \"nope\"\n[backends.local]\ntype = \"local\"\nroot = \"d\"\n[[tenants]]\nname = \"a\"\nbackend = \"local\"\n";
    let issue = issue(text, "defaults.backend");
    assert_eq!(issue.line, Some(2));
    assert!(issue.message.contains("defined: \"local\""), "{issue}");
}

#[test_case("\"\""; "empty")]
#[test_case("\"  \""; "blank")]
fn empty_bucket(bucket: &str) {
    let text = with(&s3_backend("b", &format!("region = \"eu-west-1\"\nbucket = {bucket}")));
    let issue = issue(&text, "backends.b.bucket");
    assert!(issue.message.contains("empty"), "{issue}");
    assert_eq!(issue.line, Some(line_of(&text, "bucket =")));
}

#[test]
fn missing_bucket() {
    let text = with(&s3_backend("b", "region = \"eu-west-1\""));
    assert!(issue(&text, "backends.b.bucket").message.contains("missing"));
}

#[test_case("ftp://host"; "scheme")]
#[test_case("localhost:9000"; "no scheme")]
#[test_case("http://"; "no host")]
#[test_case("https://user:pw@host"; "userinfo")]
#[test_case("http://host:99999"; "port range")]
#[test_case("http://host:abc"; "port text")]
#[test_case("http://host/x?y=1"; "query")]
#[test_case("http://ho st"; "space")]
fn invalid_endpoints(endpoint: &str) {
    let text = with(&s3_backend("m", &format!("endpoint = {endpoint:?}\nbucket = \"b\"")));
    let issue = issue(&text, "backends.m.endpoint");
    assert!(issue.message.contains("http(s)://host"), "{issue}");
    assert_eq!(issue.line, Some(line_of(&text, "endpoint =")));
}

#[test_case("http://127.0.0.1:9000", "http://127.0.0.1:9000")]
#[test_case("https://s3.example.com/", "https://s3.example.com")]
#[test_case("HTTPS://Example.com:443/storage/v1/s3", "HTTPS://Example.com:443/storage/v1/s3")]
#[test_case("http://[::1]:9000", "http://[::1]:9000")]
fn valid_endpoints(endpoint: &str, resolved: &str) {
    let text = format!(
        "{}\n[[tenants]]\nname = \"t\"\nbackend = \"m\"\n",
        s3_backend("m", &format!("endpoint = {endpoint:?}\nbucket = \"b\""))
    );
    let config = load(&text).unwrap();
    let BackendConfig::S3(s3) = &config.backends["m"] else {
        panic!("expected s3");
    };
    assert_eq!(
        s3.provider,
        Provider::Custom,
        "an endpoint without provider means custom"
    );
    assert_eq!(s3.endpoint.as_deref(), Some(resolved));
    assert!(s3.force_path_style);
    assert_eq!(
        config.tenant("t").unwrap().prefix,
        "",
        "a named dedicated backend gives the whole bucket"
    );
}

#[test_case("\"4MiB\"", false)]
#[test_case("\"5MiB\"", true)]
#[test_case("\"5GiB\"", true)]
#[test_case("\"6GiB\"", false)]
#[test_case("5242879", false)]
fn part_size_limits(value: &str, ok: bool) {
    let text = with(&format!("[write]\npart_size = {value}\nmemory = \"8GiB\"\n"));
    match load(&text) {
        Ok(c) => assert!(ok, "accepted {value}: {}", c.write.part_size),
        Err(e) => {
            assert!(!ok, "{e}");
            let issue = &e.issues()[0];
            assert_eq!(issue.field, "write.part_size");
            assert!(
                issue.message.contains("5MiB") && issue.message.contains("5GiB"),
                "{issue}"
            );
        }
    }
}

#[test]
fn write_memory_must_hold_a_part() {
    let text = with("[write]\npart_size = \"64MiB\"\nmemory = \"32MiB\"\n");
    assert!(issue(&text, "write.memory").message.contains("part_size"));
}

#[test_case("\"3MiB\"")]
#[test_case("\"1000KiB\"")]
#[test_case("1000")]
#[test_case("0")]
fn block_size_must_be_a_power_of_two(value: &str) {
    let text = with(&format!("[cache]\nblock_size = {value}\n"));
    let issue = issue(&text, "cache.block_size");
    assert!(issue.message.contains("power of two"), "{issue}");
    assert_eq!(issue.line, Some(line_of(&text, "block_size")));
}

#[test]
fn readahead_bounds() {
    let text = with("[cache]\nreadahead_initial = \"8MiB\"\nreadahead_max = \"4MiB\"\n");
    assert!(issue(&text, "cache.readahead_initial")
        .message
        .contains("readahead_max"));
    let text = with("[cache]\nmemory = \"16MiB\"\nreadahead_max = \"32MiB\"\n");
    assert!(issue(&text, "cache.readahead_max").message.contains("cache.memory"));
}

#[test_case("mount.threads", "[mount]\nthreads = 0\n")]
#[test_case("cache.max_streams", "[cache]\nmax_streams = 0\n")]
#[test_case("write.max_concurrent_parts", "[write]\nmax_concurrent_parts = 0\n")]
fn zero_counts(field: &str, extra: &str) {
    let issue = issue(&with(extra), field);
    assert!(issue.message.contains("out of range"), "{issue}");
}

#[test]
fn invalid_mode() {
    let text = with("[[tenants]]\nname = \"b\"\nmode = \"0789\"\n");
    assert!(issue(&text, "tenants[1].mode").message.contains("octal"));
    let text = with("[[tenants]]\nname = \"b\"\nmode = \"17777\"\n");
    issue(&text, "tenants[1].mode");
}

#[test_case("r2", "bucket = \"b\"", &["backends.x.account_id"]; "r2 account id")]
#[test_case("aws", "bucket = \"b\"", &["backends.x.region"]; "aws region")]
#[test_case("b2", "bucket = \"b\"", &["backends.x.region"]; "b2 region")]
#[test_case("spaces", "bucket = \"b\"", &["backends.x.region"]; "spaces region")]
#[test_case("wasabi", "bucket = \"b\"", &["backends.x.region"]; "wasabi region")]
#[test_case("minio", "bucket = \"b\"", &["backends.x.endpoint"]; "minio endpoint")]
#[test_case("custom", "bucket = \"b\"", &["backends.x.endpoint"]; "custom endpoint")]
#[test_case("supabase", "bucket = \"b\"", &["backends.x.region", "backends.x.project_ref"]; "supabase")]
fn missing_preset_fields(provider: &str, body: &str, fields: &[&str]) {
    let text = with(&s3_backend("x", &format!("provider = \"{provider}\"\n{body}")));
    let all = issues(&text);
    let got: Vec<_> = all.iter().map(|i| i.field.as_str()).collect();
    assert_eq!(got, fields, "{all:#?}");
    let header = line_of(&text, "[backends.x]");
    assert!(
        all.iter()
            .all(|i| i.line == Some(header) && i.message.contains(provider)),
        "{all:#?}"
    );
}

fn s3_of(config: &Config, name: &str) -> byosfs::config::S3Config {
    match &config.backends[name] {
        BackendConfig::S3(s3) => s3.clone(),
        other => panic!("expected s3, got {other:?}"),
    }
}

#[test]
fn payload_signing_follows_the_transport_unless_set() {
    let text = format!(
        "{}{}{}\n[[tenants]]\nname = \"a\"\nbackend = \"aws\"\n[[tenants]]\nname = \"b\"\nbackend = \"lan\"\n\
         [[tenants]]\nname = \"c\"\nbackend = \"lo\"\n",
        s3_backend("aws", "region = \"eu-west-1\"\nbucket = \"b\""),
        s3_backend("lan", "endpoint = \"HTTP://10.0.0.5:9000\"\nbucket = \"b\""),
        s3_backend(
            "lo",
            "endpoint = \"http://127.0.0.1:9000\"\nbucket = \"b\"\npayload_signing = \"never\""
        ),
    );
    let config = load(&text).unwrap();
    let (aws, lan, lo) = (s3_of(&config, "aws"), s3_of(&config, "lan"), s3_of(&config, "lo"));
    assert_eq!(
        (aws.payload_signing, lan.payload_signing),
        (PayloadSigning::Auto, PayloadSigning::Auto)
    );
    // AWS's endpoints are HTTPS: TLS covers the body; plain HTTP gets it signed.
    assert!(!aws.payload_signing.signs(aws.endpoint.as_deref()));
    assert!(lan.payload_signing.signs(lan.endpoint.as_deref()));
    assert!(!PayloadSigning::Auto.signs(Some("https://s3.example.com")));
    assert_eq!(lo.payload_signing, PayloadSigning::Never);
    assert!(!lo.payload_signing.signs(lo.endpoint.as_deref()));
    assert!(PayloadSigning::Always.signs(Some("https://s3.example.com")));
}

#[test]
fn presets_resolve_through_the_file() {
    let text = format!(
        "{}{}{}{}\n[[tenants]]\nname = \"a\"\nbackend = \"r2\"\n[[tenants]]\nname = \"b\"\nbackend = \"sb\"\n\
         [[tenants]]\nname = \"c\"\nbackend = \"aws\"\n[[tenants]]\nname = \"d\"\nbackend = \"b2\"\n",
        s3_backend("r2", "provider = \"r2\"\naccount_id = \"abc123\"\nbucket = \"media\""),
        s3_backend(
            "sb",
            "provider = \"supabase\"\nproject_ref = \"proj\"\nregion = \"eu-central-1\"\nbucket = \"up\""
        ),
        s3_backend("aws", "region = \"eu-west-1\"\nbucket = \"arch\"\nprefix = \"fs/\""),
        s3_backend(
            "b2",
            "provider = \"b2\"\nregion = \"us-west-004\"\nbucket = \"bb\"\nforce_path_style = true"
        ),
    );
    let config = load(&text).unwrap();
    let r2 = s3_of(&config, "r2");
    assert_eq!(r2.endpoint.as_deref(), Some("https://abc123.r2.cloudflarestorage.com"));
    assert_eq!((r2.region.as_str(), r2.force_path_style), ("auto", false));
    assert_eq!(r2.credentials, Credentials::DefaultChain);
    assert_eq!(r2.request_timeout, Duration::from_secs(60));
    assert_eq!(r2.connect_timeout, Duration::from_secs(5));
    assert_eq!(r2.max_attempts, 3);
    let sb = s3_of(&config, "sb");
    assert_eq!(
        sb.endpoint.as_deref(),
        Some("https://proj.storage.supabase.co/storage/v1/s3")
    );
    assert!(sb.force_path_style);
    let aws = s3_of(&config, "aws");
    assert_eq!((aws.provider, aws.endpoint.as_deref()), (Provider::Aws, None));
    assert_eq!(config.tenant("c").unwrap().prefix, "fs/");
    let b2 = s3_of(&config, "b2");
    assert_eq!(b2.endpoint.as_deref(), Some("https://s3.us-west-004.backblazeb2.com"));
    assert!(b2.force_path_style, "explicit override wins");
}

#[test]
fn keys_of_the_other_backend_type_are_refused() {
    let text = with("[backends.l2]\ntype = \"local\"\nroot = \"x\"\nbucket = \"b\"\n");
    assert!(issue(&text, "backends.l2.bucket").message.contains("type = \"local\""));
    let text = with(&s3_backend("s", "region = \"r\"\nbucket = \"b\"\nroot = \"x\""));
    assert!(issue(&text, "backends.s.root").message.contains("type = \"s3\""));
}

#[test]
fn tenants_of_an_invalid_backend_are_not_also_unknown() {
    let text = with(&format!(
        "{}[[tenants]]\nname = \"z\"\nbackend = \"bad\"\n",
        s3_backend("bad", "provider = \"aws\"\nbucket = \"\"\nregion = \"x\"")
    ));
    let all = issues(&text);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].field, "backends.bad.bucket");
}

#[test_case("acme/", "acme/x/", false; "nested")]
#[test_case("acme", "acme/", false; "same after normalization")]
#[test_case("", "acme/", false; "whole bucket contains everything")]
#[test_case("acme", "acme2", true; "sibling names")]
#[test_case("a/b/", "a/c/", true; "siblings under a common parent")]
fn prefix_isolation(first: &str, second: &str, ok: bool) {
    let text = format!(
        "{}\n[[tenants]]\nname = \"one\"\nbackend = \"m\"\nprefix = {first:?}\n[[tenants]]\nname = \"two\"\nbackend = \"m\"\nprefix = {second:?}\n",
        s3_backend("m", "endpoint = \"http://127.0.0.1:9000\"\nbucket = \"shared\"")
    );
    match load(&text) {
        Ok(_) => assert!(ok, "{first:?} and {second:?} overlap but were accepted"),
        Err(e) => {
            assert!(!ok, "{e}");
            let issue = &e.issues()[0];
            assert_eq!(issue.field, "tenants[1].prefix");
            assert!(issue.message.contains("overlaps tenant \"one\""), "{issue}");
            assert_eq!(issue.line, Some(line_of(&text, &format!("prefix = {second:?}"))));
        }
    }
}

#[test]
fn isolation_spans_backends_on_the_same_bucket() {
    let text = format!(
        "{}{}\n[[tenants]]\nname = \"one\"\nbackend = \"m1\"\nprefix = \"x/\"\n[[tenants]]\nname = \"two\"\nbackend = \"m2\"\nprefix = \"x/y\"\n",
        s3_backend("m1", "endpoint = \"http://127.0.0.1:9000\"\nbucket = \"shared\""),
        s3_backend("m2", "endpoint = \"http://127.0.0.1:9000/\"\nbucket = \"shared\"\nregion = \"other\""),
    );
    assert!(issue(&text, "tenants[1].prefix").message.contains("overlaps"));
    // Different buckets do not overlap.
    let text = text.replacen("bucket = \"shared\"\nregion", "bucket = \"other\"\nregion", 1);
    assert!(load(&text).is_ok());
}

#[test]
fn isolation_covers_nested_local_roots() {
    let text = "[backends.a]\ntype = \"local\"\nroot = \"data\"\n[backends.b]\ntype = \"local\"\nroot = \"./data/acme/../acme\"\n\
                [[tenants]]\nname = \"one\"\nbackend = \"a\"\n[[tenants]]\nname = \"two\"\nbackend = \"b\"\n";
    assert!(issue(text, "tenants[1].prefix").message.contains("overlaps"));
    let text = text.replace("root = \"data\"", "root = \"data/other\"");
    assert!(load(&text).is_ok());
}

#[test_case("../x"; "parent first")]
#[test_case("a/../b"; "parent inside")]
#[test_case("./a"; "current dir")]
#[test_case("a/./b/"; "current dir inside")]
#[test_case("/abs"; "leading slash")]
#[test_case("a//b"; "empty segment")]
fn bad_prefixes(prefix: &str) {
    let text = with(&format!("[[tenants]]\nname = \"x\"\nprefix = {prefix:?}\n"));
    let found = issue(&text, "tenants[1].prefix");
    assert_eq!(found.line, Some(line_of(&text, "prefix =")));
    let text = with(&format!(
        "{}[[tenants]]\nname = \"x\"\nbackend = \"m\"\n",
        s3_backend(
            "m",
            &format!("endpoint = \"http://h\"\nbucket = \"b\"\nprefix = {prefix:?}")
        )
    ));
    issue(&text, "backends.m.prefix");
}

#[test]
fn missing_env_var_is_named() {
    let var = "BYOSFS_TEST_VARIABLE_THAT_IS_NEVER_SET";
    let text = with(&s3_backend(
        "m",
        &format!(
            "endpoint = \"http://h\"\nbucket = \"b\"\ncredentials = {{ env = {{ access_key_id = \"{var}\", secret_access_key = \"{var}_2\" }} }}"
        ),
    ));
    let issue = issue(&text, "backends.m.credentials");
    assert!(issue.message.contains(var), "{issue}");
    assert_eq!(issue.line, Some(line_of(&text, "credentials =")));
}

#[test]
fn unreadable_secrets_file_is_reported() {
    let text = with(&s3_backend(
        "m",
        "endpoint = \"http://h\"\nbucket = \"b\"\ncredentials = { file = \"no-such-secrets.ini\" }",
    ));
    let issue = issue(&text, "backends.m.credentials");
    assert!(issue.message.contains("/srv/byosfs/no-such-secrets.ini"), "{issue}");
}

#[test]
fn open_secrets_file_is_refused_with_chmod_hint() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("s.ini");
    std::fs::write(&secrets, "access_key_id = AK\nsecret_access_key = topsecretvalue\n").unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config_path = dir.path().join("c.toml");
    let text = with(&s3_backend(
        "m",
        "endpoint = \"http://h\"\nbucket = \"b\"\ncredentials = { file = \"s.ini\" }",
    ));
    std::fs::write(&config_path, &text).unwrap();
    let err = Config::load(&config_path).unwrap_err().to_string();
    assert!(err.contains("chmod 600") && !err.contains("topsecretvalue"), "{err}");
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = Config::load(&config_path).unwrap();
    let dump = format!("{config:?}");
    assert!(dump.contains("AK") && !dump.contains("topsecretvalue"), "{dump}");
}

#[test]
fn inline_secrets_need_opt_in_and_never_show() {
    let creds = "credentials = { access_key_id = \"AKID\", secret_access_key = \"hunter2-secret\", session_token = \"tok-secret\" }";
    let text = with(&s3_backend(
        "m",
        &format!("endpoint = \"http://h\"\nbucket = \"b\"\n{creds}"),
    ));
    let err = load(&text).unwrap_err().to_string();
    assert!(
        err.contains("allow_inline_secrets") && !err.contains("hunter2"),
        "{err}"
    );
    let text = with(&s3_backend(
        "m",
        &format!("endpoint = \"http://h\"\nbucket = \"b\"\nallow_inline_secrets = true\n{creds}"),
    ));
    let config = load(&text).unwrap();
    let dump = format!("{config:?} {config:#?}");
    assert!(!dump.contains("hunter2") && !dump.contains("tok-secret"), "{dump}");
    let Credentials::Static {
        secret_access_key,
        session_token,
        ..
    } = s3_of(&config, "m").credentials
    else {
        panic!("expected static credentials");
    };
    assert_eq!(secret_access_key.expose(), "hunter2-secret");
    assert_eq!(
        session_token.map(|t| t.expose().to_owned()).as_deref(),
        Some("tok-secret")
    );
}

#[test]
fn secrets_in_wrong_places_are_not_echoed() {
    let text = with(&s3_backend(
        "m",
        "endpoint = \"http://h\"\nbucket = \"b\"\ncredentials = \"wJalrXUtnFEMI-secret\"",
    ));
    let err = load(&text).unwrap_err().to_string();
    assert!(!err.contains("wJalrXUtnFEMI"), "{err}");
    assert!(err.contains("backends.m.credentials"), "{err}");
}

#[test]
fn cli_overrides_apply() {
    let cli = Cli::try_parse_from([
        "byosfs",
        "mount",
        "-c",
        "c.toml",
        "/mnt",
        "--read-only",
        "--allow-other",
    ])
    .unwrap();
    let Command::Mount(args) = cli.command else {
        panic!("expected mount");
    };
    let mut config = load(BASE).unwrap();
    args.apply(&mut config);
    assert!(config.mount.read_only && config.mount.allow_other);
    assert!(config.tenants.iter().all(|t| t.read_only));
}

/// `n` tenants `t0`, `t1`, ... on the default backend (each in its folder `tI/`), except that
/// `prefixes` gives some of them a prefix of their own.
fn many_tenants(n: usize, prefixes: &[(usize, &str)]) -> String {
    let mut text = BASE.replace("[[tenants]]\nname = \"acme\"\n", "");
    for i in 0..n {
        text.push_str(&format!("[[tenants]]\nname = \"t{i}\"\n"));
        if let Some((_, prefix)) = prefixes.iter().find(|(k, _)| *k == i) {
            text.push_str(&format!("prefix = {prefix:?}\n"));
        }
    }
    text
}

#[test]
fn overlaps_among_twenty_thousand_tenants_are_named_exactly() {
    let config = load(&many_tenants(20_000, &[])).unwrap();
    assert_eq!(config.tenants.len(), 20_000);
    assert_eq!(config.tenants[19_999].prefix, "t19999/");
    // Later tenants nesting in earlier folders, an earlier one nesting in a later folder
    // (reported at the later tenant, whose folder contains it), and one equal to another.
    let prefixes = [
        (15_000, "t3/inner/"),
        (19_999, "t12345/x/"),
        (7, "t9000/deep/er/"),
        (500, "t499"),
    ];
    let text = many_tenants(20_000, &prefixes);
    let all = issues(&text);
    let mut found: Vec<(&str, &str)> = all
        .iter()
        .map(|i| {
            let other = i
                .message
                .split("overlaps tenant \"")
                .nth(1)
                .and_then(|r| r.split('"').next());
            (i.field.as_str(), other.unwrap_or_else(|| panic!("not an overlap: {i}")))
        })
        .collect();
    found.sort_unstable();
    assert_eq!(
        found,
        [
            ("tenants[15000].prefix", "t3"),
            ("tenants[19999].prefix", "t12345"),
            ("tenants[500].prefix", "t499"),
            ("tenants[9000].prefix", "t7"),
        ],
        "{all:#?}"
    );
    // Each names the line of the tenant it collides with.
    let i = all.iter().find(|i| i.field == "tenants[15000].prefix").unwrap();
    assert!(
        i.message
            .contains(&format!("(line {})", line_of(&text, "name = \"t3\"\n") - 1)),
        "{i}"
    );
}

#[test]
fn a_thousand_errors_are_refused_naming_the_first_hundred() {
    let mut text = BASE.to_owned();
    for i in 0..1_000 {
        text.push_str(&format!("[[tenants]]\nname = \"bad{i}\"\nbackend = \"nowhere\"\n"));
    }
    let err = load(&text).unwrap_err();
    assert_eq!(err.issues().len(), 1_000);
    let message = err.to_string();
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 101, "{message}");
    assert_eq!(lines[100], "... and 900 more");
    for (i, line) in lines[..100].iter().enumerate() {
        let expected = format!(
            "/srv/byosfs/config.toml:{}: tenants[{}].backend: unknown backend \"nowhere\"",
            line_of(&text, &format!("name = \"bad{i}\"\n")) + 1,
            i + 1
        );
        assert!(line.starts_with(&expected), "{line}\nexpected {expected}");
    }
    // Exactly one hundred: no "more" line.
    let hundred: String = text
        .lines()
        .take(text.lines().count() - 900 * 3)
        .collect::<Vec<_>>()
        .join("\n");
    let message = load(&hundred).unwrap_err().to_string();
    assert_eq!(message.lines().count(), 100, "{message}");
    assert!(!message.contains("more"));
}

#[test]
fn unknown_backend_lists_at_most_twenty_names() {
    let mut text = with("[[tenants]]\nname = \"x\"\nbackend = \"nope\"\n");
    for i in 0..30 {
        text.push_str(&format!("[backends.b{i:02}]\ntype = \"local\"\nroot = \"b{i}\"\n"));
    }
    let issue = issue(&text, "tenants[1].backend");
    assert!(issue.message.contains("\"b00\", \"b01\""), "{issue}");
    assert!(issue.message.ends_with(", ... and 11 more)"), "{issue}");
}

/// A config at `dir/config.toml` whose `tenants_dir` is `dir/tenants.d`, holding `files`.
fn with_tenants_dir(extra: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Config, ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("tenants.d");
    std::fs::create_dir(&tdir).unwrap();
    for (name, body) in files {
        std::fs::write(tdir.join(name), body).unwrap();
    }
    let path = dir.path().join("config.toml");
    std::fs::write(&path, format!("tenants_dir = \"tenants.d\"\n{BASE}{extra}")).unwrap();
    let loaded = Config::load(&path);
    (dir, loaded)
}

#[test]
fn tenants_dir_adds_one_tenant_per_file_after_the_file_tenants() {
    let (dir, loaded) = with_tenants_dir(
        "[backends.own]\ntype = \"local\"\nroot = \"own\"\n",
        &[
            ("zeta.toml", "name = \"zeta\"\nread_only = true\n"),
            (
                "beta.toml",
                "name = \"beta\"\nbackend = \"own\"\nprefix = \"b\"\nmode = \"0700\"\n",
            ),
            ("notes.txt", "not a tenant"),
            (".gamma.toml.swp", "garbage"),
        ],
    );
    let config = loaded.unwrap();
    let names: Vec<_> = config.tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["acme", "beta", "zeta"]);
    assert_eq!(config.tenants_dir, Some(dir.path().join("tenants.d")));
    let beta = config.tenant("beta").unwrap();
    assert_eq!(
        (beta.backend.as_str(), beta.prefix.as_str(), beta.mode),
        ("own", "b/", Some(0o700))
    );
    let zeta = config.tenant("zeta").unwrap();
    assert!(zeta.read_only);
    assert_eq!((zeta.backend.as_str(), zeta.prefix.as_str()), ("local", "zeta/"));
}

#[test]
fn tenants_dir_errors_name_the_file_and_line() {
    let (dir, loaded) = with_tenants_dir(
        "",
        &[
            ("a.toml", "name = \"a\"\n\nbackend = \"nowhere\"\n"),
            ("b.toml", "name = \"b\"\ncolour = \"red\"\n"),
            ("c.toml", "name = \"acme\"\n"),
            ("d.toml", "name = \"d\"\nprefix = \"acme/x\"\n"),
            ("e.toml", "backend = \"local\"\n"),
        ],
    );
    let err = loaded.unwrap_err();
    let tdir = dir.path().join("tenants.d");
    let by_file = |f: &str| -> ConfigIssue {
        let path = tdir.join(f);
        let found: Vec<_> = err.issues().iter().filter(|i| i.file == path).cloned().collect();
        assert_eq!(found.len(), 1, "{f}: {err}");
        found[0].clone()
    };
    let a = by_file("a.toml");
    assert_eq!((a.line, a.field.as_str()), (Some(3), "backend"), "{a}");
    assert!(a.to_string().starts_with(&format!(
        "{}:3: backend: unknown backend",
        tdir.join("a.toml").display()
    )));
    let b = by_file("b.toml");
    assert_eq!(b.line, Some(2), "{b}");
    assert!(b.message.contains("colour"), "{b}");
    let c = by_file("c.toml");
    let config = dir.path().join("config.toml");
    assert!(
        c.message.contains(&format!("first defined at {}:", config.display())),
        "{c}"
    );
    let d = by_file("d.toml");
    assert_eq!((d.line, d.field.as_str()), (Some(2), "prefix"));
    assert!(
        d.message
            .contains(&format!("overlaps tenant \"acme\" ({}:", config.display())),
        "{d}"
    );
    let e = by_file("e.toml");
    assert!(e.message.contains("name"), "{e}");
    assert_eq!(err.issues().len(), 5, "{err}");
}

#[test]
fn tenants_dir_that_does_not_exist_is_an_error_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, format!("tenants_dir = \"missing.d\"\n{BASE}")).unwrap();
    let err = Config::load(&path).unwrap_err();
    let issue = &err.issues()[0];
    assert_eq!((issue.line, issue.field.as_str()), (Some(1), "tenants_dir"), "{err}");
    assert!(issue.message.contains("missing.d"), "{issue}");
}

#[test]
fn disk_cache_keys_default_off_resolve_relative_and_hold_a_block() {
    let config = load(BASE).unwrap();
    assert_eq!(config.cache.disk_dir, None);
    assert_eq!(config.cache.disk_size, 10 << 30);
    let config = load(&format!(
        "[cache]\ndisk_dir = \"../dcache\"\ndisk_size = \"2GiB\"\n{BASE}"
    ))
    .unwrap();
    assert_eq!(config.cache.disk_dir, Some(PathBuf::from("/srv/dcache")));
    assert_eq!(config.cache.disk_size, 2 << 30);
    let text = format!("[cache]\nblock_size = \"1MiB\"\ndisk_dir = \"/d\"\ndisk_size = \"512KiB\"\n{BASE}");
    let i = issue(&text, "cache.disk_size");
    assert!(i.message.contains("at least one block"), "{i:?}");
    assert_eq!(i.line, Some(line_of(&text, "disk_size")));
}

#[test_case("cdn.example/files"; "no scheme")]
#[test_case("ftp://cdn.example/"; "scheme")]
#[test_case("https://cdn.example/files?sig=1"; "query")]
#[test_case("https://cdn.example/files#top"; "fragment")]
#[test_case("https://"; "no host")]
fn invalid_public_url_bases_name_file_and_line(base: &str) {
    // On a tenant.
    let text = format!("{BASE}public_url_base = {base:?}\n");
    let on_tenant = issue(&text, "tenants[0].public_url_base");
    assert!(
        on_tenant.message.contains("invalid public_url_base") && on_tenant.message.contains("http(s)://host"),
        "{on_tenant}"
    );
    assert_eq!(on_tenant.line, Some(line_of(&text, "public_url_base =")));
    assert!(
        on_tenant
            .to_string()
            .contains(&format!("config.toml:{}", on_tenant.line.unwrap())),
        "{on_tenant}"
    );
    // On a backend.
    let text = with(&s3_backend(
        "m",
        &format!("region = \"eu-west-1\"\nbucket = \"b\"\npublic_url_base = {base:?}"),
    ));
    let on_backend = issue(&text, "backends.m.public_url_base");
    assert!(on_backend.message.contains("invalid public_url_base"), "{on_backend}");
    assert_eq!(on_backend.line, Some(line_of(&text, "public_url_base =")));
}

#[test]
fn valid_public_url_bases_get_one_trailing_slash() {
    let text = format!(
        "{}\n[[tenants]]\nname = \"t\"\nbackend = \"m\"\npublic_url_base = \"https://t.example/v/\"\n",
        s3_backend(
            "m",
            "region = \"eu-west-1\"\nbucket = \"b\"\npublic_url_base = \"http://cdn.example:8080\""
        )
    );
    let config = load(&text).unwrap();
    let BackendConfig::S3(s3) = &config.backends["m"] else {
        panic!("expected s3");
    };
    assert_eq!(s3.public_url_base.as_deref(), Some("http://cdn.example:8080/"));
    assert_eq!(
        config.tenant("t").unwrap().web.public_url_base.as_deref(),
        Some("https://t.example/v/")
    );
}

// ---- webdav, azblob, gcs (OpenDAL backends) ----

fn load_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    for (k, v) in env {
        // Names unique to the test that uses them, so parallel tests do not interfere.
        std::env::set_var(k, v);
    }
    load(text)
}

#[test]
fn dal_backends_load_with_their_secrets_and_never_show_them() {
    let text = with(
        r#"
[backends.dav]
type = "webdav"
endpoint = "https://cloud.example.com/remote.php/dav/files/acme/"
username = "acme"
secrets = { env = { password = "BYOSFS_TEST_DAV_PW" } }

[backends.az]
type = "azblob"
account_name = "acct"
container = "media"
prefix = "p/"
secrets = { env = { sas_token = "BYOSFS_TEST_AZ_SAS" } }

[backends.g]
type = "gcs"
bucket = "b"
endpoint = "http://127.0.0.1:9023"

[[tenants]]
name = "dav"
backend = "dav"

[[tenants]]
name = "az"
backend = "az"
"#,
    );
    let c = load_env(
        &text,
        &[
            ("BYOSFS_TEST_DAV_PW", "pw-SECRET-1"),
            ("BYOSFS_TEST_AZ_SAS", "sig=SECRET-2"),
        ],
    )
    .unwrap();
    let BackendConfig::Dal(dav) = &c.backends["dav"] else {
        panic!()
    };
    assert_eq!(dav.secrets["password"].expose(), "pw-SECRET-1");
    assert_eq!(c.backends["az"].type_name(), "azblob");
    assert_eq!(c.backends["az"].prefix(), "p/");
    let az = c.tenants.iter().find(|t| t.name == "az").unwrap();
    assert_eq!(az.prefix, "p/");
    assert!(!format!("{c:?}").contains("SECRET"), "a secret in Debug");
}

#[test]
fn dal_backend_rules() {
    let text = with(
        r#"
[backends.dav]
type = "webdav"
bucket = "nope"
secrets = { env = { account_key = "X" } }

[backends.az]
type = "azblob"
container = "media"

[backends.g]
type = "gcs"
bucket = "b"
"#,
    );
    assert!(issue(&text, "backends.dav.endpoint").message.contains("missing"));
    assert!(issue(&text, "backends.dav.bucket")
        .message
        .contains("not valid for type = \"webdav\""));
    assert!(issue(&text, "backends.dav.secrets")
        .message
        .contains("unknown secret `account_key`"));
    assert!(issue(&text, "backends.az.account_name").message.contains("missing"));
    assert!(issue(&text, "backends.az.secrets").message.contains("exactly one of"));
    assert!(issue(&text, "backends.g.service_account_file")
        .message
        .contains("emulator"));
}

#[test]
fn dal_secrets_file_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("az.secrets");
    std::fs::write(&secrets, "account_key = \"c2VjcmV0\"\n").unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "{BASE}\n[backends.az]\ntype = \"azblob\"\naccount_name = \"a\"\ncontainer = \"c\"\nsecrets = {{ file = \"{}\" }}\n",
        secrets.display()
    );
    assert!(issue(&text, "backends.az.secrets").message.contains("chmod 600"));
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = load(&text).unwrap();
    let BackendConfig::Dal(az) = &c.backends["az"] else {
        panic!()
    };
    assert_eq!(az.secrets["account_key"].expose(), "c2VjcmV0");
}

#[test]
fn a_local_backend_takes_a_request_timeout_but_no_s3_keys() {
    let text = BASE.replace("root = \"./data\"", "root = \"./data\"\nrequest_timeout = \"5s\"");
    let BackendConfig::Local(local) = &load(&text).unwrap().backends["local"] else {
        panic!("expected local backend");
    };
    assert_eq!(local.request_timeout, Duration::from_secs(5));
    let zero = BASE.replace("root = \"./data\"", "root = \"./data\"\nrequest_timeout = \"0s\"");
    let found = issues(&zero);
    assert!(
        found.iter().any(|i| i.to_string().contains("request_timeout")),
        "{found:?}"
    );
    let s3_key = BASE.replace("root = \"./data\"", "root = \"./data\"\nconnect_timeout = \"5s\"");
    let found = issues(&s3_key);
    assert!(
        found
            .iter()
            .any(|i| i.to_string().contains("not valid for type = \"local\"")),
        "{found:?}"
    );
}

#[test]
fn gdrive_backend_takes_its_grant_and_a_root_folder() {
    let text = with(
        r#"
[backends.drive]
type = "gdrive"
root_folder = "/byosfs/media/"
secrets = { env = { client_id = "BYOSFS_TEST_GD_ID", client_secret = "BYOSFS_TEST_GD_SECRET", refresh_token = "BYOSFS_TEST_GD_REFRESH" } }

[[tenants]]
name = "d"
backend = "drive"
"#,
    );
    let c = load_env(
        &text,
        &[
            ("BYOSFS_TEST_GD_ID", "id.apps.googleusercontent.com"),
            ("BYOSFS_TEST_GD_SECRET", "client-SECRET-3"),
            ("BYOSFS_TEST_GD_REFRESH", "1//refresh-SECRET-4"),
        ],
    )
    .unwrap();
    let BackendConfig::Dal(d) = &c.backends["drive"] else {
        panic!()
    };
    assert_eq!(c.backends["drive"].type_name(), "gdrive");
    assert_eq!(d.container, "byosfs/media", "the root folder, without outer slashes");
    assert_eq!(d.secrets["refresh_token"].expose(), "1//refresh-SECRET-4");
    assert!(!format!("{c:?}").contains("SECRET"), "a secret in Debug");

    let bad = with(
        r#"
[backends.drive]
type = "gdrive"
root_folder = "a//b"
bucket = "x"
secrets = { env = { client_id = "BYOSFS_TEST_GD_ID" } }
"#,
    );
    assert!(issue(&bad, "backends.drive.secrets").message.contains("refresh_token"));
    assert!(issue(&bad, "backends.drive.root_folder")
        .message
        .contains("folder path"));
    assert!(issue(&bad, "backends.drive.bucket")
        .message
        .contains("not valid for type = \"gdrive\""));
}
