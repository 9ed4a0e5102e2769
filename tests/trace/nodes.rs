//! A `trace` step on every node: run by the node agents (`kpilot agent`, each in a network
//! namespace of its own), each instance judging the drops of its own node.

use crate::agent::{instances, Fleet, HEAD};
use crate::util::prereq::{needs, IP, NFT, ROOT};

kptest!(trace_step_runs_on_every_node_through_the_agents, |dir| {
    if !needs(
        "trace_step_runs_on_every_node_through_the_agents",
        &[ROOT, IP, NFT],
    ) {
        return;
    }
    let fleet = Fleet::start(&dir, "tr", 2, 2);
    fleet.write_inventory(&dir, |_| String::new());
    // node-01 drops TCP to 8080; node-02 has nothing listening there.
    fleet.on(0, &["nft", "add", "table", "inet", "kpt"]);
    fleet.on(
        0,
        &[
            "nft",
            "add chain inet kpt input { type filter hook input priority 0; policy accept; }",
        ],
    );
    fleet.on(
        0,
        &[
            "nft", "add", "rule", "inet", "kpt", "input", "tcp", "dport", "8080", "drop",
        ],
    );
    let (a1, a2) = (&fleet.nodes[0].addr, &fleet.nodes[1].addr);
    // /proc/self/ns/net is read by each agent: its own node's namespace.
    dir.write(
        "wf.yaml",
        &format!(
            "{HEAD}spec:
  concurrency: 4
  steps:
    - id: watch
      phase: patrol
      executor: per-node
      trace:
        duration: 4s
        filter: {{netns: /proc/self/ns/net, port: 8080}}
        expect: \"!drops.exists(d, d.reason == 'NETFILTER_DROP')\"
    - id: traffic
      phase: patrol
      script: |
        sleep 1.5
        for i in 1 2 3; do
          for a in {a1} {a2}; do
            timeout 0.3 bash -c \"echo > /dev/tcp/$a/8080\" 2>/dev/null || true
          done
          sleep 0.2
        done
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
    let watch = instances(&status, "watch");
    let inode = |k: usize| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/run/netns/{}", fleet.nodes[k].ns))
            .expect("node netns")
            .ino()
    };
    let (state, reason) = &watch["node-01"];
    assert_eq!(state, "failed", "{watch:?}\n{}", ran.stderr);
    for want in [
        "offending drops: NETFILTER_DROP at nft_do_chain".to_owned(),
        format!("in netns {} (eth0) tcp 10.213.0.1:", inode(0)),
        format!("-> {a1}:8080"),
    ] {
        assert!(reason.contains(&want), "`{want}` not in: {reason}");
    }
    let (state, reason) = &watch["node-02"];
    assert_eq!(state, "succeeded", "{reason}");
    // node-02's report, as its instance's output: the refused SYNs, in its namespace.
    let output = status["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == "watch" && s["instance"] == "node-02")
        .map(|s| s["output"].clone())
        .unwrap_or_default();
    let drops = output["drops"].as_array().expect("node-02's report");
    assert!(
        drops.iter().any(|g| g["reason"] == "NO_SOCKET"
            && g["netns"] == inode(1)
            && g["dst"] == a2.as_str()
            && g["dport"] == 8080),
        "{output:#}"
    );
    assert!(
        !drops.iter().any(|g| g["reason"] == "NETFILTER_DROP"),
        "{output:#}"
    );
});
