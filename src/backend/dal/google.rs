//! Google Drive's HTTP path: OpenDAL's `gdrive` service sends every request through the
//! [`DriveTransport`] installed here, which adds what the service lacks.
//!
//! - **Refresh on 401.** OpenDAL's signer refreshes its access token only by the clock
//!   (`expires_in` minus two minutes) and answers a 401 as a plain error. Google also ends
//!   tokens early (password change, revoked grant, a server-side rotation), so on a 401 this
//!   transport gets a new access token itself, retries the request once with it, and from then
//!   on substitutes it for the stale one on every request the signer still signs with that one
//!   (until the signer's own refresh replaces it). Bodies are whole [`Buffer`]s, so the retry
//!   resends exactly the same request. This is authentication, not error retry: the one retry
//!   place stays `backend/retry.rs`.
//! - **Listings shaped for OpenDAL.** `files.list` requests get `orderBy=modifiedTime desc,
//!   createdTime desc` when they name no order: OpenDAL's path lookup resolves a name to the
//!   newest of its files and its lister emits only the first of repeated names, so with the
//!   same order both pick the same file (Drive's default order is unspecified). Repeated names
//!   in an answer are logged here, the one place that sees them. Google-native documents get
//!   `size: "0"` in metadata answers: Drive reports no size for them, and OpenDAL's listing
//!   then stats each and fails the whole listing on the missing size; byosfs hides them by
//!   MIME type above (`list`).
//! - **Endpoint override** (`endpoint` in the config; for tests and proxies): the service
//!   hard-codes `https://www.googleapis.com` and `https://oauth2.googleapis.com`; both are
//!   rewritten to the configured base URL, so a contract server on loopback stands in for both.
//!
//! The refresh token and client secret go in the form body of this transport's own token
//! requests, never in a URL or a log line.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Buf as _;
use http::{header, Request, Response, StatusCode, Uri};
use opendal::{Buffer, HttpBody, HttpTransport, HttpTransporter};

use crate::secret::Secret;

/// Google's API host, as OpenDAL's gdrive service writes it.
const API_BASE: &str = "https://www.googleapis.com";
/// Google's OAuth host, as OpenDAL's gdrive service writes it.
const OAUTH_BASE: &str = "https://oauth2.googleapis.com";
/// Stale access tokens remembered for substitution: a few generations are in flight at most.
const STALE_KEPT: usize = 8;

/// The OAuth client and grant of one Drive tenant.
#[derive(Clone)]
pub(super) struct OAuthGrant {
    pub(super) client_id: String,
    pub(super) client_secret: Secret,
    pub(super) refresh_token: Secret,
}

/// Access tokens this transport obtained after a 401, and the ones they replace.
#[derive(Debug, Default)]
struct Tokens {
    current: Option<String>,
    stale: VecDeque<String>,
}

