//! `workflow.json` beside a run's database: the run's workflow as parsed
//! (the YAML tree, merge keys applied), so that a resume checks and plans it
//! without parsing the YAML again. Parsing is most of planning: for a
//! workflow of 100,000 steps it takes longer than the rest of a resume.
//!
//! The file is a cache of the stored source, never a second truth: its
//! header names the kpilot that wrote it and the size and CRC-32 of the
//! source it was parsed from, and any mismatch, or any damage, means the
//! source is parsed again. A resume still runs every check of this kpilot
//! on the tree (`validate::check`): only the parse is saved.

use std::io::{BufRead as _, Write as _};
use std::path::Path;

use serde_yaml::Value;

/// The file's name in the run directory.
pub const FILE: &str = "workflow.json";

/// Which kpilot wrote the file: another one parses the source again.
const WRITER: &str = concat!("kpilot ", env!("CARGO_PKG_VERSION"), " tree 1");

/// The first line of the file.
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
struct Header {
    writer: String,
    source_bytes: usize,
    source_crc32: u32,
}

impl Header {
    fn of(source: &str) -> Self {
        Header {
            writer: WRITER.to_owned(),
            source_bytes: source.len(),
            source_crc32: crc32fast::hash(source.as_bytes()),
        }
    }
}

/// Whether JSON holds the tree exactly: YAML's tags, keys that are not
/// text and non-finite numbers have no JSON form (serde_json would turn a
/// number key into text and NaN into null, and the checks would see another
/// workflow), so such a tree is not kept.
fn fits_json(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => n.as_f64().is_none_or(f64::is_finite),
        Value::Sequence(items) => items.iter().all(fits_json),
        Value::Mapping(map) => map
            .iter()
            .all(|(k, v)| matches!(k, Value::String(_)) && fits_json(v)),
        Value::Tagged(_) => false,
    }
}

/// Writes `tree`, parsed from `source`, into `dir`; a tree JSON cannot hold
/// is not written (the resume parses the source). Returns whether it was.
pub fn write(dir: &Path, source: &str, tree: &Value) -> std::io::Result<bool> {
    if !fits_json(tree) {
        return Ok(false);
    }
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    serde_json::to_writer(&mut out, &Header::of(source))?;
    out.write_all(b"\n")?;
    serde_json::to_writer(&mut out, tree)?;
    out.into_inner().map_err(|e| e.into_error())?;
    std::fs::rename(&tmp, &path)?;
    Ok(true)
}

/// The tree kept in `dir` for `source`, if this kpilot wrote it from this
/// very source; `None` (parse the source) for anything else.
pub fn read(dir: &Path, source: &str) -> Option<Value> {
    let path = dir.join(FILE);
    let file = std::fs::File::open(&path).ok()?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let header: Header = serde_json::from_str(&first).ok()?;
    if header != Header::of(source) {
        tracing::debug!(path = %path.display(), "the kept workflow tree is of another source or kpilot; parsing the source");
        return None;
    }
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut rest).ok()?;
    match serde_json::from_slice(&rest) {
        Ok(tree) => Some(tree),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the kept workflow tree cannot be read; parsing the source");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> Value {
        let mut v: Value = serde_yaml::from_str(text).expect("yaml");
        v.apply_merge().expect("merge");
        v
    }

    #[test]
    fn a_tree_comes_back_as_it_was_parsed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = "a: &d {x: 1, y: [true, 2.5, null, \"t\"]}\nb: {<<: *d, z: -3}\n";
        let parsed = tree(source);
        assert!(write(dir.path(), source, &parsed).expect("write"));
        assert_eq!(read(dir.path(), source), Some(parsed));
    }

    #[test]
    fn another_source_or_a_damaged_file_means_parsing_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = "a: 1\n";
        assert!(write(dir.path(), source, &tree(source)).expect("write"));
        assert_eq!(read(dir.path(), "a: 2\n"), None, "same size, other text");
        assert_eq!(read(dir.path(), "a: 1 \n"), None, "other size");
        let path = dir.path().join(FILE);
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, &text[..text.len() - 2]).expect("truncate");
        assert_eq!(read(dir.path(), source), None, "cut short");
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(read(dir.path(), source), None, "absent");
    }

    #[test]
    fn a_tree_json_cannot_hold_is_not_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        for source in ["a: !t 1\n", "1: a\n", "a: .nan\n", "a: [{[1]: x}]\n"] {
            assert!(
                !write(dir.path(), source, &tree(source)).expect("write"),
                "{source:?} was kept"
            );
            assert_eq!(read(dir.path(), source), None);
        }
    }
}
