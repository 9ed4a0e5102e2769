//! `node.*`: what a node check reads about the node it runs on, answered by
//! the agent from the kernel (procfs, sysfs, system calls) and the node's own
//! tools (`iptables-save`, `nft`, `ip`).
//!
//! A path is a root, optionally followed by `.` and a path inside it:
//!
//! | root | value |
//! | --- | --- |
//! | `kernel` | `{release, version, machine, hostname}` |
//! | `sysctl` | every readable `/proc/sys` entry by dotted name: `{"net.ipv4.ip_forward": "1", ...}`; `sysctl.NAME` is one entry |
//! | `iptables` | `{TABLE: {CHAIN: {policy, rules: ["-s 10.0.0.0/8 -j DROP", ...]}}}` from `iptables-save` |
//! | `nft` | the ruleset as `nft -j list ruleset` prints it |
//! | `routes` | `ip -j route show table all` |
//! | `nics` | `{NAME: {state, mtu, mac, addresses: ["10.0.0.7/24"], stats: {rx_dropped, ...}}}` |
//! | `ntp` | `{synchronized, maxErrorUs, estErrorUs, offsetUs}` from adjtimex(2) |
//! | `disks` | `{MOUNTPOINT: {mountPoint, device, fstype, sizeBytes, availBytes, usedPercent, availPercent, inodesUsedPercent}}` |
//! | `conntrack` | `{count, max, usedPercent}` (count 0 and max null without nf_conntrack) |
//! | `runtime` | `{containerd: {socket, answering}, crio: ..., docker: ..., anyAnswering}` |
//! | `processes` | `[{pid, name, nodeNetwork}]` from `/proc/*/comm`; `nodeNetwork`: in the agent's network namespace (null when unreadable) |

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// The roots `node.*` knows.
pub const ROOTS: &[&str] = &[
    "kernel",
    "sysctl",
    "iptables",
    "nft",
    "routes",
    "nics",
    "ntp",
    "disks",
    "conntrack",
    "runtime",
    "processes",
];

/// What can go wrong answering a node query.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No such root or no such entry under it.
    #[error("node.{path} does not exist: {hint}")]
    UnknownPath {
        /// The path asked for.
        path: String,
        /// What exists instead.
        hint: String,
    },
    /// A tool the answer needs failed or is missing.
    #[error("node.{root}: `{tool}` failed: {reason}")]
    Tool {
        /// The root being answered.
        root: &'static str,
        /// The program.
        tool: &'static str,
        /// Why.
        reason: String,
    },
    /// Reading the kernel's data failed.
    #[error("node.{root}: {reason}")]
    Read {
        /// The root being answered.
        root: &'static str,
        /// Why.
        reason: String,
    },
}

/// The value of `node.PATH` on this machine.
pub async fn query(path: &str) -> Result<Value, NodeError> {
    let path = path.strip_prefix("node.").unwrap_or(path);
    let (root, rest) = match path.split_once('.') {
        Some((r, rest)) => (r, Some(rest)),
        None => (path, None),
    };
    let unknown = |hint: String| NodeError::UnknownPath {
        path: path.to_owned(),
        hint,
    };
    let value = match root {
        "kernel" => kernel()?,
        "sysctl" => {
            if let Some(name) = rest {
                return sysctl_one(name).ok_or_else(|| {
                    unknown(format!("no readable /proc/sys entry `{name}` on this node"))
                });
            }
            blocking("sysctl", sysctl_all).await?
        }
        "iptables" => iptables().await?,
        "nft" => nft().await?,
        "routes" => tool_json("routes", "ip", &["-j", "route", "show", "table", "all"]).await?,
        "nics" => nics().await?,
        "ntp" => ntp()?,
        "disks" => blocking("disks", disks).await?,
        "conntrack" => conntrack(),
        "runtime" => runtime().await,
        "processes" => blocking("processes", processes).await?,
        _ => {
            return Err(unknown(format!("known roots: {}", ROOTS.join(", "))));
        }
    };
    match (root, rest) {
        (_, None) | ("sysctl", _) => Ok(value),
        (_, Some(rest)) => {
            let mut v = &value;
            for seg in rest.split('.') {
                v = match v {
                    Value::Object(m) => m.get(seg),
                    Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                }
                .ok_or_else(|| unknown(format!("node.{root} has no `{rest}`")))?;
            }
            Ok(v.clone())
        }
    }
}

async fn blocking(
    root: &'static str,
    f: fn() -> Result<Value, NodeError>,
) -> Result<Value, NodeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Read {
            root,
            reason: e.to_string(),
        })?
}

