//! `kpilot trace drops`: a JSON report of live traffic, and bad flags.

use std::time::Duration;

use super::{NetnsPair, EBPF, PAIR};
use crate::util::prereq::needs;

kptest!(trace_drops_reports_json_of_live_traffic, |dir| {
    if !needs("trace_drops_reports_json_of_live_traffic", PAIR) {
        return;
    }
    let pair = NetnsPair::new();
    let netns = format!("/run/netns/{}", pair.b);
    let child = dir
        .cmd(&[
            "trace",
            "drops",
            "--duration",
            "3s",
            "--netns",
            &netns,
            "--port",
            "9090",
            "-o",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kpilot starts");
    // Traffic to a closed port in b while the trace runs, spread over its window.
    let traffic = std::process::Command::new("bash")
        .args(["-c", &pair.syn_script("0.5", 8, 9090)])
        .status()
        .expect("bash");
    assert!(traffic.success());
    let out = child.wait_with_output().expect("kpilot ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["filter"]["netns"], pair.inode_b());
    assert_eq!(report["filter"]["port"], 9090);
    assert!(
        report["duration_secs"].as_f64().is_some_and(|d| d >= 2.5),
        "{report:#}"
    );
    let drops = report["drops"].as_array().expect("drops");
    assert!(
        drops.iter().any(|g| g["reason"] == "NO_SOCKET"
            && g["dport"] == 9090
            && g["src"] == pair.ip_a.as_str()),
        "{report:#}"
    );
    let n = |k: &str| report[k].as_u64().expect(k);
    assert_eq!(n("total"), n("received") + n("lost"));
    let grouped: u64 = drops
        .iter()
        .map(|g| g["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(grouped, n("received"));
    std::thread::sleep(Duration::from_millis(10));
});

kptest!(trace_drops_prints_a_table_when_piped, |dir| {
    if !needs("trace_drops_prints_a_table_when_piped", EBPF) {
        return;
    }
    let ran = dir
        .kp(&[
            "trace",
            "drops",
            "--duration",
            "1500ms",
            "--reason",
            "NETFILTER_DROP",
            "--no-stacks",
        ])
        .expect(0);
    assert!(ran.stdout.contains("drops matched"), "{}", ran.stdout);
    assert!(ran.stdout.contains("COUNT  REASON"), "{}", ran.stdout);
});

kptest!(trace_drops_rejects_bad_flags, |dir| {
    for args in [
        &["trace", "drops", "--addr", "10.0.0.300"][..],
        &["trace", "drops", "--duration", "soon"],
        &["trace", "drops", "--port", "0"],
        &["trace", "drops", "--netns", "nope"],
        &["trace", "drops", "--netns", "/nonexistent/ns"],
        &["trace", "nothing"],
    ] {
        let ran = dir.kp(args);
        assert_eq!(ran.code, 2, "{args:?}: {}", ran.stderr);
    }
});

kptest!(
    trace_drops_rejects_an_unknown_reason_naming_the_known,
    |dir| {
        // The kernel's reasons are read from its tracepoint format, which needs root.
        if !needs(
            "trace_drops_rejects_an_unknown_reason_naming_the_known",
            EBPF,
        ) {
            return;
        }
        let ran = dir
            .kp(&["trace", "drops", "--duration", "1s", "--reason", "NO_SUCH"])
            .expect(2);
        assert!(ran.stderr.contains("NO_SOCKET"), "{}", ran.stderr);
    }
);
