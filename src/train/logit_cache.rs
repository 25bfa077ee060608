//! The teacher's output on text, kept on disk as the top k log-probabilities of every token
//! (`DISTILL.TOP_K`), so that a second student distilled from the same teacher on the same
//! blocks reads them instead of running the teacher again.
//!
//! One directory per teacher, data, block length and k (its name is a digest of the four, and
//! `key.json` inside says what they were); one safetensors file per text block, holding
//! `indices` (u32) and `logprobs` (f32), both `[tokens, k]`, each row sorted by falling
//! probability. Entries are written to a temporary file, fsynced and renamed into place, so a
//! killed run leaves whole entries or none.
//!
//! The distillation target is the cached distribution made whole again: the k recorded
//! probabilities where they are, and the rest of the mass spread evenly over the other
//! entries. A run with a cache uses that target on every step, whether an entry was read or
//! just written, so the first student and the next see the same loss.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::algorithm::heur_vgg::vgg::{read_tensors, safetensors_bytes};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// What a run did with its cache (recorded in the card).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheStats {
    /// The directory of this teacher, data, block length and k.
    pub dir: String,
    /// Log-probabilities kept per token.
    pub top_k: usize,
    /// Blocks read from the cache.
    pub hits: usize,
    /// Blocks the teacher computed (and the cache then kept).
    pub misses: usize,
}

/// The identity of a cache directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheKey {
    /// The teacher's files and their sha256.
    pub teacher: BTreeMap<String, String>,
    /// `sha256:` of the token blocks as read.
    pub data: String,
    /// Tokens per block.
    pub block: usize,
    /// Log-probabilities kept per token.
    pub top_k: usize,
    /// The dtype of the teacher's matrix products.
    pub precision: String,
}

/// The top-k cache of one teacher on one data set.
#[derive(Debug)]
pub struct LogitCache {
    dir: PathBuf,
    top_k: usize,
    hits: Cell<usize>,
    misses: Cell<usize>,
}

/// The `k` largest log-probabilities of one row of logits and where they are, largest first.
pub fn top_k_row(logits: &[f32], k: usize) -> (Vec<u32>, Vec<f32>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&z| f64::from(z - max).exp()).sum();
    let log_z = max + sum.ln() as f32;
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let by_logit_desc = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
    let k = k.min(logits.len());
    if k < order.len() {
        order.select_nth_unstable_by(k, by_logit_desc);
        order.truncate(k);
    }
    order.sort_by(|a, b| by_logit_desc(a, b).then(a.cmp(b)));
    let logprobs = order.iter().map(|&i| logits[i as usize] - log_z).collect();
    (order, logprobs)
}

/// The log-probabilities of a whole row of `vocab` entries from its top k: the recorded ones
/// where they are, the remaining mass spread evenly over the rest.
pub fn dense_row(indices: &[u32], logprobs: &[f32], vocab: usize, out: &mut [f32]) {
    let kept: f64 = logprobs.iter().map(|&l| f64::from(l).exp()).sum();
    let others = vocab.saturating_sub(indices.len()).max(1);
    let rest = ((1.0 - kept).max(1e-30) / others as f64).ln() as f32;
    out.fill(rest);
    for (&i, &l) in indices.iter().zip(logprobs) {
        if let Some(slot) = out.get_mut(i as usize) {
            *slot = l;
        }
    }
}

fn bad_entry(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Dataset {
        path: path.to_path_buf(),
        reason: format!(
            "not a teacher-logit cache entry ({reason}); delete the file and lgreg computes it again"
        ),
    }
}