/// The HTTP transport of a Drive operator (see the module docs).
pub(super) struct DriveTransport {
    inner: HttpTransporter,
    base: Option<String>,
    grant: OAuthGrant,
    // Never held across an await: read or swapped between requests.
    tokens: Mutex<Tokens>,
    // Serialises refreshes so a burst of 401s costs one token request.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for DriveTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriveTransport")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl DriveTransport {
    /// Wrap `inner` (the previous transport); `base` replaces Google's hosts when set.
    pub(super) fn new(inner: HttpTransporter, base: Option<String>, grant: OAuthGrant) -> Self {
        Self {
            inner,
            base: base.map(|b| b.trim_end_matches('/').to_owned()),
            grant,
            tokens: Mutex::new(Tokens::default()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// `uri` with Google's hosts replaced by the configured base.
    fn rewrite(&self, uri: &Uri) -> opendal::Result<Uri> {
        let Some(base) = &self.base else { return Ok(uri.clone()) };
        let text = uri.to_string();
        let rest = [API_BASE, OAUTH_BASE].iter().find_map(|host| text.strip_prefix(host));
        match rest {
            Some(rest) => format!("{base}{rest}").parse().map_err(|e| {
                opendal::Error::new(
                    opendal::ErrorKind::ConfigInvalid,
                    "endpoint override gives an invalid URL",
                )
                .set_source(e)
            }),
            None => Ok(uri.clone()),
        }
    }

    /// The token endpoint's URL.
    fn token_url(&self) -> String {
        format!("{}/token", self.base.as_deref().unwrap_or(OAUTH_BASE))
    }

    /// Get a new access token with the refresh token. `Err` carries the token endpoint's
    /// answer (e.g. 400 `invalid_grant`: the grant was revoked), to be returned as is.
    async fn refresh(&self, used: Option<&str>) -> opendal::Result<Result<String, Response<HttpBody>>> {
        let _one = self.refreshing.lock().await;
        {
            let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            // Another request refreshed while this one waited.
            if let Some(cur) = &tokens.current {
                if used != Some(cur.as_str()) {
                    return Ok(Ok(cur.clone()));
                }
            }
        }
        let form = form_urlencoded(&[
            ("grant_type", "refresh_token"),
            ("client_id", &self.grant.client_id),
            ("client_secret", self.grant.client_secret.expose()),
            ("refresh_token", self.grant.refresh_token.expose()),
        ]);
        let req = Request::post(self.token_url())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Buffer::from(form))
            .map_err(|e| opendal::Error::new(opendal::ErrorKind::Unexpected, "token request").set_source(e))?;
        let resp = self.inner.fetch(req).await?;
        if resp.status() != StatusCode::OK {
            return Ok(Err(resp));
        }
        let (_, mut body) = resp.into_parts();
        let buf = body.to_buffer().await?;
        let token: TokenAnswer = serde_json::from_reader(buf.reader())
            .map_err(|e| opendal::Error::new(opendal::ErrorKind::Unexpected, "token endpoint answer").set_source(e))?;
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = used {
            if tokens.stale.len() == STALE_KEPT {
                tokens.stale.pop_front();
            }
            tokens.stale.push_back(old.to_owned());
        }
        tokens.current = Some(token.access_token.clone());
        Ok(Ok(token.access_token))
    }

    /// The replacement for `bearer` when it is known to be stale.
    fn replacement(&self, bearer: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.stale.iter().any(|s| s == bearer) {
            tokens.current.clone()
        } else {
            None
        }
    }
}

/// The part of the token endpoint's answer this transport uses.
#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
}

/// Drive's MIME type of folders.
const FOLDER: &str = "application/vnd.google-apps.folder";
/// The order listings are asked in (see the module docs).
const LIST_ORDER: &str = "orderBy=modifiedTime%20desc%2CcreatedTime%20desc";

/// Whether `uri` is a metadata request of `files.list` / `files.get` (not a download).
fn is_metadata(method: &http::Method, uri: &Uri) -> bool {
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    method == http::Method::GET
        && (path.ends_with("/drive/v3/files") || path.contains("/drive/v3/files/"))
        && !path.contains("/upload/drive/")
        && !query.contains("alt=media")
}

/// `uri` with the listing order added when it is a `files.list` naming none.
fn ordered(method: &http::Method, uri: &Uri) -> Option<Uri> {
    let query = uri.query()?;
    let path = uri.path();
    let list = method == http::Method::GET && path.ends_with("/drive/v3/files") && !path.contains("/upload/drive/");
    if !list || query.contains("orderBy=") {
        return None;
    }
    format!("{uri}&{LIST_ORDER}").parse().ok()
}

/// A metadata answer adapted for OpenDAL (sizes of native documents, see the module docs),
/// and the names it repeats within one folder. `None`: not JSON, passed on unchanged.
fn adapt_metadata(body: &[u8]) -> Option<(Vec<u8>, Vec<String>)> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut repeated = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let sized = |f: &mut serde_json::Value| {
        let native = f
            .get("mimeType")
            .and_then(|m| m.as_str())
            .is_some_and(|m| m.starts_with("application/vnd.google-apps.") && m != FOLDER);
        if let (true, Some(obj)) = (native, f.as_object_mut()) {
            obj.entry("size").or_insert_with(|| "0".into());
        }
    };
    match v.get_mut("files").and_then(|f| f.as_array_mut()) {
        Some(files) => {
            for f in files.iter_mut() {
                sized(f);
                let name = f.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_owned();
                let parent = f
                    .pointer("/parents/0")
                    .and_then(|p| p.as_str())
                    .unwrap_or_default()
                    .to_owned();
                let folder = f.get("mimeType").and_then(|m| m.as_str()) == Some(FOLDER);
                if !seen.insert((parent, name.clone(), folder)) {
                    repeated.push(name);
                }
            }
        }
        None => sized(&mut v),
    }
    Some((serde_json::to_vec(&v).ok()?, repeated))
}

/// The bearer token of a request's `Authorization` header.
fn bearer<T>(req: &Request<T>) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(str::to_owned)
}

fn set_bearer<T>(req: &mut Request<T>, token: &str) -> opendal::Result<()> {
    let mut v: header::HeaderValue = format!("Bearer {token}")
        .parse()
        .map_err(|e| opendal::Error::new(opendal::ErrorKind::Unexpected, "access token header").set_source(e))?;
    v.set_sensitive(true);
    req.headers_mut().insert(header::AUTHORIZATION, v);
    Ok(())
}

