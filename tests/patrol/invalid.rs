//! Bad Patrol files: exit 2, naming the file, the schedule and the field.

kptest!(bad_patrol_files_exit_2_naming_the_file_and_field, |dir| {
    dir.write(
        "r.yaml",
        "apiVersion: kpilot/v1\nkind: Report\nmetadata: {name: r}\nspec: {}\n",
    );
    let head = "apiVersion: kpilot/v1\nkind: Patrol\nmetadata: {name: p}\nspec:\n  schedules:\n";
    let cases = [
        (
            "- {name: a, cron: \"61 * * * *\", report: r.yaml}",
            "spec.schedules[0] (a).cron",
        ),
        (
            "- {name: a, cron: \"* * *\", report: r.yaml}",
            "spec.schedules[0] (a).cron",
        ),
        (
            "- {name: a, cron: \"* * * * *\", timeZone: Mars/Olympus, report: r.yaml}",
            "spec.schedules[0] (a).timeZone",
        ),
        (
            "- {name: a, cron: \"* * * * *\", report: r.yaml, workflow: r.yaml}",
            "both `report` and `workflow`",
        ),
        (
            "- {name: a, cron: \"* * * * *\"}",
            "neither `report` nor `workflow`",
        ),
        (
            "- {name: a, cron: \"* * * * *\", report: r.yaml, concurrencyPolicy: Sometimes}",
            "spec.schedules[0] (a).concurrencyPolicy",
        ),
        (
            "- {name: a, cron: \"* * * * *\", report: r.yaml, startingDeadline: soon}",
            "spec.schedules[0] (a).startingDeadline",
        ),
        (
            "- {name: a, cron: \"* * * * *\", report: missing.yaml}",
            "spec.schedules[0] (a).report",
        ),
        (
            "- {name: a, cron: \"* * * * *\", report: r.yaml, crn: x}",
            "unknown field `crn`",
        ),
        (
            "- {name: A, cron: \"* * * * *\", report: r.yaml}",
            "spec.schedules[0].name",
        ),
    ];
    for (schedule, want) in cases {
        dir.write("bad.yaml", &format!("{head}    {schedule}\n"));
        let ran = dir.kp(&["patrol", "bad.yaml", "--once"]).expect(2);
        assert!(
            ran.stderr.contains("bad.yaml"),
            "{schedule}: {}",
            ran.stderr
        );
        assert!(
            ran.stderr.contains(want),
            "{schedule}: want {want}: {}",
            ran.stderr
        );
        assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    }
    dir.write("bad.yaml", &format!("{head}    - {{name: a, cron: \"* * * * *\", report: r.yaml}}\n  notify: {{webhook: ftp://x}}\n"));
    let ran = dir.kp(&["patrol", "bad.yaml"]).expect(2);
    assert!(ran.stderr.contains("spec.notify.webhook"), "{}", ran.stderr);
    let ran = dir.kp(&["patrol", "nowhere.yaml"]).expect(2);
    assert!(ran.stderr.contains("nowhere.yaml"), "{}", ran.stderr);
});
