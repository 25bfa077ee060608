//! `lgreg pull` against the loopback fake Hub: layout, resume, hashes, retries, errors,
//! offline use, concurrency, and the other verbs resolving `org/name`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lgreg::hub::{HubConfig, PullOptions, Selection, pull};
use lgreg::progress::Silent;

use crate::support::hub::FakeHub;
use crate::support::{json_result, minilm_dir};

pub const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";
const TINY: &str = "acme/tiny";

/// A private HF_HOME and a `lgreg` command that sees only it and `hub`.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub hub: FakeHub,
}

impl Sandbox {
    pub fn new(hub: FakeHub) -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
            hub,
        }
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("hf-home/hub")
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = crate::support::lgreg(self.dir.path());
        for v in [
            "HF_TOKEN",
            "HF_TOKEN_PATH",
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "HF_HUB_OFFLINE",
        ] {
            cmd.env_remove(v);
        }
        cmd.env("HF_ENDPOINT", &self.hub.url);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> crate::support::Run {
        self.run_with(self.cmd().args(args))
    }

    pub fn run_with(&self, cmd: &mut Command) -> crate::support::Run {
        let out = cmd.output().unwrap();
        crate::support::Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A library config for this sandbox, with fast retries.
    pub fn config(&self) -> HubConfig {
        let mut cfg = HubConfig::new(self.cache());
        cfg.endpoint = self.hub.url.clone();
        cfg.backoff = Duration::from_millis(10);
        cfg
    }

    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.cache()
            .join(format!("models--{}", repo.replace('/', "--")))
    }
}

