//! Checks against a real control plane: `scripts/test-cluster` (kube-apiserver,
//! etcd, controller-manager, scheduler and KWOK on loopback), shared by every
//! test of the run.
//!
//! The first test that needs it calls [`kubeconfig`], which uses the cluster
//! when it is already up (`scripts/test` or `scripts/test-cluster run` started
//! it) and otherwise starts it with a watchdog that takes it down when this
//! test process exits. Tests create objects with unique names, labelled
//! `kpilot-test=<unique>`, scope their queries to them, and delete them.

mod addons;
mod apis;
mod catalog_patrol;
mod catalog_upgrade;
mod deploy_patrol;
mod drivers;
mod flags;
mod gate;
mod hop;
mod image;
mod inspect;
mod kubeadm;
mod node_actions;
mod nodes;
mod plan;
mod shipped;
mod snapshots;
mod unreachable;
mod upgrade;
mod wait;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::util::{Dir, Ran};

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The admin kubeconfig of the shared test cluster, starting it if needed.
pub fn kubeconfig() -> &'static Path {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG.get_or_init(|| {
        if let Some(path) = std::env::var_os("KPILOT_TEST_KUBECONFIG").filter(|p| !p.is_empty()) {
            return PathBuf::from(path);
        }
        let script = root().join("scripts/test-cluster");
        let last_line = |out: &[u8]| {
            String::from_utf8_lossy(out)
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let up = Command::new(&script)
            .arg("kubeconfig")
            .stderr(Stdio::null())
            .output()
            .expect("scripts/test-cluster runs");
        if up.status.success() {
            return PathBuf::from(last_line(&up.stdout));
        }
        // Not up: start it, and let its watchdog take it down when we exit.
        let up = Command::new(&script)
            .arg("up")
            .env(
                "KPILOT_TEST_CLUSTER_OWNER_PID",
                std::process::id().to_string(),
            )
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/test-cluster runs");
        assert!(up.status.success(), "scripts/test-cluster up failed");
        PathBuf::from(last_line(&up.stdout))
    })
}

/// A name no other test (or earlier run) uses: `kp-TAG-PID-N`.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "kp-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The kubectl the test cluster was built with, else the one on `PATH`.
pub fn kubectl_path() -> PathBuf {
    let cache = std::env::var_os("KPILOT_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("kpilot")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kpilot")));
    let version = std::env::var("KPILOT_K8S_VERSION").unwrap_or_else(|_| "v1.34.4".into());
    cache
        .map(|c| c.join("k8s").join(version).join("bin/kubectl"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("kubectl"))
}

/// Runs kubectl against the test cluster, with `stdin` if given; panics
/// with its output if it fails.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    kubectl_at(kubeconfig(), args, stdin)
}

/// Runs kubectl against the cluster of `kubeconfig` (a test's own cluster),
/// with `stdin` if given; panics with its output if it fails.
pub fn kubectl_at(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl starts");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).expect("kubectl stdin");
    }
    let out = child.wait_with_output().expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Objects a test created, deleted when it ends (passing or not).
#[derive(Default)]
pub struct Created {
    objects: Vec<(String, Option<String>, String)>,
}

impl Created {
    /// Creates an object from JSON and remembers it.
    pub fn create(&mut self, object: serde_json::Value) {
        let kind = object["kind"].as_str().expect("kind").to_lowercase();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        let ns = object["metadata"]["namespace"].as_str().map(str::to_owned);
        self.objects.push((kind, ns, name));
        kubectl(&["create", "-f", "-"], Some(&object.to_string()));
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        for (kind, ns, name) in &self.objects {
            let mut args = vec!["delete", kind.as_str(), name.as_str()];
            if let Some(ns) = ns {
                args.extend(["-n", ns.as_str()]);
            }
            args.extend(["--ignore-not-found", "--wait=false"]);
            let _ = Command::new(kubectl_path())
                .arg("--kubeconfig")
                .arg(kubeconfig())
                .args(&args)
                .output();
        }
    }
}

