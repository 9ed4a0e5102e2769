//! `kpilot inspect`, `catalog` and `report` without a cluster: checks of the
//! user's own (command drivers) chosen by a `kind: Report`, the report's
//! JSON and text, exit codes, the commands kpilot prints, bad input, and the
//! shipped catalog's listing and docs.

mod catalog;
mod cloud;
pub mod plan;

use crate::util::Dir;

/// A Report holding checks of its own that read `data/NAME.json` through a
/// command: what the test writes there is the "cluster".
pub const OWN: &str = r#"apiVersion: kpilot/v1
kind: Report
metadata: {name: own}
spec:
  clusterType: self-hosted
  select: {ids: [pods-healthy, disk-room, version-known, own-nodes-ready]}
  overrides:
    - {check: disk-room, severity: warning}
---
apiVersion: kpilot/v1
kind: Check
metadata: {name: pods-healthy, labels: {team: sre}}
title: Every pod is healthy
category: workloads/availability
appliesTo: {scenarios: [patrol, upgrade-pre]}
params: [{name: file, default: data/pods.json}]
check:
  query: {command: [cat, "{{params.file}}"]}
  forEach: true
  expect: item.healthy
  message: "pod {{item.metadata.namespace}}/{{item.metadata.name}} is not healthy"
remediation: {text: "Describe the pod and read its events.", url: "https://kubernetes.io/docs/tasks/debug/debug-application/debug-pods/"}
---
apiVersion: kpilot/v1
kind: Check
metadata: {name: disk-room}
title: Disks have room
category: cluster-resources/nodes
appliesTo: {scenarios: [patrol]}
check:
  query: {command: [cat, data/disks.json]}
  forEach: true
  expect: "item.used < 80"
  message: "{{item.name}} is {{item.used}}% full"
remediation: {text: "Free space.", url: "https://kubernetes.io/docs/concepts/scheduling-eviction/node-pressure-eviction/"}
---
apiVersion: kpilot/v1
kind: Check
metadata: {name: version-known}
title: The inventory script answers
category: cluster-resources/cloud
appliesTo: {scenarios: [patrol]}
check:
  query: {command: [sh, -c, "cat data/version.json || exit 3"]}
  expect: "data.version != ''"
remediation: {text: "Fix the script.", url: "https://kubernetes.io/docs/reference/"}
---
apiVersion: kpilot/v1
kind: Check
metadata: {name: own-nodes-ready}
title: Nodes are Ready (reads the cluster)
category: cluster-resources/nodes
appliesTo: {scenarios: [patrol]}
check: {query: cluster.nodes, forEach: true, expect: item.ready}
remediation: {text: "x", url: "https://kubernetes.io/docs/concepts/architecture/nodes/"}
"#;

