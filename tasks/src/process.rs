//! Every process kpilot and its agent start (step bodies, query commands, the
//! agent's node tools) is started here: each in a process group of its own,
//! registered with the guardian so that it dies with kpilot, output kept
//! within a bound, everything killed when its future is dropped.

use std::path::PathBuf;
use std::time::Duration;

use kpilot_engine::task::{TaskOutput, OUTPUT_TAIL};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt as _;

/// What to start.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// The directory it starts in.
    pub workdir: PathBuf,
}

/// Kills a process group when dropped, unless its leader was reaped and
/// `disarm` was called. Dropping an attempt's future (timeout, stop) drops this.
struct GroupGuard {
    pgid: Option<i32>,
    guardian: Option<&'static Guardian>,
}

impl GroupGuard {
    /// The leader was reaped: the group is no longer ours to kill.
    fn release(&mut self) {
        if let (Some(g), Some(pgid)) = (self.guardian, self.pgid.take()) {
            g.tell('-', pgid);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        self.release();
    }
}

/// The argument that makes the kpilot binary act as the guardian.
pub const GUARDIAN_ARG: &str = "__kpilot-guardian";

/// The environment variable that marks every process of a step with its
/// guardian's token, so the guardian finds them all, however they started.
const GUARDIAN_ENV: &str = "KPILOT_GUARDIAN";

/// A helper process that kills the processes of running steps when kpilot
/// dies, even by SIGKILL. It reads `+PGID` and `-PGID` lines on its standard
/// input; when that pipe closes (kpilot is gone) it kills every group still
/// registered, then every process whose environment carries its token (one
/// spawned just before kpilot died, before its group was registered, or one
/// that left its group), and waits until they are gone. This keeps a crash
/// from leaving steps running behind a person's back, without the fork(2)
/// that `PR_SET_PDEATHSIG` in a `pre_exec` hook would force on every spawn.
struct Guardian {
    stdin: std::sync::Mutex<std::process::ChildStdin>,
    token: String,
}

impl Guardian {
    fn tell(&self, op: char, pgid: i32) {
        use std::io::Write as _;
        // One write(2) per line: `writeln!` on the unbuffered pipe makes
        // three, and this runs twice for every process a step starts.
        let line = format!("{op}{pgid}\n");
        if let Ok(mut stdin) = self.stdin.lock() {
            let _ = stdin.write_all(line.as_bytes());
        }
    }
}

/// The guardian of this process, started on first use; `None` when the
/// current executable is not kpilot (unit tests) or cannot be started.
fn guardian() -> Option<&'static Guardian> {
    static GUARDIAN: std::sync::OnceLock<Option<Guardian>> = std::sync::OnceLock::new();
    GUARDIAN
        .get_or_init(|| {
            if std::env::var_os("KPILOT_NO_GUARDIAN").is_some() {
                return None;
            }
            let exe = std::env::current_exe().ok()?;
            if exe.file_stem()?.to_str()? != "kpilot" {
                return None;
            }
            use std::os::unix::process::CommandExt as _;
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let token = format!("{}-{nanos}", std::process::id());
            let mut child = std::process::Command::new(exe)
                .arg(GUARDIAN_ARG)
                .arg(&token)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                // Its own group: a Ctrl-C at the terminal must not kill it first.
                .process_group(0)
                .spawn()
                .ok()?;
            let stdin = child.stdin.take()?;
            Some(Guardian {
                stdin: std::sync::Mutex::new(stdin),
                token,
            })
        })
        .as_ref()
}

/// The guardian's main loop (see [`GUARDIAN_ARG`]); never returns.
pub fn guardian_main() -> ! {
    use std::io::BufRead as _;
    let mut groups = std::collections::HashSet::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (op, pgid) = line.split_at(line.len().min(1));
        if let Ok(pgid) = pgid.parse::<i32>() {
            match op {
                "+" => {
                    groups.insert(pgid);
                }
                "-" => {
                    groups.remove(&pgid);
                }
                _ => {}
            }
        }
    }
    for pgid in groups {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    let token = std::env::args().nth(2).unwrap_or_default();
    if !token.is_empty() {
        let mark = format!("{GUARDIAN_ENV}={token}\0").into_bytes();
        let mut victims = Vec::new();
        // A process may fork while it is being killed: look again.
        for _ in 0..3 {
            let found = marked_processes(&mark);
            if found.is_empty() {
                break;
            }
            for (pid, pgid) in found {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                victims.push(pid);
            }
        }
        // SIGKILL lands asynchronously; return only once nothing can act any more.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while victims.iter().any(|&pid| alive(pid)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::process::exit(0)
}

/// `(pid, pgid)` of every live process whose initial environment holds `mark`.
fn marked_processes(mark: &[u8]) -> Vec<(i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != std::process::id() as i32 && alive(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.windows(mark.len()).any(|w| w == mark))
        })
        .filter_map(|pid| Some((pid, stat_field(pid, 2)?.parse().ok()?)))
        .collect()
}

/// Whether a process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    stat_field(pid, 0).is_some_and(|state| state != "Z" && state != "X")
}

