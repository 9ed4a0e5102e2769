//! The inventory file: which agents exist, where, with which labels, and how
//! to trust them; and label selectors over them.
//!
//! ```yaml
//! tokenFile: agent-token        # relative to this file
//! ca: agents-ca.pem             # optional: trust certificates signed by this CA
//! fingerprint: sha256:91ab...    # optional: the pin of agents that list none (one
//!                                # certificate shared by every agent, as in deploy/)
//! agents:
//!   - name: node-1
//!     address: 10.0.0.1:7443
//!     labels: {role: worker, zone: a}
//!     fingerprint: sha256:4f2c...  # pins the agent's (self-signed) certificate
//! ```
//!
//! Every agent needs a `fingerprint` (its own or the top-level one) unless
//! `ca` is given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::AgentError;

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InventoryFile {
    token_file: String,
    #[serde(default)]
    ca: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
    agents: Vec<AgentEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentEntry {
    name: String,
    address: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    fingerprint: Option<String>,
}

/// A validated inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// The file it was read from.
    pub path: PathBuf,
    /// The bearer token every agent accepts.
    pub token: String,
    /// PEM of the CA that signed the agents' certificates, when given.
    pub ca_pem: Option<Vec<u8>>,
    /// The agents, sorted by name.
    pub agents: Vec<Agent>,
}

/// One agent of an inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// The node's name; a per-node step's instance is named after it.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// Its labels, for selectors.
    pub labels: BTreeMap<String, String>,
    /// The pinned SHA-256 of its certificate.
    pub fingerprint: Option<[u8; 32]>,
}

impl Inventory {
    /// Reads and validates an inventory file; relative paths in it are
    /// relative to the file's directory.
    pub fn read(path: &Path) -> Result<Self, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentError::Read {
            what: "the inventory",
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates inventory text read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, AgentError> {
        let bad = |message: String| AgentError::Inventory {
            path: path.to_owned(),
            message,
        };
        let file: InventoryFile = serde_yaml::from_str(text).map_err(|e| {
            bad(format!(
                "{e}; expected {{tokenFile: FILE, ca: FILE (optional), agents: [{{name, address, labels, fingerprint}}]}}"
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let token = super::read_token(&base.join(&file.token_file))?;
        let ca_pem = match &file.ca {
            Some(ca) => {
                let ca_path = base.join(ca);
                Some(std::fs::read(&ca_path).map_err(|source| AgentError::Read {
                    what: "the CA certificate",
                    path: ca_path,
                    source,
                })?)
            }
            None => None,
        };
        let mut agents = Vec::new();
        for entry in file.agents {
            if entry.name.is_empty() || entry.name.contains(char::is_whitespace) {
                return Err(bad(format!(
                    "agent name `{}` is empty or has spaces; name each agent after its node",
                    entry.name
                )));
            }
            if agents.iter().any(|a: &Agent| a.name == entry.name) {
                return Err(bad(format!(
                    "agent `{}` is listed twice; give each agent a name of its own",
                    entry.name
                )));
            }
            if !entry.address.contains(':') {
                return Err(bad(format!(
                    "agent `{}`: address `{}` has no port; write HOST:PORT like 10.0.0.7:7443",
                    entry.name, entry.address
                )));
            }
            let fingerprint = match entry.fingerprint.as_ref().or(file.fingerprint.as_ref()) {
                Some(f) => Some(super::parse_fingerprint(f).ok_or_else(|| {
                    bad(format!(
                        "agent `{}`: fingerprint `{f}` is not sha256: and 64 hex digits (the agent prints it at start)",
                        entry.name
                    ))
                })?),
                None if ca_pem.is_none() => {
                    return Err(bad(format!(
                        "agent `{}` has no fingerprint and the inventory names no `ca`; pin the certificate the agent printed at start (per agent, or one top-level `fingerprint` for a certificate all agents share), or give `ca`",
                        entry.name
                    )))
                }
                None => None,
            };
            agents.push(Agent {
                name: entry.name,
                address: entry.address,
                labels: entry.labels,
                fingerprint,
            });
        }
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Inventory {
            path: path.to_owned(),
            token,
            ca_pem,
            agents,
        })
    }

    /// The agent with this name.
    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.name == name)
    }
}

/// A label selector: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
/// `k` (has the label) and `!k` (has not), joined by commas (all must hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    terms: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

impl Selector {
    /// Parses a selector; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        let mut depth = 0usize;
        let mut start = 0;
        let mut parts = Vec::new();
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth = depth
                        .checked_sub(1)
                        .ok_or_else(|| format!("selector `{text}` closes a `)` it never opened"))?
                }
                ',' if depth == 0 => {
                    parts.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        if depth != 0 {
            return Err(format!("selector `{text}` leaves a `(` open"));
        }
        parts.push(&text[start..]);
        let key_ok = |k: &str| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        };
        for part in parts {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(format!("selector `{text}` has an empty term"));
            }
            let term = if let Some((k, v)) = part.split_once("!=") {
                Term::Ne(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Term::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some(k) = part.strip_prefix('!') {
                Term::Absent(k.trim().to_owned())
            } else if let Some((k, rest)) = split_set(part, " notin ") {
                Term::NotIn(k, set(rest, text)?)
            } else if let Some((k, rest)) = split_set(part, " in ") {
                Term::In(k, set(rest, text)?)
            } else {
                Term::Exists(part.to_owned())
            };
            let key = match &term {
                Term::Eq(k, _)
                | Term::Ne(k, _)
                | Term::In(k, _)
                | Term::NotIn(k, _)
                | Term::Exists(k)
                | Term::Absent(k) => k,
            };
            if !key_ok(key) {
                return Err(format!(
                    "selector term `{part}` has no valid label key; write `k=v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` or `!k`"
                ));
            }
            terms.push(term);
        }
        Ok(Selector { terms })
    }

    /// Whether labels satisfy every term.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().all(|t| match t {
            Term::Eq(k, v) => labels.get(k) == Some(v),
            Term::Ne(k, v) => labels.get(k) != Some(v),
            Term::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Term::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Term::Exists(k) => labels.contains_key(k),
            Term::Absent(k) => !labels.contains_key(k),
        })
    }
}

