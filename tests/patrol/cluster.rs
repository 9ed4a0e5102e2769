//! On the shared test cluster: a patrol of a Report whose check is scoped to
//! a namespace of the test's own; a problem seeded between two patrols is
//! new in the second, resolved after the fix in the third, and the notifier
//! (a command writing its stdin to a file) receives both.

use serde_json::{json, Value};

use crate::cluster::{kp, kubeconfig, kubectl, unique, Created};
use crate::util::Dir;

fn once(dir: &Dir) -> crate::util::Ran {
    let kubeconfig = kubeconfig().display().to_string();
    kp(
        dir,
        &[
            "patrol",
            "patrol.yaml",
            "--once",
            "--kubeconfig",
            &kubeconfig,
        ],
    )
}

fn notes(dir: &Dir) -> Vec<Value> {
    dir.read("notes.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a notification is JSON"))
        .collect()
}

fn keys(findings: &Value) -> Vec<String> {
    findings
        .as_array()
        .expect("a list of findings")
        .iter()
        .map(|f| f["key"].as_str().unwrap_or("").to_owned())
        .collect()
}

kptest!(
    a_seeded_problem_is_new_then_resolved_and_notified_both_times,
    |dir| {
        let mut created = Created::default();
        let ns = unique("patrol");
        created.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        let report = json!({
            "apiVersion": "kpilot/v1",
            "kind": "Report",
            "metadata": {"name": "scoped"},
            "spec": {
                "clusterType": "self-hosted",
                "select": {"ids": ["statefulsets-ready"]},
                "overrides": [{"check": "statefulsets-ready", "params": {"namespace": ns}}],
            },
        });
        dir.write("report.yaml", &report.to_string());
        // Writes each notification as one line.
        dir.write("notify.sh", "#!/bin/sh\n{ cat; echo; } >> notes.jsonl\n");
        std::process::Command::new("chmod")
            .args(["+x", &dir.join("notify.sh").display().to_string()])
            .status()
            .expect("chmod");
        // A webhook nobody answers: it fails, is logged and counted, and never
        // fails the patrol.
        dir.write(
        "patrol.yaml",
        "apiVersion: kpilot/v1\nkind: Patrol\nmetadata: {name: cluster}\nspec:\n  schedules:\n    - {name: workloads, cron: \"*/2 * * * * *\", report: report.yaml}\n  notify: {command: [./notify.sh], webhook: \"http://127.0.0.1:9/hook\", retries: 1}\n",
    );

        let first = once(&dir);
        assert_eq!(first.code, 0, "{}", first.stderr);
        assert!(
            notes(&dir).is_empty(),
            "nothing was wrong yet: {:#?}",
            notes(&dir)
        );

        // The problem: a StatefulSet short of its replica (its pod is held by a
        // scheduling gate, so it never becomes ready).
        created.create(json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {
            "replicas": 1,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"schedulingGates": [{"name": "kpilot.dev/hold"}], "containers": [{"name": "db", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }));
        let second = once(&dir);
        assert_eq!(second.code, 1, "the check fails: {}", second.stderr);
        let key = format!("statefulsets-ready|StatefulSet/{ns}/db");
        let got = notes(&dir);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(keys(&got[0]["new"]), vec![key.clone()], "{:#}", got[0]);
        assert!(got[0]["resolved"].as_array().expect("resolved").is_empty());
        assert_eq!(got[0]["patrol"], "cluster");
        assert_eq!(got[0]["schedule"], "workloads");
        assert!(got[0]["previousRun"].is_string(), "{:#}", got[0]);
        assert!(
            second.stderr.contains("notifier failed"),
            "the webhook failed: {}",
            second.stderr
        );

        // The fix: no replica wanted, none missing.
        kubectl(
            &["scale", "statefulset", "db", "-n", &ns, "--replicas=0"],
            None,
        );
        let third = once(&dir);
        assert_eq!(third.code, 0, "{}", third.stderr);
        let got = notes(&dir);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert_eq!(keys(&got[1]["resolved"]), vec![key], "{:#}", got[1]);
        assert!(got[1]["new"].as_array().expect("new").is_empty());
        assert_eq!(got[1]["previousRun"], got[0]["run"]);
    }
);

kptest!(the_shipped_patrol_runs_once_on_the_test_cluster, |dir| {
    // workflows/patrol/patrol.yaml (the one deploy/patrol ships in its
    // ConfigMap): valid, and its Report patrols the whole shared cluster.
    let file = crate::cluster::root().join("workflows/patrol/patrol.yaml");
    let kubeconfig = kubeconfig().display().to_string();
    let ran = kp(
        &dir,
        &[
            "patrol",
            &file.display().to_string(),
            "--once",
            "--kubeconfig",
            &kubeconfig,
        ],
    );
    // Other tests' objects may be abnormal (exit 1); the file is valid and
    // every check ran (not 2, not 3, not 4).
    assert!(
        ran.code == 0 || ran.code == 1,
        "exit {}\n{}",
        ran.code,
        ran.stderr
    );
    let all = super::patrols(&dir);
    let schedule = &all[0]["schedules"][0];
    assert!(schedule["lastOutcome"].is_string(), "{all}");
    let run = schedule["slots"][0]["run"]
        .as_str()
        .expect("the slot's run");
    let report = dir.kp(&["report", run, "-o", "json"]);
    let report: Value = serde_json::from_str(&report.stdout).expect("report JSON");
    assert_eq!(report["scenario"], "patrol", "{report}");
    assert!(
        report["checks"].as_array().is_some_and(|c| c.len() > 10),
        "{report}"
    );
});
