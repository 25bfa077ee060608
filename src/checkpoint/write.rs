//! Streaming safetensors writer with sharding and dtype casts.
//!
//! The header is computed from the shapes first; then tensors are read from the source, cast
//! and written one at a time, so peak memory is about one tensor. Tensors are laid out in name
//! order and the header is serialised with sorted keys, so the same input always gives
//! byte-identical files.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::safetensors::SafetensorsFile;
use super::sink::Sink;
use super::{DType, TensorInfo, TensorSource, cast_bytes};
use crate::error::{Error, Result};
use crate::progress::{Event, Reporter};

/// How to write a model's weights.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Cast every floating-point tensor to this dtype (integers are kept).
    pub dtype: Option<DType>,
    /// Split into shards of at most this many bytes of tensor data (a tensor larger than the
    /// limit gets a shard of its own).
    pub shard_size: Option<u64>,
}

/// One tensor to write: its output name, and the source tensor it comes from.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Name in the output file.
    pub name: String,
    /// Name in the source.
    pub source_name: String,
    /// Output dtype.
    pub dtype: DType,
    /// Shape (unchanged from the source).
    pub shape: Vec<usize>,
}

impl Planned {
    fn nbytes(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64 * self.dtype.size() as u64
    }
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    /// File names of the weight files, in order.
    pub files: Vec<String>,
    /// Total bytes of tensor data.
    pub total_bytes: u64,
    /// Number of tensors.
    pub tensors: usize,
}

/// Plan every tensor of `source` under its own name, with the dtype cast of `opts`.
pub fn plan_all(source: &dyn TensorSource, opts: &WriteOptions) -> Vec<Planned> {
    source
        .tensors()
        .iter()
        .map(|t| plan_one(t, &t.name, opts))
        .collect()
}

/// Plan one tensor under `name`.
pub fn plan_one(info: &TensorInfo, name: &str, opts: &WriteOptions) -> Planned {
    let dtype = match opts.dtype {
        Some(d) if info.dtype.is_float() => d,
        _ => info.dtype,
    };
    Planned {
        name: name.to_string(),
        source_name: info.name.clone(),
        dtype,
        shape: info.shape.clone(),
    }
}

/// Write `plan` as `model.safetensors` (or shards plus `model.safetensors.index.json`) in `dir`.
pub fn write_model(
    dir: &Path,
    source: &dyn TensorSource,
    mut plan: Vec<Planned>,
    opts: &WriteOptions,
    reporter: &dyn Reporter,
) -> Result<Written> {
    plan.sort_by(|a, b| a.name.cmp(&b.name));
    check_unique(&plan)?;
    let shards = split_shards(&plan, opts.shard_size);
    let names = shard_names(shards.len());
    let named = names
        .into_iter()
        .zip(shards)
        .map(|(file, shard)| (file, shard.to_vec()))
        .collect();
    write_shards(dir, source, named, reporter)
}

/// Write each `(file name, tensors)` shard in `dir` (each sorted, fsynced and verified), and
/// `model.safetensors.index.json` when there is more than one: the layout of a published
/// checkpoint whose shard split is given rather than computed.
pub fn write_shards(
    dir: &Path,
    source: &dyn TensorSource,
    mut shards: Vec<(String, Vec<Planned>)>,
    reporter: &dyn Reporter,
) -> Result<Written> {
    let mut all: Vec<&Planned> = shards.iter().flat_map(|(_, s)| s).collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    check_unique_refs(&all)?;
    let total_bytes: u64 = all.iter().map(|t| t.nbytes()).sum();
    let tensors = all.len();
    reporter.report(Event::Start {
        task: "write".into(),
        total: total_bytes,
    });
    let mut weight_map = BTreeMap::new();
    for (file, shard) in &mut shards {
        shard.sort_by(|a, b| a.name.cmp(&b.name));
        let path = dir.join(&*file);
        write_file(&path, source, shard, Sync::Durable, reporter)?;
        verify_file(&path, shard)?;
        for t in shard.iter() {
            weight_map.insert(t.name.clone(), file.clone());
        }
    }
    if shards.len() > 1 {
        write_index(dir, total_bytes, &weight_map)?;
    }
    reporter.report(Event::Finish);
    Ok(Written {
        files: shards.into_iter().map(|(file, _)| file).collect(),
        total_bytes,
        tensors,
    })
}

/// Write `plan` as one safetensors file at `path` (sorted, deterministic, fsynced, verified).
pub fn write_file_at(
    path: &Path,
    source: &dyn TensorSource,
    plan: Vec<Planned>,
    reporter: &dyn Reporter,
) -> Result<u64> {
    write_verified(path, source, plan, Sync::Durable, reporter)
}

/// [`write_file_at`] without the fsync, for a scratch file that is only read back by this
/// process and then stored durably elsewhere: the units of a gene under construction, which
/// `publish` copies into fsynced, verified blobs. A crash loses only the scratch file.
pub fn write_scratch_file_at(
    path: &Path,
    source: &dyn TensorSource,
    plan: Vec<Planned>,
    reporter: &dyn Reporter,
) -> Result<u64> {
    write_verified(path, source, plan, Sync::Scratch, reporter)
}

