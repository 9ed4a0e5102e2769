//! The node agent: a long-running process on each node that runs step bodies
//! and answers `node.*` queries for the kpilot that drives a run.
//!
//! - [`server`]: `kpilot agent` itself: HTTPS with a bearer token on every
//!   request, a semaphore bounding how many bodies run at once.
//! - [`client`]: what an executor uses to reach one agent.
//! - [`inventory`]: the file listing agents (or taking them from the
//!   cluster's nodes), and label selectors over them.
//!
//! The wire protocol is JSON over HTTP/1.1 over TLS:
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /v1/health` | `{"name", "version"}` |
//! | `POST /v1/run` with a [`RunRequest`] | NDJSON [`RunEvent`]s: heartbeats, then `done` |
//! | `GET /v1/node?path=sysctl` | the JSON value of `node.sysctl` (see [`crate::node`]) |
//!
//! Output is returned as tails at the end of the attempt, not streamed; the
//! heartbeat lines (one a second) are what lets the agent notice a client that
//! went away (and kill the attempt's process group), and the client notice an
//! agent that went away.

pub mod client;
pub mod inventory;
pub mod server;

#[cfg(test)]
mod loopback;

use std::collections::BTreeMap;
use std::path::PathBuf;

use kpilot_engine::TaskOutput;
use serde::{Deserialize, Serialize};

pub use client::AgentClient;
pub use inventory::{Agent, ClusterAgents, ClusterSource, Inventory, Selector};
pub use server::{AgentConfig, AgentServer, TlsSource};

/// The header every request carries: `Authorization: Bearer TOKEN`.
pub const AUTHORIZATION: &str = "authorization";

/// How often a running attempt sends a heartbeat line.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// One attempt of a step body, sent to `POST /v1/run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The body's kind (`command`, `script`, ...).
    pub kind: String,
    /// The body as written in the workflow.
    pub body: serde_yaml::Value,
    /// The run.
    pub run_id: String,
    /// The step.
    pub step_id: String,
    /// The instance (the node's name).
    pub instance: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The run's params.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The step's time limit, enforced by the agent as well as by the client.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// One line of the answer to `POST /v1/run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum RunEvent {
    /// The attempt waits for a free slot or runs.
    Heartbeat,
    /// The attempt ended.
    Done {
        /// What it produced.
        output: WireOutput,
    },
}

/// A [`TaskOutput`] on the wire; output bytes are sent as (lossy) UTF-8.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WireOutput {
    /// Why the attempt failed, if it did.
    pub failure: Option<String>,
    /// The process's exit code.
    pub exit_code: Option<i32>,
    /// The tail of standard output.
    pub stdout: String,
    /// The tail of standard error.
    pub stderr: String,
    /// Structured output.
    pub output: Option<serde_json::Value>,
}

impl From<TaskOutput> for WireOutput {
    fn from(o: TaskOutput) -> Self {
        WireOutput {
            failure: o.failure,
            exit_code: o.exit_code,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            output: o.output,
        }
    }
}

impl From<WireOutput> for TaskOutput {
    fn from(o: WireOutput) -> Self {
        TaskOutput {
            internal: false,
            failure: o.failure,
            exit_code: o.exit_code,
            stdout: o.stdout.into_bytes(),
            stderr: o.stderr.into_bytes(),
            output: o.output,
        }
    }
}

