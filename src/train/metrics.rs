//! `metrics.jsonl`: one JSON record per training step (step, epoch, loss, learning rate,
//! throughput) and one per evaluation, appended as the run goes. A resumed run first drops the
//! records past the step its saved state holds, so the file reads as one unbroken run.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::error::Result;
use crate::fsutil::write_atomic;

/// One training step.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// Steps done (1-based).
    pub step: usize,
    /// Passes over the training split so far (fractional).
    pub epoch: f64,
    /// The step's training loss.
    pub loss: f32,
    /// The learning rate it used.
    pub lr: f64,
    /// Training examples per second so far in this process.
    pub samples_per_sec: f64,
    /// The fraction of the step's predictions (images or tokens) whose arg-max equals the
    /// teacher's, when the model is distilled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f32>,
}

/// The file name of the per-step metrics in a run (or adapted model) directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// An append-only metrics file.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: fs_err::File,
}

fn record_step(line: &str) -> Option<u64> {
    serde_json::from_str::<Value>(line)
        .ok()?
        .get("step")?
        .as_u64()
}

impl MetricsLog {
    /// Open `path` for a run that starts after `start` steps: a fresh file when `start` is 0,
    /// else the existing records up to step `start`.
    pub fn open(path: &Path, start: usize) -> Result<MetricsLog> {
        let kept: Vec<String> = if start == 0 {
            Vec::new()
        } else {
            fs_err::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter(|l| record_step(l).is_some_and(|s| s as usize <= start))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs_err::create_dir_all(dir)?;
        }
        write_atomic(path, kept.concat().as_bytes())?;
        let file = fs_err::OpenOptions::new().append(true).open(path)?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Append one record.
    pub fn append(&mut self, record: &impl Serialize) -> Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        Ok(())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Every record of a metrics file.
pub fn read(path: &Path) -> Result<Vec<Value>> {
    let text = fs_err::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(n: usize) -> StepRecord {
        StepRecord {
            step: n,
            epoch: n as f64 / 4.0,
            loss: 1.0 / n as f32,
            lr: 1e-3,
            samples_per_sec: 10.0,
            agreement: None,
        }
    }

    #[test]
    fn a_resumed_log_keeps_only_the_steps_before_the_saved_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run/metrics.jsonl");
        let mut log = MetricsLog::open(&path, 0).expect("open");
        for n in 1..=5 {
            log.append(&step(n)).expect("append");
        }
        drop(log);
        let mut log = MetricsLog::open(&path, 3).expect("reopen");
        log.append(&step(4)).expect("append");
        let steps: Vec<u64> = read(log.path())
            .expect("read")
            .iter()
            .filter_map(|r| r["step"].as_u64())
            .collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
        assert!(MetricsLog::open(&path, 0).is_ok());
        assert!(read(&path).expect("read").is_empty());
    }
}
