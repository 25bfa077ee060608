//! `lgreg inspect PATH`.

use std::fmt::Write;
use std::path::PathBuf;

use lgreg::inspect::{Report, inspect};

use super::GlobalArgs;
use super::env::HubArgs;
use super::pull::resolve_input;
use super::render::Output;

/// Show a checkpoint's anatomy.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A checkpoint file, a model directory, or `org/name[@rev]` from the Hugging Face cache.
    path: PathBuf,
    #[command(flatten)]
    hub: HubArgs,
}

pub(crate) fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Box<dyn Output>> {
    let path = resolve_input(&args.path, &args.hub, global)?;
    Ok(Box::new(Inspected(inspect(&path)?)))
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct Inspected(Report);

fn opt(v: Option<usize>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

impl Output for Inspected {
    fn command(&self) -> &'static str {
        "inspect"
    }

    fn text(&self) -> String {
        let r = &self.0;
        let mut s = String::new();
        let _ = writeln!(s, "{}", r.path);
        let _ = writeln!(
            s,
            "  family       {} ({:?} naming, {:?})",
            r.family, r.naming, r.format
        );
        let _ = writeln!(s, "  layers       {}", r.layers);
        let _ = writeln!(s, "  hidden size  {}", opt(r.hidden_size));
        let _ = writeln!(
            s,
            "  heads        {} (kv {})",
            opt(r.heads),
            opt(r.kv_heads)
        );
        let _ = writeln!(s, "  mlp size     {}", opt(r.intermediate_size));
        let _ = writeln!(s, "  vocab        {}", opt(r.vocab_size));
        let _ = writeln!(s, "  parameters   {}", r.parameters);
        let _ = writeln!(s, "  bytes        {}", r.bytes);
        let dtypes: Vec<String> = r.dtypes.iter().map(|(d, n)| format!("{d}: {n}")).collect();
        let _ = writeln!(s, "  tensors      {} ({})", r.tensors, dtypes.join(", "));
        let _ = writeln!(s, "  layer  tensors  parameters");
        for l in &r.per_layer {
            let _ = writeln!(
                s,
                "  {:>5}  {:>7}  {:>10}",
                l.index, l.tensors, l.parameters
            );
        }
        for g in &r.globals {
            let _ = writeln!(s, "  {:<40} {:?} {} {:?}", g.name, g.role, g.dtype, g.shape);
        }
        s
    }
}
