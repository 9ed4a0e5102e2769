//! `cordon`, `uncordon` and `drain` on the real test cluster, through the
//! binary, and node safety: `status` lists the nodes a run still has
//! cordoned, `abort --restore` and `spec.onFailure: {restore: true}` undo
//! only the run's own cordons.
//!
//! Each test has its own KWOK nodes (labelled `kpilot-test=<unique>`) and
//! namespaces. Evictions are counted in the API server's audit log, which
//! `scripts/test-cluster` writes next to the kubeconfig (`logs/audit.log`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{
    audit_log, get, kp, kubeconfig, kubectl, kwok_node, namespace, node, printed_command,
    run_printed, step_output, unique, wait_ready, wait_until, Created,
};
use crate::util::{step_field, Dir};

fn node_json(name: &str) -> Value {
    get(&["get", "node", name])
}

fn unschedulable(name: &str) -> bool {
    node_json(name)["spec"]["unschedulable"] == json!(true)
}

fn cordoned_by(name: &str) -> Option<String> {
    node_json(name)["metadata"]["annotations"]["kpilot.io/cordoned-by"]
        .as_str()
        .map(str::to_owned)
}

/// A Deployment of `replicas` pods labelled `app=name` on the nodes
/// labelled `kpilot-test=label`; `pod_spec` is merged into its pod spec.
fn deployment(ns: &str, name: &str, label: &str, replicas: u32, pod_spec: Value) -> Value {
    let mut spec = json!({
        "nodeSelector": {"kpilot-test": label},
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "c", "image": "registry.invalid/app:1"}],
    });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), pod_spec.as_object()) {
        s.extend(extra.clone());
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    })
}

/// A pod bound to `node` with no controller; `meta` is merged into its metadata.
fn bare_pod(ns: &str, name: &str, node: &str, meta: Value) -> Value {
    let mut metadata = json!({"name": name, "namespace": ns, "labels": {"app": name}});
    if let (Some(m), Some(extra)) = (metadata.as_object_mut(), meta.as_object()) {
        m.extend(extra.clone());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "registry.invalid/app:1"}],
        },
    })
}

/// The pods on `node`, as `ns/name` → (uid, phase).
fn pods_on(node: &str) -> BTreeMap<String, (String, String)> {
    let list = get(&[
        "get",
        "pods",
        "-A",
        "--field-selector",
        &format!("spec.nodeName={node}"),
    ]);
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| {
            (
                format!(
                    "{}/{}",
                    p["metadata"]["namespace"].as_str().unwrap_or(""),
                    p["metadata"]["name"].as_str().unwrap_or("")
                ),
                (
                    p["metadata"]["uid"].as_str().unwrap_or("").to_owned(),
                    p["status"]["phase"].as_str().unwrap_or("").to_owned(),
                ),
            )
        })
        .collect()
}

/// Waits until `count` pods run on `node`.
fn wait_running(node: &str, count: usize) -> BTreeMap<String, (String, String)> {
    let mut pods = BTreeMap::new();
    wait_until(&format!("{count} pods Running on {node}"), || {
        pods = pods_on(node);
        pods.len() == count && pods.values().all(|(_, phase)| phase == "Running")
    });
    pods
}

/// Evictions in namespace `ns` the audit log recorded, by pod name, as
/// (accepted, refused with 429).
fn evictions(ns: &str) -> BTreeMap<String, (u32, u32)> {
    let text = std::fs::read_to_string(audit_log()).expect("audit log");
    let mut out: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let o = &event["objectRef"];
        if o["subresource"] != "eviction" || o["namespace"] != ns {
            continue;
        }
        let name = o["name"].as_str().unwrap_or("").to_owned();
        let entry = out.entry(name).or_default();
        match event["responseStatus"]["code"].as_u64() {
            Some(201) => entry.0 += 1,
            Some(429) => entry.1 += 1,
            _ => {}
        }
    }
    out
}

