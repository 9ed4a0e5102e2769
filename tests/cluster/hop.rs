//! `scripts/test-cluster upgrade VERSION`: a real control-plane hop of one
//! minor version, on a cluster of this test's own (its own state dir and
//! ports), so the shared cluster is never upgraded: up at v1.34, objects
//! created, upgraded to v1.35, `/version` at v1.35 and the objects still there,
//! `up` leaving the upgraded cluster as it is, and `down` leaving no process.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::root;

/// The version `up` starts and the one `upgrade` goes to: the script's defaults.
fn versions() -> (String, String) {
    let env = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    (
        env("KPILOT_K8S_VERSION", "v1.34.4"),
        env("KPILOT_K8S_UPGRADE_VERSION", "v1.35.4"),
    )
}

/// A cluster of the test's own; `down` when dropped, pass or fail.
struct OwnCluster {
    state: PathBuf,
}

impl OwnCluster {
    fn script(&self, args: &[&str]) -> Output {
        Command::new(root().join("scripts/test-cluster"))
            .args(args)
            .env("KPILOT_TEST_CLUSTER_DIR", &self.state)
            // If this test process dies, the watchdog `up` leaves takes the cluster down.
            .env(
                "KPILOT_TEST_CLUSTER_OWNER_PID",
                std::process::id().to_string(),
            )
            .stdin(Stdio::null())
            .output()
            .expect("scripts/test-cluster runs")
    }

    /// Runs the script, panicking with its output unless it succeeds; the last line of stdout.
    fn ok(&self, args: &[&str], what: &str) -> String {
        let out = self.script(args);
        assert!(
            out.status.success(),
            "scripts/test-cluster {} failed: {what}\n--- stderr\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    fn kubectl(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
        super::kubectl_at(kubeconfig, args, stdin)
    }

    fn pid(&self, component: &str) -> String {
        std::fs::read_to_string(self.state.join("pids").join(format!("{component}.pid")))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// Processes whose command line names this cluster's state dir.
    fn processes(&self) -> Vec<String> {
        let needle = format!("{}/", self.state.display());
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.chars().all(|c| c.is_ascii_digit()) || name == std::process::id().to_string() {
                continue;
            }
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let zombie = std::fs::read_to_string(entry.path().join("status")).is_ok_and(|s| {
                s.lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'))
            });
            if cmdline.contains(&needle) && !zombie {
                found.push(format!("{name}: {cmdline}"));
            }
        }
        found
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = self.script(&["down"]);
    }
}

kptest!(
    a_control_plane_hop_keeps_the_objects_and_down_leaves_nothing,
    |dir| {
        let (from, to) = versions();
        let cluster = OwnCluster {
            state: dir.join("cluster"),
        };
        let kubeconfig = PathBuf::from(cluster.ok(&["up"], "the cluster did not start"));
        let kc = kubeconfig.as_path();
        let version = |kc: &Path| -> String {
            let raw = cluster.kubectl(kc, &["get", "--raw", "/version"], None);
            let v: serde_json::Value = serde_json::from_str(&raw).expect("/version is JSON");
            v["gitVersion"].as_str().unwrap_or_default().to_owned()
        };
        assert_eq!(version(kc), from);

        let ns = super::unique("hop");
        let objects = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "settings", "namespace": ns}, "data": {"answer": "42"}},
            {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": "web", "namespace": ns, "labels": {"app": "web"}},
             "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                      "template": {"metadata": {"labels": {"app": "web"}},
                                   "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10"}]}}}},
        ]});
        cluster.kubectl(kc, &["create", "-f", "-"], Some(&objects.to_string()));
        let apiserver_before = cluster.pid("kube-apiserver");
        let etcd_before = cluster.pid("etcd");

        // The hop. It builds `to` if it is not cached: a failure to build fails here, naming it.
        let upgraded = cluster.ok(
            &["upgrade", &to],
            &format!(
                "no control plane at {to}; the {to} binaries are built by `scripts/test-cluster build` into ~/.cache/kpilot/k8s/{to}/bin"
            ),
        );
        assert_eq!(
            Path::new(&upgraded),
            kc,
            "upgrade prints the same kubeconfig"
        );
        assert_eq!(version(kc), to, "/version after the hop");
        assert_ne!(
            cluster.pid("kube-apiserver"),
            apiserver_before,
            "a new API server runs"
        );
        assert_eq!(cluster.pid("etcd"), etcd_before, "etcd was not restarted");
        for component in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            let exe = std::fs::read_link(format!("/proc/{}/exe", cluster.pid(component)))
                .unwrap_or_else(|e| panic!("{component} runs: {e}"));
            assert!(
                exe.display()
                    .to_string()
                    .contains(&format!("/k8s/{to}/bin/{component}")),
                "{component} runs {}",
                exe.display()
            );
        }
        // The objects made before the hop are there, as they were.
        let got = cluster.kubectl(kc, &["get", "namespace", &ns, "-o", "name"], None);
        assert_eq!(got.trim(), format!("namespace/{ns}"));
        let cm = cluster.kubectl(
            kc,
            &["get", "configmap", "settings", "-n", &ns, "-o", "json"],
            None,
        );
        let cm: serde_json::Value = serde_json::from_str(&cm).expect("JSON");
        assert_eq!(cm["data"]["answer"], "42");
        let web = cluster.kubectl(
            kc,
            &["get", "deployment", "web", "-n", &ns, "-o", "json"],
            None,
        );
        let web: serde_json::Value = serde_json::from_str(&web).expect("JSON");
        assert_eq!(web["spec"]["replicas"], 2);
        // The new controller manager works on them: it scales the Deployment.
        cluster.kubectl(
            kc,
            &["scale", "deployment", "web", "-n", &ns, "--replicas=3"],
            None,
        );
        cluster.kubectl(
            kc,
            &[
                "wait",
                "--for=jsonpath={.status.replicas}=3",
                "deployment/web",
                "-n",
                &ns,
                "--timeout=120s",
            ],
            None,
        );

        // `status` says what runs; `up` on the upgraded cluster leaves it as it is.
        let status = cluster.script(&["status"]);
        let status_text = String::from_utf8_lossy(&status.stdout);
        assert!(status.status.success(), "{status_text}");
        assert!(
            status_text.contains(&format!("kubernetes {to} (upgraded from {from})")),
            "{status_text}"
        );
        let apiserver_after = cluster.pid("kube-apiserver");
        let again = cluster.ok(&["up"], "up on the upgraded cluster");
        assert_eq!(Path::new(&again), kc);
        assert_eq!(
            cluster.pid("kube-apiserver"),
            apiserver_after,
            "up restarted nothing"
        );
        assert_eq!(version(kc), to);

        cluster.ok(&["down"], "down after the upgrade");
        let left = cluster.processes();
        assert!(left.is_empty(), "processes left after down: {left:#?}");
        assert!(!cluster.state.join("ports.env").exists());
    }
);