fn split_set(part: &str, op: &str) -> Option<(String, String)> {
    let (k, rest) = part.split_once(op)?;
    Some((k.trim().to_owned(), rest.trim().to_owned()))
}

fn set(rest: String, text: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("selector `{text}`: write a set as `(a,b)`"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let l = labels(&[("role", "worker"), ("zone", "b")]);
        let yes = |s: &str| Selector::parse(s).expect(s).matches(&l);
        assert!(yes("role=worker"));
        assert!(yes("role==worker,zone in (a, b)"));
        assert!(!yes("role!=worker"));
        assert!(yes("zone notin (a,c)"));
        assert!(!yes("zone notin (b)"));
        assert!(yes("role"));
        assert!(!yes("!role"));
        assert!(yes("!gpu"));
        assert!(yes(""));
        assert!(Selector::parse("zone in (a").is_err());
        assert!(Selector::parse("a=b,,c").is_err());
        assert!(Selector::parse("=x").is_err());
    }

    #[test]
    fn inventories_are_validated() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("token"), "s3cret\n").expect("write");
        let path = dir.path().join("inv.yaml");
        let fp = format!("sha256:{}", "ab".repeat(32));
        let inv = Inventory::parse(
            &path,
            &format!("tokenFile: token\nagents:\n  - {{name: b, address: '1.2.3.4:1', fingerprint: '{fp}'}}\n  - {{name: a, address: '1.2.3.5:1', labels: {{x: y}}, fingerprint: '{fp}'}}\n"),
        )
        .expect("valid");
        assert_eq!(inv.token, "s3cret");
        assert_eq!(inv.agents[0].name, "a");
        let err = Inventory::parse(
            &path,
            "tokenFile: token\nagents:\n  - {name: a, address: '1.2.3.4:1'}\n",
        )
        .expect_err("no fingerprint");
        let shared = Inventory::parse(
            &path,
            &format!("tokenFile: token\nfingerprint: '{fp}'\nagents:\n  - {{name: a, address: '1.2.3.4:1'}}\n"),
        )
        .expect("a shared pin");
        assert!(shared.agents[0].fingerprint.is_some());
        assert!(err.to_string().contains("no fingerprint"), "{err}");
        let err = Inventory::parse(
            &path,
            &format!(
                "tokenFile: token\nagents:\n  - {{name: a, address: nope, fingerprint: '{fp}'}}\n"
            ),
        )
        .expect_err("no port");
        assert!(err.to_string().contains("no port"), "{err}");
    }
}