fn strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect();
    out.sort();
    out
}

kptest!(cordon_and_uncordon_undo_only_the_runs_own_cordon, |dir| {
    let label = unique("cordon");
    let (free, persons) = (format!("{label}-free"), format!("{label}-persons"));
    let mut created = Created::default();
    kwok_node(&mut created, &free, &label);
    kwok_node(&mut created, &persons, &label);
    kubectl(&["cordon", &persons], None);

    let wf = dir.write(
        "cordon.yaml",
        &format!(
            r#"apiVersion: kpilot/v1
kind: Workflow
metadata: {{name: cordon}}
spec:
  params:
    - name: label
  steps:
    - id: cordon
      phase: upgrade
      cordon: {{selector: "kpilot-test={{{{params.label}}}}"}}
    - id: look
      phase: upgrade
      needs: [cordon]
      approval: {{message: "look at the nodes"}}
    - id: uncordon
      phase: upgrade
      needs: [look]
      uncordon: {{selector: "kpilot-test={label}"}}
"#
        ),
    );
    let wf = wf.display().to_string();
    let param = format!("label={label}");
    let blocked = kp(&dir, &["run", &wf, "--run-id", "r", "-p", &param]).expect(3);
    // The blocked run says which node it holds cordoned, and both ways on.
    assert!(blocked.stderr.contains(&free), "{}", blocked.stderr);
    assert_eq!(
        printed_command(&blocked.stderr, "kpilot abort"),
        ["kpilot", "abort", "r", "--restore"]
    );
    assert!(
        blocked.stderr.contains("`kpilot resume r` goes on"),
        "{}",
        blocked.stderr
    );
    assert!(unschedulable(&free));
    assert_eq!(cordoned_by(&free).as_deref(), Some("r"));
    assert!(unschedulable(&persons));
    assert_eq!(cordoned_by(&persons), None);
    let output = step_output(&dir, "r", "cordon");
    assert_eq!(strings(&output["cordoned"]), [free.as_str()], "{output}");
    assert_eq!(strings(&output["alreadyCordoned"]), [persons.as_str()]);
    // While the run waits, status names the node it holds cordoned.
    assert_eq!(strings(&dir.status("r")["cordoned"]), [free.as_str()]);

    kp(&dir, &["approve", "r", "look"]).expect(0);
    assert!(!unschedulable(&free));
    assert_eq!(cordoned_by(&free), None);
    assert!(unschedulable(&persons), "a person's cordon was undone");
    let output = step_output(&dir, "r", "uncordon");
    assert_eq!(strings(&output["uncordoned"]), [free.as_str()], "{output}");
    assert_eq!(strings(&output["leftCordoned"]), [persons.as_str()]);
    assert_eq!(dir.status("r")["cordoned"], json!([]));
});

/// cordon, then drain with `body`, of the nodes labelled `label`.
fn drain_workflow(dir: &Dir, name: &str, label: &str, body: &str, timeout: &str) -> String {
    dir.write(
        &format!("{name}.yaml"),
        &format!(
            r#"apiVersion: kpilot/v1
kind: Workflow
metadata: {{name: {name}}}
spec:
  steps:
    - id: cordon
      phase: upgrade
      cordon: {{selector: "kpilot-test={label}"}}
    - id: drain
      phase: upgrade
      needs: [cordon]
      drain: {{selector: "kpilot-test={label}"{body}}}
      timeout: {timeout}
"#
        ),
    )
    .display()
    .to_string()
}

