//! The `trace` step: a firewall drop fails it, with the drop named; without the rule it
//! passes and shows the closed port's NO_SOCKET drops; a timeout stops the tracer.

use std::time::{Duration, Instant};

use super::{NetnsPair, EBPF, PAIR};
use crate::util::prereq::needs;
use crate::util::step_field;

const PORT: u16 = 8080;

/// A workflow whose `watch` step traces namespace b while `traffic`, beside it (no edge),
/// sends SYNs from a to b.
fn workflow(pair: &NetnsPair) -> String {
    let traffic = pair
        .syn_script("1", 6, PORT)
        .lines()
        .map(|l| format!("        {l}\n"))
        .collect::<String>();
    format!(
        "apiVersion: kpilot/v1
kind: Workflow
metadata: {{name: trace-drops}}
spec:
  concurrency: 2
  steps:
    - id: watch
      phase: post-check
      trace:
        duration: 4s
        filter: {{netns: /run/netns/{b}}}
        expect: \"!drops.exists(d, d.reason == 'NETFILTER_DROP' && d.dport == {PORT})\"
    - id: traffic
      phase: post-check
      script: |
{traffic}",
        b = pair.b
    )
}

fn groups<'a>(
    output: &'a serde_json::Value,
    reason: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
    output["drops"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter(move |g| g["reason"] == reason)
}

fn step_output(status: &serde_json::Value, step: &str) -> serde_json::Value {
    status["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == step))
        .map(|s| s["output"].clone())
        .unwrap_or_default()
}

kptest!(trace_step_fails_on_a_firewall_drop_and_names_it, |dir| {
    if !needs("trace_step_fails_on_a_firewall_drop_and_names_it", PAIR) {
        return;
    }
    let pair = NetnsPair::new();
    pair.drop_tcp_in_b(PORT);
    dir.write("wf.yaml", &workflow(&pair));
    let ran = dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(1);
    let status = dir.status("r");
    assert_eq!(step_field(&status, "traffic", "state"), "succeeded");
    assert_eq!(
        step_field(&status, "watch", "state"),
        "failed",
        "{}",
        ran.stderr
    );

    // The reason names the offending group: reason, location, namespace, tuple, count.
    let reason = step_field(&status, "watch", "reason");
    let inode = pair.inode_b();
    for want in [
        "expectation `!drops.exists".to_owned(),
        "offending drops: NETFILTER_DROP at nft_do_chain".to_owned(),
        format!("in netns {inode} (vb) tcp {}:", pair.ip_a),
        format!("-> {}:{PORT}", pair.ip_b),
    ] {
        assert!(
            reason.contains(&want),
            "`{want}` not in the reason: {reason}"
        );
    }

    // The table with the stacks is the step's log: a NETFILTER_DROP line with b's inode,
    // `vb` and the 5-tuple, and nft_do_chain in a stack below it.
    let logs = dir.kp(&["logs", "r", "watch"]).expect(0);
    assert!(
        logs.stdout.lines().any(|l| l.contains("NETFILTER_DROP")
            && l.contains(&format!(" {inode} "))
            && l.contains(" vb ")
            && l.contains(&format!("{}:", pair.ip_a))
            && l.contains(&format!("-> {}:{PORT}", pair.ip_b))),
        "{}",
        logs.stdout
    );
    assert!(
        logs.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("nft_do_chain+")),
        "{}",
        logs.stdout
    );

    // The report is the step's output, kept for a failed attempt too: `status -o json`.
    let output = step_output(&status, "watch");
    let drops: Vec<_> = groups(&output, "NETFILTER_DROP").collect();
    assert!(!drops.is_empty(), "no NETFILTER_DROP in {output:#}");
    for g in &drops {
        assert_eq!(g["netns"], inode, "{g:#}");
        assert_eq!(g["protocol"], "tcp");
        assert_eq!(g["src"], pair.ip_a.as_str());
        assert_eq!(g["dst"], pair.ip_b.as_str());
        assert_eq!(g["dport"], PORT);
        assert_eq!(g["ifname"], "vb");
        let stack = g["stack"].as_array().expect("stack");
        assert!(
            stack
                .iter()
                .any(|f| f.as_str().is_some_and(|f| f.starts_with("nft_do_chain+"))),
            "no nft_do_chain in {stack:?}"
        );
    }
    assert_eq!(output["lost"], 0);
    assert_eq!(output["filter"]["netns"], inode);
});

kptest!(
    trace_step_passes_without_the_rule_and_reports_no_socket,
    |dir| {
        if !needs(
            "trace_step_passes_without_the_rule_and_reports_no_socket",
            PAIR,
        ) {
            return;
        }
        // No rule and nothing listening: the SYNs reach b and are refused there.
        let pair = NetnsPair::new();
        dir.write("wf.yaml", &workflow(&pair));
        let ran = dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(0);
        let status = dir.status("r");
        assert_eq!(
            step_field(&status, "watch", "state"),
            "succeeded",
            "{}",
            ran.stderr
        );
        let output = step_output(&status, "watch");
        assert_eq!(groups(&output, "NETFILTER_DROP").count(), 0, "{output:#}");
        let refused: Vec<_> = groups(&output, "NO_SOCKET")
            .filter(|g| g["dport"] == PORT)
            .collect();
        assert!(!refused.is_empty(), "no NO_SOCKET in {output:#}");
        for g in refused {
            assert_eq!(g["netns"], pair.inode_b());
            assert_eq!(g["src"], pair.ip_a.as_str());
            assert_eq!(g["dst"], pair.ip_b.as_str());
            assert!(
                g["location"]
                    .as_str()
                    .is_some_and(|l| l.starts_with("tcp_v4_rcv")),
                "{g:#}"
            );
        }
        let total = output["total"].as_u64().expect("total");
        let received = output["received"].as_u64().expect("received");
        assert_eq!(total, received + output["lost"].as_u64().expect("lost"));
    }
);

kptest!(trace_step_is_stopped_by_its_timeout, |dir| {
    if !needs("trace_step_is_stopped_by_its_timeout", EBPF) {
        return;
    }
    // Without the cancel flag the tracer's blocking thread would keep the process alive
    // for the whole minute.
    dir.write(
        "wf.yaml",
        "apiVersion: kpilot/v1
kind: Workflow
metadata: {name: trace-timeout}
spec:
  steps:
    - id: watch
      phase: patrol
      timeout: 1s
      trace: {duration: 60s, expect: 'true'}
",
    );
    let started = Instant::now();
    dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(1);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "the run took {took:?}");
    let reason = step_field(&dir.status("r"), "watch", "reason");
    assert!(
        reason.contains("timed out") || reason.contains("timeout"),
        "{reason}"
    );
});

kptest!(trace_step_reports_an_unknown_reason, |dir| {
    if !needs("trace_step_reports_an_unknown_reason", EBPF) {
        return;
    }
    dir.write(
        "wf.yaml",
        "apiVersion: kpilot/v1
kind: Workflow
metadata: {name: trace-reason}
spec:
  steps:
    - {id: watch, phase: patrol, trace: {duration: 1s, filter: {reason: NO_SUCH_REASON}}}
",
    );
    dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(1);
    let reason = step_field(&dir.status("r"), "watch", "reason");
    assert!(
        reason.contains("NO_SUCH_REASON") && reason.contains("NO_SOCKET"),
        "{reason}"
    );
});
