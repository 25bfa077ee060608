//! `lgreg push` / `lgreg pull oci://...` / `lgreg login` against a real distribution registry
//! (`docker-registry`), with faults injected by killing it and by a corrupting proxy, and
//! interop with oras-py. See `support/oci.rs` for when these skip.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::gene::{gene_dir, json, lgreg};
use crate::support::oci::{Auth, Fault, OciRegistry, Proxy, http};
use crate::support::token::{SERVICE, TokenServer};

/// A local registry with `tiny:1.0.0` (three small units) published; returns the digest.
fn publish_tiny(reg: &Path, work: &Path, name: &str, units: &[(&str, u64, usize)]) -> String {
    let dir = gene_dir(&work.join(name), "heur", units);
    let out = json(
        reg,
        &[
            "publish",
            dir.to_str().unwrap(),
            "--name",
            name,
            "--version",
            "1.0.0",
        ],
    );
    out["digest"].as_str().unwrap().to_string()
}

fn run_stdin(
    reg: &Path,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &Path)],
) -> std::process::Output {
    let mut cmd = lgreg(reg);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("DOCKER_CONFIG", reg.join("no-docker"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `lgreg login HOST -u alice --password-stdin --insecure` with Docker's files in `docker`.
fn login_as_alice(reg: &Path, host: &str, stdin: &str, docker: &Path) -> std::process::Output {
    run_stdin(
        reg,
        &[
            "login",
            host,
            "-u",
            "alice",
            "--password-stdin",
            "--insecure",
        ],
        stdin,
        &[("DOCKER_CONFIG", docker)],
    )
}

/// Every blob file of a local registry, by name, with its bytes.
fn blobs(reg: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for e in fs_err::read_dir(reg.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        out.insert(
            e.file_name().to_string_lossy().into_owned(),
            fs_err::read(e.path()).unwrap(),
        );
    }
    out
}

const UNITS: &[(&str, u64, usize)] = &[
    ("embeddings", 1, 4096),
    ("block0", 2, 2048),
    ("head", 3, 1024),
];

#[test]
fn round_trip_is_byte_identical_and_second_push_sends_nothing() {
    let Some(server) = OciRegistry::start(Auth::Anonymous) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let a = work.path().join("a");
    let digest = publish_tiny(&a, work.path(), "tiny", UNITS);
    let dest = format!("oci://{}/genes/tiny", server.host());

    let pushed = json(&a, &["push", "tiny:1.0.0", &dest, "--insecure"]);
    assert_eq!(pushed["digest"], digest.as_str());
    assert_eq!(pushed["reference"], format!("{dest}:1.0.0"));
    assert_eq!(pushed["blobs_uploaded"], 4);
    let uploads = server.upload_starts();
    assert_eq!(uploads, 4, "{}", server.log_text());

    // Again: every blob is already there, so no upload starts.
    let again = json(&a, &["push", "tiny:1.0.0", &dest, "--insecure"]);
    assert_eq!(again["blobs_uploaded"], 0);
    assert_eq!(again["blobs_skipped"], 4);
    assert_eq!(server.upload_starts(), uploads);

    // Chunked push of the same gene under another tag and repository.
    let chunked = json(
        &a,
        &[
            "push",
            "tiny:1.0.0",
            &format!("oci://{}/other/tiny:c1", server.host()),
            "--insecure",
            "--chunk-size",
            "1k",
        ],
    );
    assert_eq!(chunked["digest"], digest.as_str());

    // Tags as the registry lists them.
    let (status, body) = http(server.port, "GET", "/v2/genes/tiny/tags/list").unwrap();
    assert_eq!(status, 200);
    let tags: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["1.0.0"]));

    // Pull into a fresh registry: same manifest digest, same blobs, byte for byte.
    let b = work.path().join("b");
    let pulled = json(&b, &["pull", &format!("{dest}:1.0.0"), "--insecure"]);
    assert_eq!(pulled["digest"], digest.as_str());
    assert_eq!(pulled["tag"], "tiny:1.0.0");
    assert_eq!(pulled["blobs_downloaded"], 4);
    assert_eq!(blobs(&a), blobs(&b));
    json(&b, &["verify"]);
    let shown = json(&b, &["show", "tiny:1.0.0"]);
    assert_eq!(shown["digest"], digest.as_str());

    // By digest, under another local name; then again: nothing to download.
    let c = work.path().join("c");
    let by_digest = format!("oci://{}/other/tiny@{digest}", server.host());
    let p = json(
        &c,
        &["pull", &by_digest, "--insecure", "--as", "mine:2.0.0"],
    );
    assert_eq!(p["tag"], "mine:2.0.0");
    assert_eq!(blobs(&a), blobs(&c));
    let p = json(
        &c,
        &["pull", &by_digest, "--insecure", "--as", "mine:2.0.0"],
    );
    assert_eq!(p["blobs_downloaded"], 0);
    assert_eq!(p["blobs_skipped"], 4);

    // Cross-repository mount: a third repository gets the blobs without uploads.
    let before = server.upload_starts();
    let m = json(
        &a,
        &[
            "push",
            "tiny:1.0.0",
            &format!("oci://{}/third/tiny", server.host()),
            "--insecure",
            "--mount-from",
            "genes/tiny",
        ],
    );
    assert_eq!(m["blobs_mounted"], 4, "{m}");
    assert_eq!(m["blobs_uploaded"], 0);
    // A mount is a POST to the upload endpoint answered 201; no PATCH/PUT of data follows.
    assert!(server.upload_starts() >= before);
    assert!(
        !server
            .log_text()
            .contains("\"PUT /v2/third/tiny/blobs/uploads")
    );
}

#[test]
fn push_with_lineage_tags_descendants() {
    let Some(server) = OciRegistry::start(Auth::Anonymous) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let a = work.path().join("a");
    let digest = publish_tiny(&a, work.path(), "base", UNITS);
    let child = crate::support::gene::gene_dir_with(
        &work.path().join("kid"),
        "tleg",
        &[("grown", 9, 512)],
        Some(&digest),
    );
    json(
        &a,
        &[
            "publish",
            child.to_str().unwrap(),
            "--name",
            "kid",
            "--version",
            "0.1.0",
        ],
    );
    let dest = format!("oci://{}/genes/base:1.0.0", server.host());
    let out = json(
        &a,
        &["push", "base:1.0.0", &dest, "--insecure", "--with-lineage"],
    );
    assert_eq!(out["lineage"].as_array().unwrap().len(), 1, "{out}");
    let (_, body) = http(server.port, "GET", "/v2/genes/base/tags/list").unwrap();
    let tags: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["1.0.0", "kid-0.1.0"]));
}

