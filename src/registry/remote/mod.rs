//! Sharing genes with OCI distribution registries (distribution/registry, zot, Harbor, GHCR):
//! `oci://HOST[:PORT]/REPO[:TAG|@sha256:<hex>]` references, the client set-up, and error
//! mapping. [`push`] sends a gene, [`pull`] fetches one into the local registry, [`auth`] reads
//! and writes Docker's credential file.
//!
//! The protocol is spoken by the `oci-client` crate: HEAD for blob existence, monolithic or
//! chunked uploads from a stream, cross-repository mounts, manifests pushed and pulled as raw
//! bytes (so digests never change), basic auth and the bearer-token flow. The async client runs
//! on a current-thread tokio runtime owned by [`Remote`]; the library stays blocking.
//!
//! Secrets: passwords live only in [`Credentials`], whose `Debug` hides them, and every message
//! built from a server or client error passes through [`Remote::scrub`].

pub mod auth;
mod pull;
mod push;

use std::fmt;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;

use super::digest::Digest;
use crate::error::Error;

pub use pull::{PullRemoteOptions, PulledGene};
pub use push::{PushOptions, PushedGene, PushedLineage};

/// The largest manifest lgreg accepts from a registry (the local store's limit too).
const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// A parsed `oci://HOST[:PORT]/REPO[:TAG|@sha256:<hex>]` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    /// `host[:port]`.
    pub host: String,
    /// The repository path, e.g. `genes/tiny`.
    pub repository: String,
    /// The tag, when given.
    pub tag: Option<String>,
    /// The manifest digest, when given.
    pub digest: Option<Digest>,
}

impl RemoteRef {
    /// The URL scheme lgreg uses for remote registries.
    pub const SCHEME: &'static str = "oci://";

    /// Whether `value` is an `oci://` reference.
    pub fn looks_like(value: &str) -> bool {
        value.starts_with(Self::SCHEME)
    }

    /// Parse `oci://HOST[:PORT]/REPO[:TAG|@sha256:<hex>]`.
    pub fn parse(value: &str) -> crate::Result<RemoteRef> {
        let bad = |reason: &str| Error::InvalidRemoteReference {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let rest = value
            .strip_prefix(Self::SCHEME)
            .ok_or_else(|| bad("it must start with `oci://`"))?;
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected `oci://HOST[:PORT]/REPO[:TAG]`"))?;
        if host.is_empty() || host.contains('@') {
            return Err(bad("the host is empty or carries credentials"));
        }
        let (path, digest) = match path.split_once('@') {
            Some((p, d)) => (p, Some(Digest::parse(d).map_err(|e| bad(&e.to_string()))?)),
            None => (path, None),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (path, None),
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        };
        if !repository.split('/').all(component_ok) {
            return Err(bad(
                "the repository must be lowercase path components `[a-z0-9._-]`",
            ));
        }
        if let Some(t) = &tag
            && !super::reference::is_oci_tag(t)
        {
            return Err(bad(
                "the tag must match `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`",
            ));
        }
        Ok(RemoteRef {
            host: host.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// The last path segment of the repository (the default local gene name).
    pub fn last_segment(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }

    /// The same repository with another tag.
    pub fn with_tag(&self, tag: &str) -> RemoteRef {
        RemoteRef {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The `oci-client` reference (by digest when one is given, else by tag, else `latest`).
    fn client_ref(&self) -> oci_client::Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => oci_client::Reference::with_digest(
                self.host.clone(),
                self.repository.clone(),
                d.to_string(),
            ),
            (None, t) => oci_client::Reference::with_tag(
                self.host.clone(),
                self.repository.clone(),
                t.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }

    /// Whether the host is a loopback address (`localhost`, `127.x`, `[::1]`).
    pub fn is_loopback(&self) -> bool {
        let host = match self.host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => self.host.split(':').next().unwrap_or(&self.host),
        };
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}/{}", self.host, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// How to authenticate to a registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials (public pulls, open registries).
    #[default]
    Anonymous,
    /// A user name and password (or token), sent as HTTP basic auth or exchanged for a bearer
    /// token when the registry asks for one.
    Basic {
        /// The user name.
        username: String,
        /// The password or token; never printed.
        password: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => {
                write!(f, "Basic {{ username: {username:?}, password: <hidden> }}")
            }
        }
    }
}

/// Connection settings shared by push, pull and login.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Plain HTTP instead of TLS; only allowed for loopback hosts.
    pub insecure: bool,
    /// The credentials to use.
    pub credentials: Credentials,
}

/// A connected client for one registry host: the `oci-client` client and its runtime.
pub(crate) struct Remote {
    rt: tokio::runtime::Runtime,
    client: oci_client::Client,
    auth: RegistryAuth,
    secrets: Vec<String>,
    host: String,
}

impl Remote {
    /// Build a client for `target`'s host. `chunk` selects chunked uploads (else monolithic).
    pub(crate) fn connect(
        target: &RemoteRef,
        conn: &Connection,
        chunked: bool,
    ) -> crate::Result<Remote> {
        if conn.insecure && !target.is_loopback() {
            return Err(Error::InsecureNotLoopback {
                host: target.host.clone(),
            });
        }
        // reqwest is built without a default crypto provider; ring is ours.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig {
            protocol: if conn.insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            use_monolithic_push: !chunked,
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (auth, secrets) = match &conn.credentials {
            Credentials::Anonymous => (RegistryAuth::Anonymous, Vec::new()),
            Credentials::Basic { username, password } => {
                let encoded = auth::encode_basic(username, password);
                (
                    RegistryAuth::Basic(username.clone(), password.clone()),
                    vec![password.clone(), encoded],
                )
            }
        };
        Ok(Remote {
            rt,
            client: oci_client::Client::new(config),
            auth,
            secrets,
            host: target.host.clone(),
        })
    }

    /// Remove every secret from a message that may have come from a server.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.secrets.iter().filter(|s| s.len() >= 3) {
            out = out.replace(s.as_str(), "<hidden>");
        }
        out
    }

    /// Map an `oci-client` error for `what` (a reference or blob) to a typed error.
    fn error(&self, what: &str, e: OciDistributionError) -> Error {
        let denied =
            |code: &OciErrorCode| matches!(code, OciErrorCode::Unauthorized | OciErrorCode::Denied);
        let unknown = |code: &OciErrorCode| {
            matches!(
                code,
                OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::BlobUnknown
                    | OciErrorCode::NotFound
            )
        };
        match &e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => self.denied(401),
            OciDistributionError::ServerError { code, .. } if *code == 401 || *code == 403 => {
                self.denied(*code)
            }
            OciDistributionError::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|x| denied(&x.code)) =>
            {
                self.denied(401)
            }
            OciDistributionError::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|x| unknown(&x.code)) =>
            {
                Error::RemoteNotFound {
                    reference: what.to_string(),
                }
            }
            OciDistributionError::RequestError(r)
                if matches!(r.status().map(|s| s.as_u16()), Some(401 | 403)) =>
            {
                self.denied(r.status().map_or(401, |s| s.as_u16()))
            }
            OciDistributionError::RequestError(r)
                if r.status().map(|s| s.as_u16()) == Some(404) =>
            {
                Error::RemoteNotFound {
                    reference: what.to_string(),
                }
            }
            OciDistributionError::ImageManifestNotFoundError(_) => Error::RemoteNotFound {
                reference: what.to_string(),
            },
            OciDistributionError::ServerError { code: 404, .. } => Error::RemoteNotFound {
                reference: what.to_string(),
            },
            _ => Error::RemoteTransfer {
                reference: what.to_string(),
                reason: self.scrub(&e.to_string()),
            },
        }
    }

    fn denied(&self, status: u16) -> Error {
        Error::RemoteAccessDenied {
            host: self.host.clone(),
            status,
            detail: match self.auth {
                RegistryAuth::Anonymous => " (no credentials were sent)".into(),
                _ => " (the user name or password was rejected)".into(),
            },
        }
    }
}

