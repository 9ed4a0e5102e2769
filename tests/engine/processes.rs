//! Every process kpilot starts, not only a step's body: a check's query
//! command dies with kpilot on kill -9, and one that prints without end does
//! not make kpilot hold what it prints.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{gone_within, pid_in, step_field, Reap};

const HEAD: &str = "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: t}\n";

kptest!(a_query_command_dies_with_kpilot_on_kill_9, |dir| {
    dir.write(
        "wf.yaml",
        &format!(
            "{HEAD}spec:
  steps:
    - id: q
      phase: pre-check
      check:
        query: {{command: [sh, -c, 'echo $$ > query.pid; exec sleep 300']}}
        expect: 'true'
        timeout: 10m
"
        ),
    );
    let mut kpilot = dir
        .cmd(&["run", "wf.yaml", "--run-id", "r"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kpilot starts");
    let pid = pid_in(&dir.join("query.pid"), "the query command");
    let _reap = Reap(pid);
    kpilot.kill().expect("kill -9 kpilot");
    let _ = kpilot.wait();
    assert!(
        gone_within(pid, Duration::from_secs(5)),
        "the query command {pid} outlived kpilot's kill -9 by 5s"
    );
});

kptest!(
    a_query_command_printing_100_mib_is_stopped_at_the_limit,
    |dir| {
        // `hold` keeps kpilot alive after the check, so that its peak memory
        // (VmHWM) can be read while it still runs.
        dir.write(
            "wf.yaml",
            &format!(
                "{HEAD}spec:
  concurrency: 2
  steps:
    - id: q
      phase: pre-check
      check:
        query: {{command: [head, -c, '104857600', /dev/zero]}}
        expect: 'true'
        timeout: 2m
    - id: hold
      phase: pre-check
      command: [sleep, '4']
"
            ),
        );
        let started = Instant::now();
        let mut kpilot = dir
            .cmd(&["run", "wf.yaml", "--run-id", "r"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kpilot starts");
        let status = format!("/proc/{}/status", kpilot.id());
        let mut peak_kib = 0u64;
        while kpilot.try_wait().expect("try_wait").is_none() {
            if let Some(kib) = std::fs::read_to_string(&status).ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            }) {
                peak_kib = peak_kib.max(kib);
            }
            assert!(started.elapsed() < Duration::from_secs(120), "kpilot hangs");
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = kpilot.wait_with_output().expect("kpilot ends");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reason = step_field(&dir.status("r"), "q", "reason");
        assert!(
            reason.contains("printed more than 16 MiB on standard output")
                && reason.contains("killed"),
            "{reason}"
        );
        assert!(peak_kib > 0, "kpilot's memory was never read");
        // About 50 MiB for kpilot itself (a debug build) and at most 16 MiB
        // of output (24 while its buffer grows); holding all 100 MiB would
        // pass 150.
        assert!(
            peak_kib < 100 * 1024,
            "kpilot's peak memory was {} MiB for a query printing 100 MiB",
            peak_kib / 1024
        );
    }
);