kptest!(
    drain_keeps_daemonset_and_mirror_pods_and_asks_before_losing_data,
    |dir| {
        let label = unique("drain");
        let ns = label.clone();
        let n = format!("{label}-n");
        let mut created = Created::default();
        kwok_node(&mut created, &n, &label);
        namespace(&mut created, &ns);
        created.create(deployment(&ns, "web", &label, 2, json!({})));
        created.create(deployment(
            &ns,
            "scratch",
            &label,
            1,
            json!({"volumes": [{"name": "tmp", "emptyDir": {}}]}),
        ));
        created.create(json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": ns},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {
                        "nodeSelector": {"kpilot-test": label},
                        "containers": [{"name": "c", "image": "registry.invalid/agent:1"}],
                    },
                },
            },
        }));
        created.create(bare_pod(
            &ns,
            "static",
            &n,
            json!({"annotations": {"kubernetes.io/config.mirror": "hash"}}),
        ));
        created.create(bare_pod(&ns, "bare", &n, json!({})));
        let before = wait_running(&n, 6);
        let pod_named = |prefix: &str| -> String {
            before
                .keys()
                .find(|k| k.starts_with(&format!("{ns}/{prefix}")))
                .unwrap_or_else(|| panic!("no pod {prefix} in {before:?}"))
                .clone()
        };
        let (web, scratch, agent) = (
            pod_named("web-"),
            pod_named("scratch-"),
            pod_named("agent-"),
        );
        let (mirror, bare) = (format!("{ns}/static"), format!("{ns}/bare"));

        // Without the two choices, the drain names both pods and evicts nothing.
        let wf = drain_workflow(&dir, "strict", &label, "", "2m");
        kp(&dir, &["run", &wf, "--run-id", "strict"]).expect(1);
        let reason = step_field(&dir.status("strict"), "drain", "reason");
        assert!(
            reason.contains(&scratch) && reason.contains("deleteEmptyDirData: true"),
            "{reason}"
        );
        assert!(
            reason.contains(&bare) && reason.contains("force: true"),
            "{reason}"
        );
        assert!(!reason.contains(&web), "{reason}");
        assert_eq!(
            pods_on(&n),
            before,
            "a drain that cannot finish evicted a pod"
        );
        assert!(evictions(&ns).is_empty(), "{:?}", evictions(&ns));

        let wf = drain_workflow(
            &dir,
            "lenient",
            &label,
            ", deleteEmptyDirData: true, force: true, gracePeriod: 0s",
            "2m",
        );
        kp(&dir, &["run", &wf, "--run-id", "lenient"]).expect(0);
        let output = step_output(&dir, "lenient", "drain");
        let mut gone: Vec<String> = before
            .keys()
            .filter(|k| k.starts_with(&format!("{ns}/web-")))
            .cloned()
            .chain([scratch.clone(), bare.clone()])
            .collect();
        gone.sort();
        assert_eq!(strings(&output["evicted"]), gone, "{output}");
        let skipped: BTreeMap<String, String> = output["skipped"]
            .as_array()
            .expect("skipped")
            .iter()
            .map(|s| {
                (
                    s["pod"].as_str().unwrap_or("").to_owned(),
                    s["reason"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert!(skipped[&agent].contains("DaemonSet"), "{skipped:?}");
        assert!(skipped[&mirror].contains("mirror"), "{skipped:?}");
        // The evicted pods are gone (KWOK deletes them); the others stay.
        let after = pods_on(&n);
        for pod in &gone {
            assert!(
                after.get(pod).is_none_or(|(uid, _)| uid != &before[pod].0),
                "{pod} is still there: {after:?}"
            );
        }
        assert_eq!(after.get(&agent), before.get(&agent));
        assert_eq!(after.get(&mirror), before.get(&mirror));
        for pod in &gone {
            let name = pod.rsplit('/').next().unwrap_or_default();
            assert_eq!(evictions(&ns).get(name).map(|e| e.0), Some(1), "{pod}");
        }
    }
);

kptest!(a_pdb_blocks_the_drain_by_name_until_it_is_relaxed, |dir| {
    let label = unique("pdb");
    let ns = label.clone();
    let n = format!("{label}-n");
    let mut created = Created::default();
    kwok_node(&mut created, &n, &label);
    namespace(&mut created, &ns);
    created.create(deployment(&ns, "db", &label, 2, json!({})));
    created.create(json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "db-pdb", "namespace": ns},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "db"}}},
    }));
    let before = wait_running(&n, 2);
    wait_until("the PDB is observed", || {
        let pdb = get(&["get", "pdb", "db-pdb", "-n", &ns]);
        pdb["status"]["currentHealthy"] == json!(2)
    });

    let wf = drain_workflow(&dir, "pdb", &label, "", "8s");
    let ran = kp(&dir, &["run", &wf, "--run-id", "r"]).expect(1);
    let reason = step_field(&dir.status("r"), "drain", "reason");
    assert!(
        reason.contains(&format!(
            "eviction refused by PodDisruptionBudget {ns}/db-pdb (0 disruptions allowed)"
        )),
        "{reason}"
    );
    assert_eq!(pods_on(&n), before, "a refused eviction evicted");
    assert!(evictions(&ns).values().all(|e| e.0 == 0));
    assert!(evictions(&ns).values().any(|e| e.1 > 0), "no 429 seen");

    kubectl(
        &[
            "patch",
            "pdb",
            "db-pdb",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"minAvailable":0}}"#,
        ],
        None,
    );
    wait_until("the relaxed PDB allows disruptions", || {
        get(&["get", "pdb", "db-pdb", "-n", &ns])["status"]["disruptionsAllowed"] == json!(2)
    });
    let resume = printed_command(&ran.stderr, "kpilot resume");
    assert_eq!(resume, ["kpilot", "resume", "r"]);
    run_printed(&dir, &resume).expect(0);
    let evicted = strings(&step_output(&dir, "r", "drain")["evicted"]);
    assert_eq!(evicted, before.keys().cloned().collect::<Vec<_>>());
    assert!(pods_on(&n).is_empty(), "{:?}", pods_on(&n));
});

