//! A loopback fake of the Hugging Face Hub that serves real files and lies on demand.
//!
//! Two listeners: the Hub on `127.0.0.1` and a CDN on `127.0.0.2` (another host, so a client
//! must not forward its token there). Endpoints, as on the real Hub:
//! - `GET /api/models/{org}/{name}/revision/{rev}` → `{"id", "sha", "siblings": [{"rfilename",
//!   "size", "blobId", "lfs": {"sha256", "size", "pointerSize"}}]}`;
//! - `HEAD|GET /{org}/{name}/resolve/{rev}/{path}` → small files: 200 with `ETag` (git blob id),
//!   `X-Repo-Commit`; LFS files: 302 to the CDN with `X-Linked-Etag` (sha256), `X-Linked-Size`,
//!   `X-Repo-Commit`;
//! - `GET /api/models/{org}/{name}/tree/{rev}?recursive=true` (what `snapshot_download` lists);
//! - CDN `GET /cdn/{sha256}` with `Range: bytes=N-` support (206 + `Content-Range`).
//!
//! Errors carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) like the Hub.
//! [`Faults`] make it misbehave; [`FakeHub::requests`] and [`FakeHub::bytes_served`] let tests
//! check what a client did. Shared with `examples/fake_hub.rs` (the benchmark server).

#![allow(
    dead_code,
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::result_large_err
)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// One file of a fake repo.
#[derive(Debug, Clone)]
pub struct RepoFile {
    /// Path in the repo.
    pub name: String,
    /// Where the bytes come from.
    pub source: Source,
    /// Bytes.
    pub size: u64,
    /// sha256 hex (the LFS oid).
    pub sha256: String,
    /// git blob id (sha1 hex).
    pub blob_id: String,
    /// Served through LFS (redirect to the CDN).
    pub lfs: bool,
}

/// The bytes of a file.
#[derive(Debug, Clone)]
pub enum Source {
    /// In memory.
    Bytes(Arc<Vec<u8>>),
    /// On disk.
    Disk(PathBuf),
}

#[derive(Debug, Clone)]
struct Repo {
    commit: String,
    refs: HashMap<String, String>,
    files: Vec<RepoFile>,
    /// A gated repo: the tokens of the accounts that accepted its licence. Its metadata is
    /// public, as on the Hub; its files answer 401 without a token and 403 with any other.
    gated: Option<Vec<String>>,
}

/// Misbehaviour on demand. Keys are repo file names.
#[derive(Debug, Default)]
pub struct Faults {
    /// Cut the connection after this many body bytes, once per file.
    pub drop_after: HashMap<String, u64>,
    /// Serve these files with one byte flipped (always).
    pub flip_byte: HashSet<String>,
    /// Answer `GET` of the file (its first hop) with 500 this many times; key `"api"` for the
    /// revision API.
    pub fail_500: HashMap<String, u32>,
    /// Answer the revision API and resolve URLs with this status (401, 403, 404...).
    pub status: Option<u16>,
    /// Sleep this long before each 64 KiB of body.
    pub delay: Option<Duration>,
    /// Demand `Authorization: Bearer <token>` on the Hub host (401 otherwise).
    pub token: Option<String>,
}

/// One request the fake saw.
#[derive(Debug, Clone)]
pub struct Request {
    /// `hub` or `cdn`.
    pub host: &'static str,
    /// `GET`, `HEAD`.
    pub method: String,
    /// The decoded path.
    pub path: String,
    /// The `Range` header.
    pub range: Option<String>,
    /// The `Authorization` header.
    pub auth: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    repos: Mutex<HashMap<String, Repo>>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<Request>>,
    served: AtomicU64,
    served_by_file: Mutex<HashMap<String, u64>>,
    hub_url: Mutex<String>,
    cdn_url: Mutex<String>,
}

/// A running fake Hub (threads live as long as the process).
#[derive(Debug, Clone)]
pub struct FakeHub {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `http://127.0.0.2:PORT`.
    pub cdn: String,
    state: Arc<State>,
}

