//! The errors a trace can end with.

use crate::btf::BtfError;
use crate::tracefs::TracefsError;

/// Why a trace could not start or run. Each variant says what to change.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Reading tracefs (the tracepoint's record layout) failed.
    #[error(transparent)]
    Tracefs(#[from] TracefsError),

    /// Reading kernel BTF (struct layouts) failed.
    #[error(transparent)]
    Btf(#[from] BtfError),

    /// The kernel names no drop reasons (before 5.17 `skb:kfree_skb` has no `reason`).
    #[error(
        "kernel {release} has no drop reasons (skb:kfree_skb has no `reason` field or \
         names none); kpilot trace needs Linux 5.17 or later"
    )]
    NoDropReasons {
        /// `uname -r`.
        release: String,
    },

    /// The filter names a reason this kernel does not have.
    #[error("unknown drop reason {name:?} on this kernel; known reasons include: {known}")]
    UnknownReason {
        /// The name given.
        name: String,
        /// Some of the names this kernel has.
        known: String,
    },

    /// A filter or setting the tracer cannot apply.
    #[error("invalid trace configuration: {0}")]
    InvalidConfig(String),

    /// The crate was built without its eBPF program (no bpf-linker or rust-src, or
    /// `AYA_BUILD_SKIP=1`).
    #[error(
        "this kpilot was built without its eBPF program (bpf-linker or rust-src was missing, or AYA_BUILD_SKIP=1); run scripts/install-bpf-deps and rebuild"
    )]
    NotBuilt,

    /// Not allowed to load eBPF programs or read kernel data.
    #[error(
        "{what}: permission denied; run as root (or with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)"
    )]
    PermissionDenied {
        /// What was attempted.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Parsing the embedded eBPF object or creating its maps failed.
    #[error("loading the eBPF object: {source}")]
    Object {
        /// aya's error.
        #[source]
        source: aya::EbpfError,
    },

    /// The verifier rejected the program; the log says why.
    #[error("the kernel rejected the eBPF program {program}: {source}\nverifier log:\n{log}")]
    Verifier {
        /// Program name.
        program: &'static str,
        /// The verifier's log.
        log: String,
        /// aya's error.
        #[source]
        source: aya::programs::ProgramError,
    },

    /// Attaching to the tracepoint (or another program operation) failed.
    #[error("{what}: {source}")]
    Program {
        /// What was attempted.
        what: &'static str,
        /// aya's error.
        #[source]
        source: aya::programs::ProgramError,
    },

    /// A map operation failed.
    #[error("{what}: {source}")]
    Map {
        /// What was attempted.
        what: &'static str,
        /// aya's error.
        #[source]
        source: aya::maps::MapError,
    },

    /// The object lacks a map or program this crate expects (a build mismatch).
    #[error("the eBPF object has no {0}; rebuild kpilot-bpf")]
    Missing(&'static str),

    /// Any other system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for this crate.
pub type Result<T, E = TraceError> = std::result::Result<T, E>;

impl TraceError {
    /// Whether the error comes from missing privileges, so a caller can say "run as root"
    /// (tests use this to skip).
    pub fn is_permission_denied(&self) -> bool {
        fn eperm(e: &(dyn std::error::Error + 'static)) -> bool {
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
            while let Some(err) = cur {
                if let Some(io) = err.downcast_ref::<std::io::Error>() {
                    if matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                        return true;
                    }
                }
                cur = err.source();
            }
            false
        }
        matches!(self, TraceError::PermissionDenied { .. }) || eperm(self)
    }
}
