//! Every request to an agent carries the token: one without it, or with a
//! wrong one (by a byte, a space, a case), is refused with 401 and logged,
//! and no handler runs. The token file itself is refused, with exit 2 and
//! what to run, when others may read or change it, when it is not one line
//! of at least 32 printable bytes, or when it is not a regular file.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{instances, Fleet, HEAD, TOKEN};
use crate::util::prereq::{needs, CURL, IP, ROOT};
use crate::util::{Dir, Ran};

/// `curl` from the hub namespace; returns (HTTP status, body).
fn curl(fleet: &Fleet, args: &[&str]) -> (String, String) {
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &fleet.hub, "curl", "-sk", "-m", "10"])
        .args(["-w", "\n%{http_code}"])
        .args(args);
    let out = cmd.output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

kptest!(requests_without_the_token_are_refused_and_logged, |dir| {
    if !needs("requests_without_the_token_are_refused", &[ROOT, IP, CURL]) {
        return;
    }
    let fleet = Fleet::start(&dir, "au", 1, 1);
    let base = format!("https://{}:7443", fleet.nodes[0].addr);
    let body = r#"{"kind":"command","body":["touch","pwned"],"run_id":"x","step_id":"x","instance":"node-01","attempt":1}"#;
    let (code, text) = curl(
        &fleet,
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            body,
            &format!("{base}/v1/run"),
        ],
    );
    assert_eq!(code, "401", "{text}");
    assert!(text.contains("no bearer token"), "{text}");
    let (code, _) = curl(
        &fleet,
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-H",
            "authorization: Bearer nope",
            "-d",
            body,
            &format!("{base}/v1/run"),
        ],
    );
    assert_eq!(code, "401");
    let (code, _) = curl(
        &fleet,
        &[
            "-H",
            "authorization: Bearer nope",
            &format!("{base}/v1/node?path=kernel"),
        ],
    );
    assert_eq!(code, "401");
    let (code, _) = curl(&fleet, &[&format!("{base}/v1/no-such-thing")]);
    assert_eq!(code, "401", "unknown paths are refused before routing too");
    // kpilot with an inventory whose token is wrong.
    dir.write_secret("wrong-token", "not-the-token-but-long-enough-0123456789\n");
    let fp = dir.read("agents/node-01.fp");
    dir.write(
        "inventory.yaml",
        &format!(
            "tokenFile: wrong-token\nagents:\n  - {{name: node-01, address: \"{}:7443\", fingerprint: \"{}\"}}\n",
            fleet.nodes[0].addr,
            fp.trim()
        ),
    );
    dir.write(
        "wf.yaml",
        &format!(
            "{HEAD}spec:\n  steps:\n    - {{id: s, phase: upgrade, executor: per-node, command: [touch, pwned]}}\n"
        ),
    );
    fleet
        .kp(
            &dir,
            &[
                "run",
                "wf.yaml",
                "--run-id",
                "r",
                "--inventory",
                "inventory.yaml",
            ],
        )
        .expect(1);
    let nodes = instances(&dir.status("r"), "s");
    let (state, reason) = &nodes["node-01"];
    assert_eq!(state, "failed");
    assert!(
        reason.contains("401") && reason.contains("wrong token"),
        "{reason}"
    );
    assert!(!dir.exists("pwned"), "a handler ran");
    let log = fleet.log("node-01");
    assert_eq!(log.matches("refused request").count(), 5, "{log}");
    assert!(
        log.contains("no bearer token") && log.contains("wrong token"),
        "{log}"
    );
    assert!(
        log.contains("peer=10.213.0.1:"),
        "the log names the peer: {log}"
    );
    assert!(
        !log.contains("attempt accepted") && !log.contains("node query"),
        "a handler ran: {log}"
    );
    // The right token is let in, exactly as written: not with a space more,
    // a character more or one less.
    let health = format!("{base}/v1/health");
    for almost in [
        format!("authorization: Bearer  {TOKEN}"),
        format!("authorization: Bearer {TOKEN}x"),
        format!("authorization: Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        format!("authorization: Bearer {}", TOKEN.to_uppercase()),
    ] {
        let (code, text) = curl(&fleet, &["-H", &almost, &health]);
        assert_eq!(code, "401", "{almost}: {text}");
    }
    let (code, text) = curl(
        &fleet,
        &["-H", &format!("authorization: Bearer {TOKEN}"), &health],
    );
    assert_eq!(code, "200", "{text}");
    assert!(text.contains("node-01"));
});

