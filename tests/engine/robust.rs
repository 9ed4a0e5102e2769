//! r8: what kpilot does with what it cannot control: readers beside a
//! driver, closed pipes, full disks, FIFOs, wrong or damaged state
//! directories.

use std::io::Read as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{step_field, Dir};

const HEAD: &str = "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: t}\n";

/// A workflow of `n` independent steps.
fn wide(n: usize) -> String {
    let mut wf = format!("{HEAD}spec:\n  steps:\n");
    for i in 0..n {
        wf.push_str(&format!(
            "    - {{id: step-{i:05}, phase: upgrade, command: [\"true\"]}}\n"
        ));
    }
    wf
}

kptest!(
    r8_status_of_a_run_in_progress_is_fresh_and_never_blocks_it,
    |dir| {
        // One long step, then a gate that blocks: the run is driven for ~2 s,
        // then resumed over and over while `status` is read in a loop.
        dir.write(
            "wf.yaml",
            &format!(
                "{HEAD}spec:
  steps:
    - {{id: long, phase: upgrade, command: [sleep, \"2\"]}}
    - {{id: check, phase: post-check, needs: [long], command: [test, -e, fixed]}}
    - {{id: gate, phase: post-check, needs: [check], gate: {{}}}}
"
            ),
        );
        let mut run = dir
            .cmd(&["run", "wf.yaml", "--run-id", "r"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let started = Instant::now();
        // Within a second of the step starting, `status` shows it running.
        let mut seen_running = None;
        while started.elapsed() < Duration::from_millis(1800) {
            let ran = dir.kp(&["status", "r", "-o", "json"]);
            if ran.code == 0 {
                let json: serde_json::Value = serde_json::from_str(&ran.stdout).expect("json");
                if step_field(&json, "long", "state") == "running" {
                    seen_running = Some(started.elapsed());
                    break;
                }
            } else {
                assert!(
                    ran.stderr.contains("no run `r`"),
                    "status during the run failed: {}",
                    ran.stderr
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let seen = seen_running.expect("status never showed the long step running");
        assert!(seen < Duration::from_millis(1800), "first seen at {seen:?}");
        assert_eq!(run.wait().expect("wait").code(), Some(3));

        // Readers in a loop never make a resume fail.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let stop = stop.clone();
            let state = dir.join("state");
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for verb in [
                        &["status", "r"][..],
                        &["runs"][..],
                        &["logs", "r", "long"][..],
                    ] {
                        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kpilot"))
                            .args(verb)
                            .env("KPILOT_STATE_DIR", &state)
                            .stdin(Stdio::null())
                            .output()
                            .expect("reader runs");
                        let stderr = String::from_utf8_lossy(&out.stderr);
                        // Logs live in the run's database, which only its
                        // driver may hold: during a drive they are refused, and
                        // say when they can be read.
                        let logs_later = verb[0] == "logs"
                            && out.status.code() == Some(2)
                            && stderr.contains("can be read when it ends");
                        assert!(
                            out.status.code() == Some(0) || logs_later,
                            "{verb:?} failed: {stderr}"
                        );
                        reads += 1;
                    }
                }
                reads
            })
        };
        for _ in 0..15 {
            let ran = dir.kp(&["resume", "r"]);
            assert_eq!(ran.code, 3, "resume beside readers: {}", ran.stderr);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let reads = reader.join().expect("reader thread");
        assert!(reads > 10, "only {reads} reads happened beside the resumes");
        dir.write("fixed", "");
        dir.kp(&["resume", "r"]).expect(0);
    }
);

/// Runs kpilot with its stdout into a pipe that is closed after `keep` bytes.
fn into_closed_pipe(dir: &Dir, args: &[&str], keep: usize) -> (Option<i32>, String) {
    let mut child = dir
        .cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut buf = vec![0; keep];
    stdout.read_exact(&mut buf).expect("first bytes");
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    (child.wait().expect("wait").code(), stderr)
}

kptest!(r8_output_into_a_closed_pipe_ends_quietly, |dir| {
    dir.write("big.yaml", &wide(4000));
    for (args, code) in [
        (&["graph", "big.yaml"][..], 0),
        (&["validate", "-o", "json", "big.yaml"][..], 0),
    ] {
        let (exit, stderr) = into_closed_pipe(&dir, args, 1);
        assert_eq!(exit, Some(code), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?} says nothing about the closed pipe");
    }
});

kptest!(r8_output_to_a_full_disk_is_reported_once_exit_4, |dir| {
    dir.write("big.yaml", &wide(50));
    for args in [&["runs"][..], &["graph", "big.yaml"][..]] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let out = dir.cmd(args).stdout(full).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(
            stderr.matches("No space left on device").count(),
            1,
            "said once: {stderr}"
        );
        assert!(
            stderr.contains("cannot write to standard output"),
            "{stderr}"
        );
    }
});

kptest!(r8_a_fifo_or_a_device_is_not_a_workflow, |dir| {
    dir.write("ok.yaml", &wide(1));
    let fifo = dir.join("wf.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    for args in [
        &["validate", "wf.fifo"][..],
        &["run", "wf.fifo"][..],
        &["graph", "wf.fifo"][..],
        &["validate", "/dev/zero"][..],
        &["run", "ok.yaml", "--inventory", "wf.fifo"][..],
    ] {
        let mut child = dir
            .cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{args:?} hangs on a file that is not a regular file");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .expect("stderr");
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("not a regular file"), "{stderr}");
    }
    assert!(!dir.exists("state/runs"), "no run was written");
});

kptest!(
    r8_a_state_dir_that_cannot_hold_runs_is_a_usage_error_said_once,
    |dir| {
        dir.write("wf.yaml", &wide(1));
        dir.write("not-a-dir", "");
        for args in [
            &["--state-dir", "not-a-dir", "run", "wf.yaml"][..],
            &["--state-dir", "not-a-dir", "runs"][..],
            &["--state-dir", "/proc/kpilot-state", "run", "wf.yaml"][..],
        ] {
            let ran = dir.kp(args);
            assert_eq!(ran.code, 2, "{args:?}: {}", ran.stderr);
            assert!(ran.stderr.contains("cannot be used"), "{}", ran.stderr);
            assert_eq!(ran.stderr.lines().count(), 1, "once: {}", ran.stderr);
            let cause = ran
                .stderr
                .rsplit(": ")
                .next()
                .expect("a cause")
                .trim()
                .to_owned();
            assert_eq!(ran.stderr.matches(&cause).count(), 1, "{}", ran.stderr);
        }
    }
);

kptest!(r8_a_damaged_run_says_which_run_once, |dir| {
    dir.write("wf.yaml", &wide(2));
    dir.kp(&["run", "wf.yaml", "--run-id", "r"]).expect(0);
    // Overwrite the database with garbage of the same size.
    let db = dir.join("state/runs/r/db/db");
    let len = std::fs::metadata(&db).expect("db").len() as usize;
    std::fs::write(&db, vec![0x5a; len.max(4096)]).expect("damage");
    for args in [
        &["status", "r"][..],
        &["resume", "r"][..],
        &["logs", "r", "step-00000"][..],
    ] {
        let ran = dir.kp(args);
        assert_eq!(ran.code, 4, "{args:?}: {}", ran.stderr);
        assert!(
            ran.stderr.contains("run `r`") && ran.stderr.contains("damaged"),
            "{args:?}: {}",
            ran.stderr
        );
        assert_eq!(
            ran.stderr.lines().count(),
            1,
            "once, no sled log lines: {}",
            ran.stderr
        );
    }
});

kptest!(r8_state_dir_is_a_global_flag, |dir| {
    dir.write("wf.yaml", &wide(1));
    let elsewhere = dir.join("elsewhere");
    let elsewhere = elsewhere.to_str().expect("utf-8");
    dir.kp(&["--state-dir", elsewhere, "run", "wf.yaml", "--run-id", "r"])
        .expect(0);
    let ran = dir.kp(&["--state-dir", elsewhere, "runs"]).expect(0);
    assert!(ran.stdout.contains("r "), "{}", ran.stdout);
    dir.kp(&["status", "r", "--state-dir", elsewhere]).expect(0);
    // Not in the default (KPILOT_STATE_DIR) one.
    dir.kp(&["status", "r"]).expect(2);
});
