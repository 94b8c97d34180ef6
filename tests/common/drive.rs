//! A Google Drive v3 contract server on 127.0.0.1: the subset of the API OpenDAL's `gdrive`
//! service calls, written from Google's public API reference, plus the OAuth token endpoint.
//!
//! - `POST /token` (grant_type=refresh_token; parameters in the form body or the query
//!   string): an access token valid for [`DriveServer::set_token_lifetime`] (default one
//!   hour), `expires_in` as configured; a revoked grant answers 400 `invalid_grant`, a wrong
//!   client 401 `invalid_client`, as Google does.
//! - Every `/drive/v3` and `/upload/drive/v3` request needs `Authorization: Bearer` with a
//!   live access token, else 401 `UNAUTHENTICATED`.
//! - `GET /drive/v3/files` with `q` (`name = | != | contains`, `mimeType = | !=`,
//!   `'ID' in parents`, `trashed = true|false`, joined by `and` / `or`, parentheses),
//!   `pageSize` (default 100, at most 1000), `pageToken`, `fields`, `orderBy`
//!   (`createdTime`, `modifiedTime`, `name`, `folder`, each optionally `desc`); without it,
//!   creation order. An unknown term is 400 `invalid` (as Drive rejects a query it cannot parse).
//! - `GET /drive/v3/files/ID[?fields]`; `?alt=media` with `Range` (206, 416; 403
//!   `fileNotDownloadable` for Google-native documents and folders).
//! - `POST /drive/v3/files` (metadata only: folders, empty files), `POST
//!   /upload/drive/v3/files?uploadType=multipart` (metadata part + content part),
//!   `PATCH /upload/drive/v3/files/ID?uploadType=media` (new content), `PATCH
//!   /drive/v3/files/ID` (`name`, `trashed`; parents move only by the `addParents` /
//!   `removeParents` query parameters, as in v3), `POST /drive/v3/files/ID/copy`
//!   (files only), `DELETE /drive/v3/files/ID` (permanent, 204).
//!
//! `root` is the alias of My Drive's root folder. Names may repeat in a folder.
//! Runs on its own runtime in a thread; stopped on drop (the runtime is dropped).

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use byosfs::backend::dal::{DalConfig, DalSecrets, DalService};
use byosfs::secret::Secret;

/// The OAuth client the server accepts.
pub const CLIENT_ID: &str = "byosfs-test.apps.googleusercontent.com";
/// Its client secret.
pub const CLIENT_SECRET: &str = "contract-client-secret";
/// The refresh token (grant) the server accepts until [`DriveServer::revoke`].
pub const REFRESH_TOKEN: &str = "1//contract-refresh-token";
/// MIME type of folders.
pub const FOLDER: &str = "application/vnd.google-apps.folder";
/// Id of My Drive's root folder (`root` is its alias).
const ROOT_ID: &str = "0AROOTFOLDER";
/// Largest request body accepted (a test server: bounded).
const MAX_BODY: usize = 512 << 20;

/// One Drive file or folder.
#[derive(Debug, Clone)]
struct File {
    id: String,
    name: String,
    mime: String,
    parents: Vec<String>,
    trashed: bool,
    data: Bytes,
    modified: SystemTime,
    order: u64,
}

/// Counters a test can assert on.
#[derive(Debug, Default, Clone, Copy)]
pub struct DriveCounters {
    /// Access tokens issued.
    pub tokens_issued: u64,
    /// API requests answered 401.
    pub unauthorized: u64,
    /// API requests answered.
    pub requests: u64,
}

#[derive(Debug)]
struct State {
    files: HashMap<String, File>,
    next: u64,
    tokens: HashMap<String, Instant>,
    lifetime: Duration,
    advertised: Duration,
    revoked: bool,
    counters: DriveCounters,
}

type Shared = Arc<Mutex<State>>;

