//! How one run proceeds: order, edges, `when`, retry, timeout, params.

use crate::util::step_field;

const HEAD: &str = "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: t}\n";

kptest!(diamond_runs_needs_first, |dir| {
    // b and c run at the same time and d waits for both; each step logs its
    // start and end.
    let step = |id: &str, needs: &str| {
        format!(
            "    - id: {id}\n      phase: upgrade\n      needs: [{needs}]\n      script: |\n        echo start-{id} >> order.log\n        sleep 0.3\n        echo end-{id} >> order.log\n"
        )
    };
    let wf = format!(
        "{HEAD}spec:\n  concurrency: 4\n  steps:\n{}{}{}{}",
        step("a", ""),
        step("b", "a"),
        step("c", "a"),
        step("d", "b, c")
    );
    dir.write("wf.yaml", &wf);
    dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(0);
    let log = dir.read("order.log");
    let lines: Vec<&str> = log.lines().collect();
    let pos = |s: &str| {
        lines
            .iter()
            .position(|l| *l == s)
            .unwrap_or_else(|| panic!("{s} missing in {lines:?}"))
    };
    assert_eq!(lines.len(), 8, "{lines:?}");
    assert!(pos("end-a") < pos("start-b") && pos("end-a") < pos("start-c"));
    assert!(
        pos("start-b") < pos("end-c") && pos("start-c") < pos("end-b"),
        "b and c overlap: {lines:?}"
    );
    assert!(pos("end-b") < pos("start-d") && pos("end-c") < pos("start-d"));
});

kptest!(failure_edges_choose_the_branch, |dir| {
    dir.write(
        "wf.yaml",
        &format!(
            "{HEAD}spec:
  steps:
    - {{id: upgrade, phase: upgrade, command: [sh, -c, 'exit 7']}}
    - {{id: rollback, phase: upgrade, needs: [{{step: upgrade, on: failure}}], command: [touch, rolled-back]}}
    - {{id: verify, phase: post-check, needs: [upgrade], command: [touch, verified]}}
    - {{id: report, phase: post-check, needs: [{{step: upgrade, on: always}}], command: [touch, reported]}}
"
        ),
    );
    let ran = dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(1);
    assert!(dir.exists("rolled-back") && dir.exists("reported"));
    assert!(!dir.exists("verified"));
    let status = dir.status("r");
    assert_eq!(step_field(&status, "upgrade", "state"), "failed");
    assert_eq!(step_field(&status, "upgrade", "exitCode"), "7");
    assert_eq!(step_field(&status, "verify", "state"), "skipped");
    assert!(
        step_field(&status, "verify", "reason").contains("upgrade"),
        "{}",
        ran.stdout
    );
    assert_eq!(step_field(&status, "rollback", "state"), "succeeded");
});

