//! PyTorch pickle reader (interface placeholder; the implementation lands with the pickle work).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::{TensorInfo, TensorSource};
use crate::error::{Error, Result};

/// A PyTorch checkpoint read without executing code.
#[derive(Debug)]
pub struct PickleFile {
    #[allow(dead_code)]
    path: PathBuf,
    infos: Vec<TensorInfo>,
}

impl PickleFile {
    /// Open a `.bin`/`.pt`/`.pth` checkpoint.
    pub fn open(path: &Path) -> Result<PickleFile> {
        Err(Error::Pickle {
            path: path.to_path_buf(),
            reason: "PyTorch reading is not built yet".into(),
        })
    }
}

impl TensorSource for PickleFile {
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn read(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        Err(Error::MissingTensor {
            name: name.to_string(),
        })
    }
}
