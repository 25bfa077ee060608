//! Text data given as a path: a file, a directory of text files (read recursively, in name
//! order, hidden entries skipped), a glob such as `texts/*_gut.txt`, or JSON Lines (`.jsonl`)
//! whose records carry a `text` field. Documents are joined by a blank line.

use std::path::{Path, PathBuf};

use globset::{Glob, GlobMatcher};

use crate::error::{Error, Result};

/// Between two documents.
const DOCUMENT_SEPARATOR: &str = "\n\n";

fn dataset_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Dataset {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Every regular file under `dir`, recursively, in path order.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in fs_err::read_dir(&d)? {
            let path = entry?.path();
            if is_hidden(&path) {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn has_glob_syntax(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// The directory a glob's matches lie under: its components before the first with glob syntax.
fn glob_root(pattern: &Path) -> PathBuf {
    let mut root = PathBuf::new();
    for part in pattern.components() {
        if has_glob_syntax(&part.as_os_str().to_string_lossy()) {
            break;
        }
        root.push(part);
    }
    if root.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root
    }
}

fn glob_matches(pattern: &Path) -> Result<Vec<PathBuf>> {
    let text = pattern.to_string_lossy();
    let matcher: GlobMatcher = Glob::new(&text)
        .map_err(|e| dataset_error(pattern, format!("not a valid glob: {e}")))?
        .compile_matcher();
    let root = glob_root(pattern);
    if !root.is_dir() {
        return Err(dataset_error(
            pattern,
            format!("the glob's directory `{}` does not exist", root.display()),
        ));
    }
    let strip_dot = !text.starts_with("./") && root == Path::new(".");
    let files: Vec<PathBuf> = files_under(&root)?
        .into_iter()
        .filter(|p| {
            let candidate = if strip_dot {
                p.strip_prefix(".").unwrap_or(p)
            } else {
                p
            };
            matcher.is_match(candidate)
        })
        .collect();
    Ok(files)
}

/// The `text` fields of a JSON Lines file.
fn jsonl_texts(path: &Path, raw: &str) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for (i, line) in raw.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| dataset_error(path, format!("line {} is not JSON: {e}", i + 1)))?;
        let text = value.get("text").and_then(|t| t.as_str()).ok_or_else(|| {
            dataset_error(path, format!("line {} has no string field `text`", i + 1))
        })?;
        texts.push(text.to_string());
    }
    Ok(texts)
}

/// The documents of one file.
fn file_documents(path: &Path) -> Result<Vec<String>> {
    let bytes = fs_err::read(path)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if path.extension().is_some_and(|e| e == "jsonl") {
        jsonl_texts(path, &text)
    } else {
        Ok(vec![text])
    }
}

/// The files `path` names: itself, the files under it, or a glob's matches.
pub fn data_files(path: &Path) -> Result<Vec<PathBuf>> {
    let files = if path.is_file() {
        vec![path.to_path_buf()]
    } else if path.is_dir() {
        files_under(path)?
    } else if has_glob_syntax(&path.to_string_lossy()) {
        glob_matches(path)?
    } else {
        return Err(Error::NotFound {
            path: path.to_path_buf(),
        });
    };
    if files.is_empty() {
        return Err(dataset_error(
            path,
            "names no file: give a file, a directory of text files, a glob or a .jsonl file",
        ));
    }
    Ok(files)
}

/// All the text `path` names, documents joined by a blank line.
pub fn read_text(path: &Path) -> Result<String> {
    let mut docs = Vec::new();
    for file in data_files(path)? {
        docs.extend(file_documents(&file)?);
    }
    Ok(docs.join(DOCUMENT_SEPARATOR))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs_err::create_dir_all(dir.path().join("sub")).expect("mkdir");
        fs_err::write(dir.path().join("a.txt"), "alpha").expect("write");
        fs_err::write(dir.path().join("sub/b.txt"), "beta").expect("write");
        fs_err::write(dir.path().join("c.md"), "gamma").expect("write");
        fs_err::write(dir.path().join(".hidden"), "no").expect("write");
        fs_err::write(
            dir.path().join("d.jsonl"),
            "{\"text\": \"delta\"}\n\n{\"text\": \"epsilon\", \"id\": 2}\n",
        )
        .expect("write");
        dir
    }

    #[test]
    fn a_directory_reads_every_file_in_order_and_skips_hidden_ones() {
        let dir = corpus();
        let text = read_text(dir.path()).expect("reads");
        assert_eq!(text, "alpha\n\ngamma\n\ndelta\n\nepsilon\n\nbeta");
    }

    #[test]
    fn a_glob_reads_its_matches() {
        let dir = corpus();
        let text = read_text(&dir.path().join("**/*.txt")).expect("reads");
        assert_eq!(text, "alpha\n\nbeta");
        let none = read_text(&dir.path().join("*.csv")).expect_err("no match");
        assert!(none.to_string().contains("names no file"), "{none}");
    }

    #[test]
    fn json_lines_give_their_text_fields_and_bad_lines_are_named() {
        let dir = corpus();
        assert_eq!(
            read_text(&dir.path().join("d.jsonl")).expect("reads"),
            "delta\n\nepsilon"
        );
        let bad = dir.path().join("bad.jsonl");
        fs_err::write(&bad, "{\"text\": \"ok\"}\n{\"body\": 1}\n").expect("write");
        let e = read_text(&bad).expect_err("no text field").to_string();
        assert!(e.contains("bad.jsonl") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn a_missing_path_is_not_found() {
        let e = read_text(Path::new("/nonexistent/corpus")).expect_err("missing");
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
    }
}
