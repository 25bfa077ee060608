//! Hugging Face Hub downloads into the cache that Python's `huggingface_hub` shares.
//!
//! - [`pull`] resolves a revision to a commit through the Hub API, picks files
//!   ([`Selection`]), downloads them in parallel into `blobs/` (resuming, hash-checking,
//!   retrying) and links them into `snapshots/<commit>/`.
//! - [`resolve_ancestor`] turns `org/name[@rev]` into a local snapshot directory for the other
//!   verbs, from the cache when it is there and by pulling first otherwise.
//! - [`HubConfig`] carries everything the environment decides (endpoint, cache, token,
//!   offline); the library never reads environment variables itself.
//!
//! Layout: [`cache`]; HTTP: `api`; one blob: `download`.

mod api;
pub mod cache;
mod download;
mod select;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

pub use select::Selection;

use crate::error::{Error, Result};
use crate::progress::{Event, Reporter};
use cache::{Cache, RepoCache};

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where and how to reach the Hub; built from the environment by the CLI, directly by tests.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Base URL, e.g. `https://huggingface.co` (`HF_ENDPOINT`).
    pub endpoint: String,
    /// The hub cache directory (`HF_HUB_CACHE`, by default `$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// Bearer token for gated and private repos; sent only to the endpoint's origin.
    pub token: Option<String>,
    /// Never touch the network (`HF_HUB_OFFLINE`).
    pub offline: bool,
    /// Files downloaded at once.
    pub parallel: usize,
    /// Retries after a 5xx answer or a dropped connection.
    pub retries: u32,
    /// The first retry waits this long; each next one twice as long (at most 8 s).
    pub backoff: Duration,
    /// Give up on a connection that sends nothing for this long (then retry).
    pub read_timeout: Duration,
}

impl HubConfig {
    /// The public Hub, caching under `cache_dir`, with no token, online.
    pub fn new(cache_dir: impl Into<PathBuf>) -> HubConfig {
        HubConfig {
            endpoint: DEFAULT_ENDPOINT.into(),
            cache_dir: cache_dir.into(),
            token: None,
            offline: false,
            parallel: 8,
            retries: 5,
            backoff: Duration::from_millis(500),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// `org/name[@revision]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    /// `org/name`.
    pub repo: String,
    /// A branch, tag or commit, when one was given.
    pub revision: Option<String>,
}

impl RepoRef {
    /// Parse `org/name[@revision]`; other schemes (`oci://`) are refused with a clear error.
    pub fn parse(spec: &str) -> Result<RepoRef> {
        if let Some((scheme, _)) = spec.split_once("://") {
            return Err(Error::UnsupportedScheme {
                reference: spec.into(),
                scheme: scheme.into(),
            });
        }
        let (repo, revision) = match spec.split_once('@') {
            Some((r, rev)) => (r, Some(rev.to_string())),
            None => (spec, None),
        };
        if !looks_like_repo_id(repo) || revision.as_deref() == Some("") {
            return Err(Error::InvalidValue {
                what: "the repo".into(),
                value: spec.into(),
                reason: "expected `org/name` or `org/name@revision`".into(),
            });
        }
        Ok(RepoRef {
            repo: repo.into(),
            revision,
        })
    }

    /// Whether `s` has the shape `org/name[@rev]` (for verbs that also take local paths).
    pub fn looks_like(s: &str) -> bool {
        let repo = s.split_once('@').map_or(s, |(r, _)| r);
        looks_like_repo_id(repo)
    }
}

fn looks_like_repo_id(repo: &str) -> bool {
    let ok_part = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['.', '-'])
            && p.len() <= 96
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(repo.split_once('/'), Some((org, name)) if ok_part(org) && ok_part(name))
}

/// What to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Branch, tag or commit (default `main`); overrides a `@rev` in the reference.
    pub revision: Option<String>,
    /// Which files.
    pub selection: Selection,
}

/// One file of a pull.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PulledFile {
    /// Path in the repo.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// The blob it links to.
    pub etag: String,
    /// Bytes fetched over the network in this run.
    pub downloaded: u64,
}

