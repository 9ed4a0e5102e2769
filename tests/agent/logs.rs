//! r8: `kpilot logs` of a step run on every node names the nodes to pick from.

use super::{Fleet, HEAD};
use crate::util::prereq::{needs, IP, ROOT};

kptest!(r8_logs_of_a_per_node_step_lists_its_nodes, |dir| {
    if !needs("r8_logs_of_a_per_node_step_lists_its_nodes", &[ROOT, IP]) {
        return;
    }
    let fleet = Fleet::start(&dir, "lg", 2, 2);
    fleet.write_inventory(&dir, |_| String::new());
    dir.write(
        "wf.yaml",
        &format!(
            "{HEAD}spec:
  steps:
    - {{id: hello, phase: patrol, executor: per-node, script: echo hello from $KPILOT_INSTANCE}}
    - {{id: once, phase: patrol, script: echo once}}
"
        ),
    );
    fleet
        .kp(
            &dir,
            &[
                "run",
                "wf.yaml",
                "--run-id",
                "r",
                "--inventory",
                "inventory.yaml",
            ],
        )
        .expect(0);
    let ran = fleet.kp(&dir, &["logs", "r", "hello"]).expect(2);
    assert!(ran.stderr.contains("pass --node NODE"), "{}", ran.stderr);
    for node in &fleet.nodes {
        assert!(ran.stderr.contains(&node.name), "{}", ran.stderr);
    }
    let first = &fleet.nodes[0].name;
    let ran = fleet
        .kp(&dir, &["logs", "r", "hello", "--node", first])
        .expect(0);
    assert_eq!(ran.stdout.trim(), format!("hello from {first}"));
    let ran = fleet
        .kp(&dir, &["logs", "r", "hello", "--node", "no-such-node"])
        .expect(2);
    assert!(ran.stderr.contains("it ran on:"), "{}", ran.stderr);
    let ran = fleet
        .kp(&dir, &["logs", "r", "once", "--node", first])
        .expect(2);
    assert!(ran.stderr.contains("leave out --node"), "{}", ran.stderr);
});
