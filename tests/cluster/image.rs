//! `image` steps on the test cluster: Jobs and pinned Pods created through
//! the real API server, their phases driven by the test cluster's KWOK
//! stages (`scripts/kwok-stages.yaml`: a pod annotated
//! `kpilot-test.kwok/exit-code` ends with that code and the message of
//! `kpilot-test.kwok/message` after `kpilot-test.kwok/delay`). Every object
//! kpilot creates is counted in the API server's audit log.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{
    audit_log, get, kubeconfig, kubectl, kwok_node, namespace, printed_command, printed_line,
    run_printed, step_output, unique, wait_until, Created,
};
use crate::util::Dir;

/// The annotations that make KWOK end a pod with `code` after `delay`,
/// writing `message` as its termination message.
fn ending(code: i32, delay: &str, message: Option<&str>) -> String {
    let mut a =
        format!("{{kpilot-test.kwok/exit-code: \"{code}\", kpilot-test.kwok/delay: \"{delay}\"");
    if let Some(m) = message {
        a.push_str(&format!(", kpilot-test.kwok/message: '{m}'"));
    }
    a.push('}');
    a
}

/// A workflow of the given steps (YAML list items, indented by 4).
fn workflow(dir: &Dir, name: &str, steps: &str) -> String {
    dir.write(
        &format!("{name}.yaml"),
        &format!(
            "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  steps:\n{steps}"
        ),
    )
    .display()
    .to_string()
}

/// The objects of `kind` (jobs, pods) in `ns` that kpilot labelled with `run`.
fn objects(kind: &str, ns: &str, run: &str) -> Vec<Value> {
    let list = get(&["get", kind, "-n", ns, "-l", &format!("kpilot.io/run={run}")]);
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Waits until kpilot's objects of `run` are gone from `ns` (a Job's Pod is
/// deleted with it, by the garbage collector).
fn assert_cleaned_up(ns: &str, run: &str) {
    wait_until("no Job or Pod of the run left", || {
        objects("jobs", ns, run).is_empty() && objects("pods", ns, run).is_empty()
    });
}

/// Objects of `resource` (`jobs`, `pods`) created in `ns` (not dry runs),
/// by name, from the API server's audit log.
fn created(resource: &str, ns: &str) -> BTreeMap<String, u32> {
    let text = std::fs::read_to_string(audit_log()).expect("audit log");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let o = &event["objectRef"];
        let uri = event["requestURI"].as_str().unwrap_or_default();
        if event["verb"] != "create"
            || o["resource"] != resource
            || o["namespace"] != ns
            || !o["subresource"].is_null()
            || uri.contains("dryRun")
            || event["responseStatus"]["code"] != json!(201)
        {
            continue;
        }
        // A created Job's or Pod's name is in the response only; kpilot's
        // names are fixed, so the request names it.
        let name = o["name"].as_str().unwrap_or_default().to_owned();
        *out.entry(name).or_default() += 1;
    }
    out
}

/// Starts `kpilot run` of `wf` as `run`, and kills it with kill -9 once the
/// Pod of its image step in `ns` runs.
fn run_and_kill_9(dir: &Dir, wf: &str, run: &str, ns: &str) {
    let child = dir
        .cmd(&["run", wf, "--run-id", run])
        .env("KUBECONFIG", kubeconfig())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kpilot starts");
    wait_until("the image step's Pod runs", || {
        objects("pods", ns, run)
            .iter()
            .any(|p| p["status"]["phase"] == "Running")
    });
    crate::util::kill_9_and_wait_for_guardians(child);
}

/// A namespace and a KWOK node for a test, labelled `kpilot-test=label`.
fn place(created: &mut Created, tag: &str) -> (String, String) {
    let label = unique(tag);
    namespace(created, &label);
    kwok_node(created, &format!("{label}-n"), &label);
    (label.clone(), label)
}

