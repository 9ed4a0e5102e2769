//! `kpilot report` in every format, read by the programs that consume each:
//! HTML in a real headless Chromium (through chromedriver and selenium),
//! JUnit by junitparser, Prometheus by prometheus_client's text-format
//! parser; and `kpilot report diff`. No cluster: the runs are seeded through
//! the binary (a workflow with passing, failing and skipped steps, and an
//! inspection of manifests), so the reports hold real checks and items.
//!
//! What the consumers need is installed by `scripts/test-tools`; a missing
//! piece fails the test naming it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::Dir;

/// A workflow of every kind of step outcome: passed, failed (a command, and
/// a check with an item whose text is HTML), skipped because its need
/// failed, skipped by its `when`, and a step whose severity is a label value
/// that needs escaping.
const WORKFLOW: &str = r#"apiVersion: kpilot/v1
kind: Workflow
metadata: {name: nightly}
spec:
  steps:
    - {id: prepare, phase: pre-check, command: ["true"]}
    - id: pods
      phase: pre-check
      check:
        query: {command: [cat, data/pods.json]}
        forEach: true
        expect: item.healthy
        message: "pod {{item.name}} is not healthy"
    - {id: migrate, phase: upgrade, needs: [prepare], command: [sh, -c, "echo migrating; exit 3"]}
    - {id: verify, phase: post-check, needs: [migrate], command: ["true"]}
    - {id: optional, phase: post-check, when: "false", command: ["true"]}
    - id: odd
      phase: patrol
      annotations: {kpilot.io/severity: 'say "hi" \ there'}
      command: ["true"]
"#;

/// What a message with markup would do if it were not escaped.
const INJECTED: &str = "<script>window.__xss=1</script>";

/// Seeds run `w1` of [`WORKFLOW`]; it fails (exit 1).
fn seed_workflow(dir: &Dir) {
    dir.write(
        "data/pods.json",
        &format!(
            r#"[{{"name": "web-1", "healthy": true}}, {{"name": "{INJECTED}", "healthy": false}}]"#
        ),
    );
    dir.write("wf.yaml", WORKFLOW);
    dir.kp(&["run", "wf.yaml", "--run-id", "w1"]).expect(1);
}

/// Seeds run `i1`: `inspect --scenario upgrade --to 1.16` of manifests, one
/// of which uses an API version 1.16 removed.
fn seed_inspection(dir: &Dir) {
    dir.write(
        "manifests/shop.yaml",
        "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec: {}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: shop}\nspec: {}\n",
    );
    dir.kp(&[
        "inspect",
        "--scenario",
        "upgrade",
        "--to",
        "1.16",
        "--no-cluster",
        "--manifests",
        "manifests",
        "--run-id",
        "i1",
    ])
    .expect(1);
}

/// The venv's Python, with every package the readers import; else the test
/// fails naming the script that installs them.
fn python() -> PathBuf {
    let venv = std::env::var_os("KPILOT_PYENV").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME is set");
            Path::new(&home).join(".cache/kpilot/pyenv")
        },
        PathBuf::from,
    );
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import selenium, junitparser, prometheus_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the Python venv {} with selenium, junitparser and prometheus-client is missing: run scripts/test-tools",
        venv.display()
    );
    python
}

/// Chromium and chromedriver, as Debian installs them.
fn browser() {
    for (program, package) in [
        ("chromium", "chromium"),
        ("chromedriver", "chromium-driver"),
    ] {
        assert!(
            crate::util::prereq::on_path(program),
            "`{program}` is not on PATH (Debian package {package}): run scripts/test-tools"
        );
    }
}

/// What tests/report/read.py saw reading `file` as `kind`.
fn read(kind: &str, args: &[&Path]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/report/read.py");
    let out = Command::new(python())
        .arg(script)
        .arg(kind)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "read.py {kind} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("read.py prints JSON")
}

/// Where artefacts of the tests are kept: the workspace's target directory.
fn artefact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&target).expect("target dir");
    target.join(name)
}

/// The `` `kpilot ...` `` command in `text`, as its arguments after `kpilot`.
fn printed_command(text: &str) -> Vec<String> {
    let start = text.find("`kpilot ").expect("a command") + "`kpilot ".len();
    let end = start + text[start..].find('`').expect("closing backtick");
    text[start..end].split(' ').map(str::to_owned).collect()
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|s| s.as_str().expect("a string"))
        .collect()
}

