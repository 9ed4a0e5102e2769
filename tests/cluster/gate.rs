//! A failed check closes the gate in front of an upgrade; after the cluster
//! is fixed, `kpilot resume` reads it again and the upgrade runs once.

use super::{kp, kubectl, node, step_output, unique, Created};
use crate::util::step_field;

kptest!(
    gate_blocks_upgrade_until_node_is_fixed_and_run_resumed,
    |dir| {
        let label = unique("gate");
        let (good, bad) = (format!("{label}-good"), format!("{label}-bad"));
        let mut created = Created::default();
        created.create(node(&good, &label, "v1.34.4", Some(true)));
        created.create(node(&bad, &label, "v1.34.4", Some(false)));
        dir.write(
            "wf.yaml",
            &format!(
                "apiVersion: kpilot/v1
kind: Workflow
metadata: {{name: gated-upgrade}}
spec:
  steps:
    - id: nodes-ready
      phase: pre-check
      check:
        query: {{cluster: nodes, labelSelector: kpilot-test={label}}}
        forEach: true
        expect: item.ready
        message: \"node {{{{item.name}}}} is not Ready\"
    - id: version-known
      phase: pre-check
      check: {{query: cluster.version, expect: \"v(data.gitVersion) >= v('1.12.0')\"}}
    - id: pre-gate
      phase: pre-check
      needs: [nodes-ready, version-known]
      gate: {{}}
    - id: upgrade
      phase: upgrade
      needs: [pre-gate]
      script: echo x >> upgrade.runs
"
            ),
        );
        kp(&dir, &["run", "wf.yaml", "--run-id", "r"]).expect(3);
        assert!(
            !dir.exists("upgrade.runs"),
            "the upgrade ran behind a closed gate"
        );
        let status = dir.status("r");
        assert_eq!(step_field(&status, "pre-gate", "state"), "blocked");
        assert_eq!(step_field(&status, "version-known", "state"), "succeeded");
        let reason = step_field(&status, "nodes-ready", "reason");
        assert!(
            reason.contains(&format!("node {bad} is not Ready")),
            "{reason}"
        );
        assert_eq!(
            step_output(&dir, "r", "nodes-ready")["failed"],
            serde_json::json!([bad])
        );

        // A person fixes the node; the resumed run reads the nodes again.
        kubectl(
            &[
                "patch",
                "node",
                &bad,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"fixed"}]}}"#,
            ],
            None,
        );
        kp(&dir, &["resume", "r"]).expect(0);
        assert_eq!(dir.read("upgrade.runs").lines().count(), 1);
        let status = dir.status("r");
        assert_eq!(status["state"], "succeeded");
        assert_eq!(step_field(&status, "nodes-ready", "attempts"), "2");
        assert_eq!(step_field(&status, "version-known", "attempts"), "1");
        let output = step_output(&dir, "r", "nodes-ready");
        assert_eq!(output["outcome"], "passed");
        assert_eq!(
            output["fact"],
            format!("cluster.nodes labelSelector=kpilot-test={label} @nodes-ready#2")
        );
    }
);