/// A field of /proc/PID/stat after the command name: 0 is the state, 2 the group.
fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n).map(str::to_owned)
}

/// How much of one output stream a caller keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The last N bytes: what a person reads after a step ended. Memory stays
    /// bounded however much the process prints.
    Tail(usize),
    /// Every byte, up to N: output the caller parses whole (a query's JSON).
    /// A process that prints more is killed and [`ProcessError::TooMuchOutput`]
    /// returned, rather than kpilot's memory growing with what it prints.
    Whole(usize),
}

/// A stream being collected as [`Keep`] says.
struct Sink {
    keep: Keep,
    bytes: Vec<u8>,
}

impl Sink {
    fn new(keep: Keep) -> Self {
        Sink {
            keep,
            bytes: Vec::new(),
        }
    }

    /// Adds what was read; `Err(limit)` when a [`Keep::Whole`] limit is passed.
    fn push(&mut self, chunk: &[u8]) -> Result<(), usize> {
        match self.keep {
            Keep::Tail(max) => {
                self.bytes.extend_from_slice(chunk);
                // Trimmed only once it doubled, so a stream of small reads is
                // not shifted on every read.
                if self.bytes.len() > 2 * max {
                    let cut = self.bytes.len() - max;
                    self.bytes.drain(..cut);
                }
                Ok(())
            }
            Keep::Whole(max) => {
                if self.bytes.len() + chunk.len() > max {
                    return Err(max);
                }
                self.bytes.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    fn into_bytes(mut self) -> Vec<u8> {
        if let Keep::Tail(max) = self.keep {
            if self.bytes.len() > max {
                let cut = self.bytes.len() - max;
                self.bytes.drain(..cut);
            }
        }
        self.bytes
    }
}

/// A byte count as a person reads it: `16 MiB`, `64 KiB`, `300 bytes`.
pub fn human_bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// Why a process gave no result.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The argv is empty.
    #[error("empty command")]
    Empty,
    /// The program could not be started.
    #[error("cannot start `{program}` in {}: {source}", workdir.display())]
    Start {
        /// The program.
        program: String,
        /// Where it was to start.
        workdir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the program failed.
    #[error("waiting for `{program}`: {reason}")]
    Wait {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
    /// The program printed more than the caller can hold; it was killed.
    #[error(
        "`{program}` printed more than {} on {stream}, the most kpilot reads from it; it was killed. Make it print less",
        human_bytes(*limit)
    )]
    TooMuchOutput {
        /// The program.
        program: String,
        /// `standard output` or `standard error`.
        stream: &'static str,
        /// The limit, in bytes.
        limit: usize,
    },
}

/// A process that ran to its end.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub status: std::process::ExitStatus,
    /// Standard output, kept as asked.
    pub stdout: Vec<u8>,
    /// Standard error, kept as asked.
    pub stderr: Vec<u8>,
}

/// How long output is still read after the process exited, for descendants
/// that kept its pipes open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(300);

/// Runs a process to its end and reports its exit code and output: a step's
/// body, each stream kept as its last [`OUTPUT_TAIL`] bytes.
pub async fn run(spec: &ProcessSpec) -> TaskOutput {
    let done = match execute(spec, Keep::Tail(OUTPUT_TAIL), Keep::Tail(OUTPUT_TAIL)).await {
        Ok(done) => done,
        Err(e) => return TaskOutput::failed(e.to_string()),
    };
    let failure = match done.status.code() {
        Some(0) => None,
        Some(code) => Some(match last_line(&done.stderr) {
            Some(line) => format!("exit code {code}: {line}"),
            None => format!("exit code {code}"),
        }),
        None => Some(format!("killed by {}", signal_of(&done.status))),
    };
    let output = json_output(&done.stdout);
    TaskOutput {
        internal: false,
        failure,
        exit_code: done.status.code(),
        stdout: done.stdout,
        stderr: done.stderr,
        output,
    }
}

/// `signal 9` for a process killed by a signal.
pub fn signal_of(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    format!(
        "signal {}",
        status.signal().map_or("?".to_owned(), |s| s.to_string())
    )
}

/// Starts a process the one way kpilot starts any: in a process group of its
/// own, marked for and registered with the guardian (so that it dies with
/// kpilot, even on kill -9), standard input closed, its output kept as the
/// caller says. Dropping the future (a timeout, a stop) kills the group.
pub async fn execute(
    spec: &ProcessSpec,
    keep_stdout: Keep,
    keep_stderr: Keep,
) -> Result<Finished, ProcessError> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(ProcessError::Empty);
    };
    // Resolved here, once, rather than by execvp in the child, which tries
    // every PATH entry with a system call of its own.
    let mut cmd = tokio::process::Command::new(resolve(program));
    cmd.args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.workdir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let guardian = guardian();
    match guardian {
        Some(g) => {
            cmd.env(GUARDIAN_ENV, &g.token);
        }
        None => die_with_parent(&mut cmd),
    }
    let mut child = cmd.spawn().map_err(|source| ProcessError::Start {
        program: program.clone(),
        workdir: spec.workdir.clone(),
        source,
    })?;
    let mut guard = GroupGuard {
        pgid: child.id().map(|p| p as i32),
        guardian,
    };
    if let (Some(g), Some(pgid)) = (guardian, guard.pgid) {
        g.tell('+', pgid);
    }
    let wait_error = |reason: String| ProcessError::Wait {
        program: program.clone(),
        reason,
    };
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(wait_error("its output pipes were not opened".into()));
    };
    let too_much = |stream: &'static str, limit: usize| ProcessError::TooMuchOutput {
        program: program.clone(),
        stream,
        limit,
    };
    let (mut out, mut err) = (Sink::new(keep_stdout), Sink::new(keep_stderr));
    let (mut out_open, mut err_open) = (true, true);
    let mut obuf = vec![0u8; 16 * 1024];
    let mut ebuf = vec![0u8; 16 * 1024];
    let mut status = None;
    let drain = tokio::time::sleep(Duration::from_secs(u64::MAX / 4));
    tokio::pin!(drain);
    loop {
        if status.is_some() && !out_open && !err_open {
            break;
        }
        // On too much output the guard, dropped on return, kills the group.
        tokio::select! {
            n = stdout.read(&mut obuf), if out_open => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => out.push(&obuf[..n]).map_err(|limit| too_much("standard output", limit))?,
            },
            n = stderr.read(&mut ebuf), if err_open => match n {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => err.push(&ebuf[..n]).map_err(|limit| too_much("standard error", limit))?,
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s);
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            },
            _ = &mut drain, if status.is_some() => break,
        }
    }
    // The leader is reaped: its pid may be reused, so the group is not
    // signalled again. Descendants it left running are its own business.
    guard.release();
    let status = match status {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Err(wait_error(e.to_string())),
        None => return Err(wait_error("it reported no exit status".into())),
    };
    Ok(Finished {
        status,
        stdout: out.into_bytes(),
        stderr: err.into_bytes(),
    })
}

