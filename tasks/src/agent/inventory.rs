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
//!
//! Instead of `agents`, a `cluster:` section takes the agents from the
//! cluster's nodes (one agent per node, as the `deploy/` DaemonSet runs them):
//!
//! ```yaml
//! tokenFile: agent-token
//! fingerprint: sha256:91ab...    # the certificate every agent shares (or `ca`)
//! cluster: {port: 7443, addressType: InternalIP}
//! ```
//!
//! Each node is then an agent named after the node, at the node's address of
//! `addressType` and `port`, labelled with the node's labels
//! ([`Inventory::cluster_agents`]).

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
    #[serde(default)]
    agents: Option<Vec<AgentEntry>>,
    #[serde(default)]
    cluster: Option<ClusterEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClusterEntry {
    port: u16,
    #[serde(default = "internal_ip")]
    address_type: String,
}

fn internal_ip() -> String {
    "InternalIP".to_owned()
}

/// The address types a Node's `status.addresses` may hold.
pub const ADDRESS_TYPES: &[&str] = &[
    "InternalIP",
    "ExternalIP",
    "Hostname",
    "InternalDNS",
    "ExternalDNS",
];

/// An inventory's `cluster:` section: the agents are the cluster's nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSource {
    /// The port every node's agent listens on.
    pub port: u16,
    /// Which of a node's `status.addresses` reaches its agent (`InternalIP`).
    pub address_type: String,
}

