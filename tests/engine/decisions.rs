//! r8: after kill -9, a person does exactly what kpilot prints — a plain
//! `kpilot resume RUN`, then the `--retry STEP` or `--skip STEP --reason TEXT`
//! it names — and the run goes on, for a step caught running and for one
//! already held as interrupted.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::Rng as _;

use crate::util::{step_field, Dir, Ran};

/// One non-idempotent step that sleeps until the file `go` exists, then a
/// second one after it. Each start is counted in `STEP.starts`.
const HELD: &str = "apiVersion: kpilot/v1
kind: Workflow
metadata: {name: held}
spec:
  steps:
    - id: migrate
      phase: upgrade
      command: [sh, -c, \"echo x >> migrate.starts; while [ ! -e go ]; do sleep 0.05; done\"]
    - id: after
      phase: post-check
      needs: [migrate]
      command: [sh, -c, \"echo x >> after.starts\"]
";

/// Starts `kpilot ARGS` and kills it with SIGKILL once `file` exists.
fn kill_9_once(dir: &Dir, args: &[&str], file: &str) {
    let mut child = dir
        .cmd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kpilot");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.exists(file) {
        assert!(Instant::now() < deadline, "{file} never appeared");
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "kpilot ended before {file} appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    crate::util::kill_9_and_wait_for_guardians(child);
}

/// The commands kpilot printed for a person to run (`    kpilot …` lines),
/// as argument lists without the leading `kpilot`.
fn printed_commands(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("kpilot "))
        .filter(|l| l.starts_with("resume ") || l.starts_with("approve "))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// A printed command as the person runs it: their reason in place of `TEXT`.
fn with_reason(command: &[String]) -> Vec<String> {
    command
        .iter()
        .map(|a| {
            if a == "TEXT" {
                "checked-by-hand".into()
            } else {
                a.clone()
            }
        })
        .collect()
}

/// The printed command that takes `decision` (`--retry` or `--skip`), with
/// the person's reason in place of `TEXT`.
fn decide(printed: &str, decision: &str) -> Vec<String> {
    let command = printed_commands(printed)
        .into_iter()
        .find(|c| c.iter().any(|a| a == decision))
        .unwrap_or_else(|| panic!("kpilot printed no `{decision}` command:\n{printed}"));
    with_reason(&command)
}

fn kp(dir: &Dir, args: &[String]) -> Ran {
    dir.kp(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn starts(dir: &Dir, step: &str) -> usize {
    dir.read(&format!("{step}.starts")).lines().count()
}

/// Crash, plain resume, read what it prints, run the command it names.
fn held_then(decision: &str) -> Dir {
    let dir = Dir::new();
    dir.write("wf.yaml", HELD);
    kill_9_once(&dir, &["run", "wf.yaml", "--run-id", "r"], "migrate.starts");
    // What `status` says after the crash: go on with a plain resume.
    let status = dir.kp(&["status", "r"]).expect(0);
    assert!(
        status.stdout.contains("`kpilot resume r` goes on"),
        "{}",
        status.stdout
    );
    let plain = dir.kp(&["resume", "r"]).expect(3);
    assert_eq!(dir.step_state("r", "migrate"), "interrupted");
    assert_eq!(
        starts(&dir, "migrate"),
        1,
        "a plain resume runs nothing again"
    );
    // `status` names the same decisions.
    let status = dir.kp(&["status", "r"]).expect(0);
    assert!(
        status.stdout.contains("kpilot resume r --retry migrate"),
        "{}",
        status.stdout
    );
    dir.write("go", "");
    let ran = kp(&dir, &decide(&plain.stderr, decision)).expect(0);
    assert!(ran.stderr.contains("run r succeeded"), "{}", ran.stderr);
    assert_eq!(starts(&dir, "after"), 1);
    dir
}

kptest!(
    r8_retry_as_printed_after_kill_9_runs_the_held_step_again,
    |_d| {
        let dir = held_then("--retry");
        assert_eq!(starts(&dir, "migrate"), 2);
        assert_eq!(step_field(&dir.status("r"), "migrate", "attempts"), "2");
    }
);

kptest!(
    r8_skip_as_printed_after_kill_9_vouches_for_the_held_step,
    |_d| {
        let dir = held_then("--skip");
        assert_eq!(starts(&dir, "migrate"), 1);
        let reason = step_field(&dir.status("r"), "migrate", "reason");
        assert!(reason.contains("checked-by-hand"), "{reason}");
    }
);

kptest!(
    r8_retry_of_a_step_caught_running_needs_no_plain_resume,
    |dir| {
        dir.write("wf.yaml", HELD);
        kill_9_once(&dir, &["run", "wf.yaml", "--run-id", "r"], "migrate.starts");
        assert_eq!(dir.step_state("r", "migrate"), "running");
        dir.write("go", "");
        dir.kp(&["resume", "r", "--retry", "migrate"]).expect(0);
        assert_eq!(starts(&dir, "migrate"), 2);
        assert_eq!(starts(&dir, "after"), 1);
    }
);

kptest!(
    r8_skip_of_a_step_caught_running_needs_no_plain_resume,
    |dir| {
        dir.write("wf.yaml", HELD);
        kill_9_once(&dir, &["run", "wf.yaml", "--run-id", "r"], "migrate.starts");
        dir.kp(&[
            "resume",
            "r",
            "--skip",
            "migrate",
            "--reason",
            "done by hand",
        ])
        .expect(0);
        assert_eq!(starts(&dir, "migrate"), 1);
        assert_eq!(starts(&dir, "after"), 1);
    }
);

kptest!(
    r8_a_person_following_kpilot_at_random_kill_moments_finishes_the_run,
    |dir| {
        // 12 non-idempotent steps in a chain of pairs; each makes its own marker
        // directory and fails if it exists, so an effect done twice fails the
        // run. The person decides from the marker: present, skip; absent, retry.
        let mut wf = String::from(
        "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: person}\nspec:\n  concurrency: 2\n  steps:\n",
    );
        let mut ids = Vec::new();
        for layer in 0..6 {
            for k in 0..2 {
                let id = format!("s{layer}-{k}");
                let needs = if layer == 0 {
                    String::new()
                } else {
                    format!("s{}-0, s{}-1", layer - 1, layer - 1)
                };
                wf.push_str(&format!(
                "    - id: {id}\n      phase: upgrade\n      needs: [{needs}]\n      command: [python3, -c, \"import os, time; time.sleep(0.08); os.mkdir('marks/' + os.environ['KPILOT_STEP_ID']); time.sleep(0.04)\"]\n"
            ));
                ids.push(id);
            }
        }
        dir.write("wf.yaml", &wf);
        std::fs::create_dir(dir.join("marks")).expect("mkdir");
        let mut rng = rand::rng();
        let mut next: Vec<String> = ["run", "wf.yaml", "--run-id", "r"]
            .map(String::from)
            .to_vec();
        let (mut kills, mut retried, mut skipped, mut plain) = (0, 0, 0, 0);
        let mut done = false;
        for round in 0..120 {
            let args = next.clone();
            let mut child = dir
                .cmd(&args.iter().map(String::as_str).collect::<Vec<_>>())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("kpilot.err")).expect("stderr file"))
                .spawn()
                .expect("spawn");
            // Random kill moments, in a window that widens round by round: on a
            // loaded machine kpilot may take longer than the first window to
            // reach a step at all.
            let budget = if round < 40 {
                Duration::from_millis(rng.random_range(30..400 + 40 * round as u64))
            } else {
                Duration::from_secs(60)
            };
            let deadline = Instant::now() + budget;
            let mut code = None;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    code = Some(status.code());
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let printed = match code {
                None => {
                    crate::util::kill_9_and_wait_for_guardians(child);
                    kills += 1;
                    None
                }
                Some(Some(0)) => {
                    done = true;
                    break;
                }
                Some(Some(3)) => Some(dir.read("kpilot.err")),
                Some(other) => {
                    let err = dir.read("kpilot.err");
                    // Killed while the run was being created: start it again.
                    if other == Some(2) && err.contains("no run `r`") {
                        next = ["run", "wf.yaml", "--run-id", "r"]
                            .map(String::from)
                            .to_vec();
                        continue;
                    }
                    if other == Some(2) && err.contains("already exists") {
                        next = vec!["resume".into(), "r".into()];
                        continue;
                    }
                    panic!("round {round}: {args:?} exited {other:?}:\n{err}");
                }
            };
            // A decision that ran to its end must have moved the step it named.
            if let (Some(_), Some(i)) = (&printed, args.iter().position(|a| a == "--retry")) {
                let step = &args[i + 1];
                assert_ne!(
                    dir.step_state("r", step),
                    "interrupted",
                    "round {round}: `kpilot {}` left {step} interrupted",
                    args.join(" ")
                );
            }
            let status = dir.kp(&["status", "r"]);
            if status.code != 0 {
                assert!(status.stderr.contains("no run `r`"), "{}", status.stderr);
                next = ["run", "wf.yaml", "--run-id", "r"]
                    .map(String::from)
                    .to_vec();
                continue;
            }
            // Killed after the run ended (while it printed its summary): the
            // person reads `succeeded` and is done.
            if printed.is_none() && dir.status("r")["state"] == "succeeded" {
                done = true;
                break;
            }
            // What the person reads: the blocked run's message, or `status`.
            let text = printed.unwrap_or(status.stdout);
            let commands = printed_commands(&text);
            let Some(first) = commands
                .iter()
                .find(|c| c.iter().any(|a| a == "--retry" || a == "--skip"))
            else {
                // Nothing held yet: `status` says to go on with a plain resume.
                assert!(
                    text.contains("`kpilot resume r` goes on") || text.contains("kpilot resume r"),
                    "round {round}: nothing to do is printed:\n{text}"
                );
                plain += 1;
                next = vec!["resume".into(), "r".into()];
                continue;
            };
            let at = first
                .iter()
                .position(|a| a == "--retry" || a == "--skip")
                .expect("decision");
            let step = first[at + 1].clone();
            let decision = if dir.exists(&format!("marks/{step}")) {
                skipped += 1;
                "--skip"
            } else {
                retried += 1;
                "--retry"
            };
            // The printed command for this step and this decision.
            next = with_reason(
                commands
                    .iter()
                    .find(|c| c.contains(&step) && c.iter().any(|a| a == decision))
                    .unwrap_or_else(|| {
                        panic!("round {round}: no `{decision} {step}` printed:\n{text}")
                    }),
            );
        }
        assert!(done, "the run never finished:\n{}", dir.read("kpilot.err"));
        let status = dir.status("r");
        assert_eq!(status["state"], "succeeded", "{status:#}");
        for id in &ids {
            assert!(dir.exists(&format!("marks/{id}")), "{id} never took effect");
        }
        assert!(kills >= 5, "only {kills} kills landed");
        assert!(retried + skipped > 0, "no decision was ever needed");
        eprintln!("kills {kills}, plain resumes {plain}, retried {retried}, skipped {skipped}");
    }
);

kptest!(r8_gate_and_approval_commands_work_as_printed, |dir| {
    dir.write(
        "wf.yaml",
        "apiVersion: kpilot/v1
kind: Workflow
metadata: {name: printed}
spec:
  steps:
    - {id: disk, phase: pre-check, command: [test, -e, disk-ok]}
    - {id: pre-gate, phase: pre-check, needs: [disk], gate: {}}
    - {id: go-ahead, phase: upgrade, needs: [pre-gate], approval: {message: \"go?\"}}
    - {id: upgrade, phase: upgrade, needs: [go-ahead], command: [touch, upgraded]}
",
    );
    let gated = dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(3);
    let commands = printed_commands(&gated.stderr);
    assert_eq!(
        commands,
        vec![vec!["resume".to_string(), "r".into()]],
        "{}",
        gated.stderr
    );
    dir.write("disk-ok", "");
    let approval = kp(&dir, &commands[0]).expect(3);
    let commands = printed_commands(&approval.stderr);
    assert_eq!(
        commands,
        vec![vec!["approve".to_string(), "r".into(), "go-ahead".into()]],
        "{}",
        approval.stderr
    );
    assert!(!dir.exists("upgraded"));
    kp(&dir, &commands[0]).expect(0);
    assert!(dir.exists("upgraded"));
});

/// The commands in backquotes of an error line, without the leading `kpilot`.
fn quoted_commands(text: &str) -> Vec<Vec<String>> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|c| c.strip_prefix("kpilot "))
        .map(|c| c.split_whitespace().map(str::to_owned).collect())
        .collect()
}

kptest!(r8_commands_named_in_errors_work_as_printed, |dir| {
    dir.write("wf.yaml", HELD);
    dir.write("go", "");
    dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(0);
    // An unknown step names `kpilot status r`.
    let unknown = dir.kp(&["resume", "r", "--retry", "nope"]).expect(2);
    let named = quoted_commands(&unknown.stderr);
    assert_eq!(
        named,
        vec![vec!["status".to_string(), "r".into()]],
        "{}",
        unknown.stderr
    );
    kp(&dir, &named[0]).expect(0);
    // An unknown run names `kpilot runs`.
    let missing = dir.kp(&["status", "nope"]).expect(2);
    let named = quoted_commands(&missing.stderr);
    assert_eq!(named, vec![vec!["runs".to_string()]], "{}", missing.stderr);
    assert!(kp(&dir, &named[0]).expect(0).stdout.contains("r "));
    // A run id taken names `kpilot resume r`, which goes on with it.
    let taken = dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(2);
    let named = quoted_commands(&taken.stderr);
    assert_eq!(
        named,
        vec![vec!["resume".to_string(), "r".into()]],
        "{}",
        taken.stderr
    );
    kp(&dir, &named[0]).expect(0);
    // A failed run names `kpilot logs r STEP` and `kpilot resume r`.
    dir.write(
        "fails.yaml",
        "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: fails}\nspec:\n  steps:\n    - {id: check, phase: pre-check, command: [sh, -c, \"echo checked; test -e fixed\"]}\n",
    );
    let failed = dir.kp(&["run", "fails.yaml", "--run-id", "f"]).expect(1);
    let named = quoted_commands(&failed.stderr);
    assert_eq!(named.len(), 2, "{}", failed.stderr);
    let logs: Vec<String> = named[0]
        .iter()
        .map(|a| {
            if a == "STEP" {
                "check".into()
            } else {
                a.clone()
            }
        })
        .collect();
    assert_eq!(kp(&dir, &logs).expect(0).stdout, "checked\n");
    dir.write("fixed", "");
    kp(&dir, &named[1]).expect(0);
});