/// Pseudo-random bytes (a tiny LCG; the content only has to be unhashable by accident).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// A small repo with one LFS weights file of `size` bytes.
fn tiny_hub(size: usize) -> (FakeHub, String) {
    let hub = FakeHub::start();
    let commit = hub.add_files(
        TINY,
        &[
            ("config.json", br#"{"model_type": "bert"}"#.to_vec()),
            ("model.safetensors", noise(size, 7)),
            ("README.md", b"# tiny".to_vec()),
        ],
    );
    (hub, commit)
}

fn tiny_opts() -> PullOptions {
    PullOptions::default()
}

fn no_partial_files(repo_dir: &Path) {
    for entry in crate::support::listing(repo_dir) {
        assert!(
            !entry.ends_with(".incomplete"),
            "partial file left: {entry}"
        );
    }
}

#[test]
fn pull_minilm_lays_out_the_cache_like_huggingface_hub() {
    let hub = FakeHub::start();
    let commit = hub.add_dir(MINILM, &minilm_dir());
    let sb = Sandbox::new(hub);
    let r = sb.run(&["pull", MINILM, "--json", "--token", "hf_secret"]);
    assert_eq!(r.code, 0, "{r:?}");
    let j = json_result(&r);
    assert_eq!(j["commit"], commit.as_str());
    assert_eq!(j["revision"], "main");
    let mut names: Vec<&str> = j["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "config.json",
            "model.safetensors",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt"
        ]
    );
    let total: u64 = j["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["size"].as_u64().unwrap())
        .sum();
    assert_eq!(j["bytes_downloaded"], total);
    assert_eq!(j["bytes_reused"], 0);

    let repo = sb.repo_dir(MINILM);
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        commit
    );
    let snap = repo.join("snapshots").join(&commit);
    assert_eq!(PathBuf::from(j["snapshot"].as_str().unwrap()), snap);
    let files = sb.hub.files(MINILM);
    let weights = files
        .iter()
        .find(|f| f.name == "model.safetensors")
        .unwrap();
    assert_eq!(
        std::fs::read_link(snap.join("model.safetensors")).unwrap(),
        Path::new("../../blobs").join(&weights.sha256)
    );
    let config = files.iter().find(|f| f.name == "config.json").unwrap();
    assert_eq!(
        std::fs::read_link(snap.join("config.json")).unwrap(),
        Path::new("../../blobs").join(&config.blob_id)
    );
    assert_eq!(
        std::fs::read(snap.join("model.safetensors")).unwrap(),
        std::fs::read(minilm_dir().join("model.safetensors")).unwrap()
    );
    assert!(
        sb.cache()
            .join(".locks")
            .join(format!("models--{}", MINILM.replace('/', "--")))
            .is_dir()
    );
    no_partial_files(&repo);

    // The token went to the Hub and never to the CDN.
    let reqs = sb.hub.requests();
    assert!(reqs.iter().any(|q| q.host == "cdn"));
    for q in &reqs {
        match q.host {
            "cdn" => assert_eq!(q.auth, None, "token leaked to the CDN: {q:?}"),
            _ => assert_eq!(q.auth.as_deref(), Some("Bearer hf_secret"), "{q:?}"),
        }
    }

    // A second pull reuses everything.
    let again = json_result(&sb.run(&["pull", MINILM, "--json"]));
    assert_eq!(again["bytes_downloaded"], 0);
    assert_eq!(again["bytes_reused"], total);

    // Offline: no server needed, and the other verbs resolve `org/name` from the cache.
    let mut cmd = sb.cmd();
    cmd.env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .args(["inspect", MINILM, "--json"]);
    let r = sb.run_with(&mut cmd);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(json_result(&r)["family"], "bert");
    let r = sb.run(&["pull", MINILM, "--offline", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(json_result(&r)["offline"], true);
}

#[test]
fn other_verbs_pull_a_missing_ancestor_first() {
    let hub = FakeHub::start();
    let commit = hub.add_dir(MINILM, &minilm_dir());
    hub.add_ref(MINILM, "v1.0");
    let sb = Sandbox::new(hub);
    let out = sb.dir.path().join("converted");
    let r = sb.run(&[
        "convert",
        &format!("{MINILM}@v1.0"),
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(out.join("model.safetensors").is_file());
    assert_eq!(
        std::fs::read_to_string(sb.repo_dir(MINILM).join("refs/v1.0")).unwrap(),
        commit
    );
}

#[test]
fn include_exclude_and_all_choose_files() {
    let hub = FakeHub::start();
    let commit = hub.add_dir(MINILM, &minilm_dir());
    let sb = Sandbox::new(hub);
    let sel = |include: &[&str], exclude: &[&str], all: bool| PullOptions {
        revision: None,
        selection: Selection {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            all,
        },
    };
    let r = pull(
        MINILM,
        &sel(&["*.json"], &["tokenizer*"], false),
        &sb.config(),
        &Silent,
    )
    .unwrap();
    let names: Vec<&str> = r.files.iter().map(|f| f.name.as_str()).collect();
    assert!(
        names.contains(&"config.json") && names.contains(&"modules.json"),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("tokenizer") || n.contains('/')),
        "{names:?}"
    );
    let r = pull(
        MINILM,
        &sel(&[], &["*.safetensors"], true),
        &sb.config(),
        &Silent,
    )
    .unwrap();
    assert!(r.files.iter().any(|f| f.name == "1_Pooling/config.json"));
    let nested = sb
        .repo_dir(MINILM)
        .join("snapshots")
        .join(&commit)
        .join("1_Pooling/config.json");
    assert!(
        std::fs::read_link(&nested)
            .unwrap()
            .starts_with("../../../blobs")
    );
    assert!(std::fs::read(&nested).is_ok());
}

#[test]
fn dropped_connection_resumes_with_range_within_and_across_runs() {
    let size = 3 << 20;
    let (hub, commit) = tiny_hub(size);
    let sb = Sandbox::new(hub);
    // Within a run: cut after 1 MiB, the retry asks for the rest.
    sb.hub
        .faults()
        .drop_after
        .insert("model.safetensors".into(), 1 << 20);
    let r = pull(TINY, &tiny_opts(), &sb.config(), &Silent).unwrap();
    assert_eq!(r.commit, commit);
    let ranges: Vec<Option<String>> = sb
        .hub
        .requests()
        .iter()
        .filter(|q| q.host == "cdn")
        .map(|q| q.range.clone())
        .collect();
    assert_eq!(ranges, [None, Some(format!("bytes={}-", 1 << 20))]);
    assert_eq!(sb.hub.bytes_served_for("model.safetensors"), size as u64);

    // Across runs: no retries, the run fails and keeps the partial blob; the next run resumes.
    let (hub, _) = tiny_hub(size);
    let sb = Sandbox::new(hub);
    let mut cfg = sb.config();
    cfg.retries = 0;
    sb.hub
        .faults()
        .drop_after
        .insert("model.safetensors".into(), 1 << 20);
    let err = pull(TINY, &tiny_opts(), &cfg, &Silent).unwrap_err();
    assert!(matches!(err, lgreg::Error::HubTransfer { .. }), "{err}");
    let snap = sb.repo_dir(TINY).join("snapshots");
    assert!(
        !crate::support::listing(&snap)
            .iter()
            .any(|f| f.ends_with("model.safetensors"))
    );
    let r = pull(TINY, &tiny_opts(), &cfg, &Silent).unwrap();
    assert_eq!(r.bytes_downloaded, (size - (1 << 20)) as u64);
    assert!(r.bytes_reused >= 1 << 20, "{r:?}");
    let last = sb
        .hub
        .requests()
        .into_iter()
        .rfind(|q| q.host == "cdn")
        .unwrap();
    assert_eq!(last.range, Some(format!("bytes={}-", 1 << 20)));
    let blob = std::fs::read(snap.join(&r.commit).join("model.safetensors")).unwrap();
    assert_eq!(blob, noise(size, 7));
    no_partial_files(&sb.repo_dir(TINY));
}

#[test]
fn flipped_byte_is_a_hash_error_and_nothing_enters_the_cache() {
    let (hub, _) = tiny_hub(2 << 20);
    let sb = Sandbox::new(hub);
    sb.hub.faults().flip_byte.insert("model.safetensors".into());
    let err = pull(TINY, &tiny_opts(), &sb.config(), &Silent).unwrap_err();
    assert!(matches!(err, lgreg::Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");
    let sha = &sb.hub.files(TINY)[1].sha256;
    let blobs = sb.repo_dir(TINY).join("blobs");
    assert!(!blobs.join(sha).exists());
    no_partial_files(&sb.repo_dir(TINY));
    let listing = crate::support::listing(&sb.repo_dir(TINY).join("snapshots"));
    assert!(
        !listing.iter().any(|f| f.ends_with("model.safetensors")),
        "{listing:?}"
    );
}

#[test]
fn server_errors_are_retried() {
    let (hub, _) = tiny_hub(1 << 20);
    let sb = Sandbox::new(hub);
    {
        let mut f = sb.hub.faults();
        f.fail_500.insert("api".into(), 2);
        f.fail_500.insert("model.safetensors".into(), 2);
    }
    let r = pull(TINY, &tiny_opts(), &sb.config(), &Silent).unwrap();
    assert_eq!(r.files.len(), 2);
    let gets = sb
        .hub
        .requests()
        .iter()
        .filter(|q| q.host == "cdn" && q.method == "GET")
        .count();
    assert_eq!(gets, 3);
    let api = sb
        .hub
        .requests()
        .iter()
        .filter(|q| q.path.starts_with("/api/"))
        .count();
    assert_eq!(api, 3);
}

#[test]
fn slow_server_still_completes() {
    let (hub, _) = tiny_hub(512 << 10);
    let sb = Sandbox::new(hub);
    sb.hub.faults().delay = Some(Duration::from_millis(20));
    let r = pull(TINY, &tiny_opts(), &sb.config(), &Silent).unwrap();
    assert_eq!(
        r.bytes_downloaded,
        r.files.iter().map(|f| f.size).sum::<u64>()
    );
}

#[test]
fn unauthorized_and_gated_say_how_to_pass_a_token() {
    let (hub, _) = tiny_hub(1 << 20);
    let sb = Sandbox::new(hub);
    sb.hub.faults().token = Some("hf_right".into());
    let r = sb.run(&["pull", TINY]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("`acme/tiny`") && r.stderr.contains("401"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("--token") && r.stderr.contains("HF_TOKEN"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("licence"), "{}", r.stderr);
    // The saved token file works, and never reaches the CDN.
    std::fs::create_dir_all(sb.dir.path().join("hf-home")).unwrap();
    std::fs::write(sb.dir.path().join("hf-home/token"), "hf_right\n").unwrap();
    let r = sb.run(&["pull", TINY]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        sb.hub
            .requests()
            .iter()
            .filter(|q| q.host == "cdn")
            .all(|q| q.auth.is_none())
    );

    sb.hub.faults().status = Some(403);
    let r = sb.run(&["pull", TINY, "--token", "hf_right", "--revision", "other"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("403") && r.stderr.contains("gated"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("hint: pass a token"), "{}", r.stderr);
}

#[test]
fn not_found_names_the_repo_or_the_revision() {
    let (hub, _) = tiny_hub(1024);
    let sb = Sandbox::new(hub);
    let r = sb.run(&["pull", "acme/nope"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("repo `acme/nope` was not found"),
        "{}",
        r.stderr
    );
    let r = sb.run(&["pull", "acme/tiny@no-such-branch", "--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("revision `no-such-branch` of repo `acme/tiny`"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("\"type\":\"error\""), "{}", r.stdout);
    assert!(!sb.repo_dir("acme/nope").exists());
}

#[test]
fn offline_with_nothing_cached_is_a_clear_error() {
    let (hub, _) = tiny_hub(1024);
    let sb = Sandbox::new(hub);
    let mut cmd = sb.cmd();
    cmd.env("HF_HUB_OFFLINE", "1").args(["pull", TINY]);
    let r = sb.run_with(&mut cmd);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("is not in the Hugging Face cache"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("offline"), "{}", r.stderr);
    let r = sb.run(&["inspect", TINY, "--offline"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("is not in the Hugging Face cache"),
        "{}",
        r.stderr
    );
    assert!(sb.hub.requests().is_empty());
}

#[test]
fn oci_references_go_to_the_registry_client() {
    // `oci://` is dispatched to the OCI client (see `share.rs`); plain HTTP is refused for a
    // host that is not loopback, before any connection is made.
    let (hub, _) = tiny_hub(1024);
    let sb = Sandbox::new(hub);
    let r = sb.run(&["pull", "oci://registry.example/genes/x:0.1.0", "--insecure"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("only allowed for loopback"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_full_disk_is_reported_and_leaves_no_snapshot_entry() {
    let (hub, _) = tiny_hub(4 << 20);
    let sb = Sandbox::new(hub);
    let mnt = sb.dir.path().join("small");
    let Some(tmpfs) = crate::support::Tmpfs::mount(&mnt, "1m") else {
        return;
    };
    let mut cmd = sb.cmd();
    cmd.env("HF_HUB_CACHE", &mnt).args(["pull", TINY]);
    let r = sb.run_with(&mut cmd);
    let listing = crate::support::listing(&mnt);
    drop(tmpfs);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no space left"), "{}", r.stderr);
    assert!(r.stderr.contains("HF_HUB_CACHE"), "{}", r.stderr);
    assert!(
        !listing
            .iter()
            .any(|f| f.contains("snapshots") && f.ends_with("model.safetensors")),
        "{listing:?}"
    );
}

#[test]
fn two_concurrent_pulls_download_each_byte_once() {
    let size = 4 << 20;
    let (hub, commit) = tiny_hub(size);
    hub.faults().delay = Some(Duration::from_millis(2));
    let sb = Sandbox::new(hub);
    let spawn = || {
        sb.cmd()
            .args(["pull", TINY, "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn();
    let b = spawn();
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(sb.hub.bytes_served_for("model.safetensors"), size as u64);
    let snap = sb.repo_dir(TINY).join("snapshots").join(commit);
    assert_eq!(
        std::fs::read(snap.join("model.safetensors")).unwrap(),
        noise(size, 7)
    );
    no_partial_files(&sb.repo_dir(TINY));
}

#[test]
fn pull_smollm2_f32_conversion() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("smollm2-f32");
    let opts = lgreg::convert::ConvertOptions {
        dtype: Some(lgreg::checkpoint::DType::F32),
        ..Default::default()
    };
    lgreg::convert::convert(&crate::support::smollm2_gguf(), &dir, &opts, &Silent)
        .expect("SmolLM2 GGUF -> F32 conversion ");
    let hub = FakeHub::start();
    let commit = hub.add_dir("HuggingFaceTB/SmolLM2-135M-Instruct", &dir);
    let sb = Sandbox::new(hub);
    let r = pull(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        &PullOptions::default(),
        &sb.config(),
        &Silent,
    )
    .unwrap();
    assert_eq!(r.commit, commit);
    let snap = r.snapshot;
    assert_eq!(
        std::fs::read(snap.join("model.safetensors")).unwrap(),
        std::fs::read(dir.join("model.safetensors")).unwrap()
    );
}