/// A running contract server; stopped on drop.
#[derive(Debug)]
pub struct DriveServer {
    /// Base URL (`http://127.0.0.1:PORT`), the backend's `endpoint`.
    pub endpoint: String,
    state: Shared,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DriveServer {
    /// Start a server with an empty My Drive.
    pub fn start() -> DriveServer {
        let mut files = HashMap::new();
        files.insert(
            ROOT_ID.to_owned(),
            File {
                id: ROOT_ID.to_owned(),
                name: "My Drive".to_owned(),
                mime: FOLDER.to_owned(),
                parents: vec![],
                trashed: false,
                data: Bytes::new(),
                modified: SystemTime::now(),
                order: 0,
            },
        );
        let state = Arc::new(Mutex::new(State {
            files,
            next: 1,
            tokens: HashMap::new(),
            lifetime: Duration::from_secs(3600),
            advertised: Duration::from_secs(3600),
            revoked: false,
            counters: DriveCounters::default(),
        }));
        let listener = StdListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let (tx, rx) = oneshot::channel();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("drive-contract-server".to_owned())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("server runtime");
                rt.block_on(serve(listener, st, rx));
                rt.shutdown_background();
            })
            .expect("spawn server thread");
        DriveServer {
            endpoint,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Access tokens issued from now on live `lifetime`; the token endpoint announces
    /// `expires_in = advertised` (Google may end a token before it says: revocation, rotation).
    pub fn set_token_lifetime(&self, lifetime: Duration, advertised: Duration) {
        let mut s = self.state.lock().unwrap();
        s.lifetime = lifetime;
        s.advertised = advertised;
    }

    /// Revoke the grant: the refresh token and every access token stop working.
    pub fn revoke(&self) {
        let mut s = self.state.lock().unwrap();
        s.revoked = true;
        s.tokens.clear();
    }

    /// The counters so far.
    pub fn counters(&self) -> DriveCounters {
        self.state.lock().unwrap().counters
    }

    /// Create a file as another Drive client would (names may repeat): in the folder at
    /// `folder` ("" for My Drive; created as needed), of MIME type `mime`. Returns its id.
    pub fn create(&self, folder: &str, name: &str, mime: &str, data: &[u8]) -> String {
        let mut s = self.state.lock().unwrap();
        let mut parent = ROOT_ID.to_owned();
        for seg in folder.split('/').filter(|x| !x.is_empty()) {
            let found = s
                .files
                .values()
                .find(|f| f.name == seg && f.mime == FOLDER && !f.trashed && f.parents.contains(&parent))
                .map(|f| f.id.clone());
            parent = match found {
                Some(id) => id,
                None => s.insert(seg, FOLDER, &parent, Bytes::new()),
            };
        }
        s.insert(name, mime, &parent, Bytes::copy_from_slice(data))
    }

    /// The contents of every untrashed file called `name`, in creation order.
    pub fn contents_named(&self, name: &str) -> Vec<Vec<u8>> {
        let s = self.state.lock().unwrap();
        let mut v: Vec<&File> = s.files.values().filter(|f| f.name == name && !f.trashed).collect();
        v.sort_by_key(|f| f.order);
        v.iter().map(|f| f.data.to_vec()).collect()
    }

    /// Names of the trashed files.
    pub fn trashed(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.files.values().filter(|f| f.trashed).map(|f| f.name.clone()).collect()
    }

    /// Backend settings for this server (endpoint override, the test grant).
    pub fn config(&self, root_folder: &str) -> DalConfig {
        let mut secrets = DalSecrets::default();
        secrets.client_secret = Some(Secret::new(CLIENT_SECRET));
        secrets.refresh_token = Some(Secret::new(REFRESH_TOKEN));
        DalConfig::new(DalService::Gdrive)
            .with_endpoint(self.endpoint.clone())
            .with_container(root_folder)
            .with_account(CLIENT_ID)
            .with_secrets(secrets)
    }

    /// A `[backends.NAME]` table for this server and the environment it reads secrets from.
    pub fn backend_toml(&self, name: &str) -> (String, Vec<(&'static str, &'static str)>) {
        (
            format!(
                "[backends.{name}]\ntype = \"gdrive\"\nendpoint = \"{}\"\nroot_folder = \"byosfs\"\n\
                 secrets = {{ env = {{ client_id = \"GD_ID\", client_secret = \"GD_SECRET\", \
                 refresh_token = \"GD_REFRESH\" }} }}\n",
                self.endpoint
            ),
            vec![
                ("GD_ID", CLIENT_ID),
                ("GD_SECRET", CLIENT_SECRET),
                ("GD_REFRESH", REFRESH_TOKEN),
            ],
        )
    }
}

impl Drop for DriveServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl State {
    fn insert(&mut self, name: &str, mime: &str, parent: &str, data: Bytes) -> String {
        let order = self.next;
        self.next += 1;
        let id = format!("1id{order:08}");
        self.files.insert(
            id.clone(),
            File {
                id: id.clone(),
                name: name.to_owned(),
                mime: mime.to_owned(),
                parents: vec![parent.to_owned()],
                trashed: false,
                data,
                modified: SystemTime::now(),
                order,
            },
        );
        id
    }

