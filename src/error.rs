//! Typed errors for the whole library.
//!
//! Style: messages are lowercase, carry no trailing period, put names and values in backticks,
//! and say what was expected. Where a fix exists, [`Error::hint`] returns a `hint:` line that the
//! CLI prints below the message.

use std::path::PathBuf;

/// Every failure the library reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure; `fs-err` already names the path in the source message.
    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// The input path does not exist.
    #[error("`{path}` does not exist")]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },

    /// A file is not in any format lgreg reads.
    #[error("`{path}` is not a checkpoint lgreg can read: {reason}")]
    UnknownFormat {
        /// The file that was probed.
        path: PathBuf,
        /// What was seen instead.
        reason: String,
    },

    /// A model directory holds no weights.
    #[error("`{path}` holds no weights (looked for {looked_for})")]
    NoWeights {
        /// The directory.
        path: PathBuf,
        /// The file names that were tried.
        looked_for: String,
    },

    /// A safetensors file or shard index is malformed.
    #[error("`{path}`: invalid safetensors: {reason}")]
    Safetensors {
        /// The offending file.
        path: PathBuf,
        /// What is wrong, with the value and the limit.
        reason: String,
    },

    /// A GGUF file is malformed or uses something lgreg does not support.
    #[error("`{path}`: invalid GGUF: {reason}")]
    Gguf {
        /// The offending file.
        path: PathBuf,
        /// What is wrong, with the value and the limit.
        reason: String,
    },

    /// A PyTorch pickle is malformed.
    #[error("`{path}`: invalid PyTorch checkpoint: {reason}")]
    Pickle {
        /// The offending file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A pickle names a global that is not on the allow-list; nothing was executed.
    #[error(
        "`{path}`: refused to load pickle global `{global}`: it is not a tensor rebuild function, and lgreg never runs code from a checkpoint"
    )]
    ForbiddenGlobal {
        /// The offending file.
        path: PathBuf,
        /// `module.name` of the refused global.
        global: String,
    },

    /// A tensor name was asked for that the checkpoint does not hold.
    #[error("tensor `{name}` is not in the checkpoint")]
    MissingTensor {
        /// The missing tensor.
        name: String,
    },

    /// A dtype lgreg cannot convert.
    #[error("tensor `{name}` has dtype `{dtype}`, which cannot be cast to `{target}`")]
    UnsupportedCast {
        /// The tensor.
        name: String,
        /// Its dtype.
        dtype: String,
        /// The requested dtype.
        target: String,
    },

    /// `config.json` is missing, unreadable or lacks a field.
    #[error("`{path}`: {reason}")]
    Config {
        /// The config file (or the model path when there is none).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A run config (`--config`) key that is unknown, mistyped or not applied.
    #[error("`{path}`: `{key}` {reason}")]
    RunConfig {
        /// The config file.
        path: PathBuf,
        /// The dotted key, e.g. `TRAIN.EPOCHS`.
        key: String,
        /// What is wrong, and the fix.
        reason: String,
    },

    /// The architecture is not one of the known families.
    #[error("unknown model family: {seen}; known families: {known}")]
    UnknownFamily {
        /// What the config or tensor names said.
        seen: String,
        /// The families lgreg knows.
        known: String,
    },

    /// The output exists and `--force` was not given.
    #[error("output `{path}` already exists")]
    OutputExists {
        /// The existing output path.
        path: PathBuf,
    },

    /// A user-supplied value is out of range or unparsable.
    #[error("invalid value `{value}` for {what}: {reason}")]
    InvalidValue {
        /// Which option or field.
        what: String,
        /// The value given.
        value: String,
        /// Why it is refused and what is allowed.
        reason: String,
    },

    /// A registry failure.
    #[error(transparent)]
    Registry(#[from] crate::registry::Error),

    /// An algorithm name lgreg does not know.
    #[error("unknown algorithm `{name}`{}; known algorithms: {known}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownAlgorithm {
        /// The name given.
        name: String,
        /// The nearest known name.
        suggestion: Option<String>,
        /// Every known name.
        known: String,
    },

    /// A recipe that cannot be used.
    #[error("recipe `{origin}`: {reason}")]
    Recipe {
        /// `embedded:<file>` or the recipe path.
        origin: String,
        /// What is wrong.
        reason: String,
    },

    /// An ancestor or gene an algorithm cannot work with.
    #[error("{algorithm}: {reason}")]
    Algorithm {
        /// The algorithm.
        algorithm: String,
        /// What is wrong, naming the tensor, layer or value.
        reason: String,
        /// What to do about it.
        fix: String,
    },
    /// The Hub refused access (401/403): a gated or private repo, or a bad token.
    #[error("access to `{repo}` was refused by the Hub (HTTP {status}){detail}")]
    HubAccessDenied {
        /// `org/name`.
        repo: String,
        /// 401 or 403.
        status: u16,
        /// Extra context (whether a token was sent, the Hub's message).
        detail: String,
    },

    /// The Hub has no such repo (or it is private and no token was sent).
    #[error("repo `{repo}` was not found on the Hub at `{endpoint}`")]
    RepoNotFound {
        /// `org/name`.
        repo: String,
        /// The Hub endpoint that was asked.
        endpoint: String,
    },

    /// The repo exists but the revision (branch, tag or commit) does not.
    #[error("revision `{revision}` of repo `{repo}` was not found on the Hub")]
    RevisionNotFound {
        /// `org/name`.
        repo: String,
        /// The branch, tag or commit asked for.
        revision: String,
    },

    /// A file listed by the Hub could not be fetched (404 on resolve).
    #[error("file `{file}` of `{repo}` at `{revision}` was not found on the Hub")]
    HubFileNotFound {
        /// `org/name`.
        repo: String,
        /// The commit.
        revision: String,
        /// The file path inside the repo.
        file: String,
    },

    /// An HTTP or network failure that retries did not cure.
    #[error("download of `{url}` failed: {reason}")]
    HubTransfer {
        /// The URL (never carries the token).
        url: String,
        /// Status or transport error, and how many attempts were made.
        reason: String,
    },

    /// The Hub answered something lgreg does not understand (a missing header, bad JSON).
    #[error("unexpected answer from the Hub for `{url}`: {reason}")]
    HubProtocol {
        /// The URL asked.
        url: String,
        /// What was wrong.
        reason: String,
    },

    /// A downloaded file does not hash to the Hub's LFS oid; nothing entered the cache.
    #[error(
        "`{file}` of `{repo}` has sha256 `{actual}` but the Hub says `{expected}`; it was not added to the cache"
    )]
    DigestMismatch {
        /// `org/name`.
        repo: String,
        /// The file path inside the repo.
        file: String,
        /// The LFS oid.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },

    /// The disk filled up while writing a file.
    #[error(
        "no space left on the device while writing `{path}` ({needed} bytes needed for this file)"
    )]
    DiskFull {
        /// The file being written.
        path: PathBuf,
        /// The size of the file being written.
        needed: u64,
        /// Where to make room, and what happens to what was written.
        fix: String,
    },

    /// Offline, and the cache does not hold the repo at that revision.
    #[error(
        "`{repo}` at `{revision}` is not in the Hugging Face cache `{cache}` and lgreg is offline"
    )]
    OfflineNotCached {
        /// `org/name`.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The cache directory that was searched.
        cache: PathBuf,
    },

    /// An `oci://` or other scheme that `pull` does not handle yet.
    #[error("`{reference}`: pulling from `{scheme}://` is not supported yet")]
    UnsupportedScheme {
        /// The full reference.
        reference: String,
        /// The scheme.
        scheme: String,
    },

    /// An `oci://` reference does not parse.
    #[error("invalid registry reference `{value}`: {reason}")]
    InvalidRemoteReference {
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },

    /// `--insecure` (plain HTTP) was asked for a host that is not loopback.
    #[error("`--insecure` (plain HTTP) is only allowed for loopback hosts, not `{host}`")]
    InsecureNotLoopback {
        /// The host.
        host: String,
    },

    /// The registry refused the request (401/403).
    #[error("the registry at `{host}` refused access (HTTP {status}){detail}")]
    RemoteAccessDenied {
        /// `host[:port]`.
        host: String,
        /// 401 or 403.
        status: u16,
        /// Whether credentials were sent.
        detail: String,
    },

    /// The registry has no such repository, tag, manifest or blob.
    #[error("`{reference}` was not found on the registry")]
    RemoteNotFound {
        /// The reference asked for.
        reference: String,
    },

    /// A network or server failure while talking to a registry.
    #[error("transfer of `{reference}` failed: {reason}")]
    RemoteTransfer {
        /// The reference or blob.
        reference: String,
        /// What went wrong (never carries a secret).
        reason: String,
    },

    /// The registry answered something lgreg cannot use.
    #[error("unexpected answer from the registry for `{reference}`: {reason}")]
    RemoteProtocol {
        /// The reference asked for.
        reference: String,
        /// What was wrong.
        reason: String,
    },

    /// Downloaded bytes do not hash to the digest that names them; nothing was stored.
    #[error("`{reference}` has digest `{actual}` but `{expected}` was expected; it was not stored")]
    RemoteDigestMismatch {
        /// The manifest or blob reference.
        reference: String,
        /// The digest (and size) asked for.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },

    /// The local tag for a pulled gene is not `name:version`.
    #[error(
        "cannot tag `{reference}` locally as `{tag}`: a local tag must be `name:version` with a semver version"
    )]
    InvalidLocalTag {
        /// The remote reference.
        reference: String,
        /// The tag that was derived or given.
        tag: String,
    },

    /// A tensor computation failed inside candle.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),

    /// A model's tensors do not agree with its config.
    #[error("tensor `{name}` does not match the model config: {reason}")]
    ModelMismatch {
        /// The tensor (or config field).
        name: String,
        /// What was expected and what was found.
        reason: String,
    },

    /// A dataset file or folder is malformed.
    #[error("`{path}`: invalid dataset: {reason}")]
    Dataset {
        /// The offending file or folder.
        path: PathBuf,
        /// What is wrong, with the value and the limit.
        reason: String,
    },

    /// A label is not below the number of classes the model has.
    #[error(
        "`{path}`: label {label} is out of range: the model has {classes} classes (0..{classes})"
    )]
    LabelOutOfRange {
        /// The dataset.
        path: PathBuf,
        /// The offending label.
        label: usize,
        /// The number of classes.
        classes: usize,
    },

    /// A text is shorter than one training or evaluation block.
    #[error(
        "`{path}` has {tokens} tokens, fewer than one block of {block} (+1 for the shifted target)"
    )]
    TextTooShort {
        /// The text file.
        path: PathBuf,
        /// Its token count.
        tokens: usize,
        /// The block length.
        block: usize,
    },

    /// A tokenizer could not be loaded or run.
    #[error("`{path}`: tokenizer failed: {reason}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The tokenizers crate's message.
        reason: String,
    },

    /// A serialization failure of our own data (a bug if it ever happens).
    #[error("could not encode JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// A one-line suggestion of how to fix the problem, when there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::OutputExists { .. } => {
                Some("pass `--force` to replace it, or choose another output".into())
            }
            Error::UnknownFamily { .. } => Some(
                "set `architectures` or `model_type` in config.json to one of the known families"
                    .into(),
            ),
            Error::ForbiddenGlobal { .. } => Some(
                "convert the checkpoint to safetensors in a sandbox you trust, or ask its author for a safetensors release"
                    .into(),
            ),
            Error::NoWeights { .. } => Some(
                "point lgreg at the directory that holds `model.safetensors`, `pytorch_model.bin` or a `.gguf` file"
                    .into(),
            ),
            Error::Safetensors { .. } | Error::Gguf { .. } | Error::Pickle { .. } => Some(
                "the file is damaged or incomplete: download it again and check its sha256".into(),
            ),
            Error::Registry(e) => e.hint(),
            Error::HubAccessDenied { repo, .. } => Some(format!(
                "pass a token with `--token`, `HF_TOKEN` or `hf auth login`, and accept the licence at https://huggingface.co/{repo} if the repo is gated"
            )),
            Error::RepoNotFound { .. } => Some(
                "check the `org/name` spelling; a private repo also needs a token (`--token` or `HF_TOKEN`)"
                    .into(),
            ),
            Error::RevisionNotFound { .. } => Some(
                "pass an existing branch, tag or commit with `--revision` or `org/name@REV`".into(),
            ),
            Error::HubTransfer { .. } => {
                Some("run the same command again: finished files are kept and partial ones resume".into())
            }
            Error::DigestMismatch { .. } => Some(
                "run the same command again to download it afresh; if it keeps failing, the mirror or proxy is corrupting data"
                    .into(),
            ),
            Error::DiskFull { fix, .. } => Some(fix.clone()),
            Error::OfflineNotCached { .. } => Some(
                "run `lgreg pull` for it while online (unset `HF_HUB_OFFLINE` and drop `--offline`)".into(),
            ),
            Error::UnsupportedScheme { .. } => {
                Some("pull an ancestor from the Hugging Face Hub with `lgreg pull org/name[@rev]`".into())
            }
            Error::InsecureNotLoopback { .. } => {
                Some("drop `--insecure`: remote registries are reached over TLS".into())
            }
            Error::RemoteAccessDenied { host, .. } => Some(format!(
                "check the user name and password: pass `--username U --password-stdin`, or run `lgreg login {host}`"
            )),
            Error::RemoteNotFound { .. } => {
                Some("check the repository, tag or digest; a private repository also needs credentials".into())
            }
            Error::RemoteTransfer { .. } => Some(
                "run the same command again: blobs already transferred are skipped, and a pulled blob that broke off resumes".into(),
            ),
            Error::RemoteDigestMismatch { .. } => Some(
                "run the same command again; if it keeps failing, the registry or a proxy is corrupting data".into(),
            ),
            Error::InvalidLocalTag { .. } => {
                Some("pass the local tag with `--as NAME:VERSION`".into())
            }
            Error::UnknownAlgorithm { .. } => {
                Some("pick one with `--algo`; `lgreg extract --help` lists them".into())
            }
            Error::Recipe { .. } => Some(
                "compare it with the embedded recipes in `recipes/` of the lgreg source; only the fields they use are allowed".into(),
            ),
            Error::Algorithm { fix, .. } => Some(fix.clone()),
            Error::RunConfig { .. } => Some(
                "configs/README.md lists every key, what it does and whether it is applied; `--set SECTION.KEY=VALUE` overrides one".into(),
            ),
            Error::ModelMismatch { .. } => Some(
                "the weights and config.json disagree: fix config.json or use the weights it was written for"
                    .into(),
            ),
            Error::LabelOutOfRange { .. } => Some(
                "relabel the data from 0, or use a model whose `num_classes` covers every label"
                    .into(),
            ),
            Error::TextTooShort { .. } => {
                Some("pass a longer text or a smaller `--seq-len`".into())
            }
            Error::Candle(e) if e.to_string().contains("cuda") => Some(
                "lgreg was built without cuda; rebuild with `--features cuda` (see `scripts/build-cuda.sh`)"
                    .into(),
            ),
            _ => None,
        }
    }

    /// The process exit code: 1 for bad input from the user, 2 for failures of the machine.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Io(_)
            | Error::Candle(_)
            | Error::HubTransfer { .. }
            | Error::HubProtocol { .. }
            | Error::DiskFull { .. }
            | Error::RemoteTransfer { .. }
            | Error::RemoteProtocol { .. } => 2,
            _ => 1,
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
