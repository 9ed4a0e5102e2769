//! The worked example of a hand-written check workflow, `workflows/checks/`: valid, and
//! right on a real cluster.

use super::{kp, node, shipped, step_output, unique, Created};
use crate::util::step_field;

kptest!(shipped_checks_validate, |dir| {
    let checks = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/checks");
    let mut n = 0;
    for entry in std::fs::read_dir(&checks).expect("workflows/checks") {
        let path = entry.expect("entry").path();
        let ran = dir.kp(&["validate", &path.display().to_string()]);
        assert_eq!(ran.code, 0, "{}: {}", path.display(), ran.stderr);
        n += 1;
    }
    assert!(n >= 1, "{n} shipped checks");
    assert!(checks.join("pre-upgrade-checks.yaml").exists());
});

kptest!(pre_upgrade_checks_gate_one_minor_hop, |dir| {
    let label = unique("pre");
    let mut created = Created::default();
    created.create(node(&format!("{label}-a"), &label, "v1.34.4", None));
    created.create(node(&format!("{label}-b"), &label, "v1.32.1", Some(true)));
    let wf = shipped("checks/pre-upgrade-checks.yaml");
    let selector = format!("nodeSelector=kpilot-test={label}");
    super::wait_ready(&format!("{label}-a"));

    // The test cluster is v1.34.4: 1.35 is one hop, 1.36 two.
    kp(
        &dir,
        &[
            "run", &wf, "--run-id", "hop", "--param", "to=1.35", "--param", &selector,
        ],
    )
    .expect(0);
    let status = dir.status("hop");
    assert_eq!(
        step_field(&status, "pre-checks-passed", "state"),
        "succeeded"
    );
    assert_eq!(
        step_output(&dir, "hop", "removed-apis-not-served")["outcome"],
        "passed"
    );

    kp(
        &dir,
        &[
            "run", &wf, "--run-id", "two", "--param", "to=1.36", "--param", &selector,
        ],
    )
    .expect(3);
    let status = dir.status("two");
    assert_eq!(step_field(&status, "pre-checks-passed", "state"), "blocked");
    let reason = step_field(&status, "one-minor-hop", "reason");
    assert!(
        reason.contains("the API server is at v1.34.4; 1.36 is not at most one minor"),
        "{reason}"
    );
    // And a v1.32 kubelet would be four minors behind 1.36.
    let skew = step_output(&dir, "two", "kubelet-skew");
    assert_eq!(skew["failed"], serde_json::json!([format!("{label}-b")]));
});