    /// The id `id` stands for (`root` is an alias).
    fn resolve<'a>(&self, id: &'a str) -> &'a str {
        if id == "root" {
            ROOT_ID
        } else {
            id
        }
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, body: Value) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json; charset=UTF-8".parse().unwrap());
    r
}

/// Drive's error shape.
fn error(status: StatusCode, reason: &str, message: &str) -> Answer {
    answer(
        status,
        json!({"error": {"code": status.as_u16(), "message": message,
                         "errors": [{"domain": "global", "reason": reason, "message": message}]}}),
    )
}

fn not_found(id: &str) -> Answer {
    error(StatusCode::NOT_FOUND, "notFound", &format!("File not found: {id}."))
}

async fn serve(listener: StdListener, state: Shared, mut stop: oneshot::Receiver<()>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let state = state.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return Ok::<_, std::convert::Infallible>(error(StatusCode::BAD_REQUEST, "badRequest", "body"))
                }
            };
            Ok(handle(&state, Request::from_parts(parts, body)))
        }
    });
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let socket = tokio::select! {
            res = listener.accept() => match res {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = &mut stop => break,
        };
        let _ = socket.set_nodelay(true);
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// Decoded query parameters (`+` is a space, as Google reads query strings).
fn params(query: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        out.insert(dec(k), dec(v));
    }
    out
}

fn handle(state: &Shared, req: Request<Bytes>) -> Answer {
    let path = req.uri().path().to_owned();
    let q = params(req.uri().query());
    let mut s = state.lock().unwrap();
    if path == "/token" && req.method() == Method::POST {
        return token(&mut s, &q, req.body());
    }
    s.counters.requests += 1;
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let live = s.tokens.get(auth).is_some_and(|until| Instant::now() < *until);
    if !live {
        s.counters.unauthorized += 1;
        let mut r = answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"code": 401, "status": "UNAUTHENTICATED",
                   "message": "Request had invalid authentication credentials. Expected OAuth 2 access token.",
                   "errors": [{"domain": "global", "reason": "authError", "location": "Authorization"}]}}),
        );
        r.headers_mut().insert(
            "www-authenticate",
            "Bearer realm=\"https://accounts.google.com/\"".parse().unwrap(),
        );
        return r;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let m = req.method().clone();
    match segs.as_slice() {
        ["drive", "v3", "files"] if m == Method::GET => list(&s, &q),
        ["drive", "v3", "files"] if m == Method::POST => create_json(&mut s, req.body(), &q),
        ["drive", "v3", "files", id] if m == Method::GET => get(&s, id, &q, &req),
        ["drive", "v3", "files", id] if m == Method::PATCH => update(&mut s, id, req.body(), &q),
        ["drive", "v3", "files", id] if m == Method::DELETE => delete(&mut s, id),
        ["drive", "v3", "files", id, "copy"] if m == Method::POST => copy(&mut s, id, req.body(), &q),
        ["upload", "drive", "v3", "files"] if m == Method::POST => upload_create(&mut s, &req, &q),
        ["upload", "drive", "v3", "files", id] if m == Method::PATCH => upload_update(&mut s, id, &req, &q),
        _ => error(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("no such method: {m} {path}"),
        ),
    }
}

