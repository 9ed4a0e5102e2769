//! Rolling groups: a sub-DAG of member steps per node, rolled at most
//! `maxUnavailable` nodes at a time, durable per node and member.
//!
//! The members run in kpilot (`executor: global`) for each node, so the
//! tests need no agents: the inventory only names the nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::Rng as _;

use crate::util::Dir;

/// An inventory of `n` nodes named `n00`…, with a `zone` label and `n00`
/// (last in name order among `cp` nodes) a control-plane node.
fn inventory(dir: &Dir, n: usize, control_plane: &[&str]) {
    let mut inv = format!(
        "tokenFile: token\nfingerprint: \"sha256:{}\"\nagents:\n",
        "00".repeat(32)
    );
    for k in 0..n {
        let name = format!("n{k:02}");
        let mut labels = format!("zone: z{}", (n - k) % 3);
        if control_plane.contains(&name.as_str()) {
            labels.push_str(", node-role.kubernetes.io/control-plane: \"\"");
        }
        inv.push_str(&format!(
            "  - {{name: {name}, address: \"127.0.0.1:1\", labels: {{{labels}}}}}\n"
        ));
    }
    dir.write_secret("token", &format!("{}\n", "t".repeat(40)));
    dir.write("inv.yaml", &inv);
}

/// A member that appends `NODE MEMBER start|end` to `log` around a sleep.
fn logging(member: &str, needs: &str, extra: &str) -> String {
    format!(
        "        - id: {member}\n          needs: [{needs}]\n          executor: global\n{extra}          command: [sh, -c, \"echo $KPILOT_INSTANCE {member} start >> log; sleep 0.1; echo $KPILOT_INSTANCE {member} end >> log\"]\n"
    )
}

fn workflow(nodes: &str, members: &str) -> String {
    format!(
        "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {{name: roll}}\nspec:\n  concurrency: 4\n  inventory: inv.yaml\n  steps:\n    - id: before\n      phase: pre-check\n      command: [\"true\"]\n    - id: roll\n      phase: upgrade\n      needs: [before]\n      executor: per-node\n      nodes: {nodes}\n      group:\n        steps:\n{members}    - id: after\n      phase: post-check\n      needs: [roll]\n      command: [\"true\"]\n"
    )
}

/// `(node, member, event)` lines of the log, in order.
fn log_lines(dir: &Dir) -> Vec<(String, String, String)> {
    dir.read("log")
        .lines()
        .map(|l| {
            let mut parts = l.split_whitespace().map(str::to_owned);
            (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            )
        })
        .collect()
}