impl FakeHub {
    /// Start both listeners.
    pub fn start() -> FakeHub {
        let state = Arc::new(State::default());
        let hub = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = TcpListener::bind("127.0.0.2:0").unwrap();
        let url = format!("http://{}", hub.local_addr().unwrap());
        let cdn_url = format!("http://{}", cdn.local_addr().unwrap());
        *state.hub_url.lock().unwrap() = url.clone();
        *state.cdn_url.lock().unwrap() = cdn_url.clone();
        for (listener, host) in [(hub, "hub"), (cdn, "cdn")] {
            let state = state.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let state = state.clone();
                    std::thread::spawn(move || {
                        let _ = serve(&state, host, stream);
                    });
                }
            });
        }
        FakeHub {
            url,
            cdn: cdn_url,
            state,
        }
    }

    /// Add a repo whose files are every file under `dir`; returns its commit.
    pub fn add_dir(&self, repo: &str, dir: &Path) -> String {
        let mut files = Vec::new();
        walk(dir, dir, &mut files);
        files.sort();
        let files = files
            .into_iter()
            .map(|(name, path)| file_entry(name, Source::Disk(path)))
            .collect();
        self.add_repo(repo, files)
    }

    /// Add a repo from in-memory files; returns its commit.
    pub fn add_files(&self, repo: &str, files: &[(&str, Vec<u8>)]) -> String {
        let files = files
            .iter()
            .map(|(n, b)| file_entry(n.to_string(), Source::Bytes(Arc::new(b.clone()))))
            .collect();
        self.add_repo(repo, files)
    }

    fn add_repo(&self, repo: &str, files: Vec<RepoFile>) -> String {
        let mut h = Sha1::new();
        h.update(repo.as_bytes());
        for f in &files {
            h.update(f.name.as_bytes());
            h.update(f.sha256.as_bytes());
        }
        let commit = hex(&h.finalize());
        let mut refs = HashMap::new();
        refs.insert("main".to_string(), commit.clone());
        self.state.repos.lock().unwrap().insert(
            repo.to_string(),
            Repo {
                commit: commit.clone(),
                refs,
                files,
                gated: None,
            },
        );
        commit
    }

    /// Gate `repo`: only requests with one of `accepted` (the tokens of accounts that accepted
    /// its licence) get its files.
    pub fn gate(&self, repo: &str, accepted: &[&str]) {
        let mut repos = self.state.repos.lock().unwrap();
        let r = repos.get_mut(repo).unwrap();
        r.gated = Some(accepted.iter().map(|t| t.to_string()).collect());
    }

    /// Point a branch or tag of `repo` at its commit.
    pub fn add_ref(&self, repo: &str, name: &str) {
        let mut repos = self.state.repos.lock().unwrap();
        let r = repos.get_mut(repo).unwrap();
        let c = r.commit.clone();
        r.refs.insert(name.to_string(), c);
    }

    /// A repo's files as served.
    pub fn files(&self, repo: &str) -> Vec<RepoFile> {
        self.state.repos.lock().unwrap()[repo].files.clone()
    }

    /// Change the faults.
    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.state.faults.lock().unwrap()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.state.log.lock().unwrap().clone()
    }

    /// File body bytes served so far (Hub and CDN together).
    pub fn bytes_served(&self) -> u64 {
        self.state.served.load(Ordering::SeqCst)
    }

    /// File body bytes served so far for one repo file.
    pub fn bytes_served_for(&self, file: &str) -> u64 {
        *self
            .state
            .served_by_file
            .lock()
            .unwrap()
            .get(file)
            .unwrap_or(&0)
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap();
            let name: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push((name.join("/"), p));
        }
    }
}

const LFS_SUFFIXES: &[&str] = &[
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".onnx",
    ".h5",
    ".msgpack",
    ".ot",
    ".gguf",
    ".model",
];

fn file_entry(name: String, source: Source) -> RepoFile {
    let mut sha = Sha256::new();
    let mut size = 0u64;
    let mut body = Vec::new();
    read_all(&source, &mut |chunk| {
        sha.update(chunk);
        size += chunk.len() as u64;
        if size <= 1 << 20 {
            body.extend_from_slice(chunk);
        }
    });
    let mut git = Sha1::new();
    git.update(format!("blob {size}\0").as_bytes());
    if size <= 1 << 20 {
        git.update(&body);
    } else {
        read_all(&source, &mut |chunk| git.update(chunk));
    }
    let lfs = size > 1 << 20 || LFS_SUFFIXES.iter().any(|s| name.ends_with(s));
    RepoFile {
        name,
        source,
        size,
        sha256: hex(&sha.finalize()),
        blob_id: hex(&git.finalize()),
        lfs,
    }
}