kptest!(a_drain_killed_and_resumed_evicts_no_pod_twice, |dir| {
    let label = unique("kill");
    let ns = label.clone();
    let n = format!("{label}-n");
    let mut created = Created::default();
    kwok_node(&mut created, &n, &label);
    namespace(&mut created, &ns);
    created.create(deployment(&ns, "many", &label, 9, json!({})));
    // One pod a PDB holds: the drain evicts the others, then waits on it,
    // and is killed there, with evictions behind and ahead of it.
    created.create(deployment(&ns, "held", &label, 1, json!({})));
    created.create(json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "held", "namespace": ns},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "held"}}},
    }));
    let before = wait_running(&n, 10);
    wait_until("the PDB is observed", || {
        get(&["get", "pdb", "held", "-n", &ns])["status"]["currentHealthy"] == json!(1)
    });

    let wf = drain_workflow(&dir, "kill", &label, ", gracePeriod: 0s", "10m");
    let mut child = dir
        .cmd(&["run", &wf, "--run-id", "r"])
        .env("KUBECONFIG", kubeconfig())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kpilot starts");
    wait_until("9 pods evicted and the held one refused", || {
        let e = evictions(&ns);
        e.values().filter(|c| c.0 == 1).count() == 9 && e.values().any(|c| c.1 > 0)
    });
    child.kill().expect("kill -9");
    let _ = child.wait();

    let status = dir.kp(&["status", "r"]).expect(0);
    assert!(status.stdout.contains(&n), "{}", status.stdout);
    kubectl(
        &[
            "patch",
            "pdb",
            "held",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"minAvailable":0}}"#,
        ],
        None,
    );
    wait_until("the relaxed PDB allows a disruption", || {
        get(&["get", "pdb", "held", "-n", &ns])["status"]["disruptionsAllowed"] == json!(1)
    });
    let resume = printed_command(&status.stdout, "kpilot resume");
    assert_eq!(resume, ["kpilot", "resume", "r"]);
    run_printed(&dir, &resume).expect(0);

    assert!(pods_on(&n).is_empty(), "{:?}", pods_on(&n));
    let e = evictions(&ns);
    for pod in before.keys() {
        let name = pod.rsplit('/').next().unwrap_or_default();
        assert_eq!(e.get(name).map(|c| c.0), Some(1), "{pod}: {e:?}");
    }
    let evicted = strings(&step_output(&dir, "r", "drain")["evicted"]);
    assert_eq!(evicted, before.keys().cloned().collect::<Vec<_>>());
});

