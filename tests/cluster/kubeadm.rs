//! The shipped kubeadm upgrade (`workflows/upgrade/kubeadm.yaml`) through real agents
//! whose PATH holds stand-in `kubeadm`, `apt-get` and `systemctl` scripts that log their
//! calls. The stand-in `kubeadm upgrade apply` makes the real control-plane hop of a test
//! cluster of this test's own, and the stand-in `systemctl restart kubelet` sets the
//! node's kubelet version to the package `apt-get` installed, as a real kubelet would
//! report it. The test asserts every command and its order on each node.

use std::collections::BTreeMap;

use serde_json::json;

use super::upgrade::OwnCluster;
use super::{kubectl_path, root, shipped};
use crate::agent::cluster_nodes::{ip_from, Agents};

/// The agents' addresses: 127.0.0.41..
const BASE: usize = 40;

const APT_GET: &str = r#"#!/bin/sh
echo "$KPILOT_INSTANCE apt-get $*" >> "$STANDIN_LOG"
for arg in "$@"; do
  case "$arg" in
    kubelet=*) echo "${arg#kubelet=}" > "$STANDIN_STATE/$KPILOT_INSTANCE.kubelet" ;;
  esac
done
"#;

const KUBEADM: &str = r#"#!/bin/sh
echo "$KPILOT_INSTANCE kubeadm $*" >> "$STANDIN_LOG"
if [ "$1 $2" = "upgrade apply" ]; then
  for last in "$@"; do :; done
  exec "$STANDIN_TEST_CLUSTER" upgrade "$last"
fi
"#;

const SYSTEMCTL: &str = r#"#!/bin/sh
echo "$KPILOT_INSTANCE systemctl $*" >> "$STANDIN_LOG"
if [ "$1 $2" = "restart kubelet" ]; then
  cordoned=$("$STANDIN_KUBECTL" get node "$KPILOT_INSTANCE" -o 'jsonpath={.spec.unschedulable}')
  echo "$KPILOT_INSTANCE unschedulable=$cordoned" >> "$STANDIN_LOG"
  version=$(sed 's/-.*//' "$STANDIN_STATE/$KPILOT_INSTANCE.kubelet")
  exec "$STANDIN_KUBECTL" patch node "$KPILOT_INSTANCE" --subresource=status --type=merge \
    -p "{\"status\":{\"nodeInfo\":{\"kubeletVersion\":\"v$version\"}}}"
fi
"#;

/// An unmanaged node (Ready as created) with an InternalIP where its agent listens.
fn node(name: &str, address: &str, labels: serde_json::Value) -> serde_json::Value {
    let mut all = json!({"kubernetes.io/hostname": name});
    if let (Some(all), Some(more)) = (all.as_object_mut(), labels.as_object()) {
        all.extend(more.clone());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all},
        "status": {
            "nodeInfo": {"kubeletVersion": "v1.34.4"},
            "addresses": [{"type": "InternalIP", "address": address}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    })
}