/// Whether a written file is flushed to disk before it is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    Durable,
    Scratch,
}

fn write_verified(
    path: &Path,
    source: &dyn TensorSource,
    mut plan: Vec<Planned>,
    sync: Sync,
    reporter: &dyn Reporter,
) -> Result<u64> {
    plan.sort_by(|a, b| a.name.cmp(&b.name));
    check_unique(&plan)?;
    write_file(path, source, &plan, sync, reporter)?;
    verify_file(path, &plan)?;
    Ok(plan.iter().map(Planned::nbytes).sum())
}

fn check_unique(plan: &[Planned]) -> Result<()> {
    check_unique_refs(&plan.iter().collect::<Vec<_>>())
}

fn check_unique_refs(plan: &[&Planned]) -> Result<()> {
    for pair in plan.windows(2) {
        if pair[0].name == pair[1].name {
            return Err(Error::InvalidValue {
                what: "tensor name".into(),
                value: pair[0].name.clone(),
                reason: "two tensors would be written under the same name".into(),
            });
        }
    }
    Ok(())
}

fn split_shards(plan: &[Planned], limit: Option<u64>) -> Vec<&[Planned]> {
    let Some(limit) = limit else {
        return vec![plan];
    };
    let mut shards = Vec::new();
    let (mut start, mut size) = (0usize, 0u64);
    for (i, t) in plan.iter().enumerate() {
        if i > start && size + t.nbytes() > limit {
            shards.push(&plan[start..i]);
            start = i;
            size = 0;
        }
        size += t.nbytes();
    }
    shards.push(&plan[start..]);
    shards
}

fn shard_names(n: usize) -> Vec<String> {
    if n <= 1 {
        return vec!["model.safetensors".to_string()];
    }
    (1..=n)
        .map(|i| format!("model-{i:05}-of-{n:05}.safetensors"))
        .collect()
}

/// The header bytes (length prefix excluded), padded with spaces to a multiple of 8.
fn header_bytes(tensors: &[Planned]) -> Result<Vec<u8>> {
    let mut map = serde_json::Map::new();
    map.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    let mut offset = 0u64;
    for t in tensors {
        let end = offset + t.nbytes();
        map.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": t.dtype.safetensors_name(),
                "shape": t.shape,
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut bytes = serde_json::to_vec(&map)?;
    while bytes.len() % 8 != 0 {
        bytes.push(b' ');
    }
    Ok(bytes)
}

fn write_file(
    path: &Path,
    source: &dyn TensorSource,
    tensors: &[Planned],
    sync: Sync,
    reporter: &dyn Reporter,
) -> Result<()> {
    let header = header_bytes(tensors)?;
    let size = 8 + header.len() as u64 + tensors.iter().map(Planned::nbytes).sum::<u64>();
    write_file_body(path, source, tensors, &header, size, sync, reporter).map_err(|e| match e {
        Error::Io(io) if crate::fsutil::is_disk_full(&io) => Error::DiskFull {
            path: path.to_path_buf(),
            needed: size,
            fix: "free some space on that disk, or write the output to another one".into(),
        },
        e => e,
    })
}

fn write_file_body(
    path: &Path,
    source: &dyn TensorSource,
    tensors: &[Planned],
    header: &[u8],
    size: u64,
    sync: Sync,
    reporter: &dyn Reporter,
) -> Result<()> {
    let mut sink = Sink::create(path, sync == Sync::Durable)?;
    sink.reserve(size)?;
    let mut out = BufWriter::with_capacity(8 << 20, sink);
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(header)?;
    // One thread reads (and dequantises or computes) the next tensor while this one writes the
    // current one; the channel has no room, so at most two tensors are in memory at once.
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Produced<'_>>>(0);
        scope.spawn(move || {
            for t in tensors {
                let produced = produce(source, t);
                let failed = produced.is_err();
                if tx.send(produced).is_err() || failed {
                    break;
                }
            }
        });
        for t in tensors {
            let produced = rx.recv().map_err(|_| Error::MissingTensor {
                name: t.source_name.clone(),
            })??;
            match produced.cast_from {
                Some(from) => write_cast(&mut out, source, t, from, &produced.bytes)?,
                None if copy_stored(&mut out, source, t)? => {}
                None => write_tensor(&mut out, source, t, &produced.bytes)?,
            }
            drop(produced);
            source.release(&t.source_name);
            reporter.report(Event::Advance {
                amount: t.nbytes(),
                item: Some(t.name.clone()),
            });
        }
        Ok(())
    })?;
    out.into_inner().map_err(|e| e.into_error())?.finish()?;
    Ok(())
}

