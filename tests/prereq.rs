//! What a test needs from the machine (root, programs), checked in one place.
//!
//! A test whose prerequisite is missing FAILS, naming what is missing and how
//! to get it. Only a developer who asks for it with `KPILOT_ALLOW_SKIP=1`
//! gets a skip instead, printed loudly; under CI (`CI` set to anything but
//! `false` or `0`) or `scripts/test` (which exports `KPILOT_REQUIRE_ALL=1`)
//! nothing is ever skipped, whatever `KPILOT_ALLOW_SKIP` says.
//!
//! Shared by the root package's tests (`tests/util.rs`) and the eBPF crate's
//! (`bpf/tests/drops.rs`), which include this file by path.

#![allow(dead_code)]

/// Something a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Effective uid 0: network namespaces, eBPF programs, chown.
    Root,
    /// A program on PATH, and the package or script that installs it.
    Program(&'static str, &'static str),
    /// A file of the kernel's, and what provides it.
    File(&'static str, &'static str),
}

impl Need {
    /// What is missing, in words, or `None` when it is there.
    fn missing(self) -> Option<String> {
        match self {
            Need::Root if is_root() => None,
            Need::Root => Some(format!(
                "root (this runs as uid {}; run as root: sudo scripts/test)",
                euid().map_or("?".to_owned(), |u| u.to_string())
            )),
            Need::Program(name, _) if on_path(name) => None,
            Need::Program(name, how) => Some(format!("`{name}` on PATH (install {how})")),
            Need::File(path, _) if std::path::Path::new(path).exists() => None,
            Need::File(path, how) => Some(format!("{path} ({how})")),
        }
    }
}

/// The effective uid, from /proc (no libc in this crate's tests).
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether the tests run with effective uid 0.
pub fn is_root() -> bool {
    euid() == Some(0)
}

/// Whether an executable `name` is on PATH.
pub fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(name))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// How missing prerequisites are treated, from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `KPILOT_ALLOW_SKIP=1`: the developer asked for skips.
    pub allow_skip: bool,
    /// CI or `scripts/test`: every test must run.
    pub require_all: bool,
}

impl Policy {
    /// The policy this process runs under.
    pub fn from_env() -> Policy {
        let set = |name: &str| {
            std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
        };
        Policy {
            allow_skip: set("KPILOT_ALLOW_SKIP"),
            require_all: set("CI") || set("KPILOT_REQUIRE_ALL"),
        }
    }
}

/// What to do about a test given what is missing: `Ok(None)` run it,
/// `Ok(Some(line))` skip it and print the line, `Err(message)` fail it.
pub fn decide(test: &str, missing: &[String], policy: Policy) -> Result<Option<String>, String> {
    if missing.is_empty() {
        return Ok(None);
    }
    let what = missing.join(", and ");
    if policy.allow_skip && !policy.require_all {
        return Ok(Some(format!(
            "\n*** SKIPPED {test}: it needs {what}. Skipped only because KPILOT_ALLOW_SKIP=1; \
             this test did NOT run. ***\n"
        )));
    }
    let why = if policy.require_all {
        "under CI or scripts/test every test must run (KPILOT_ALLOW_SKIP is ignored there)"
    } else {
        "a test that cannot run fails; set KPILOT_ALLOW_SKIP=1 to skip it on purpose"
    };
    Err(format!("{test} cannot run: it needs {what}; {why}"))
}

/// Checks a test's prerequisites: `true` to go on; `false` when the test is
/// skipped on purpose (`KPILOT_ALLOW_SKIP=1`, printed); panics, failing the
/// test and naming what is missing, otherwise.
#[track_caller]
pub fn needs(test: &str, what: &[Need]) -> bool {
    let missing: Vec<String> = what.iter().filter_map(|n| n.missing()).collect();
    match decide(test, &missing, Policy::from_env()) {
        Ok(None) => true,
        Ok(Some(skipped)) => {
            eprintln!("{skipped}");
            false
        }
        Err(message) => panic!("{message}"),
    }
}

/// Root.
pub const ROOT: Need = Need::Root;
/// `ip` (iproute2), for namespaces and veth pairs.
pub const IP: Need = Need::Program("ip", "iproute2: scripts/install-bpf-deps");
/// `nft`, for firewall rules in a namespace.
pub const NFT: Need = Need::Program("nft", "nftables: scripts/install-bpf-deps");
/// `iptables` (and `iptables-save`), for node checks.
pub const IPTABLES: Need = Need::Program("iptables", "iptables: scripts/install-bpf-deps");
/// `iptables-legacy`, for the eBPF tests' legacy-table drops.
pub const IPTABLES_LEGACY: Need =
    Need::Program("iptables-legacy", "iptables: scripts/install-bpf-deps");
/// `curl`, for raw requests to an agent.
pub const CURL: Need = Need::Program("curl", "curl: apt-get install curl");
/// `bpftrace`, an independent counter of the drop tracepoint.
pub const BPFTRACE: Need = Need::Program("bpftrace", "bpftrace: scripts/install-bpf-deps");
/// `bash` and `timeout`, for the traffic loops.
pub const BASH: Need = Need::Program("bash", "bash");
/// The kernel's BTF, which the drop tracer reads its layouts from.
pub const BTF: Need = Need::File(
    "/sys/kernel/btf/vmlinux",
    "a kernel built with CONFIG_DEBUG_INFO_BTF, as the tracer needs",
);
/// `timeout` (coreutils).
pub const TIMEOUT: Need = Need::Program("timeout", "coreutils");

#[cfg(test)]
mod tests {
    use super::*;

    const NOTHING: Policy = Policy {
        allow_skip: false,
        require_all: false,
    };

    #[test]
    fn nothing_missing_runs() {
        assert_eq!(decide("t", &[], NOTHING), Ok(None));
        let strict = Policy {
            allow_skip: true,
            require_all: true,
        };
        assert_eq!(decide("t", &[], strict), Ok(None));
    }

    #[test]
    fn a_missing_prerequisite_fails_unless_skipping_is_asked_for() {
        let missing = vec!["root".to_owned(), "`curl` on PATH".to_owned()];
        let e = decide("t", &missing, NOTHING).expect_err("fails by default");
        assert!(
            e.contains("t cannot run") && e.contains("root, and `curl`"),
            "{e}"
        );
        assert!(e.contains("KPILOT_ALLOW_SKIP=1"), "{e}");
        let skip = Policy {
            allow_skip: true,
            require_all: false,
        };
        let line = decide("t", &missing, skip)
            .expect("skipped")
            .expect("a line");
        assert!(
            line.contains("SKIPPED t") && line.contains("did NOT run"),
            "{line}"
        );
    }

    #[test]
    fn ci_and_scripts_test_never_skip() {
        let missing = vec!["root".to_owned()];
        for allow_skip in [false, true] {
            let policy = Policy {
                allow_skip,
                require_all: true,
            };
            let e = decide("t", &missing, policy).expect_err("fails under CI");
            assert!(e.contains("every test must run"), "{e}");
        }
    }

    #[test]
    fn root_is_told_apart() {
        // The helper and the kernel agree on who we are.
        assert_eq!(Need::Root.missing().is_none(), is_root());
        assert!(Need::Program("sh", "").missing().is_none());
        let no = Need::Program("no-such-program-kpilot", "nothing").missing();
        assert!(no.is_some_and(|m| m.contains("no-such-program-kpilot")));
    }
}
