//! Content digests: `sha256:<64 lowercase hex>`, and the hashing loops that compute them.
//!
//! SHA-256 comes from `ring`, whose assembly uses SHA-NI where the CPU has it and AVX2/SSSE3
//! code otherwise; `sha2` 0.11 only has portable code on CPUs without SHA-NI, which ran at half
//! OpenSSL's rate (see BENCHMARKS.md).

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use ring::digest::{Context, SHA256};

use super::error::Error;

/// Size of the buffer that streams pass through: large enough that syscalls do not dominate.
pub const BUF_SIZE: usize = 4 << 20;

/// A validated sha256 content digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parse `sha256:<64 lowercase hex>`.
    pub fn parse(value: &str) -> Result<Digest, Error> {
        let bad = |reason: &str| Error::InvalidDigest {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let Some((algo, hex)) = value.split_once(':') else {
            return Err(bad("expected `sha256:<hex>`"));
        };
        if algo != "sha256" {
            return Err(bad("only the `sha256` algorithm is supported"));
        }
        Digest::from_hex(hex).map_err(|_| bad("expected 64 lowercase hex digits after `sha256:`"))
    }

    /// Build from the 64 lowercase hex digits alone (a blob's file name).
    pub fn from_hex(hex: &str) -> Result<Digest, Error> {
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Digest {
                hex: hex.to_string(),
            })
        } else {
            Err(Error::InvalidDigest {
                value: hex.to_string(),
                reason: "expected 64 lowercase hex digits".into(),
            })
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::new();
        h.update(bytes);
        h.finish()
    }

    fn from_context(h: Context) -> Digest {
        let out = h.finish();
        let mut hex = String::with_capacity(64);
        for b in out.as_ref() {
            hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        Digest { hex }
    }

    /// The hex part, which is also the blob's file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest, Error> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A running SHA-256 over bytes fed in pieces.
#[derive(Clone)]
pub struct Hasher(Context);

impl Hasher {
    /// An empty hash.
    pub fn new() -> Hasher {
        Hasher(Context::new(&SHA256))
    }

    /// Feed `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest::from_context(self.0)
    }
}

impl Default for Hasher {
    fn default() -> Hasher {
        Hasher::new()
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher(sha256)")
    }
}

/// Stream `reader` into `writer` (when given), feeding `hasher` on the way; returns the byte
/// count. `progress` is called with the size of every chunk.
pub fn copy_into_hasher(
    reader: &mut dyn Read,
    mut writer: Option<&mut dyn Write>,
    hasher: &mut Hasher,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        hasher.update(chunk);
        if let Some(w) = writer.as_deref_mut() {
            w.write_all(chunk)?;
        }
        total += n as u64;
        progress(n as u64);
    }
    Ok(total)
}

/// Stream `reader` into `writer` (when given), hashing on the way; returns the digest and the
/// byte count. `progress` is called with the size of every chunk.
pub fn copy_hashed(
    reader: &mut dyn Read,
    writer: Option<&mut dyn Write>,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<(Digest, u64)> {
    let mut hasher = Hasher::new();
    let total = copy_into_hasher(reader, writer, &mut hasher, progress)?;
    Ok((hasher.finish(), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        for bad in [
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:e3b0",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:../../etc/passwd",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn copy_hashed_matches_of() {
        let data = vec![7u8; BUF_SIZE + 13];
        let mut out = Vec::new();
        let mut seen = 0;
        let (d, n) = copy_hashed(&mut &data[..], Some(&mut out), &mut |k| seen += k).unwrap();
        assert_eq!((d, n, seen), (Digest::of(&data), data.len() as u64, n));
        assert_eq!(out, data);
    }
}
