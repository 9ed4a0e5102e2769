//! A corpus of invalid workflows (`tests/invalid/*.yaml`): each is rejected by
//! `validate` and `run` with exit 2, a message naming its problem, and nothing
//! written to the state directory.

kptest!(invalid_workflows_are_rejected_with_their_problem, |dir| {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 15, "the corpus has {} files", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let expect: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expect.is_empty(),
            "{} has no `# expect:` line",
            file.display()
        );
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        dir.write(&name, &text);
        for verb in ["validate", "run"] {
            let ran = dir.kp(&[verb, &name]);
            assert_eq!(
                ran.code, 2,
                "{verb} {name}: exit {}\n{}",
                ran.code, ran.stderr
            );
            assert!(
                ran.stderr.contains(&name),
                "{verb} {name}: the message does not name the file:\n{}",
                ran.stderr
            );
            for e in &expect {
                assert!(
                    ran.stderr.contains(e),
                    "{verb} {name}: expected `{e}` in:\n{}",
                    ran.stderr
                );
            }
            assert!(
                !ran.stderr.contains("panicked"),
                "{verb} {name} panicked:\n{}",
                ran.stderr
            );
        }
        assert!(
            !dir.join("state/runs").exists(),
            "{name}: `run` wrote to the state directory"
        );
    }
});

kptest!(validate_json_lists_problems, |dir| {
    dir.write("bad.yaml", "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: x}\nspec:\n  steps:\n    - {id: a, phase: upgrade, command: [\"true\"], needs: [ghost]}\n");
    let ran = dir.kp(&["validate", "bad.yaml", "-o", "json"]).expect(2);
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).expect("json");
    assert_eq!(json["valid"], false);
    assert_eq!(json["problems"][0]["step"], "a");
    assert_eq!(json["problems"][0]["field"], "needs");
    assert_eq!(json["problems"][0]["line"], 6);
});

kptest!(bad_params_are_rejected_before_anything_is_written, |dir| {
    dir.write("wf.yaml", "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: x}\nspec:\n  params:\n    - {name: to}\n  steps:\n    - {id: a, phase: upgrade, command: [echo, \"{{params.to}}\"]}\n");
    let ran = dir.kp(&["run", "wf.yaml"]).expect(2);
    assert!(
        ran.stderr.contains("param `to` has no default"),
        "{}",
        ran.stderr
    );
    let ran = dir
        .kp(&["run", "wf.yaml", "-p", "to=1.16", "-p", "form=1.15"])
        .expect(2);
    assert!(
        ran.stderr.contains("unknown param `form`"),
        "{}",
        ran.stderr
    );
    let ran = dir.kp(&["run", "wf.yaml", "-p", "to"]).expect(2);
    assert!(ran.stderr.contains("NAME=VALUE"), "{}", ran.stderr);
    assert!(!dir.join("state/runs").exists());
    dir.kp(&["status", "nope"]).expect(2);
});

/// A workflow whose step `a` (line 6) has `fields`, and a phase and a body
/// unless `fields` gives them.
fn one_step(fields: &str) -> String {
    let phase = if fields.contains("phase:") {
        ""
    } else {
        "phase: upgrade, "
    };
    let has_body = ["gate:", "approval:", "script:", "check:"]
        .iter()
        .any(|b| fields.contains(b));
    let body = if has_body {
        ""
    } else {
        "command: [\"true\"], "
    };
    format!("apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {{name: x}}\nspec:\n  steps:\n    - {{id: a, {phase}{body}{fields}}}\n    - {{id: fix, phase: repair, command: [\"true\"]}}\n")
}