/// cordon the nodes labelled `label`, then fail; `on_failure` is put in `spec`.
fn failing_workflow(dir: &Dir, name: &str, label: &str, on_failure: &str) -> String {
    dir.write(
        &format!("{name}.yaml"),
        &format!(
            r#"apiVersion: kpilot/v1
kind: Workflow
metadata: {{name: {name}}}
spec:
{on_failure}  steps:
    - id: cordon
      phase: upgrade
      cordon: {{selector: "kpilot-test={label}"}}
    - id: upgrade
      phase: upgrade
      needs: [cordon]
      command: ["false"]
"#
        ),
    )
    .display()
    .to_string()
}

kptest!(a_failed_run_restores_its_cordons_or_says_how, |dir| {
    let label = unique("restore");
    let (n, persons) = (format!("{label}-n"), format!("{label}-persons"));
    let mut created = Created::default();
    kwok_node(&mut created, &n, &label);
    kwok_node(&mut created, &persons, &label);
    kubectl(&["cordon", &persons], None);

    // With onFailure.restore, the failed run uncordons its node itself.
    let wf = failing_workflow(&dir, "restoring", &label, "  onFailure: {restore: true}\n");
    let ran = kp(&dir, &["run", &wf, "--run-id", "restoring"]).expect(1);
    assert!(
        ran.stderr.contains(&format!("uncordoned node {n}")),
        "{}",
        ran.stderr
    );
    assert!(!unschedulable(&n));
    assert_eq!(cordoned_by(&n), None);
    assert!(unschedulable(&persons));
    assert_eq!(dir.status("restoring")["cordoned"], json!([]));

    // Without it, the run says which node it left cordoned and how to undo it.
    let wf = failing_workflow(&dir, "plain", &label, "");
    let ran = kp(&dir, &["run", &wf, "--run-id", "plain"]).expect(1);
    assert!(unschedulable(&n));
    assert!(ran.stderr.contains(&n), "{}", ran.stderr);
    assert_eq!(strings(&dir.status("plain")["cordoned"]), [n.as_str()]);
    let status = dir.kp(&["status", "plain"]).expect(0);
    assert!(status.stdout.contains(&n), "{}", status.stdout);
    let abort = printed_command(&status.stdout, "kpilot abort");
    assert_eq!(abort, ["kpilot", "abort", "plain", "--restore"]);
    assert_eq!(printed_command(&ran.stderr, "kpilot abort"), abort);
    let aborted = run_printed(&dir, &abort).expect(0);
    assert!(
        aborted.stderr.contains(&format!("uncordoned node {n}")),
        "{}",
        aborted.stderr
    );
    assert!(!unschedulable(&n));
    assert_eq!(cordoned_by(&n), None);
    assert!(unschedulable(&persons), "a person's cordon was undone");
    let status = dir.status("plain");
    assert_eq!(status["state"], "aborted");
    assert_eq!(status["cordoned"], json!([]));

    let resumed = kp(&dir, &["resume", "plain"]).expect(2);
    assert!(resumed.stderr.contains("aborted"), "{}", resumed.stderr);
});