kptest!(
    the_kubeadm_upgrade_runs_every_command_in_order_on_each_node,
    |dir| {
        let cluster = OwnCluster::up(&dir);
        let standins = dir.join("standins");
        std::fs::create_dir_all(&standins).expect("mkdir");
        std::fs::create_dir_all(dir.join("standin-state")).expect("mkdir");
        for (name, text) in [
            ("apt-get", APT_GET),
            ("kubeadm", KUBEADM),
            ("systemctl", SYSTEMCTL),
        ] {
            let path = standins.join(name);
            std::fs::write(&path, text).expect("write a stand-in");
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let path = format!(
            "{}:{}",
            standins.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = dir.join("calls.log");
        let state = dir.join("standin-state");
        let kubectl = kubectl_path();
        let script = root().join("scripts/test-cluster");
        let kubectl_wrapper = dir.write(
            "kubectl-here",
            &format!(
                "#!/bin/sh\nexec {} --kubeconfig {} \"$@\"\n",
                kubectl.display(),
                cluster.kubeconfig.display()
            ),
        );
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&kubectl_wrapper, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        let env: Vec<(&str, String)> = vec![
            ("PATH", path),
            ("STANDIN_LOG", log.display().to_string()),
            ("STANDIN_STATE", state.display().to_string()),
            ("STANDIN_KUBECTL", kubectl_wrapper.display().to_string()),
            ("STANDIN_TEST_CLUSTER", script.display().to_string()),
            ("KPILOT_TEST_CLUSTER_DIR", cluster.dir.display().to_string()),
        ];
        let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let agents = Agents::start_with(&dir, BASE, 4, &env_refs);
        let fp = dir.read("agent-1.fp").trim().to_owned();
        let names = ["cp-1", "cp-2", "w-1", "w-2"];
        let cp = json!({"node-role.kubernetes.io/control-plane": ""});
        let labels = [
            json!({"node-role.kubernetes.io/control-plane": "", "kpilot.io/kubeadm-apply": "true"}),
            cp,
            json!({"topology.kubernetes.io/zone": "b"}),
            json!({"topology.kubernetes.io/zone": "a"}),
        ];
        for (k, (name, labels)) in names.iter().zip(labels).enumerate() {
            cluster.create(node(name, &ip_from(BASE, k + 1), labels));
        }
        dir.write(
        "inventory.yaml",
        &format!(
            "tokenFile: token\nfingerprint: \"{fp}\"\ncluster: {{port: {}, addressType: InternalIP}}\n",
            agents.port
        ),
    );

        let workflow = shipped("upgrade/kubeadm.yaml");
        let out = dir
            .cmd(&[
                "run",
                &workflow,
                "--run-id",
                "kadm",
                "--param",
                "to=1.35.4",
                "--inventory",
                "inventory.yaml",
                "--kubeconfig",
                &cluster.kubeconfig.display().to_string(),
            ])
            .output()
            .expect("kpilot runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}\n{stderr}\ncalls:\n{calls}"
        );

        let mut per_node: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut order: Vec<&str> = Vec::new();
        for line in calls.lines() {
            let Some((node, call)) = line.split_once(' ') else {
                continue;
            };
            per_node.entry(node).or_default().push(call.to_owned());
            if order.last() != Some(&node) {
                order.push(node);
            }
        }
        let kubelet_calls = [
            "apt-get install -y --allow-change-held-packages kubelet=1.35.4-* kubectl=1.35.4-*",
            "systemctl daemon-reload",
            "systemctl restart kubelet",
            // The stand-in looked: the node was cordoned while its kubelet restarted.
            "unschedulable=true",
        ];
        let mut first = vec![
            "apt-get install -y --allow-change-held-packages kubeadm=1.35.4-*",
            "kubeadm upgrade plan v1.35.4",
            "kubeadm upgrade apply -y v1.35.4",
        ];
        first.extend(kubelet_calls);
        let mut other = vec![
            "apt-get install -y --allow-change-held-packages kubeadm=1.35.4-*",
            "kubeadm upgrade node",
        ];
        other.extend(kubelet_calls);
        assert_eq!(per_node["cp-1"], first, "cp-1:\n{calls}");
        for name in ["cp-2", "w-1", "w-2"] {
            assert_eq!(per_node[name], other, "{name}:\n{calls}");
        }
        // One node at a time: the first control plane, the other, then the
        // workers by zone.
        assert_eq!(order, ["cp-1", "cp-2", "w-2", "w-1"], "{calls}");
        assert_eq!(cluster.version(), "v1.35.4");
        let nodes = cluster.json(&["get", "nodes"]);
        for n in nodes["items"].as_array().expect("nodes") {
            let name = n["metadata"]["name"].as_str().unwrap_or_default();
            assert_eq!(
                n["status"]["nodeInfo"]["kubeletVersion"], "v1.35.4",
                "{name}"
            );
            assert_ne!(n["spec"]["unschedulable"], true, "{name} left cordoned");
        }
    }
);