kptest!(wrong_types_are_said_in_the_users_words, |dir| {
    // (fields of step `a`, the field the message must name)
    let cases: &[(&str, &str)] = &[
        ("when: 1", "when"),
        ("timeout: 1", "timeout"),
        ("timeout: [1s]", "timeout"),
        ("executor: 1", "executor"),
        ("repair: 1", "repair"),
        ("repair: [fix]", "repair"),
        ("idempotent: 1", "idempotent"),
        ("idempotent: \"yes\"", "idempotent"),
        ("needs: 1", "needs"),
        ("needs: [1]", "needs"),
        ("needs: [{step: 1}]", "needs"),
        ("needs: [{step: fix, on: 1}]", "needs"),
        ("needs: [{step: fix, of: failure}]", "needs"),
        ("needs: [{on: failure}]", "needs"),
        ("phase: 1", "phase"),
        ("phase: [upgrade]", "phase"),
        ("retry: 3", "retry"),
        ("retry: {}", "retry.limit"),
        ("retry: {limit: -1}", "retry.limit"),
        ("retry: {limit: 1.5}", "retry.limit"),
        ("retry: {limit: x}", "retry.limit"),
        ("retry: {limit: 2, backoff: 1s}", "retry.backoff"),
        (
            "retry: {limit: 2, backoff: {initial: 1}}",
            "retry.backoff.initial",
        ),
        (
            "retry: {limit: 2, backoff: {factor: fast}}",
            "retry.backoff.factor",
        ),
        (
            "retry: {limit: 2, backoff: {factr: 2}}",
            "retry.backoff.factr",
        ),
        ("retry: {limit: 2, tries: 3}", "retry.tries"),
        ("retries: 3", "retries"),
        ("executor: per-node, nodes: 3", "nodes"),
        ("executor: per-node, nodes: {selector: 1}", "nodes.selector"),
        (
            "executor: per-node, nodes: {selector: \"a in (b\"}",
            "nodes.selector",
        ),
        (
            "executor: per-node, nodes: {maxParallel: -1}",
            "nodes.maxParallel",
        ),
        (
            "executor: per-node, nodes: {maxFailures: x}",
            "nodes.maxFailures",
        ),
        ("executor: per-node, nodes: {max: 1}", "nodes.max"),
        ("gate: 1", "gate"),
        ("approval: 1", "approval"),
        ("script: 1", "script"),
        ("script: {source: x, shell: sh}", "script"),
        (
            "check: {query: cluster.nodes, expect: 'true', bogus: 1}",
            "check",
        ),
    ];
    let forbidden = [
        "String(",
        "Value::",
        "struct ",
        "ParseError",
        "Tagged",
        "invalid type",
        "expected a",
        "variant",
    ];
    for (i, (fields, field)) in cases.iter().enumerate() {
        let name = format!("t{i}.yaml");
        dir.write(&name, &one_step(fields));
        let ran = dir.kp(&["validate", &name]);
        assert_eq!(ran.code, 2, "{fields}: exit {}\n{}", ran.code, ran.stderr);
        for f in forbidden {
            assert!(
                !ran.stderr.contains(f),
                "{fields}: the message shows `{f}`:\n{}",
                ran.stderr
            );
        }
        assert!(
            ran.stderr
                .contains(&format!("{name}:6: step `a`, field `{field}`")),
            "{fields}: the message does not name the line, step `a` and field `{field}`:\n{}",
            ran.stderr
        );
    }
    // Outside the steps: the field is named as written, with its line.
    let top: &[(&str, &str)] = &[
        ("metadata: {name: x}\nspec:\n  concurrency: many\n  steps: [{id: a, phase: upgrade, gate: {}}]\n", "spec.concurrency"),
        ("metadata: {name: 7}\nspec:\n  steps: [{id: a, phase: upgrade, gate: {}}]\n", "metadata.name"),
        ("metadata: {name: x, labels: {}}\nspec:\n  steps: [{id: a, phase: upgrade, gate: {}}]\n", "metadata.labels"),
        ("metadata: {name: x}\nspec:\n  inventory: [a]\n  steps: [{id: a, phase: upgrade, gate: {}}]\n", "spec.inventory"),
        ("metadata: {name: x}\nspec:\n  params: [{name: p, default: [1]}]\n  steps: [{id: a, phase: upgrade, gate: {}}]\n", "spec.params[p]"),
        ("metadata: {name: x}\nspec:\n  executors: [{name: e, perNode: yes}]\n  steps: [{id: a, phase: upgrade, gate: {}}]\n", "spec.executors[e].perNode"),
        ("metadata: {name: x}\nspec:\n  executors: [{name: e, concurrency: 0}]\n  steps: [{id: a, phase: upgrade, gate: {}}]\n", "spec.executors[e].concurrency"),
        ("metadata: {name: x}\nspec:\n  steps: {a: 1}\n", "spec.steps"),
    ];
    for (i, (rest, field)) in top.iter().enumerate() {
        let name = format!("top{i}.yaml");
        dir.write(
            &name,
            &format!("apiVersion: kpilot/v1\nkind: Workflow\n{rest}"),
        );
        let ran = dir.kp(&["validate", &name]);
        assert_eq!(ran.code, 2, "{rest}: exit {}\n{}", ran.code, ran.stderr);
        for f in forbidden {
            assert!(
                !ran.stderr.contains(f),
                "{rest}: the message shows `{f}`:\n{}",
                ran.stderr
            );
        }
        assert!(
            ran.stderr.contains(&format!("field `{field}`"))
                && ran.stderr.contains(&format!("{name}:")),
            "{rest}: the message does not name field `{field}` and a line:\n{}",
            ran.stderr
        );
    }
});