/// `kpilot agent --token-file FILE` on loopback: its exit code and standard
/// error, or `None` when it accepted the file and started serving.
fn agent_with(dir: &Dir, token_file: &Path) -> Option<Ran> {
    let fp = dir.join("agent-token-test.fp");
    let _ = std::fs::remove_file(&fp);
    let mut child = dir
        .cmd(&["agent", "--listen", "127.0.0.1:0", "--name", "t"])
        .arg("--token-file")
        .arg(token_file)
        .arg("--fingerprint-file")
        .arg(&fp)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kpilot agent starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut stderr = String::new();
            let _ = child
                .stderr
                .take()
                .map(|mut e| std::io::Read::read_to_string(&mut e, &mut stderr));
            return Some(Ran {
                code: status.code().unwrap_or(-1),
                stdout: String::new(),
                stderr,
            });
        }
        if fp.exists() {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        assert!(
            Instant::now() < deadline,
            "kpilot agent neither served nor exited within 10s with {}",
            token_file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts the agent refuses the token file with exit 2 and a message
/// naming the file and holding each of `says`.
#[track_caller]
fn refused(dir: &Dir, token_file: &Path, says: &[&str]) {
    let ran = agent_with(dir, token_file)
        .unwrap_or_else(|| panic!("the agent accepted {}", token_file.display()));
    let ran = ran.expect(2);
    assert!(
        ran.stderr
            .contains(&format!("the token file {}", token_file.display())),
        "{}",
        ran.stderr
    );
    for s in says {
        assert!(ran.stderr.contains(s), "wanted {s:?} in: {}", ran.stderr);
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

kptest!(token_files_others_may_read_or_change_are_refused, |dir| {
    let path = dir.write_secret("token", &format!("{TOKEN}\n"));
    assert!(agent_with(&dir, &path).is_none(), "mode 0600 is accepted");
    chmod(&path, 0o400);
    assert!(agent_with(&dir, &path).is_none(), "mode 0400 is accepted");
    for mode in [0o644, 0o666, 0o640, 0o604, 0o620] {
        chmod(&path, mode);
        refused(
            &dir,
            &path,
            &[
                &format!("has mode {mode:04o}"),
                &format!("run `chmod 600 {}`", path.display()),
            ],
        );
    }
});

kptest!(a_token_file_owned_by_another_user_is_refused, |dir| {
    if !needs("a_token_file_owned_by_another_user_is_refused", &[ROOT]) {
        return;
    }
    let path = dir.write_secret("token", &format!("{TOKEN}\n"));
    let chown = std::process::Command::new("chown")
        .args(["65534"])
        .arg(&path)
        .status()
        .expect("chown runs");
    assert!(chown.success());
    refused(
        &dir,
        &path,
        &["is owned by uid 65534, not by uid 0", "run `chown 0 "],
    );
});

kptest!(tokens_shorter_than_32_bytes_are_refused, |dir| {
    for short in ["a", "s3cret", &TOKEN[..31]] {
        let path = dir.write_secret("token", &format!("{short}\n"));
        refused(
            &dir,
            &path,
            &[
                &format!(
                    "holds a token of {} bytes; a token has at least 32",
                    short.len()
                ),
                "head -c 32 /dev/urandom | base64",
            ],
        );
    }
    let path = dir.write_secret("token", &TOKEN[..32]);
    assert!(
        agent_with(&dir, &path).is_none(),
        "32 bytes without a newline is a token"
    );
});

kptest!(a_token_file_is_one_line_with_at_most_one_newline, |dir| {
    for (text, says) in [
        (
            format!("{TOKEN}\nsecond-line\n"),
            "holds a second line at byte 39",
        ),
        (format!("{TOKEN}\n\n"), "holds a second line at byte 39"),
        (format!("{TOKEN}\r\n"), "holds a carriage return at byte 39"),
        (format!(" {TOKEN}\n"), "holds a space at byte 1"),
        (format!("{TOKEN} \n"), "holds a space at byte 39"),
        (format!("{TOKEN}\t"), "holds a tab at byte 39"),
        ("\n".to_owned(), "is empty"),
        (String::new(), "is empty"),
        (format!("{TOKEN}é"), "holds byte 0xc3 at byte 39"),
    ] {
        let path = dir.write_secret("token", &text);
        refused(&dir, &path, &[says]);
    }
});

kptest!(a_token_file_is_read_only_up_to_4_kib, |dir| {
    // /dev/zero has no end: it is refused before a byte is read.
    let zero = dir.join("zero-token");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    let started = Instant::now();
    refused(&dir, &zero, &["is not a regular file"]);
    assert!(started.elapsed() < Duration::from_secs(5));
    // A FIFO with no writer is refused too, without waiting for one.
    let fifo = dir.join("fifo-token");
    let made = std::process::Command::new("mkfifo")
        .arg("-m")
        .arg("600")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    refused(&dir, &fifo, &["is not a regular file"]);
    // A regular file of 4 KiB and one byte.
    let big = dir.write_secret("big-token", &"a".repeat(4097));
    refused(&dir, &big, &["is larger than 4 KiB"]);
});