kptest!(
    a_group_rolls_each_node_through_its_steps_within_max_unavailable,
    |dir| {
        inventory(&dir, 6, &["n04"]);
        let members = [
            logging("cordon", "", ""),
            logging("upgrade", "cordon", ""),
            logging("uncordon", "upgrade", ""),
        ]
        .concat();
        dir.write(
            "wf.yaml",
            &workflow(
                "{maxUnavailable: 2, order: {controlPlaneFirst: true, label: zone}}",
                &members,
            ),
        );
        let ran = dir.kp(&["run", "wf.yaml", "--run-id", "r"]);
        assert_eq!(ran.code, 0, "{}\n{}", ran.stdout, ran.stderr);
        let lines = log_lines(&dir);
        // Every node ran its three members once, each after the one it needs.
        let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (node, member, event) in &lines {
            per_node
                .entry(node.clone())
                .or_default()
                .push(format!("{member} {event}"));
        }
        assert_eq!(per_node.len(), 6, "{lines:?}");
        for (node, events) in &per_node {
            assert_eq!(
                events,
                &[
                    "cordon start",
                    "cordon end",
                    "upgrade start",
                    "upgrade end",
                    "uncordon start",
                    "uncordon end"
                ],
                "node {node}"
            );
        }
        // At most two nodes were between their first start and their last end.
        let mut out = BTreeSet::new();
        let mut most = 0;
        for (node, member, event) in &lines {
            match (member.as_str(), event.as_str()) {
                ("cordon", "start") => {
                    out.insert(node.clone());
                }
                ("uncordon", "end") => {
                    out.remove(node);
                }
                _ => {}
            }
            most = most.max(out.len());
        }
        assert!(most <= 2, "{most} nodes were out at once: {lines:?}");
        assert_eq!(most, 2, "maxUnavailable 2 was never used: {lines:?}");
        // The control-plane node first, then by zone, then by name.
        let starts: Vec<&str> = lines
            .iter()
            .filter(|(_, m, e)| m == "cordon" && e == "start")
            .map(|(n, _, _)| n.as_str())
            .collect();
        // Two at a time, so the log shows pairs: the first pair is the
        // control-plane node and the first by zone.
        let first: BTreeSet<&str> = starts[..2].iter().copied().collect();
        assert_eq!(first, BTreeSet::from(["n04", "n00"]), "{starts:?}");
        // The order chosen, kept with the run: zones n00 z0, n01 z2, n02 z1,
        // n03 z0, n05 z1, so z0: n00 n03; z1: n02 n05; z2: n01.
        let status = dir.status("r");
        let roll = status["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["id"] == "roll" && s["instance"] == "global")
            .expect("roll")
            .clone();
        assert_eq!(
            roll["output"]["nodes"],
            serde_json::json!(["n04", "n00", "n03", "n02", "n05", "n01"]),
            "{roll:#}"
        );
        // Every member is a step with an instance per node in the store.
        let status = dir.status("r");
        let steps = status["steps"].as_array().expect("steps");
        for member in ["roll.cordon", "roll.upgrade", "roll.uncordon"] {
            let nodes: Vec<&serde_json::Value> = steps
                .iter()
                .filter(|s| s["id"] == member && s["instance"] != "global")
                .collect();
            assert_eq!(nodes.len(), 6, "{member}: {status:#}");
            assert!(
                nodes.iter().all(|s| s["state"] == "succeeded"),
                "{status:#}"
            );
        }
        assert_eq!(
            crate::util::step_field(&status, "after", "state"),
            "succeeded"
        );
    }
);

kptest!(
    a_failed_member_stops_the_rollout_after_max_failures_and_resume_goes_on,
    |dir| {
        inventory(&dir, 5, &[]);
        // `upgrade` fails on n01 while the file `broken` exists.
        let members = [
        logging("cordon", "", ""),
        "        - id: upgrade\n          needs: [cordon]\n          executor: global\n          command: [sh, -c, \"test ! -e broken-$KPILOT_INSTANCE && echo $KPILOT_INSTANCE upgrade end >> log\"]\n".to_owned(),
        logging("uncordon", "upgrade", ""),
        "        - id: restore\n          needs: [{step: upgrade, on: failure}]\n          executor: global\n          command: [sh, -c, \"echo $KPILOT_INSTANCE restore end >> log\"]\n".to_owned(),
    ]
    .concat();
        dir.write(
            "wf.yaml",
            &workflow("{maxUnavailable: 1, maxFailures: 0}", &members),
        );
        dir.write("broken-n01", "");
        let ran = dir.kp(&["run", "wf.yaml", "--run-id", "r"]);
        assert_eq!(ran.code, 1, "{}\n{}", ran.stdout, ran.stderr);
        let status = dir.status("r");
        assert_eq!(status["state"], "failed", "{status:#}");
        let lines = log_lines(&dir);
        let touched: BTreeSet<&str> = lines.iter().map(|(n, _, _)| n.as_str()).collect();
        // n00 done, n01 failed (its failure branch ran), nothing started after.
        assert_eq!(touched, BTreeSet::from(["n00", "n01"]), "{lines:?}");
        assert!(lines.contains(&("n01".into(), "restore".into(), "end".into())));
        assert!(!lines.contains(&("n01".into(), "uncordon".into(), "start".into())));
        let roll = crate::util::step_field(&status, "roll", "reason");
        assert!(
            roll.contains("n01") && roll.contains("upgrade failed"),
            "{roll}"
        );
        assert!(roll.contains("3 not started"), "{roll}");

        // The person fixes the node; resume re-runs n01 from its failed member
        // and rolls the rest.
        std::fs::remove_file(dir.join("broken-n01")).expect("fix");
        let ran = dir.kp(&["resume", "r"]);
        assert_eq!(ran.code, 0, "{}\n{}", ran.stdout, ran.stderr);
        let lines = log_lines(&dir);
        let count = |node: &str, member: &str| {
            lines
                .iter()
                .filter(|(n, m, e)| n == node && m == member && e == "end")
                .count()
        };
        assert_eq!(
            count("n01", "cordon"),
            1,
            "cordon on n01 succeeded before: not again"
        );
        assert_eq!(count("n01", "upgrade"), 1);
        assert_eq!(count("n00", "upgrade"), 1, "n00 was done");
        for node in ["n02", "n03", "n04"] {
            assert_eq!(count(node, "uncordon"), 1, "{node}: {lines:?}");
        }
    }
);

kptest!(
    kill_9_at_random_moments_of_a_rolling_group_loses_and_repeats_nothing,
    |dir| {
        // Each member makes a marker of its own per node and fails if it
        // exists: a member whose effect ran twice fails the run. `upgrade` is
        // not idempotent, so a resume holds it for the person, who decides
        // from the marker, as kpilot's printed commands say.
        inventory(&dir, 8, &[]);
        let member = |id: &str, needs: &str, idempotent: bool| {
            format!(
            "        - id: {id}\n          needs: [{needs}]\n          executor: global\n          idempotent: {idempotent}\n          command: [python3, -c, \"import os, time; time.sleep(0.03); os.mkdir('marks/' + os.environ['KPILOT_INSTANCE'] + '-{id}')\"]\n"
        )
        };
        // One node at a time: a person's decision names a member, and covers
        // the one node it was interrupted on.
        let members = [
            member("cordon", "", false),
            member("drain", "cordon", false),
            member("upgrade", "drain", false),
            member("uncordon", "upgrade", false),
        ]
        .concat();
        dir.write("wf.yaml", &workflow("{maxUnavailable: 1}", &members));
        std::fs::create_dir(dir.join("marks")).expect("mkdir");
        let mut rng = rand::rng();
        let mut kills = 0;
        let mut args: Vec<String> = ["run", "wf.yaml", "--run-id", "r"]
            .map(String::from)
            .to_vec();
        let mut done = false;
        for round in 0..80 {
            let mut child = dir
                .cmd(&args.iter().map(String::as_str).collect::<Vec<_>>())
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(dir.join("kpilot.err")).expect("stderr file"))
                .spawn()
                .expect("spawn");
            let wait_ms = if round < 50 {
                rng.random_range(20..400)
            } else {
                60_000
            };
            let deadline = std::time::Instant::now() + Duration::from_millis(wait_ms);
            let mut finished = None;
            while std::time::Instant::now() < deadline {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    finished = Some(status);
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            match finished {
                Some(status) if status.code() == Some(0) => {
                    done = true;
                    break;
                }
                Some(status) => {
                    let err = dir.read("kpilot.err");
                    if status.code() == Some(2)
                        && (err.contains("already exists") || err.contains("no run `r`"))
                    {
                        args = if args[0] == "run" {
                            ["resume", "r"].map(String::from).to_vec()
                        } else {
                            ["run", "wf.yaml", "--run-id", "r"]
                                .map(String::from)
                                .to_vec()
                        };
                        continue;
                    }
                    assert_eq!(status.code(), Some(3), "round {round}: {args:?}:\n{err}");
                }
                None => {
                    crate::util::kill_9_and_wait_for_guardians(child);
                    kills += 1;
                }
            }
            let ran = dir.kp(&["status", "r", "-o", "json"]);
            if ran.code != 0 {
                args = ["run", "wf.yaml", "--run-id", "r"]
                    .map(String::from)
                    .to_vec();
                continue;
            }
            // The person decides each member node left running or interrupted
            // from its marker, with the commands kpilot prints for the member.
            let status: serde_json::Value = serde_json::from_str(&ran.stdout).expect("json");
            args = ["resume", "r"].map(String::from).to_vec();
            let mut decided = BTreeSet::new();
            for step in status["steps"].as_array().expect("steps") {
                let id = step["id"].as_str().expect("id");
                let state = step["state"].as_str().expect("state");
                let instance = step["instance"].as_str().expect("instance");
                // `before` and `after` run `true`: running them again is harmless.
                if !id.starts_with("roll") && (state == "interrupted" || state == "running") {
                    if decided.insert(id.to_owned()) {
                        args.extend(["--retry".into(), id.into()]);
                    }
                    continue;
                }
                if !id.starts_with("roll.") || instance == "global" {
                    continue;
                }
                if state == "interrupted" || state == "running" {
                    let member = &id["roll.".len()..];
                    let mark = format!("marks/{instance}-{member}");
                    if decided.insert(id.to_owned()) {
                        if dir.exists(&mark) {
                            args.extend([
                                "--skip".into(),
                                id.into(),
                                "--reason".into(),
                                "marker present".into(),
                            ]);
                        } else {
                            args.extend(["--retry".into(), id.into()]);
                        }
                    }
                }
            }
        }
        assert!(done, "the run never finished");
        let status = dir.status("r");
        assert_eq!(status["state"], "succeeded", "{status:#}");
        for k in 0..8 {
            for member in ["cordon", "drain", "upgrade", "uncordon"] {
                assert!(
                    dir.exists(&format!("marks/n{k:02}-{member}")),
                    "n{k:02} {member} never took effect"
                );
            }
        }
        assert!(kills >= 8, "only {kills} kills landed");
    }
);

kptest!(
    bad_groups_are_refused_naming_the_step_and_what_to_write,
    |dir| {
        inventory(&dir, 2, &[]);
        let cases: [(&str, &str, &str); 6] = [
        (
            "{maxUnavailable: 1}",
            "        - id: a\n          nodes: {maxParallel: 1}\n          command: [\"true\"]\n",
            "a member of a group cannot have `nodes`",
        ),
        (
            "{maxUnavailable: 1}",
            "        - id: a\n          needs: [nope]\n          command: [\"true\"]\n",
            "not a step of group `roll`",
        ),
        (
            "{maxUnavailable: 0%}",
            "        - id: a\n          command: [\"true\"]\n",
            "maxUnavailable",
        ),
        (
            "{maxUnavailable: 1, maxParallel: 2}",
            "        - id: a\n          command: [\"true\"]\n",
            "keep one",
        ),
        (
            "{maxUnavailable: 1}",
            "        - id: a\n          needs: [b]\n          command: [\"true\"]\n        - id: b\n          needs: [a]\n          command: [\"true\"]\n",
            "cycle",
        ),
        (
            "{maxUnavailable: 1}",
            "        - id: a.b\n          command: [\"true\"]\n",
            "`.` joins a group",
        ),
    ];
        for (nodes, members, want) in cases {
            dir.write("wf.yaml", &workflow(nodes, members));
            let ran = dir.kp(&["validate", "wf.yaml"]);
            assert_eq!(ran.code, 2, "{want}: {}\n{}", ran.stdout, ran.stderr);
            assert!(
                ran.stderr.contains(want),
                "want {want:?} in:\n{}",
                ran.stderr
            );
            assert!(ran.stderr.contains("wf.yaml"), "{}", ran.stderr);
        }
        // A group on the global executor rolls over nothing.
        let text = workflow(
            "{maxUnavailable: 1}",
            "        - id: a\n          command: [\"true\"]\n",
        )
        .replace(
            "      executor: per-node\n      nodes: {maxUnavailable: 1}\n",
            "",
        );
        dir.write("wf.yaml", &text);
        let ran = dir.kp(&["validate", "wf.yaml"]);
        assert_eq!(ran.code, 2, "{}", ran.stderr);
        assert!(ran.stderr.contains("executor: per-node"), "{}", ran.stderr);
        // A step outside the group needs the group, not a member.
        let text = workflow(
            "{maxUnavailable: 1}",
            "        - id: a\n          command: [\"true\"]\n",
        )
        .replace("needs: [roll]", "needs: [roll.a]");
        dir.write("wf.yaml", &text);
        let ran = dir.kp(&["validate", "wf.yaml"]);
        assert_eq!(ran.code, 2, "{}", ran.stderr);
        assert!(
            ran.stderr.contains("needs the whole group"),
            "{}",
            ran.stderr
        );
    }
);

/// Runs kpilot until `file` appears in `dir`, then kill -9.
fn kill_9_when(dir: &Dir, args: &[&str], file: &str) {
    let mut child = dir
        .cmd(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !dir.exists(file) {
        assert!(
            std::time::Instant::now() < deadline,
            "{file} never appeared"
        );
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "kpilot ended before {file}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    crate::util::kill_9_and_wait_for_guardians(child);
}

/// A group whose `upgrade` member (not idempotent) waits for the file `go`
/// on node n01; kill -9 while it waits, resume, then follow what kpilot
/// prints for the member: `decision` is `--retry` or `--skip`.
fn member_held_then(decision: &str) -> Dir {
    let dir = Dir::new();
    inventory(&dir, 3, &[]);
    let members = [
        logging("cordon", "", ""),
        "        - id: upgrade\n          needs: [cordon]\n          executor: global\n          command: [sh, -c, \"echo $KPILOT_INSTANCE upgrade start >> log; touch started-$KPILOT_INSTANCE; while [ $KPILOT_INSTANCE = n01 ] && [ ! -e go ]; do sleep 0.05; done; echo $KPILOT_INSTANCE upgrade end >> log\"]\n".to_owned(),
        logging("uncordon", "upgrade", ""),
    ]
    .concat();
    dir.write("wf.yaml", &workflow("{maxUnavailable: 1}", &members));
    kill_9_when(&dir, &["run", "wf.yaml", "--run-id", "r"], "started-n01");
    let plain = dir.kp(&["resume", "r"]);
    assert_eq!(plain.code, 3, "{}\n{}", plain.stdout, plain.stderr);
    // n01 is held out; n02 never started (maxUnavailable 1).
    let lines = log_lines(&dir);
    assert!(!lines.iter().any(|(n, _, _)| n == "n02"), "{lines:?}");
    let status = dir.kp(&["status", "r"]);
    let printed = format!("{}\n{}", plain.stderr, status.stdout);
    let command: Vec<String> = printed
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("kpilot "))
        .filter(|l| l.contains(decision) && l.contains("roll.upgrade"))
        .map(|l| {
            l.split_whitespace()
                .map(|a| {
                    if a == "TEXT" {
                        "checked-by-hand".to_owned()
                    } else {
                        a.to_owned()
                    }
                })
                .collect()
        })
        .next()
        .unwrap_or_else(|| panic!("no `{decision} roll.upgrade` printed:\n{printed}"));
    dir.write("go", "");
    let ran = dir.kp(&command.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(ran.code, 0, "{command:?}: {}\n{}", ran.stdout, ran.stderr);
    let lines = log_lines(&dir);
    for node in ["n00", "n01", "n02"] {
        assert!(
            lines.contains(&(node.into(), "uncordon".into(), "end".into())),
            "{node}: {lines:?}"
        );
    }
    dir
}

kptest!(a_member_held_after_kill_9_is_retried_as_printed, |_d| {
    let dir = member_held_then("--retry");
    let starts = log_lines(&dir)
        .iter()
        .filter(|(n, m, e)| n == "n01" && m == "upgrade" && e == "start")
        .count();
    assert_eq!(starts, 2, "the retried member ran again on n01");
});

kptest!(a_member_held_after_kill_9_is_skipped_as_printed, |_d| {
    let dir = member_held_then("--skip");
    let starts = log_lines(&dir)
        .iter()
        .filter(|(n, m, e)| n == "n01" && m == "upgrade" && e == "start")
        .count();
    assert_eq!(starts, 1, "a vouched member does not run again");
    let status = dir.status("r");
    let n01 = status["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == "roll.upgrade" && s["instance"] == "n01")
        .expect("roll.upgrade on n01")
        .clone();
    assert!(
        n01["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("checked-by-hand"),
        "{n01:#}"
    );
});
