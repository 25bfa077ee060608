//! The HTTP side of the Hub: the revision API, `HEAD` on resolve URLs, ranged `GET`s, retries
//! and redirects.
//!
//! Like `huggingface_hub`, lgreg asks `HEAD /{repo}/resolve/{commit}/{file}` first, without
//! following redirects: the answer (or the 302 that sends an LFS file to the CDN) carries
//! `X-Repo-Commit`, the etag (`X-Linked-Etag` for LFS, else `ETag`) and the size
//! (`X-Linked-Size`, else `Content-Length`), which name the blob before a byte is fetched.
//! Redirects are followed by hand so that the token only ever goes to the endpoint's own origin,
//! never to the CDN.
//!
//! Each [`Client`] owns a single-threaded tokio runtime and drives reqwest's async client on the
//! calling thread: bodies arrive without a hop between threads per chunk, which is what
//! reqwest's blocking client costs (it measured at half of curl's loopback speed). The download
//! workers each make their own client.

use std::time::Duration;

use reqwest::header::{self, HeaderMap};
use reqwest::{Client as Http, RequestBuilder, Response};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use super::HubConfig;
use crate::error::{Error, Result};

/// The most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// A blocking Hub client over one endpoint.
#[derive(Debug)]
pub(crate) struct Client {
    rt: tokio::runtime::Runtime,
    http: Http,
    endpoint: Url,
    token: Option<String>,
    retries: u32,
    backoff: Duration,
}

/// `GET /api/models/{repo}/revision/{rev}?blobs=true`, the parts lgreg uses.
#[derive(Debug, Deserialize)]
pub(crate) struct RepoInfo {
    /// The commit the revision resolves to.
    pub sha: String,
    /// Every file in the repo at that commit.
    #[serde(default)]
    pub siblings: Vec<Sibling>,
}

/// One file of a repo.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Sibling {
    /// Its path in the repo.
    pub rfilename: String,
    /// Bytes (with `blobs=true`).
    #[serde(default)]
    pub size: Option<u64>,
    /// Its LFS pointer, when it is stored in LFS.
    #[serde(default)]
    pub lfs: Option<Lfs>,
}

/// An LFS pointer.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Lfs {
    /// The sha256 of the contents (the LFS oid).
    pub sha256: String,
}

/// What `HEAD` on a resolve URL says about one file.
#[derive(Debug, Clone)]
pub(crate) struct FileMeta {
    /// `X-Repo-Commit`.
    pub commit: String,
    /// The blob name in the cache.
    pub etag: String,
    /// Bytes.
    pub size: u64,
    /// Where to `GET` it (the CDN location for LFS files).
    pub url: Url,
}

/// What a request was about, to name it in an error.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub repo: &'a str,
    pub revision: &'a str,
    pub file: Option<&'a str>,
}

