//! kill -9 of kpilot at random moments: every finished side effect happens
//! exactly once after the person resumes with the right decisions.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::Rng as _;

kptest!(kill_9_at_random_moments_loses_nothing, |dir| {
    // 32 non-idempotent steps in layers; each creates its own marker
    // directory, which fails if the marker exists: a step whose effect ran
    // twice fails the run.
    let mut wf = String::from("apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: crash}\nspec:\n  concurrency: 3\n  steps:\n");
    let mut ids = Vec::new();
    for layer in 0..8 {
        for k in 0..4 {
            let id = format!("s{layer}-{k}");
            let needs = if layer == 0 {
                String::new()
            } else {
                format!("s{}-{}, s{}-{}", layer - 1, k, layer - 1, (k + 1) % 4)
            };
            wf.push_str(&format!(
                "    - id: {id}\n      phase: upgrade\n      needs: [{needs}]\n      command: [python3, -c, \"import os, time; time.sleep(0.05); os.mkdir('marks/' + os.environ['KPILOT_STEP_ID'])\"]\n"
            ));
            ids.push(id);
        }
    }
    dir.write("wf.yaml", &wf);
    std::fs::create_dir(dir.join("marks")).expect("mkdir");
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut vouched = BTreeSet::new();
    let mut retried = BTreeSet::new();
    let mut args: Vec<String> = vec![
        "run".into(),
        "wf.yaml".into(),
        "--run-id".into(),
        "r".into(),
    ];
    for round in 0..60 {
        let mut child = dir
            .cmd(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("kpilot.err")).expect("stderr file"))
            .spawn()
            .expect("spawn");
        let wait_ms = if round < 40 {
            rng.random_range(20..300)
        } else {
            60_000
        };
        let deadline = std::time::Instant::now() + Duration::from_millis(wait_ms);
        let mut finished = None;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("try_wait") {
                finished = Some(status.code());
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if finished.is_some() {
            // Already reaped by try_wait; wait returns its status at once.
            let status = child.wait().expect("status");
            if status.code() == Some(0) {
                break;
            }
            // Killed while the run was being created: whichever of `run` and
            // `resume` finds the run where it is, goes on.
            let err = dir.read("kpilot.err");
            if status.code() == Some(2)
                && (err.contains("already exists") || err.contains("no run `r`"))
            {
                args = if args[0] == "run" {
                    vec!["resume".into(), "r".into()]
                } else {
                    vec![
                        "run".into(),
                        "wf.yaml".into(),
                        "--run-id".into(),
                        "r".into(),
                    ]
                };
                continue;
            }
            assert_eq!(
                status.code(),
                Some(3),
                "round {round}: a run may end only succeeded or blocked on interrupted steps; {args:?}:\n{}",
                dir.read("kpilot.err")
            );
        } else {
            // kpilot's guardian kills the steps' processes when kpilot dies;
            // a person looks only once it is done (it exits when they are gone).
            crate::util::kill_9_and_wait_for_guardians(child);
            kills += 1;
        }
        // The person looks at each interrupted step and decides from its effect.
        args = vec!["resume".into(), "r".into()];
        let ran = dir.kp(&["status", "r", "-o", "json"]);
        if ran.code != 0 {
            assert!(
                ran.stderr.contains("no run `r`"),
                "round {round}: status failed:\n{}",
                ran.stderr
            );
            // Killed before the run was created: start it again.
            args = vec![
                "run".into(),
                "wf.yaml".into(),
                "--run-id".into(),
                "r".into(),
            ];
            continue;
        }
        let status: serde_json::Value = serde_json::from_str(&ran.stdout).expect("json");
        for step in status["steps"].as_array().expect("steps") {
            let id = step["id"].as_str().expect("id").to_owned();
            let state = step["state"].as_str().expect("state");
            // A step found `running` is held as interrupted by the resume itself.
            if state == "interrupted" || state == "running" {
                if dir.exists(&format!("marks/{id}")) {
                    args.extend([
                        "--skip".into(),
                        id.clone(),
                        "--reason".into(),
                        "marker present".into(),
                    ]);
                    vouched.insert(id);
                } else {
                    args.extend(["--retry".into(), id.clone()]);
                    retried.insert(id);
                }
            }
        }
    }
    let status = dir.status("r");
    assert_eq!(status["state"], "succeeded", "{status:#}");
    for id in &ids {
        assert!(dir.exists(&format!("marks/{id}")), "{id} never took effect");
    }
    assert!(kills >= 8, "only {kills} kills landed");
    eprintln!(
        "kills: {kills}, vouched: {}, retried: {}",
        vouched.len(),
        retried.len()
    );
});
