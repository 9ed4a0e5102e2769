//! Every request to an agent carries the token: one without it, or with a
//! wrong one, is refused with 401 and logged, and no handler runs.

use super::{instances, Fleet, HEAD, TOKEN};
use crate::util::prereq::{needs, CURL, IP, ROOT};

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
    // The right token is let in.
    let (code, text) = curl(
        &fleet,
        &[
            "-H",
            &format!("authorization: Bearer {TOKEN}"),
            &format!("{base}/v1/health"),
        ],
    );
    assert_eq!(code, "200", "{text}");
    assert!(text.contains("node-01"));
});
