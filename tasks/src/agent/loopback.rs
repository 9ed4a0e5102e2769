//! An agent on loopback and a client: attempts, pinning, tokens, cancellation.

use std::path::Path;
use std::time::Duration;

use super::*;

/// The agent's token in these tests.
const TOKEN: &str = "loopback-test-token-0123456789abcdef";

struct Running {
    addr: std::net::SocketAddr,
    fingerprint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(workdir: &Path, max_concurrent: usize) -> Running {
    let server = AgentServer::bind(AgentConfig {
        name: "n1".into(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        token: TOKEN.into(),
        tls: TlsSource::SelfSigned {
            names: vec!["localhost".into()],
        },
        max_concurrent,
        workdir: workdir.to_owned(),
    })
    .await
    .expect("bind");
    let addr = server.local_addr().expect("addr");
    let fingerprint = server.fingerprint().to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(server.serve(async {
        let _ = rx.await;
    }));
    Running {
        addr,
        fingerprint,
        stop: Some(tx),
    }
}

fn client(dir: &Path, agent: &Running, token: &str, fingerprint: &str) -> AgentClient {
    write_test_token(&dir.join("token"), token);
    let inv = Inventory::parse(
        &dir.join("inv.yaml"),
        &format!(
            "tokenFile: token\nagents:\n  - {{name: n1, address: '{}', fingerprint: '{fingerprint}'}}\n",
            agent.addr
        ),
    )
    .expect("inventory");
    AgentClient::new(&inv, &inv.agents[0]).expect("client")
}

fn request(kind: &str, body: &str) -> RunRequest {
    RunRequest {
        kind: kind.into(),
        body: serde_yaml::from_str(body).expect("yaml"),
        run_id: "r1".into(),
        step_id: "s".into(),
        instance: "n1".into(),
        attempt: 1,
        params: [("to".to_owned(), "1.16".to_owned())].into(),
        timeout_ms: None,
    }
}

#[tokio::test]
async fn an_attempt_runs_on_the_agent_and_comes_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let agent = start(dir.path(), 2).await;
    let c = client(dir.path(), &agent, TOKEN, &agent.fingerprint);
    c.healthy(Duration::from_secs(5)).await.expect("healthy");
    let out = c
        .run(&request(
            "script",
            "\"echo to=$PARAM_TO on $KPILOT_INSTANCE; echo oops >&2; exit 3\"",
        ))
        .await;
    assert_eq!(out.exit_code, Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to=1.16 on n1\n");
    assert!(out.failure.expect("failed").contains("oops"));
    let out = c.run(&request("command", "[echo, '{\"a\": 1}']")).await;
    assert_eq!(out.output, Some(serde_json::json!({"a": 1})), "{out:?}");
    let kernel = c.node("kernel").await.expect("node.kernel");
    assert!(kernel["release"].is_string());
    let err = c.node("nonsense").await.expect_err("unknown root");
    assert!(err.contains("404") && err.contains("known roots"), "{err}");
    let out = c.run(&request("teleport", "{}")).await;
    assert!(
        out.failure
            .expect("refused")
            .contains("cannot run `teleport`"),
        "unknown kinds are refused"
    );
}

#[tokio::test]
async fn wrong_tokens_and_wrong_certificates_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let agent = start(dir.path(), 1).await;
    let c = client(
        dir.path(),
        &agent,
        "guess-guess-guess-guess-guess-guess",
        &agent.fingerprint,
    );
    let out = c.run(&request("command", "[touch, pwned]")).await;
    let reason = out.failure.expect("refused");
    assert!(
        reason.contains("401") && reason.contains("wrong token"),
        "{reason}"
    );
    assert!(!dir.path().join("pwned").exists());
    let other = format!("sha256:{}", "00".repeat(32));
    let c = client(dir.path(), &agent, TOKEN, &other);
    let out = c.run(&request("command", "[touch, pwned]")).await;
    let reason = out.failure.expect("refused");
    assert!(
        reason.contains("cannot be reached") && reason.contains("fingerprint"),
        "{reason}"
    );
    assert!(!dir.path().join("pwned").exists());
}

#[tokio::test]
async fn dropping_the_attempt_kills_its_processes_on_the_agent() {
    let dir = tempfile::tempdir().expect("tmp");
    let agent = start(dir.path(), 1).await;
    let c = client(dir.path(), &agent, TOKEN, &agent.fingerprint);
    let req = request("script", "\"echo $$ > pid; sleep 30\"");
    let attempt = tokio::time::timeout(Duration::from_millis(1500), c.run(&req)).await;
    assert!(attempt.is_err(), "the sleep ended early");
    let pid: i32 = std::fs::read_to_string(dir.path().join("pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    // The agent notices at its next heartbeat and kills the group.
    let mut alive = true;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for its parent.
        if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
            alive = false;
            break;
        }
    }
    assert!(!alive, "the script outlived its dropped attempt");
    // The slot is free again: the next attempt runs.
    let out = c.run(&request("command", "[\"true\"]")).await;
    assert!(out.failure.is_none(), "{out:?}");
}

#[tokio::test]
async fn max_concurrent_bounds_what_runs_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let agent = start(dir.path(), 2).await;
    let c = client(dir.path(), &agent, TOKEN, &agent.fingerprint);
    let script = "\"mkdir -p on; touch on/$KPILOT_ATTEMPT; ls on | wc -l >> counts; sleep 0.3; rm on/$KPILOT_ATTEMPT\"";
    let runs = (1..=6).map(|i| {
        let c = c.clone();
        let mut req = request("script", script);
        req.attempt = i;
        async move { c.run(&req).await }
    });
    for out in futures_util::future::join_all(runs).await {
        assert!(out.failure.is_none(), "{out:?}");
    }
    let counts = std::fs::read_to_string(dir.path().join("counts")).expect("counts");
    let peak = counts
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .max();
    assert!(peak.is_some_and(|p| p <= 2), "{counts}");
}

#[tokio::test]
async fn the_agent_enforces_the_step_timeout_itself() {
    let dir = tempfile::tempdir().expect("tmp");
    let agent = start(dir.path(), 1).await;
    let c = client(dir.path(), &agent, TOKEN, &agent.fingerprint);
    let mut req = request("command", "[sleep, '5']");
    req.timeout_ms = Some(300);
    let started = std::time::Instant::now();
    let out = c.run(&req).await;
    let reason = out.failure.expect("timed out");
    assert!(
        reason.contains("timed out after 300ms on the agent"),
        "{reason}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}
