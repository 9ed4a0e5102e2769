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