fn token(s: &mut State, q: &HashMap<String, String>, body: &Bytes) -> Answer {
    // Google takes the parameters from the form body; OpenDAL sends them in the query.
    let mut p = params(Some(&String::from_utf8_lossy(body)));
    for (k, v) in q {
        p.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    if get("grant_type") != "refresh_token" {
        return answer(StatusCode::BAD_REQUEST, json!({"error": "unsupported_grant_type"}));
    }
    if get("client_id") != CLIENT_ID || get("client_secret") != CLIENT_SECRET {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "The OAuth client was not found."}),
        );
    }
    if s.revoked || get("refresh_token") != REFRESH_TOKEN {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}),
        );
    }
    s.counters.tokens_issued += 1;
    let token = format!("ya29.contract-{}", s.counters.tokens_issued);
    let until = Instant::now() + s.lifetime;
    s.tokens.retain(|_, t| *t > Instant::now());
    s.tokens.insert(token.clone(), until);
    answer(
        StatusCode::OK,
        json!({"access_token": token, "expires_in": s.advertised.as_secs(), "token_type": "Bearer",
               "scope": "https://www.googleapis.com/auth/drive"}),
    )
}

/// RFC 3339 UTC with milliseconds, as Drive writes `modifiedTime`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Whether files have bytes (folders and Google-native documents have none).
fn binary(f: &File) -> bool {
    !f.mime.starts_with("application/vnd.google-apps.")
}

/// The fields a `fields` parameter selects (inside `files(...)` for lists); `None`: Drive's
/// default (`kind, id, name, mimeType`).
fn selected(fields: Option<&String>, list: bool) -> Option<Vec<String>> {
    let f = fields?;
    let inner = if list {
        let start = f.find("files(")? + "files(".len();
        let end = f[start..].find(')')? + start;
        &f[start..end]
    } else {
        f.as_str()
    };
    if inner.trim() == "*" {
        return None;
    }
    Some(inner.split(',').map(|x| x.trim().to_owned()).collect())
}

fn resource(f: &File, fields: &Option<Vec<String>>) -> Value {
    let all = json!({
        "kind": "drive#file", "id": f.id, "name": f.name, "mimeType": f.mime,
        "parents": f.parents, "trashed": f.trashed, "modifiedTime": rfc3339(f.modified),
        "size": binary(f).then(|| f.data.len().to_string()),
    });
    let keys: Vec<String> = match fields {
        Some(v) => v.clone(),
        None => vec!["kind".into(), "id".into(), "name".into(), "mimeType".into()],
    };
    let mut out = serde_json::Map::new();
    for k in keys {
        if let Some(v) = all.get(&k).filter(|v| !v.is_null()) {
            out.insert(k, v.clone());
        }
    }
    Value::Object(out)
}

