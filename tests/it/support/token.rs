//! A loopback token server for the registry token flow, the one real registries (Docker Hub,
//! GHCR, Harbor) use: a client that gets `401 WWW-Authenticate: Bearer realm=..,service=..`
//! asks `GET realm?service=..&scope=repository:NAME:pull,push`, with HTTP basic credentials or
//! none, and gets back `{"token", "access_token", "expires_in"}`, a JWT that the registry
//! checks against its `rootcertbundle`.
//!
//! The JWT is RS256 with the signing certificate in `x5c`; the key and the self-signed
//! certificate are made per server with the `openssl` CLI, which also signs (`openssl dgst`).
//! Policy: the one user may pull and push under `genes/` and `public/`; anyone may pull under
//! `public/`; nothing else is granted. A wrong password gets 401. Every request is recorded.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// The `service` the registry names in its challenge (and the token's audience).
pub const SERVICE: &str = "lgreg-test-registry";
/// The token issuer the registry trusts.
pub const ISSUER: &str = "lgreg-test-token-issuer";

/// Repositories (by prefix) the user may pull from and push to.
const USER_REPOS: &[&str] = &["genes/", "public/"];
/// Repositories (by prefix) anyone may pull from.
const PUBLIC_REPOS: &[&str] = &["public/"];

/// One request the token server answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The user of the basic credentials, if any were sent.
    pub user: Option<String>,
    /// The `service` query parameter.
    pub service: Option<String>,
    /// Every `scope` query parameter.
    pub scopes: Vec<String>,
    /// The HTTP status answered.
    pub status: u16,
    /// What the token granted: `repository:NAME:ACTIONS`.
    pub granted: Vec<String>,
}

#[derive(Default)]
struct Record {
    requests: Vec<TokenRequest>,
    tokens: Vec<String>,
}

/// A running token server.
pub struct TokenServer {
    /// The port it listens on.
    pub port: u16,
    /// The certificate (PEM) the registry's `rootcertbundle` points at.
    pub cert: PathBuf,
    record: Arc<Mutex<Record>>,
    _dir: tempfile::TempDir,
}

/// What the serving thread needs.
struct Issuer {
    key: PathBuf,
    x5c: String,
    user: String,
    password: String,
    record: Arc<Mutex<Record>>,
}

impl TokenServer {
    /// Start one for `user`/`password`, or `None` (after a message) without `openssl`; under
    /// `LGREG_REQUIRE_OCI_REGISTRY=1` a missing `openssl` fails instead.
    #[allow(clippy::print_stderr)]
    pub fn start(user: &str, password: &str) -> Option<TokenServer> {
        if Command::new("openssl").arg("version").output().is_err() {
            assert!(
                std::env::var("LGREG_REQUIRE_OCI_REGISTRY").as_deref() != Ok("1"),
                "LGREG_REQUIRE_OCI_REGISTRY=1 but `openssl` is missing: `apt-get install -y openssl`"
            );
            eprintln!("skipped: `openssl` is missing (apt-get install -y openssl)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = make_key_and_cert(dir.path());
        let record = Arc::new(Mutex::new(Record::default()));
        let issuer = Arc::new(Issuer {
            key,
            x5c: pem_body(&cert),
            user: user.to_string(),
            password: password.to_string(),
            record: Arc::clone(&record),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let issuer = Arc::clone(&issuer);
                std::thread::spawn(move || {
                    let _ = issuer.serve(conn);
                });
            }
        });
        Some(TokenServer {
            port,
            cert,
            record,
            _dir: dir,
        })
    }

    /// The realm URL the registry sends clients to.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.record.lock().unwrap().requests.clone()
    }

    /// Every token issued so far.
    pub fn tokens(&self) -> Vec<String> {
        self.record.lock().unwrap().tokens.clone()
    }
}

/// An RSA key and a self-signed certificate fit for signing tokens (distribution checks that
/// the leaf's key usage includes digital signatures).
fn make_key_and_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=lgreg-test-token-issuer"])
        .args(["-addext", "keyUsage=critical,digitalSignature,keyCertSign"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (key, cert)
}

/// The base64 DER of a PEM certificate: its body lines joined.
fn pem_body(cert: &Path) -> String {
    fs_err::read_to_string(cert)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect()
}

impl Issuer {
    fn serve(&self, mut conn: TcpStream) -> std::io::Result<()> {
        let head = read_head(&mut conn)?;
        let target = head.split_whitespace().nth(1).unwrap_or_default();
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let params = parse_query(query);
        let service = params
            .iter()
            .find(|(k, _)| k == "service")
            .map(|(_, v)| v.clone());
        let scopes: Vec<String> = params
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect();
        let creds = basic_credentials(&head);
        let user = creds.as_ref().map(|(u, _)| u.clone());
        let mut request = TokenRequest {
            user: user.clone(),
            service,
            scopes,
            status: 401,
            granted: Vec::new(),
        };
        let accepted = match &creds {
            None => true,
            Some((u, p)) => *u == self.user && *p == self.password,
        };
        if !target.starts_with("/token") || !accepted {
            self.record.lock().unwrap().requests.push(request);
            let body =
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
            return respond(&mut conn, "401 Unauthorized", body);
        }
        let access = grant(user.is_some(), &request.scopes);
        request.granted = access
            .iter()
            .map(|(name, actions)| format!("repository:{name}:{}", actions.join(",")))
            .collect();
        request.status = 200;
        let token = self.sign(user.as_deref().unwrap_or(""), &access);
        let body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": 300,
        })
        .to_string();
        let mut record = self.record.lock().unwrap();
        record.requests.push(request);
        record.tokens.push(token);
        drop(record);
        respond(&mut conn, "200 OK", &body)
    }

    /// A JWT for `subject` granting `access`.
    fn sign(&self, subject: &str, access: &[(String, Vec<String>)]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let access: Vec<_> = access
            .iter()
            .map(|(name, actions)| {
                serde_json::json!({"type": "repository", "name": name, "actions": actions})
            })
            .collect();
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("{now}-{}", self.record.lock().unwrap().tokens.len()),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = openssl_sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// RSASSA-PKCS1-v1_5 with SHA-256 (RS256) over `data`.
fn openssl_sign(key: &Path, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl dgst: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The actions granted for each `repository:NAME:ACTIONS` scope asked: what was asked and is
/// allowed, and nothing for a scope that grants nothing.
fn grant(authenticated: bool, scopes: &[String]) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for scope in scopes {
        let mut parts = scope.splitn(3, ':');
        let (Some("repository"), Some(name), Some(actions)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mine = authenticated && USER_REPOS.iter().any(|p| name.starts_with(p));
        let public = PUBLIC_REPOS.iter().any(|p| name.starts_with(p));
        let allowed: Vec<String> = actions
            .split(',')
            .filter(|a| match *a {
                "pull" => mine || public,
                "push" => mine,
                _ => false,
            })
            .map(String::from)
            .collect();
        if !allowed.is_empty() {
            out.push((name.to_string(), allowed));
        }
    }
    out
}

/// The request head, up to the blank line.
fn read_head(conn: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The user and password of an `Authorization: Basic` header.
fn basic_credentials(head: &str) -> Option<(String, String)> {
    let value = head.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then_some(value.trim())
    })?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// `a=1&b=x%3Ay` as decoded pairs.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(conn: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("401") {
        head.push_str("WWW-Authenticate: Basic realm=\"lgreg-test-token\"\r\n");
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}
