//! `--kubeconfig` and `--context` on `run` and `resume` choose the cluster, over
//! `KUBECONFIG`, as with kubectl.

use super::{kp_with, kubeconfig};
use crate::util::step_field;

const VERSION_CHECK: &str = "apiVersion: kpilot/v1
kind: Workflow
metadata: {name: flags}
spec:
  steps:
    - id: version-known
      phase: pre-check
      check:
        query: cluster.version
        expect: \"v(data.gitVersion) >= v('1.12.0')\"
        severity: error
        message: \"API server at {{ data.gitVersion }}\"
        timeout: 3s
";

kptest!(kubeconfig_flag_wins_over_the_environment, |dir| {
    dir.write("wf.yaml", VERSION_CHECK);
    let bogus = dir.write(
        "bogus-kubeconfig",
        "apiVersion: v1\nkind: Config\nclusters: []\n",
    );
    let real = kubeconfig().display().to_string();
    // KUBECONFIG names a file without a cluster: on its own the check fails...
    kp_with(&dir, &["run", "wf.yaml", "--run-id", "env"], &bogus).expect(1);
    // ...and --kubeconfig reaches the real API server.
    kp_with(
        &dir,
        &["run", "wf.yaml", "--run-id", "flag", "--kubeconfig", &real],
        &bogus,
    )
    .expect(0);
    assert_eq!(
        step_field(&dir.status("flag"), "version-known", "state"),
        "succeeded"
    );
});

kptest!(unknown_context_fails_the_check_naming_it, |dir| {
    dir.write("wf.yaml", VERSION_CHECK);
    let ran = kp_with(
        &dir,
        &[
            "run",
            "wf.yaml",
            "--run-id",
            "r",
            "--context",
            "no-such-context",
        ],
        kubeconfig(),
    )
    .expect(1);
    let reason = step_field(&dir.status("r"), "version-known", "reason");
    assert!(
        reason.contains("no-such-context"),
        "{reason}\n{}",
        ran.stderr
    );
});
