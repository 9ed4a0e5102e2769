//! An API server that cannot be reached, from the start or from the middle of
//! a run: the query is retried with backoff, then the check fails with a
//! reason that says so. It never passes.
//!
//! The shared cluster keeps running: these tests point kpilot at a port
//! nothing listens on, or at a proxy in front of the real API server that the
//! test stops mid-run.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{kp_with, kubeconfig, node, unique, Created};
use crate::util::{step_field, Dir, Ran};

/// The test cluster's kubeconfig with its server replaced by `https://ADDR`.
fn kubeconfig_to(dir: &Dir, addr: SocketAddr) -> PathBuf {
    let text = std::fs::read_to_string(kubeconfig()).expect("kubeconfig");
    let text: String = text
        .lines()
        .map(|line| match line.find("server: https://") {
            Some(at) => format!("{}server: https://{addr}", &line[..at]),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    dir.write("kubeconfig", &text)
}

/// The API server's address from the kubeconfig.
fn apiserver() -> SocketAddr {
    let text = std::fs::read_to_string(kubeconfig()).expect("kubeconfig");
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .expect("a server line");
    server.trim().parse().expect("host:port")
}

/// A port on 127.0.0.1 that refuses connections.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

kptest!(
    unreachable_api_server_fails_the_check_after_retries,
    |dir| {
        let kubeconfig = kubeconfig_to(&dir, closed_port());
        dir.write(
        "wf.yaml",
        "apiVersion: kpilot/v1
kind: Workflow
metadata: {name: unreachable}
spec:
  steps:
    - id: nodes-ready
      phase: pre-check
      check: {query: cluster.nodes, forEach: true, expect: item.ready, severity: warning, timeout: 3s}
    - {id: upgrade, phase: upgrade, needs: [nodes-ready], command: [touch, upgraded]}
",
    );
        let started = Instant::now();
        let ran: Ran = kp_with(&dir, &["run", "wf.yaml", "--run-id", "r"], &kubeconfig).expect(1);
        let elapsed = started.elapsed();
        assert!(!dir.exists("upgraded"), "{}", ran.stderr);
        assert!(
            elapsed >= Duration::from_millis(2500),
            "gave up after {elapsed:?}"
        );
        assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
        let reason = step_field(&dir.status("r"), "nodes-ready", "reason");
        assert!(
            reason.contains("the API server did not answer after"),
            "{reason}"
        );
        assert!(reason.contains("retried with backoff"), "{reason}");
        assert!(
            reason.to_lowercase().contains("connection refused"),
            "{reason}"
        );
        let attempts: u32 = reason
            .split("after ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no attempt count in {reason}"));
        assert!(attempts >= 3, "{reason}");
    }
);

/// A TCP proxy to `upstream` that can be stopped: its port then refuses
/// connections and the connections it carried are cut.
struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accept = {
            let (stop, conns) = (Arc::clone(&stop), Arc::clone(&conns));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let Ok(server) = TcpStream::connect(upstream) else {
                                continue;
                            };
                            let _ = client.set_nonblocking(false);
                            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                                std::thread::spawn(move || {
                                    let _ = io::copy(&mut from, &mut to);
                                    let _ = to.shutdown(Shutdown::Both);
                                });
                            };
                            if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                                if let Ok(mut list) = conns.lock() {
                                    list.extend([c2, s2]);
                                }
                                if let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) {
                                    pipe(c3, server);
                                    pipe(s3, client);
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        Proxy {
            addr,
            stop,
            conns,
            accept: Some(accept),
        }
    }

    /// Closes the port and cuts every connection.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        if let Ok(list) = self.conns.lock() {
            for c in list.iter() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

kptest!(api_server_lost_mid_run_fails_the_next_check, |dir| {
    let label = unique("lost");
    let mut created = Created::default();
    created.create(node(&format!("{label}-a"), &label, "v1.34.4", Some(true)));
    let mut proxy = Proxy::start(apiserver());
    let kubeconfig = kubeconfig_to(&dir, proxy.addr);
    dir.write(
        "wf.yaml",
        &format!(
            "apiVersion: kpilot/v1
kind: Workflow
metadata: {{name: lost}}
spec:
  steps:
    - id: version
      phase: pre-check
      check: {{query: cluster.version, expect: \"v(data.gitVersion) >= v('1.12')\"}}
    - id: outage
      phase: pre-check
      needs: [version]
      script: |
        touch stop-proxy
        while [ ! -e proxy-stopped ]; do sleep 0.05; done
    - id: nodes-ready
      phase: pre-check
      needs: [outage]
      check:
        query: {{cluster: nodes, labelSelector: kpilot-test={label}}}
        forEach: true
        expect: item.ready
        timeout: 4s
    - {{id: upgrade, phase: upgrade, needs: [nodes-ready], command: [touch, upgraded]}}
"
        ),
    );
    let mut child = dir
        .cmd(&["run", "wf.yaml", "--run-id", "r"])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kpilot starts");
    let started = Instant::now();
    while !dir.exists("stop-proxy") {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("kpilot ended ({status}) before the outage step");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "outage step never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.stop();
    dir.write("proxy-stopped", "");
    let stopped = Instant::now();
    let status = child.wait().expect("kpilot ends");
    assert_eq!(status.code(), Some(1));
    assert!(
        stopped.elapsed() >= Duration::from_millis(3500),
        "gave up after {:?}",
        stopped.elapsed()
    );
    assert!(!dir.exists("upgraded"));
    let status = dir.status("r");
    assert_eq!(step_field(&status, "version", "state"), "succeeded");
    assert_eq!(step_field(&status, "nodes-ready", "state"), "failed");
    let reason = step_field(&status, "nodes-ready", "reason");
    assert!(reason.contains("could not read its data"), "{reason}");
    assert!(reason.contains("did not answer after"), "{reason}");
    assert!(reason.contains("retried with backoff"), "{reason}");
});