/// The most a node tool (`iptables-save`, `nft`, `ip`) may print: its output
/// is parsed whole, so more is refused rather than held by the agent.
pub const MAX_TOOL_OUTPUT: usize = 32 * 1024 * 1024;

/// How long a node tool may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(20);

async fn output(
    root: &'static str,
    tool: &'static str,
    args: &[&str],
) -> Result<String, NodeError> {
    let fail = |reason: String| NodeError::Tool { root, tool, reason };
    let spec = crate::process::ProcessSpec {
        argv: std::iter::once(tool)
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect(),
        env: Vec::new(),
        workdir: "/".into(),
    };
    let run = crate::process::execute(
        &spec,
        crate::process::Keep::Whole(MAX_TOOL_OUTPUT),
        crate::process::Keep::Tail(4096),
    );
    let out = tokio::time::timeout(TOOL_TIMEOUT, run)
        .await
        .map_err(|_| fail(format!("no answer in {}s", TOOL_TIMEOUT.as_secs())))?
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn tool_json(
    root: &'static str,
    tool: &'static str,
    args: &[&str],
) -> Result<Value, NodeError> {
    let text = output(root, tool, args).await?;
    if text.trim().is_empty() {
        return Ok(json!([]));
    }
    serde_json::from_str(&text).map_err(|e| NodeError::Tool {
        root,
        tool,
        reason: format!("its output is not JSON: {e}"),
    })
}

fn read_trim(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn kernel() -> Result<Value, NodeError> {
    let uts = nix::sys::utsname::uname().map_err(|e| NodeError::Read {
        root: "kernel",
        reason: format!("uname: {e}"),
    })?;
    let s = |o: &std::ffi::OsStr| o.to_string_lossy().into_owned();
    Ok(json!({
        "release": s(uts.release()),
        "version": s(uts.version()),
        "machine": s(uts.machine()),
        "hostname": s(uts.nodename()),
    }))
}

fn sysctl_one(name: &str) -> Option<Value> {
    if name.contains("..") || name.contains('/') {
        return None;
    }
    let path = Path::new("/proc/sys").join(name.replace('.', "/"));
    read_trim(path).map(Value::String)
}

fn sysctl_all() -> Result<Value, NodeError> {
    let mut out = serde_json::Map::new();
    let mut stack = vec![std::path::PathBuf::from("/proc/sys")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if let Some(value) = read_trim(&path) {
                if let Ok(rel) = path.strip_prefix("/proc/sys") {
                    let name = rel.to_string_lossy().replace('/', ".");
                    out.insert(name, Value::String(value));
                }
            }
        }
    }
    if out.is_empty() {
        return Err(NodeError::Read {
            root: "sysctl",
            reason: "/proc/sys has nothing readable".into(),
        });
    }
    Ok(Value::Object(out))
}

/// `iptables-save` as `{TABLE: {CHAIN: {policy, rules}}}`.
pub fn parse_iptables_save(text: &str) -> Value {
    let mut tables: BTreeMap<String, BTreeMap<String, (Value, Vec<String>)>> = BTreeMap::new();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('*') {
            table = name.to_owned();
            tables.entry(table.clone()).or_default();
        } else if let Some(decl) = line.strip_prefix(':') {
            let mut parts = decl.split_whitespace();
            if let Some(chain) = parts.next() {
                let policy = match parts.next() {
                    Some("-") | None => Value::Null,
                    Some(p) => Value::String(p.to_owned()),
                };
                tables
                    .entry(table.clone())
                    .or_default()
                    .entry(chain.to_owned())
                    .or_insert((Value::Null, Vec::new()))
                    .0 = policy;
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            if let Some((chain, rest)) = rule.split_once(' ') {
                tables
                    .entry(table.clone())
                    .or_default()
                    .entry(chain.to_owned())
                    .or_insert((Value::Null, Vec::new()))
                    .1
                    .push(rest.to_owned());
            }
        }
    }
    Value::Object(
        tables
            .into_iter()
            .map(|(t, chains)| {
                let chains = chains
                    .into_iter()
                    .map(|(c, (policy, rules))| (c, json!({"policy": policy, "rules": rules})))
                    .collect();
                (t, Value::Object(chains))
            })
            .collect(),
    )
}

async fn iptables() -> Result<Value, NodeError> {
    let text = output("iptables", "iptables-save", &[]).await?;
    let mut value = parse_iptables_save(&text);
    // A filter table never loaded accepts everything: show it that way, so
    // that `data.filter.FORWARD.rules` is there on every node.
    if let Value::Object(tables) = &mut value {
        let filter = tables.entry("filter").or_insert_with(|| json!({}));
        if let Value::Object(chains) = filter {
            for chain in ["INPUT", "FORWARD", "OUTPUT"] {
                chains
                    .entry(chain)
                    .or_insert_with(|| json!({"policy": "ACCEPT", "rules": []}));
            }
        }
    }
    Ok(value)
}

async fn nft() -> Result<Value, NodeError> {
    tool_json("nft", "nft", &["-j", "list", "ruleset"]).await
}

async fn nics() -> Result<Value, NodeError> {
    let links = tool_json("nics", "ip", &["-j", "addr", "show"]).await?;
    let mut out = serde_json::Map::new();
    for link in links.as_array().into_iter().flatten() {
        let Some(name) = link["ifname"].as_str() else {
            continue;
        };
        let addresses: Vec<String> = link["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"])))
            .collect();
        let mut stats = serde_json::Map::new();
        for stat in [
            "rx_bytes",
            "tx_bytes",
            "rx_dropped",
            "tx_dropped",
            "rx_errors",
            "tx_errors",
        ] {
            if let Some(n) = read_trim(format!("/sys/class/net/{name}/statistics/{stat}"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                stats.insert(stat.to_owned(), json!(n));
            }
        }
        out.insert(
            name.to_owned(),
            json!({
                "state": link["operstate"],
                "mtu": link["mtu"],
                "mac": link["address"],
                "addresses": addresses,
                "stats": stats,
            }),
        );
    }
    Ok(Value::Object(out))
}