/// Copy a tensor that is stored verbatim in a file (same dtype, no cast) file to file in the
/// kernel. `false` when it is not stored so, or the kernel cannot copy it: nothing was written.
fn copy_stored(out: &mut BufWriter<Sink>, source: &dyn TensorSource, t: &Planned) -> Result<bool> {
    let Some(stored) = source
        .stored_at(&t.source_name)
        .filter(|_| keeps_dtype(source, t))
    else {
        return Ok(false);
    };
    out.flush()?;
    out.get_mut()
        .copy_from(stored.file, stored.offset, t.nbytes())
}

/// Whether `t` is written in its source's own dtype, so its bytes are the source's bytes.
fn keeps_dtype(source: &dyn TensorSource, t: &Planned) -> bool {
    source.info(&t.source_name).map(|i| i.dtype) == Some(t.dtype)
}

/// Bytes of a tensor written between two releases of the source's pages behind them, so that
/// a large tensor (an embedding) never has all its pages mapped at once.
const RELEASE_EVERY: usize = 16 << 20;

/// Write the bytes of one tensor; when they are the source's own (no cast), let the source's
/// pages go behind the write, part by part.
fn write_tensor(
    out: &mut impl Write,
    source: &dyn TensorSource,
    t: &Planned,
    bytes: &[u8],
) -> Result<()> {
    let own = keeps_dtype(source, t);
    for (i, part) in bytes.chunks(RELEASE_EVERY).enumerate() {
        let range = i * RELEASE_EVERY..i * RELEASE_EVERY + part.len();
        if own {
            source.prefetch_range(&t.source_name, range.clone());
        }
        out.write_all(part)?;
        if own {
            source.release_range(&t.source_name, range);
        }
    }
    Ok(())
}

/// Cast the mapped bytes of one tensor to its output dtype part by part as they are written,
/// bringing in the source's pages before each part and letting them go after, so that a cast
/// (f16 to f32 of an embedding) holds one part in memory, not the whole tensor.
fn write_cast(
    out: &mut impl Write,
    source: &dyn TensorSource,
    t: &Planned,
    from: DType,
    bytes: &[u8],
) -> Result<()> {
    // A multiple of every element size, so that no element straddles two parts.
    let part_bytes = RELEASE_EVERY / 8 * 8;
    for (i, part) in bytes.chunks(part_bytes).enumerate() {
        let range = i * part_bytes..i * part_bytes + part.len();
        source.prefetch_range(&t.source_name, range.clone());
        out.write_all(&cast_bytes(&t.source_name, from, t.dtype, part)?)?;
        source.release_range(&t.source_name, range);
    }
    Ok(())
}

/// The bytes of one planned tensor, and the dtype they still have to be cast from when the
/// writer casts them part by part.
struct Produced<'a> {
    bytes: Cow<'a, [u8]>,
    cast_from: Option<DType>,
}

/// The bytes of one planned tensor, checked against the planned size: in its output dtype, or
/// still in the source's when they are borrowed from a memory map and need a cast (the writer
/// casts those part by part).
fn produce<'a>(source: &'a dyn TensorSource, t: &Planned) -> Result<Produced<'a>> {
    let info = source.require(&t.source_name)?;
    let raw = source.read(&t.source_name)?;
    let numel = t.shape.iter().product::<usize>() as u64;
    let produced = match raw {
        Cow::Borrowed(_) if info.dtype != t.dtype => Produced {
            bytes: raw,
            cast_from: Some(info.dtype),
        },
        raw if info.dtype == t.dtype => Produced {
            bytes: raw,
            cast_from: None,
        },
        raw => Produced {
            bytes: Cow::Owned(cast_bytes(&info.name, info.dtype, t.dtype, &raw)?.into_owned()),
            cast_from: None,
        },
    };
    let dtype = produced.cast_from.unwrap_or(t.dtype);
    let expected = numel * dtype.size() as u64;
    if produced.bytes.len() as u64 != expected {
        return Err(Error::InvalidValue {
            what: "tensor data".into(),
            value: t.source_name.clone(),
            reason: format!(
                "the source gave {} bytes, expected {expected}",
                produced.bytes.len()
            ),
        });
    }
    Ok(produced)
}

/// Re-open a written file and check that its header lists exactly the planned tensors.
fn verify_file(path: &Path, tensors: &[Planned]) -> Result<()> {
    let written = SafetensorsFile::open(path)?;
    let ok = written.tensors().len() == tensors.len()
        && written
            .tensors()
            .iter()
            .zip(tensors)
            .all(|(w, p)| w.name == p.name && w.dtype == p.dtype && w.shape == p.shape);
    if ok {
        Ok(())
    } else {
        Err(Error::Safetensors {
            path: path.to_path_buf(),
            reason: "the written file does not match what was planned".into(),
        })
    }
}

fn write_index(dir: &Path, total_bytes: u64, weight_map: &BTreeMap<String, String>) -> Result<()> {
    let index = serde_json::json!({
        "metadata": { "total_size": total_bytes },
        "weight_map": weight_map,
    });
    let mut bytes = serde_json::to_vec_pretty(&index)?;
    bytes.push(b'\n');
    let path = dir.join("model.safetensors.index.json");
    let mut f = fs_err::File::create(&path)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    Ok(())
}
