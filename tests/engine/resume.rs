//! Blocks and what a person does about them: gates, repair, approvals,
//! interrupted steps and runs held by another process.

use std::time::Duration;

use crate::util::step_field;

const GATED: &str = "apiVersion: kpilot/v1
kind: Workflow
metadata: {name: gated}
spec:
  steps:
    - id: counted-check
      phase: pre-check
      script: echo x >> counted-check.runs
    - id: disk-check
      phase: pre-check
      command: [test, -e, disk-ok]
    - id: pre-gate
      phase: pre-check
      needs: [counted-check, disk-check]
      gate: {}
    - id: upgrade
      phase: upgrade
      needs: [pre-gate]
      script: echo x >> upgrade.runs
";

kptest!(gate_blocks_then_resume_completes, |dir| {
    dir.write("wf.yaml", GATED);
    let ran = dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(3);
    assert!(ran.stderr.contains("gate closed"), "{}", ran.stderr);
    assert!(
        !dir.exists("upgrade.runs"),
        "the upgrade ran behind a closed gate"
    );
    assert_eq!(dir.step_state("r", "pre-gate"), "blocked");
    assert_eq!(dir.step_state("r", "upgrade"), "pending");

    // Resuming before the repair blocks again, and runs only the failed check.
    dir.kp(&["resume", "r"]).expect(3);
    assert!(!dir.exists("upgrade.runs"));

    // A person repairs the cause; the workflow file changing on disk meanwhile
    // does not change the run.
    dir.write("disk-ok", "");
    dir.write("wf.yaml", &GATED.replace("test, -e, disk-ok", "\"false\""));
    dir.kp(&["resume", "r"]).expect(0);
    assert_eq!(dir.read("upgrade.runs").lines().count(), 1);
    assert_eq!(
        dir.read("counted-check.runs").lines().count(),
        1,
        "a succeeded step ran again"
    );
    let status = dir.status("r");
    assert_eq!(status["state"], "succeeded");
    assert_eq!(step_field(&status, "disk-check", "attempts"), "3");

    // Resuming a finished run changes nothing.
    dir.kp(&["resume", "r"]).expect(0);
    assert_eq!(dir.read("upgrade.runs").lines().count(), 1);
});

kptest!(repair_then_recheck, |dir| {
    dir.write(
        "wf.yaml",
        "apiVersion: kpilot/v1
kind: Workflow
metadata: {name: repair}
spec:
  steps:
    - id: ntp-synced
      phase: pre-check
      command: [test, -e, ntp-ok]
      repair: restart-ntp
    - id: restart-ntp
      phase: repair
      script: |
        echo x >> repairs
        touch ntp-ok
    - id: upgrade
      phase: upgrade
      needs: [ntp-synced]
      command: [touch, upgraded]
",
    );
    dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(0);
    assert!(dir.exists("upgraded"));
    assert_eq!(dir.read("repairs").lines().count(), 1);
    let status = dir.status("r");
    assert_eq!(step_field(&status, "ntp-synced", "attempts"), "2");
    assert!(step_field(&status, "ntp-synced", "reason").contains("after repair"));
    assert_eq!(step_field(&status, "restart-ntp", "state"), "succeeded");
});

kptest!(repair_that_does_not_fix_fails_the_step, |dir| {
    dir.write(
        "wf.yaml",
        "apiVersion: kpilot/v1
kind: Workflow
metadata: {name: repair}
spec:
  steps:
    - {id: check, phase: pre-check, command: [test, -e, never], repair: fix}
    - {id: fix, phase: repair, command: [\"true\"]}
    - {id: upgrade, phase: upgrade, needs: [check], command: [touch, upgraded]}
",
    );
    dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(1);
    assert!(!dir.exists("upgraded"));
    let reason = step_field(&dir.status("r"), "check", "reason");
    assert!(reason.contains("still failing after repair"), "{reason}");
});

kptest!(approval_waits_for_a_person, |dir| {
    dir.write(
        "wf.yaml",
        "apiVersion: kpilot/v1
kind: Workflow
metadata: {name: approval}
spec:
  steps:
    - {id: checks, phase: pre-check, command: [\"true\"]}
    - id: go-ahead
      phase: upgrade
      needs: [checks]
      approval: {message: \"Upgrade the control plane to 1.16?\"}
    - {id: upgrade, phase: upgrade, needs: [go-ahead], command: [touch, upgraded]}
",
    );
    let ran = dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(3);
    assert!(
        ran.stderr
            .contains("awaiting approval: Upgrade the control plane to 1.16?"),
        "{}",
        ran.stderr
    );
    assert!(!dir.exists("upgraded"));
    // Approving a step that is not an approval is refused.
    dir.kp(&["approve", "r", "checks"]).expect(2);
    dir.kp(&["approve", "r", "go-ahead", "--reason", "change CHG-1234"])
        .expect(0);
    assert!(dir.exists("upgraded"));
    let reason = step_field(&dir.status("r"), "go-ahead", "reason");
    assert!(reason.contains("change CHG-1234"), "{reason}");
});

kptest!(a_second_driver_is_refused_at_once, |dir| {
    dir.write(
        "wf.yaml",
        "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: slow}\nspec:\n  steps:\n    - {id: slow, phase: upgrade, command: [sleep, \"30\"]}\n",
    );
    let mut first = dir
        .cmd(&["run", "wf.yaml", "--run-id", "r"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // Wait until the run is being driven: its first snapshot is written as
    // the drive starts.
    for _ in 0..400 {
        if dir.join("state/runs/r/snapshot.json").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = std::time::Instant::now();
    let second = dir.kp(&["resume", "r"]).expect(2);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        second.stderr.contains("being driven by another process"),
        "{}",
        second.stderr
    );
    let _ = first.kill();
    let _ = first.wait();
});

kptest!(sigterm_holds_non_idempotent_steps_as_interrupted, |dir| {
    dir.write(
        "wf.yaml",
        "apiVersion: kpilot/v1
kind: Workflow
metadata: {name: term}
spec:
  concurrency: 2
  steps:
    - {id: migrate, phase: upgrade, command: [sleep, \"30\"]}
    - {id: probe, phase: pre-check, idempotent: true, command: [sh, -c, \"test -e probed || { touch probed; sleep 30; }\"]}
",
    );
    let mut child = dir
        .cmd(&["run", "wf.yaml", "--run-id", "r"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    let pid = child.id();
    // SIGTERM: kpilot stops its steps and records why.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(3));
    let s = dir.status("r");
    assert_eq!(step_field(&s, "migrate", "state"), "interrupted");
    assert_eq!(step_field(&s, "probe", "state"), "pending");
    // Resuming without a decision runs the idempotent step again (it
    // finishes at once the second time) and keeps the interrupted one held.
    let ran = dir.kp(&["resume", "r"]);
    assert_eq!(ran.code, 3, "{}", ran.stderr);
    assert!(ran.stderr.contains("--retry migrate"), "{}", ran.stderr);
    // --skip needs a reason; with one, the run goes on.
    dir.kp(&["resume", "r", "--skip", "migrate"]).expect(2);
    dir.kp(&[
        "resume",
        "r",
        "--skip",
        "migrate",
        "--reason",
        "checked by hand",
    ])
    .expect(0);
    assert_eq!(
        step_field(&dir.status("r"), "migrate", "state"),
        "succeeded"
    );
});