fn list(s: &State, q: &HashMap<String, String>) -> Answer {
    let filter = match q.get("q").map(|x| query::parse(x)).transpose() {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid", &format!("Invalid Value: q ({e})")),
    };
    let size: usize = q
        .get("pageSize")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let from: usize = match q.get("pageToken").map(|t| t.parse()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "invalid", "Invalid Value: pageToken"),
    };
    let mut hits: Vec<&File> = s
        .files
        .values()
        .filter(|f| f.id != ROOT_ID)
        .filter(|f| {
            filter
                .as_ref()
                .is_none_or(|e| e.eval(f, &|id| s.resolve(id).to_owned()))
        })
        .collect();
    hits.sort_by_key(|f| f.order);
    if let Some(order) = q.get("orderBy") {
        let mut keys = Vec::new();
        for k in order.split(',') {
            let mut w = k.split_whitespace();
            let (field, desc) = (w.next().unwrap_or(""), w.next() == Some("desc"));
            match field {
                "createdTime" | "modifiedTime" | "name" | "folder" => keys.push((field.to_owned(), desc)),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        &format!("Invalid Value: orderBy {k}"),
                    )
                }
            }
        }
        hits.sort_by(|a, b| {
            for (field, desc) in &keys {
                let o = match field.as_str() {
                    "createdTime" => a.order.cmp(&b.order),
                    "modifiedTime" => a.modified.cmp(&b.modified),
                    "name" => a.name.cmp(&b.name),
                    _ => (b.mime == FOLDER).cmp(&(a.mime == FOLDER)),
                };
                let o = if *desc { o.reverse() } else { o };
                if o.is_ne() {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    let fields = selected(q.get("fields"), true);
    let page: Vec<Value> = hits
        .iter()
        .skip(from)
        .take(size)
        .map(|f| resource(f, &fields))
        .collect();
    let mut body = json!({"kind": "drive#fileList", "incompleteSearch": false, "files": page});
    if from + size < hits.len() {
        body["nextPageToken"] = json!((from + size).to_string());
    }
    answer(StatusCode::OK, body)
}

fn get(s: &State, id: &str, q: &HashMap<String, String>, req: &Request<Bytes>) -> Answer {
    let Some(f) = s.files.get(s.resolve(id)) else {
        return not_found(id);
    };
    if q.get("alt").map(String::as_str) != Some("media") {
        return answer(StatusCode::OK, resource(f, &selected(q.get("fields"), false)));
    }
    if !binary(f) {
        return error(
            StatusCode::FORBIDDEN,
            "fileNotDownloadable",
            "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
        );
    }
    let len = f.data.len() as u64;
    let range = req.headers().get("range").and_then(|v| v.to_str().ok());
    let Some(range) = range else {
        return media(StatusCode::OK, f.data.clone(), None);
    };
    let Some((a, b)) = range.strip_prefix("bytes=").and_then(|r| r.split_once('-')) else {
        return media(StatusCode::OK, f.data.clone(), None);
    };
    let (start, end) = match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (Some(a), Some(b)) => (a, b.min(len.saturating_sub(1))),
        (Some(a), None) => (a, len.saturating_sub(1)),
        (None, Some(n)) => (len.saturating_sub(n), len.saturating_sub(1)),
        (None, None) => return error(StatusCode::BAD_REQUEST, "badRequest", "bad Range"),
    };
    if start >= len || start > end {
        let mut r = error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "requestedRangeNotSatisfiable",
            "range",
        );
        r.headers_mut()
            .insert("content-range", format!("bytes */{len}").parse().unwrap());
        return r;
    }
    let part = f.data.slice(start as usize..=end as usize);
    media(
        StatusCode::PARTIAL_CONTENT,
        part,
        Some(format!("bytes {start}-{end}/{len}")),
    )
}

fn media(status: StatusCode, data: Bytes, range: Option<String>) -> Answer {
    let mut r = Response::new(Full::new(data));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/octet-stream".parse().unwrap());
    if let Some(cr) = range {
        r.headers_mut().insert("content-range", cr.parse().unwrap());
    }
    r
}

/// Parents named in a new file's metadata (default My Drive), each an existing folder.
fn parents_of(s: &State, meta: &Value) -> Result<String, Box<Answer>> {
    let parent = match meta.get("parents").and_then(Value::as_array) {
        Some(p) if p.len() > 1 => {
            return Err(Box::new(error(
                StatusCode::FORBIDDEN,
                "cannotAddParent",
                "A file can have only one parent.",
            )))
        }
        Some(p) => p.first().and_then(Value::as_str).unwrap_or("root"),
        None => "root",
    };
    let id = s.resolve(parent);
    match s.files.get(id) {
        Some(f) if f.mime == FOLDER => Ok(id.to_owned()),
        _ => Err(Box::new(not_found(parent))),
    }
}

fn new_file(s: &mut State, meta: &Value, data: Bytes, q: &HashMap<String, String>) -> Answer {
    let parent = match parents_of(s, meta) {
        Ok(p) => p,
        Err(a) => return *a,
    };
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("Untitled")
        .to_owned();
    let mime = meta
        .get("mimeType")
        .and_then(Value::as_str)
        .unwrap_or("application/octet-stream")
        .to_owned();
    if mime == FOLDER && !data.is_empty() {
        return error(StatusCode::BAD_REQUEST, "badContent", "A folder has no content.");
    }
    let id = s.insert(&name, &mime, &parent, data);
    answer(
        StatusCode::OK,
        resource(&s.files[&id], &selected(q.get("fields"), false)),
    )
}

fn create_json(s: &mut State, body: &Bytes, q: &HashMap<String, String>) -> Answer {
    let meta: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, "parseError", &format!("Parse Error: {e}")),
        }
    };
    new_file(s, &meta, Bytes::new(), q)
}