kptest!(when_reads_params_and_step_outputs, |dir| {
    dir.write(
        "wf.yaml",
        &format!(
            "{HEAD}spec:
  params:
    - {{name: target, default: \"1.16\"}}
  steps:
    - id: probe
      phase: pre-check
      script: |
        echo '{{\"version\": \"1.15\", \"healthy\": true}}'
    - id: on-target
      phase: upgrade
      needs: [probe]
      when: \"params.target == '1.16' && steps.probe.output.healthy\"
      command: [touch, ran-on-target]
    - id: other-target
      phase: upgrade
      needs: [probe]
      when: \"params.target == '1.17'\"
      command: [touch, ran-other]
    - id: after-skip
      phase: post-check
      needs: [other-target]
      command: [touch, ran-after-skip]
"
        ),
    );
    dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(0);
    assert!(dir.exists("ran-on-target"));
    assert!(!dir.exists("ran-other") && !dir.exists("ran-after-skip"));
    let status = dir.status("r");
    assert_eq!(step_field(&status, "other-target", "state"), "skipped");
    assert_eq!(step_field(&status, "after-skip", "state"), "skipped");

    dir.kp(&["run", "wf.yaml", "--run-id", "r2", "--param", "target=1.17"])
        .expect(0);
    assert!(dir.exists("ran-other"));
});

kptest!(retry_backs_off_then_succeeds, |dir| {
    // Fails twice, then succeeds; each attempt records when it started.
    dir.write(
        "wf.yaml",
        &format!(
            "{HEAD}spec:
  steps:
    - id: flaky
      phase: upgrade
      retry: {{limit: 3, backoff: {{initial: 300ms, factor: 2, max: 5s}}}}
      script: |
        date +%s%N >> attempts
        test $(wc -l < attempts) -ge 3
"
        ),
    );
    dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(0);
    let times: Vec<u128> = dir
        .read("attempts")
        .lines()
        .map(|l| l.trim().parse().expect("ns"))
        .collect();
    assert_eq!(times.len(), 3);
    let gap1 = (times[1] - times[0]) / 1_000_000;
    let gap2 = (times[2] - times[1]) / 1_000_000;
    assert!(
        gap1 >= 300,
        "first wait {gap1} ms is shorter than the 300ms backoff"
    );
    assert!(
        gap2 >= 600,
        "second wait {gap2} ms is shorter than the 600ms backoff"
    );
    let status = dir.status("r");
    assert_eq!(step_field(&status, "flaky", "attempts"), "3");
    assert_eq!(step_field(&status, "flaky", "state"), "succeeded");

    // With too few retries the step fails, after limit + 1 attempts.
    std::fs::remove_file(dir.join("attempts")).expect("rm");
    let wf = dir
        .read("wf.yaml")
        .replace("limit: 3", "limit: 1")
        .replace("300ms", "10ms");
    dir.write("wf.yaml", &wf);
    dir.kp(&["run", "wf.yaml", "--run-id", "r2"]).expect(1);
    assert_eq!(dir.read("attempts").lines().count(), 2);
});

kptest!(timeout_kills_the_whole_process_group, |dir| {
    dir.write(
        "wf.yaml",
        &format!(
            "{HEAD}spec:
  steps:
    - id: hang
      phase: upgrade
      timeout: 1s
      script: |
        sleep 300 &
        echo $! > grandchild.pid
        wait
"
        ),
    );
    let started = std::time::Instant::now();
    dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(1);
    assert!(
        started.elapsed().as_secs() < 60,
        "the timeout did not end the step"
    );
    let reason = step_field(&dir.status("r"), "hang", "reason");
    assert!(reason.contains("timeout"), "{reason}");
    let pid: i32 = dir.read("grandchild.pid").trim().parse().expect("pid");
    // The grandchild `sleep` must be gone (allow the kernel a moment to reap it).
    let mut alive = true;
    for _ in 0..50 {
        alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z");
        if !alive {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!alive, "grandchild sleep {pid} survived the timeout");
});

kptest!(params_with_shell_metacharacters_arrive_literally, |dir| {
    dir.write(
        "wf.yaml",
        &format!(
            "{HEAD}spec:
  params:
    - {{name: msg}}
  steps:
    - id: as-argument
      phase: upgrade
      command: [sh, -c, 'printf \"%s\" \"$1\" > arg.txt', sh, \"{{{{params.msg}}}}\"]
    - id: inside-argument
      phase: upgrade
      command: [sh, -c, 'printf \"%s\" \"$1\" > inside.txt', sh, \"msg=<{{{{params.msg}}}}>\"]
    - id: as-env
      phase: upgrade
      script: |
        printf '%s' \"$PARAM_MSG\" > env.txt
"
        ),
    );
    let nasty = "$(touch pwned); `touch pwned2` | rm -rf x & echo \"q\" 'q' \\ ; *";
    dir.kp(&[
        "run",
        "wf.yaml",
        "--run-id",
        "r",
        "--param",
        &format!("msg={nasty}"),
    ])
    .expect(0);
    assert_eq!(dir.read("arg.txt"), nasty);
    assert_eq!(dir.read("inside.txt"), format!("msg=<{nasty}>"));
    assert_eq!(dir.read("env.txt"), nasty);
    assert!(!dir.exists("pwned") && !dir.exists("pwned2"));
});

kptest!(logs_show_what_a_step_printed, |dir| {
    dir.write(
        "wf.yaml",
        &format!("{HEAD}spec:\n  steps:\n    - {{id: say, phase: upgrade, script: \"echo hello-out; echo hello-err >&2\"}}\n"),
    );
    dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(0);
    let logs = dir.kp(&["logs", "r", "say"]).expect(0);
    assert_eq!(logs.stdout, "hello-out\n");
    assert_eq!(logs.stderr, "hello-err\n");
    let runs = dir.kp(&["runs", "-o", "json"]).expect(0);
    let runs: serde_json::Value = serde_json::from_str(&runs.stdout).expect("json");
    assert_eq!(runs[0]["id"], "r");
    assert_eq!(runs[0]["state"], "succeeded");
});

kptest!(graph_prints_dot_and_mermaid, |dir| {
    dir.write(
        "wf.yaml",
        &format!(
            "{HEAD}spec:\n  steps:\n    - {{id: a, phase: pre-check, command: [\"true\"]}}\n    - {{id: b, phase: upgrade, needs: [{{step: a, on: failure}}], command: [\"true\"]}}\n"
        ),
    );
    let dot = dir.kp(&["graph", "wf.yaml"]).expect(0);
    assert!(
        dot.stdout.contains("\"a\" -> \"b\" [color=red"),
        "{}",
        dot.stdout
    );
    let mermaid = dir
        .kp(&["graph", "wf.yaml", "--format", "mermaid"])
        .expect(0);
    assert!(mermaid.stdout.starts_with("flowchart LR"));
    assert!(
        mermaid.stdout.contains("s0 -- on failure --> s1"),
        "{}",
        mermaid.stdout
    );
});