fn read_all(source: &Source, f: &mut dyn FnMut(&[u8])) {
    match source {
        Source::Bytes(b) => f(b),
        Source::Disk(p) => {
            let mut file = std::fs::File::open(p).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                f(&buf[..n]);
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Head {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

fn read_head(stream: &TcpStream) -> Option<Head> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l).ok()? == 0 {
            break;
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    Some(Head {
        method,
        path,
        headers,
    })
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

enum Body {
    None,
    Text(Vec<u8>),
    File {
        file: RepoFile,
        start: u64,
        end: u64,
    },
}

fn text(status: u16, code: Option<&str>, msg: &str) -> Reply {
    let mut headers = vec![("Content-Type".into(), "text/plain".into())];
    if let Some(c) = code {
        headers.push(("X-Error-Code".into(), c.into()));
        headers.push(("X-Error-Message".into(), msg.into()));
    }
    Reply {
        status,
        headers,
        body: Body::Text(msg.as_bytes().to_vec()),
    }
}

fn serve(state: &State, host: &'static str, mut stream: TcpStream) -> std::io::Result<()> {
    let Some(head) = read_head(&stream) else {
        return Ok(());
    };
    let decoded = head
        .path
        .split('/')
        .map(decode)
        .collect::<Vec<_>>()
        .join("/");
    state.log.lock().unwrap().push(Request {
        host,
        method: head.method.clone(),
        path: decoded.clone(),
        range: head.headers.get("range").cloned(),
        auth: head.headers.get("authorization").cloned(),
    });
    let reply = route(state, host, &head);
    write_reply(state, &mut stream, &head, reply)
}

fn route(state: &State, host: &str, head: &Head) -> Reply {
    let segs: Vec<String> = head.path.split('/').skip(1).map(decode).collect();
    if host == "cdn" {
        return cdn(state, head, &segs);
    }
    {
        let f = state.faults.lock().unwrap();
        if let Some(t) = &f.token
            && head.headers.get("authorization") != Some(&format!("Bearer {t}"))
        {
            return text(401, None, "Invalid credentials in Authorization header");
        }
        if let Some(s) = f.status {
            let code = match s {
                403 => Some("GatedRepo"),
                _ => None,
            };
            return text(s, code, "refused on purpose by the fake hub");
        }
    }
    if segs.len() >= 5 && segs[0] == "api" && segs[1] == "models" && segs[4] == "revision" {
        if take_500(state, "api") {
            return text(500, None, "internal error (on purpose)");
        }
        let repo = format!("{}/{}", segs[2], segs[3]);
        let rev = segs[5..].join("/");
        return api(state, &repo, &rev);
    }
    if segs.len() >= 6 && segs[0] == "api" && segs[1] == "models" && segs[4] == "tree" {
        let repo = format!("{}/{}", segs[2], segs[3]);
        return tree(state, &repo, &segs[5], &segs[6..].join("/"));
    }
    if segs.len() >= 5 && segs[2] == "resolve" {
        let repo = format!("{}/{}", segs[0], segs[1]);
        let rev = &segs[3];
        let file = segs[4..].join("/");
        return resolve(state, head, &repo, rev, &file);
    }
    text(404, None, "no such endpoint")
}

fn take_500(state: &State, key: &str) -> bool {
    let mut f = state.faults.lock().unwrap();
    match f.fail_500.get_mut(key) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

fn lookup(state: &State, repo: &str, rev: &str) -> Result<(String, Vec<RepoFile>), Reply> {
    let repos = state.repos.lock().unwrap();
    let Some(r) = repos.get(repo) else {
        return Err(text(404, Some("RepoNotFound"), "Repository not found"));
    };
    let commit = if rev == r.commit {
        r.commit.clone()
    } else if let Some(c) = r.refs.get(rev) {
        c.clone()
    } else {
        return Err(text(
            404,
            Some("RevisionNotFound"),
            &format!("Invalid rev id: {rev}"),
        ));
    };
    Ok((commit, r.files.clone()))
}

/// The API's `gated` field: `"manual"` for a gated repo, `false` otherwise.
fn gated_field(state: &State, repo: &str) -> serde_json::Value {
    let repos = state.repos.lock().unwrap();
    match repos.get(repo).and_then(|r| r.gated.as_ref()) {
        Some(_) => serde_json::Value::from("manual"),
        None => serde_json::Value::from(false),
    }
}

fn api(state: &State, repo: &str, rev: &str) -> Reply {
    let (commit, files) = match lookup(state, repo, rev) {
        Ok(x) => x,
        Err(reply) => return reply,
    };
    let siblings: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            let mut v = serde_json::json!({
                "rfilename": f.name,
                "size": f.size,
                "blobId": f.blob_id,
            });
            if f.lfs {
                v["lfs"] =
                    serde_json::json!({"sha256": f.sha256, "size": f.size, "pointerSize": 134});
            }
            v
        })
        .collect();
    let body = serde_json::json!({
        "_id": "0",
        "id": repo,
        "modelId": repo,
        "sha": commit,
        "private": false,
        "gated": gated_field(state, repo),
        "disabled": false,
        "tags": [],
        "siblings": siblings,
    });
    Reply {
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: Body::Text(body.to_string().into_bytes()),
    }
}

/// `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=true`: every file and folder, one page.
fn tree(state: &State, repo: &str, rev: &str, under: &str) -> Reply {
    let (_, files) = match lookup(state, repo, rev) {
        Ok(x) => x,
        Err(reply) => return reply,
    };
    let prefix = if under.is_empty() {
        String::new()
    } else {
        format!("{under}/")
    };
    let mut dirs = std::collections::BTreeSet::new();
    let mut entries = Vec::new();
    for f in files.iter().filter(|f| f.name.starts_with(&prefix)) {
        let mut parts: Vec<&str> = f.name.split('/').collect();
        parts.pop();
        for i in 1..=parts.len() {
            dirs.insert(parts[..i].join("/"));
        }
        let mut v =
            serde_json::json!({"type": "file", "oid": f.blob_id, "size": f.size, "path": f.name});
        if f.lfs {
            v["lfs"] = serde_json::json!({"oid": f.sha256, "size": f.size, "pointerSize": 134});
        }
        entries.push(v);
    }
    for d in dirs {
        entries.push(serde_json::json!({"type": "directory", "oid": "0", "size": 0, "path": d}));
    }
    Reply {
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: Body::Text(serde_json::Value::from(entries).to_string().into_bytes()),
    }
}

fn resolve(state: &State, head: &Head, repo: &str, rev: &str, file: &str) -> Reply {
    if let Some(refused) = gate_refusal(state, head, repo) {
        return refused;
    }
    let (commit, files) = match lookup(state, repo, rev) {
        Ok(x) => x,
        Err(reply) => return reply,
    };
    let Some(f) = files.into_iter().find(|f| f.name == file) else {
        return text(404, Some("EntryNotFound"), "Entry not found");
    };
    if head.method == "GET" && take_500(state, file) {
        return text(500, None, "internal error (on purpose)");
    }
    let mut headers = vec![("X-Repo-Commit".to_string(), commit)];
    if f.lfs {
        let cdn = state.cdn_url.lock().unwrap().clone();
        headers.push(("X-Linked-Etag".into(), format!("\"{}\"", f.sha256)));
        headers.push(("X-Linked-Size".into(), f.size.to_string()));
        headers.push(("ETag".into(), format!("\"{}\"", f.blob_id)));
        headers.push(("Location".into(), format!("{cdn}/cdn/{}", f.sha256)));
        return Reply {
            status: 302,
            headers,
            body: Body::None,
        };
    }
    headers.push(("ETag".into(), format!("\"{}\"", f.blob_id)));
    let end = f.size;
    Reply {
        status: 200,
        headers,
        body: Body::File {
            file: f,
            start: 0,
            end,
        },
    }
}

/// The Hub's answer to a file request of a gated repo without an accepted token (its wording).
fn gate_refusal(state: &State, head: &Head, repo: &str) -> Option<Reply> {
    let repos = state.repos.lock().unwrap();
    let accepted = repos.get(repo)?.gated.as_ref()?;
    let token = head
        .headers
        .get("authorization")
        .and_then(|a| a.strip_prefix("Bearer "));
    match token {
        None => Some(text(
            401,
            Some("GatedRepo"),
            &format!(
                "Access to model {repo} is restricted. You must have access to it and be authenticated to access it. Please log in."
            ),
        )),
        Some(t) if accepted.iter().any(|a| a == t) => None,
        Some(_) => Some(text(
            403,
            Some("GatedRepo"),
            &format!(
                "Access to model {repo} is restricted and you are not in the authorized list. Visit https://huggingface.co/{repo} to ask for access."
            ),
        )),
    }
}

fn cdn(state: &State, head: &Head, segs: &[String]) -> Reply {
    let Some(oid) = segs.get(1) else {
        return text(404, None, "no such object");
    };
    let found = state
        .repos
        .lock()
        .unwrap()
        .values()
        .flat_map(|r| r.files.iter())
        .find(|f| &f.sha256 == oid)
        .cloned();
    let Some(f) = found else {
        return text(404, None, "no such object");
    };
    if take_500(state, &f.name) {
        return text(500, None, "internal error (on purpose)");
    }
    let start = head
        .headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse::<u64>().ok());
    match start {
        Some(s) if s >= f.size => Reply {
            status: 416,
            headers: vec![("Content-Range".into(), format!("bytes */{}", f.size))],
            body: Body::None,
        },
        Some(s) => Reply {
            status: 206,
            headers: vec![(
                "Content-Range".into(),
                format!("bytes {s}-{}/{}", f.size - 1, f.size),
            )],
            body: Body::File {
                end: f.size,
                file: f,
                start: s,
            },
        },
        None => Reply {
            status: 200,
            headers: vec![("Accept-Ranges".into(), "bytes".into())],
            body: Body::File {
                end: f.size,
                file: f,
                start: 0,
            },
        },
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

fn write_reply(
    state: &State,
    stream: &mut TcpStream,
    head: &Head,
    reply: Reply,
) -> std::io::Result<()> {
    let len = match &reply.body {
        Body::None => 0,
        Body::Text(t) => t.len() as u64,
        Body::File { start, end, .. } => end - start,
    };
    let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {len}\r\nConnection: close\r\n\r\n"
    ));
    stream.write_all(out.as_bytes())?;
    if head.method == "HEAD" {
        return stream.flush();
    }
    match reply.body {
        Body::None => {}
        Body::Text(t) => stream.write_all(&t)?,
        Body::File { file, start, end } => send_file(state, stream, &file, start, end)?,
    }
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

fn send_file(
    state: &State,
    stream: &mut TcpStream,
    file: &RepoFile,
    start: u64,
    end: u64,
) -> std::io::Result<()> {
    let (drop_at, flip, delay) = {
        let mut f = state.faults.lock().unwrap();
        let drop_at = f.drop_after.remove(&file.name);
        (drop_at, f.flip_byte.contains(&file.name), f.delay)
    };
    let flip_at = file.size / 2;
    let chunk = if delay.is_some() { 64 << 10 } else { 4 << 20 };
    let mut buf = vec![0u8; chunk];
    let mut pos = start;
    let mut reader: Box<dyn ReadSeek> = match &file.source {
        Source::Bytes(b) => Box::new(std::io::Cursor::new(b.to_vec())),
        Source::Disk(p) => Box::new(std::fs::File::open(p)?),
    };
    reader.seek(SeekFrom::Start(start))?;
    while pos < end {
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        let mut n = (end - pos).min(chunk as u64) as usize;
        if let Some(at) = drop_at
            && pos - start + n as u64 > at
        {
            n = (at - (pos - start)) as usize;
            reader.read_exact(&mut buf[..n])?;
            stream.write_all(&buf[..n])?;
            count(state, &file.name, n as u64);
            stream.flush()?;
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(());
        }
        reader.read_exact(&mut buf[..n])?;
        if flip && (pos..pos + n as u64).contains(&flip_at) {
            buf[(flip_at - pos) as usize] ^= 0x01;
        }
        stream.write_all(&buf[..n])?;
        count(state, &file.name, n as u64);
        pos += n as u64;
    }
    Ok(())
}

trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

fn count(state: &State, name: &str, n: u64) {
    state.served.fetch_add(n, Ordering::SeqCst);
    *state
        .served_by_file
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_default() += n;
}
