//! Node checks: readiness and kubelet version skew, over nodes the test made.

use super::{fixture, kp, node, step_output, unique, wait_ready, Created};
use crate::util::step_field;

kptest!(nodes_ready_names_exactly_the_notready_node, |dir| {
    let label = unique("ready");
    let (kwok, up, down) = (
        format!("{label}-kwok"),
        format!("{label}-up"),
        format!("{label}-down"),
    );
    let mut created = Created::default();
    created.create(node(&kwok, &label, "v1.34.4", None));
    created.create(node(&up, &label, "v1.34.4", Some(true)));
    created.create(node(&down, &label, "v1.34.4", Some(false)));
    wait_ready(&kwok);

    let selector = format!("nodeSelector=kpilot-test={label}");
    let wf = fixture("nodes-ready.yaml");
    let ran = kp(&dir, &["run", &wf, "--run-id", "r", "--param", &selector]).expect(1);
    assert!(ran.stderr.contains(&down), "{}", ran.stderr);

    let output = step_output(&dir, "r", "nodes-ready");
    assert_eq!(output["outcome"], "failed");
    assert_eq!(output["failed"], serde_json::json!([down]), "{output}");
    assert_eq!(output["total"], 3);
    let reason = step_field(&dir.status("r"), "nodes-ready", "reason");
    assert!(
        reason.contains(&format!(
            "node {down} is not Ready (KubeletNotReady: PLEG is not healthy)"
        )),
        "{reason}"
    );
    assert!(reason.contains("1 of 3"), "{reason}");
    assert!(!reason.contains(&kwok) && !reason.contains(&up), "{reason}");
});

kptest!(nodes_ready_passes_when_all_are_ready, |dir| {
    let label = unique("allready");
    let mut created = Created::default();
    created.create(node(&format!("{label}-a"), &label, "v1.34.4", Some(true)));
    created.create(node(&format!("{label}-b"), &label, "v1.33.1", Some(true)));
    let selector = format!("nodeSelector=kpilot-test={label}");
    let wf = fixture("nodes-ready.yaml");
    kp(&dir, &["run", &wf, "--run-id", "r", "--param", &selector]).expect(0);
    let output = step_output(&dir, "r", "nodes-ready");
    assert_eq!(output["outcome"], "passed");
    assert_eq!(output["total"], 2);
    assert_eq!(output["failed"], serde_json::json!([]));
});

kptest!(kubelet_skew_names_the_too_old_and_too_new_nodes, |dir| {
    let label = unique("skew");
    let name = |s: &str| format!("{label}-{s}");
    let mut created = Created::default();
    created.create(node(&name("same"), &label, "v1.34.4", None));
    created.create(node(&name("three-older"), &label, "v1.31.2", Some(true)));
    created.create(node(&name("four-older"), &label, "v1.30.9", Some(true)));
    created.create(node(&name("newer"), &label, "v1.35.0", Some(true)));
    created.create(node(
        &name("vendor"),
        &label,
        "v1.33.5-aliyun.1",
        Some(true),
    ));

    let selector = format!("nodeSelector=kpilot-test={label}");
    let wf = fixture("kubelet-skew.yaml");
    kp(
        &dir,
        &[
            "run", &wf, "--run-id", "r", "--param", "to=1.34", "--param", &selector,
        ],
    )
    .expect(1);
    let output = step_output(&dir, "r", "kubelet-skew");
    let mut failed: Vec<String> = output["failed"]
        .as_array()
        .expect("failed")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    failed.sort();
    assert_eq!(failed, vec![name("four-older"), name("newer")], "{output}");
    let reason = step_field(&dir.status("r"), "kubelet-skew", "reason");
    assert!(
        reason.contains(&format!(
            "node {} runs kubelet v1.30.9, which is too old for the API server version 1.34",
            name("four-older")
        )),
        "{reason}"
    );
    assert!(
        reason.contains(&format!(
            "node {} runs kubelet v1.35.0, which is newer than the API server version 1.34",
            name("newer")
        )),
        "{reason}"
    );

    // A target one minor later: the 1.31 kubelet is now four minors behind too.
    kp(
        &dir,
        &[
            "run", &wf, "--run-id", "r2", "--param", "to=1.35", "--param", &selector,
        ],
    )
    .expect(1);
    let output = step_output(&dir, "r2", "kubelet-skew");
    let failed = output["failed"].to_string();
    assert!(
        failed.contains(&name("three-older")) && !failed.contains(&name("newer")),
        "{failed}"
    );
});

kptest!(nodes_ready_fails_when_the_selector_matches_no_node, |dir| {
    let selector = format!("nodeSelector=kpilot-test={}", unique("nothing"));
    let wf = fixture("nodes-ready.yaml");
    kp(&dir, &["run", &wf, "--run-id", "r", "--param", &selector]).expect(1);
    let reason = step_field(&dir.status("r"), "nodes-ready", "reason");
    assert!(
        reason.contains("has 0 item(s), fewer than minItems 1"),
        "{reason}"
    );
});
