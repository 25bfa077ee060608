//! Shared test support: fixture paths and small helpers.

#![allow(dead_code)]

use std::path::PathBuf;

pub mod hub;
pub mod oci;
pub mod synth;
pub mod token;

/// Root of the fetched fixtures (`scripts/fetch-fixtures.sh`), overridable with `LGREG_FIXTURES`.
pub fn fixtures() -> PathBuf {
    match std::env::var_os("LGREG_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fixtures"),
    }
}

/// Path of one fixture; panics with the fix when it has not been fetched.
pub fn fixture(rel: &str) -> PathBuf {
    let p = fixtures().join(rel);
    assert!(
        p.exists(),
        "fixture `{}` is missing: run `scripts/fetch-fixtures.sh` first",
        p.display()
    );
    p
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF.
pub fn smollm2_gguf() -> PathBuf {
    fixture("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The all-MiniLM-L6-v2 HF folder.
pub fn minilm_dir() -> PathBuf {
    fixture("minilm")
}

/// The path of a shipped config, `configs/<name>`.
pub fn shipped(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(name)
        .display()
        .to_string()
}

/// A path as an argument.
pub fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// A command for the `lgreg` binary under test, with a private home.
pub fn lgreg(home: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lgreg"));
    cmd.env("LGREG_HOME", home.join("lgreg-home"))
        .env("HF_HOME", home.join("hf-home"))
        .env("NO_COLOR", "1");
    cmd
}

/// Start `lgreg ARGS` and kill -9 it once `metrics` has at least `lines` lines, or sooner if it
/// exits by itself; gives up after 300 s.
pub fn kill_once_logged(
    home: &std::path::Path,
    args: &[String],
    metrics: &std::path::Path,
    lines: usize,
) {
    let mut child = lgreg(home)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("lgreg starts");
    let began = std::time::Instant::now();
    loop {
        let logged = std::fs::read_to_string(metrics).map_or(0, |t| t.lines().count());
        if logged >= lines || child.try_wait().ok().flatten().is_some() {
            break;
        }
        assert!(
            began.elapsed().as_secs() < 300,
            "the run never logged {lines} lines"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A seed from the clock, for tests that pick a random point (the value is in every message).
pub fn clock_pick(modulo: usize) -> usize {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize)
        % modulo.max(1)
}

/// What a finished `lgreg` run printed.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

/// Run `lgreg ARGS` with a private home and collect its output.
pub fn run(home: &std::path::Path, args: &[&std::ffi::OsStr]) -> Run {
    let out = lgreg(home).args(args).output().expect("lgreg binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `run` with string arguments.
pub fn run_str(home: &std::path::Path, args: &[&str]) -> Run {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    run(home, &args)
}

/// The `--json` result line of a run, parsed.
pub fn json_result(run: &Run) -> serde_json::Value {
    let line = run
        .stdout
        .lines()
        .rev()
        .find(|l| l.contains("\"type\":\"result\""))
        .unwrap_or_else(|| panic!("no JSON result line in {run:?}"));
    serde_json::from_str(line).expect("result line is JSON")
}

/// Build safetensors bytes from a header object and a data section, exactly as given.
pub fn safetensors_bytes(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// Every file under `dir`, relative, sorted (for "nothing changed" checks).
pub fn listing(dir: &std::path::Path) -> Vec<String> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
pub mod gene;

/// The Python interpreter (`LGREG_PYTHON`, else `python3`) when it can `import module`, or
/// `None` to skip the test; panics instead when the environment variable `require` is `1` (CI
/// sets it after installing the peer), naming `install`.
#[allow(clippy::print_stderr)]
pub fn python_with(module: &str, require: &str, install: &str) -> Option<String> {
    let py = std::env::var("LGREG_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    assert!(
        std::env::var(require).as_deref() != Ok("1"),
        "{require}=1 but `{py} -c 'import {module}'` fails: `{install}`"
    );
    eprintln!("skipped: `{py}` cannot import {module} ({install})");
    None
}

/// A small tmpfs mounted on `dir` for the life of the guard (root only): a second file system,
/// or a disk that fills up.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` (`mount -o size=…`, e.g. "256k") on `dir`, creating it; `None`,
    /// with a note on stderr, when this process may not mount.
    #[allow(clippy::print_stderr)]
    pub fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
    }
}

/// The Python parent of [`run_measured`]: it waits for its one child and prints the child's
/// `ru_maxrss` (KiB on Linux) as the last line of stderr.
const MEASURE_CHILD: &str = "import resource, subprocess, sys
r = subprocess.run(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(r.returncode)";

/// Run `cmd` (program, arguments, environment and directory as set) as the only child of a
/// Python parent, and return what it printed and its peak resident memory in bytes: the
/// child's `ru_maxrss`, which covers its whole life (an `exec` included).
pub fn run_measured(cmd: &std::process::Command) -> (Run, u64) {
    let mut parent = std::process::Command::new("python3");
    parent
        .arg("-c")
        .arg(MEASURE_CHILD)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => parent.env(key, value),
            None => parent.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        parent.current_dir(dir);
    }
    let out = parent.output().expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let (child_stderr, last) = stderr
        .trim_end()
        .rsplit_once('\n')
        .unwrap_or(("", stderr.trim_end()));
    let kib: u64 = last.trim().parse().expect("the parent printed ru_maxrss");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: child_stderr.to_string(),
    };
    (run, kib * 1024)
}

/// Bytes free on the file system that holds `dir`.
pub fn free_bytes(dir: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}
