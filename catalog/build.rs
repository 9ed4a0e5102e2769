//! Embeds the shipped catalog: every `workflows/catalog/*.yaml` but the
//! API-version table (which kpilot-tasks embeds), and the driver scripts in
//! `workflows/catalog/drivers/`, so that a new catalog file ships without a
//! code change and the binary needs no files beside it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Appends `pub const NAME: &[(&str, &str)]` of `(label, text)` for the files
/// of `dir` that `keep` accepts, sorted, and tells cargo to watch them.
fn embed(
    out: &mut String,
    doc: &str,
    name: &str,
    dir: &Path,
    label: impl Fn(&str) -> String,
    keep: impl Fn(&Path) -> bool,
) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && keep(p))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let _ = writeln!(out, "/// {doc}\npub const {name}: &[(&str, &str)] = &[");
    for path in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a UTF-8 file name");
        let abs = path.canonicalize().expect("the file is there");
        let _ = writeln!(
            out,
            "    ({:?}, include_str!({:?})),",
            label(file),
            abs.display().to_string()
        );
    }
    out.push_str("];\n");
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/catalog");
    let mut out = String::new();
    embed(
        &mut out,
        "The shipped catalog files: (path in the repository, text).",
        "FILES",
        &dir,
        |f| format!("workflows/catalog/{f}"),
        |p| {
            p.extension().is_some_and(|x| x == "yaml")
                && p.file_name().is_some_and(|n| n != "api-versions.yaml")
        },
    );
    embed(
        &mut out,
        "The driver scripts of the shipped checks (`{{params.drivers}}/NAME`): (file name, text).",
        "DRIVERS",
        &dir.join("drivers"),
        str::to_owned,
        |_| true,
    );
    let target =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("shipped.rs");
    std::fs::write(target, out).expect("OUT_DIR is writable");
}