/// A copy of `req` (its body is a shared buffer, so this copies no bytes).
fn duplicate(req: &Request<Buffer>) -> Request<Buffer> {
    let mut out = Request::new(req.body().clone());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    *out.extensions_mut() = req.extensions().clone();
    out
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A metadata answer, read whole and adapted (see [`adapt_metadata`]).
async fn adapted(resp: Response<HttpBody>) -> opendal::Result<Response<HttpBody>> {
    let (mut parts, mut body) = resp.into_parts();
    let buf = body.to_buffer().await?.to_bytes();
    let out = match adapt_metadata(&buf) {
        Some((json, repeated)) => {
            for name in repeated {
                tracing::warn!(%name, "google drive: two entries of one folder share this name; showing one");
            }
            bytes::Bytes::from(json)
        }
        None => buf,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let len = out.len() as u64;
    let stream = futures::stream::iter([Ok(Buffer::from(out))]);
    Ok(Response::from_parts(parts, HttpBody::new(stream, Some(len))))
}

impl HttpTransport for DriveTransport {
    async fn fetch(&self, mut req: Request<Buffer>) -> opendal::Result<Response<HttpBody>> {
        let is_api = req.uri().to_string().starts_with(API_BASE);
        let uri = self.rewrite(req.uri())?;
        *req.uri_mut() = uri;
        if !is_api {
            // The signer's own token request, or anything else: passed through.
            return self.inner.fetch(req).await;
        }
        let mut used = bearer(&req);
        if let Some(fresh) = used.as_deref().and_then(|b| self.replacement(b)) {
            set_bearer(&mut req, &fresh)?;
            used = Some(fresh);
        }
        if let Some(uri) = ordered(req.method(), req.uri()) {
            *req.uri_mut() = uri;
        }
        let metadata = is_metadata(req.method(), req.uri());
        let again = duplicate(&req);
        let resp = self.inner.fetch(req).await?;
        if resp.status() == StatusCode::OK && metadata {
            return adapted(resp).await;
        }
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        drop(resp);
        tracing::info!("google drive answered 401: refreshing the access token");
        match self.refresh(used.as_deref()).await? {
            Ok(token) => {
                let mut again = again;
                set_bearer(&mut again, &token)?;
                let resp = self.inner.fetch(again).await?;
                if resp.status() == StatusCode::OK && metadata {
                    return adapted(resp).await;
                }
                Ok(resp)
            }
            // The grant itself was refused: that answer is the one to classify.
            Err(refused) => Ok(refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(base: Option<&str>) -> DriveTransport {
        DriveTransport::new(
            HttpTransporter::default(),
            base.map(str::to_owned),
            OAuthGrant {
                client_id: "id".to_owned(),
                client_secret: Secret::new("s"),
                refresh_token: Secret::new("r"),
            },
        )
    }

    #[test]
    fn both_google_hosts_go_to_the_override() {
        let t = transport(Some("http://127.0.0.1:9/"));
        let api: Uri = "https://www.googleapis.com/drive/v3/files?q=x".parse().unwrap();
        assert_eq!(
            t.rewrite(&api).unwrap().to_string(),
            "http://127.0.0.1:9/drive/v3/files?q=x"
        );
        let tok: Uri = "https://oauth2.googleapis.com/token?a=b".parse().unwrap();
        assert_eq!(t.rewrite(&tok).unwrap().to_string(), "http://127.0.0.1:9/token?a=b");
        assert_eq!(t.token_url(), "http://127.0.0.1:9/token");
        let none = transport(None);
        assert_eq!(none.rewrite(&api).unwrap(), api, "no override: untouched");
        assert_eq!(none.token_url(), "https://oauth2.googleapis.com/token");
    }

    #[test]
    fn only_stale_tokens_are_replaced() {
        let t = transport(None);
        {
            let mut tokens = t.tokens.lock().unwrap();
            tokens.stale.push_back("old".to_owned());
            tokens.current = Some("new".to_owned());
        }
        assert_eq!(t.replacement("old").as_deref(), Some("new"));
        assert_eq!(t.replacement("other"), None, "a token the signer renewed is kept");
    }

    #[test]
    fn listings_are_ordered_and_native_documents_sized() {
        let get = http::Method::GET;
        let list: Uri = "http://h/drive/v3/files?q=x&pageSize=100".parse().unwrap();
        assert!(ordered(&get, &list).unwrap().to_string().ends_with(LIST_ORDER));
        let named: Uri = "http://h/drive/v3/files?q=x&orderBy=name".parse().unwrap();
        assert_eq!(ordered(&get, &named), None, "an order asked for is kept");
        let upload: Uri = "http://h/upload/drive/v3/files?uploadType=multipart".parse().unwrap();
        assert_eq!(ordered(&http::Method::POST, &upload), None, "uploads are no listings");
        assert_eq!(ordered(&http::Method::POST, &list), None, "nor are creates");
        let get: Uri = "http://h/drive/v3/files/ID?alt=media".parse().unwrap();
        assert!(!is_metadata(&http::Method::GET, &get));
        assert!(is_metadata(&http::Method::GET, &list));
        let body = br#"{"files":[
            {"id":"1","name":"Plan","mimeType":"application/vnd.google-apps.document"},
            {"id":"2","name":"a","mimeType":"text/plain","size":"3"},
            {"id":"3","name":"a","mimeType":"text/plain","size":"4"},
            {"id":"4","name":"a","mimeType":"application/vnd.google-apps.folder"}]}"#;
        let (json, repeated) = adapt_metadata(body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["files"][0]["size"], "0");
        assert_eq!(v["files"][1]["size"], "3");
        assert!(v["files"][3].get("size").is_none(), "folders stay sizeless");
        assert_eq!(repeated, ["a"], "a file and a folder of one name are not a repeat");
        assert!(adapt_metadata(b"not json").is_none());
    }

    #[test]
    fn form_body_escapes_secrets() {
        assert_eq!(form_urlencoded(&[("a", "x/y+z"), ("b", "1")]), "a=x%2Fy%2Bz&b=1");
    }
}