/// The agents of an inventory's `cluster:` section, made from a node list.
#[derive(Debug, Clone, Default)]
pub struct ClusterAgents {
    /// One agent per node, sorted by name; a node without an address of the
    /// type has an empty `address`.
    pub agents: Vec<Agent>,
    /// Why a node has no agent to reach (no address of the type), by name.
    pub unaddressed: BTreeMap<String, String>,
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
    /// The top-level pin: of agents that list none, and of the cluster's nodes.
    pub fingerprint: Option<[u8; 32]>,
    /// The agents, sorted by name (none when they come from the cluster).
    pub agents: Vec<Agent>,
    /// When set, the agents are the cluster's nodes.
    pub cluster: Option<ClusterSource>,
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
                "{e}; expected {{tokenFile: FILE, ca: FILE (optional), fingerprint: sha256:HEX (optional), agents: [{{name, address, labels, fingerprint}}]}} or, instead of agents, cluster: {{port: 7443, addressType: InternalIP}}"
            ))
        })?;
        let fingerprint = match &file.fingerprint {
            Some(f) => Some(super::parse_fingerprint(f).ok_or_else(|| {
                bad(format!(
                    "the top-level fingerprint `{f}` is not sha256: and 64 hex digits (the agent prints it at start)"
                ))
            })?),
            None => None,
        };
        let cluster = match file.cluster {
            None => None,
            Some(c) => {
                if file.agents.is_some() {
                    return Err(bad(
                        "it has both `agents` and `cluster`; keep `cluster:` to take the agents from the cluster's nodes, or list them under `agents:` without `cluster:`".to_owned(),
                    ));
                }
                if c.port == 0 {
                    return Err(bad(
                        "`cluster.port` is 0; write the port the agents listen on (`kpilot agent --listen 0.0.0.0:7443` → 7443)".to_owned(),
                    ));
                }
                if !ADDRESS_TYPES.contains(&c.address_type.as_str()) {
                    return Err(bad(format!(
                        "`cluster.addressType` is `{}`; write one of {} (a type of the nodes' status.addresses)",
                        c.address_type,
                        ADDRESS_TYPES.join(", ")
                    )));
                }
                if fingerprint.is_none() && file.ca.is_none() {
                    return Err(bad(
                        "`cluster:` takes the agents from the cluster's nodes, so there is no agent to pin; write a top-level `fingerprint` (of the certificate every agent shares, as deploy/agent.yaml sets up) or `ca`".to_owned(),
                    ));
                }
                Some(ClusterSource {
                    port: c.port,
                    address_type: c.address_type,
                })
            }
        };
        if cluster.is_none() && file.agents.is_none() {
            return Err(bad(
                "it lists no `agents` and has no `cluster:` section; list the agents (`agents: [{name, address, labels, fingerprint}]`), or write `cluster: {port: 7443, addressType: InternalIP}` to take them from the cluster's nodes".to_owned(),
            ));
        }
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
        for entry in file.agents.unwrap_or_default() {
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
            let own = match &entry.fingerprint {
                Some(f) => Some(super::parse_fingerprint(f).ok_or_else(|| {
                    bad(format!(
                        "agent `{}`: fingerprint `{f}` is not sha256: and 64 hex digits (the agent prints it at start)",
                        entry.name
                    ))
                })?),
                None => None,
            };
            let fingerprint = match own.or(fingerprint) {
                Some(f) => Some(f),
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
            fingerprint,
            agents,
            cluster,
        })
    }

    /// The agents of a `cluster:` inventory, one per node of `nodes` (the
    /// JSON of `cluster.nodes`: `[{name, labels, addresses: [{type,
    /// address}]}]`). A node without an address of `addressType` gets an
    /// agent without an address, and the reason in `unaddressed`.
    pub fn cluster_agents(&self, nodes: &serde_json::Value) -> Result<ClusterAgents, AgentError> {
        let Some(source) = &self.cluster else {
            return Ok(ClusterAgents::default());
        };
        let Some(items) = nodes.as_array() else {
            return Err(AgentError::Inventory {
                path: self.path.clone(),
                message: format!("the cluster's node list is not a list: {nodes}"),
            });
        };
        let mut out = ClusterAgents::default();
        for node in items {
            let Some(name) = node["name"].as_str().filter(|n| !n.is_empty()) else {
                continue;
            };
            let labels: BTreeMap<String, String> = node["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            let addresses: Vec<(&str, &str)> = node["addresses"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|a| Some((a["type"].as_str()?, a["address"].as_str()?)))
                        .collect()
                })
                .unwrap_or_default();
            let address = addresses
                .iter()
                .find(|(t, a)| *t == source.address_type && !a.is_empty())
                .map(|(_, a)| host_port(a, source.port));
            if address.is_none() {
                let has = if addresses.is_empty() {
                    "none".to_owned()
                } else {
                    addresses
                        .iter()
                        .map(|(t, a)| format!("{t} {a}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                out.unaddressed.insert(
                    name.to_owned(),
                    format!(
                        "node {name} has no {} address in the cluster (its addresses: {has}), so its agent cannot be reached; the inventory {} takes agents' addresses from `cluster.addressType: {}`: set an addressType every node has, or give the node such an address",
                        source.address_type,
                        self.path.display(),
                        source.address_type
                    ),
                );
            }
            out.agents.push(Agent {
                name: name.to_owned(),
                address: address.unwrap_or_default(),
                labels,
                fingerprint: self.fingerprint,
            });
        }
        out.agents.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
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

/// `HOST:PORT`, with an IPv6 address in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
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
        crate::agent::write_test_token(
            &dir.path().join("token"),
            "inventory-test-token-0123456789abcdef\n",
        );
        let path = dir.path().join("inv.yaml");
        let fp = format!("sha256:{}", "ab".repeat(32));
        let inv = Inventory::parse(
            &path,
            &format!("tokenFile: token\nagents:\n  - {{name: b, address: '1.2.3.4:1', fingerprint: '{fp}'}}\n  - {{name: a, address: '1.2.3.5:1', labels: {{x: y}}, fingerprint: '{fp}'}}\n"),
        )
        .expect("valid");
        assert_eq!(inv.token, "inventory-test-token-0123456789abcdef");
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

    #[test]
    fn an_inventory_token_file_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tmp");
        let token = dir.path().join("token");
        crate::agent::write_test_token(&token, "inventory-test-token-0123456789abcdef\n");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let fp = format!("sha256:{}", "ab".repeat(32));
        let err = Inventory::parse(
            &dir.path().join("inv.yaml"),
            &format!("tokenFile: token\nagents:\n  - {{name: a, address: '1.2.3.4:1', fingerprint: '{fp}'}}\n"),
        )
        .expect_err("a token file others may read");
        let text = err.to_string();
        assert!(
            text.contains("has mode 0644")
                && text.contains(&format!("chmod 600 {}", token.display())),
            "{text}"
        );
    }

    #[test]
    fn cluster_inventories_make_an_agent_per_node() {
        let dir = tempfile::tempdir().expect("tmp");
        crate::agent::write_test_token(
            &dir.path().join("token"),
            "inventory-test-token-0123456789abcdef\n",
        );
        let path = dir.path().join("inv.yaml");
        let fp = format!("sha256:{}", "cd".repeat(32));
        let inv = Inventory::parse(
            &path,
            &format!("tokenFile: token\nfingerprint: '{fp}'\ncluster: {{port: 7443}}\n"),
        )
        .expect("valid");
        let source = inv.cluster.clone().expect("a cluster source");
        assert_eq!(source.address_type, "InternalIP");
        assert!(inv.agents.is_empty());
        let nodes = serde_json::json!([
            {"name": "n2", "labels": {"role": "worker"},
             "addresses": [{"type": "Hostname", "address": "n2"}, {"type": "InternalIP", "address": "10.0.0.2"}]},
            {"name": "n1", "labels": {}, "addresses": [{"type": "InternalIP", "address": "fd00::1"}]},
            {"name": "n3", "labels": {}, "addresses": [{"type": "Hostname", "address": "n3"}]},
        ]);
        let made = inv.cluster_agents(&nodes).expect("agents");
        let names: Vec<&str> = made.agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2", "n3"]);
        assert_eq!(made.agents[0].address, "[fd00::1]:7443");
        assert_eq!(made.agents[1].address, "10.0.0.2:7443");
        assert_eq!(
            made.agents[1].labels.get("role").map(String::as_str),
            Some("worker")
        );
        assert!(made.agents[1].fingerprint.is_some());
        let why = &made.unaddressed["n3"];
        assert!(why.contains("node n3 has no InternalIP address"), "{why}");
        assert!(why.contains("inv.yaml"), "{why}");
        assert_eq!(made.unaddressed.len(), 1);

        let err = |text: &str| Inventory::parse(&path, text).expect_err(text).to_string();
        let e = err("tokenFile: token\ncluster: {port: 7443}\n");
        assert!(e.contains("top-level `fingerprint`"), "{e}");
        let e = err(&format!(
            "tokenFile: token\nfingerprint: '{fp}'\ncluster: {{port: 7443, addressType: Internal}}\n"
        ));
        assert!(e.contains("InternalIP, ExternalIP"), "{e}");
        let e = err(&format!(
            "tokenFile: token\nfingerprint: '{fp}'\ncluster: {{port: 7443}}\nagents: []\n"
        ));
        assert!(e.contains("both `agents` and `cluster`"), "{e}");
        let e = err("tokenFile: token\n");
        assert!(e.contains("no `cluster:` section"), "{e}");
    }
}
