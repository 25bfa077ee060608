//! `lgreg login HOST`: check credentials against a registry and store them in Docker's
//! credential file (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), which
//! `docker`, `oras` and `skopeo` read too.

use lgreg::registry::remote::{auth, check_login};
use lgreg::registry::{Connection, Credentials};

use super::GlobalArgs;
use super::env::{docker_config, read_password_stdin};
use super::render::Output;

/// Log in to an OCI registry and save the credentials for `push` and `pull oci://...`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// `HOST[:PORT]` of the registry.
    host: String,
    /// The user name.
    #[arg(long, short = 'u', value_name = "USER")]
    username: String,
    /// Read the password or token from stdin (required: lgreg never takes it as an argument).
    #[arg(long, required = true)]
    password_stdin: bool,
    /// Use plain HTTP (only for loopback registries).
    #[arg(long)]
    insecure: bool,
}

pub(crate) fn run(args: &Args, _global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let password = read_password_stdin()?;
    let conn = Connection {
        insecure: args.insecure,
        credentials: Credentials::Basic {
            username: args.username.clone(),
            password: password.clone(),
        },
    };
    check_login(&args.host, &conn)?;
    let path = docker_config().ok_or_else(|| {
        anyhow::anyhow!("cannot find Docker's credential file: set `DOCKER_CONFIG` or `HOME`")
    })?;
    auth::store_docker_credentials(&path, &args.host, &args.username, &password)?;
    Ok(Box::new(LoginOut {
        host: args.host.clone(),
        username: args.username.clone(),
        config: path.display().to_string(),
    }))
}

#[derive(serde::Serialize)]
struct LoginOut {
    host: String,
    username: String,
    config: String,
}

impl Output for LoginOut {
    fn command(&self) -> &'static str {
        "login"
    }

    fn text(&self) -> String {
        format!(
            "logged in to {} as {}; credentials saved in {}",
            self.host, self.username, self.config
        )
    }
}