/// Writes the report and healthy data; returns the report's path.
pub fn own_report(dir: &Dir) -> String {
    dir.write(
        "data/pods.json",
        r#"[{"metadata": {"namespace": "shop", "name": "web-1"}, "kind": "Pod", "apiVersion": "v1", "healthy": true},
            {"metadata": {"namespace": "shop", "name": "web-2"}, "kind": "Pod", "apiVersion": "v1", "healthy": true}]"#,
    );
    dir.write("data/disks.json", r#"[{"name": "/var", "used": 40}]"#);
    dir.write("data/version.json", r#"{"version": "1.2"}"#);
    dir.write("r.yaml", OWN).display().to_string()
}

/// The run id `inspect` printed on standard error.
pub fn run_id(stderr: &str) -> String {
    let at = stderr
        .find("kpilot: inspection ")
        .expect("inspect names its run");
    stderr[at + "kpilot: inspection ".len()..]
        .split(':')
        .next()
        .expect("id")
        .to_owned()
}

/// A check of the report JSON, by id.
pub fn check<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

kptest!(
    a_patrol_with_own_checks_reports_by_category_and_exit_code,
    |dir| {
        own_report(&dir);
        dir.write(
        "data/pods.json",
        r#"[{"metadata": {"namespace": "shop", "name": "web-1"}, "kind": "Pod", "apiVersion": "v1", "healthy": true},
            {"metadata": {"namespace": "shop", "name": "web-2"}, "kind": "Pod", "apiVersion": "v1", "healthy": false}]"#,
    );
        dir.write(
            "data/disks.json",
            r#"[{"name": "/var", "used": 91}, {"name": "/", "used": 10}]"#,
        );
        let ran = dir
            .kp(&[
                "inspect",
                "--scenario",
                "patrol",
                "--no-cluster",
                "--report",
                "r.yaml",
                "-o",
                "json",
            ])
            .expect(1);
        let report: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON report");
        assert_eq!(report["schemaVersion"], 1);
        assert_eq!(report["scenario"], "patrol");
        assert_eq!(report["cluster"]["type"], "self-hosted");
        assert_eq!(report["cluster"]["server"], "");
        assert_eq!(report["runId"], run_id(&ran.stderr));
        assert_eq!(
            report["summary"],
            serde_json::json!({"passed": 1, "warning": 1, "failed": 1, "error": 0}),
            "{report:#}"
        );
        let pods = check(&report, "pods-healthy");
        assert_eq!(pods["outcome"], "failed");
        assert_eq!(pods["severity"], "error");
        assert_eq!(pods["category"], "workloads/availability");
        assert_eq!(pods["title"], "Every pod is healthy");
        assert_eq!(
            pods["remediation"]["text"],
            "Describe the pod and read its events."
        );
        assert!(pods["remediation"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")));
        let items = pods["items"].as_array().expect("items");
        assert_eq!(items.len(), 1, "only the failing pod: {items:?}");
        assert_eq!(items[0]["outcome"], "failed");
        assert_eq!(items[0]["message"], "pod shop/web-2 is not healthy");
        assert_eq!(
            items[0]["object"],
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "web-2"})
        );
        let disks = check(&report, "disk-room");
        assert_eq!(
            disks["outcome"], "warning",
            "the report overrode its severity"
        );
        assert_eq!(disks["items"][0]["message"], "/var is 91% full");
        assert_eq!(check(&report, "version-known")["outcome"], "passed");
        assert!(
            report["checks"]
                .as_array()
                .expect("checks")
                .iter()
                .all(|c| c["id"] != "own-nodes-ready"),
            "a check that reads the cluster is left out with --no-cluster"
        );
        // Categories: abnormal first.
        let categories: Vec<&str> = report["categories"]
            .as_array()
            .expect("categories")
            .iter()
            .map(|c| c["id"].as_str().expect("id"))
            .collect();
        assert_eq!(categories[0], "workloads/availability", "{categories:?}");
        assert_eq!(report["categories"][0]["failed"], 1);

        // The commands kpilot printed, exactly as printed.
        let id = run_id(&ran.stderr);
        let printed = format!("`kpilot report {id}` prints this report again; `kpilot resume {id}` checks again what did not pass");
        assert!(ran.stderr.contains(&printed), "{}", ran.stderr);
        let text = dir.kp(&["report", &id]).expect(1);
        assert!(
            text.stdout.lines().all(|l| l.chars().count() <= 100),
            "{}",
            text.stdout
        );
        assert!(!text.stdout.contains('\x1b'), "no colour when piped");
        let abnormal = text
            .stdout
            .find("ABNORMAL (1)")
            .expect("an abnormal section");
        let warning = text.stdout.find("WARNING (1)").expect("a warning section");
        assert!(abnormal < warning, "abnormal first:\n{}", text.stdout);
        assert!(
            text.stdout.contains("pod shop/web-2 is not healthy"),
            "{}",
            text.stdout
        );
        assert!(text
            .stdout
            .contains("what to do: Describe the pod and read its events."));
        let rows: Vec<&str> = text
            .stdout
            .lines()
            .filter(|l| l.contains("(workloads/availability)"))
            .collect();
        assert!(
            rows[0].split_whitespace().rev().take(3).eq(["1", "0", "0"]),
            "normal 0, warning 0, abnormal 1: {rows:?}"
        );

        // A person fixes the pod, and resumes as kpilot said.
        dir.write(
        "data/pods.json",
        r#"[{"metadata": {"namespace": "shop", "name": "web-2"}, "kind": "Pod", "apiVersion": "v1", "healthy": true}]"#,
    );
        dir.kp(&["resume", &id]).expect(0);
        let again = dir.kp(&["report", &id, "-o", "json"]).expect(0);
        let report: serde_json::Value = serde_json::from_str(&again.stdout).expect("JSON");
        assert_eq!(check(&report, "pods-healthy")["outcome"], "passed");
        assert_eq!(
            check(&report, "disk-room")["outcome"],
            "warning",
            "a warning is not re-run"
        );
        dir.kp(&["status", &id]).expect(0);
    }
);

