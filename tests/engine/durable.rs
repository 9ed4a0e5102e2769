//! r8: durable means on the disk itself. Under strace, every step's process
//! starts (execve) only after an fdatasync of the run's database that
//! recorded it as running.

use crate::util::Dir;

/// The strace binary, or a failure that names it (scripts/install-deps
/// installs it).
fn strace() -> &'static str {
    let found = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "strace is not installed: scripts/install-deps installs it (apt-get install strace)"
    );
    "strace"
}

kptest!(
    r8_every_step_starts_after_the_commit_that_recorded_it_is_fdatasynced,
    |dir| {
        const STEPS: usize = 6;
        let mut wf = String::from(
            "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: durable}\nspec:\n  steps:\n",
        );
        for i in 0..STEPS {
            let needs = if i == 0 {
                String::new()
            } else {
                format!(", needs: [s{}]", i - 1)
            };
            // The marker argument makes each step's execve recognisable.
            wf.push_str(&format!(
            "    - {{id: s{i}, phase: upgrade{needs}, command: [sh, -c, \"exit 0\", kpilot-step-{i}]}}\n"
        ));
        }
        dir.write("wf.yaml", &wf);
        let out = std::process::Command::new(strace())
            .args([
                "-f",
                "-y",
                "-qq",
                "-e",
                "trace=execve,fdatasync,fsync",
                "-o",
            ])
            .arg(dir.join("trace.txt"))
            .arg(env!("CARGO_BIN_EXE_kpilot"))
            .args(["run", "wf.yaml", "--run-id", "r"])
            .current_dir(dir.path())
            .env("KPILOT_STATE_DIR", dir.join("state"))
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("strace runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        check_order(&dir, STEPS);
    }
);

/// In the trace, between the start of step k-1's process and step k's,
/// there is a completed fdatasync (or fsync) of the run's sled log.
fn check_order(dir: &Dir, steps: usize) {
    let trace = dir.read("trace.txt");
    let db = format!("{}/state/runs/r/db/db>", dir.path().display());
    let lines: Vec<&str> = trace.lines().collect();
    let syncs: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            (l.contains("fdatasync(") || l.contains("fsync("))
                && l.contains(&db)
                && l.ends_with("= 0")
        })
        .map(|(i, _)| i)
        .collect();
    let mut previous = 0;
    for k in 0..steps {
        let marker = format!("\"kpilot-step-{k}\"");
        let exec = lines
            .iter()
            .position(|l| l.contains("execve(") && l.contains(&marker))
            .unwrap_or_else(|| panic!("no execve of step s{k} in the trace:\n{trace}"));
        assert!(
            syncs.iter().any(|&s| s > previous && s < exec),
            "step s{k} started (trace line {}) with no fdatasync of {db} since line {previous}:\n{}",
            exec + 1,
            lines[previous..=exec].join("\n")
        );
        previous = exec;
    }
}