impl Client {
    pub(crate) fn new(cfg: &HubConfig) -> Result<Client> {
        // reqwest is built without a default crypto provider; ring is ours. A second install
        // (another client in this process) fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let endpoint =
            Url::parse(cfg.endpoint.trim_end_matches('/')).map_err(|e| Error::InvalidValue {
                what: "the Hub endpoint".into(),
                value: cfg.endpoint.clone(),
                reason: e.to_string(),
            })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Io)?;
        let http = Http::builder()
            .redirect(reqwest::redirect::Policy::none())
            .read_timeout(cfg.read_timeout)
            .connect_timeout(Duration::from_secs(20))
            .user_agent(concat!("lgreg/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::HubTransfer {
                url: endpoint.to_string(),
                reason: format!("could not start the HTTP client: {e}"),
            })?;
        Ok(Client {
            rt,
            http,
            endpoint,
            token: cfg.token.clone().filter(|t| !t.is_empty()),
            retries: cfg.retries,
            backoff: cfg.backoff,
        })
    }

    /// The endpoint, for messages.
    pub(crate) fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// Whether a token will be sent to the endpoint.
    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            for s in segments {
                path.extend(s.split('/'));
            }
        }
        url
    }

    /// Resolve `revision` to a commit and list the files.
    pub(crate) fn repo_info(&self, repo: &str, revision: &str) -> Result<RepoInfo> {
        let mut url = self.url(&["api", "models", repo, "revision"]);
        if let Ok(mut path) = url.path_segments_mut() {
            path.push(revision); // one segment: `refs/pr/1` is percent-encoded
        }
        url.set_query(Some("blobs=true"));
        let target = Target {
            repo,
            revision,
            file: None,
        };
        let resp = self.send(Method::GET, &url, None, true, target)?;
        let body = self
            .rt
            .block_on(resp.bytes())
            .map_err(|e| transfer(&url, &e))?;
        serde_json::from_slice(&body).map_err(|e| Error::HubProtocol {
            url: url.to_string(),
            reason: format!("the revision API did not return the expected JSON: {e}"),
        })
    }

    /// `HEAD` the resolve URL of `file` at `commit`.
    pub(crate) fn file_meta(&self, repo: &str, commit: &str, file: &str) -> Result<FileMeta> {
        let url = self.url(&[repo, "resolve", commit, file]);
        let target = Target {
            repo,
            revision: commit,
            file: Some(file),
        };
        let resp = self.send(Method::HEAD, &url, None, false, target)?;
        let h = resp.headers();
        let protocol = |reason: &str| Error::HubProtocol {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let commit = header_str(h, "x-repo-commit")
            .ok_or_else(|| protocol("no `X-Repo-Commit` header"))?
            .to_string();
        let etag = header_str(h, "x-linked-etag")
            .or_else(|| header_str(h, "etag"))
            .map(normalize_etag)
            .ok_or_else(|| protocol("no `ETag` or `X-Linked-Etag` header"))?;
        let size = header_str(h, "x-linked-size")
            .or_else(|| header_str(h, header::CONTENT_LENGTH.as_str()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| protocol("no `X-Linked-Size` or `Content-Length` header"))?;
        let download = if resp.status().is_redirection() {
            let loc =
                header_str(h, "location").ok_or_else(|| protocol("redirect without `Location`"))?;
            url.join(loc)
                .map_err(|e| protocol(&format!("bad `Location` `{loc}`: {e}")))?
        } else {
            url.clone()
        };
        Ok(FileMeta {
            commit,
            etag,
            size,
            url: download,
        })
    }

    /// `GET url`, from byte `offset` on when it is not 0; redirects followed.
    pub(crate) fn get_from(&self, url: &Url, offset: u64, target: Target<'_>) -> Result<Body<'_>> {
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        let resp = self.send(Method::GET, url, range.as_deref(), true, target)?;
        Ok(Body { client: self, resp })
    }

    /// Send with retries (5xx, 429, transport errors) and hand-followed redirects.
    fn send(
        &self,
        method: Method,
        url: &Url,
        range: Option<&str>,
        follow: bool,
        target: Target<'_>,
    ) -> Result<Response> {
        let mut attempt = 0;
        loop {
            let outcome = self
                .rt
                .block_on(self.send_once(method.clone(), url, range, follow));
            let retry_reason = match outcome {
                Ok(resp)
                    if resp.status().is_server_error()
                        || resp.status() == StatusCode::TOO_MANY_REQUESTS =>
                {
                    format!("HTTP {}", resp.status())
                }
                Ok(resp) if resp.status().is_client_error() => {
                    return Err(status_error(&resp, self, target));
                }
                Ok(resp) => return Ok(resp),
                Err(e) => e,
            };
            if attempt >= self.retries {
                return Err(Error::HubTransfer {
                    url: url.to_string(),
                    reason: format!("{retry_reason} (after {} attempts)", attempt + 1),
                });
            }
            self.sleep_backoff(attempt);
            attempt += 1;
        }
    }

    /// Sleep before retry number `attempt + 1`: backoff × 2^attempt, capped at 8 s.
    pub(crate) fn sleep_backoff(&self, attempt: u32) {
        let wait = self.backoff.saturating_mul(1 << attempt.min(10));
        std::thread::sleep(wait.min(Duration::from_secs(8)));
    }

    /// How many retries a transfer may make.
    pub(crate) fn retries(&self) -> u32 {
        self.retries
    }

    async fn send_once(
        &self,
        method: Method,
        url: &Url,
        range: Option<&str>,
        follow: bool,
    ) -> std::result::Result<Response, String> {
        let mut url = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut req: RequestBuilder = self
                .http
                .request(method.clone(), url.clone())
                .header(header::ACCEPT_ENCODING, "identity");
            if let Some(r) = range {
                req = req.header(header::RANGE, r);
            }
            if let Some(t) = &self.token
                && same_origin(&url, &self.endpoint)
            {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(|e| describe(&e))?;
            if !(follow && resp.status().is_redirection()) {
                return Ok(resp);
            }
            let Some(loc) = header_str(resp.headers(), "location") else {
                return Ok(resp);
            };
            url = url
                .join(loc)
                .map_err(|e| format!("bad redirect `{loc}`: {e}"))?;
        }
        Err(format!("more than {MAX_REDIRECTS} redirects"))
    }
}

/// A response body, read chunk by chunk on the client's runtime.
pub(crate) struct Body<'c> {
    client: &'c Client,
    resp: Response,
}

impl Body<'_> {
    /// The HTTP status.
    pub(crate) fn status(&self) -> u16 {
        self.resp.status().as_u16()
    }

    /// The next chunk; `Ok(None)` at the end; `Err` when the connection broke.
    pub(crate) fn chunk(&mut self) -> std::result::Result<Option<bytes::Bytes>, String> {
        self.client
            .rt
            .block_on(self.resp.chunk())
            .map_err(|e| describe(&e))
    }
}