impl LogitCache {
    /// The cache under `root` for `key`: created when new, checked against `key.json` when not.
    pub fn open(root: &Path, key: &CacheKey) -> Result<LogitCache> {
        let text = serde_json::to_vec_pretty(key)?;
        let digest = crate::registry::digest::Digest::of(&text);
        let hex = digest.hex();
        let dir = root.join(&hex[..hex.len().min(24)]);
        let key_file = dir.join("key.json");
        if key_file.is_file() {
            let existing = fs_err::read(&key_file)?;
            if existing != text {
                return Err(Error::Config {
                    path: key_file,
                    reason:
                        "this cache directory's key differs from the run's; delete the directory"
                            .into(),
                });
            }
        } else {
            fs_err::create_dir_all(&dir)?;
            write_atomic(&key_file, &text)?;
        }
        Ok(LogitCache {
            dir,
            top_k: key.top_k,
            hits: Cell::new(0),
            misses: Cell::new(0),
        })
    }

    fn entry(&self, block: usize) -> PathBuf {
        self.dir.join(format!("{block:08}.safetensors"))
    }

    /// The cached top k of `block`, `[tokens, k]` each, when it is there.
    fn load(&self, block: usize, tokens: usize) -> Result<Option<(Vec<u32>, Vec<f32>)>> {
        let path = self.entry(block);
        if !path.is_file() {
            return Ok(None);
        }
        let tensors = read_tensors(&path, &Device::Cpu).map_err(|e| bad_entry(&path, e))?;
        let (Some(indices), Some(logprobs)) = (tensors.get("indices"), tensors.get("logprobs"))
        else {
            return Err(bad_entry(&path, "it lacks `indices` or `logprobs`"));
        };
        let want = [tokens, self.top_k];
        if indices.dims() != want || logprobs.dims() != want {
            return Err(bad_entry(
                &path,
                format!(
                    "shapes {:?} and {:?}, expected {want:?}",
                    indices.dims(),
                    logprobs.dims()
                ),
            ));
        }
        let indices = indices
            .flatten_all()
            .and_then(|t| t.to_vec1::<u32>())
            .map_err(|e| bad_entry(&path, e))?;
        let logprobs = logprobs
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| bad_entry(&path, e))?;
        Ok(Some((indices, logprobs)))
    }

    /// Keep the top k of every row of `logits` (`[tokens, vocab]`) as `block`'s entry.
    fn store(&self, block: usize, logits: &[f32], vocab: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        let tokens = logits.len() / vocab;
        let (mut indices, mut logprobs) = (Vec::new(), Vec::new());
        for row in logits.chunks(vocab) {
            let (i, l) = top_k_row(row, self.top_k);
            indices.extend(i);
            logprobs.extend(l);
        }
        let shape = (tokens, self.top_k.min(vocab));
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "indices".to_string(),
            Tensor::from_vec(indices.clone(), shape, &Device::Cpu)?,
        );
        tensors.insert(
            "logprobs".to_string(),
            Tensor::from_vec(logprobs.clone(), shape, &Device::Cpu)?,
        );
        write_atomic(&self.entry(block), &safetensors_bytes(&tensors)?)?;
        Ok((indices, logprobs))
    }

    /// The teacher's log-probabilities `[blocks · tokens, vocab]` for `blocks` of `tokens`
    /// tokens each, rebuilt from the cache; `teacher` runs (once, on the whole batch) only when
    /// an entry is missing, and its output `[blocks, tokens, vocab]` fills the gaps.
    pub fn rows(
        &self,
        blocks: &[usize],
        tokens: usize,
        vocab: usize,
        device: &Device,
        teacher: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Tensor> {
        let mut found = Vec::with_capacity(blocks.len());
        for &b in blocks {
            found.push(self.load(b, tokens)?);
        }
        let computed = if found.iter().any(Option::is_none) {
            Some(teacher()?.flatten_all()?.to_vec1::<f32>()?)
        } else {
            None
        };
        let per_block = tokens * vocab;
        let mut dense = vec![0f32; blocks.len() * per_block];
        for (n, (&block, entry)) in blocks.iter().zip(found).enumerate() {
            let (indices, logprobs) = match (entry, computed.as_deref()) {
                (Some(e), _) => {
                    self.hits.set(self.hits.get() + 1);
                    e
                }
                (None, Some(all)) if all.len() == blocks.len() * per_block => {
                    self.misses.set(self.misses.get() + 1);
                    self.store(block, &all[n * per_block..(n + 1) * per_block], vocab)?
                }
                (None, _) => {
                    return Err(Error::ModelMismatch {
                        name: "teacher output".into(),
                        reason: format!(
                            "expected {} blocks of {tokens} tokens x {vocab} logits",
                            blocks.len()
                        ),
                    });
                }
            };
            let k = indices.len() / tokens;
            let rows = dense[n * per_block..(n + 1) * per_block].chunks_mut(vocab);
            for (t, out) in rows.enumerate() {
                let span = t * k..(t + 1) * k;
                dense_row(&indices[span.clone()], &logprobs[span], vocab, out);
            }
        }
        Ok(Tensor::from_vec(
            dense,
            (blocks.len() * tokens, vocab),
            device,
        )?)
    }

    /// What the run read and wrote.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            dir: self.dir.display().to_string(),
            top_k: self.top_k,
            hits: self.hits.get(),
            misses: self.misses.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_softmax(z: &[f32]) -> Vec<f32> {
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = max + z.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
        z.iter().map(|&v| v - lse).collect()
    }

    #[test]
    fn the_top_k_are_the_largest_log_probabilities_in_order() {
        let z = [0.5, 3.0, -1.0, 2.0, 3.0, 0.0];
        let (idx, lp) = top_k_row(&z, 3);
        assert_eq!(idx, vec![1, 4, 3], "ties keep index order");
        let full = log_softmax(&z);
        for (i, l) in idx.iter().zip(&lp) {
            assert!((full[*i as usize] - l).abs() < 1e-6);
        }
    }

    #[test]
    fn a_whole_row_rebuilds_exactly_and_a_partial_one_keeps_its_mass() {
        let z = [0.5, 3.0, -1.0, 2.0, 1.0, 0.0];
        let (idx, lp) = top_k_row(&z, z.len());
        let mut out = vec![0.0; z.len()];
        dense_row(&idx, &lp, z.len(), &mut out);
        for (a, b) in out.iter().zip(log_softmax(&z)) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
        let (idx, lp) = top_k_row(&z, 2);
        dense_row(&idx, &lp, z.len(), &mut out);
        let total: f32 = out.iter().map(|l| l.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        assert!((out[1] - log_softmax(&z)[1]).abs() < 1e-6);
        assert_eq!(out[0], out[5], "the rest is spread evenly");
    }

    #[test]
    fn entries_are_written_once_then_read_and_a_bad_one_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let key = CacheKey {
            teacher: BTreeMap::from([("model.safetensors".into(), "ab".into())]),
            data: "sha256:00".into(),
            block: 2,
            top_k: 2,
            precision: "f32".into(),
        };
        let cache = LogitCache::open(tmp.path(), &key).unwrap();
        let logits: Vec<f32> = (0..2 * 2 * 4).map(|i| (i % 5) as f32).collect();
        let teacher = || Ok(Tensor::from_vec(logits.clone(), (2, 2, 4), &Device::Cpu)?);
        let first = cache.rows(&[7, 3], 2, 4, &Device::Cpu, teacher).unwrap();
        let again = cache
            .rows(&[7, 3], 2, 4, &Device::Cpu, || {
                panic!("the teacher ran again")
            })
            .unwrap();
        assert_eq!(
            first.to_vec2::<f32>().unwrap(),
            again.to_vec2::<f32>().unwrap()
        );
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (2, 2));
        // Another key is another directory; a changed key file is refused.
        let other = CacheKey {
            top_k: 3,
            ..key.clone()
        };
        assert_ne!(LogitCache::open(tmp.path(), &other).unwrap().dir, cache.dir);
        fs_err::write(cache.dir.join("00000007.safetensors"), b"junk").unwrap();
        let e = cache
            .rows(&[7], 2, 4, &Device::Cpu, || panic!("no"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("00000007.safetensors") && e.contains("delete"),
            "{e}"
        );
    }
}