kptest!(merge_keys_are_applied, |dir| {
    dir.write(
        "wf.yaml",
        "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: x}\nspec:\n  steps:\n    - &base {id: a, phase: upgrade, command: [\"true\"], timeout: 5s}\n    - {<<: *base, id: b, needs: [a]}\n",
    );
    let ran = dir.kp(&["validate", "-o", "json", "wf.yaml"]).expect(0);
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).expect("json");
    assert_eq!(json["steps"][1]["id"], "b");
    assert_eq!(json["steps"][1]["phase"], "upgrade");
});

kptest!(a_script_with_a_param_template_is_warned_about, |dir| {
    dir.write(
        "wf.yaml",
        "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: x}\nspec:\n  params:\n    - {name: to-version, default: \"1.16\"}\n  steps:\n    - id: a\n      phase: upgrade\n      script: |\n        echo {{params.to-version}} {{ params.to-version }}\n",
    );
    let warning =
        "wf.yaml:8: step `a`, field `script`: `{{params.to-version}}` in a script is not replaced";
    let ran = dir.kp(&["validate", "wf.yaml"]).expect(0);
    assert!(ran.stderr.contains(warning), "{}", ran.stderr);
    assert!(ran.stderr.contains("$PARAM_TO_VERSION"), "{}", ran.stderr);
    assert_eq!(
        ran.stderr.matches("is not replaced").count(),
        1,
        "{}",
        ran.stderr
    );
    let json = dir.kp(&["validate", "-o", "json", "wf.yaml"]).expect(0);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(json["warnings"][0]["field"], "script");
    let ran = dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(0);
    assert!(ran.stderr.contains(warning), "{}", ran.stderr);
});

kptest!(
    an_unknown_need_among_10000_steps_suggests_at_most_three,
    |dir| {
        let mut text = String::from(
            "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: x}\nspec:\n  steps:\n",
        );
        for i in 0..10_000 {
            text.push_str(&format!(
                "    - {{id: s{i}, phase: upgrade, gate: {{}}, needs: [ghost-{i}]}}\n"
            ));
        }
        dir.write("big.yaml", &text);
        let ran = dir.kp(&["validate", "big.yaml"]).expect(2);
        let lines: Vec<&str> = ran.stderr.lines().collect();
        assert_eq!(lines.len(), 10_000, "one line per problem");
        assert!(
            lines.iter().all(|l| l.len() < 300),
            "a line is long: {}",
            lines.iter().map(|l| l.len()).max().unwrap_or(0)
        );
        assert!(
            ran.stderr
                .contains("step `s1`, field `needs`: needs `ghost-1`"),
            "{}",
            &ran.stderr[..2000.min(ran.stderr.len())]
        );
    }
);

kptest!(a_bad_inventory_is_refused_before_a_run_is_written, |dir| {
    dir.write("wf.yaml", "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: x}\nspec:\n  steps:\n    - {id: a, phase: upgrade, executor: per-node, command: [\"true\"]}\n");
    dir.write(
        "inv.yaml",
        "tokenFile: token\nagents: [{name: n1, address: nowhere}]\n",
    );
    for verb in ["validate", "run"] {
        let ran = dir
            .kp(&[verb, "wf.yaml", "--inventory", "inv.yaml"])
            .expect(2);
        assert!(ran.stderr.contains("inv.yaml"), "{verb}: {}", ran.stderr);
        let ran = dir
            .kp(&[verb, "wf.yaml", "--inventory", "missing.yaml"])
            .expect(2);
        assert!(
            ran.stderr.contains("missing.yaml"),
            "{verb}: {}",
            ran.stderr
        );
    }
    // spec.inventory, read by the per-node step, is checked as well.
    dir.write("wf2.yaml", "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: x}\nspec:\n  inventory: missing.yaml\n  steps:\n    - {id: a, phase: upgrade, executor: per-node, command: [\"true\"]}\n");
    let ran = dir.kp(&["run", "wf2.yaml"]).expect(2);
    assert!(ran.stderr.contains("missing.yaml"), "{}", ran.stderr);
    assert!(!dir.join("state/runs").exists(), "a run was written");
});