/// The parts of a `multipart/related` (or `form-data`) body.
fn multipart(req: &Request<Bytes>) -> Option<Vec<Bytes>> {
    let ct = req.headers().get("content-type")?.to_str().ok()?;
    let boundary = ct
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let body = req.body();
    let delim = format!("--{boundary}");
    let text = body.as_ref();
    let mut parts = Vec::new();
    let mut pos = find(text, delim.as_bytes(), 0)?;
    loop {
        let after = pos + delim.len();
        if text.get(after..after + 2) == Some(b"--") {
            return Some(parts);
        }
        let head_end = find(text, b"\r\n\r\n", after)? + 4;
        let next = find(text, format!("\r\n{delim}").as_bytes(), head_end)?;
        parts.push(body.slice(head_end..next));
        pos = next + 2;
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

fn upload_create(s: &mut State, req: &Request<Bytes>, q: &HashMap<String, String>) -> Answer {
    match q.get("uploadType").map(String::as_str) {
        Some("multipart") => {
            let Some(parts) = multipart(req).filter(|p| p.len() == 2) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "badContent",
                    "Expected a metadata part and a media part.",
                );
            };
            let meta: Value = match serde_json::from_slice(&parts[0]) {
                Ok(v) => v,
                Err(e) => return error(StatusCode::BAD_REQUEST, "parseError", &format!("Parse Error: {e}")),
            };
            new_file(s, &meta, parts[1].clone(), q)
        }
        Some("media") => new_file(s, &json!({}), req.body().clone(), q),
        other => error(
            StatusCode::BAD_REQUEST,
            "invalid",
            &format!("Invalid Value: uploadType {other:?} (this server: multipart, media)"),
        ),
    }
}

fn upload_update(s: &mut State, id: &str, req: &Request<Bytes>, q: &HashMap<String, String>) -> Answer {
    if q.get("uploadType").map(String::as_str) != Some("media") {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Invalid Value: uploadType (this server: media)",
        );
    }
    let id = s.resolve(id).to_owned();
    let Some(f) = s.files.get_mut(&id) else {
        return not_found(&id);
    };
    if !binary(f) {
        return error(
            StatusCode::FORBIDDEN,
            "fileNotDownloadable",
            "Cannot upload content to this file.",
        );
    }
    f.data = req.body().clone();
    f.modified = SystemTime::now();
    answer(StatusCode::OK, resource(f, &selected(q.get("fields"), false)))
}