kptest!(data_that_cannot_be_read_is_an_error_never_a_pass, |dir| {
    own_report(&dir);
    std::fs::remove_file(dir.join("data/version.json")).expect("rm");
    let ran = dir
        .kp(&[
            "inspect",
            "--scenario",
            "patrol",
            "--no-cluster",
            "--report",
            "r.yaml",
            "-o",
            "json",
        ])
        .expect(3);
    let report: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON");
    let version = check(&report, "version-known");
    assert_eq!(version["outcome"], "error", "{version:#}");
    assert!(
        version["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("could not check: ") && m.contains("exit")),
        "{version:#}"
    );
    assert_eq!(report["summary"]["error"], 1);
    let text = dir.kp(&["report", &run_id(&ran.stderr)]).expect(3);
    assert!(
        text.stdout.contains("COULD NOT CHECK (1)"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("(1 could not be checked)"),
        "{}",
        text.stdout
    );
});

kptest!(dry_run_prints_the_workflow_it_would_run, |dir| {
    own_report(&dir);
    let ran = dir
        .kp(&[
            "inspect",
            "--scenario",
            "patrol",
            "--no-cluster",
            "--report",
            "r.yaml",
            "--dry-run",
            "-o",
            "yaml",
        ])
        .expect(0);
    let workflow: serde_yaml::Value = serde_yaml::from_str(&ran.stdout).expect("YAML");
    assert_eq!(workflow["kind"], "Workflow");
    let ids: Vec<&str> = workflow["spec"]["steps"]
        .as_sequence()
        .expect("steps")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["pods-healthy", "disk-room", "version-known"]);
    assert_eq!(
        workflow["spec"]["steps"][0]["check"]["params"]["file"],
        "data/pods.json"
    );
    assert_eq!(workflow["spec"]["steps"][1]["check"]["severity"], "warning");
    assert_eq!(workflow["spec"]["steps"][0]["phase"], "patrol");
    assert!(
        ran.stderr
            .contains("left out own-nodes-ready: reads the cluster, and --no-cluster was given"),
        "{}",
        ran.stderr
    );
    // The printed workflow is an ordinary one: `kpilot run` takes it.
    dir.write("built.yaml", &ran.stdout);
    dir.kp(&["validate", "built.yaml"]).expect(0);
    assert!(
        dir.kp(&["runs"]).stdout.lines().count() <= 1,
        "a dry run keeps no run"
    );
});

kptest!(bad_input_names_the_file_the_check_and_the_fix, |dir| {
    own_report(&dir);
    let cases: Vec<(Vec<&str>, String, &str)> = vec![
        (
            vec!["--scenario", "upgrade"],
            OWN.to_owned(),
            "needs the upgrade target: add --to VERSION",
        ),
        (
            vec!["--scenario", "nightly"],
            OWN.to_owned(),
            "is not a scenario",
        ),
        (
            vec!["--scenario", "patrol", "--to", "1.16"],
            OWN.to_owned(),
            "a patrol has no target",
        ),
        (
            vec!["--scenario", "upgrade", "--to", "one"],
            OWN.to_owned(),
            "--to one is not a Kubernetes version",
        ),
        (
            vec!["--scenario", "patrol", "--cluster-type", "cloud"],
            OWN.to_owned(),
            "--cluster-type cloud is not a cluster type",
        ),
        (
            vec!["--scenario", "patrol"],
            OWN.replace("ids: [pods-healthy,", "ids: [pods-healty,"),
            "r.yaml: `spec.select.ids` names `pods-healty`, which is no check",
        ),
        (
            vec!["--scenario", "patrol"],
            OWN.replace("  overrides:", "  overides:"),
            "r.yaml: unknown field `spec.overides`",
        ),
        (
            vec!["--scenario", "patrol"],
            OWN.replace("title: Disks have room\n", ""),
            "r.yaml: check `disk-room`: `title` is missing",
        ),
        (
            vec!["--scenario", "patrol"],
            OWN.replace("expect: \"item.used < 80\"", "expect: \"item.used <\""),
            "disk-room",
        ),
    ];
    for (args, report, want) in cases {
        dir.write("bad.yaml", &report);
        let mut full = vec!["inspect", "--no-cluster", "--report", "bad.yaml"];
        full.extend(args.iter().copied());
        let ran = dir.kp(&full).expect(2);
        let want = want.replace("r.yaml", "bad.yaml");
        assert!(
            ran.stderr.contains(&want),
            "{args:?}: want {want:?} in\n{}",
            ran.stderr
        );
        assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    }
    let missing = dir
        .kp(&[
            "inspect",
            "--scenario",
            "patrol",
            "--no-cluster",
            "--report",
            "nope.yaml",
        ])
        .expect(2);
    assert!(missing.stderr.contains("nope.yaml"), "{}", missing.stderr);
    let manifests = dir
        .kp(&[
            "inspect",
            "--scenario",
            "patrol",
            "--no-cluster",
            "--manifests",
            "no/such/dir",
        ])
        .expect(2);
    assert!(
        manifests
            .stderr
            .contains("--manifests no/such/dir: no such file or directory"),
        "{}",
        manifests.stderr
    );
    // A run that is not an inspection has a report too: each step a check.
    dir.write("wf.yaml", "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  steps:\n    - {id: a, phase: pre-check, command: [\"true\"]}\n");
    dir.kp(&["run", "wf.yaml", "--run-id", "w1"]).expect(0);
    let workflow = dir.kp(&["report", "w1"]).expect(0);
    assert!(
        workflow.stdout.contains("kpilot report w1 · workflow w")
            && workflow.stdout.contains("1 checks: 1 normal"),
        "{}",
        workflow.stdout
    );
    dir.kp(&["status", "w1"]).expect(0);
});

kptest!(
    a_checks_repair_runs_when_it_fails_then_the_check_again,
    |dir| {
        dir.write("data/flag.json", r#"{"on": false}"#);
        dir.write(
            "r.yaml",
            r#"apiVersion: kpilot/v1
kind: Report
metadata: {name: repair}
---
apiVersion: kpilot/v1
kind: Check
metadata: {name: flag-on}
title: The flag is on
category: cluster-resources/nodes
appliesTo: {scenarios: [patrol]}
check:
  query: {command: [cat, data/flag.json]}
  expect: data.on
  message: the flag is off
remediation: {text: "Turn it on.", url: "https://kubernetes.io/docs/"}
repair:
  script: "echo '{\"on\": true}' > data/flag.json"
"#,
        );
        let ran = dir
            .kp(&[
                "inspect",
                "--scenario",
                "patrol",
                "--no-cluster",
                "--report",
                "r.yaml",
                "-o",
                "json",
            ])
            .expect(0);
        let report: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON");
        assert_eq!(check(&report, "flag-on")["outcome"], "passed", "{report:#}");
        assert_eq!(
            report["summary"]["passed"], 1,
            "the repair step is not a check of the report"
        );
        let id = run_id(&ran.stderr);
        assert_eq!(dir.step_state(&id, "flag-on-repair"), "succeeded");
        assert!(dir.read("data/flag.json").contains("true"));
        let logs = dir.kp(&["logs", &id, "flag-on"]).expect(0);
        assert!(logs.stdout.contains("outcome: passed"), "{}", logs.stdout);
    }
);

kptest!(
    api_versions_files_add_rows_the_removed_api_checks_judge_by,
    |dir| {
        dir.write(
        "manifests/issuer.yaml",
        "apiVersion: cert-manager.io/v1alpha2\nkind: Issuer\nmetadata: {name: letsencrypt, namespace: web}\nspec: {}\n",
    );
        dir.write(
        "cert-manager.yaml",
        "deprecated-versions:\n  - {version: cert-manager.io/v1alpha2, kind: Issuer, deprecated-in: v1.4.0, removed-in: v1.6.0, replacement-api: cert-manager.io/v1, component: cert-manager}\n",
    );
        let args = [
            "inspect",
            "--scenario",
            "upgrade",
            "--to",
            "1.16",
            "--no-cluster",
            "--manifests",
            "manifests",
            "-o",
            "json",
        ];
        // Without the rows, cert-manager's API is nothing the table knows.
        let ran = dir.kp(&args).expect(0);
        let report: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON");
        assert_eq!(
            check(&report, "removed-apis")["outcome"],
            "passed",
            "{report:#}"
        );
        let mut with = args.to_vec();
        with.extend(["--api-versions", "cert-manager.yaml"]);
        let ran = dir.kp(&with).expect(1);
        let report: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON");
        let removed = check(&report, "removed-apis");
        assert_eq!(removed["outcome"], "failed", "{report:#}");
        let item = &removed["items"][0];
        assert_eq!(
            item["object"],
            serde_json::json!({"apiVersion": "cert-manager.io/v1alpha2", "kind": "Issuer", "namespace": "web", "name": "letsencrypt"})
        );
        assert_eq!(item["replacement"], "cert-manager.io/v1");
        assert!(
            item["source"]
                .as_str()
                .is_some_and(|s| s.ends_with("manifests/issuer.yaml")),
            "{item:#}"
        );
        // A table that is not one is refused, naming the file and the format.
        dir.write("bad.yaml", "rows: 1\n");
        let mut bad = args.to_vec();
        bad.extend(["--api-versions", "bad.yaml"]);
        let ran = dir.kp(&bad).expect(2);
        assert!(
            ran.stderr
                .contains("--api-versions bad.yaml: it has no `deprecated-versions` list"),
            "{}",
            ran.stderr
        );
    }
);

kptest!(
    etcd_backup_recent_warns_of_an_old_snapshot_until_a_new_one_is_taken,
    |dir| {
        std::fs::create_dir_all(dir.join("backups")).expect("mkdir");
        let report = |backup_dir: &str| {
            format!("apiVersion: kpilot/v1\nkind: Report\nmetadata: {{name: t}}\nspec:\n  select: {{ids: [etcd-backup-recent]}}\n  overrides: [{{check: etcd-backup-recent, params: {{backupDir: \"{backup_dir}\"}}}}]\n")
        };
        let inspect = |code: i32| {
            let ran = dir
                .kp(&[
                    "inspect",
                    "--scenario",
                    "patrol",
                    "--no-cluster",
                    "--report",
                    "r.yaml",
                    "-o",
                    "json",
                ])
                .expect(code);
            let report: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON");
            check(&report, "etcd-backup-recent").clone()
        };
        // Not configured: a warning that says what to set, never a pass.
        dir.write("r.yaml", &report(""));
        let c = inspect(0);
        assert_eq!(c["outcome"], "warning", "{c:#}");
        assert!(
            c["message"]
                .as_str()
                .is_some_and(|m| m.contains("set the param backupDir")),
            "{c:#}"
        );
        // A snapshot 30 hours old.
        let backups = dir.join("backups").display().to_string();
        dir.write("r.yaml", &report(&backups));
        let old = dir.write("backups/etcd-old.db", "snapshot");
        let touched = std::process::Command::new("touch")
            .args(["-d", "30 hours ago"])
            .arg(&old)
            .status()
            .expect("touch");
        assert!(touched.success());
        let c = inspect(0);
        assert_eq!(c["outcome"], "warning", "{c:#}");
        let message = c["message"].as_str().unwrap_or("");
        assert!(
            message.contains("etcd-old.db") && message.contains("30 hours old"),
            "{c:#}"
        );
        assert_eq!(c["category"], "components/etcd");
        // A fresh one is taken: it passes.
        dir.write("backups/etcd-new.db", "snapshot");
        assert_eq!(inspect(0)["outcome"], "passed");
        // A directory that is not there: it cannot tell.
        dir.write(
            "r.yaml",
            &report(&dir.join("nowhere").display().to_string()),
        );
        let c = inspect(3);
        assert_eq!(c["outcome"], "error", "{c:#}");
        assert!(
            c["message"]
                .as_str()
                .is_some_and(|m| m.contains("is not a directory")),
            "{c:#}"
        );
    }
);
