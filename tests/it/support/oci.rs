//! A real OCI distribution registry (Debian's `docker-registry`, distribution 2.8) on a free
//! loopback port with its data in a temp dir, anonymous, behind htpasswd basic auth, or behind
//! token auth with a [`TokenServer`]; and a loopback proxy that injects faults into blob
//! downloads (a flipped byte, a connection cut, an ignored `Range`) and records what it sent.
//!
//! Tests skip with a message when `docker-registry` is missing, and fail instead when
//! `LGREG_REQUIRE_OCI_REGISTRY=1` is set (CI sets it after `apt-get install docker-registry`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::token::{ISSUER, SERVICE, TokenServer};

const BINARY: &str = "/usr/bin/docker-registry";

/// How a test registry authenticates clients.
pub enum Auth<'a> {
    /// Not at all.
    Anonymous,
    /// HTTP basic auth for one user and password (htpasswd).
    Basic(&'a str, &'a str),
    /// Bearer tokens from this token server.
    Token(&'a TokenServer),
}

/// A running registry.
pub struct OciRegistry {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    config: PathBuf,
    /// Its access log (stdout and stderr).
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl OciRegistry {
    /// Start one, or `None` (after a message) when the binary is missing.
    #[allow(clippy::print_stderr)]
    pub fn start(auth: Auth<'_>) -> Option<OciRegistry> {
        let binary = std::env::var("LGREG_OCI_REGISTRY").unwrap_or_else(|_| BINARY.into());
        if !Path::new(&binary).exists() {
            assert!(
                std::env::var("LGREG_REQUIRE_OCI_REGISTRY").as_deref() != Ok("1"),
                "LGREG_REQUIRE_OCI_REGISTRY=1 but `{binary}` is missing: `apt-get install -y docker-registry`"
            );
            eprintln!("skipped: `{binary}` is missing (apt-get install -y docker-registry)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let data = dir.path().join("data");
        let auth = auth_config(dir.path(), &auth);
        let config = dir.path().join("config.yml");
        let yaml = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            data.display()
        );
        fs_err::write(&config, yaml).unwrap();
        let log = dir.path().join("registry.log");
        let mut reg = OciRegistry {
            child: None,
            port,
            config,
            log,
            _dir: dir,
        };
        reg.spawn();
        Some(reg)
    }

    fn spawn(&mut self) {
        let log = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::from(log.try_clone().unwrap().into_parts().0))
            .stderr(Stdio::from(log.into_parts().0))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if http_status(self.port, "GET", "/v2/").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not start; log: {}", self.log_text());
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        fs_err::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many blob uploads were started (`POST /v2/.../blobs/uploads/`) according to the log.
    pub fn upload_starts(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("\"POST /v2/") && l.contains("/blobs/uploads/"))
            .count()
    }

    /// Kill the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `auth:` section of the registry's configuration.
fn auth_config(dir: &Path, auth: &Auth<'_>) -> String {
    match auth {
        Auth::Anonymous => String::new(),
        Auth::Basic(user, pass) => {
            let file = dir.join("htpasswd");
            fs_err::write(&file, bcrypt_line(user, pass)).unwrap();
            format!(
                "auth:\n  htpasswd:\n    realm: lgreg-test\n    path: {}\n",
                file.display()
            )
        }
        Auth::Token(server) => format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            server.realm(),
            server.cert.display()
        ),
    }
}

/// An htpasswd line: `htpasswd -Bbn` when available, else a fixed bcrypt hash for the test
/// password.
fn bcrypt_line(user: &str, pass: &str) -> String {
    let out = Command::new("htpasswd").args(["-Bbn", user, pass]).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap(),
        _ => {
            let py = format!(
                "import bcrypt;print('{user}:'+bcrypt.hashpw(b'{pass}',bcrypt.gensalt()).decode())"
            );
            let o = Command::new("python3").args(["-c", &py]).output().unwrap();
            assert!(
                o.status.success(),
                "need `htpasswd` (apache2-utils) or python bcrypt"
            );
            String::from_utf8(o.stdout).unwrap()
        }
    }
}

/// One HTTP request over a fresh connection; the status code, or `None` when unreachable.
pub fn http_status(port: u16, method: &str, path: &str) -> Option<u16> {
    let (status, _) = http(port, method, path)?;
    Some(status)
}

/// One HTTP/1.0 request; the status and body.
pub fn http(port: u16, method: &str, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body_at = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some((status, buf[body_at..].to_vec()))
}