#[test]
fn killed_registry_mid_push_then_rerun_completes() {
    let Some(mut server) = OciRegistry::start(Auth::Anonymous) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let a = work.path().join("a");
    // ~24 MB in 4 KiB chunks: thousands of PATCH requests, slow enough to interrupt.
    let big: &[(&str, u64, usize)] = &[
        ("u0", 1, 2_000_000),
        ("u1", 2, 2_000_000),
        ("u2", 3, 2_000_000),
    ];
    let digest = publish_tiny(&a, work.path(), "big", big);
    let dest = format!("oci://{}/genes/big:1.0.0", server.host());
    let push = lgreg(&a)
        .args([
            "push",
            "big:1.0.0",
            &dest,
            "--insecure",
            "--chunk-size",
            "4k",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !server
        .log_text()
        .contains("PATCH /v2/genes/big/blobs/uploads")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    server.kill();
    let out = push.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the push should fail while the registry is down"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error:"), "{stderr}");
    server.restart();
    let done = json(&a, &["push", "big:1.0.0", &dest, "--insecure"]);
    assert_eq!(done["digest"], digest.as_str());
    let b = work.path().join("b");
    json(&b, &["pull", &dest, "--insecure"]);
    assert_eq!(blobs(&a), blobs(&b));
}

#[test]
fn corrupted_blob_fails_pull_and_stores_nothing() {
    let Some(server) = OciRegistry::start(Auth::Anonymous) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let a = work.path().join("a");
    publish_tiny(&a, work.path(), "tiny", UNITS);
    json(
        &a,
        &[
            "push",
            "tiny:1.0.0",
            &format!("oci://{}/genes/tiny", server.host()),
            "--insecure",
        ],
    );
    // Corrupt the largest unit on its way down.
    let m = json(&a, &["show", "tiny:1.0.0"]);
    let victim = m["units"][0]["digest"].as_str().unwrap().to_string();
    let proxy = Proxy::start(
        server.port,
        Fault::Flip {
            path: victim.clone(),
        },
    );
    let b = work.path().join("b");
    let out = crate::support::gene::run(
        &b,
        &[
            "pull",
            &format!("oci://127.0.0.1:{}/genes/tiny:1.0.0", proxy.port),
            "--insecure",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("digest") && stderr.contains(&victim),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Nothing tagged, the bad blob absent, every stored blob intact, no temp files left.
    let ls = json(&b, &["ls"]);
    assert!(
        ls.to_string().contains("[]") || !ls.to_string().contains("tiny"),
        "{ls}"
    );
    let stored = blobs(&b);
    assert!(!stored.contains_key(victim.trim_start_matches("sha256:")));
    for (name, bytes) in &stored {
        assert_eq!(&lgreg::registry::Digest::of(bytes).hex(), name);
    }
    // No temp data either: only the empty lock of the failed blob's download stays (for `gc`).
    for e in fs_err::read_dir(b.join(".lgreg/tmp")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(name.ends_with(".partial.lock"), "{name}");
        assert_eq!(e.metadata().unwrap().len(), 0, "{name}");
    }
}

#[test]
fn basic_auth_wrong_password_is_a_clear_401_without_the_secret() {
    let Some(server) = OciRegistry::start(Auth::Basic("alice", "correct-horse")) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let a = work.path().join("a");
    let digest = publish_tiny(&a, work.path(), "tiny", UNITS);
    let dest = format!("oci://{}/genes/tiny", server.host());
    let secret = "wrong-s3cret-value";
    let out = run_stdin(
        &a,
        &[
            "push",
            "tiny:1.0.0",
            &dest,
            "--insecure",
            "--username",
            "alice",
            "--password-stdin",
        ],
        &format!("{secret}\n"),
        &[],
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("401"), "{all}");
    assert!(all.contains("refused"), "{all}");
    assert!(!all.contains(secret), "{all}");

    // Anonymous: refused too, and says no credentials were sent.
    let anon = crate::support::gene::fails(&a, &["push", "tiny:1.0.0", &dest, "--insecure"]);
    assert!(anon.contains("no credentials"), "{anon}");

    // The right password works; `login` saves it in Docker's file, which later runs read.
    let out = run_stdin(
        &a,
        &[
            "push",
            "tiny:1.0.0",
            &dest,
            "--insecure",
            "-u",
            "alice",
            "--password-stdin",
        ],
        "correct-horse\n",
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docker = work.path().join("docker");
    let bad_login = login_as_alice(&a, &server.host(), &format!("{secret}\n"), &docker);
    assert!(!bad_login.status.success());
    assert!(!String::from_utf8_lossy(&bad_login.stderr).contains(secret));
    assert!(!docker.join("config.json").exists());
    let login = login_as_alice(&a, &server.host(), "correct-horse\n", &docker);
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let b = work.path().join("b");
    let out = lgreg(&b)
        .args(["--json", "pull", &format!("{dest}:1.0.0"), "--insecure"])
        .env("DOCKER_CONFIG", &docker)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&digest));
}

/// A Python with oras-py, or `None` to skip (fails under `LGREG_REQUIRE_ORAS=1`).
fn oras_python() -> Option<String> {
    crate::support::python_with(
        "oras.client",
        "LGREG_REQUIRE_ORAS",
        "pip install oras==0.2.43",
    )
}

#[test]
fn oras_py_interop_both_ways() {
    let Some(server) = OciRegistry::start(Auth::Anonymous) else {
        return;
    };
    let Some(py) = oras_python() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let a = work.path().join("a");
    publish_tiny(&a, work.path(), "tiny", UNITS);
    json(
        &a,
        &[
            "push",
            "tiny:1.0.0",
            &format!("oci://{}/genes/tiny", server.host()),
            "--insecure",
        ],
    );

    // oras-py pulls what lgreg pushed: the units come out under their titles.
    let out_dir = work.path().join("oras-out");
    let script = format!(
        "import oras.client\nc = oras.client.OrasClient(hostname='{h}', insecure=True)\nprint(c.pull(target='{h}/genes/tiny:1.0.0', outdir='{o}'))\n",
        h = server.host(),
        o = out_dir.display()
    );
    let o = Command::new(&py).args(["-c", &script]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let unit = fs_err::read(out_dir.join("embeddings.safetensors")).unwrap();
    assert_eq!(
        unit,
        fs_err::read(work.path().join("tiny/embeddings.safetensors")).unwrap()
    );

    // lgreg pulls what oras-py pushed.
    let src = work.path().join("src");
    fs_err::create_dir_all(&src).unwrap();
    fs_err::write(src.join("hello.txt"), b"hello from oras\n").unwrap();
    let script = format!(
        "import oras.client\nc = oras.client.OrasClient(hostname='{h}', insecure=True)\nc.push(files=['hello.txt'], target='{h}/art/hello:1.0.0')\n",
        h = server.host()
    );
    let o = Command::new(&py)
        .args(["-c", &script])
        .current_dir(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = work.path().join("b");
    let pulled = json(
        &b,
        &[
            "pull",
            &format!("oci://{}/art/hello:1.0.0", server.host()),
            "--insecure",
        ],
    );
    assert_eq!(pulled["tag"], "hello:1.0.0");
    let stored = blobs(&b);
    assert!(stored.values().any(|v| v == b"hello from oras\n"));
}

/// stdout and stderr of a run, together.
fn all_output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `lgreg --json ARGS` with `stdin` and trace logging asked for (lgreg has no verbose flag and
/// installs no logger, so this proves nothing leaks that way either); the output, and the
/// parsed result when it succeeded.
fn token_run(reg: &Path, args: &[&str], stdin: &str) -> (String, Option<serde_json::Value>) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let rust_log = Path::new("trace");
    let out = run_stdin(reg, &all, stdin, &[("RUST_LOG", rust_log)]);
    let text = all_output(&out);
    let result = out.status.success().then(|| {
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        serde_json::from_str(&line).unwrap()
    });
    (text, result)
}

#[test]
fn bearer_token_flow_push_pull_login_and_refusals() {
    let password = "correct-horse-battery";
    let Some(tokens) = TokenServer::start("alice", password) else {
        return;
    };
    let Some(server) = OciRegistry::start(Auth::Token(&tokens)) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let a = work.path().join("a");
    let digest = publish_tiny(&a, work.path(), "tiny", UNITS);
    let dest = format!("oci://{}/genes/tiny", server.host());
    let with_password = format!("{password}\n");
    let creds = ["--insecure", "--username", "alice", "--password-stdin"];
    let mut outputs = Vec::new();

    // The registry answers 401 with a Bearer challenge; lgreg asks the realm for a token.
    let mut args: Vec<&str> = vec!["push", "tiny:1.0.0", &dest];
    args.extend_from_slice(&creds);
    let (text, pushed) = token_run(&a, &args, &with_password);
    let pushed = pushed.unwrap_or_else(|| panic!("{text}"));
    assert_eq!(pushed["digest"], digest.as_str());
    assert_eq!(pushed["blobs_uploaded"], 4);
    outputs.push(text);
    let asked = tokens.requests();
    assert!(!asked.is_empty());
    for r in &asked {
        assert_eq!(r.service.as_deref(), Some(SERVICE), "{r:?}");
        assert_eq!(r.user.as_deref(), Some("alice"), "{r:?}");
        assert_eq!(r.status, 200, "{r:?}");
    }
    let push_scope = asked
        .iter()
        .find(|r| r.scopes == ["repository:genes/tiny:pull,push"])
        .unwrap_or_else(|| panic!("no push scope asked: {asked:?}"));
    assert_eq!(push_scope.granted, ["repository:genes/tiny:pull,push"]);

    // Pull it into a fresh registry with the same credentials: byte-identical.
    let b = work.path().join("b");
    let before = tokens.requests().len();
    let src = format!("{dest}:1.0.0");
    let mut args: Vec<&str> = vec!["pull", &src];
    args.extend_from_slice(&creds);
    let (text, pulled) = token_run(&b, &args, &with_password);
    let pulled = pulled.unwrap_or_else(|| panic!("{text}"));
    assert_eq!(pulled["digest"], digest.as_str());
    assert_eq!(blobs(&a), blobs(&b));
    outputs.push(text);
    let pull_asks: Vec<_> = tokens.requests()[before..].to_vec();
    assert!(
        pull_asks
            .iter()
            .any(|r| r.scopes == ["repository:genes/tiny:pull"] && r.status == 200),
        "{pull_asks:?}"
    );

    // A wrong password: the token server says 401, lgreg says so without the secret.
    let secret = "wrong-s3cret-token-pass";
    let mut args: Vec<&str> = vec!["push", "tiny:1.0.0", &dest];
    args.extend_from_slice(&creds);
    let (text, failed) = token_run(&a, &args, &format!("{secret}\n"));
    assert!(failed.is_none(), "{text}");
    assert!(text.contains("401") && text.contains("refused"), "{text}");
    assert!(
        text.contains("rejected") && !text.contains(secret),
        "{text}"
    );
    assert!(tokens.requests().iter().any(|r| r.status == 401));
    outputs.push(text);

    // Anonymous: the token grants nothing on `genes/`, so the registry refuses, and lgreg
    // says no credentials were sent.
    let c = work.path().join("c");
    let (text, failed) = token_run(&c, &["pull", &src, "--insecure"], "");
    assert!(failed.is_none(), "{text}");
    assert!(text.contains("no credentials"), "{text}");
    outputs.push(text);
    assert!(
        tokens
            .requests()
            .iter()
            .any(|r| r.user.is_none() && r.granted.is_empty())
    );

    // ...but `public/` is open to anonymous pulls.
    let public = format!("oci://{}/public/tiny:1.0.0", server.host());
    let mut args: Vec<&str> = vec!["push", "tiny:1.0.0", &public];
    args.extend_from_slice(&creds);
    let (text, ok) = token_run(&a, &args, &with_password);
    assert!(ok.is_some(), "{text}");
    outputs.push(text);
    let (text, anon) = token_run(&c, &["pull", &public, "--insecure"], "");
    assert_eq!(
        anon.unwrap_or_else(|| panic!("{text}"))["digest"],
        digest.as_str()
    );
    assert_eq!(blobs(&a), blobs(&c));
    outputs.push(text);

    // `login` accepts the right password even though the token grants nothing on the probe
    // repository, and refuses a wrong one.
    let docker = work.path().join("docker");
    let login = |stdin: &str| login_as_alice(&a, &server.host(), stdin, &docker);
    let bad = login(&format!("{secret}\n"));
    assert!(!bad.status.success());
    assert!(!docker.join("config.json").exists());
    outputs.push(all_output(&bad));
    let good = login(&with_password);
    assert!(good.status.success(), "{}", all_output(&good));
    outputs.push(all_output(&good));
    let probe = tokens
        .requests()
        .into_iter()
        .rfind(|r| r.scopes == ["repository:lgreg-login-check:pull"])
        .unwrap();
    assert_eq!((probe.status, probe.granted.len()), (200, 0), "{probe:?}");

    // No password and no token in anything lgreg printed.
    let issued = tokens.tokens();
    assert!(!issued.is_empty());
    for text in &outputs {
        assert!(!text.contains(password), "{text}");
        assert!(!text.contains(secret), "{text}");
        for t in &issued {
            assert!(!text.contains(t.as_str()), "a token leaked: {text}");
        }
    }
}

/// A gene whose first unit (4 MB) is big enough to cut mid-way; pushed to `genes/big`.
/// Returns the local registry, the remote reference, the big unit's digest and its size.
fn pushed_big_gene(server: &OciRegistry, work: &Path) -> (std::path::PathBuf, String, String, u64) {
    let a = work.join("a");
    publish_tiny(
        &a,
        work,
        "big",
        &[("embeddings", 1, 1_000_000), ("head", 2, 1024)],
    );
    let dest = format!("oci://{}/genes/big:1.0.0", server.host());
    json(&a, &["push", "big:1.0.0", &dest, "--insecure"]);
    let shown = json(&a, &["show", "big:1.0.0"]);
    let unit = &shown["units"][0];
    assert_eq!(unit["title"], "embeddings.safetensors", "{shown}");
    let victim = unit["digest"].as_str().unwrap().to_string();
    let size = unit["size"].as_u64().unwrap();
    (a, dest, victim, size)
}

/// `lgreg pull` of genes/big:1.0.0 through the proxy.
fn pull_via(reg: &Path, proxy: &Proxy) -> std::process::Output {
    let src = format!("oci://127.0.0.1:{}/genes/big:1.0.0", proxy.port);
    crate::support::gene::run(reg, &["--json", "pull", &src, "--insecure"])
}

/// Cut the download of `victim` after `after` bytes: the pull fails with a transfer error that
/// says it resumes, and keeps the partial file. Returns the partial file's path and length.
fn cut_pull(reg: &Path, proxy: &Proxy, victim: &str, after: usize) -> (std::path::PathBuf, u64) {
    proxy.set_fault(Fault::Cut {
        path: victim.to_string(),
        after,
    });
    let out = pull_via(reg, proxy);
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("broke off after") && text.contains("resume"),
        "{text}"
    );
    let hex = victim.trim_start_matches("sha256:");
    let partial = reg.join(".lgreg/tmp").join(format!("{hex}.partial"));
    let len = fs_err::metadata(&partial).unwrap().len();
    assert!(len > 0 && len <= after as u64, "{len}");
    assert!(!reg.join("blobs/sha256").join(hex).exists());
    (partial, len)
}

#[test]
fn interrupted_pull_resumes_with_a_range_request() {
    let Some(server) = OciRegistry::start(Auth::Anonymous) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (a, _, victim, size) = pushed_big_gene(&server, work.path());
    let proxy = Proxy::start(server.port, Fault::Nothing);
    let b = work.path().join("b");
    let (partial, len) = cut_pull(&b, &proxy, &victim, 1_500_000);
    assert!(!json(&b, &["ls"]).to_string().contains("big"));

    // A publish sweeps dead writers' temp files, but not a partial download.
    publish_tiny(&b, work.path(), "other", &[("u", 9, 16)]);
    assert_eq!(fs_err::metadata(&partial).unwrap().len(), len);

    let out = pull_via(&b, &proxy);
    assert!(out.status.success(), "{}", all_output(&out));
    let gets = proxy.gets(&victim);
    assert_eq!(gets.len(), 2, "{gets:?}");
    let resumed = &gets[1];
    assert_eq!(
        resumed.range.as_deref(),
        Some(format!("bytes={len}-{}", size - 1).as_str()),
        "{resumed:?}"
    );
    assert_eq!(resumed.status, 206);
    assert_eq!(resumed.body_sent as u64, size - len);
    let pulled: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(pulled["tag"], "big:1.0.0");
    // Byte-identical; the partial file and its lock are gone.
    let (ours, theirs) = (blobs(&a), blobs(&b));
    for (name, bytes) in &ours {
        assert_eq!(theirs.get(name), Some(bytes), "{name}");
    }
    assert!(!partial.exists());
    let left: Vec<_> = fs_err::read_dir(b.join(".lgreg/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    json(&b, &["verify"]);
}

#[test]
fn corrupt_partial_is_never_stored_and_ignored_ranges_start_over() {
    let Some(server) = OciRegistry::start(Auth::Anonymous) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (a, _, victim, size) = pushed_big_gene(&server, work.path());
    let hex = victim.trim_start_matches("sha256:").to_string();
    let proxy = Proxy::start(server.port, Fault::Nothing);
    let b = work.path().join("b");

    // A byte of the partial file goes bad on disk: the resumed blob fails its digest check,
    // nothing is stored and the partial file is removed.
    let (partial, _) = cut_pull(&b, &proxy, &victim, 1_000_000);
    let mut bytes = fs_err::read(&partial).unwrap();
    bytes[100] ^= 0x40;
    fs_err::write(&partial, &bytes).unwrap();
    let out = pull_via(&b, &proxy);
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("digest") && text.contains(&hex), "{text}");
    assert!(!partial.exists());
    assert!(!b.join("blobs/sha256").join(&hex).exists());
    assert!(!json(&b, &["ls"]).to_string().contains("big"));

    // `gc` removes a partial download (no pull runs meanwhile); the next pull starts over.
    let (partial, len) = cut_pull(&b, &proxy, &victim, 1_000_000);
    let gc = json(&b, &["gc"]);
    assert_eq!(gc["tmp_bytes_freed"].as_u64(), Some(len), "{gc}");
    assert!(!partial.exists());

    // A partial longer than the blob is dropped: the whole blob is asked for again.
    fs_err::write(&partial, vec![7u8; size as usize + 10]).unwrap();
    let out = pull_via(&b, &proxy);
    assert!(out.status.success(), "{}", all_output(&out));
    let last = proxy.gets(&victim).pop().unwrap();
    assert_eq!(
        last.range,
        Some(format!("bytes=0-{}", size - 1)),
        "{last:?}"
    );
    assert_eq!(last.body_sent as u64, size);
    assert!(!partial.exists());
    assert_eq!(blobs(&a), blobs(&b));

    // A server that ignores the range answers 200 with the whole blob, which replaces the
    // partial bytes.
    let c = work.path().join("c");
    let (partial, len) = cut_pull(&c, &proxy, &victim, 700_000);
    proxy.set_fault(Fault::IgnoreRange {
        path: victim.clone(),
    });
    let out = pull_via(&c, &proxy);
    assert!(out.status.success(), "{}", all_output(&out));
    let last = proxy.gets(&victim).pop().unwrap();
    assert_eq!(
        last.range,
        Some(format!("bytes={len}-{}", size - 1)),
        "{last:?}"
    );
    assert_eq!(
        (last.status, last.body_sent as u64),
        (200, size),
        "{last:?}"
    );
    assert!(!partial.exists());
    assert_eq!(blobs(&a), blobs(&c));
    json(&b, &["verify"]);
    json(&c, &["verify"]);
}
