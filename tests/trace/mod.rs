//! eBPF tracing through the binary, on the real kernel: a `trace` step judging drops between
//! two network namespaces while a step beside it sends traffic, the same step on every node
//! through the agents, and `kpilot trace drops`.
//!
//! They need root (eBPF, namespaces) and `ip`, `nft`, `bash` and `timeout`
//! (`scripts/install-bpf-deps`); without them they fail, naming what is missing
//! (see `tests/prereq.rs`).

mod cli;
mod nodes;
mod step;

use std::process::{Command, Stdio};

use crate::util::prereq::{self, Need};
use std::sync::atomic::{AtomicU32, Ordering};

/// What a test tracing a namespace pair needs: eBPF and namespaces (root),
/// `ip` and `nft` for the pair, `bash` and `timeout` for its traffic.
pub const PAIR: &[Need] = &[
    prereq::ROOT,
    prereq::IP,
    prereq::NFT,
    prereq::BASH,
    prereq::TIMEOUT,
];

/// What a test tracing without namespaces needs: root, for eBPF.
pub const EBPF: &[Need] = &[prereq::ROOT];

fn run_stdin(cmd: &[&str], stdin: &str) {
    use std::io::Write as _;
    let mut child = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run scripts/install-bpf-deps)"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(cmd: &[&str]) {
    run_stdin(cmd, "");
}

/// Two namespaces, `kpT<pid>-<n>-a` (10.232.n.1) and `-b` (10.232.n.2), joined by veth
/// `va`/`vb`; deleted on drop, also when a test fails.
pub struct NetnsPair {
    pub a: String,
    pub b: String,
    pub ip_a: String,
    pub ip_b: String,
    made: Vec<String>,
}

impl NetnsPair {
    pub fn new() -> NetnsPair {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("kpT{}-{n}", std::process::id());
        let mut pair = NetnsPair {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
            ip_a: format!("10.232.{n}.1"),
            ip_b: format!("10.232.{n}.2"),
            made: Vec::new(),
        };
        // Each namespace is recorded as soon as it exists, so a failure below cleans up.
        for ns in [pair.a.clone(), pair.b.clone()] {
            run(&["ip", "netns", "add", &ns]);
            pair.made.push(ns);
        }
        run(&[
            "ip", "link", "add", "va", "netns", &pair.a, "type", "veth", "peer", "name", "vb",
            "netns", &pair.b,
        ]);
        for (ns, dev, ip) in [(&pair.a, "va", &pair.ip_a), (&pair.b, "vb", &pair.ip_b)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// The inode of namespace b, as the tracer reports it.
    pub fn inode_b(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/run/netns/{}", self.b))
            .expect("netns b")
            .ino()
    }

    /// An nft rule in b dropping TCP to `port`, counted.
    pub fn drop_tcp_in_b(&self, port: u16) {
        let ruleset = format!(
            "table inet kpilot_test {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    tcp dport {port} counter drop\n  }}\n}}\n"
        );
        run_stdin(
            &["ip", "netns", "exec", &self.b, "nft", "-f", "-"],
            &ruleset,
        );
    }

    /// A shell loop that, after `delay`, makes `count` TCP connection attempts from a to
    /// b:`port`, each given up after 0.3 s (before the first SYN retransmission).
    pub fn syn_script(&self, delay: &str, count: u32, port: u16) -> String {
        format!(
            "sleep {delay}\nfor i in $(seq {count}); do\n  ip netns exec {a} timeout 0.3 bash -c 'echo > /dev/tcp/{ip}/{port}' 2>/dev/null || true\n  sleep 0.2\ndone\n",
            a = self.a,
            ip = self.ip_b
        )
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in &self.made {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
