//! Test harness: the kpilot binary run in a fresh directory per test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
