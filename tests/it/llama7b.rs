//! Llama-2-7B width out of core: a 4-layer seeded stand-in laid out exactly as
//! `meta-llama/Llama-2-7b-hf` publishes it (its config, names, shapes, f16, and the published
//! split into two shards; 2.1 GB) is served by the fake Hub as a gated repo, then pulled,
//! inspected, converted, extracted (tleg, sws, auto's first-half rule) and spawned. Each verb's
//! peak resident memory is its own `ru_maxrss`; none may come near the model's size. The full
//! 32-layer pipeline is `scripts/bench-7b.sh`.

use std::path::Path;

use lgreg::checkpoint::DType;
use lgreg::checkpoint::seeded::PublishedLayout;
use lgreg::progress::Silent;

use crate::pull::Sandbox;
use crate::support::hub::FakeHub;
use crate::support::{Run, free_bytes, run_measured};

const REPO: &str = "meta-llama/Llama-2-7b-hf";
/// The token of an account that accepted the licence.
const ACCEPTED: &str = "hf_accepted_licence";
/// The most any streaming verb here may hold resident: half the 2.1 GB model. The largest
/// tensor is the 262 MB f16 embedding (524 MB as f32), the largest layer tensor 90 MB (180 MB
/// as f32).
const RSS_LIMIT: u64 = 1 << 30;
/// Disk the test writes: the stand-in and its cached copy (2.1 GB each), a bf16 conversion
/// (1.1 GB), three genes (tleg's f32 lines 1.6 GB, sws and auto 0.8 GB each as f16, one shared
/// copy of the globals 0.5 GB) and an f32 descendant (2.1 GB), with room to spare.
const DISK_NEEDED: u64 = 12 << 30;

fn stand_in(dir: &Path) {
    let config = include_str!("../data/meta-llama--Llama-2-7b-hf.config.json");
    let index = include_str!("../data/meta-llama--Llama-2-7b-hf.model.safetensors.index.json");
    let layout = PublishedLayout::llama(
        &serde_json::from_str(config).unwrap(),
        &serde_json::from_str(index).unwrap(),
        Some(4),
        DType::F16,
    )
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    layout.write(dir, 0, &Silent).unwrap();
}

/// Run one verb measured; it must succeed within [`RSS_LIMIT`].
#[allow(clippy::print_stderr)] // the peaks, for the log
fn streamed(sb: &Sandbox, verb: &str, args: &[&str]) -> Run {
    let mut cmd = sb.cmd();
    cmd.args(args).arg("--no-progress");
    let started = std::time::Instant::now();
    let (run, peak) = run_measured(&cmd);
    eprintln!(
        "{verb}: peak RSS {} MiB, {:.1} s",
        peak >> 20,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(run.code, 0, "{verb}: {run:?}");
    assert!(
        peak <= RSS_LIMIT,
        "{verb} peaked at {} MiB resident, above the {} MiB limit",
        peak >> 20,
        RSS_LIMIT >> 20
    );
    run
}

fn refused_pull(sb: &Sandbox, token: Option<&str>, status: &str) -> String {
    let mut cmd = sb.cmd();
    cmd.args(["pull", REPO]);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    let run = sb.run_with(&mut cmd);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(status) && run.stderr.contains("gated"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("licence")
            && run
                .stderr
                .contains("https://huggingface.co/meta-llama/Llama-2-7b-hf")
            && run.stderr.contains("--token"),
        "{}",
        run.stderr
    );
    run.stderr
}

#[test]
fn llama_2_7b_width_streams_from_a_gated_pull_to_a_descendant() {
    let scratch = tempfile::tempdir().unwrap();
    let free = free_bytes(scratch.path());
    if free < DISK_NEEDED {
        eprintln!(
            "skipped: this test needs {} GiB free under {}, and {} GiB are; free some space or point TMPDIR elsewhere",
            DISK_NEEDED >> 30,
            scratch.path().display(),
            free >> 30
        );
        return;
    }
    let model = scratch.path().join("stand-in");
    stand_in(&model);
    let hub = FakeHub::start();
    hub.add_dir(REPO, &model);
    hub.gate(REPO, &[ACCEPTED]);
    let sb = Sandbox::new(hub);

    // Gated: no token is a 401, a token without the licence a 403; both say what to do, and
    // nothing lands in the cache.
    refused_pull(&sb, None, "401");
    let denied = refused_pull(&sb, Some("hf_no_licence"), "403");
    assert!(denied.contains("not in the authorized list"), "{denied}");
    let cached: Vec<String> = crate::support::listing(&sb.repo_dir(REPO))
        .into_iter()
        .filter(|f| sb.repo_dir(REPO).join(f).is_file() && !f.starts_with("refs/"))
        .collect();
    assert!(cached.is_empty(), "{cached:?}");

    streamed(&sb, "pull", &["pull", REPO, "--token", ACCEPTED]);
    let offline = ["--offline"];
    let inspect = streamed(&sb, "inspect", &["inspect", REPO, "--offline", "--json"]);
    let seen = crate::support::json_result(&inspect);
    let sizes = [
        "layers",
        "hidden_size",
        "heads",
        "intermediate_size",
        "vocab_size",
        "tensors",
    ];
    let sizes: Vec<&serde_json::Value> = sizes.iter().map(|k| &seen[k]).collect();
    assert_eq!(
        serde_json::json!(sizes),
        serde_json::json!([4, 4096, 32, 11008, 32000, 43])
    );
    let out = scratch.path().join("out");
    let bf16 = out.join("bf16");
    let bf16_arg = bf16.display().to_string();
    streamed(
        &sb,
        "convert",
        &["convert", REPO, &bf16_arg, "--dtype", "bf16", offline[0]],
    );
    let converted = std::fs::metadata(bf16.join("model.safetensors"))
        .unwrap()
        .len();
    assert!(converted > 2_143_000_000 / 2, "{converted} bytes");

    let extract = |name: &str, algo: &str, sets: &[&str]| {
        let mut args = vec!["extract", "--algo", algo, REPO, "--name", name, "--offline"];
        for set in sets {
            args.extend(["--set", set]);
        }
        streamed(&sb, &format!("extract {algo}"), &args);
    };
    extract("l7-tleg", "tleg", &[]);
    extract("l7-sws", "sws", &["ratio=[1,1,1,1]"]);
    extract("l7-auto", "auto", &["rule=first-half"]);

    let descendant = out.join("d2");
    let d_arg = descendant.display().to_string();
    let spawn = [
        "spawn",
        "l7-tleg:0.1.0",
        "--layers",
        "2",
        "--no-smoke",
        "-o",
        &d_arg,
    ];
    streamed(&sb, "spawn", &spawn);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(descendant.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 2);
    assert_eq!(config["hidden_size"], 4096);
}