fn update(s: &mut State, id: &str, body: &Bytes, q: &HashMap<String, String>) -> Answer {
    let meta: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, "parseError", &format!("Parse Error: {e}")),
        }
    };
    let id = s.resolve(id).to_owned();
    let add = q.get("addParents").map(|p| s.resolve(p).to_owned());
    if let Some(p) = &add {
        if s.files.get(p).is_none_or(|f| f.mime != FOLDER) {
            return not_found(p);
        }
    }
    let remove = q.get("removeParents").map(|p| s.resolve(p).to_owned());
    let Some(f) = s.files.get_mut(&id) else {
        return not_found(&id);
    };
    if let Some(name) = meta.get("name").and_then(Value::as_str) {
        f.name = name.to_owned();
    }
    if let Some(t) = meta.get("trashed").and_then(Value::as_bool) {
        f.trashed = t;
    }
    if let Some(r) = remove {
        f.parents.retain(|p| *p != r);
    }
    if let Some(a) = add {
        f.parents.push(a);
    }
    f.modified = SystemTime::now();
    let trashed = f.trashed;
    let out = resource(f, &selected(q.get("fields"), false));
    if trashed && s.files[&id].mime == FOLDER {
        // Trashing a folder trashes what it holds.
        let mut todo = vec![id.clone()];
        while let Some(dir) = todo.pop() {
            for f in s.files.values_mut().filter(|f| f.parents.contains(&dir)) {
                f.trashed = true;
                if f.mime == FOLDER {
                    todo.push(f.id.clone());
                }
            }
        }
    }
    answer(StatusCode::OK, out)
}

