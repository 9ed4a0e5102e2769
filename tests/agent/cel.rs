//! An agent parses the expressions kpilot sends it (a per-node check's `expect` and
//! `message`): one too long or too deep is answered 400 with the reason, and the agent
//! keeps serving.

use super::Fleet;
use crate::util::prereq::{needs, CURL, IP, ROOT};

/// `POST /v1/run` of a `check` whose `expect` is `expect`, from the hub namespace;
/// returns (HTTP status, body).
fn run_check(dir: &crate::util::Dir, fleet: &Fleet, expect: &str) -> (String, String) {
    let token = dir.read("token").trim().to_owned();
    let request = serde_json::json!({
        "kind": "check",
        "body": {"query": "node.kernel.release", "expect": expect},
        "run_id": "r",
        "step_id": "deep",
        "instance": "node-01",
        "attempt": 1,
    });
    dir.write("request.json", &request.to_string());
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &fleet.hub, "curl", "-sk", "-m", "20"])
        .args(["-w", "\n%{http_code}"])
        .args(["-H", "content-type: application/json"])
        .args(["-H", &format!("authorization: Bearer {token}")])
        .args([
            "--data-binary",
            &format!("@{}", dir.join("request.json").display()),
        ])
        .arg(format!("https://{}:7443/v1/run", fleet.nodes[0].addr))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

kptest!(
    an_agent_refuses_deep_or_long_expressions_and_keeps_serving,
    |dir| {
        if !needs(
            "an_agent_refuses_deep_or_long_expressions",
            &[ROOT, IP, CURL],
        ) {
            return;
        }
        if std::process::Command::new("curl")
            .arg("-V")
            .output()
            .is_err()
        {
            panic!("an_agent_refuses_deep_or_long_expressions needs curl");
        }
        let fleet = Fleet::start(&dir, "ce", 1, 1);
        let sum = |n: usize| vec!["1"; n].join("+");
        for (what, expect, why) in [
            ("7,000 terms", format!("{} > 0", sum(7000)), "too deep"),
            ("50,000 terms", format!("{} > 0", sum(50_000)), "too long"),
            (
                "70,000 parentheses",
                format!("{}1{} > 0", "(".repeat(70_000), ")".repeat(70_000)),
                "too long",
            ),
            (
                "an error past column 65,535",
                format!("{} >", "x".repeat(70_000)),
                "too long",
            ),
        ] {
            let (code, body) = run_check(&dir, &fleet, &expect);
            assert_eq!(code, "400", "{what}: {body}\n{}", fleet.log("node-01"));
            assert!(
                body.contains("check.expect") && body.contains(why),
                "{what}: {body}"
            );
        }
        // Still serving: a sound check runs.
        let (code, body) = run_check(&dir, &fleet, "data != ''");
        assert_eq!(code, "200", "{body}\n{}", fleet.log("node-01"));
        assert!(body.contains("\"done\""), "{body}");
        let log = fleet.log("node-01");
        assert!(!log.contains("panicked"), "{log}");
    }
);