/// The result of a pull.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PullReport {
    /// `org/name`.
    pub repo: String,
    /// The revision asked for.
    pub revision: String,
    /// The commit it resolved to.
    pub commit: String,
    /// `snapshots/<commit>`: a model directory the other verbs read.
    pub snapshot: PathBuf,
    /// The files pulled (or found, offline).
    pub files: Vec<PulledFile>,
    /// Bytes fetched over the network.
    pub bytes_downloaded: u64,
    /// Bytes already in the cache (whole blobs and resumed parts).
    pub bytes_reused: u64,
    /// Whether the answer came from the cache alone.
    pub offline: bool,
}

/// Pull `spec` (`org/name[@rev]`) into the cache.
pub fn pull(
    spec: &str,
    opts: &PullOptions,
    cfg: &HubConfig,
    reporter: &dyn Reporter,
) -> Result<PullReport> {
    let reference = RepoRef::parse(spec)?;
    let revision = opts
        .revision
        .clone()
        .or(reference.revision)
        .unwrap_or_else(|| "main".into());
    let repo = reference.repo;
    let cache = Cache::new(&cfg.cache_dir).repo(&repo);
    if cfg.offline {
        return pull_offline(&repo, &revision, opts, cfg, &cache);
    }
    let client = api::Client::new(cfg)?;
    let info = client.repo_info(&repo, &revision)?;
    let names: Vec<String> = info.siblings.iter().map(|s| s.rfilename.clone()).collect();
    let chosen = opts.selection.pick(&names)?;
    let commit = info.sha.clone();
    let snapshot = cache.snapshot(&commit)?;
    fs_err::create_dir_all(&snapshot)?;
    cache.write_ref(&revision, &commit)?;

    // The overall bar's total comes from the API's sizes; each worker then HEADs and fetches
    // its file with its own client.
    let size_of = |file: &str| {
        info.siblings
            .iter()
            .find(|s| s.rfilename == file)
            .and_then(|s| s.size)
            .unwrap_or(0)
    };
    reporter.report(Event::Start {
        task: "pull".into(),
        total: chosen.iter().map(|f| size_of(f)).sum(),
    });
    let new_client = || api::Client::new(cfg);
    let done = parallel(cfg.parallel, &chosen, new_client, |client, &file| {
        let meta = client.file_meta(&repo, &commit, file)?;
        let sha256 = info
            .siblings
            .iter()
            .find(|s| s.rfilename == file)
            .and_then(|s| s.lfs.as_ref())
            .map(|l| l.sha256.as_str())
            .or_else(|| is_sha256(&meta.etag).then_some(meta.etag.as_str()));
        let job = download::BlobJob {
            client,
            cache: &cache,
            repo: &repo,
            file,
            meta: &meta,
            sha256,
            reporter,
        };
        let got = job.run()?;
        cache.link(&commit, file, &meta.etag)?;
        Ok((meta, got))
    })?;
    let (metas, fetched): (Vec<_>, Vec<_>) = done.into_iter().unzip();
    reporter.report(Event::Finish);
    let files: Vec<PulledFile> = chosen
        .iter()
        .zip(&metas)
        .zip(&fetched)
        .map(|((name, meta), got)| PulledFile {
            name: (*name).into(),
            size: meta.size,
            etag: meta.etag.clone(),
            downloaded: got.downloaded,
        })
        .collect();
    Ok(PullReport {
        repo,
        revision,
        commit,
        snapshot,
        bytes_downloaded: fetched.iter().map(|f| f.downloaded).sum(),
        bytes_reused: fetched.iter().map(|f| f.reused).sum(),
        files,
        offline: false,
    })
}

