//! `--listen`: `/metrics` scraped and parsed by PyPI's prometheus-client
//! parser (`text_string_to_metric_families`), the one Prometheus's own
//! Python client uses, not by string matching.

use std::time::Duration;

use serde_json::Value;

use super::{slots, start_daemon, terminate, wait_for, write_patrol};
use crate::util::Reap;

/// The venv `scripts/test-tools` creates, with prometheus-client in it.
fn python() -> std::path::PathBuf {
    let home = std::env::var_os("HOME").expect("HOME");
    let python = std::path::Path::new(&home).join(".cache/kpilot/pyenv/bin/python");
    let has_client = std::process::Command::new(&python)
        .args(["-c", "import prometheus_client.parser"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_client,
        "{} with the prometheus-client package is missing: run scripts/test-tools (it creates the venv ~/.cache/kpilot/pyenv)",
        python.display()
    );
    python
}

const PARSE: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
out = []
for family in text_string_to_metric_families(text):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

kptest!(metrics_are_served_in_the_prometheus_text_format, |dir| {
    let python = python();
    dir.write(
        "tick.yaml",
        "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: tick}\nspec:\n  steps:\n    - {id: say, phase: patrol, command: [\"true\"]}\n",
    );
    write_patrol(
        &dir,
        "metered",
        "    - {name: tick, cron: \"*/2 * * * * *\", workflow: tick.yaml}\n",
        "",
    );
    let daemon = start_daemon(&dir, 1, &["--listen", "127.0.0.1:0"]);
    let _reap = Reap(daemon.id() as i32);
    let mut url = String::new();
    wait_for(
        "the daemon says where it serves",
        Duration::from_secs(30),
        || {
            let err = dir.read("daemon-1.err");
            match err.split("serving ").nth(1) {
                Some(rest) => {
                    url = rest.lines().next().unwrap_or("").trim().to_owned();
                    true
                }
                None => false,
            }
        },
    );
    wait_for("2 slots passed", Duration::from_secs(60), || {
        slots(&dir, "tick")
            .iter()
            .filter(|s| s["state"] == "passed")
            .count()
            >= 2
    });
    let out = std::process::Command::new(&python)
        .args(["-c", PARSE, &url])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    let find = |name: &str, label: Option<(&str, &str)>| {
        samples
            .iter()
            .find(|s| {
                s["name"] == name
                    && s["labels"]["patrol"] == "metered"
                    && s["labels"]["schedule"] == "tick"
                    && label.is_none_or(|(k, v)| s["labels"][k] == v)
            })
            .and_then(|s| s["value"].as_f64())
            .unwrap_or_else(|| panic!("no sample {name} {label:?} in {samples:#?}"))
    };
    assert!(find("kpilot_patrol_runs_total", Some(("outcome", "passed"))) >= 2.0);
    assert!(find("kpilot_patrol_duration_seconds_count", None) >= 2.0);
    assert!(
        find(
            "kpilot_patrol_duration_seconds_bucket",
            Some(("le", "+Inf"))
        ) >= 2.0
    );
    assert!(find("kpilot_patrol_last_success_timestamp_seconds", None) > 1.7e9);
    assert_eq!(find("kpilot_patrol_slots_skipped_total", None), 0.0);
    assert_eq!(find("kpilot_patrol_slots_missed_total", None), 0.0);
    assert_eq!(find("kpilot_notifier_failures_total", None), 0.0);
    // The report families of the schedule's last patrol (a workflow's step is
    // a check of its own, in its phase's category).
    assert_eq!(find("kpilot_check_failed", Some(("check", "say"))), 0.0);
    assert_eq!(find("kpilot_check_error", Some(("check", "say"))), 0.0);
    assert_eq!(
        find("kpilot_check_failing_items", Some(("check", "say"))),
        0.0
    );
    assert_eq!(
        find("kpilot_report_checks", Some(("outcome", "passed"))),
        1.0
    );
    assert!(find("kpilot_report_timestamp_seconds", None) > 1.7e9);
    let histogram = samples
        .iter()
        .find(|s| s["family"] == "kpilot_patrol_duration_seconds")
        .expect("the histogram family");
    assert_eq!(histogram["type"], "histogram");
    assert_eq!(terminate(daemon), 0, "{}", dir.read("daemon-1.err"));
});