fn errors_in(log: &Value) -> Vec<&Value> {
    log.as_array()
        .expect("log")
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect()
}

kptest!(html_of_a_workflow_run_in_a_real_browser, |dir| {
    browser();
    seed_workflow(&dir);
    let ran = dir
        .kp(&["report", "w1", "-o", "html", "--output", "w1.html"])
        .expect(1);
    assert!(
        ran.stdout.is_empty(),
        "the page went to the file: {}",
        ran.stdout
    );
    let shot = artefact("report-html.png");
    let _ = std::fs::remove_file(&shot);
    let seen = read("html", &[&dir.join("w1.html"), &shot]);
    assert!(shot.exists(), "a screenshot is kept at {}", shot.display());

    let errors = errors_in(&seen["log"]);
    assert!(errors.is_empty(), "console errors: {errors:?}");
    assert_eq!(seen["title"], "kpilot report w1 · workflow nightly");
    assert_eq!(
        seen["cards"],
        serde_json::json!({"total": "6", "normal": "3", "warning": "0", "abnormal": "3"})
    );
    assert_eq!(strs(&seen["sections"]), ["Workflow phases"]);
    assert_eq!(
        seen["unreadable_counts"], 0,
        "a count drawn in its pill's colour"
    );
    let category = |id: &str| {
        let c = &seen["categories"][id];
        assert!(c.is_object(), "no category {id}: {seen:#}");
        (
            c["normal"].as_str().expect("n").to_owned(),
            c["warning"].as_str().expect("n").to_owned(),
            c["abnormal"].as_str().expect("n").to_owned(),
            strs(&c["checks"]).join(","),
        )
    };
    let row = |n: &str, w: &str, a: &str, checks: &str| {
        (n.to_owned(), w.to_owned(), a.to_owned(), checks.to_owned())
    };
    // Worst first within a category.
    assert_eq!(
        category("phases/pre-check"),
        row("1", "0", "1", "pods,prepare")
    );
    assert_eq!(category("phases/upgrade"), row("0", "0", "1", "migrate"));
    assert_eq!(
        category("phases/post-check"),
        row("1", "0", "1", "verify,optional")
    );
    assert_eq!(category("phases/patrol"), row("1", "0", "0", "odd"));
    assert_eq!(
        seen["outcomes"],
        serde_json::json!({"prepare": "passed", "pods": "failed", "migrate": "failed",
            "verify": "error", "optional": "passed", "odd": "passed"}),
        "skipped by its `when`: passed; skipped because its need failed: could not check"
    );
    // Abnormal categories first.
    let order: Vec<&str> = seen["categories"]
        .as_object()
        .expect("categories")
        .keys()
        .map(String::as_str)
        .collect();
    assert!(order.contains(&"phases/patrol"));
    let all = strs(&seen["visible_all"]);
    assert_eq!(all.len(), 6, "{all:?}");
    assert_eq!(
        all.last(),
        Some(&"odd"),
        "the category with nothing abnormal comes last: {all:?}"
    );
    // "Needs attention" hides what passed, "all" shows it again.
    assert_eq!(
        strs(&seen["visible_attention"]),
        ["verify", "pods", "migrate"]
    );
    assert_eq!(seen["visible_all_again"], seen["visible_all"]);
    // A failing check expands to its message, what to do and its items.
    assert_eq!(seen["expanded_check"], "pods");
    assert_eq!(seen["detail_shown_before"], false);
    assert_eq!(seen["detail_shown_after"], true);
    let detail = seen["detail_text"].as_str().expect("detail");
    assert!(
        detail.contains("`kpilot logs w1 pods` shows what the step printed"),
        "{detail}"
    );
    // Markup in a message is text, not markup.
    assert!(
        detail.contains(&format!("pod {INJECTED} is not healthy")),
        "{detail}"
    );
    assert_eq!(seen["xss"], Value::Null, "the message's script did not run");
    let page = dir.read("w1.html");
    assert!(!page.contains(INJECTED), "escaped in the file too");
    assert!(
        !page.contains("http://") && !page.contains("https://") && !page.contains("src="),
        "nothing is fetched: no link, no source"
    );

    // The commands the report prints for a person, exactly as printed.
    let json: Value =
        serde_json::from_str(&dir.kp(&["report", "w1", "-o", "json"]).expect(1).stdout)
            .expect("JSON");
    let remediation = |id: &str| {
        json["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["id"] == id)
            .expect("check")["remediation"]["text"]
            .as_str()
            .expect("text")
            .to_owned()
    };
    let logs = printed_command(&remediation("migrate"));
    assert_eq!(logs, ["logs", "w1", "migrate"]);
    let args: Vec<&str> = logs.iter().map(String::as_str).collect();
    assert!(dir.kp(&args).expect(0).stdout.contains("migrating"));
    let status = printed_command(&remediation("verify"));
    assert_eq!(status, ["status", "w1"]);
    let args: Vec<&str> = status.iter().map(String::as_str).collect();
    let shown = dir.kp(&args).expect(0);
    assert!(shown.stdout.contains("verify"), "{}", shown.stdout);
});

kptest!(html_of_an_inspection_in_a_real_browser, |dir| {
    browser();
    seed_inspection(&dir);
    dir.kp(&["report", "i1", "-o", "html", "--output", "i1.html"])
        .expect(1);
    let shot = artefact("report-html-inspection.png");
    let seen = read("html", &[&dir.join("i1.html"), &shot]);
    assert!(errors_in(&seen["log"]).is_empty(), "{:?}", seen["log"]);
    // Workloads are cluster resources; etcd a cluster component.
    assert_eq!(
        strs(&seen["sections"]),
        ["Cluster resources", "Cluster components"]
    );
    let apis = &seen["categories"]["workloads/apis"];
    assert_eq!(
        (&apis["normal"], &apis["warning"], &apis["abnormal"]),
        (&"1".into(), &"0".into(), &"1".into()),
        "{seen:#}"
    );
    assert_eq!(seen["categories"]["components/etcd"]["warning"], "1");
    assert_eq!(seen["expanded_check"], "removed-apis");
    let detail = seen["detail_text"].as_str().expect("detail");
    assert!(
        detail.contains("extensions/v1beta1 Deployment shop/web")
            && detail.contains("https://kubernetes.io/docs/reference/using-api/deprecation-guide/"),
        "the item's object and the remediation's link: {detail}"
    );
    assert!(!strs(&seen["visible_attention"]).contains(&"deprecated-apis"));
    assert!(strs(&seen["visible_all"]).contains(&"deprecated-apis"));
});

kptest!(junit_has_a_suite_per_category_and_a_case_per_item, |dir| {
    python();
    seed_workflow(&dir);
    seed_inspection(&dir);
    dir.kp(&["report", "w1", "-o", "junit", "--output", "w1.xml"])
        .expect(1);
    let seen = read("junit", &[&dir.join("w1.xml")]);
    let suites = seen["suites"].as_array().expect("suites");
    let names: Vec<&str> = suites
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "Post-check (phases/post-check)",
            "Pre-check (phases/pre-check)",
            "Upgrade (phases/upgrade)",
            "Patrol (phases/patrol)"
        ]
    );
    assert_eq!(
        (
            seen["tests"].as_u64(),
            seen["failures"].as_u64(),
            seen["errors"].as_u64()
        ),
        (Some(6), Some(2), Some(1))
    );
    let case = |suite: usize, name: &str| -> Value {
        suites[suite]["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no case {name} in {:#}", suites[suite]))
            .clone()
    };
    // The failing item of `pods` is a case of its own, with message and remediation.
    let pods = case(1, &format!("pods: pod {INJECTED} is not healthy"));
    assert_eq!(pods["classname"], "phases/pre-check");
    let failure = &pods["results"][0];
    assert_eq!(failure["kind"], "failure");
    assert_eq!(failure["message"], format!("pod {INJECTED} is not healthy"));
    assert!(
        failure["text"].as_str().is_some_and(
            |t| t.contains("what to do: `kpilot logs w1 pods` shows what the step printed")
        ),
        "{failure:#}"
    );
    assert_eq!(
        case(1, "prepare: step prepare (command)")["results"],
        serde_json::json!([])
    );
    assert_eq!(
        case(2, "migrate: step migrate (command)")["results"][0]["kind"],
        "failure"
    );
    assert_eq!(
        case(0, "verify: step verify (command)")["results"][0]["kind"],
        "error"
    );
    assert_eq!(
        case(0, "optional: step optional (command)")["results"],
        serde_json::json!([])
    );

    dir.kp(&["report", "i1", "-o", "junit", "--output", "i1.xml"])
        .expect(1);
    let seen = read("junit", &[&dir.join("i1.xml")]);
    let suites = seen["suites"].as_array().expect("suites");
    let apis = suites
        .iter()
        .find(|s| s["name"] == "API versions (workloads/apis)")
        .expect("the API versions suite");
    let removed = apis["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == "removed-apis: Deployment shop/web")
        .expect("a case for the object");
    assert_eq!(removed["results"][0]["kind"], "failure");
    assert!(removed["results"][0]["text"]
        .as_str()
        .is_some_and(|t| t.contains("object: extensions/v1beta1 Deployment shop/web")));
    let etcd = suites
        .iter()
        .find(|s| s["name"] == "etcd (components/etcd)")
        .expect("etcd");
    assert_eq!(etcd["failures"], 0, "a warning does not fail the suite");
    assert!(etcd["cases"][0]["system_out"]
        .as_str()
        .is_some_and(|t| t.starts_with("warning: ")));
});