/// Check credentials against `host` (`lgreg login`): fails with
/// [`Error::RemoteAccessDenied`] when the registry refuses them.
///
/// A registry with bearer tokens sends the client to its token server, which answers 401 to
/// a wrong password and issues a token to a right one, whatever the token grants (the probe
/// repository may well be out of the user's reach). Only without a token server is a request
/// to the registry itself needed.
pub fn check_login(host: &str, conn: &Connection) -> crate::Result<()> {
    let target = RemoteRef {
        host: host.to_string(),
        repository: "lgreg-login-check".into(),
        tag: Some("latest".into()),
        digest: None,
    };
    let remote = Remote::connect(&target, conn, false)?;
    let r = target.client_ref();
    let result = remote.rt.block_on(async {
        let token = remote
            .client
            .auth(&r, &remote.auth, oci_client::RegistryOperation::Pull)
            .await?;
        if token.is_some() && matches!(remote.auth, RegistryAuth::Basic(..)) {
            return Ok(());
        }
        remote
            .client
            .list_tags(&r, &remote.auth, Some(1), None)
            .await
            .map(|_| ())
    });
    match result {
        Ok(()) => Ok(()),
        Err(e) => match remote.error(&target.to_string(), e) {
            // An unknown repository means the credentials were accepted.
            Error::RemoteNotFound { .. } => Ok(()),
            other => Err(other),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = RemoteRef::parse("oci://127.0.0.1:5000/genes/tiny:1.0.0").unwrap();
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.repository, "genes/tiny");
        assert_eq!(r.tag.as_deref(), Some("1.0.0"));
        assert!(r.is_loopback());
        assert_eq!(r.last_segment(), "tiny");
        let hex = "a".repeat(64);
        let d = RemoteRef::parse(&format!("oci://localhost/x@sha256:{hex}")).unwrap();
        assert!(d.digest.is_some() && d.tag.is_none());
        assert!(!RemoteRef::parse("oci://ghcr.io/a/b").unwrap().is_loopback());
        for bad in [
            "oci://host",
            "oci:///repo",
            "oci://u:p@host/r",
            "oci://h/Upper",
            "http://h/r",
        ] {
            assert!(RemoteRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_hides_password() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
