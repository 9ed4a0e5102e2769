//! An inventory with `cluster:` instead of `agents`: a per-node step fans out
//! over the test cluster's nodes, each reached at its InternalIP. The agents
//! are real `kpilot agent` processes on loopback addresses (127.0.0.21-23),
//! sharing one certificate, as the DaemonSet of `deploy/` does.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{instances, HEAD, TOKEN};
use crate::cluster::{kp_with, kubeconfig, unique, Created};
use crate::util::{step_field, Dir};

/// Agents listening on 127.0.0.21.. (or from another base) on one port,
/// killed on drop.
pub struct Agents {
    pub port: u16,
    children: Vec<Child>,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The address of agent `k` (1-based) of this file's tests.
fn ip(k: usize) -> String {
    ip_from(20, k)
}

/// The address of agent `k` (1-based) of agents numbered from `base`.
pub fn ip_from(base: usize, k: usize) -> String {
    format!("127.0.0.{}", base + k)
}

/// A port free on every address of the agents.
fn free_port(base: usize, n: usize) -> u16 {
    let ip = |k| ip_from(base, k);
    for _ in 0..20 {
        let probe = std::net::TcpListener::bind((ip(1).as_str(), 0)).expect("bind a probe");
        let port = probe.local_addr().expect("addr").port();
        drop(probe);
        if (1..=n).all(|k| std::net::TcpListener::bind((ip(k).as_str(), port)).is_ok()) {
            return port;
        }
    }
    panic!("no port free on every agent address");
}

/// One certificate (with IP SANs for the agents' addresses) shared by all.
fn certificate(dir: &Dir, base: usize, n: usize) {
    let sans: Vec<String> = (1..=n)
        .map(|k| format!("IP:{}", ip_from(base, k)))
        .collect();
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-keyout", "key.pem", "-out", "cert.pem", "-days", "1"])
        .args(["-subj", "/CN=kpilot-agent"])
        .args(["-addext", &format!("subjectAltName={}", sans.join(","))])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Agents {
    /// `n` agents named agent-1.., each starting steps in `work-K/`.
    fn start(dir: &Dir, n: usize) -> Agents {
        Agents::start_with(dir, 20, n, &[])
    }

    /// `n` agents at 127.0.0.(base+1).., with `env` added to their environment.
    pub fn start_with(dir: &Dir, base: usize, n: usize, env: &[(&str, &str)]) -> Agents {
        let ip = |k| ip_from(base, k);
        certificate(dir, base, n);
        dir.write_secret("token", &format!("{TOKEN}\n"));
        let mut agents = Agents {
            port: free_port(base, n),
            children: Vec::new(),
        };
        for k in 1..=n {
            std::fs::create_dir_all(dir.join(&format!("work-{k}"))).expect("mkdir");
            let log = std::fs::File::create(dir.join(&format!("agent-{k}.log"))).expect("log");
            let child = Command::new(env!("CARGO_BIN_EXE_kpilot"))
                .arg("agent")
                .args(["--listen", &format!("{}:{}", ip(k), agents.port)])
                .args(["--token-file", "token"])
                .args(["--tls-cert", "cert.pem", "--tls-key", "key.pem"])
                .args(["--fingerprint-file", &format!("agent-{k}.fp")])
                .args(["--name", &format!("agent-{k}")])
                .args(["--workdir", &format!("work-{k}")])
                .current_dir(dir.path())
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start an agent");
            agents.children.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for k in 1..=n {
            while !dir.exists(&format!("agent-{k}.fp")) {
                assert!(
                    Instant::now() < deadline,
                    "agent-{k} did not start: {}",
                    dir.read(&format!("agent-{k}.log"))
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        agents
    }
}

/// An unmanaged node labelled `kpilot-test=<label>` and `role=<role>`, with
/// these status addresses.
fn node(name: &str, label: &str, role: &str, addresses: &[(&str, &str)]) -> serde_json::Value {
    let addresses: Vec<serde_json::Value> = addresses
        .iter()
        .map(|(t, a)| serde_json::json!({"type": t, "address": a}))
        .collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kpilot-test": label, "role": role},
        },
        "status": {
            "nodeInfo": {"kubeletVersion": "v1.34.4"},
            "addresses": addresses,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    })
}

fn workflow(selector: &str, marks: &std::path::Path) -> String {
    format!(
        "{HEAD}spec:
  inventory: inventory.yaml
  steps:
    - id: roll
      phase: upgrade
      executor: per-node
      nodes: {{selector: \"{selector}\", maxParallel: 2}}
      script: pwd > {}/$KPILOT_INSTANCE
",
        marks.display()
    )
}

kptest!(
    per_node_step_fans_out_over_the_clusters_nodes_each_through_its_agent,
    |dir| {
        let kubeconfig = kubeconfig().display().to_string();
        let agents = Agents::start(&dir, 3);
        let fp = dir.read("agent-1.fp").trim().to_owned();
        for k in 2..=3 {
            assert_eq!(
                dir.read(&format!("agent-{k}.fp")).trim(),
                fp,
                "the agents share one certificate"
            );
        }
        let label = unique("cn");
        let mut created = Created::default();
        let names: Vec<String> = (1..=3).map(|k| format!("{label}-w{k}")).collect();
        for (k, name) in names.iter().enumerate() {
            let addr = ip(k + 1);
            created.create(node(
                name,
                &label,
                "worker",
                &[("Hostname", name.as_str()), ("InternalIP", addr.as_str())],
            ));
        }
        // Labelled for the test, but not a worker: the selector leaves it out
        // (it has no agent; running there would fail).
        let other = format!("{label}-cp");
        created.create(node(
            &other,
            &label,
            "control-plane",
            &[("InternalIP", "127.0.0.24")],
        ));
        dir.write(
            "inventory.yaml",
            &format!(
                "tokenFile: token\nfingerprint: \"{fp}\"\ncluster: {{port: {}, addressType: InternalIP}}\n",
                agents.port
            ),
        );
        let marks: PathBuf = dir.join("marks");
        std::fs::create_dir(&marks).expect("mkdir");
        dir.write(
            "wf.yaml",
            &workflow(&format!("kpilot-test={label},role=worker"), &marks),
        );
        // KUBECONFIG names nothing useful: --kubeconfig reaches the nodes.
        let bogus = dir.write(
            "bogus-kubeconfig",
            "apiVersion: v1\nkind: Config\nclusters: []\n",
        );
        let ran = kp_with(
            &dir,
            &[
                "run",
                "wf.yaml",
                "--run-id",
                "r",
                "--kubeconfig",
                &kubeconfig,
            ],
            &bogus,
        )
        .expect(0);
        let status = dir.status("r");
        let roll = instances(&status, "roll");
        assert_eq!(
            roll.keys().cloned().collect::<Vec<_>>(),
            names,
            "exactly the selected nodes: {status:#}\n{}",
            ran.stderr
        );
        for (name, (state, reason)) in &roll {
            assert_eq!(state, "succeeded", "{name}: {reason}");
        }
        assert!(!marks.join(&other).exists(), "the control-plane node ran");
        for (k, name) in names.iter().enumerate() {
            let k = k + 1;
            // The attempt ran in the workdir of the agent at the node's InternalIP...
            let pwd = std::fs::read_to_string(marks.join(name)).unwrap_or_default();
            assert!(
                pwd.trim().ends_with(&format!("work-{k}")),
                "{name} ran in {pwd:?}, not through agent-{k}"
            );
            // ...which logged exactly that one attempt.
            let log = dir.read(&format!("agent-{k}.log"));
            let started: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("attempt started") && l.contains("step.id=roll"))
                .collect();
            assert_eq!(started.len(), 1, "agent-{k}: {log}");
            assert!(started[0].contains(&format!("node.name={name}")), "{log}");
        }
        assert_eq!(
            std::fs::read_dir(&marks).expect("marks").count(),
            3,
            "three nodes ran"
        );
        // A resume rolls over the same nodes and has nothing left to do.
        kp_with(&dir, &["resume", "r", "--kubeconfig", &kubeconfig], &bogus).expect(0);
        drop(created);
    }
);

kptest!(a_node_without_an_internal_ip_fails_naming_the_node, |dir| {
    let label = unique("cn");
    let mut created = Created::default();
    let name = format!("{label}-noip");
    created.create(node(
        &name,
        &label,
        "worker",
        &[("Hostname", name.as_str())],
    ));
    dir.write_secret("token", &format!("{TOKEN}\n"));
    dir.write(
        "inventory.yaml",
        &format!(
            "tokenFile: token\nfingerprint: \"sha256:{}\"\ncluster: {{port: 7443}}\n",
            "ab".repeat(32)
        ),
    );
    let marks = dir.join("marks");
    dir.write(
        "wf.yaml",
        &workflow(&format!("kpilot-test={label}"), &marks),
    );
    kp_with(&dir, &["run", "wf.yaml", "--run-id", "r"], kubeconfig()).expect(1);
    let status = dir.status("r");
    let roll = instances(&status, "roll");
    let (state, reason) = &roll[&name];
    assert_eq!(state, "failed", "{status:#}");
    assert!(
        reason.contains(&format!("node {name} has no InternalIP address"))
            && reason.contains("inventory.yaml")
            && reason.contains("addressType"),
        "{reason}"
    );
    let step = step_field(&status, "roll", "reason");
    assert!(step.contains(&name), "{status:#}");
    drop(created);
});