/// Same scheme, host and port: the only place a token may go.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

fn header_str<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `W/"abc"` or `"abc"` → `abc`, as `huggingface_hub` stores it.
fn normalize_etag(raw: &str) -> String {
    raw.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// A transport error in words, with the source chain (reqwest hides the cause otherwise).
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        s.push_str(&format!(": {cause}"));
        src = cause.source();
    }
    s
}

pub(crate) fn transfer(url: &Url, e: &reqwest::Error) -> Error {
    Error::HubTransfer {
        url: url.to_string(),
        reason: describe(e),
    }
}

/// Map a 4xx answer to the error that names what was tried.
fn status_error(resp: &Response, client: &Client, t: Target<'_>) -> Error {
    let status = resp.status().as_u16();
    let code = header_str(resp.headers(), "x-error-code").unwrap_or("");
    let message = header_str(resp.headers(), "x-error-message").unwrap_or("");
    match (status, code) {
        (_, "RepoNotFound") => Error::RepoNotFound {
            repo: t.repo.into(),
            endpoint: client.endpoint().into(),
        },
        (_, "RevisionNotFound") => Error::RevisionNotFound {
            repo: t.repo.into(),
            revision: t.revision.into(),
        },
        (404, _) | (_, "EntryNotFound") => match t.file {
            Some(file) => Error::HubFileNotFound {
                repo: t.repo.into(),
                revision: t.revision.into(),
                file: file.into(),
            },
            None => Error::RevisionNotFound {
                repo: t.repo.into(),
                revision: t.revision.into(),
            },
        },
        (401 | 403, _) => {
            let mut detail = if client.has_token() {
                String::from("; a token was sent")
            } else {
                String::from("; no token was sent")
            };
            if code == "GatedRepo" {
                detail.push_str("; the repo is gated");
            }
            if !message.is_empty() {
                detail.push_str(&format!(": {message}"));
            }
            Error::HubAccessDenied {
                repo: t.repo.into(),
                status,
                detail,
            }
        }
        _ => Error::HubTransfer {
            url: resp.url().to_string(),
            reason: format!("HTTP {status}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_lose_quotes_and_weak_marks() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
    }

    #[test]
    fn token_stays_on_the_endpoint_origin() {
        let hub = Url::parse("http://127.0.0.1:8000/").unwrap();
        assert!(same_origin(
            &Url::parse("http://127.0.0.1:8000/a").unwrap(),
            &hub
        ));
        assert!(!same_origin(
            &Url::parse("http://127.0.0.2:8000/a").unwrap(),
            &hub
        ));
        assert!(!same_origin(
            &Url::parse("http://127.0.0.1:8001/a").unwrap(),
            &hub
        ));
    }
}
