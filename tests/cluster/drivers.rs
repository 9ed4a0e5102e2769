//! The generic resource query and the command driver: what they read, and
//! that each query is asked once per run, whatever the number of checks.

use serde_json::json;

use super::{kp, step_output, unique, Created};
use crate::util::step_field;

kptest!(resource_query_lists_any_kind_by_label, |dir| {
    let label = unique("res");
    let mut created = Created::default();
    for (name, replicas) in [("one", 1), ("none", 0)] {
        let name = format!("{label}-{name}");
        created.create(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "labels": {"kpilot-test": label}},
            "data": {"replicas": replicas.to_string()},
        }));
    }
    dir.write(
        "wf.yaml",
        &format!(
            "apiVersion: kpilot/v1
kind: Workflow
metadata: {{name: resources}}
spec:
  steps:
    - id: configs
      phase: patrol
      check:
        query:
          resource: {{group: core, version: v1, kind: ConfigMap, namespace: default, labelSelector: kpilot-test={label}}}
        forEach: true
        expect: \"int(item.data.replicas) > 0 && item.kind == 'ConfigMap'\"
        severity: warning
        message: \"{{{{item.metadata.name}}}} has {{{{item.data.replicas}}}} replicas\"
    - id: count
      phase: patrol
      check:
        query:
          resource: {{version: v1, kind: ConfigMap, namespace: default, labelSelector: kpilot-test={label}}}
        expect: size(data) == 2
    - id: no-such-kind
      phase: patrol
      check:
        query: {{resource: {{group: example.com, version: v1, kind: Widget}}}}
        expect: \"true\"
"
        ),
    );
    kp(&dir, &["run", "wf.yaml", "--run-id", "r"]).expect(1);
    let output = step_output(&dir, "r", "configs");
    assert_eq!(output["outcome"], "warning");
    assert_eq!(output["failed"], json!([format!("default/{label}-none")]));
    assert_eq!(output["message"], format!("1 of 2 items of resource v1 ConfigMap namespace=default labelSelector=kpilot-test={label} failed: default/{label}-none: {label}-none has 0 replicas"));
    assert_eq!(step_output(&dir, "r", "count")["outcome"], "passed");
    let reason = step_field(&dir.status("r"), "no-such-kind", "reason");
    assert!(
        reason.contains("does not serve kind Widget in example.com/v1"),
        "{reason}"
    );
    assert!(
        !reason.contains("attempt"),
        "a missing kind was retried: {reason}"
    );
});

