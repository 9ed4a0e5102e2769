//! The shipped upgrade of the test cluster (`workflows/upgrade/test-cluster.yaml`), on a
//! control plane of its own: a real hop of the API server, controller manager and
//! scheduler by one minor version inside a kpilot run, the KWOK nodes rolled through
//! cordon, drain, upgrade, wait and uncordon, checked against the snapshot before.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{kp_with, kubectl_path, node, root, shipped};
use crate::util::Dir;

/// The version the test cluster runs, and the next minor it is upgraded to.
const FROM: &str = "v1.34.4";
const TO: &str = "v1.35.4";

/// A test cluster of this test's own (its own state directory and ports),
/// taken down when dropped.
pub struct OwnCluster {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
}

impl OwnCluster {
    pub fn up(dir: &Dir) -> OwnCluster {
        let state = dir.join("cluster");
        let out = Self::script(&state, &["up"])
            .env(
                "KPILOT_TEST_CLUSTER_OWNER_PID",
                std::process::id().to_string(),
            )
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/test-cluster runs");
        assert!(
            out.status.success(),
            "scripts/test-cluster up of a cluster of this test's own failed (it needs the binaries of {FROM} and {TO}: scripts/test-cluster build)"
        );
        let kubeconfig = PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap_or_default()
                .trim(),
        );
        OwnCluster {
            dir: state,
            kubeconfig,
        }
    }

    fn script(state: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(root().join("scripts/test-cluster"));
        cmd.args(args)
            .env("KPILOT_TEST_CLUSTER_DIR", state)
            .env_remove("KPILOT_K8S_VERSION")
            .stdin(Stdio::null());
        cmd
    }

    /// kubectl against this cluster; panics with its error if it fails.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        super::kubectl_at(&self.kubeconfig, args, stdin)
    }

    pub fn create(&self, object: Value) {
        self.kubectl(&["create", "-f", "-"], Some(&object.to_string()));
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all, None)).expect("kubectl prints JSON")
    }

    pub fn version(&self) -> String {
        let v: Value =
            serde_json::from_str(&self.kubectl(&["get", "--raw", "/version"], None)).expect("json");
        v["gitVersion"].as_str().unwrap_or_default().to_owned()
    }

    /// The pid of the running kube-apiserver.
    pub fn apiserver_pid(&self) -> String {
        std::fs::read_to_string(self.dir.join("pids/kube-apiserver.pid"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// Waits until every node is Ready (KWOK takes a moment for new ones).
    pub fn wait_nodes_ready(&self, count: usize) {
        let started = Instant::now();
        loop {
            let nodes = self.json(&["get", "nodes"]);
            let ready = nodes["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter(|n| {
                            n["status"]["conditions"].as_array().is_some_and(|c| {
                                c.iter()
                                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
                            })
                        })
                        .count()
                })
                .unwrap_or(0);
            if ready >= count {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "only {ready} of {count} nodes Ready after 90s"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits until `ns/name` has all its replicas available.
    pub fn wait_available(&self, ns: &str, name: &str) {
        let started = Instant::now();
        loop {
            let d = self.json(&["get", "deployment", name, "-n", ns]);
            if d["status"]["availableReplicas"] == d["spec"]["replicas"] {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "deployment {ns}/{name} not available after 90s: {:#}",
                d["status"]
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Self::script(&self.dir, &["down"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn deployment(ns: &str, name: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "registry.invalid/web:1"}]},
            },
        },
    })
}

kptest!(
    the_test_cluster_goes_one_minor_version_up_inside_a_kpilot_run,
    |dir| {
        let cluster = OwnCluster::up(&dir);
        assert_eq!(cluster.version(), FROM);
        for k in 1..=6 {
            cluster.create(node(&format!("hop-{k}"), "hop", FROM, None));
        }
        cluster.wait_nodes_ready(6);
        cluster.kubectl(&["create", "namespace", "shop"], None);
        cluster.create(deployment("shop", "web", 6));
        cluster.create(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "shop"},
            "data": {"color": "blue"},
        }));
        cluster.create(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"maxUnavailable": 2, "selector": {"matchLabels": {"app": "web"}}},
        }));
        cluster.wait_available("shop", "web");
        // A node a person cordoned before the run stays cordoned after it.
        cluster.kubectl(&["cordon", "hop-6"], None);

        let kubectl = kubectl_path().display().to_string();
        let workflow = shipped("upgrade/test-cluster.yaml");
        let run = |args: &[&str]| {
            let mut all = vec!["run", workflow.as_str()];
            all.extend_from_slice(args);
            let out = dir
                .cmd(&all)
                .current_dir(root())
                .env("KUBECONFIG", &cluster.kubeconfig)
                .env("KPILOT_TEST_CLUSTER_DIR", &cluster.dir)
                .output()
                .expect("kpilot runs");
            crate::util::Ran {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        };

        // A failed pre-check (a target two minors up) leaves the API server untouched.
        let pid = cluster.apiserver_pid();
        assert!(!pid.is_empty(), "no pid file for kube-apiserver");
        let blocked = run(&[
            "--run-id",
            "too-far",
            "--param",
            "to=v1.36.0",
            "--param",
            &format!("kubectl={kubectl}"),
        ]);
        assert_eq!(blocked.code, 3, "{}\n{}", blocked.stdout, blocked.stderr);
        assert!(
            blocked.stdout.contains("one-minor-hop") || blocked.stderr.contains("one-minor-hop"),
            "{}\n{}",
            blocked.stdout,
            blocked.stderr
        );
        assert_eq!(cluster.apiserver_pid(), pid, "the API server was restarted");
        assert_eq!(cluster.version(), FROM);
        let status = kp_with(
            &dir,
            &["status", "too-far", "-o", "json"],
            &cluster.kubeconfig,
        );
        let status: Value = serde_json::from_str(&status.stdout).expect("json");
        assert_eq!(
            crate::util::step_field(&status, "control-plane", "state"),
            "pending"
        );

        // The hop.
        let ran = run(&[
            "--run-id",
            "hop",
            "--param",
            &format!("to={TO}"),
            "--param",
            &format!("kubectl={kubectl}"),
        ]);
        assert_eq!(ran.code, 0, "{}\n{}", ran.stdout, ran.stderr);
        assert_eq!(cluster.version(), TO);
        assert_ne!(cluster.apiserver_pid(), pid);
        // What was there before is still there.
        let cm = cluster.json(&["get", "configmap", "settings", "-n", "shop"]);
        assert_eq!(cm["data"]["color"], "blue");
        cluster.wait_available("shop", "web");
        let nodes = cluster.json(&["get", "nodes"]);
        let items = nodes["items"].as_array().expect("nodes");
        assert_eq!(items.len(), 6);
        for n in items {
            let name = n["metadata"]["name"].as_str().unwrap_or_default();
            assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], TO, "{name}");
            let cordoned = n["spec"]["unschedulable"] == true;
            assert_eq!(cordoned, name == "hop-6", "{name} cordoned: {cordoned}");
            assert!(
                n["metadata"]["annotations"]
                    .get("kpilot.io/cordoned-by")
                    .is_none(),
                "{name} still carries the run's annotation"
            );
        }
        // Every node went through the group; drain evicted the pods.
        let status = kp_with(&dir, &["status", "hop", "-o", "json"], &cluster.kubeconfig);
        let status: Value = serde_json::from_str(&status.stdout).expect("json");
        for member in [
            "nodes.cordon",
            "nodes.drain",
            "nodes.kubelet",
            "nodes.ready",
            "nodes.uncordon",
        ] {
            let nodes: Vec<&Value> = status["steps"]
                .as_array()
                .expect("steps")
                .iter()
                .filter(|s| s["id"] == member && s["instance"] != "global")
                .collect();
            assert_eq!(nodes.len(), 6, "{member}");
            assert!(
                nodes.iter().all(|s| s["state"] == "succeeded"),
                "{member}: {status:#}"
            );
        }
        // The diff of the two snapshots names the version move.
        let diff = kp_with(&dir, &["diff", "hop"], &cluster.kubeconfig);
        assert_eq!(diff.code, 0, "{}\n{}", diff.stdout, diff.stderr);
        assert!(
            diff.stdout.contains(FROM) && diff.stdout.contains(TO),
            "{}",
            diff.stdout
        );
    }
);