/// A Node labelled `kpilot-test=<label>` with `kubeletVersion`: managed by
/// KWOK (kept Ready) when `ready` is `None`, else unmanaged with its Ready
/// condition as given.
pub fn node(name: &str, label: &str, kubelet: &str, ready: Option<bool>) -> serde_json::Value {
    let mut annotations = serde_json::Map::new();
    let mut status = serde_json::json!({
        "nodeInfo": {"kubeletVersion": kubelet, "kubeProxyVersion": kubelet},
    });
    match ready {
        None => {
            annotations.insert("kwok.x-k8s.io/node".into(), "fake".into());
        }
        Some(ready) => {
            status["conditions"] = serde_json::json!([{
                "type": "Ready",
                "status": if ready { "True" } else { "False" },
                "reason": if ready { "KubeletReady" } else { "KubeletNotReady" },
                "message": if ready { "kubelet is posting ready status" } else { "PLEG is not healthy" },
            }]);
        }
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": annotations,
            "labels": {"kubernetes.io/hostname": name, "kpilot-test": label},
        },
        "status": status,
    })
}

/// Waits until node `name` reports Ready=True (KWOK takes about a second).
pub fn wait_ready(name: &str) {
    let started = Instant::now();
    loop {
        let ready = kubectl(
            &[
                "get",
                "node",
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
            None,
        );
        if ready.trim() == "True" {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "node {name} not Ready after 60s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs kpilot against the test cluster (`KUBECONFIG` set).
pub fn kp(dir: &Dir, args: &[&str]) -> Ran {
    kp_with(dir, args, kubeconfig())
}

/// Runs kpilot with `KUBECONFIG=kubeconfig`.
pub fn kp_with(dir: &Dir, args: &[&str], kubeconfig: &Path) -> Ran {
    let out = dir
        .cmd(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("kpilot runs");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A shipped workflow, by its path under `workflows/`.
pub fn shipped(path: &str) -> String {
    root().join("workflows").join(path).display().to_string()
}

/// A workflow of the tests' own, in `tests/cluster/fixtures/`.
pub fn fixture(name: &str) -> String {
    root()
        .join("tests/cluster/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// The `output` of a step in `status -o json`.
pub fn step_output(dir: &Dir, run: &str, step: &str) -> serde_json::Value {
    let status = dir.status(run);
    status["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == step)
        .map(|s| s["output"].clone())
        .unwrap_or_else(|| panic!("no step {step}"))
}

/// Polls `what` until it holds; fails the test after 90 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not within 90s: {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `kubectl ARGS -o json`, parsed.
pub fn get(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(&all, None)).expect("kubectl JSON")
}

/// A KWOK node labelled `kpilot-test=label`, Ready.
pub fn kwok_node(created: &mut Created, name: &str, label: &str) {
    created.create(node(name, label, "v1.34.4", None));
    wait_ready(name);
}

pub fn namespace(created: &mut Created, name: &str) {
    created.create(
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    );
}

/// The API server's audit log (evictions, Jobs and Pods created: see
/// `scripts/test-cluster`).
pub fn audit_log() -> std::path::PathBuf {
    let path = kubeconfig()
        .parent()
        .expect("kubeconfig dir")
        .join("logs/audit.log");
    assert!(
        path.exists(),
        "{} is missing: the test cluster was started without its audit log; restart it with scripts/test-cluster",
        path.display()
    );
    path
}

/// The first command between backticks in `text` that starts with `prefix`.
pub fn printed_command(text: &str, prefix: &str) -> Vec<String> {
    let line = text
        .split('`')
        .find(|s| s.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}…` printed in:\n{text}"));
    line.split_whitespace().map(str::to_owned).collect()
}

/// Runs a command kpilot printed, exactly, against the test cluster.
pub fn run_printed(dir: &Dir, command: &[String]) -> crate::util::Ran {
    assert_eq!(command[0], "kpilot", "{command:?}");
    let args: Vec<&str> = command[1..].iter().map(String::as_str).collect();
    kp(dir, &args)
}

/// The command kpilot printed on a line of its own, starting with `prefix`.
fn printed_line(text: &str, prefix: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}…` printed in:\n{text}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}