#[allow(unsafe_code)]
fn ntp() -> Result<Value, NodeError> {
    // SAFETY: adjtimex(2) with modes 0 only reads the kernel's clock state
    // into the zeroed struct we own.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Err(NodeError::Read {
            root: "ntp",
            reason: format!("adjtimex: {}", std::io::Error::last_os_error()),
        });
    }
    let synchronized = state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0;
    // The offset is in microseconds unless STA_NANO is set.
    let offset_us = if tx.status & libc::STA_NANO != 0 {
        tx.offset / 1000
    } else {
        tx.offset
    };
    Ok(json!({
        "synchronized": synchronized,
        "maxErrorUs": tx.maxerror,
        "estErrorUs": tx.esterror,
        "offsetUs": offset_us,
    }))
}

/// Filesystems that hold data, as opposed to kernel and pseudo filesystems.
const DATA_FS: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "vfat", "overlay", "tmpfs", "f2fs",
];

fn disks() -> Result<Value, NodeError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(|e| NodeError::Read {
        root: "disks",
        reason: format!("/proc/self/mounts: {e}"),
    })?;
    let mut out = serde_json::Map::new();
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [device, mountpoint, fstype, ..] = fields[..] else {
            continue;
        };
        if !DATA_FS.contains(&fstype) || out.contains_key(mountpoint) {
            continue;
        }
        // /proc/mounts escapes spaces and such as octal.
        let mountpoint = mountpoint.replace("\\040", " ");
        let Ok(st) = nix::sys::statvfs::statvfs(mountpoint.as_str()) else {
            continue;
        };
        // fsblkcnt_t and c_ulong are u64 on the 64-bit Linux kpilot runs on.
        let frag = st.fragment_size();
        let size = st.blocks() * frag;
        let avail = st.blocks_available() * frag;
        let free = st.blocks_free() * frag;
        let used_pct = if size == 0 {
            0.0
        } else {
            100.0 * (size - free) as f64 / size as f64
        };
        // What the kubelet's nodefs.available and a pod see: blocks reserved
        // for root (or held back by the filesystem) are not available, so
        // this can be far below 100 - usedPercent.
        let avail_pct = if size == 0 {
            0.0
        } else {
            100.0 * avail as f64 / size as f64
        };
        let inodes = st.files();
        let inodes_used_pct = if inodes == 0 {
            0.0
        } else {
            100.0 * (inodes - st.files_free()) as f64 / inodes as f64
        };
        out.insert(
            mountpoint.clone(),
            json!({
                "mountPoint": mountpoint,
                "device": device,
                "fstype": fstype,
                "sizeBytes": size,
                "availBytes": avail,
                "usedPercent": (used_pct * 10.0).round() / 10.0,
                "availPercent": (avail_pct * 10.0).round() / 10.0,
                "inodesUsedPercent": (inodes_used_pct * 10.0).round() / 10.0,
            }),
        );
    }
    Ok(Value::Object(out))
}

