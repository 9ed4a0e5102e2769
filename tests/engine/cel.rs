//! One CEL environment for `when`, `check` and `trace`: kpilot's functions and JSON
//! integers everywhere, unknown names refused at validation, and expressions too long
//! or too deep refused with a message instead of crashing kpilot.

use crate::util::step_field;

const HEAD: &str = "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: t}\n";

/// A workflow whose step `a` runs `true` when `when`.
fn with_when(when: &str) -> String {
    format!(
        "{HEAD}spec:\n  steps:\n    - id: a\n      phase: upgrade\n      command: [\"true\"]\n      when: \"{when}\"\n"
    )
}

kptest!(validate_rejects_an_unknown_function_in_when, |dir| {
    dir.write("wf.yaml", &with_when("verison(params.to) == '1'"));
    let ran = dir.kp(&["validate", "wf.yaml"]).expect(2);
    assert!(
        ran.stderr.contains("wf.yaml")
            && ran.stderr.contains("step `a`, field `when`")
            && ran.stderr.contains("calls `verison()`"),
        "{}",
        ran.stderr
    );
    dir.write("wf.yaml", &with_when("param.to == '1'"));
    let ran = dir.kp(&["validate", "wf.yaml"]).expect(2);
    assert!(
        ran.stderr.contains("step `a`, field `when`")
            && ran.stderr.contains("reads `param`")
            && ran.stderr.contains("params and steps"),
        "{}",
        ran.stderr
    );
});

kptest!(when_does_integer_arithmetic_on_outputs_and_calls_v, |dir| {
    dir.write(
        "wf.yaml",
        &format!(
            "{HEAD}spec:
  params:
    - {{name: to, default: \"1.31\"}}
  steps:
    - id: probe
      phase: pre-check
      script: |
        echo '{{\"n\": 3, \"version\": \"v1.31.2-eks-1\"}}'
    - id: plus-one
      phase: upgrade
      needs: [probe]
      when: \"steps.probe.output.n + 1 == 4\"
      command: [touch, plus-one]
    - id: versions
      phase: upgrade
      needs: [probe]
      when: \"v(steps.probe.output.version) >= v(params.to) && minor(params.to) == 31\"
      command: [touch, versions]
    - id: too-old
      phase: upgrade
      needs: [probe]
      when: \"v(steps.probe.output.version) < v(params.to)\"
      command: [touch, too-old]
"
        ),
    );
    dir.kp(&["validate", "wf.yaml"]).expect(0);
    let ran = dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(0);
    let status = dir.status("r");
    assert_eq!(
        step_field(&status, "plus-one", "state"),
        "succeeded",
        "{}",
        ran.stdout
    );
    assert_eq!(step_field(&status, "versions", "state"), "succeeded");
    assert_eq!(step_field(&status, "too-old", "state"), "skipped");
    assert!(dir.exists("plus-one") && dir.exists("versions") && !dir.exists("too-old"));
});

/// `validate` of `when` refuses it with exit 2 and this in the message, without a
/// panic or a crash.
fn refused(dir: &crate::util::Dir, when: &str, expect: &str) {
    dir.write("wf.yaml", &with_when(when));
    let ran = dir.kp(&["validate", "wf.yaml"]);
    assert_eq!(
        ran.code,
        2,
        "exit {}; stderr starts: {}",
        ran.code,
        ran.stderr.chars().take(2000).collect::<String>()
    );
    assert!(
        ran.stderr.contains("step `a`, field `when`") && ran.stderr.contains(expect),
        "{}",
        ran.stderr.chars().take(2000).collect::<String>()
    );
    assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    // The message says what to do, and does not repeat the whole expression.
    assert!(ran.stderr.contains("split it"), "{}", ran.stderr);
    assert!(
        ran.stderr.len() < 4096,
        "{} bytes of stderr",
        ran.stderr.len()
    );
}

kptest!(a_when_of_7000_terms_is_refused_by_validate, |dir| {
    refused(&dir, &vec!["1"; 7000].join("+"), "too deep");
});

kptest!(a_sum_of_50000_terms_is_refused_by_validate, |dir| {
    refused(&dir, &vec!["1"; 50_000].join(" + "), "too long");
});

kptest!(seventy_thousand_nested_parentheses_are_refused, |dir| {
    let when = format!("{}1{}", "(".repeat(70_000), ")".repeat(70_000));
    refused(&dir, &when, "too long");
    let when = format!("{}1 == 1{}", "(".repeat(500), ")".repeat(500));
    refused(&dir, &when, "too deep");
});

kptest!(a_syntax_error_past_column_65535_is_refused, |dir| {
    let when = format!("params.{} ==", "x".repeat(70_000));
    refused(&dir, &when, "too long");
});

kptest!(a_7000_term_when_does_not_crash_run, |dir| {
    // Before the bounds, validation let it through and evaluating it overflowed the
    // stack, leaving the step before it recorded as running.
    let chain = vec!["1"; 7000].join("+");
    dir.write(
        "wf.yaml",
        &format!(
            "{HEAD}spec:\n  steps:\n    - {{id: first, phase: upgrade, command: [\"true\"]}}\n    - {{id: a, phase: upgrade, needs: [first], command: [\"true\"], when: \"{chain} > 0\"}}\n"
        ),
    );
    let ran = dir.kp(&["run", "wf.yaml", "--run-id", "r"]);
    assert_eq!(
        ran.code,
        2,
        "{}",
        ran.stderr.chars().take(2000).collect::<String>()
    );
    assert!(ran.stderr.contains("too deep"), "{}", ran.stderr);
    assert!(!dir.join("state/runs").exists(), "a run was written");
});