kptest!(prometheus_metrics_parse_with_the_real_parser, |dir| {
    python();
    seed_workflow(&dir);
    let ran = dir.kp(&["report", "w1", "-o", "prometheus"]).expect(1);
    dir.write("w1.prom", &ran.stdout);
    for family in [
        "kpilot_check_failed",
        "kpilot_check_error",
        "kpilot_check_failing_items",
        "kpilot_report_checks",
        "kpilot_report_timestamp_seconds",
    ] {
        for what in ["HELP", "TYPE"] {
            let lines = ran
                .stdout
                .lines()
                .filter(|l| l.starts_with(&format!("# {what} {family} ")))
                .count();
            assert_eq!(lines, 1, "{what} of {family} once: {}", ran.stdout);
        }
    }
    let seen = read("prometheus", &[&dir.join("w1.prom")]);
    let families = seen.as_array().expect("families");
    let names: Vec<&str> = families
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "kpilot_check_failed",
            "kpilot_check_error",
            "kpilot_check_failing_items",
            "kpilot_report_checks",
            "kpilot_report_timestamp_seconds"
        ]
    );
    assert!(families.iter().all(|f| f["type"] == "gauge"));
    let value = |family: &str, labels: Value| -> f64 {
        families
            .iter()
            .find(|f| f["name"] == family)
            .expect("family")["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .find(|s| {
                labels
                    .as_object()
                    .expect("labels")
                    .iter()
                    .all(|(k, v)| s["labels"][k] == *v)
            })
            .unwrap_or_else(|| panic!("no sample of {family} with {labels}"))["value"]
            .as_f64()
            .expect("a number")
    };
    let pods =
        serde_json::json!({"check": "pods", "category": "phases/pre-check", "severity": "error"});
    assert_eq!(value("kpilot_check_failed", pods.clone()), 1.0);
    assert_eq!(value("kpilot_check_error", pods.clone()), 0.0);
    assert_eq!(value("kpilot_check_failing_items", pods), 1.0);
    assert_eq!(
        value("kpilot_check_error", serde_json::json!({"check": "verify"})),
        1.0
    );
    assert_eq!(
        value(
            "kpilot_check_failed",
            serde_json::json!({"check": "prepare"})
        ),
        0.0
    );
    // A label value with a quote and a backslash comes back as it was.
    let odd = serde_json::json!({"check": "odd", "severity": "say \"hi\" \\ there"});
    assert_eq!(value("kpilot_check_failed", odd), 0.0);
    for (outcome, n) in [
        ("passed", 3.0),
        ("warning", 0.0),
        ("failed", 2.0),
        ("error", 1.0),
    ] {
        assert_eq!(
            value(
                "kpilot_report_checks",
                serde_json::json!({"outcome": outcome})
            ),
            n
        );
    }
    let json: Value =
        serde_json::from_str(&dir.kp(&["report", "w1", "-o", "json"]).expect(1).stdout)
            .expect("JSON");
    let time = json["time"].as_str().expect("time");
    let at = value("kpilot_report_timestamp_seconds", serde_json::json!({}));
    let year = 1970.0 + at / (365.2425 * 86400.0);
    assert_eq!(
        year.floor().to_string(),
        time[..4],
        "the timestamp is the run's start ({time})"
    );
});

