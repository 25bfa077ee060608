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
            Error::Io(_) | Error::Candle(_) => 2,
            _ => 1,
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
