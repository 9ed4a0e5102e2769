//! Embeds the shipped catalog: every `workflows/catalog/*.yaml` but the
//! API-version table (which kpilot-tasks embeds), so that a new catalog file
//! ships without a code change and the binary needs no files beside it.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/catalog");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("workflows/catalog is there")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "yaml")
                && p.file_name().is_some_and(|n| n != "api-versions.yaml")
        })
        .collect();
    files.sort();
    let mut out = String::from("/// The shipped catalog files: (path in the repository, text).\npub const FILES: &[(&str, &str)] = &[\n");
    for path in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a UTF-8 file name");
        let abs = path.canonicalize().expect("the file is there");
        let _ = writeln!(
            out,
            "    (\"workflows/catalog/{name}\", include_str!({:?})),",
            abs.display().to_string()
        );
    }
    out.push_str("];\n");
    // The driver scripts shipped checks run (`{{params.drivers}}/NAME`).
    let drivers = dir.join("drivers");
    println!("cargo:rerun-if-changed={}", drivers.display());
    let mut scripts: Vec<_> = std::fs::read_dir(&drivers)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    scripts.sort();
    out.push_str("/// The driver scripts of the shipped checks: (file name, text).\npub const DRIVERS: &[(&str, &str)] = &[\n");
    for path in scripts {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a UTF-8 file name");
        let abs = path.canonicalize().expect("the file is there");
        let _ = writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            abs.display().to_string()
        );
    }
    out.push_str("];\n");
    let target =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("shipped.rs");
    std::fs::write(target, out).expect("OUT_DIR is writable");
}
