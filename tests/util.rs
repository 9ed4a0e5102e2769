//! Test harness: the kpilot binary run in a fresh directory per test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// What a test needs from the machine: [`prereq::needs`] is the one check,
/// failing a test that cannot run unless `KPILOT_ALLOW_SKIP=1`.
#[path = "prereq.rs"]
pub mod prereq;

/// A fresh working directory and state directory for one test.
pub struct Dir {
    tmp: tempfile::TempDir,
}

/// What one kpilot invocation did.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    fn from(output: Output) -> Self {
        Ran {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panics with the output unless the exit code is `code`.
    #[track_caller]
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

impl Dir {
    pub fn new() -> Self {
        Dir {
            tmp: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// Writes a file relative to the directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    /// Writes a file only its owner may read or write (mode 0600): a token.
    pub fn write_secret(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.write(name, text);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.join(name)).unwrap_or_default()
    }

    pub fn exists(&self, name: &str) -> bool {
        self.join(name).exists()
    }

    /// The kpilot command, in this directory, with this directory's state dir.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kpilot"));
        cmd.args(args)
            .current_dir(self.path())
            .env("KPILOT_STATE_DIR", self.join("state"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs kpilot to its end.
    pub fn kp(&self, args: &[&str]) -> Ran {
        Ran::from(self.cmd(args).output().expect("kpilot runs"))
    }

    /// `kpilot status RUN -o json`.
    pub fn status(&self, run: &str) -> serde_json::Value {
        let ran = self.kp(&["status", run, "-o", "json"]).expect(0);
        serde_json::from_str(&ran.stdout).expect("status is JSON")
    }

    /// The state of one step from `status -o json`.
    pub fn step_state(&self, run: &str, step: &str) -> String {
        let status = self.status(run);
        step_field(&status, step, "state")
    }
}

/// A field of a step in `status -o json`.
pub fn step_field(status: &serde_json::Value, step: &str, field: &str) -> String {
    let steps = status["steps"].as_array().expect("steps");
    let s = steps
        .iter()
        .find(|s| s["id"] == step)
        .unwrap_or_else(|| panic!("no step {step}"));
    match &s[field] {
        serde_json::Value::String(v) => v.clone(),
        v => v.to_string(),
    }
}

/// A test with a fresh [`Dir`] bound to `$dir`.
macro_rules! kptest {
    ($name:ident, |$dir:ident| $body:block) => {
        #[test]
        fn $name() {
            let $dir = $crate::util::Dir::new();
            $body
        }
    };
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next());
        !matches!(state, Some("Z" | "X") | None)
    })
}

/// Whether `pid` is gone within `limit`.
pub fn gone_within(pid: i32, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while alive(pid) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

/// The pid a test's process wrote to `path`, once it is there (within 30 s);
/// `what` says what it is, for the failure message.
#[track_caller]
pub fn pid_in(path: &Path, what: &str) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(pid) = std::fs::read_to_string(path)
            .unwrap_or_default()
            .trim()
            .parse()
        {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not write {} within 30s",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Kills a process a test started indirectly when dropped, so a failed
/// assertion does not leave it behind.
pub struct Reap(pub i32);

impl Drop for Reap {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = Command::new("kill")
                .args(["-9", &self.0.to_string()])
                .status();
        }
    }
}

/// SIGKILL of a kpilot process, then a wait until its guardian has killed
/// the steps' processes and gone (it exits when they are): only then does a
/// person look at the run.
pub fn kill_9_and_wait_for_guardians(mut child: std::process::Child) {
    let guardians = children_of(child.id());
    let _ = child.kill();
    let _ = child.wait();
    for pid in guardians {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while is_guardian(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// The pids of a process's children (its guardian among them).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether `pid` is (still) a kpilot guardian process.
fn is_guardian(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.windows(17).any(|w| w == b"__kpilot-guardian"))
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
}
