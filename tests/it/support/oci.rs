//! A real OCI distribution registry (Debian's `docker-registry`, distribution 2.8) on a free
//! loopback port with its data in a temp dir, anonymous, behind htpasswd basic auth, or behind
//! token auth with a [`TokenServer`]; and a loopback proxy that corrupts one blob on its way to
//! the client.
//!
//! Tests skip with a message when `docker-registry` is missing, and fail instead when
//! `LGREG_REQUIRE_OCI_REGISTRY=1` is set (CI sets it after `apt-get install docker-registry`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// A loopback proxy to `upstream` that serves one request per connection and flips the last
/// byte of the body of every `GET` whose path contains `corrupt`.
pub struct FlipProxy {
    /// The port it listens on.
    pub port: u16,
}

impl FlipProxy {
    /// Start it in a background thread (it lives until the test process ends).
    pub fn start(upstream: u16, corrupt: String) -> FlipProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let corrupt = corrupt.clone();
                std::thread::spawn(move || {
                    let _ = serve_one(conn, upstream, &corrupt);
                });
            }
        });
        FlipProxy { port }
    }
}

fn serve_one(mut client: TcpStream, upstream: u16, corrupt: &str) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let request_line = text.lines().next().unwrap_or_default().to_string();
    let mut out = String::new();
    let mut length = 0usize;
    for (i, line) in text.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        let lower = line.to_ascii_lowercase();
        if i > 0 && lower.starts_with("connection:") {
            continue;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut body = vec![0u8; length];
    client.read_exact(&mut body)?;
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(out.as_bytes())?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    if request_line.starts_with("GET ")
        && request_line.contains(corrupt)
        && let Some(last) = resp.last_mut()
    {
        *last ^= 0x01;
    }
    client.write_all(&resp)?;
    client.flush()
}