kptest!(
    bad_node_action_bodies_are_refused_naming_file_step_and_fix,
    |dir| {
        let cases = [
            (
                "{selector: a=b, forse: true}",
                "no field `forse`; did you mean `force`?",
            ),
            (
                "{selector: a=b, gracePeriod: soon}",
                "`drain.gracePeriod`: `soon` is not a duration",
            ),
            ("{selector: \"a in (b\"}", "`drain.selector`"),
            (
                "{selector: a=b, podSelector: \"app in (x\"}",
                "`drain.podSelector`",
            ),
        ];
        for (i, (body, expected)) in cases.iter().enumerate() {
            let file = format!("bad-{i}.yaml");
            dir.write(
            &file,
            &format!(
                "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {{name: bad}}\nspec:\n  steps:\n    - id: drain-it\n      phase: upgrade\n      drain: {body}\n"
            ),
        );
            let ran = dir.kp(&["run", &file]).expect(2);
            assert!(ran.stderr.contains(&file), "{}", ran.stderr);
            assert!(ran.stderr.contains("step `drain-it`"), "{}", ran.stderr);
            assert!(ran.stderr.contains(expected), "{body}: {}", ran.stderr);
            assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
        }
    }
);

kptest!(abort_refuses_a_run_another_process_drives, |dir| {
    let label = unique("busy");
    let n = format!("{label}-n");
    let mut created = Created::default();
    kwok_node(&mut created, &n, &label);
    let wf = dir.write(
        "busy.yaml",
        &format!(
            r#"apiVersion: kpilot/v1
kind: Workflow
metadata: {{name: busy}}
spec:
  steps:
    - id: cordon
      phase: upgrade
      cordon: {{nodes: [{n}]}}
    - id: wait
      phase: upgrade
      needs: [cordon]
      command: [sleep, "600"]
"#
        ),
    );
    let wf = wf.display().to_string();
    let mut child = dir
        .cmd(&["run", &wf, "--run-id", "r"])
        .env("KUBECONFIG", kubeconfig())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kpilot starts");
    wait_until("the run reaches its sleep", || {
        let ran = dir.kp(&["status", "r", "-o", "json"]);
        ran.code == 0
            && serde_json::from_str::<Value>(&ran.stdout)
                .is_ok_and(|s| step_field(&s, "wait", "state") == "running")
    });
    let refused = kp(&dir, &["abort", "r", "--restore"]).expect(2);
    assert!(
        refused.stderr.contains("being driven by another process"),
        "{}",
        refused.stderr
    );
    assert!(unschedulable(&n), "a refused abort uncordoned");
    child.kill().expect("kill -9");
    let _ = child.wait();
    // Once the driver is gone, the same command goes through.
    let aborted = kp(&dir, &["abort", "r", "--restore"]).expect(0);
    assert!(
        aborted.stderr.contains(&format!("uncordoned node {n}")),
        "{}",
        aborted.stderr
    );
    assert!(!unschedulable(&n));
    assert_eq!(dir.status("r")["state"], "aborted");
});