kptest!(command_driver_is_asked_once_per_run_and_kept, |dir| {
    dir.write(
        "list-sgs.sh",
        "#!/bin/sh\necho x >> asked\necho '[{\"name\": \"sg-api\", \"ingress\": [6443]}, {\"name\": \"sg-nodes\", \"ingress\": [22]}]'\n",
    );
    dir.write(
        "wf.yaml",
        "apiVersion: kpilot/v1
kind: Workflow
metadata: {name: cloud}
spec:
  params:
    - {name: port, default: \"6443\"}
  steps:
    - id: api-port-open
      phase: pre-check
      check:
        query: {command: [sh, ./list-sgs.sh]}
        expect: data.exists(sg, int(params.port) in sg.ingress)
    - id: no-ssh-from-anywhere
      phase: patrol
      check:
        query: {command: [sh, ./list-sgs.sh]}
        forEach: true
        expect: \"!(22 in item.ingress)\"
        severity: warning
        message: \"security group {{item.name}} opens ssh\"
",
    );
    // No cluster check here: no kubeconfig is read.
    let ran = dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(0);
    assert_eq!(dir.read("asked").lines().count(), 1, "{}", ran.stderr);
    let output = step_output(&dir, "r", "no-ssh-from-anywhere");
    assert_eq!(output["outcome"], "warning");
    assert_eq!(output["failed"], json!(["sg-nodes"]));
    assert_eq!(output["message"], "1 of 2 items of command [\"sh\",\"./list-sgs.sh\"] failed: security group sg-nodes opens ssh");
});

/// `kubectl proxy` in front of the test cluster, logging every request it
/// forwards (`-v=6`), so a test sees the requests kpilot really made.
struct Proxy {
    child: std::process::Child,
    log: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
}

impl Proxy {
    fn start(dir: &crate::util::Dir) -> Self {
        use std::io::BufRead as _;
        let log = dir.path().join("proxy.log");
        let mut child = std::process::Command::new(super::kubectl_path())
            .arg("--kubeconfig")
            .arg(super::kubeconfig())
            .args(["proxy", "--port=0", "-v=6"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("proxy log"))
            .spawn()
            .expect("kubectl proxy starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("kubectl proxy says where it serves");
        let address = line
            .trim()
            .strip_prefix("Starting to serve on ")
            .unwrap_or_else(|| panic!("kubectl proxy printed {line:?}"))
            .to_owned();
        let kubeconfig = dir.write(
            "proxy.kubeconfig",
            &format!(
                "apiVersion: v1
kind: Config
clusters: [{{name: proxy, cluster: {{server: 'http://{address}'}}}}]
users: [{{name: none, user: {{}}}}]
contexts: [{{name: proxy, context: {{cluster: proxy, user: none}}}}]
current-context: proxy
"
            ),
        );
        Proxy {
            child,
            log,
            kubeconfig,
        }
    }

    /// The URLs of the requests forwarded so far whose path starts with `path`.
    fn requests(&self, path: &str) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log).expect("proxy log");
        log.lines()
            .filter(|l| l.contains("\"Response\" verb=\"GET\""))
            .filter_map(|l| l.split(" url=\"").nth(1)?.split('"').next())
            .filter_map(|url| {
                let rest = url.split_once("://")?.1;
                let at = rest.find('/')?;
                Some(rest[at..].to_owned())
            })
            .filter(|url| url.starts_with(path))
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

kptest!(cluster_lists_are_read_in_pages_once_per_run, |dir| {
    // 501 objects: one more than a page, so reading them all takes two requests.
    let label = unique("pages");
    let mut created = Created::default();
    created.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": label}}));
    let configmaps: Vec<_> = (0..501)
        .map(|i| {
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i:03}"), "namespace": label, "labels": {"kpilot-test": label}},
                "data": {"i": i.to_string()},
            })
        })
        .collect();
    super::kubectl(
        &["create", "-f", "-", "-o", "name"],
        Some(&json!({"apiVersion": "v1", "kind": "List", "items": configmaps}).to_string()),
    );
    for i in 0..2 {
        created.create(super::node(
            &format!("{label}-{i}"),
            &label,
            "v1.34.4",
            Some(true),
        ));
    }
    let nodes = format!("{{cluster: nodes, labelSelector: kpilot-test={label}}}");
    let configs = format!(
        "{{resource: {{version: v1, kind: ConfigMap, namespace: {label}, labelSelector: kpilot-test={label}}}}}"
    );
    dir.write(
        "wf.yaml",
        &format!(
            "apiVersion: kpilot/v1
kind: Workflow
metadata: {{name: pages}}
spec:
  steps:
    - {{id: nodes-ready, phase: patrol, check: {{query: {nodes}, forEach: true, expect: item.ready}}}}
    - {{id: nodes-count, phase: patrol, check: {{query: {nodes}, expect: size(data) == 2}}}}
    - {{id: nodes-kubelet, phase: patrol, check: {{query: {nodes}, forEach: true, expect: \"item.kubeletVersion == 'v1.34.4'\"}}}}
    - {{id: configs-count, phase: patrol, check: {{query: {configs}, expect: size(data) == 501}}}}
    - {{id: configs-last, phase: patrol, check: {{query: {configs}, expect: \"data.exists(c, c.metadata.name == 'cm-500')\"}}}}
"
        ),
    );
    let proxy = Proxy::start(&dir);
    let ran = super::kp_with(
        &dir,
        &["run", "wf.yaml", "--run-id", "r"],
        &proxy.kubeconfig,
    );
    ran.expect(0);
    for step in [
        "nodes-ready",
        "nodes-count",
        "nodes-kubelet",
        "configs-count",
        "configs-last",
    ] {
        assert_eq!(step_output(&dir, "r", step)["outcome"], "passed", "{step}");
    }
    // Three checks of the nodes: one request. Two of the ConfigMaps: one list, in two pages.
    let nodes = proxy.requests("/api/v1/nodes?");
    assert_eq!(nodes.len(), 1, "{nodes:#?}");
    assert!(nodes[0].contains("limit=500"), "{nodes:#?}");
    let configs = proxy.requests(&format!("/api/v1/namespaces/{label}/configmaps?"));
    assert_eq!(configs.len(), 2, "{configs:#?}");
    assert!(
        configs.iter().all(|u| u.contains("limit=500")) && configs[1].contains("continue="),
        "{configs:#?}"
    );
});