kptest!(output_files_are_written_whole_and_bad_ones_named, |dir| {
    seed_workflow(&dir);
    std::fs::create_dir_all(dir.join("out")).expect("dir");
    dir.write("out/w1.json", "old");
    let ran = dir
        .kp(&["report", "w1", "-o", "json", "--output", "out/w1.json"])
        .expect(1);
    assert!(ran.stdout.is_empty());
    assert!(
        ran.stderr.contains("kpilot: wrote out/w1.json"),
        "{}",
        ran.stderr
    );
    let json: Value = serde_json::from_str(&dir.read("out/w1.json")).expect("the whole report");
    assert_eq!(json["runId"], "w1");
    let left: Vec<_> = std::fs::read_dir(dir.join("out"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["w1.json"], "no temporary file left");
    let bad = dir
        .kp(&["report", "w1", "--output", "no/such/dir/w1.txt"])
        .expect(2);
    assert!(
        bad.stderr
            .contains("--output no/such/dir/w1.txt: cannot write"),
        "{}",
        bad.stderr
    );
    let unknown = dir.kp(&["report", "w1", "-o", "pdf"]).expect(2);
    assert!(
        unknown.stderr.contains("html"),
        "the formats are named: {}",
        unknown.stderr
    );
});

kptest!(
    report_diff_names_new_resolved_and_persisting_findings,
    |dir| {
        crate::inspect::own_report(&dir);
        let inspect = |id: &str, code: i32| {
            dir.kp(&[
                "inspect",
                "--scenario",
                "patrol",
                "--no-cluster",
                "--report",
                "r.yaml",
                "--run-id",
                id,
            ])
            .expect(code);
        };
        // Before: a pod is unhealthy (failed) and /var is full (a warning).
        dir.write(
        "data/pods.json",
        r#"[{"metadata": {"namespace": "shop", "name": "web-2"}, "kind": "Pod", "apiVersion": "v1", "healthy": false}]"#,
    );
        dir.write("data/disks.json", r#"[{"name": "/var", "used": 91}]"#);
        inspect("before", 1);
        // After: the pod was fixed, /var is still full, and the inventory script
        // now answers with no version: new.
        dir.write(
        "data/pods.json",
        r#"[{"metadata": {"namespace": "shop", "name": "web-2"}, "kind": "Pod", "apiVersion": "v1", "healthy": true}]"#,
    );
        dir.write("data/version.json", r#"{"version": ""}"#);
        inspect("after", 1);

        let ran = dir
            .kp(&["report", "diff", "before", "after", "-o", "json"])
            .expect(1);
        let c: Value = serde_json::from_str(&ran.stdout).expect("JSON");
        assert_eq!(
            (&c["before"], &c["after"]),
            (&"before".into(), &"after".into())
        );
        let keys = |list: &str| -> Vec<String> {
            c[list]
                .as_array()
                .expect("list")
                .iter()
                .map(|f| f["key"].as_str().expect("key").to_owned())
                .collect()
        };
        assert_eq!(keys("new"), ["version-known"], "{c:#}");
        assert_eq!(keys("resolved"), ["pods-healthy|Pod/shop/web-2"]);
        assert_eq!(keys("persisting"), ["disk-room|/var is 91% full"]);
        assert_eq!(c["resolved"][0]["outcome"], "failed");

        let text = dir.kp(&["report", "diff", "before", "after"]).expect(1);
        assert!(
            text.stdout.contains("1 new, 1 resolved, 1 persisting")
                && text.stdout.contains("+ version-known")
                && text
                    .stdout
                    .contains("- pods-healthy · failed · Pod shop/web-2")
                && text.stdout.contains("= disk-room"),
            "{}",
            text.stdout
        );
        dir.kp(&[
            "report", "diff", "before", "after", "-o", "html", "--output", "d.html",
        ])
        .expect(1);
        let page = dir.read("d.html");
        assert!(
            page.contains("data-key=\"version-known\"") && page.contains("New (1)"),
            "{page}"
        );
        // Nothing new: exit 0, even though something still fails.
        let same = dir.kp(&["report", "diff", "after", "after"]).expect(0);
        assert!(
            same.stdout.contains("0 new, 0 resolved, 2 persisting"),
            "{}",
            same.stdout
        );
        // Backwards, the pod's problem is new again.
        dir.kp(&["report", "diff", "after", "before"]).expect(1);
        let missing = dir.kp(&["report", "diff", "before", "nope"]).expect(2);
        assert!(
            missing.stderr.contains("no run `nope`"),
            "{}",
            missing.stderr
        );
    }
);