fn conntrack() -> Value {
    let num = |name: &str| {
        read_trim(format!("/proc/sys/net/netfilter/{name}")).and_then(|s| s.parse::<u64>().ok())
    };
    let count = num("nf_conntrack_count").unwrap_or(0);
    let max = num("nf_conntrack_max");
    let used = match max {
        Some(m) if m > 0 => json!((1000.0 * count as f64 / m as f64).round() / 10.0),
        _ => json!(0.0),
    };
    json!({"count": count, "max": max, "usedPercent": used})
}

/// Every process of the node's PID namespace (the DaemonSet runs with
/// `hostPID: true`) by its kernel name, the 15 characters of `comm` (a script
/// started through its `#!` line is named after the script: `firewalld`).
/// `nodeNetwork` tells a daemon of the node from one in a pod: a firewall
/// only manages the network namespace it runs in.
fn processes() -> Result<Value, NodeError> {
    let entries = std::fs::read_dir("/proc").map_err(|e| NodeError::Read {
        root: "processes",
        reason: format!("/proc: {e}"),
    })?;
    let own = std::fs::read_link("/proc/self/ns/net").ok();
    let mut out: Vec<(u32, Value)> = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process that ended since the listing has no comm any more.
        let Some(name) = read_trim(entry.path().join("comm")) else {
            continue;
        };
        let node_network = match (&own, std::fs::read_link(entry.path().join("ns/net"))) {
            (Some(own), Ok(theirs)) => json!(*own == theirs),
            _ => Value::Null,
        };
        out.push((
            pid,
            json!({"pid": pid, "name": name, "nodeNetwork": node_network}),
        ));
    }
    out.sort_by_key(|(pid, _)| *pid);
    Ok(Value::Array(out.into_iter().map(|(_, v)| v).collect()))
}

async fn runtime() -> Value {
    let sockets = [
        ("containerd", "/run/containerd/containerd.sock"),
        ("crio", "/var/run/crio/crio.sock"),
        ("docker", "/var/run/docker.sock"),
    ];
    let mut out = serde_json::Map::new();
    let mut any = false;
    for (name, socket) in sockets {
        let answering = matches!(
            tokio::time::timeout(
                Duration::from_secs(3),
                tokio::net::UnixStream::connect(socket)
            )
            .await,
            Ok(Ok(_))
        );
        any |= answering;
        out.insert(
            name.to_owned(),
            json!({"socket": socket, "present": Path::new(socket).exists(), "answering": answering}),
        );
    }
    out.insert("anyAnswering".into(), json!(any));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_save_is_parsed_by_table_and_chain() {
        let v = parse_iptables_save(
            "# Generated\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:KUBE-X - [0:0]\n-A FORWARD -s 10.0.0.0/8 -j DROP\n-A KUBE-X -j RETURN\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n",
        );
        assert_eq!(v["filter"]["FORWARD"]["policy"], "DROP");
        assert_eq!(v["filter"]["FORWARD"]["rules"][0], "-s 10.0.0.0/8 -j DROP");
        assert_eq!(v["filter"]["KUBE-X"]["policy"], Value::Null);
        assert!(v["nat"]["PREROUTING"]["rules"]
            .as_array()
            .is_some_and(|r| r.is_empty()));
    }

    #[tokio::test]
    async fn local_queries_answer() {
        let k = query("kernel").await.expect("kernel");
        assert!(k["release"].as_str().is_some_and(|r| !r.is_empty()));
        let one = query("sysctl.kernel.ostype").await.expect("sysctl");
        assert_eq!(one, "Linux");
        let all = query("node.sysctl").await.expect("all sysctls");
        assert_eq!(all["kernel.ostype"], "Linux");
        assert!(query("ntp").await.expect("ntp")["synchronized"].is_boolean());
        assert!(query("conntrack").await.expect("ct")["count"].is_u64());
        let disks = query("disks").await.expect("disks");
        assert!(disks.as_object().is_some_and(|m| m
            .iter()
            .all(|(k, v)| v["mountPoint"] == k.as_str() && v["availPercent"].is_f64())));
        let procs = query("processes").await.expect("processes");
        let me = procs
            .as_array()
            .and_then(|l| l.iter().find(|p| p["pid"] == std::process::id()))
            .expect("this test process is listed");
        assert_eq!(me["nodeNetwork"], true);
        assert!(me["name"].as_str().is_some_and(|n| !n.is_empty()));
        assert_eq!(
            query("kernel.machine").await.expect("machine"),
            k["machine"]
        );
        assert!(matches!(
            query("bogus").await,
            Err(NodeError::UnknownPath { .. })
        ));
        assert!(matches!(
            query("sysctl.no.such.thing").await,
            Err(NodeError::UnknownPath { .. })
        ));
    }
}
