//! The daemon on an every-2-seconds schedule: it runs slot after slot,
//! Forbid skips a slot while the previous run goes, SIGTERM records the
//! running patrol as interrupted, and after kill -9 a restart resumes the
//! run it was driving and runs no slot twice.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{patrols, slots, start_daemon, terminate, wait_for, write_patrol};
use crate::util::Reap;

const EVERY_2S: &str = "\"*/2 * * * * *\"";

kptest!(an_every_two_seconds_schedule_runs_slot_after_slot, |dir| {
    dir.write(
        "tick.yaml",
        "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: tick}\nspec:\n  params:\n    - {name: MSG, default: unset}\n  steps:\n    - id: say\n      phase: patrol\n      command: [sh, -c, \"echo $KPILOT_RUN_ID {{params.MSG}} >> ticks.log\"]\n",
    );
    write_patrol(
        &dir,
        "ticks",
        &format!("    - {{name: tick, cron: {EVERY_2S}, workflow: tick.yaml, params: {{MSG: hello}}, history: 2}}\n"),
        "",
    );
    let daemon = start_daemon(&dir, 1, &[]);
    let _reap = Reap(daemon.id() as i32);
    let passed = |dir: &crate::util::Dir| {
        slots(dir, "tick")
            .iter()
            .filter(|s| s["state"] == "passed")
            .count()
    };
    // History 2: the slots kept are the last two runs', so count the runs
    // in the log the steps write.
    let ran = |dir: &crate::util::Dir| dir.read("ticks.log").lines().count();
    wait_for("4 slots ran", Duration::from_secs(90), || {
        ran(&dir) >= 4 && passed(&dir) >= 2
    });
    assert_eq!(terminate(daemon), 0, "{}", dir.read("daemon-1.err"));

    let slots = slots(&dir, "tick");
    let runs: Vec<String> = slots
        .iter()
        .filter(|s| s["state"] == "passed")
        .map(|s| s["run"].as_str().expect("run id").to_owned())
        .collect();
    let with_runs = slots.iter().filter(|s| s["run"].is_string()).count();
    assert_eq!(with_runs, 2, "history 2 keeps two runs: {slots:#?}");
    // The older runs were deleted from the state directory.
    let listed = dir.kp(&["runs"]).expect(0).stdout;
    let kept: Vec<&str> = listed
        .lines()
        .filter(|l| l.starts_with("ticks-tick-"))
        .collect();
    assert_eq!(kept.len(), 2, "{listed}");
    assert!(ran(&dir) > kept.len(), "more ran than were kept");
    for run in &runs {
        assert!(listed.contains(run.as_str()), "{listed}");
    }
    // Each slot ran once, as its own run, with the schedule's params.
    let lines: Vec<String> = dir.read("ticks.log").lines().map(str::to_owned).collect();
    for run in &runs {
        let n = lines
            .iter()
            .filter(|l| **l == format!("{run} hello"))
            .count();
        assert_eq!(n, 1, "run {run} in ticks.log: {lines:#?}");
    }
    let mut seen: Vec<&Value> = slots.iter().map(|s| &s["slot"]).collect();
    seen.dedup();
    assert_eq!(seen.len(), slots.len(), "a slot listed twice: {slots:#?}");
    // Slots two seconds apart, each run id naming its slot.
    for s in &slots {
        if let Some(run) = s["run"].as_str() {
            assert!(run.starts_with("ticks-tick-"), "{run}");
        }
    }
    let status = patrols(&dir);
    assert_eq!(status[0]["running"], false, "{status:#}");
    assert!(
        status[0]["schedules"][0]["nextSlot"].is_string(),
        "{status:#}"
    );
    let table = dir.kp(&["patrols"]).expect(0);
    assert!(
        table.stdout.contains("ticks") && table.stdout.contains("passed"),
        "{}",
        table.stdout
    );
});

use serde_json::Value;

kptest!(forbid_skips_a_slot_while_the_previous_run_goes, |dir| {
    dir.write(
        "slow.yaml",
        "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: slow}\nspec:\n  steps:\n    - id: wait\n      phase: patrol\n      command: [sh, -c, \"echo $KPILOT_RUN_ID >> started.log; sleep 5\"]\n",
    );
    write_patrol(
        &dir,
        "slow",
        &format!("    - {{name: slow, cron: {EVERY_2S}, workflow: slow.yaml, concurrencyPolicy: Forbid}}\n"),
        "",
    );
    let daemon = start_daemon(&dir, 1, &[]);
    let _reap = Reap(daemon.id() as i32);
    wait_for("a slot skipped", Duration::from_secs(60), || {
        slots(&dir, "slow").iter().any(|s| s["state"] == "skipped")
    });
    // The run still goes: SIGTERM records it as interrupted.
    assert_eq!(terminate(daemon), 0, "{}", dir.read("daemon-1.err"));
    let slots = slots(&dir, "slow");
    let skipped = slots
        .iter()
        .find(|s| s["state"] == "skipped")
        .expect("skipped");
    assert!(skipped["run"].is_null(), "{skipped:#}");
    let running = slots[0]["run"].as_str().expect("the first slot's run");
    assert!(
        skipped["reason"].as_str().unwrap_or("").contains(running),
        "the skipped slot names the run that went on: {slots:#?}"
    );
    // Never two runs at once: each started run began after the one before ended.
    let started: Vec<String> = dir.read("started.log").lines().map(str::to_owned).collect();
    let with_runs: Vec<&Value> = slots.iter().filter(|s| s["run"].is_string()).collect();
    assert_eq!(started.len(), with_runs.len(), "{started:#?} {slots:#?}");
    let last = with_runs.last().expect("a run");
    assert_eq!(last["state"], "interrupted", "SIGTERM mid-run: {slots:#?}");
    assert!(
        dir.read("daemon-1.err").contains("stopped by SIGTERM"),
        "{}",
        dir.read("daemon-1.err")
    );
});