/// Run `work` over `items` on up to `threads` threads, each with its own state from `init`
/// (an HTTP client); results in item order, first error wins (no new item starts after one).
fn parallel<T: Sync, R: Send, S>(
    threads: usize,
    items: &[T],
    init: impl Fn() -> Result<S> + Sync,
    work: impl Fn(&S, &T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let init_errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    let results: Mutex<Vec<Option<Result<R>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                let state = match init() {
                    Ok(state) => state,
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        if let Ok(mut errs) = init_errors.lock() {
                            errs.push(e);
                        }
                        return;
                    }
                };
                loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = work(&state, item);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut slots) = results.lock() {
                        slots[i] = Some(r);
                    }
                }
            });
        }
    });
    let slots = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::with_capacity(items.len());
    let mut first_err = init_errors
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .next();
    for slot in slots {
        match slot {
            Some(Ok(r)) => out.push(r),
            Some(Err(e)) => {
                first_err.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The snapshot a revision points at in the cache, without the network.
fn cached_commit(cache: &RepoCache, revision: &str) -> Result<Option<String>> {
    if let Some(c) = cache.read_ref(revision)? {
        return Ok(Some(c));
    }
    if is_commit(revision) && cache.snapshot(revision)?.is_dir() {
        return Ok(Some(revision.into()));
    }
    Ok(None)
}

fn pull_offline(
    repo: &str,
    revision: &str,
    opts: &PullOptions,
    cfg: &HubConfig,
    cache: &RepoCache,
) -> Result<PullReport> {
    let not_cached = || Error::OfflineNotCached {
        repo: repo.into(),
        revision: revision.into(),
        cache: cfg.cache_dir.clone(),
    };
    let commit = cached_commit(cache, revision)?.ok_or_else(not_cached)?;
    let snapshot = cache.snapshot(&commit)?;
    if !snapshot.is_dir() {
        return Err(not_cached());
    }
    let mut names = Vec::new();
    list_files(&snapshot, &snapshot, &mut names)?;
    names.sort();
    let chosen = opts.selection.pick(&names)?;
    if chosen.is_empty() {
        return Err(not_cached());
    }
    let mut files = Vec::new();
    for name in chosen {
        let path = cache.snapshot_file(&commit, name)?;
        let size = fs_err::metadata(&path)?.len();
        let etag = fs_err::read_link(&path)
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        files.push(PulledFile {
            name: name.into(),
            size,
            etag,
            downloaded: 0,
        });
    }
    Ok(PullReport {
        repo: repo.into(),
        revision: revision.into(),
        commit,
        snapshot,
        bytes_downloaded: 0,
        bytes_reused: files.iter().map(|f| f.size).sum(),
        files,
        offline: true,
    })
}

/// Files under `dir` (following links whose blobs exist), as `/`-joined paths relative to `root`.
fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in fs_err::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            list_files(root, &path, out)?;
        } else if path.is_file()
            && let Ok(rel) = path.strip_prefix(root)
        {
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(parts.join("/"));
        }
    }
    Ok(())
}

/// `org/name[@rev]` → a local model directory: the cached snapshot when it holds weights,
/// otherwise (when online) pulled first with the default file selection.
pub fn resolve_ancestor(spec: &str, cfg: &HubConfig, reporter: &dyn Reporter) -> Result<PathBuf> {
    let reference = RepoRef::parse(spec)?;
    let revision = reference.revision.as_deref().unwrap_or("main");
    let cache = Cache::new(&cfg.cache_dir).repo(&reference.repo);
    if let Some(commit) = cached_commit(&cache, revision)? {
        let snapshot = cache.snapshot(&commit)?;
        if has_weights(&snapshot)? {
            return Ok(snapshot);
        }
    }
    if cfg.offline {
        return Err(Error::OfflineNotCached {
            repo: reference.repo,
            revision: revision.into(),
            cache: cfg.cache_dir.clone(),
        });
    }
    Ok(pull(spec, &PullOptions::default(), cfg, reporter)?.snapshot)
}

/// Whether a snapshot directory holds a complete weights file.
fn has_weights(snapshot: &Path) -> Result<bool> {
    if !snapshot.is_dir() {
        return Ok(false);
    }
    for entry in fs_err::read_dir(snapshot)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let weights = [".safetensors", ".bin", ".pth", ".pt", ".gguf"]
            .iter()
            .any(|ext| name.ends_with(ext));
        if weights && path.is_file() {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r = RepoRef::parse("HuggingFaceTB/SmolLM2-135M@v1.0").unwrap();
        assert_eq!(r.repo, "HuggingFaceTB/SmolLM2-135M");
        assert_eq!(r.revision.as_deref(), Some("v1.0"));
        assert!(RepoRef::parse("oci://reg/x:1").is_err());
        assert!(RepoRef::parse("justname").is_err());
        assert!(RepoRef::parse("a/b/c").is_err());
        assert!(RepoRef::parse("../x").is_err());
        assert!(RepoRef::looks_like(
            "sentence-transformers/all-MiniLM-L6-v2"
        ));
        assert!(!RepoRef::looks_like("./model"));
    }
}
