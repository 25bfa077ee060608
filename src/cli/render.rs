//! The one door to stdout: results as text or JSON Lines, errors as text on stderr (and a
//! JSON line on stdout under `--json`).
//!
//! JSON Lines: every line has a `"type"`; the result line is `{"type": "result", "version": 1,
//! "command": ..., ...}` and an error line is `{"type": "error", "version": 1, "message": ...}`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::process::ExitCode;

use super::GlobalArgs;

/// A command's result: serialisable for `--json`, and printable as text.
pub(crate) trait Output: erased_serde::Serialize {
    /// The subcommand name.
    fn command(&self) -> &'static str;
    /// The human-readable rendering.
    fn text(&self) -> String;
    /// Whether the result reports a failure (exit 1 after printing it), as `verify` does.
    fn failed(&self) -> bool {
        false
    }
}

erased_serde::serialize_trait_object!(Output);

/// Prints results and errors in the chosen mode.
#[derive(Debug)]
pub(crate) struct Renderer {
    json: bool,
}

impl Renderer {
    pub(crate) fn new(global: &GlobalArgs) -> Renderer {
        Renderer { json: global.json }
    }

    /// Print a result; exit 0 (also when stdout is a closed pipe).
    pub(crate) fn result(&self, output: &dyn Output) -> ExitCode {
        let text = if self.json {
            match result_line(output) {
                Ok(line) => line,
                Err(e) => return self.error(&anyhow::Error::from(e)),
            }
        } else {
            output.text()
        };
        write_stdout(&text);
        if output.failed() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }

    /// Print an error with its hint; exit 1 for user errors, 2 for failures.
    pub(crate) fn error(&self, err: &anyhow::Error) -> ExitCode {
        let lib = err.downcast_ref::<lgreg::Error>();
        let hint = lib.and_then(lgreg::Error::hint);
        let mut msg = format!("error: {err}");
        for cause in err.chain().skip(1) {
            msg.push_str(&format!("\n  caused by: {cause}"));
        }
        if let Some(h) = &hint {
            msg.push_str(&format!("\nhint: {h}"));
        }
        eprintln!("{msg}");
        if self.json {
            let line = serde_json::json!({
                "type": "error",
                "version": 1,
                "message": err.to_string(),
                "hint": hint,
            });
            write_stdout(&line.to_string());
        }
        ExitCode::from(lib.map_or(2, lgreg::Error::exit_code))
    }
}

/// A note for the user on stderr (a config key with no effect, say), unless `--quiet`.
pub(crate) fn note(global: &GlobalArgs, msg: &str) {
    if !global.quiet {
        eprintln!("note: {msg}");
    }
}

fn result_line(output: &dyn Output) -> serde_json::Result<String> {
    let mut value = serde_json::to_value(output)?;
    let mut line = serde_json::Map::new();
    line.insert("type".into(), "result".into());
    line.insert("version".into(), 1.into());
    line.insert("command".into(), output.command().into());
    if let Some(fields) = value.as_object_mut() {
        line.append(fields);
    }
    serde_json::to_string(&line)
}

/// Write to stdout, ignoring a closed pipe (`lgreg inspect --json | head -c1`).
fn write_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", text.trim_end_matches('\n'));
    let _ = out.flush();
}