kptest!(
    kill_9_mid_run_then_a_restart_resumes_it_and_runs_no_slot_twice,
    |dir| {
        // `a` is not idempotent: were the interrupted run started again rather
        // than resumed, it would run twice for the same run id.
        dir.write(
        "two.yaml",
        "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: two}\nspec:\n  steps:\n    - id: a\n      phase: patrol\n      command: [sh, -c, \"echo $KPILOT_RUN_ID a >> steps.log\"]\n    - id: b\n      phase: patrol\n      needs: [a]\n      idempotent: true\n      command: [sh, -c, \"echo $KPILOT_RUN_ID b >> steps.log; sleep 3; echo $KPILOT_RUN_ID b-done >> steps.log\"]\n",
    );
        write_patrol(
            &dir,
            "crash",
            &format!(
                "    - {{name: two, cron: {EVERY_2S}, workflow: two.yaml, startingDeadline: 1s}}\n"
            ),
            "",
        );
        let daemon = start_daemon(&dir, 1, &[]);
        let reap = Reap(daemon.id() as i32);
        wait_for("step b started", Duration::from_secs(60), || {
            dir.read("steps.log").lines().any(|l| l.ends_with(" b"))
        });
        let victim = dir
            .read("steps.log")
            .lines()
            .find(|l| l.ends_with(" b"))
            .and_then(|l| l.split(' ').next())
            .expect("run id")
            .to_owned();
        crate::util::kill_9_and_wait_for_guardians(daemon);
        drop(reap);
        let claimed = slots(&dir, "two");
        assert_eq!(
            claimed.last().map(|s| s["state"].clone()),
            Some("running".into()),
            "the killed daemon's slot stays claimed: {claimed:#?}"
        );

        let daemon = start_daemon(&dir, 2, &[]);
        let _reap = Reap(daemon.id() as i32);
        wait_for(
            "the interrupted run resumed and passed",
            Duration::from_secs(60),
            || {
                slots(&dir, "two")
                    .iter()
                    .any(|s| s["run"] == victim.as_str() && s["state"] == "passed")
            },
        );
        wait_for("a later slot passed", Duration::from_secs(60), || {
            slots(&dir, "two")
                .iter()
                .any(|s| s["run"] != victim.as_str() && s["state"] == "passed")
        });
        assert_eq!(terminate(daemon), 0, "{}", dir.read("daemon-2.err"));
        assert!(
            dir.read("daemon-2.err")
                .contains("resuming the run of a slot claimed"),
            "{}",
            dir.read("daemon-2.err")
        );
        let log = dir.read("steps.log");
        let mut a_per_run: BTreeMap<&str, usize> = BTreeMap::new();
        for line in log.lines().filter(|l| l.ends_with(" a")) {
            *a_per_run
                .entry(line.split(' ').next().unwrap_or(""))
                .or_default() += 1;
        }
        // No slot ran twice: each run's first step ran once, the victim's too.
        assert!(a_per_run.values().all(|n| *n == 1), "{log}");
        assert_eq!(a_per_run.get(victim.as_str()), Some(&1), "{log}");
        assert!(log.contains(&format!("{victim} b-done")), "{log}");
        let slots = slots(&dir, "two");
        let mut runs: Vec<&str> = slots.iter().filter_map(|s| s["run"].as_str()).collect();
        let n = runs.len();
        runs.sort();
        runs.dedup();
        assert_eq!(runs.len(), n, "a run id on two slots: {slots:#?}");
        // The run kept its id and is whole in the run store.
        let status = dir.status(&victim);
        assert_eq!(status["state"], "succeeded", "{status:#}");
    }
);

