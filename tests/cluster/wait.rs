//! `wait` steps on the real cluster: a wait that holds once the cluster
//! changes, one that never holds, one whose query the cluster cannot answer,
//! and bodies that are refused before anything runs.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{kp, kubeconfig, kubectl, node, step_output, unique, Created};
use crate::util::{step_field, Dir};

/// A workflow of one `wait` step `ready` with `body` (indented as a step's fields).
fn workflow(dir: &Dir, body: &str) {
    dir.write(
        "wf.yaml",
        &format!(
            "apiVersion: kpilot/v1
kind: Workflow
metadata: {{name: wait}}
spec:
  steps:
    - id: ready
      phase: upgrade
{body}"
        ),
    );
}

kptest!(a_wait_holds_once_the_node_reports_the_new_kubelet, |dir| {
    let label = unique("wait");
    let name = format!("{label}-n");
    let mut created = Created::default();
    created.create(node(&name, &label, "v1.34.4", Some(true)));
    workflow(
        &dir,
        &format!(
            "      wait:
        query: {{cluster: nodes, labelSelector: \"kpilot-test={label}\"}}
        expect: \"data.exists(n, n.name == '{name}' && n.kubeletVersion == 'v9.9.9')\"
        interval: 300ms
        maxInterval: 1s
        timeout: 2m
"
        ),
    );
    let child = dir
        .cmd(&["run", "wf.yaml", "--run-id", "r"])
        .env("KUBECONFIG", kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kpilot starts");
    // The node changes only once the wait is polling: its step is running,
    // and a moment more for its first poll to have seen the old version.
    let started = Instant::now();
    loop {
        let status = dir.kp(&["status", "r", "-o", "json"]);
        let running = serde_json::from_str::<serde_json::Value>(&status.stdout)
            .is_ok_and(|s| s["steps"][0]["state"] == "running");
        if running {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the wait did not start: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    kubectl(
        &[
            "patch",
            "node",
            &name,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"nodeInfo":{"kubeletVersion":"v9.9.9"}}}"#,
        ],
        None,
    );
    let out = child.wait_with_output().expect("kpilot ends");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let output = step_output(&dir, "r", "ready");
    assert_eq!(output["held"], true, "{output}");
    assert!(output["polls"].as_u64().unwrap_or(0) > 1, "{output}");
    assert_eq!(output["data"][0]["name"], name.as_str(), "{output}");
    assert_eq!(output["data"][0]["kubeletVersion"], "v9.9.9", "{output}");
});

kptest!(
    a_wait_that_never_holds_fails_at_its_timeout_with_the_last_data,
    |dir| {
        let label = unique("never");
        let name = format!("{label}-n");
        let mut created = Created::default();
        created.create(node(&name, &label, "v1.34.4", Some(true)));
        let expect = "data.all(n, n.kubeletVersion == 'v1.35.0')";
        workflow(
            &dir,
            &format!(
                "      wait:
        query: {{cluster: nodes, labelSelector: \"kpilot-test={label}\"}}
        expect: \"{expect}\"
        interval: 200ms
        timeout: 3s
"
            ),
        );
        kp(&dir, &["run", "wf.yaml", "--run-id", "r"]).expect(1);
        let reason = step_field(&dir.status("r"), "ready", "reason");
        assert!(
            reason.starts_with(&format!("timeout after 3s: `{expect}` did not hold")),
            "{reason}"
        );
        assert!(
            reason.contains("last seen: [{")
                && reason.contains(&name)
                && reason.contains("v1.34.4"),
            "{reason}"
        );
        let output = step_output(&dir, "r", "ready");
        assert_eq!(output["held"], false, "{output}");
        assert!(output["polls"].as_u64().unwrap_or(0) > 1, "{output}");
        assert_eq!(output["data"][0]["name"], name.as_str(), "{output}");
    }
);

kptest!(
    a_wait_whose_query_the_cluster_cannot_answer_fails_at_once,
    |dir| {
        workflow(
            &dir,
            "      wait:
        query: {resource: {group: example.com, version: v1, kind: NoSuchKind}}
        expect: \"size(data) > 0\"
        timeout: 5m
",
        );
        kp(&dir, &["run", "wf.yaml", "--run-id", "r"]).expect(1);
        let reason = step_field(&dir.status("r"), "ready", "reason");
        assert!(
            reason.contains("the wait could not read its data")
                && reason.contains("does not serve kind NoSuchKind in example.com/v1"),
            "{reason}"
        );
        assert_eq!(step_output(&dir, "r", "ready")["polls"], 1);
    }
);

kptest!(
    bad_wait_bodies_are_refused_naming_the_step_and_what_to_write,
    |dir| {
        for (body, says) in [
        (
            "      wait: {query: cluster.nodes, expect: 'true', every: 2s}\n",
            "unknown key `every` in `wait`; it takes query, expect",
        ),
        (
            "      wait: {query: cluster.nodes, expect: 'true', interval: often}\n",
            "`wait.interval` is `often`; write a duration from 100ms to 1h, like `interval: 2s`",
        ),
        (
            "      wait: {query: cluster.nodes, expect: 'true', interval: 10s, maxInterval: 2s}\n",
            "`wait.maxInterval` (2s) is shorter than `wait.interval` (10s)",
        ),
        (
            "      wait: {query: cluster.nodes, expect: \"snapshots['Before'].nodes.ready > 0\", snapshots: ['Before']}\n",
            "`wait.snapshots` holds Before, which is not a step id",
        ),
    ] {
        workflow(&dir, body);
        let ran = dir.kp(&["validate", "wf.yaml"]).expect(2);
        assert!(
            ran.stderr.contains("wf.yaml") && ran.stderr.contains("ready") && ran.stderr.contains(says),
            "{body}: {}",
            ran.stderr
        );
        // `run` refuses it the same way, before anything runs.
        let ran = kp(&dir, &["run", "wf.yaml"]).expect(2);
        assert!(ran.stderr.contains(says), "{}", ran.stderr);
    }
    }
);

kptest!(
    a_wait_on_a_path_judges_and_keeps_that_part_of_the_data,
    |dir| {
        workflow(
            &dir,
            "      wait:
        query: cluster.version.gitVersion
        expect: \"data.startsWith('v1.')\"
",
        );
        kp(&dir, &["run", "wf.yaml", "--run-id", "r"]).expect(0);
        let output = step_output(&dir, "r", "ready");
        assert_eq!(output["polls"], 1, "{output}");
        let version = kubectl(&["version", "-o", "json"], None);
        let version: serde_json::Value =
            serde_json::from_str(&version).expect("kubectl version -o json");
        assert_eq!(
            output["data"], version["serverVersion"]["gitVersion"],
            "{output}"
        );
    }
);

kptest!(a_per_node_wait_binds_node_to_each_instance, |dir| {
    let label = unique("pernode");
    let (up, down) = (format!("{label}-up"), format!("{label}-down"));
    let mut created = Created::default();
    created.create(node(&up, &label, "v1.34.4", None));
    created.create(node(&down, &label, "v1.34.4", Some(false)));
    super::wait_ready(&up);
    // The nodes come from the cluster; the wait runs in kpilot, so no agent
    // is asked (none listens).
    dir.write_secret("token", &format!("{}\n", crate::agent::TOKEN));
    dir.write(
        "inventory.yaml",
        &format!(
            "tokenFile: token\nfingerprint: \"sha256:{}\"\ncluster: {{port: 7443}}\n",
            "ab".repeat(32)
        ),
    );
    dir.write(
        "wf.yaml",
        &format!(
            "apiVersion: kpilot/v1
kind: Workflow
metadata: {{name: wait}}
spec:
  steps:
    - id: ready
      phase: upgrade
      executor: per-node
      nodes: {{selector: \"kpilot-test={label}\"}}
      wait:
        query: {{cluster: nodes, labelSelector: \"kpilot-test={label}\"}}
        expect: \"data.exists(n, n.name == node && n.ready)\"
        interval: 200ms
        timeout: 2s
"
        ),
    );
    kp(
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
    .expect(1);
    let status = dir.status("r");
    let each = crate::agent::instances(&status, "ready");
    assert_eq!(each[&up].0, "succeeded", "{status:#}");
    assert_eq!(each[&down].0, "failed", "{status:#}");
    assert!(
        each[&down].1.starts_with(
            "timeout after 2s: `data.exists(n, n.name == node && n.ready)` did not hold"
        ),
        "{status:#}"
    );
});
