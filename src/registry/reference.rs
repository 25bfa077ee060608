//! Gene references: `name:version`, `name` (the highest version) or `name@sha256:<hex>`.
//!
//! Names follow the OCI repository-component grammar `[a-z0-9]+([._-][a-z0-9]+)*` (at most 128
//! characters); versions are semver and must also be OCI tags
//! (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`), so build metadata (`+...`) is refused.

use std::fmt;

use super::digest::Digest;
use super::error::Error;

/// A parsed reference to a gene.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `name:version`: one tag.
    Tag {
        /// The gene name.
        name: String,
        /// The version.
        version: semver::Version,
    },
    /// `name`: the highest version of the name (releases before pre-releases).
    Latest {
        /// The gene name.
        name: String,
    },
    /// `name@sha256:<hex>`: one manifest by digest.
    Digest {
        /// The gene name (informational).
        name: String,
        /// The manifest digest.
        digest: Digest,
    },
}

impl Reference {
    /// Parse a reference typed by a user.
    pub fn parse(value: &str) -> Result<Reference, Error> {
        let wrap = |e: Error| Error::InvalidReference {
            value: value.to_string(),
            reason: e.to_string(),
        };
        if let Some((name, digest)) = value.split_once('@') {
            check_name(name).map_err(wrap)?;
            let digest = Digest::parse(digest).map_err(wrap)?;
            return Ok(Reference::Digest {
                name: name.to_string(),
                digest,
            });
        }
        if let Some((name, version)) = value.split_once(':') {
            check_name(name).map_err(wrap)?;
            let version = parse_version(version).map_err(wrap)?;
            return Ok(Reference::Tag {
                name: name.to_string(),
                version,
            });
        }
        check_name(value).map_err(wrap)?;
        Ok(Reference::Latest {
            name: value.to_string(),
        })
    }

    /// A tag reference from a separate name and version (`publish --name N --version V`).
    pub fn tag(name: &str, version: &str) -> Result<Reference, Error> {
        check_name(name)?;
        Ok(Reference::Tag {
            name: name.to_string(),
            version: parse_version(version)?,
        })
    }

    /// The gene name.
    pub fn name(&self) -> &str {
        match self {
            Reference::Tag { name, .. }
            | Reference::Latest { name }
            | Reference::Digest { name, .. } => name,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag { name, version } => write!(f, "{name}:{version}"),
            Reference::Latest { name } => write!(f, "{name}"),
            Reference::Digest { name, digest } => write!(f, "{name}@{digest}"),
        }
    }
}

/// Check a gene name against the repository-component grammar.
pub fn check_name(name: &str) -> Result<(), Error> {
    let bad = |reason: &str| Error::InvalidName {
        value: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > 128 {
        return Err(bad(&format!("it has {} characters, over 128", name.len())));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
    {
        return Err(bad(&format!(
            "`{}` is not allowed; use lowercase letters, digits, `.`, `_` and `-`",
            c.escape_default()
        )));
    }
    let sep = |c: char| matches!(c, '.' | '_' | '-');
    if name.split(sep).any(str::is_empty) {
        return Err(bad(
            "separators `.`, `_` and `-` must sit between letters or digits, one at a time",
        ));
    }
    Ok(())
}

/// Parse a version: semver, and a valid OCI tag.
pub fn parse_version(version: &str) -> Result<semver::Version, Error> {
    let bad = |reason: String| Error::InvalidVersion {
        value: version.to_string(),
        reason,
    };
    if !is_oci_tag(version) {
        return Err(bad(
            "it is not an OCI tag (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`)".into(),
        ));
    }
    semver::Version::parse(version).map_err(|e| bad(format!("it is not semver ({e})")))
}

/// Whether `tag` matches the OCI tag grammar `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_oci_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() || b == b'_' => {}
        _ => return false,
    }
    tag.len() <= 128 && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert!(matches!(
            Reference::parse("smollm2-tleg:0.1.0").unwrap(),
            Reference::Tag { .. }
        ));
        assert!(matches!(
            Reference::parse("smollm2-tleg").unwrap(),
            Reference::Latest { .. }
        ));
        let d = Digest::of(b"x");
        let r = Reference::parse(&format!("a.b@{d}")).unwrap();
        assert_eq!(r.to_string(), format!("a.b@{d}"));
    }

    #[test]
    fn refuses_bad_names_and_versions() {
        for bad in [
            "a/b:1.0.0",
            "../x:1.0.0",
            "a..b:1.0.0",
            "a b:1.0.0",
            "Upper:1.0.0",
            "-a:1.0.0",
            "a:1.0",
            "a:1.0.0+build",
            "a:1.0.0 ",
            "a:",
            ":1.0.0",
            "",
            "a@sha256:1234",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Reference::parse("a:1.0.0-rc.1").is_ok());
    }
}
