//! `convert`: any supported checkpoint to a Hugging Face model directory (config.json,
//! safetensors, tokenizer files), written atomically.

use std::path::Path;

use serde::Serialize;

use crate::anatomy::{self, Family};
use crate::checkpoint::write::{self, WriteOptions};
use crate::checkpoint::{self, DType, Format, SideFile};
use crate::error::{Error, Result};
use crate::fsutil::StagedDir;
use crate::progress::Reporter;

/// Options of `lgreg convert`.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Output dtype for floating-point tensors; `None` keeps each tensor's dtype.
    pub dtype: Option<DType>,
    /// Shard above this many bytes.
    pub shard_size: Option<u64>,
    /// Replace an existing output directory.
    pub force: bool,
}

/// What `convert` produced.
#[derive(Debug, Clone, Serialize)]
pub struct ConvertReport {
    /// The output directory.
    pub output: String,
    /// The input format.
    pub input_format: Format,
    /// The family detected.
    pub family: Family,
    /// Weight files written.
    pub weight_files: Vec<String>,
    /// Other files written (config, tokenizer).
    pub other_files: Vec<String>,
    /// Number of tensors.
    pub tensors: usize,
    /// Bytes of tensor data written.
    pub bytes: u64,
}

/// Convert `input` (file or directory, any format) into the HF directory `output`.
pub fn convert(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    reporter: &dyn Reporter,
) -> Result<ConvertReport> {
    let staged = StagedDir::new(output, opts.force)?;
    let ckpt = checkpoint::open(input)?;
    let config = ckpt.config.as_ref().ok_or_else(|| Error::Config {
        path: input.to_path_buf(),
        reason: "no `config.json` beside the weights, so the output could not be loaded by `transformers`; put the model's config.json next to it".into(),
    })?;
    let anatomy = anatomy::analyze(Some(config), ckpt.source.tensors())?;
    let wopts = WriteOptions {
        dtype: opts.dtype,
        shard_size: opts.shard_size,
    };
    let plan = write::plan_all(ckpt.source.as_ref(), &wopts);
    let written = write::write_model(staged.path(), ckpt.source.as_ref(), plan, &wopts, reporter)
        .map_err(|e| staged.in_target_terms(e))?;
    let mut other_files = vec!["config.json".to_string()];
    staged.write_file("config.json", &config_bytes(config, opts.dtype)?)?;
    for side in &ckpt.side_files {
        match side {
            SideFile::Copy { name, path } => staged.copy_file(name, path)?,
            SideFile::Bytes { name, bytes } => staged.write_file(name, bytes)?,
        }
        other_files.push(side.name().to_string());
    }
    let out = staged.commit()?;
    Ok(ConvertReport {
        output: out.display().to_string(),
        input_format: ckpt.format,
        family: anatomy.family,
        weight_files: written.files,
        other_files,
        tensors: written.tensors,
        bytes: written.total_bytes,
    })
}

/// The HF name of a dtype in `torch_dtype`.
fn torch_dtype_name(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F32 => Some("float32"),
        DType::F16 => Some("float16"),
        DType::BF16 => Some("bfloat16"),
        DType::F64 => Some("float64"),
        _ => None,
    }
}

fn config_bytes(config: &serde_json::Value, dtype: Option<DType>) -> Result<Vec<u8>> {
    let mut config = config.clone();
    if let (Some(map), Some(name)) = (config.as_object_mut(), dtype.and_then(torch_dtype_name)) {
        map.insert("torch_dtype".into(), name.into());
    }
    let mut bytes = serde_json::to_vec_pretty(&config)?;
    bytes.push(b'\n');
    Ok(bytes)
}
