//! Builds the eBPF programs in `ebpf/` for the BPF target with aya-build and leaves them in
//! `OUT_DIR`, where `src/tracer.rs` embeds them.
//!
//! Needs (all installed by `scripts/install-bpf-deps`):
//! - `bpf-linker` 0.10.x: taken from `PATH`, else from `$KPILOT_BPF_LINKER_ROOT/bin` or
//!   `~/.cache/kpilot/bpf-linker/bin` (where the script installs it), which is then put on
//!   the `PATH` of the nested cargo;
//! - the `rust-src` component: `core` is built for `bpfel-unknown-none` with
//!   `-Z build-std=core`, which stable cargo allows with `RUSTC_BOOTSTRAP=1`. That variable is
//!   set for the nested cargo only; the host crates still build as plain stable Rust.
//!
//! `AYA_BUILD_SKIP=1` skips the eBPF build (for `cargo doc`/`clippy` on a machine without
//! bpf-linker): an empty object is embedded and loading fails with `TraceError::NotBuilt`.

use std::env;
use std::path::{Path, PathBuf};

const PROGRAMS: &str = "kpilot-bpf-ebpf";
const OBJECTS: [&str; 1] = ["kpilot-drops"];

fn main() {
    if let Err(err) = run() {
        // A build script reports failure by exiting non-zero; the message is what cargo shows.
        eprintln!("error: building the eBPF programs failed: {err:#}");
        eprintln!(
            "hint: run scripts/install-bpf-deps (as root) to install bpf-linker and rust-src"
        );
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let ebpf_dir = manifest_dir.join("ebpf");
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("common").display()
    );
    println!("cargo:rerun-if-env-changed=KPILOT_BPF_LINKER_ROOT");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");

    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let linker = find_bpf_linker();
    // Without the toolchain the rest of kpilot still builds (the main job needs no eBPF);
    // tracing then fails at run time with TraceError::NotBuilt, naming the install script.
    let missing = match (&linker, has_rust_src()) {
        _ if skip => Some("AYA_BUILD_SKIP is set"),
        (None, _) => Some("bpf-linker was not found"),
        (_, false) => Some("the rust-src component is not installed"),
        _ => None,
    };
    if let Some(why) = missing {
        // Build again once the install script has put bpf-linker in its cache.
        if let Some(home) = env::var_os("HOME") {
            let cached = Path::new(&home).join(".cache/kpilot/bpf-linker/bin/bpf-linker");
            println!("cargo:rerun-if-changed={}", cached.display());
        }
        for obj in OBJECTS {
            let path = out_dir.join(obj);
            if !path.exists() {
                std::fs::write(&path, [])?;
            }
        }
        println!(
            "cargo:warning=eBPF programs not built ({why}): `trace` steps will fail; run scripts/install-bpf-deps and rebuild"
        );
        return Ok(());
    }

    let linker = linker.ok_or_else(|| anyhow::anyhow!("bpf-linker not found"))?;
    let linker_dir = linker
        .parent()
        .ok_or_else(|| anyhow::anyhow!("bpf-linker path {} has no parent", linker.display()))?;
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![linker_dir.to_owned()];
    dirs.extend(env::split_paths(&path));
    let path = env::join_paths(dirs)?;
    let toolchain = env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());

    // SAFETY (edition 2024 set_var): the build script is single-threaded here; these are
    // read by the nested cargo that aya-build spawns.
    unsafe {
        env::set_var("PATH", &path);
        if env::var_os("RUSTC_BOOTSTRAP").is_none() {
            env::set_var("RUSTC_BOOTSTRAP", "1");
        }
    }
    // aya-build runs `cargo build --package ...` without a manifest path: run it from the
    // eBPF workspace, which ../Cargo.toml excludes.
    env::set_current_dir(&ebpf_dir)?;
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: PROGRAMS,
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )?;
    Ok(())
}

fn find_bpf_linker() -> Option<PathBuf> {
    let exe = |dir: &Path| {
        let p = dir.join("bpf-linker");
        p.is_file().then_some(p)
    };
    if let Some(path) = env::var_os("PATH") {
        if let Some(p) = env::split_paths(&path).find_map(|d| exe(&d)) {
            return Some(p);
        }
    }
    let root = env::var_os("KPILOT_BPF_LINKER_ROOT")
        .map(PathBuf::from)
        .or_else(|| {
            env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kpilot/bpf-linker"))
        })?;
    exe(&root.join("bin"))
}

/// Whether rustc's sysroot has the library sources `-Z build-std=core` needs.
fn has_rust_src() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    std::process::Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .is_some_and(|sysroot| {
            Path::new(&sysroot)
                .join("lib/rustlib/src/rust/library/core/Cargo.toml")
                .exists()
        })
}
