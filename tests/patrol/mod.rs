//! `kpilot patrol` and `kpilot patrols` through the binary: slots on an
//! every-2-seconds schedule, the Forbid policy, kill -9 and a restart,
//! SIGTERM, bad Patrol files, `/metrics` read by a real Prometheus parser,
//! and (cluster.rs) a seeded problem that is new, then resolved, and
//! notified both times.

mod cluster;
mod daemon;
mod invalid;
mod metrics;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::Dir;

/// A Patrol file `patrol.yaml` named `name` with `schedules` (YAML list
/// items, indented by 4) and an optional `notify` block.
fn write_patrol(dir: &Dir, name: &str, schedules: &str, notify: &str) {
    dir.write(
        "patrol.yaml",
        &format!("apiVersion: kpilot/v1\nkind: Patrol\nmetadata: {{name: {name}}}\nspec:\n  schedules:\n{schedules}{notify}"),
    );
}

/// `kpilot patrol patrol.yaml ARGS`, started in the background, its stderr
/// in `daemon-N.err`.
fn start_daemon(dir: &Dir, n: u32, args: &[&str]) -> Child {
    let mut all = vec!["patrol", "patrol.yaml"];
    all.extend_from_slice(args);
    dir.cmd(&all)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(&format!("daemon-{n}.err"))).expect("stderr file"))
        .spawn()
        .expect("kpilot patrol starts")
}

/// `kpilot patrols -o json`.
fn patrols(dir: &Dir) -> Value {
    let ran = dir.kp(&["patrols", "-o", "json"]).expect(0);
    serde_json::from_str(&ran.stdout).expect("patrols -o json is JSON")
}

/// The slots of schedule `schedule` of the only patrol, oldest first.
fn slots(dir: &Dir, schedule: &str) -> Vec<Value> {
    let all = patrols(dir);
    let Some(patrol) = all.as_array().and_then(|a| a.first()) else {
        return Vec::new();
    };
    let mut slots: Vec<Value> = patrol["schedules"]
        .as_array()
        .expect("schedules")
        .iter()
        .find(|s| s["name"] == schedule)
        .map(|s| s["slots"].as_array().expect("slots").clone())
        .unwrap_or_default();
    slots.reverse();
    slots
}

/// Waits (at most `limit`) until `done` holds; panics saying `what`.
#[track_caller]
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends SIGTERM to `child` and returns its exit code, waiting at most 60 s.
#[track_caller]
fn terminate(mut child: Child) -> i32 {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code().unwrap_or(-1);
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("kpilot patrol did not end within 60s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
