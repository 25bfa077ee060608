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

/// The `text` field of line `number` of a JSON Lines file.
fn jsonl_line_text(path: &Path, number: usize, line: &str) -> Result<String> {
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| dataset_error(path, format!("line {number} is not JSON: {e}")))?;
    let text = value
        .get("text")
        .and_then(|t| t.as_str())
        .ok_or_else(|| dataset_error(path, format!("line {number} has no string field `text`")))?;
    Ok(text.to_string())
}

/// The `text` fields of a JSON Lines file.
fn jsonl_texts(path: &Path, raw: &str) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for (i, line) in raw.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        texts.push(jsonl_line_text(path, i + 1, line)?);
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

/// Feed `chunk` the text [`read_text`] would return, in pieces of about `chunk_bytes` or more
/// cut at blank lines (a long stretch without one is cut at a line end), without holding more
/// than a piece at a time: the concatenated pieces are exactly [`read_text`]'s string.
pub fn for_each_chunk(
    path: &Path,
    chunk_bytes: usize,
    chunk: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut first = true;
    for file in data_files(path)? {
        let jsonl = file.extension().is_some_and(|e| e == "jsonl");
        let mut reader = std::io::BufReader::new(fs_err::File::open(&file)?);
        let mut line = Vec::new();
        let mut line_no = 0;
        let mut file_started = false;
        loop {
            line.clear();
            if std::io::BufRead::read_until(&mut reader, b'\n', &mut line)? == 0 {
                break;
            }
            line_no += 1;
            let piece: Vec<u8> = if jsonl {
                let text = String::from_utf8_lossy(&line);
                if text.trim().is_empty() {
                    continue;
                }
                jsonl_line_text(&file, line_no, &text)?.into_bytes()
            } else {
                line.clone()
            };
            if jsonl || !file_started {
                if !first {
                    pending.extend_from_slice(DOCUMENT_SEPARATOR.as_bytes());
                }
                first = false;
                file_started = true;
            }
            pending.extend_from_slice(&piece);
            let at_break = jsonl || piece.iter().all(u8::is_ascii_whitespace);
            if pending.len() >= chunk_bytes && (at_break || pending.len() >= 4 * chunk_bytes) {
                chunk(&String::from_utf8_lossy(&pending))?;
                pending.clear();
            }
        }
        if !jsonl && !file_started {
            // An empty file is still a document.
            if !first {
                pending.extend_from_slice(DOCUMENT_SEPARATOR.as_bytes());
            }
            first = false;
        }
    }
    if !pending.is_empty() {
        chunk(&String::from_utf8_lossy(&pending))?;
    }
    Ok(())
}

/// The total size in bytes of the files `path` names.
pub fn data_bytes(path: &Path) -> Result<u64> {
    let mut total = 0;
    for file in data_files(path)? {
        total += fs_err::metadata(&file)?.len();
    }
    Ok(total)
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
    fn streamed_chunks_join_to_the_whole_text_at_any_size() {
        let dir = corpus();
        let paragraphs: Vec<String> = (0..40)
            .map(|i| format!("Line {i} of the play,\nand its answer.\n"))
            .collect();
        fs_err::write(dir.path().join("e.txt"), paragraphs.join("\n")).expect("write");
        fs_err::write(dir.path().join("f.txt"), "").expect("write");
        fs_err::write(dir.path().join("g.txt"), "one line, no break ".repeat(50)).expect("write");
        let whole = read_text(dir.path()).expect("reads");
        for size in [1, 7, 64, 1 << 20] {
            let mut pieces = Vec::new();
            for_each_chunk(dir.path(), size, &mut |c: &str| {
                pieces.push(c.to_string());
                Ok(())
            })
            .expect("streams");
            assert_eq!(pieces.concat(), whole, "chunks of {size}");
            if size == 64 {
                assert!(pieces.len() > 10, "{} pieces", pieces.len());
                // Cut at blank lines: every piece but the last ends a paragraph or a file.
                let long = pieces.iter().map(String::len).max().unwrap_or(0);
                assert!(long <= 4 * 64 + 1000, "a piece of {long} bytes");
            }
        }
        let bad = dir.path().join("bad.jsonl");
        fs_err::write(&bad, "{\"text\": \"ok\"}\n{\"body\": 1}\n").expect("write");
        let e = for_each_chunk(&bad, 1, &mut |_: &str| Ok(())).expect_err("no text field");
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn a_missing_path_is_not_found() {
        let e = read_text(Path::new("/nonexistent/corpus")).expect_err("missing");
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
    }
}