kptest!(a_global_image_step_passes_and_fails_by_exit_code, |dir| {
    let mut made = Created::default();
    let (ns, label) = place(&mut made, "img-exit");
    let steps = format!(
        r#"    - id: passes
      phase: pre-check
      timeout: 60s
      image: {{image: registry.invalid/probe:1, command: [/probe, --quick], namespace: {ns},
              nodeSelector: {{kpilot-test: {label}}}, annotations: {ok}}}
    - id: fails
      phase: pre-check
      needs: [passes]
      timeout: 60s
      image: {{image: registry.invalid/probe:1, namespace: {ns},
              nodeSelector: {{kpilot-test: {label}}}, annotations: {bad}}}
"#,
        ok = ending(0, "200ms", None),
        bad = ending(3, "200ms", None)
    );
    let wf = workflow(&dir, "img-exit", &steps);
    super::kp(&dir, &["run", &wf, "--run-id", "exit"]).expect(1);
    let status = dir.status("exit");
    let step = |id: &str| {
        status["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .expect("step")
    };
    assert_eq!(step("passes")["state"], "succeeded", "{status}");
    let fails = step("fails");
    assert_eq!(fails["state"], "failed", "{status}");
    assert_eq!(fails["exitCode"], json!(3), "{fails}");
    let reason = fails["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("exited with code 3"), "{reason}");

    let out = step_output(&dir, "exit", "passes");
    assert_eq!(out["kind"], "Job");
    assert_eq!(out["namespace"], ns.as_str());
    assert_eq!(out["exitCode"], json!(0));
    assert_eq!(out["node"], format!("{label}-n").as_str(), "{out}");
    // KWOK nodes have no kubelet: the step says why it has no logs.
    let logs = out["logs"].as_str().unwrap_or_default();
    assert!(logs.starts_with("unavailable: "), "{out}");
    assert_cleaned_up(&ns, "exit");
    let jobs = created("jobs", &ns);
    assert_eq!(jobs.len(), 2, "one Job per step: {jobs:?}");
    assert!(jobs.values().all(|&n| n == 1), "{jobs:?}");
});

kptest!(
    a_termination_message_is_the_steps_result_for_when_and_expect,
    |dir| {
        let mut made = Created::default();
        let (ns, label) = place(&mut made, "img-msg");
        let steps = format!(
            r#"    - id: probe
      phase: pre-check
      timeout: 60s
      image: {{image: registry.invalid/probe:1, namespace: {ns}, result: termination-message,
              nodeSelector: {{kpilot-test: {label}}}, annotations: {found}}}
    - id: when-two
      phase: pre-check
      needs: [probe]
      when: "steps.probe.output.result.found == 2"
      command: ["true"]
    - id: when-three
      phase: pre-check
      needs: [probe]
      when: "steps.probe.output.result.found == 3"
      command: ["true"]
    - id: health
      phase: pre-check
      timeout: 60s
      image: {{image: registry.invalid/health:1, namespace: {ns}, result: termination-message,
              nodeSelector: {{kpilot-test: {label}}}, annotations: {unhealthy}}}
    - id: judged
      phase: pre-check
      timeout: 60s
      image: {{image: registry.invalid/health:1, namespace: {ns}, result: {{file: /out/result.json}},
              expect: "exitCode == 1 && result.found > 1",
              nodeSelector: {{kpilot-test: {label}}}, annotations: {judged}}}
"#,
            found = ending(0, "100ms", Some(r#"{"ok": true, "found": 2}"#)),
            unhealthy = ending(
                0,
                "100ms",
                Some(r#"{"ok": false, "errors": ["dns lookup of kubernetes.default failed"]}"#)
            ),
            judged = ending(1, "100ms", Some(r#"{"found": 4}"#)),
        );
        let wf = workflow(&dir, "img-msg", &steps);
        super::kp(&dir, &["run", &wf, "--run-id", "msg"]).expect(1);
        assert_eq!(dir.step_state("msg", "probe"), "succeeded");
        assert_eq!(
            step_output(&dir, "msg", "probe")["result"],
            json!({"ok": true, "found": 2})
        );
        assert_eq!(dir.step_state("msg", "when-two"), "succeeded");
        assert_eq!(dir.step_state("msg", "when-three"), "skipped");
        assert_eq!(dir.step_state("msg", "health"), "failed");
        let status = dir.status("msg");
        let reason = crate::util::step_field(&status, "health", "reason");
        assert!(
            reason.contains("reported not ok: dns lookup of kubernetes.default failed"),
            "{reason}"
        );
        assert_eq!(dir.step_state("msg", "judged"), "succeeded", "{status}");
        assert_cleaned_up(&ns, "msg");
    }
);

kptest!(
    per_node_pods_are_pinned_to_every_node_even_a_cordoned_one_within_max_parallel,
    |dir| {
        let mut made = Created::default();
        let label = unique("img-nodes");
        namespace(&mut made, &label);
        let nodes: Vec<String> = (1..=4).map(|i| format!("{label}-n{i}")).collect();
        for n in &nodes {
            kwok_node(&mut made, n, &label);
        }
        // A cordoned node with a NoSchedule taint: inspected all the same.
        kubectl(&["cordon", &nodes[3]], None);
        kubectl(
            &[
                "taint",
                "node",
                &nodes[3],
                "kpilot-test/broken=yes:NoSchedule",
            ],
            None,
        );
        let steps = format!(
            r#"    - id: inspect
      phase: pre-check
      executor: cluster-nodes
      nodes: {{selector: "kpilot-test={label}", maxParallel: 2}}
      timeout: 60s
      image: {{image: registry.invalid/node-probe:1, namespace: {label}, hostPID: true,
              volumes: [{{hostPath: /var/log, mountPath: /host/var/log}}],
              annotations: {slow}}}
"#,
            slow = ending(0, "1500ms", None)
        );
        let wf = workflow(&dir, "img-nodes", &steps);

        // Watch the Pods while the run goes: how many at once, and where.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let stop = std::sync::Arc::clone(&stop);
            let ns = label.clone();
            std::thread::spawn(move || {
                let mut most = 0;
                let mut seen: BTreeMap<String, String> = BTreeMap::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let pods = objects("pods", &ns, "nodes");
                    most = most.max(pods.len());
                    for p in &pods {
                        seen.insert(
                            p["metadata"]["name"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                            p["spec"]["nodeName"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                        );
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                (most, seen)
            })
        };
        let started = Instant::now();
        super::kp(&dir, &["run", &wf, "--run-id", "nodes"]).expect(0);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (most, seen) = watcher.join().expect("watcher");
        assert!(
            started.elapsed() >= Duration::from_millis(3000),
            "two rounds of 1.5 s pods"
        );
        assert!(most <= 2, "maxParallel 2, yet {most} Pods existed at once");
        assert!(most >= 1, "the watcher saw no Pod");
        let pinned: BTreeSet<String> = seen.values().cloned().collect();
        assert_eq!(
            pinned,
            nodes.iter().cloned().collect::<BTreeSet<_>>(),
            "{seen:?}"
        );

        let status = dir.status("nodes");
        let instances: Vec<Value> = status["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .filter(|s| s["id"] == "inspect" && s["instance"] != "global")
            .cloned()
            .collect();
        assert_eq!(instances.len(), 4, "{status}");
        for i in &instances {
            assert_eq!(i["state"], "succeeded", "{i}");
            assert_eq!(i["output"]["kind"], "Pod", "{i}");
            assert_eq!(i["output"]["node"], i["instance"], "{i}");
        }
        let pods = created("pods", &label);
        assert_eq!(pods.len(), 4, "{pods:?}");
        assert_cleaned_up(&label, "nodes");
    }
);

kptest!(
    a_timeout_deletes_the_job_or_the_pod_and_fails_with_reason_timeout,
    |dir| {
        let mut made = Created::default();
        let (ns, label) = place(&mut made, "img-timeout");
        let steps = format!(
            r#"    - id: hangs
      phase: pre-check
      timeout: 3s
      image: {{image: registry.invalid/hang:1, namespace: {ns},
              nodeSelector: {{kpilot-test: {label}}}, annotations: {never}}}
    - id: node-hangs
      phase: pre-check
      executor: cluster-nodes
      nodes: {{selector: "kpilot-test={label}"}}
      timeout: 3s
      image: {{image: registry.invalid/hang:1, namespace: {ns}}}
"#,
            never = ending(0, "1h", None)
        );
        let wf = workflow(&dir, "img-timeout", &steps);
        super::kp(&dir, &["run", &wf, "--run-id", "t"]).expect(1);
        let status = dir.status("t");
        let reason = crate::util::step_field(&status, "hangs", "reason");
        assert!(reason.starts_with("timeout: Job"), "{reason}");
        assert!(reason.contains("kpilot deleted it"), "{reason}");
        // A node's Pod that never ends (no annotation: KWOK keeps it running).
        let node = status["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["id"] == "node-hangs" && s["instance"] != "global")
            .cloned()
            .expect("the node's instance");
        let reason = node["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("timeout: Pod"), "{node}");
        assert!(reason.contains("is Running"), "{node}");
        assert!(reason.contains("kpilot deleted it"), "{node}");
        assert_cleaned_up(&ns, "t");
    }
);

kptest!(
    kill_9_during_the_job_then_resume_takes_the_same_job_over,
    |dir| {
        let mut made = Created::default();
        let (ns, label) = place(&mut made, "img-kill");
        let steps = format!(
            r#"    - id: long
      phase: pre-check
      idempotent: true
      timeout: 120s
      image: {{image: registry.invalid/long:1, namespace: {ns},
              nodeSelector: {{kpilot-test: {label}}}, annotations: {slow}}}
"#,
            slow = ending(0, "8s", None)
        );
        let wf = workflow(&dir, "img-kill", &steps);
        run_and_kill_9(&dir, &wf, "k", &ns);
        let job = objects("jobs", &ns, "k");
        assert_eq!(job.len(), 1, "the Job outlives kpilot");
        let uid = job[0]["metadata"]["uid"].clone();

        let status = dir.kp(&["status", "k"]).expect(0);
        let resume = printed_command(&status.stdout, "kpilot resume");
        assert_eq!(resume, ["kpilot", "resume", "k"], "{}", status.stdout);
        run_printed(&dir, &resume).expect(0);
        let out = step_output(&dir, "k", "long");
        assert_eq!(out["takenOver"], json!(1), "{out}");
        assert_eq!(out["exitCode"], json!(0), "{out}");
        let jobs = created("jobs", &ns);
        assert_eq!(jobs.len(), 1, "one Job ever: {jobs:?}");
        assert_eq!(jobs.values().next(), Some(&1), "{jobs:?}");
        assert!(!uid.is_null());
        assert_cleaned_up(&ns, "k");
    }
);

kptest!(
    a_non_idempotent_image_step_found_running_is_held_with_what_kpilot_found,
    |dir| {
        let mut made = Created::default();
        let (ns, label) = place(&mut made, "img-held");
        let steps = format!(
            r#"    - id: migrate
      phase: upgrade
      timeout: 120s
      image: {{image: registry.invalid/migrate:1, namespace: {ns},
              nodeSelector: {{kpilot-test: {label}}}, annotations: {slow}}}
"#,
            slow = ending(0, "6s", None)
        );
        let wf = workflow(&dir, "img-held", &steps);
        run_and_kill_9(&dir, &wf, "h", &ns);
        let first = objects("jobs", &ns, "h");
        assert_eq!(first.len(), 1);
        let first_name = first[0]["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();

        // A resume without a decision holds the step, saying what is in the cluster.
        super::kp(&dir, &["resume", "h"]).expect(3);
        let status = dir.status("h");
        assert_eq!(
            crate::util::step_field(&status, "migrate", "state"),
            "interrupted"
        );
        let reason = crate::util::step_field(&status, "migrate", "reason");
        assert!(
            reason.contains(&format!("kpilot found Job `{ns}/{first_name}`")),
            "{reason}"
        );
        let text = dir.kp(&["status", "h"]).expect(0);
        let retry = printed_line(&text.stdout, "kpilot resume h --retry");
        assert_eq!(
            retry,
            ["kpilot", "resume", "h", "--retry", "migrate"],
            "{}",
            text.stdout
        );
        run_printed(&dir, &retry).expect(0);
        let out = step_output(&dir, "h", "migrate");
        assert_eq!(out["takenOver"], Value::Null, "a retry replaces: {out}");
        let jobs = created("jobs", &ns);
        assert_eq!(jobs.len(), 2, "the first Job and the retry's: {jobs:?}");
        assert!(jobs.contains_key(&first_name), "{jobs:?}");
        assert_cleaned_up(&ns, "h");
    }
);

kptest!(a_kept_failure_names_the_command_that_deletes_it, |dir| {
    let mut made = Created::default();
    let (ns, label) = place(&mut made, "img-keep");
    let steps = format!(
        r#"    - id: kept
      phase: pre-check
      timeout: 60s
      image: {{image: registry.invalid/probe:1, namespace: {ns}, keepOnFailure: true,
              nodeSelector: {{kpilot-test: {label}}}, annotations: {bad}}}
"#,
        bad = ending(2, "100ms", None)
    );
    let wf = workflow(&dir, "img-keep", &steps);
    super::kp(&dir, &["run", &wf, "--run-id", "kept"]).expect(1);
    let out = step_output(&dir, "kept", "kept");
    assert_eq!(out["kept"], json!(true), "{out}");
    assert_eq!(objects("jobs", &ns, "kept").len(), 1, "kept for a person");
    let status = dir.status("kept");
    let reason = crate::util::step_field(&status, "kept", "reason");
    let delete = printed_command(&reason, "kubectl ");
    assert_eq!(
        &delete[..4],
        ["kubectl", "-n", ns.as_str(), "delete"],
        "{reason}"
    );
    let args: Vec<&str> = delete[1..].iter().map(String::as_str).collect();
    kubectl(&args, None);
    assert_cleaned_up(&ns, "kept");
});

kptest!(
    a_missing_namespace_a_missing_service_account_and_podsecurity_fail_naming_the_step,
    |dir| {
        let mut made = Created::default();
        let (ns, label) = place(&mut made, "img-refused");
        let strict = format!("{ns}-strict");
        made.create(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": strict, "labels": {"pod-security.kubernetes.io/enforce": "baseline"}},
    }));
        let steps = format!(
            r#"    - id: no-namespace
      phase: pre-check
      image: {{image: registry.invalid/probe:1, namespace: {ns}-absent}}
    - id: no-account
      phase: pre-check
      image: {{image: registry.invalid/probe:1, namespace: {ns}, serviceAccount: absent}}
    - id: privileged
      phase: pre-check
      image: {{image: registry.invalid/probe:1, namespace: {strict}, privileged: true,
              nodeSelector: {{kpilot-test: {label}}}}}
"#
        );
        let wf = workflow(&dir, "img-refused", &steps);
        let ran = super::kp(&dir, &["run", &wf, "--run-id", "ref"]).expect(1);
        let status = dir.status("ref");
        let reason = |id: &str| crate::util::step_field(&status, id, "reason");
        assert!(
            reason("no-namespace").contains(&format!("namespace `{ns}-absent` does not exist")),
            "{}",
            reason("no-namespace")
        );
        assert!(reason("no-namespace").contains("kubectl create namespace"));
        assert!(
            reason("no-account").contains(&format!(
                "service account `absent` does not exist in namespace `{ns}`"
            )),
            "{}",
            reason("no-account")
        );
        assert!(
            reason("privileged").contains("violates PodSecurity \"baseline"),
            "{}",
            reason("privileged")
        );
        // The end of the run names each failed step.
        for id in ["no-namespace", "no-account", "privileged"] {
            assert!(ran.stderr.contains(id), "{id}: {}", ran.stderr);
        }
        for n in [ns.as_str(), strict.as_str()] {
            assert!(created("jobs", n).is_empty(), "nothing created in {n}");
        }
    }
);

kptest!(
    an_image_body_with_a_mistake_is_refused_naming_file_step_and_field,
    |dir| {
        let wf = workflow(
        &dir,
        "img-bad",
        "    - id: probe\n      phase: pre-check\n      image: {image: a, result: {file: out.json}}\n",
    );
        let ran = dir.kp(&["validate", &wf]).expect(2);
        assert!(ran.stderr.contains("img-bad.yaml"), "{}", ran.stderr);
        assert!(ran.stderr.contains("`probe`"), "{}", ran.stderr);
        assert!(
            ran.stderr
                .contains("`image.result.file` `out.json` is not an absolute path"),
            "{}",
            ran.stderr
        );
        assert!(!dir.exists("state"), "nothing written");
    }
);

kptest!(
    abort_restore_deletes_the_job_a_killed_run_left_behind,
    |dir| {
        let mut made = Created::default();
        let (ns, label) = place(&mut made, "img-abort");
        let steps = format!(
            r#"    - id: migrate
      phase: upgrade
      timeout: 120s
      image: {{image: registry.invalid/migrate:1, namespace: {ns},
              nodeSelector: {{kpilot-test: {label}}}, annotations: {never}}}
"#,
            never = ending(0, "1h", None)
        );
        let wf = workflow(&dir, "img-abort", &steps);
        run_and_kill_9(&dir, &wf, "a", &ns);
        assert_eq!(objects("jobs", &ns, "a").len(), 1);
        let aborted = super::kp(&dir, &["abort", "a"]).expect(0);
        assert!(aborted.stderr.contains("left Job"), "{}", aborted.stderr);
        let restore = printed_command(&aborted.stderr, "kpilot abort a --restore");
        assert_eq!(restore, ["kpilot", "abort", "a", "--restore"]);
        let restored = run_printed(&dir, &restore).expect(0);
        assert!(
            restored.stderr.contains("deleted Job"),
            "{}",
            restored.stderr
        );
        assert_cleaned_up(&ns, "a");
        // Nothing is left to say.
        let again = super::kp(&dir, &["abort", "a"]).expect(0);
        assert!(!again.stderr.contains("left Job"), "{}", again.stderr);
    }
);

kptest!(
    a_per_node_image_step_pins_a_pod_to_each_agent_of_the_inventory_and_refuses_a_pool_member,
    |dir| {
        let mut made = Created::default();
        let label = unique("img-inv");
        namespace(&mut made, &label);
        let nodes = [format!("{label}-a"), format!("{label}-b")];
        for n in &nodes {
            kwok_node(&mut made, n, &label);
        }
        // The agents are never asked anything: an image step acts through the
        // API server, for the agent's node.
        dir.write_secret(
            "agent-token",
            "a-token-that-image-steps-never-send-to-any-agent\n",
        );
        let pin = format!("sha256:{}", "ab".repeat(32));
        dir.write(
        "inventory.yaml",
        &format!(
            "tokenFile: agent-token\nfingerprint: {pin}\nagents:\n  - {{name: {}, address: 127.0.0.1:9}}\n  - {{name: {}, address: 127.0.0.1:9}}\n",
            nodes[0], nodes[1]
        ),
    );
        let steps = format!(
            r#"    - id: each
      phase: pre-check
      executor: per-node
      timeout: 60s
      image: {{image: registry.invalid/probe:1, namespace: {label}, annotations: {ok}}}
    - id: once
      phase: pre-check
      executor: pair
      timeout: 60s
      image: {{image: registry.invalid/probe:1, namespace: {label}}}
  executors:
    - {{name: pair, nodes: [{a}, {b}]}}
"#,
            ok = ending(0, "100ms", None),
            a = nodes[0],
            b = nodes[1]
        );
        let wf = workflow(&dir, "img-inv", &steps);
        super::kp(
            &dir,
            &[
                "run",
                &wf,
                "--run-id",
                "inv",
                "--inventory",
                "inventory.yaml",
            ],
        )
        .expect(1);
        let status = dir.status("inv");
        let pinned: BTreeSet<String> = status["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .filter(|s| s["id"] == "each" && s["instance"] != "global")
            .map(|s| {
                assert_eq!(s["state"], "succeeded", "{s}");
                s["output"]["node"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        assert_eq!(pinned, nodes.iter().cloned().collect::<BTreeSet<_>>());
        let reason = crate::util::step_field(&status, "once", "reason");
        assert!(reason.contains("give the pool `perNode: true`"), "{reason}");
        assert_cleaned_up(&label, "inv");
    }
);
