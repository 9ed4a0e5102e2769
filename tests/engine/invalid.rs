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