kptest!(replace_stops_the_running_patrol_for_the_new_slot, |dir| {
    dir.write(
        "slow.yaml",
        "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: slow}\nspec:\n  steps:\n    - id: wait\n      phase: patrol\n      command: [sh, -c, \"echo $KPILOT_RUN_ID >> started.log; sleep 30\"]\n",
    );
    write_patrol(
        &dir,
        "swap",
        &format!("    - {{name: slow, cron: {EVERY_2S}, workflow: slow.yaml, concurrencyPolicy: Replace}}\n"),
        "",
    );
    let daemon = start_daemon(&dir, 1, &[]);
    let _reap = Reap(daemon.id() as i32);
    wait_for(
        "a run replaced and a later one started",
        Duration::from_secs(60),
        || {
            let slots = slots(&dir, "slow");
            let replaced = slots.iter().position(|s| s["state"] == "replaced");
            replaced.is_some_and(|i| slots[i + 1..].iter().any(|s| s["run"].is_string()))
        },
    );
    assert_eq!(terminate(daemon), 0, "{}", dir.read("daemon-1.err"));
    let slots = slots(&dir, "slow");
    let replaced = slots
        .iter()
        .find(|s| s["state"] == "replaced")
        .expect("replaced");
    let run = replaced["run"].as_str().expect("its run");
    // The replaced run is ended for good, not left running.
    assert_eq!(dir.status(run)["state"], "aborted", "{slots:#?}");
    assert!(!slots.iter().any(|s| s["state"] == "skipped"), "{slots:#?}");
});

/// An HTTP endpoint on loopback that answers its first `failures` requests
/// with 500 and the rest with 200, and hands over every request's body.
fn webhook(failures: usize) -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let status = if n < failures {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
        }
    });
    (url, rx)
}

kptest!(
    a_webhook_that_fails_once_is_retried_and_gets_the_new_finding,
    |dir| {
        dir.write(
        "probe.yaml",
        "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: probe}\nspec:\n  steps:\n    - {id: disk-ok, phase: patrol, command: [test, -f, fixed]}\n",
    );
        let (url, bodies) = webhook(1);
        write_patrol(
            &dir,
            "hooked",
            "    - {name: probe, cron: \"*/2 * * * * *\", workflow: probe.yaml}\n",
            &format!("  notify: {{webhook: \"{url}\", retries: 2}}\n"),
        );
        let ran = dir.kp(&["patrol", "patrol.yaml", "--once"]);
        assert_eq!(ran.code, 1, "the step fails: {}", ran.stderr);
        let first = bodies
            .recv_timeout(Duration::from_secs(30))
            .expect("a POST");
        let second = bodies
            .recv_timeout(Duration::from_secs(30))
            .expect("the POST again, after the 500");
        assert_eq!(first, second, "the same notification, retried");
        let note: Value = serde_json::from_str(&second).expect("the notification is JSON");
        assert_eq!(note["patrol"], "hooked");
        assert_eq!(note["new"][0]["check"], "disk-ok", "{note:#}");
        assert!(!ran.stderr.contains("notifier failed"), "{}", ran.stderr);

        // Fixed: the next patrol resolves it, and says so.
        dir.write("fixed", "");
        dir.kp(&["patrol", "patrol.yaml", "--once"]).expect(0);
        let third = bodies
            .recv_timeout(Duration::from_secs(30))
            .expect("a POST");
        let note: Value = serde_json::from_str(&third).expect("JSON");
        assert_eq!(note["resolved"][0]["check"], "disk-ok", "{note:#}");
        assert!(
            note["new"].as_array().is_some_and(Vec::is_empty),
            "{note:#}"
        );
    }
);

kptest!(
    slots_passed_while_no_daemon_ran_are_recorded_as_missed,
    |dir| {
        dir.write(
        "tick.yaml",
        "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: tick}\nspec:\n  steps:\n    - {id: say, phase: patrol, command: [\"true\"]}\n",
    );
        write_patrol(
        &dir,
        "gaps",
        &format!("    - {{name: tick, cron: {EVERY_2S}, workflow: tick.yaml, startingDeadline: 1s}}\n"),
        "",
    );
        let passed = |dir: &crate::util::Dir| {
            slots(dir, "tick")
                .iter()
                .filter(|s| s["state"] == "passed")
                .count()
        };
        let daemon = start_daemon(&dir, 1, &[]);
        let reap = Reap(daemon.id() as i32);
        wait_for("a slot ran", Duration::from_secs(60), || passed(&dir) >= 1);
        assert_eq!(terminate(daemon), 0, "{}", dir.read("daemon-1.err"));
        drop(reap);
        // Three slots or more pass with no daemon.
        std::thread::sleep(Duration::from_secs(7));
        let before = passed(&dir);
        let daemon = start_daemon(&dir, 2, &[]);
        let _reap = Reap(daemon.id() as i32);
        wait_for(
            "a slot ran after the restart",
            Duration::from_secs(60),
            || passed(&dir) > before,
        );
        assert_eq!(terminate(daemon), 0, "{}", dir.read("daemon-2.err"));
        let slots = slots(&dir, "tick");
        let missed = slots.iter().filter(|s| s["state"] == "missed").count();
        assert!(
            missed >= 2,
            "the slots of the gap are missed, not run late: {slots:#?}"
        );
        assert!(
            slots
                .iter()
                .filter(|s| s["state"] == "missed")
                .all(|s| s["run"].is_null()),
            "a missed slot has no run: {slots:#?}"
        );
    }
);