/// The program's path: as given when it names a file, else the first
/// executable of that name on PATH; left to execvp when none is found, so
/// that the error is the system's own.
///
/// A program found is remembered for the life of the process (kpilot never
/// changes its PATH), so a run of 10,000 `true` steps searches PATH once, not
/// with a `statx` per PATH entry per step. One that is gone since (removed,
/// or moved by a step) is searched for again; one not found is not
/// remembered, so a step may install it for a later step.
fn resolve(program: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    static FOUND: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, PathBuf>>,
    > = std::sync::OnceLock::new();
    if program.contains('/') {
        return PathBuf::from(program);
    }
    let found = FOUND.get_or_init(Default::default);
    if let Some(known) = found.lock().ok().and_then(|m| m.get(program).cloned()) {
        // One access(2) instead of a search: the file must still be there.
        if nix::unistd::access(&known, nix::unistd::AccessFlags::X_OK).is_ok() {
            return known;
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let hit = std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    match hit {
        Some(p) => {
            if let Ok(mut m) = found.lock() {
                m.insert(program.to_owned(), p.clone());
            }
            p
        }
        None => PathBuf::from(program),
    }
}

fn last_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?.trim();
    Some(line.chars().take(300).collect())
}

/// Standard output that is a JSON object or array becomes the step's output.
fn json_output(stdout: &[u8]) -> Option<serde_json::Value> {
    let text = std::str::from_utf8(stdout).ok()?.trim();
    if !(text.starts_with('{') || text.starts_with('[')) {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// Asks the kernel to kill the child when kpilot dies, so that after a crash
/// no step is still changing things while a person decides how to resume.
/// Used only without a guardian: the hook makes std fork instead of spawn.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs between fork and exec and only makes the
    // async-signal-safe prctl(2) system call.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(script: &str) -> ProcessSpec {
        ProcessSpec {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: Vec::new(),
            workdir: std::env::temp_dir(),
        }
    }

    #[tokio::test]
    async fn whole_output_past_its_limit_kills_the_process_and_says_so() {
        let started = std::time::Instant::now();
        let err = execute(
            &spec("head -c 300000 /dev/zero; sleep 30"),
            Keep::Whole(64 * 1024),
            Keep::Tail(1024),
        )
        .await
        .expect_err("over the limit");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "it was not killed"
        );
        let text = err.to_string();
        assert!(
            text.contains("`sh` printed more than 64 KiB on standard output")
                && text.contains("killed"),
            "{text}"
        );
        let done = execute(&spec("printf 12345"), Keep::Whole(5), Keep::Tail(8))
            .await
            .expect("exactly the limit is fine");
        assert_eq!(done.stdout, b"12345");
    }

    #[tokio::test]
    async fn a_tail_keeps_the_end() {
        let done = execute(
            &spec("seq 1 100000; seq 1 100000 >&2"),
            Keep::Tail(20),
            Keep::Tail(7),
        )
        .await
        .expect("runs");
        assert!(done.status.success());
        assert_eq!(done.stdout, b"\n99998\n99999\n100000\n");
        assert_eq!(done.stderr, b"100000\n");
        assert_eq!(human_bytes(16 * 1024 * 1024), "16 MiB");
        assert_eq!(human_bytes(300), "300 bytes");
    }
}