kptest!(per_node_steps_act_on_their_own_node, |dir| {
    let label = unique("pernode");
    let ns = label.clone();
    let (a, b) = (format!("{label}-a"), format!("{label}-b"));
    let mut created = Created::default();
    kwok_node(&mut created, &a, &label);
    kwok_node(&mut created, &b, &label);
    namespace(&mut created, &ns);
    created.create(bare_pod(&ns, "on-a", &a, json!({})));
    created.create(bare_pod(&ns, "on-b", &b, json!({})));
    wait_running(&a, 1);
    wait_running(&b, 1);
    // The agents are never asked: these steps run in kpilot, for each node.
    let token = dir.write_secret("token", "0123456789abcdef0123456789abcdef\n");
    let inventory = dir.write(
        "inventory.yaml",
        &format!(
            "tokenFile: {}\nfingerprint: sha256:{}\ncluster: {{port: 7443}}\n",
            token.display(),
            "ab".repeat(32)
        ),
    );
    let step = |id: &str, body: &str, needs: &str| {
        format!(
            "    - id: {id}\n      phase: upgrade\n      executor: per-node\n      nodes: {{selector: \"kpilot-test={label}\"}}\n{needs}      {body}\n"
        )
    };
    let wf = dir.write(
        "pernode.yaml",
        &format!(
            "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {{name: pernode}}\nspec:\n  steps:\n{}{}{}",
            step("cordon", "cordon: {}", ""),
            step("drain", "drain: {force: true, gracePeriod: 0s}", "      needs: [cordon]\n"),
            step("uncordon", "uncordon: {}", "      needs: [drain]\n"),
        ),
    );
    let inv = inventory.display().to_string();
    let wf = wf.display().to_string();
    kp(&dir, &["run", &wf, "--run-id", "r", "--inventory", &inv]).expect(0);
    let status = dir.status("r");
    let output = |step: &str, node: &str| -> Value {
        status["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["id"] == step && s["instance"] == node)
            .map(|s| s["output"].clone())
            .unwrap_or_else(|| panic!("no {step} on {node}: {status}"))
    };
    for (node, pod) in [(&a, "on-a"), (&b, "on-b")] {
        assert_eq!(
            strings(&output("cordon", node)["cordoned"]),
            [node.as_str()]
        );
        assert_eq!(
            strings(&output("drain", node)["evicted"]),
            [format!("{ns}/{pod}")]
        );
        assert_eq!(
            strings(&output("uncordon", node)["uncordoned"]),
            [node.as_str()]
        );
        assert!(!unschedulable(node));
        assert!(pods_on(node).is_empty(), "{:?}", pods_on(node));
    }
});

/// Deletes a pod by force when dropped.
struct ForceDelete(String, &'static str);

impl Drop for ForceDelete {
    fn drop(&mut self) {
        let _ = std::process::Command::new(super::kubectl_path())
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args(["delete", "pod", self.1, "-n", &self.0])
            .args(["--grace-period=0", "--force", "--ignore-not-found"])
            .output();
    }
}

kptest!(a_pod_being_evicted_is_waited_for_not_evicted_again, |dir| {
    let label = unique("waited");
    let ns = label.clone();
    // No kubelet (nor KWOK) confirms deletions on this node: an evicted pod
    // stays terminating until the test deletes it by force.
    let n = format!("{label}-n");
    let mut created = Created::default();
    created.create(node(&n, &label, "v1.34.4", Some(true)));
    namespace(&mut created, &ns);
    let mut pod = bare_pod(&ns, "slow", &n, json!({}));
    pod["spec"]["terminationGracePeriodSeconds"] = json!(3600);
    created.create(pod);
    // Whatever happens, the pod goes: it would hold its namespace for an hour.
    let force = ForceDelete(ns.clone(), "slow");
    let slow = format!("{ns}/slow");
    wait_until("the pod is bound", || pods_on(&n).len() == 1);

    let wf = drain_workflow(&dir, "waited", &label, ", force: true", "4s");
    kp(&dir, &["run", &wf, "--run-id", "r"]).expect(1);
    let reason = step_field(&dir.status("r"), "drain", "reason");
    assert!(
        reason.contains("still there at the step's deadline"),
        "{reason}"
    );
    assert!(reason.contains(&slow), "{reason}");
    assert_eq!(evictions(&ns).get("slow").map(|e| e.0), Some(1));

    // Run again, the drain finds the pod terminating: it waits, evicts nothing.
    kp(&dir, &["resume", "r"]).expect(1);
    let output = step_output(&dir, "r", "drain");
    assert_eq!(strings(&output["waitedFor"]), [slow.as_str()], "{output}");
    assert_eq!(evictions(&ns).get("slow").map(|e| e.0), Some(1));

    drop(force);
    kp(&dir, &["resume", "r"]).expect(0);
    assert_eq!(evictions(&ns).get("slow").map(|e| e.0), Some(1));
    let output = step_output(&dir, "r", "drain");
    assert_eq!(strings(&output["evicted"]), [slow.as_str()], "{output}");
});

kptest!(
    a_rolling_drain_of_20_nodes_killed_at_random_moments_evicts_no_pod_twice,
    |dir| {
        use rand::Rng as _;
        let label = unique("roll");
        let ns = label.clone();
        let mut created = Created::default();
        let names: Vec<String> = (1..=20).map(|k| format!("{label}-{k:02}")).collect();
        for name in &names {
            created.create(node(name, &label, "v1.34.4", None));
        }
        for name in &names {
            wait_ready(name);
        }
        namespace(&mut created, &ns);
        created.create(deployment(&ns, "web", &label, 40, json!({})));
        wait_until("40 pods Running", || {
            let list = get(&["get", "pods", "-n", &ns]);
            list["items"].as_array().is_some_and(|items| {
                items.len() == 40 && items.iter().all(|p| p["status"]["phase"] == "Running")
            })
        });
        let wf = dir.write(
        "roll.yaml",
        &format!(
            "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {{name: roll}}\nspec:\n  steps:\n    - id: nodes\n      phase: upgrade\n      executor: cluster-nodes\n      nodes: {{selector: kpilot-test={label}, maxUnavailable: 2}}\n      group:\n        steps:\n          - {{id: cordon, cordon: {{}}}}\n          - {{id: drain, needs: [cordon], drain: {{gracePeriod: 0s}}, timeout: 5m}}\n          - {{id: uncordon, needs: [drain], uncordon: {{}}}}\n"
        ),
    );
        let wf = wf.display().to_string();
        let mut rng = rand::rng();
        let mut kills = 0;
        let mut args: Vec<String> = ["run", wf.as_str(), "--run-id", "r"]
            .map(String::from)
            .to_vec();
        let mut done = false;
        for round in 0..40 {
            let mut child = dir
                .cmd(&args.iter().map(String::as_str).collect::<Vec<_>>())
                .env("KUBECONFIG", kubeconfig())
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(dir.join("kpilot.err")).expect("stderr file"))
                .spawn()
                .expect("kpilot starts");
            // Short enough that most rounds end in a kill: a rolling drain
            // of KWOK nodes takes only a few seconds in all.
            let wait_ms = if round < 16 {
                rng.random_range(60..600)
            } else {
                180_000
            };
            let deadline = Instant::now() + Duration::from_millis(wait_ms);
            let mut finished = None;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    finished = Some(status);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            match finished {
                Some(status) if status.code() == Some(0) => {
                    done = true;
                    break;
                }
                Some(status) => {
                    let err = dir.read("kpilot.err");
                    // Killed while the run was being created.
                    if status.code() == Some(2) && err.contains("no run `r`") {
                        args = ["run", wf.as_str(), "--run-id", "r"]
                            .map(String::from)
                            .to_vec();
                        continue;
                    }
                    panic!("round {round}: {args:?} ended {status}:\n{err}");
                }
                None => {
                    crate::util::kill_9_and_wait_for_guardians(child);
                    kills += 1;
                }
            }
            // Every member is idempotent: a plain resume goes on, as kpilot says.
            args = ["resume", "r"].map(String::from).to_vec();
            if dir.kp(&["status", "r"]).code != 0 {
                args = ["run", wf.as_str(), "--run-id", "r"]
                    .map(String::from)
                    .to_vec();
            }
        }
        assert!(
            done,
            "the rolling drain never finished:\n{}",
            dir.read("kpilot.err")
        );
        assert!(kills >= 5, "only {kills} kills landed");
        eprintln!("rolling drain: {kills} kills");
        for name in &names {
            assert!(!unschedulable(name), "{name} left cordoned");
            assert_eq!(cordoned_by(name), None, "{name} keeps the run's annotation");
        }
        let e = evictions(&ns);
        assert!(e.len() >= 40, "only {} pods were evicted: {e:?}", e.len());
        for (pod, (accepted, _)) in &e {
            assert!(*accepted <= 1, "{pod} was evicted {accepted} times");
        }
        let status = dir.status("r");
        assert_eq!(status["state"], "succeeded", "{status:#}");
    }
);
