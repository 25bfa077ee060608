//! The one door to the environment: Hugging Face variables become a [`HubConfig`], and
//! `LGREG_HOME`/`XDG_DATA_HOME`/`HOME` give the registry root.
//!
//! Read here and nowhere else: `HF_HOME` (default `$XDG_CACHE_HOME/huggingface`, else
//! `~/.cache/huggingface`), `HF_HUB_CACHE` (default `$HF_HOME/hub`), `HF_ENDPOINT`, `HF_TOKEN`,
//! `HF_TOKEN_PATH` (default `$HF_HOME/token`, the file `hf auth login` writes) and
//! `HF_HUB_OFFLINE`; `DOCKER_CONFIG` (default `~/.docker`), whose `config.json` holds registry
//! credentials. Flags beat variables.

#![allow(clippy::disallowed_methods)]

use std::ffi::OsString;
use std::path::PathBuf;

use lgreg::hub::{DEFAULT_ENDPOINT, HubConfig};

/// Hub flags shared by `pull` and the verbs that accept `org/name[@rev]`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct HubArgs {
    /// Hub base URL (default: `HF_ENDPOINT`, else https://huggingface.co).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Access token for gated or private repos (default: `HF_TOKEN`, else the saved token).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Use only the local cache (also `HF_HUB_OFFLINE=1`).
    #[arg(long)]
    pub offline: bool,
}

/// Start the program again with the allocator's purge delay unless `MIMALLOC_PURGE_DELAY` is
/// set (see [`lgreg::allocator`]).
pub(crate) fn start_with_purge_delay() {
    lgreg::allocator::start_with_purge_delay(|k| std::env::var_os(k));
}

fn var(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

fn text(name: &str) -> Option<String> {
    var(name).and_then(|v| v.into_string().ok())
}

/// The font for figures: `LGREG_FONT`, else the library looks in the usual font directories.
pub(crate) fn font() -> Option<PathBuf> {
    var("LGREG_FONT").map(PathBuf::from)
}

/// Build the Hub configuration from the flags and the environment.
pub(crate) fn hub_config(args: &HubArgs) -> HubConfig {
    let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
        let cache = var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        cache.join("huggingface")
    });
    let cache_dir = var("HF_HUB_CACHE")
        .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
        .map(PathBuf::from)
        .unwrap_or_else(|| hf_home.join("hub"));
    let mut cfg = HubConfig::new(cache_dir);
    cfg.endpoint = args
        .endpoint
        .clone()
        .or_else(|| text("HF_ENDPOINT"))
        .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
    cfg.token = args.token.clone().or_else(|| text("HF_TOKEN")).or_else(|| {
        let path = var("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("token"));
        fs_err::read_to_string(path)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    });
    cfg.offline = args.offline
        || text("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "on" | "yes" | "true")
        });
    cfg
}

/// The registry root: `--registry`, else from the environment. This is the one place the
/// CLI reads the environment for it.
pub(crate) fn registry_root(global: &super::GlobalArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &global.registry {
        return Ok(dir.clone());
    }
    lgreg::registry::default_root(|k| std::env::var_os(k)).ok_or_else(|| {
        anyhow::anyhow!(
            "cannot find a home for the registry: set `LGREG_HOME` or pass `--registry DIR`"
        )
    })
}

/// Connection flags shared by `push`, `pull oci://...` and `login`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct RemoteArgs {
    /// Use plain HTTP (only for loopback registries); TLS otherwise.
    #[arg(long)]
    pub insecure: bool,
    /// User name for HTTP basic auth or the token exchange (with `--password-stdin`).
    #[arg(long, short = 'u', value_name = "USER", requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password or token from stdin (with `--username`).
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
}

/// Docker's credential file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub(crate) fn docker_config() -> Option<PathBuf> {
    var("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|d| d.join("config.json"))
}

/// Read a password from stdin: its first line, without the line ending.
pub(crate) fn read_password_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        anyhow::bail!("`--password-stdin` read an empty password");
    }
    Ok(password)
}

/// The connection for `host`: flags first, else the Docker credential file, else anonymous.
pub(crate) fn connection(
    args: &RemoteArgs,
    host: &str,
) -> anyhow::Result<lgreg::registry::Connection> {
    use lgreg::registry::Credentials;
    let credentials = match &args.username {
        Some(username) => Credentials::Basic {
            username: username.clone(),
            password: read_password_stdin()?,
        },
        None => docker_config()
            .and_then(|path| lgreg::registry::remote::auth::docker_credentials(&path, host))
            .unwrap_or_default(),
    };
    Ok(lgreg::registry::Connection {
        insecure: args.insecure,
        credentials,
    })
}