/// What can go wrong starting an agent, or reading what it needs.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A file the agent or the client needs cannot be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token file is not safe to use, or holds no usable token.
    #[error("the token file {}: {problem}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do about it.
        problem: String,
    },
    /// A certificate or key is not usable.
    #[error("TLS: {0}")]
    Tls(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The inventory is not valid.
    #[error("inventory {path}: {message}")]
    Inventory {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The shortest token accepted, in bytes: `head -c 32 /dev/urandom | base64`
/// gives 44.
pub const MIN_TOKEN_LEN: usize = 32;

/// The most of a token file that is read: a token is one line.
pub const MAX_TOKEN_FILE: usize = 4096;

/// How to make a good token file, for messages.
const MAKE_TOKEN: &str = "(umask 077; head -c 32 /dev/urandom | base64 > FILE)";

/// Reads a token file, refusing one others could read or replace, and a
/// token that is short, several lines, or not printable ASCII.
///
/// The file must be a regular file (a symbolic link to one is followed, as
/// Kubernetes mounts Secrets) owned by the user kpilot runs as, with no
/// permission for its group or others (`chmod 600`), at most
/// [`MAX_TOKEN_FILE`] bytes, and hold one token of at least
/// [`MIN_TOKEN_LEN`] printable ASCII characters without spaces, optionally
/// followed by one newline. The token is used exactly as written.
pub fn read_token(path: &std::path::Path) -> Result<String, AgentError> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let bad = |problem: String| AgentError::TokenFile {
        path: path.to_owned(),
        problem,
    };
    let shown = path.display();
    // Non-blocking, so that opening a FIFO does not wait for a writer; the
    // checks below are made on the file opened, not on the name.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| AgentError::Read {
            what: "the token file",
            path: path.to_owned(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| AgentError::Read {
        what: "the token file",
        path: path.to_owned(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(bad(format!(
            "is not a regular file; write the token into a file: {}",
            MAKE_TOKEN.replace("FILE", &shown.to_string())
        )));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(bad(format!(
            "is owned by uid {}, not by uid {me} that kpilot runs as, so another user can change it; run `chown {me} {shown}` (or make a token file of your own)",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "has mode {mode:04o}: its group or other users may read or change it; run `chmod 600 {shown}`"
        )));
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_TOKEN_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| AgentError::Read {
            what: "the token file",
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() > MAX_TOKEN_FILE {
        return Err(bad(format!(
            "is larger than {} KiB; it must hold one token (one line): {}",
            MAX_TOKEN_FILE / 1024,
            MAKE_TOKEN.replace("FILE", &shown.to_string())
        )));
    }
    let token = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    if token.is_empty() {
        return Err(bad(format!(
            "is empty; write a token into it: {}",
            MAKE_TOKEN.replace("FILE", &shown.to_string())
        )));
    }
    if let Some(at) = token.iter().position(|b| !b.is_ascii_graphic()) {
        let what = match token[at] {
            b'\n' => "a second line".to_owned(),
            b'\r' => "a carriage return".to_owned(),
            b' ' => "a space".to_owned(),
            b'\t' => "a tab".to_owned(),
            b => format!("byte 0x{b:02x}"),
        };
        return Err(bad(format!(
            "holds {what} at byte {}; a token is one line of printable ASCII without spaces, followed by at most one newline",
            at + 1
        )));
    }
    if token.len() < MIN_TOKEN_LEN {
        return Err(bad(format!(
            "holds a token of {} bytes; a token has at least {MIN_TOKEN_LEN}: {}",
            token.len(),
            MAKE_TOKEN.replace("FILE", &shown.to_string())
        )));
    }
    // Every byte is ASCII, checked above.
    Ok(String::from_utf8_lossy(token).into_owned())
}

/// The SHA-256 fingerprint of a DER certificate, as `sha256:` and lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut s = String::from("sha256:");
    for b in digest.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parses a fingerprint written as `sha256:HEX` (colons between bytes allowed).
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex: String = text
        .trim()
        .trim_start_matches("sha256:")
        .trim_start_matches("SHA256:")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Whether two secrets are the same, byte for byte, in time independent of
/// where they differ (only the length may show).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.ct_eq(b).into()
}

/// Writes a token file as a person should: mode 0600.
#[cfg(test)]
pub(crate) fn write_test_token(path: &std::path::Path, token: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create the token file");
    file.write_all(token.as_bytes())
        .expect("write the token file");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip() {
        let f = fingerprint(b"cert");
        assert!(f.starts_with("sha256:"));
        let bytes = parse_fingerprint(&f).expect("parses");
        assert_eq!(fingerprint(b"cert"), f);
        assert_eq!(bytes.len(), 32);
        assert!(parse_fingerprint("sha256:abc").is_none());
        assert!(parse_fingerprint("sha256:zz").is_none());
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
        assert!(
            !same_secret(b" abc", b"abc"),
            "compared exactly, not trimmed"
        );
    }
}
