//! Docker's credential file, `config.json`: `{"auths": {"HOST": {"auth": base64("user:pass")}}}`.
//!
//! lgreg reads and writes the same file as `docker login`, `oras login` and `skopeo login`
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; the CLI picks the path), so one
//! login serves every tool. Credential helpers (`credsStore`, `credHelpers`) are not run.
//! Writes keep every other key of the file, go through a temp file and a rename, and leave the
//! file readable by its owner only.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::Credentials;
use crate::error::Error;

/// `base64("user:password")`, the `auth` field and the HTTP basic value.
pub fn encode_basic(username: &str, password: &str) -> String {
    STANDARD.encode(format!("{username}:{password}"))
}

/// The credentials `config` holds for `host`, if any. A missing or unreadable file means none.
pub fn docker_credentials(config: &Path, host: &str) -> Option<Credentials> {
    let text = fs_err::read(config).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let auths = value.get("auths")?.as_object()?;
    let entry = auths.get(host).or_else(|| {
        auths
            .iter()
            .find(|(k, _)| strip_scheme(k) == host)
            .map(|(_, v)| v)
    })?;
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
        let raw = STANDARD.decode(auth.trim()).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (username, password) = text.split_once(':')?;
        return Some(Credentials::Basic {
            username: username.to_string(),
            password: password.to_string(),
        });
    }
    let username = entry.get("username")?.as_str()?;
    let password = entry.get("password")?.as_str()?;
    Some(Credentials::Basic {
        username: username.to_string(),
        password: password.to_string(),
    })
}

fn strip_scheme(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// Store `username`/`password` for `host` in `config`, keeping every other entry.
pub fn store_docker_credentials(
    config: &Path,
    host: &str,
    username: &str,
    password: &str,
) -> crate::Result<()> {
    let mut value: serde_json::Value = match fs_err::read(config) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Config {
            path: config.to_path_buf(),
            reason: format!("not a JSON credential file ({e}); fix or move it first"),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(e.into()),
    };
    let Some(root) = value.as_object_mut() else {
        return Err(Error::Config {
            path: config.to_path_buf(),
            reason: "the credential file is not a JSON object".into(),
        });
    };
    let auths = root.entry("auths").or_insert_with(|| serde_json::json!({}));
    if !auths.is_object() {
        *auths = serde_json::json!({});
    }
    if let Some(map) = auths.as_object_mut() {
        map.insert(
            host.to_string(),
            serde_json::json!({ "auth": encode_basic(username, password) }),
        );
    }
    let bytes = serde_json::to_vec_pretty(&value)?;
    if let Some(dir) = config.parent() {
        fs_err::create_dir_all(dir)?;
    }
    // The temp file is created with mode 0600 and renamed over the old file.
    crate::fsutil::write_atomic(config, &bytes)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs_err::write(
            &path,
            br#"{"auths":{"other":{"auth":"eDp5"}},"credsStore":"x"}"#,
        )
        .unwrap();
        store_docker_credentials(&path, "127.0.0.1:5000", "me", "pa:ss").unwrap();
        let creds = docker_credentials(&path, "127.0.0.1:5000").unwrap();
        assert_eq!(
            creds,
            Credentials::Basic {
                username: "me".into(),
                password: "pa:ss".into()
            }
        );
        let v: serde_json::Value = serde_json::from_slice(&fs_err::read(&path).unwrap()).unwrap();
        assert_eq!(v["credsStore"], "x");
        assert!(docker_credentials(&path, "other").is_some());
        assert!(docker_credentials(&path, "nowhere").is_none());
    }
}
