//! Config parsing: the shipped configs, unknown keys, bad values, refusals and `--set`.

use super::*;

fn parse(text: &str, sets: &[&str]) -> Result<Config> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Config::parse(text, Path::new("configs/x.yaml"), &sets)
}

fn err(text: &str, sets: &[&str]) -> String {
    match parse(text, sets) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn shipped() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut files: Vec<PathBuf> = fs_err::read_dir(&dir)
        .expect("configs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_config_validates_and_names_its_method() {
    let files = shipped();
    assert!(files.len() >= 10, "{files:?}");
    for file in files {
        let cfg = Config::load(&file, &[]).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let method = cfg.method().expect("method");
        assert!(
            stem.ends_with(&method.name()),
            "{stem} vs {}",
            method.name()
        );
        assert!(stem.starts_with("ancestor_") || stem.starts_with("descendant_"));
    }
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/schema.json");
    let committed: Value =
        serde_json::from_slice(&fs_err::read(&path).expect("schema.json")).expect("JSON");
    assert_eq!(
        committed,
        keys::json_schema(),
        "regenerate with `lgreg train --print-schema > configs/schema.json`"
    );
}

#[test]
fn unknown_keys_name_the_file_the_key_and_the_nearest() {
    let e = err("METHOD_FAMILY: tleg_vit\nTRAIN:\n  EPOCH: 3\n", &[]);
    assert!(
        e.contains("configs/x.yaml") && e.contains("TRAIN.EPOCH"),
        "{e}"
    );
    assert!(e.contains("did you mean `TRAIN.EPOCHS`"), "{e}");
    let e = err("METHOD_FAMILY: tleg_vit\nOPTIM:\n  LR: 3\n", &[]);
    assert!(e.contains("`OPTIM`") && e.contains("sections are"), "{e}");
    let e = err("METHOD_FAMILY: tleg_vit\ntrain:\n  lr: 3\n", &[]);
    assert!(
        e.contains("`train`") && e.contains("did you mean `TRAIN`"),
        "{e}"
    );
}

#[test]
fn bad_values_name_the_key_and_the_type() {
    let e = err("METHOD_FAMILY: tleg_vit\nTRAIN:\n  EPOCHS: many\n", &[]);
    assert!(
        e.contains("TRAIN.EPOCHS") && e.contains("'many' is not a non-negative integer"),
        "{e}"
    );
    let e = err("METHOD_FAMILY: tleg_vit\nTRAIN:\n  LR: [1]\n", &[]);
    assert!(e.contains("TRAIN.LR") && e.contains("not a number"), "{e}");
    let e = err("METHOD_FAMILY: tleg_vit\nTRAIN: 3\n", &[]);
    assert!(e.contains("`TRAIN` is a section"), "{e}");
    let e = err("METHOD_FAMILY: tleg\n", &[]);
    assert!(
        e.contains("METHOD_FAMILY") && e.contains("<method>_<family>"),
        "{e}"
    );
    let e = err("METHOD_FAMILY: tlge_vit\n", &[]);
    assert!(e.contains("did you mean `tleg`"), "{e}");
    let e = err("SEED: 1\n", &[]);
    assert!(e.contains("METHOD_FAMILY") && e.contains("required"), "{e}");
}

#[test]
fn keys_not_applied_are_refused_by_name_with_the_reason() {
    let e = err(
        "METHOD_FAMILY: tleg_vit\nTRAIN:\n  AA: original-mstd0.5\n",
        &[],
    );
    assert!(
        e.contains("TRAIN.AA") && e.contains("only timm's RandAugment policies"),
        "{e}"
    );
    assert!(
        parse(
            "METHOD_FAMILY: tleg_vit\nTRAIN:\n  AA: rand-m9-mstd0.5-inc1\n",
            &[]
        )
        .is_ok()
    );
    // The image augmentations apply to vit only; heur_vgg refuses keys its training never reads.
    assert!(
        parse(
            "METHOD_FAMILY: tleg_vit\nTRAIN:\n  MIXUP: 0.8\n  REPROB: 0.25\n",
            &[]
        )
        .is_ok()
    );
    let e = err("METHOD_FAMILY: tleg_llama\nTRAIN:\n  SMOOTHING: 0.1\n", &[]);
    assert!(
        e.contains("TRAIN.SMOOTHING") && e.contains("vit family"),
        "{e}"
    );
    let e = err("METHOD_FAMILY: heur_vgg\nTRAIN:\n  SCHED: cosine\n", &[]);
    assert!(
        e.contains("TRAIN.SCHED") && e.contains("does not apply"),
        "{e}"
    );
    let e = err("METHOD_FAMILY: heur_vgg\nTRAIN:\n  MIXUP: 0.8\n", &[]);
    assert!(
        e.contains("TRAIN.MIXUP") && e.contains("does not apply"),
        "{e}"
    );
    assert!(
        parse(
            "METHOD_FAMILY: heur_vgg\nTRAIN:\n  MIXUP: 0\n  WARMUP_EPOCHS: 0\n",
            &[]
        )
        .is_ok()
    );
    let e = err(
        "METHOD_FAMILY: tleg_vit\nDISTRIBUTED:\n  WORLD_SIZE: 4\n",
        &[],
    );
    assert!(
        e.contains("DISTRIBUTED.WORLD_SIZE") && e.contains("one process"),
        "{e}"
    );
    let e = err("METHOD_FAMILY: tleg_vgg\n", &[]);
    assert!(e.contains("only Heur Learngene"), "{e}");
    let e = err("METHOD_FAMILY: tleg_vit\nDATASET:\n  NUM_WORKS: 3\n", &[]);
    assert!(
        e.contains("DATASET.NUM_WORKS") && e.contains("only to `METHOD_FAMILY: heur_vgg`"),
        "{e}"
    );
    let e = err("METHOD_FAMILY: heur_vgg\nTRAIN:\n  OPT: adamw\n", &[]);
    assert!(e.contains("TRAIN.OPT") && e.contains("SGD"), "{e}");
    let e = err("METHOD_FAMILY: heur_vgg\nMODE: approximate\n", &[]);
    assert!(e.contains("only the paper's training"), "{e}");
    let e = err("METHOD_FAMILY: heur_vit\nMODE: faithful\n", &[]);
    assert!(e.contains("MODE") && e.contains("approximate"), "{e}");
    let e = err("METHOD_FAMILY: pool_bert\nMODE: faithful\n", &[]);
    assert!(e.contains("MODE") && e.contains("logits"), "{e}");
    let pool = parse(
        "METHOD_FAMILY: pool_vit\nMODE: approximate\nPOOL:\n  DEPTH: 9\n",
        &[],
    )
    .expect("parses");
    assert!(
        pool.notes
            .iter()
            .any(|n| n.contains("POOL.DEPTH: no effect")),
        "{:?}",
        pool.notes
    );
    let approximate = parse("METHOD_FAMILY: tleg_vit\nAUX:\n  LAYERS: 6\n", &[]).expect("parses");
    assert!(
        approximate
            .notes
            .iter()
            .any(|n| n.contains("AUX.LAYERS: no effect")),
        "{:?}",
        approximate.notes
    );
    let e = err("METHOD_FAMILY: tleg_vit\nMODEL:\n  PRETRAINED: true\n", &[]);
    assert!(e.contains("MODEL.PRETRAINED") && e.contains("false"), "{e}");
    // tleg and sws train their aux nets; an `aux_*` size asks for it, as the toolbox does.
    for text in [
        "METHOD_FAMILY: sws_llama\nMODE: faithful\n",
        "METHOD_FAMILY: tleg_vit\nMODEL:\n  TYPE: aux_deit_tiny_patch16_224\n  PRETRAINED: true\n",
    ] {
        let cfg = parse(text, &[]).expect("a faithful aux-net config");
        assert_eq!(cfg.mode().ok(), Some(RunMode::Faithful), "{text}");
    }
    // Values that are applied pass: zero augmentation, one process, AdamW, cosine.
    let ok = parse(
        "METHOD_FAMILY: tleg_vit\nTRAIN:\n  MIXUP: 0.0\n  AA: ''\n  OPT: adamw\n  SCHED: cosine\n  WEIGHT_DECAY: 5e-4\nDISTRIBUTED:\n  WORLD_SIZE: 1\n",
        &[],
    )
    .expect("applied values");
    assert_eq!(ok.float("TRAIN.WEIGHT_DECAY"), Some(5e-4));
}

#[test]
fn keys_without_effect_are_noted() {
    let cfg = parse(
        "METHOD_FAMILY: tleg_vit\nDATASET:\n  NUM_WORKERS: 4\n  PIN_MEM: true\n",
        &[],
    )
    .expect("parses");
    assert_eq!(cfg.notes.len(), 2, "{:?}", cfg.notes);
    assert!(cfg.notes[0].contains("DATASET.NUM_WORKERS: no effect"));
}

#[test]
fn set_overrides_any_key_and_refuses_unknown_ones() {
    let text = "METHOD_FAMILY: tleg_llama\nTRAIN:\n  EPOCHS: 100\n";
    let cfg = parse(text, &["TRAIN.EPOCHS=1", "DATASET.LIMIT=8", "GENE.NAME=g"]).expect("sets");
    assert_eq!(cfg.int("TRAIN.EPOCHS"), Some(1));
    assert_eq!(cfg.int("DATASET.LIMIT"), Some(8));
    assert_eq!(cfg.str("GENE.NAME"), Some("g"));
    let e = err(text, &["TRAIN.EPOCS=1"]);
    assert!(e.contains("did you mean `TRAIN.EPOCHS`"), "{e}");
    let e = err(text, &["TRAIN.EPOCHS"]);
    assert!(e.contains("SECTION.KEY=VALUE"), "{e}");
    let e = err(text, &["TRAIN.AA=rand-m9-w0"]);
    assert!(e.contains("TRAIN.AA"), "{e}");
}

#[test]
fn the_resolved_config_round_trips_through_yaml() {
    let cfg = parse(
        "METHOD_FAMILY: sws_bert\nSEED: 3\nGENE:\n  PARAMS:\n    stages: 3\nTRAIN:\n  LR: '1e-4'\n",
        &["TRAIN.BATCH_SIZE=4"],
    )
    .expect("parses");
    let yaml = cfg.resolved_yaml().expect("yaml");
    let again = parse(&yaml, &[]).expect("re-parses");
    assert_eq!(again.resolved(), cfg.resolved());
    assert_eq!(again.float("TRAIN.LR"), Some(1e-4));
    assert_eq!(again.int("TRAIN.BATCH_SIZE"), Some(4));
}

#[test]
fn cuda_on_a_cpu_build_says_how_to_run_on_the_cpu() {
    let cfg = parse("METHOD_FAMILY: tleg_vit\nDEVICE: cuda\n", &[]).expect("parses");
    if crate::nn::device(true).is_err() {
        let e = cfg.cuda().expect_err("no GPU here").to_string();
        assert!(
            e.contains("DEVICE") && e.contains("--set DEVICE=cpu"),
            "{e}"
        );
    }
    let cpu = parse("METHOD_FAMILY: tleg_vit\nDEVICE: cpu\n", &[]).expect("parses");
    assert!(!cpu.cuda().expect("cpu"));
}

#[test]
fn words_stay_words_in_string_keys_and_boolean_keys_take_yaml_1_1_spellings() {
    let cfg = parse(
        "METHOD_FAMILY: heur_vgg\nHEUR:\n  EWC: off\n  ABSOLUTE: yes\n  CONTROL: False\n",
        &["HEUR.REUSE_MODEL=on"],
    )
    .expect("parses");
    assert_eq!(cfg.str("HEUR.EWC"), Some("off"));
    assert_eq!(cfg.bool("HEUR.ABSOLUTE"), Some(true));
    assert_eq!(cfg.bool("HEUR.CONTROL"), Some(false));
    assert_eq!(cfg.bool("HEUR.REUSE_MODEL"), Some(true));
    let e = err("METHOD_FAMILY: heur_vgg\nHEUR:\n  CONTROL: maybe\n", &[]);
    assert!(
        e.contains("HEUR.CONTROL") && e.contains("true or false"),
        "{e}"
    );
}

#[test]
fn colour_jitter_applies_without_rand_augment_only_as_in_timm() {
    let jitter = |text: &str| {
        let cfg = parse(
            text,
            &[
                "MODEL.LOAD_GENE=g:0.1.0",
                "DATASET.PATH=d",
                "MODEL.LAYERS=4",
            ],
        )
        .expect("parses");
        plan::descendant_run(&cfg).expect("plans").adapt.augment
    };
    let alone = jitter("METHOD_FAMILY: tleg_vit\nTRAIN:\n  COLOR_JITTER: 0.4\n  AA: ''\n");
    assert_eq!((alone.color_jitter, alone.rand_augment), (0.4, None));
    let with_ra = jitter(
        "METHOD_FAMILY: tleg_vit\nTRAIN:\n  COLOR_JITTER: 0.4\n  AA: rand-m9-mstd0.5-inc1\n",
    );
    assert_eq!(with_ra.color_jitter, 0.0);
    assert_eq!(with_ra.rand_augment.map(|r| r.magnitude), Some(9.0));
    let cfg = parse(
        "METHOD_FAMILY: tleg_vit\nTRAIN:\n  COLOR_JITTER: -1\n",
        &[
            "MODEL.LOAD_GENE=g:0.1.0",
            "DATASET.PATH=d",
            "MODEL.LAYERS=4",
        ],
    )
    .expect("parses");
    let e = plan::descendant_run(&cfg).unwrap_err().to_string();
    assert!(e.contains("TRAIN.COLOR_JITTER") && e.contains("-1"), "{e}");
    // A bad jitter is refused even where RandAugment would turn it off.
    let cfg = parse(
        "METHOD_FAMILY: tleg_vit\nTRAIN:\n  COLOR_JITTER: -1\n  AA: rand-m9\n",
        &[
            "MODEL.LOAD_GENE=g:0.1.0",
            "DATASET.PATH=d",
            "MODEL.LAYERS=4",
        ],
    )
    .expect("parses");
    assert!(plan::descendant_run(&cfg).is_err());
    let e = err(
        "METHOD_FAMILY: tleg_llama\nTRAIN:\n  COLOR_JITTER: 0.4\n",
        &[],
    );
    assert!(e.contains("TRAIN.COLOR_JITTER"), "{e}");
}

#[test]
fn a_truncated_pool_configurations_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("configurations.json");
    fs_err::write(&file, br#"{"instances": {"tiny": {"params": 1000, "met"#).expect("written");
    let e = pool::run_points(dir.path())
        .expect_err("a truncated table")
        .to_string();
    assert!(
        e.contains("configurations.json") && e.contains("not valid JSON"),
        "{e}"
    );
    fs_err::write(
        &file,
        br#"{"instances": {"tiny": {"params": 2000000, "metric": 0.5}}, "configurations": []}"#,
    )
    .expect("written");
    let [instances, stitched] = pool::run_points(dir.path()).expect("a whole table");
    assert_eq!((instances, stitched.len()), (vec![(2.0, 0.5)], 0));
}