fn delete(s: &mut State, id: &str) -> Answer {
    let id = s.resolve(id).to_owned();
    if s.files.remove(&id).is_none() {
        return not_found(&id);
    }
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

fn copy(s: &mut State, id: &str, body: &Bytes, q: &HashMap<String, String>) -> Answer {
    let meta: Value = serde_json::from_slice(body).unwrap_or_else(|_| json!({}));
    let id = s.resolve(id).to_owned();
    let Some(src) = s.files.get(&id).cloned() else {
        return not_found(&id);
    };
    if src.mime == FOLDER {
        return error(
            StatusCode::FORBIDDEN,
            "cannotCopyFile",
            "This file cannot be copied by the user.",
        );
    }
    let mut meta = meta;
    if meta.get("name").is_none() {
        meta["name"] = json!(format!("Copy of {}", src.name));
    }
    meta["mimeType"] = json!(src.mime);
    new_file(s, &meta, src.data.clone(), q)
}

/// Drive's query language, the part the server answers.
mod query {
    use super::File;

    /// A parsed `q`.
    #[derive(Debug)]
    pub enum Expr {
        And(Vec<Expr>),
        Or(Vec<Expr>),
        Name(&'static str, String),
        Mime(bool, String),
        InParents(String),
        Trashed(bool),
    }

    impl Expr {
        pub fn eval(&self, f: &File, resolve: &dyn Fn(&str) -> String) -> bool {
            match self {
                Expr::And(v) => v.iter().all(|e| e.eval(f, resolve)),
                Expr::Or(v) => v.iter().any(|e| e.eval(f, resolve)),
                Expr::Name("=", n) => f.name == *n,
                Expr::Name("!=", n) => f.name != *n,
                Expr::Name(_, n) => f.name.contains(n.as_str()),
                Expr::Mime(eq, m) => (f.mime == *m) == *eq,
                Expr::InParents(id) => f.parents.contains(&resolve(id)),
                Expr::Trashed(t) => f.trashed == *t,
            }
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Str(String),
        Word(String),
        Open,
        Close,
    }

    fn lex(q: &str) -> Result<Vec<Tok>, String> {
        let mut out = Vec::new();
        let mut it = q.chars().peekable();
        while let Some(&c) = it.peek() {
            match c {
                ' ' | '\t' | '\n' => {
                    it.next();
                }
                '(' | ')' => {
                    it.next();
                    out.push(if c == '(' { Tok::Open } else { Tok::Close });
                }
                '\'' => {
                    it.next();
                    let mut s = String::new();
                    loop {
                        match it.next() {
                            Some('\\') => s.push(it.next().ok_or("dangling escape")?),
                            Some('\'') => break,
                            Some(c) => s.push(c),
                            None => return Err("unterminated string".into()),
                        }
                    }
                    out.push(Tok::Str(s));
                }
                _ => {
                    let mut w = String::new();
                    while let Some(&c) = it.peek() {
                        if c.is_whitespace() || c == '(' || c == ')' || c == '\'' {
                            break;
                        }
                        w.push(c);
                        it.next();
                    }
                    out.push(Tok::Word(w));
                }
            }
        }
        Ok(out)
    }

    pub fn parse(q: &str) -> Result<Expr, String> {
        let toks = lex(q)?;
        let mut pos = 0;
        let e = or(&toks, &mut pos)?;
        if pos != toks.len() {
            return Err(format!("unexpected {:?}", toks[pos]));
        }
        Ok(e)
    }

    fn word(t: Option<&Tok>, w: &str) -> bool {
        matches!(t, Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn or(t: &[Tok], pos: &mut usize) -> Result<Expr, String> {
        let mut v = vec![and(t, pos)?];
        while word(t.get(*pos), "or") {
            *pos += 1;
            v.push(and(t, pos)?);
        }
        Ok(if v.len() == 1 { v.remove(0) } else { Expr::Or(v) })
    }

    fn and(t: &[Tok], pos: &mut usize) -> Result<Expr, String> {
        let mut v = vec![term(t, pos)?];
        while word(t.get(*pos), "and") {
            *pos += 1;
            v.push(term(t, pos)?);
        }
        Ok(if v.len() == 1 { v.remove(0) } else { Expr::And(v) })
    }

    fn term(t: &[Tok], pos: &mut usize) -> Result<Expr, String> {
        let at = |i: usize| t.get(*pos + i);
        if at(0) == Some(&Tok::Open) {
            *pos += 1;
            let e = or(t, pos)?;
            if t.get(*pos) != Some(&Tok::Close) {
                return Err("missing )".into());
            }
            *pos += 1;
            return Ok(e);
        }
        let (a, b, c) = (at(0).cloned(), at(1).cloned(), at(2).cloned());
        *pos += 3;
        match (a, b, c) {
            (Some(Tok::Str(id)), Some(Tok::Word(op)), Some(Tok::Word(f))) if op == "in" && f == "parents" => {
                Ok(Expr::InParents(id))
            }
            (Some(Tok::Word(f)), Some(Tok::Word(op)), Some(Tok::Str(v))) if f == "name" => match op.as_str() {
                "=" => Ok(Expr::Name("=", v)),
                "!=" => Ok(Expr::Name("!=", v)),
                "contains" => Ok(Expr::Name("contains", v)),
                _ => Err(format!("name {op}")),
            },
            (Some(Tok::Word(f)), Some(Tok::Word(op)), Some(Tok::Str(v))) if f == "mimeType" => match op.as_str() {
                "=" => Ok(Expr::Mime(true, v)),
                "!=" => Ok(Expr::Mime(false, v)),
                _ => Err(format!("mimeType {op}")),
            },
            (Some(Tok::Word(f)), Some(Tok::Word(op)), Some(Tok::Word(v))) if f == "trashed" && op == "=" => {
                match v.as_str() {
                    "true" => Ok(Expr::Trashed(true)),
                    "false" => Ok(Expr::Trashed(false)),
                    _ => Err(format!("trashed = {v}")),
                }
            }
            other => Err(format!("unsupported term {other:?}")),
        }
    }
}

/// The server's own pure parts (queries, dates), checked by a test that uses the server.
pub fn self_check() {
    let e = query::parse(r"name = 'it\'s' and 'root' in parents and trashed = false").unwrap();
    let f = File {
        id: "x".into(),
        name: "it's".into(),
        mime: "text/plain".into(),
        parents: vec![ROOT_ID.into()],
        trashed: false,
        data: Bytes::new(),
        modified: SystemTime::now(),
        order: 1,
    };
    let resolve = |id: &str| {
        if id == "root" {
            ROOT_ID.to_owned()
        } else {
            id.to_owned()
        }
    };
    assert!(e.eval(&f, &resolve));
    let e = query::parse("('a' in parents or 'root' in parents) and mimeType != 'x'").unwrap();
    assert!(e.eval(&f, &resolve));
    assert!(
        query::parse("modifiedTime > '2020'").is_err(),
        "unknown terms are refused"
    );
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_123)),
        "2000-02-29T00:00:00.123Z"
    );
}
