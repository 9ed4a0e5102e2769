//! Node checks: `check` steps with `node.*` queries, evaluated by each node's
//! agent in its own network namespace.

use super::{instances, Fleet, HEAD};
use crate::util::prereq::{needs, IP, IPTABLES, ROOT};
use crate::util::step_field;

kptest!(
    node_checks_find_the_one_node_with_a_bad_sysctl_and_a_forward_drop,
    |dir| {
        if !needs("node_checks_find_the_one_node", &[ROOT, IP, IPTABLES]) {
            return;
        }
        let fleet = Fleet::start(&dir, "nc", 3, 2);
        fleet.write_inventory(&dir, |_| String::new());
        // A new namespace starts with forwarding off: the good nodes turn it on;
        // node-02 keeps it off and drops forwarded traffic from 10.99.0.0/16.
        fleet.on(0, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        fleet.on(2, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        fleet.on(1, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        fleet.on(
            1,
            &[
                "iptables",
                "-A",
                "FORWARD",
                "-s",
                "10.99.0.0/16",
                "-j",
                "DROP",
            ],
        );
        dir.write(
            "wf.yaml",
            &format!(
                "{HEAD}spec:
  steps:
    - id: ip-forward
      phase: pre-check
      executor: per-node
      nodes: {{maxFailures: 3}}
      check:
        query: node.sysctl
        expect: \"data['net.ipv4.ip_forward'] == '1'\"
        message: \"net.ipv4.ip_forward is {{{{data['net.ipv4.ip_forward']}}}}, want 1\"
    - id: forward-drops
      phase: pre-check
      executor: per-node
      nodes: {{maxFailures: 3}}
      check:
        query: node.iptables
        expect: \"!data.filter.FORWARD.rules.exists(r, r.endsWith('-j DROP'))\"
        message: \"FORWARD drops: {{{{data.filter.FORWARD.rules}}}}\"
    - id: kernel
      phase: pre-check
      executor: per-node
      check: {{query: node.kernel.release, expect: \"data != ''\"}}
"
            ),
        );
        let ran = fleet.kp(
            &dir,
            &[
                "run",
                "wf.yaml",
                "--run-id",
                "r",
                "--inventory",
                "inventory.yaml",
            ],
        );
        let ran = ran.expect(1);
        let status = dir.status("r");
        for step in ["ip-forward", "forward-drops"] {
            let nodes = instances(&status, step);
            assert_eq!(nodes.len(), 3, "{nodes:?}");
            assert_eq!(
                nodes["node-01"].0, "succeeded",
                "{step}: {nodes:?}\n{}",
                ran.stderr
            );
            assert_eq!(nodes["node-03"].0, "succeeded", "{step}: {nodes:?}");
            assert_eq!(nodes["node-02"].0, "failed", "{step}: {nodes:?}");
            let summary = step_field(&status, step, "reason");
            assert!(summary.contains("node-02"), "{summary}");
            assert!(
                !summary.contains("node-01") && !summary.contains("node-03"),
                "{summary}"
            );
        }
        let sysctl = &instances(&status, "ip-forward")["node-02"].1;
        assert!(
            sysctl.contains("net.ipv4.ip_forward is 0, want 1"),
            "{sysctl}"
        );
        let drops = &instances(&status, "forward-drops")["node-02"].1;
        assert!(drops.contains("-s 10.99.0.0/16 -j DROP"), "{drops}");
        let kernel = instances(&status, "kernel");
        assert!(kernel.values().all(|(s, _)| s == "succeeded"), "{kernel:?}");
    }
);
