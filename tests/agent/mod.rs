//! Node agents as real processes, each in a network namespace of its own,
//! joined by veth pairs to a bridge in a hub namespace where kpilot itself
//! runs: all traffic stays between namespaces the test made (10.213.0.0/24).

mod auth;
mod catalog;
mod cel;
mod checks;
pub mod cluster_nodes;
mod fleet;
mod logs;
mod tools;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::prereq::{self, Need};
use crate::util::{Dir, Ran};

pub const HEAD: &str = "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: t}\n";

/// The token of the agents these tests start (32 bytes or more, as the
/// agent requires).
pub const TOKEN: &str = "test-token-0123456789abcdef-0123456789";

/// What a test with a fleet of agents needs: namespaces (root) and `ip`.
pub const FLEET: &[Need] = &[prereq::ROOT, prereq::IP];

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .expect("run a setup command");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One node: its namespace, address and agent.
pub struct Node {
    pub name: String,
    pub ns: String,
    pub addr: String,
}

/// A hub namespace with a bridge, and one namespace per node with an agent.
pub struct Fleet {
    pub hub: String,
    pub nodes: Vec<Node>,
    agents: Vec<Option<Child>>,
    namespaces: Vec<String>,
    workdir: PathBuf,
    /// Extra environment of every agent.
    env: Vec<(String, String)>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in self.agents.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Fleet {
    /// `n` nodes named node-01.. with agents running `--max-concurrent
    /// max_concurrent`; `tag` (up to 3 letters) keeps names apart between tests.
    pub fn start(dir: &Dir, tag: &str, n: usize, max_concurrent: usize) -> Fleet {
        Fleet::start_with_env(dir, tag, n, max_concurrent, &[])
    }

    /// [`Fleet::start`], with extra environment variables for every agent.
    pub fn start_with_env(
        dir: &Dir,
        tag: &str,
        n: usize,
        max_concurrent: usize,
        env: &[(&str, &str)],
    ) -> Fleet {
        let prefix = format!("kpa{}{tag}", std::process::id());
        let hub = format!("{prefix}h");
        let mut fleet = Fleet {
            hub: hub.clone(),
            nodes: Vec::new(),
            agents: Vec::new(),
            namespaces: Vec::new(),
            workdir: dir.path().to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        sh(&["ip", "netns", "add", &hub]);
        fleet.namespaces.push(hub.clone());
        sh(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
        sh(&[
            "ip",
            "-n",
            &hub,
            "addr",
            "add",
            "10.213.0.1/24",
            "dev",
            "br0",
        ]);
        sh(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        sh(&["ip", "-n", &hub, "link", "set", "lo", "up"]);
        dir.write_secret("token", &format!("{TOKEN}\n"));
        std::fs::create_dir_all(dir.join("agents")).expect("mkdir");
        for i in 1..=n {
            let name = format!("node-{i:02}");
            let ns = format!("{prefix}{i}");
            let addr = format!("10.213.0.{}", 10 + i);
            sh(&["ip", "netns", "add", &ns]);
            fleet.namespaces.push(ns.clone());
            let veth = format!("vh{i}");
            sh(&[
                "ip", "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            sh(&[
                "ip", "-n", &hub, "link", "set", &veth, "master", "br0", "up",
            ]);
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            fleet.nodes.push(Node { name, ns, addr });
        }
        for k in 0..n {
            let child = fleet.spawn_agent(k, max_concurrent);
            fleet.agents.push(Some(child));
        }
        fleet.wait_ready();
        fleet
    }

    fn spawn_agent(&self, k: usize, max_concurrent: usize) -> Child {
        let node = &self.nodes[k];
        let log = std::fs::File::create(self.workdir.join(format!("agents/{}.log", node.name)))
            .expect("agent log");
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &node.ns,
                env!("CARGO_BIN_EXE_kpilot"),
                "agent",
            ])
            .args(["--listen", &format!("{}:7443", node.addr)])
            .args(["--token-file", "token"])
            .args(["--fingerprint-file", &format!("agents/{}.fp", node.name)])
            .args(["--name", &node.name])
            .args(["--max-concurrent", &max_concurrent.to_string()])
            .current_dir(&self.workdir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start an agent")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            let fp = self.workdir.join(format!("agents/{}.fp", node.name));
            while !fp.exists() {
                assert!(
                    Instant::now() < deadline,
                    "agent {} did not start: {}",
                    node.name,
                    self.log(&node.name)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The agent's log.
    pub fn log(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.workdir.join(format!("agents/{name}.log")))
            .unwrap_or_default();
        // Without the terminal colours tracing may add.
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Writes `inventory.yaml` with every node (and `labels(i)` for node i, 1-based).
    pub fn write_inventory(&self, dir: &Dir, labels: impl Fn(usize) -> String) {
        let mut inv = String::from("tokenFile: token\nagents:\n");
        for (k, node) in self.nodes.iter().enumerate() {
            let fp = std::fs::read_to_string(self.workdir.join(format!("agents/{}.fp", node.name)))
                .expect("fingerprint");
            inv.push_str(&format!(
                "  - {{name: {}, address: \"{}:7443\", labels: {{{}}}, fingerprint: \"{}\"}}\n",
                node.name,
                node.addr,
                labels(k + 1),
                fp.trim()
            ));
        }
        dir.write("inventory.yaml", &inv);
    }

    /// kpilot, run in the hub namespace.
    pub fn cmd(&self, dir: &Dir, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hub, env!("CARGO_BIN_EXE_kpilot")])
            .args(args)
            .current_dir(dir.path())
            .env("KPILOT_STATE_DIR", dir.join("state"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// kpilot, run to its end in the hub namespace.
    pub fn kp(&self, dir: &Dir, args: &[&str]) -> Ran {
        let out = self.cmd(dir, args).output().expect("kpilot runs");
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts a node's agent again (after [`Fleet::kill_agent`]); it makes a
    /// new certificate, so write the inventory again.
    pub fn restart_agent(&mut self, k: usize, max_concurrent: usize) {
        let fp = self
            .workdir
            .join(format!("agents/{}.fp", self.nodes[k].name));
        let _ = std::fs::remove_file(&fp);
        let child = self.spawn_agent(k, max_concurrent);
        self.agents[k] = Some(child);
        self.wait_ready();
    }

    /// A command in a node's namespace.
    pub fn on(&self, k: usize, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", &self.nodes[k].ns];
        all.extend_from_slice(args);
        sh(&all);
    }

    /// The pid of a node's agent (`ip netns exec` execs it), to enter its
    /// mount namespace.
    pub fn agent_pid(&self, k: usize) -> u32 {
        self.agents[k]
            .as_ref()
            .map(Child::id)
            .expect("the agent runs")
    }

    /// kill -9 of a node's agent.
    pub fn kill_agent(&mut self, k: usize) {
        if let Some(mut child) = self.agents[k].take() {
            // `ip netns exec` execs the agent: this pid is the agent's.
            child.kill().expect("kill -9 the agent");
            let _ = child.wait();
        }
    }
}

/// The instances of a step in `status -o json`, by instance name: (state, reason).
pub fn instances(
    status: &serde_json::Value,
    step: &str,
) -> std::collections::BTreeMap<String, (String, String)> {
    status["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["id"] == step && s["instance"] != "global")
        .map(|s| {
            (
                s["instance"].as_str().unwrap_or("").to_owned(),
                (
                    s["state"].as_str().unwrap_or("").to_owned(),
                    s["reason"].as_str().unwrap_or("").to_owned(),
                ),
            )
        })
        .collect()
}