/// What the proxy does to a `GET` whose request line contains `path` (a blob's digest).
#[derive(Debug, Clone)]
pub enum Fault {
    /// Pass everything through.
    Nothing,
    /// Flip the last byte of the body.
    Flip {
        /// The path part to match.
        path: String,
    },
    /// Send the head and the first `after` bytes of the body, then close the connection;
    /// once, after which the proxy passes everything through.
    Cut {
        /// The path part to match.
        path: String,
        /// Body bytes sent before the cut.
        after: usize,
    },
    /// Drop the request's `Range` header, as a server that ignores ranges would.
    IgnoreRange {
        /// The path part to match.
        path: String,
    },
}

impl Fault {
    fn matches(&self, request_line: &str) -> bool {
        let path = match self {
            Fault::Nothing => return false,
            Fault::Flip { path } | Fault::Cut { path, .. } | Fault::IgnoreRange { path } => path,
        };
        request_line.starts_with("GET ") && request_line.contains(path.as_str())
    }
}

/// One request the proxy forwarded.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The request line, e.g. `GET /v2/genes/tiny/blobs/sha256:... HTTP/1.1`.
    pub request: String,
    /// The `Range` header the client sent, if any.
    pub range: Option<String>,
    /// The status the registry answered.
    pub status: u16,
    /// Body bytes passed on to the client.
    pub body_sent: usize,
}

#[derive(Debug)]
struct ProxyState {
    fault: Fault,
    exchanges: Vec<Exchange>,
}

/// A loopback proxy to a registry that serves one request per connection, applying a
/// [`Fault`] and recording every exchange.
pub struct Proxy {
    /// The port it listens on.
    pub port: u16,
    state: Arc<Mutex<ProxyState>>,
}

impl Proxy {
    /// Start it in a background thread (it lives until the test process ends).
    pub fn start(upstream: u16, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ProxyState {
            fault,
            exchanges: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let state = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = serve_one(conn, upstream, &state);
                });
            }
        });
        Proxy { port, state }
    }

    /// Apply `fault` from now on.
    pub fn set_fault(&self, fault: Fault) {
        self.state.lock().unwrap().fault = fault;
    }

    /// The `GET`s so far whose request line contains `path`.
    pub fn gets(&self, path: &str) -> Vec<Exchange> {
        self.state
            .lock()
            .unwrap()
            .exchanges
            .iter()
            .filter(|e| e.request.starts_with("GET ") && e.request.contains(path))
            .cloned()
            .collect()
    }
}

/// A request head, forwarded with `Connection: close` (and without `Range` when asked).
struct Request {
    line: String,
    range: Option<String>,
    head: String,
    body_len: usize,
}

fn read_request(client: &mut TcpStream, drop_range: &dyn Fn(&str) -> bool) -> Option<Request> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or_default().to_string();
    let mut out = String::new();
    let mut body_len = 0usize;
    let mut range = None;
    for (i, header) in text.split("\r\n").enumerate() {
        let lower = header.to_ascii_lowercase();
        if header.is_empty() || (i > 0 && lower.starts_with("connection:")) {
            continue;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            body_len = v.trim().parse().unwrap_or(0);
        }
        if let Some(v) = lower.strip_prefix("range:") {
            range = Some(v.trim().to_string());
            if drop_range(&line) {
                continue;
            }
        }
        out.push_str(header);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    Some(Request {
        line,
        range,
        head: out,
        body_len,
    })
}

fn serve_one(
    mut client: TcpStream,
    upstream: u16,
    state: &Mutex<ProxyState>,
) -> std::io::Result<()> {
    let fault = state.lock().unwrap().fault.clone();
    let drop_range = |line: &str| matches!(fault, Fault::IgnoreRange { .. }) && fault.matches(line);
    let Some(request) = read_request(&mut client, &drop_range) else {
        return Ok(());
    };
    let mut body = vec![0u8; request.body_len];
    client.read_exact(&mut body)?;
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(request.head.as_bytes())?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let body_at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |p| p + 4);
    let status = String::from_utf8_lossy(&resp[..body_at])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let hit = fault.matches(&request.line);
    let mut end = resp.len();
    match &fault {
        Fault::Flip { .. } if hit && end > body_at => resp[end - 1] ^= 0x01,
        Fault::Cut { after, .. } if hit => {
            end = (body_at + after).min(resp.len());
            state.lock().unwrap().fault = Fault::Nothing;
        }
        _ => {}
    }
    state.lock().unwrap().exchanges.push(Exchange {
        request: request.line,
        range: request.range,
        status,
        body_sent: end - body_at,
    });
    client.write_all(&resp[..end])?;
    client.flush()
}
